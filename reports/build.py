"""The report folder of one or more runs: tables (CSV, Markdown, LaTeX) and figures, assembled.

``write_report`` is what ``bench report`` calls (``reports.html`` adds the self-contained page).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reports import figures, plots
from reports.distribution import write_distribution
from reports.edit_figure import edit_columns, edit_figure
from reports.pooling import PoolPlan, plan_pooling, repeated_rows
from reports.rundir import MetricInfo, read_config, read_sample_index, read_versions
from reports.tables import (
    _as_dirs,
    _md_escape,
    _plan,
    _run_names,
    _write_text,
    add_settings,
    cell_legend,
    load_metric_info,
    load_results,
    method_settings,
    summary_table,
    timing_table,
    to_latex,
    to_markdown,
    write_csv,
)
from reports.targets import targets_line

EDIT_FIGURE_KINDS = ("psnr", "consistency-psnr", "attr-gain", "attr-drift")


def mean_edit_metrics(df: pd.DataFrame, info: dict[str, MetricInfo],
                      pool: bool = False) -> tuple[pd.DataFrame, list[MetricInfo]]:
    """Per item, the mean of each edit metric kind over all edits of the run (``edit[all]/psnr`` ...), summarised.

    Returns the summary (as :func:`summary_table`) and the entries of the kinds present, for the figures.
    """
    metric = df["metric"].astype(str)
    parts = metric.str.extract(r"^edit\[(?P<label>[^\]]+)\]/(?P<kind>.+)$")
    rows = df[parts["kind"].isin(EDIT_FIGURE_KINDS)].assign(kind=parts["kind"])
    if rows.empty:
        return summary_table(df.iloc[:0]), []
    first = {k: info.get(m) for m, k in zip(metric[rows.index], rows["kind"], strict=True)}
    keys = ["run"] * ("run" in rows.columns) + ["item", "method", "transform", "seed", "kind", "status"]
    mean = rows.groupby(keys, sort=False, observed=True)["value"].mean().reset_index()
    mean["metric"] = "edit[all]/" + mean.pop("kind")
    entries = [dataclasses.replace(e, name=f"edit[all]/{k}", description=f"mean over all edits; {e.description}")
               for k, e in first.items() if e is not None]
    return summary_table(mean, pool=pool), entries


def _one_line(value: Any) -> str:
    return " ".join(str(value).split()) if value not in (None, "") else "not recorded"


SETTING_KEYS = ("profile", "steps", "precision", "perceptual", "data", "n", "seed", "fill")
"""``config.json`` entries shown for each run in the report header."""


def run_settings_line(run_dir: Path) -> str:
    """``profile quick, steps 300, ...`` from ``config.json`` (empty when the run has none)."""
    config = read_config(run_dir)
    return ", ".join(f"{k} {_one_line(config[k]) if config[k] is not None else 'default'}"
                     for k in SETTING_KEYS if k in config)


def method_settings_lines(run_dir: Path) -> list[str]:
    """Per method, what it actually ran with (``config.json``'s ``method_settings``): steps first."""
    return [f"{name}: {line}" for name, line in method_settings(run_dir).items()]


def _runs_section(dirs: Sequence[Path], names: Sequence[str], plan: PoolPlan | None = None) -> str:
    out = ["## Runs\n\n"]
    for run_dir, name in zip(dirs, names, strict=True):
        v = read_versions(run_dir)
        settings = run_settings_line(run_dir)
        out.append(
            f"- **{_md_escape(name)}** (`{run_dir}`): git commit `{_one_line(v.get('git_commit'))}`, "
            f"device `{_one_line(v.get('device'))}`, date {_one_line(v.get('date'))}\n"
            f"  - generator: {_one_line(v.get('generator'))}\n"
            f"  - perceptual: {_one_line(v.get('perceptual'))}\n"
            + (f"  - data: {_one_line(v.get('data'))}\n" if v.get("data") else "")
            + (f"  - settings: {settings}\n" if settings else "")
            + "".join(f"  - {_md_escape(line)}\n" for line in method_settings_lines(run_dir))
            + (f"  - targets (how made, high-frequency energy vs aligned): {_md_escape(made)}\n"
               if (made := targets_line(run_dir)) else "")
        )
    note = plan.note() if plan is not None else ""
    return "".join(out) + "\n" + (f"{_md_escape(note)}\n\n" if note else "")


def _failed_section(df: pd.DataFrame, limit: int = 100) -> str:
    failed = df[df["status"] != "ok"]
    keys = ["run", "item", "method", "transform", "seed", "status"]
    failed = failed.drop_duplicates(keys)[keys]
    if failed.empty:
        return "## Failed items\n\nNone.\n\n"
    out = [f"## Failed items\n\n{len(failed)} (item, method, transform, seed) failed:\n\n"]
    out.append("| run | item | method | transform | seed | reason |\n|---|---|---|---|---|---|\n")
    for r in failed.head(limit).itertuples(index=False):
        reason = str(r.status).removeprefix("failed:").strip() or str(r.status)
        cells = [r.run, r.item, r.method, r.transform, r.seed, reason]
        out.append("| " + " | ".join(_md_escape(c) for c in cells) + " |\n")
    if len(failed) > limit:
        out.append(f"\n... and {len(failed) - limit} more (see results.csv).\n")
    return "".join(out) + "\n"


def _timing_section(dirs: Sequence[Path], names: Sequence[str], pooled: bool) -> str:
    total = timing_table(dirs, names, pooled)
    if total.empty:
        return ""
    out = ["## Timing\n\n| method | transform | items | seconds | s / item |\n|---|---|---:|---:|---:|\n"]
    for r in total.itertuples(index=False):
        per = r.seconds / r.items if r.items else math.nan
        cells = [
            _md_escape(r.method),
            _md_escape(r.transform),
            f"{r.items:g}",
            f"{r.seconds:.1f}",
            f"{per:.2f}",
        ]
        out.append("| " + " | ".join(cells) + " |\n")
    return "".join(out) + "\n"


def _unique(paths: Mapping[str, Path], file_name: str) -> str:
    while file_name in paths:  # two labels that sanitise alike
        file_name = file_name.removesuffix(".png") + "_.png"
    return file_name


def _write_figures(dirs: Sequence[Path], names: Sequence[str], out_dir: Path, df: pd.DataFrame,
                   edit_item: str | None) -> dict[str, Path]:
    """Per (run, transform): the reconstruction grid, then (runs with edits) the edit figure."""
    grids: dict[str, Path] = {}
    edits: dict[str, Path] = {}
    for run_dir, name in zip(dirs, names, strict=True):
        prefix = "" if len(dirs) == 1 else figures.safe_label(name) + "_"
        methods = list(pd.unique(df.loc[df["run"] == name, "method"]))
        index = read_sample_index(run_dir)
        with_edits = bool(edit_columns(index["kind"]))
        for transform in pd.unique(index["transform"]):
            label = prefix + figures.safe_label(transform)
            file_name = _unique(grids, f"grid_{label}.png")
            grids[file_name] = figures.figure_grid(run_dir, transform, out_dir / file_name, methods=methods)
            if with_edits:
                file_name = _unique(edits, f"edits_{label}.png")
                edits[file_name] = edit_figure(run_dir, transform, out_dir / file_name, item=edit_item,
                                               methods=methods)
    return grids | edits


def write_report(run_dirs: Sequence[str | Path] | str | Path, out_dir: str | Path,
                 edit_item: str | None = None, *, pool: bool = False, force: bool = False) -> dict[str, Path]:
    """Write the tables (``table.csv``, ``table.md``, ``table.tex``) and the figures of one or more runs.

    Figures, each PNG with a PDF twin: ``transforms.png`` (one item under every transform),
    ``metric_<family>.png`` (one per metric family, whole image and ``@valid``: :mod:`reports.plots`),
    ``grid_<transform>.png`` (inputs and reconstructions, at most 6 items) and, for
    runs with ``--edit``, ``edits_<transform>.png`` (one item: methods x input, reconstruction, edits).

    Args:
        run_dirs: Run directories to merge.
        out_dir: Output folder (created).
        edit_item: Item shown in the edit figures (default: the first sample item of each transform).
        pool: Merge several runs into one cell per (method, transform, metric); by default each run keeps
            its own rows (``METHOD [RUN]``). Refused when their settings differ (``reports.pooling``).
        force: With ``pool``, pool runs whose settings differ (the report lists the differences).

    Returns:
        ``{file name: path}`` for every file written, the summary figures before the per-transform ones.

    Raises:
        reports.pooling.PoolingError: If ``pool`` and the runs' settings differ, without ``force``.
    """
    dirs = _as_dirs(run_dirs)
    names = _run_names(dirs)
    df, info = load_results(dirs), load_metric_info(dirs)
    plan = plan_pooling(dirs, names, pool=pool, force=force, repeated_rows=repeated_rows(df))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = add_settings(summary_table(df, pool=plan.pooled), dirs, names)  # captions name each row's settings
    paths = {"table.csv": write_csv(summary, out / "table.csv")}
    for run_dir, name in zip(dirs, names, strict=True):
        file_name = "transforms.png" if len(dirs) == 1 else f"transforms_{figures.safe_label(name)}.png"
        try:
            paths[file_name] = figures.transform_figure(run_dir, out / file_name)
        except ValueError:
            pass  # a run without samples has no transform figure
    tabled, _ = _plan(summary, info)
    # one figure per metric family (whole image and @valid); per-strength edit metrics stay in the tables,
    # and the edit metrics are drawn averaged over every edit of the run (one figure per kind)
    headline = [m for m in tabled if not m.name.startswith("edit[")]
    edit_summary, edit_info = mean_edit_metrics(df, info, pool=plan.pooled)
    axis = plots.transform_axis(dirs)
    pooled_runs = len(dirs) if plan.pooled else 1
    for table, metrics in ((summary, headline), (edit_summary, edit_info)):
        for base, variants in plots.metric_families(metrics):
            file_name = _unique(paths, f"metric_{figures.safe_label(base)}.png")
            written = plots.metric_figure(table, variants, axis, out / file_name, pooled_runs=pooled_runs)
            if written is not None:
                paths[file_name] = written
    paths.update(_write_figures(dirs, names, out, df, edit_item))
    dist_path, dist_md = write_distribution(dirs, out, names, pool=plan.pooled)  # FID/KID from feature sidecars
    if dist_path is not None:
        paths["distribution.csv"] = dist_path
    figure_md = "".join(f"![{k}]({k})\n\n" for k in paths if k.endswith(".png"))
    md = (
        "# Benchmark report\n\n"
        + _runs_section(dirs, names, plan)
        + "## Results\n\n" + cell_legend(summary, len(dirs) if plan.pooled else 1) + "\n\n"
        + to_markdown(summary, info)
        + _failed_section(df)
        + _timing_section(dirs, names, plan.pooled)
        + dist_md
        + ("## Figures\n\n" + figure_md if figure_md else "")
    )
    paths["table.md"] = _write_text(out / "table.md", md)
    paths["table.tex"] = _write_text(out / "table.tex", to_latex(summary, info))
    return paths
