"""Summary tables from run directories: pandas, CSV, Markdown and LaTeX, plus the whole report.

Cells are ``mean ± std`` over the ``ok`` rows of one (method, transform, metric): items × seeds (× runs
when several run directories are merged). ``std`` is the sample standard deviation (ddof=1), so a cell
with one row has no std. Failed rows are counted (``n_failed``), never averaged.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports import figures
from reports.edit_figure import edit_columns, edit_figure
from reports.rundir import (
    RESULT_COLUMNS,
    MetricInfo,
    RunDirError,
    check_run_dir,
    read_metrics,
    read_results,
    read_sample_index,
    read_timing,
    read_versions,
    run_name,
    write_atomic,
)

SUMMARY_COLUMNS = ("method", "transform", "metric", "mean", "std", "n", "n_failed")
NAN_TEXT = "–"  # en dash, as in published tables
MetricInfoLike = Mapping[str, "MetricInfo | Mapping[str, Any]"]


def _as_dirs(run_dirs: Sequence[str | Path] | str | Path) -> list[Path]:
    # A single path is a common slip: iterating a str would give characters.
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    dirs = [check_run_dir(d) for d in run_dirs]
    if not dirs:
        raise ValueError("no run directories given")
    return dirs


def _run_names(dirs: Sequence[Path]) -> list[str]:
    names = [run_name(d) for d in dirs]
    # Same folder name under different parents: fall back to the full path so runs stay distinct.
    return [str(d) if names.count(n) > 1 else n for d, n in zip(dirs, names, strict=True)]


def load_metric_info(run_dirs: Sequence[str | Path] | str | Path) -> dict[str, MetricInfo]:
    """Merge the ``metrics.json`` of several runs.

    A metric is available when any run computed it. Runs that disagree on a metric's direction raise.

    Args:
        run_dirs: Run directories.

    Returns:
        ``{metric: MetricInfo}`` in order of first appearance.
    """
    merged: dict[str, MetricInfo] = {}
    for run_dir in _as_dirs(run_dirs):
        for name, info in read_metrics(run_dir).items():
            old = merged.get(name)
            if old is not None and old.higher_is_better != info.higher_is_better:
                raise RunDirError(f"{run_dir / 'metrics.json'}: metric {name!r} changes direction between runs")
            if old is None or (info.available and not old.available):
                merged[name] = info
    return merged


def load_results(run_dirs: Sequence[str | Path] | str | Path) -> pd.DataFrame:
    """Read and concatenate the ``results.csv`` of several run directories.

    Args:
        run_dirs: Run directories (a single path is accepted too).

    Returns:
        Long DataFrame with the ``results.csv`` columns, a ``run`` column (folder name) and, from
        ``metrics.json``, ``higher_is_better`` and ``available`` per row. Rows keep run order.

    Raises:
        RunDirError: If a directory is not a run directory (the message names the missing file), a file
            is malformed, or ``results.csv`` uses a metric that ``metrics.json`` does not declare.
    """
    dirs = _as_dirs(run_dirs)
    frames = []
    for run_dir, name in zip(dirs, _run_names(dirs), strict=True):
        df, info = read_results(run_dir), read_metrics(run_dir)
        undeclared = sorted(set(df["metric"]) - set(info))
        if undeclared:
            raise RunDirError(f"{run_dir / 'metrics.json'}: no entry for metric(s) {undeclared} used in results.csv")
        df.insert(0, "run", name)
        df["higher_is_better"] = df["metric"].map({k: v.higher_is_better for k, v in info.items()}).astype(bool)
        df["available"] = df["metric"].map({k: v.available for k, v in info.items()}).astype(bool)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def summary_table(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, std, n and n_failed per (method, transform, metric).

    Args:
        df: Long results as from :func:`load_results` (needs the ``results.csv`` columns).
        metrics: Metrics to keep, in this order; default: all, in order of first appearance.

    Returns:
        Tidy DataFrame with columns ``method, transform, metric, mean, std, n, n_failed``. ``method``,
        ``transform`` and ``metric`` are ordered categoricals (order of first appearance in ``df``, i.e.
        run order); rows sorted by metric, method, transform. ``n`` counts ok rows with a value.
    """
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results frame lacks column(s) {missing}; got {list(df.columns)}")
    known = list(pd.unique(df["metric"]))
    if metrics is not None:
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; available: {known}")
        df = df[df["metric"].isin(metrics)]
    ok = df["status"] == "ok"
    keys = {
        "metric": list(metrics) if metrics is not None else known,
        "method": list(pd.unique(df["method"])),
        "transform": list(pd.unique(df["transform"])),
    }
    work = pd.DataFrame({k: pd.Categorical(df[k], categories=cats, ordered=True) for k, cats in keys.items()})
    work["value"] = df["value"].where(ok).to_numpy(dtype="float64")
    work["failed"] = (~ok).to_numpy()
    grouped = work.groupby(["metric", "method", "transform"], observed=True, sort=True)
    out = grouped.agg(
        mean=("value", "mean"), std=("value", "std"), n=("value", "count"), n_failed=("failed", "sum")
    ).reset_index()
    out["n"] = out["n"].astype("int64")
    out["n_failed"] = out["n_failed"].astype("int64")
    return out[list(SUMMARY_COLUMNS)]


EDIT_FIGURE_KINDS = ("psnr", "consistency-psnr", "attr-gain", "attr-drift")


def mean_edit_metrics(df: pd.DataFrame, info: dict[str, MetricInfo]) -> tuple[pd.DataFrame, list[MetricInfo]]:
    """Per item, the mean of each edit metric kind over all edits of the run (``edit[all]/psnr`` ...), summarised.

    Returns the summary (as :func:`summary_table`) and the entries of the kinds present, for the figures.
    """
    metric = df["metric"].astype(str)
    parts = metric.str.extract(r"^edit\[(?P<label>[^\]]+)\]/(?P<kind>.+)$")
    rows = df[parts["kind"].isin(EDIT_FIGURE_KINDS)].assign(kind=parts["kind"])
    if rows.empty:
        return summary_table(df.iloc[:0]), []
    first = {k: info.get(m) for m, k in zip(metric[rows.index], rows["kind"], strict=True)}
    mean = (rows.groupby(["item", "method", "transform", "seed", "kind", "status"], sort=False, observed=True)["value"]
            .mean().reset_index())
    mean["metric"] = "edit[all]/" + mean.pop("kind")
    entries = [dataclasses.replace(e, name=f"edit[all]/{k}", description=f"mean over all edits; {e.description}")
               for k, e in first.items() if e is not None]
    return summary_table(mean), entries


def write_csv(summary: pd.DataFrame, path: str | Path) -> Path:
    """Write the summary as tidy numeric CSV (``method, transform, metric, mean, std, n, n_failed``)."""
    text = summary[list(SUMMARY_COLUMNS)].astype({"method": str, "transform": str, "metric": str}).to_csv(index=False)
    return _write_text(Path(path), text)


@dataclass(frozen=True)
class _Grid:
    """One metric's table as text: rows are methods, columns transforms."""

    methods: list[str]
    transforms: list[str]
    cells: list[list[str]]
    bold: list[list[bool]]


def _decimals(values: np.ndarray) -> int:
    finite = np.abs(values[np.isfinite(values)])
    if finite.size == 0 or finite.max() == 0:
        return 2
    # Four significant digits on the largest value: 25.63 (PSNR), 0.9123 (SSIM), 0.001234 (MSE).
    return int(np.clip(3 - math.floor(math.log10(finite.max())), 0, 6))


def _format(value: float, decimals: int) -> str:
    return NAN_TEXT if math.isnan(value) else f"{value:.{decimals}f}"


def _grid(summary: pd.DataFrame, metric: str, higher_is_better: bool, decimals: int | None) -> _Grid:
    methods = [str(m) for m in _categories(summary["method"])]
    transforms = [str(t) for t in _categories(summary["transform"])]
    rows = summary[summary["metric"].astype(str) == metric]
    index = pd.MultiIndex.from_product([methods, transforms])
    stats = rows.set_index([rows["method"].astype(str), rows["transform"].astype(str)])[["mean", "std"]]
    stats = stats.reindex(index)
    means = stats["mean"].to_numpy(dtype="float64").reshape(len(methods), len(transforms))
    stds = stats["std"].to_numpy(dtype="float64").reshape(len(methods), len(transforms))
    dec = _decimals(means) if decimals is None else decimals
    # Ties are judged at the printed precision: equal-looking numbers are marked alike.
    shown = np.round(means, dec)
    best = np.nanmax(shown, axis=0, initial=-np.inf) if higher_is_better else np.nanmin(shown, axis=0, initial=np.inf)
    bold = (shown == best[None, :]) & ~np.isnan(shown)
    cells = [
        [NAN_TEXT if math.isnan(m) else f"{_format(m, dec)} ± {_format(s, dec)}" for m, s in zip(mr, sr, strict=True)]
        for mr, sr in zip(means, stds, strict=True)
    ]
    return _Grid(methods, transforms, cells, bold.tolist())


def _categories(column: pd.Series) -> list[Any]:
    if isinstance(column.dtype, pd.CategoricalDtype):
        used = set(column)
        return [c for c in column.cat.categories if c in used]
    return list(pd.unique(column))


def _info(metric_info: MetricInfoLike) -> dict[str, MetricInfo]:
    return {name: MetricInfo.from_json(name, entry) for name, entry in metric_info.items()}


def _plan(summary: pd.DataFrame, metric_info: MetricInfoLike) -> tuple[list[MetricInfo], list[MetricInfo]]:
    """Split metrics into (tabled, unavailable), tabled in summary order."""
    info = _info(metric_info)
    in_summary = [str(m) for m in _categories(summary["metric"])]
    missing = [m for m in in_summary if m not in info]
    if missing:
        raise ValueError(f"metric_info has no entry for metric(s) {missing}")
    tabled = [info[m] for m in in_summary if info[m].available]
    unavailable = [i for i in info.values() if not i.available]
    return tabled, unavailable


def arrow(info: MetricInfo) -> str:
    """``↑`` when higher is better, else ``↓``."""
    return "↑" if info.higher_is_better else "↓"


def _failure_note(summary: pd.DataFrame, metric: str) -> str:
    rows = summary[(summary["metric"].astype(str) == metric) & (summary["n_failed"] > 0)]
    if rows.empty:
        return ""
    parts = [f"{r.method} / {r.transform}: {r.n_failed} failed, {r.n} ok" for r in rows.itertuples()]
    return "Failed rows excluded: " + "; ".join(parts) + ".\n\n"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(summary: pd.DataFrame, metric_info: MetricInfoLike, decimals: int | None = None) -> str:
    """Markdown tables, one per metric: rows methods, columns transforms, cells ``mean ± std``.

    The header carries the metric name with ↑ (higher is better) or ↓; the best method per column is
    bold (ties all bold); missing or NaN cells read ``–``. Unavailable metrics are listed after the
    tables with their reason.

    Args:
        summary: From :func:`summary_table`.
        metric_info: ``{metric: MetricInfo or metrics.json entry}``.
        decimals: Digits after the point; default: four significant digits of the largest mean.

    Returns:
        Markdown text.
    """
    tabled, unavailable = _plan(summary, metric_info)
    out = []
    for info in tabled:
        grid = _grid(summary, info.name, info.higher_is_better, decimals)
        out.append(f"### {_md_escape(info.name)} {arrow(info)}\n\n")
        if info.description:
            out.append(f"{info.description}\n\n")
        out.append("| " + " | ".join([f"{_md_escape(info.name)} {arrow(info)}", *map(_md_escape, grid.transforms)]))
        out.append(" |\n|:---" + "|---:" * len(grid.transforms) + "|\n")
        for method, cells, bold in zip(grid.methods, grid.cells, grid.bold, strict=True):
            shown = [f"**{c}**" if b else c for c, b in zip(cells, bold, strict=True)]
            out.append("| " + " | ".join([_md_escape(method), *shown]) + " |\n")
        out.append("\n" + _failure_note(summary, info.name))
    if not tabled:
        out.append("No results.\n\n")
    if unavailable:
        out.append("**Unavailable metrics** (not computed, no table):\n\n")
        out.extend(f"- {_md_escape(i.name)} {arrow(i)}: {i.reason or 'no reason given'}\n" for i in unavailable)
        out.append("\n")
    return "".join(out)


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    NAN_TEXT: "--",
}


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def to_latex(summary: pd.DataFrame, metric_info: MetricInfoLike, decimals: int | None = None) -> str:
    r"""Booktabs ``tabular`` per metric (needs ``\usepackage{booktabs}``); best per column in ``\textbf``.

    Args:
        summary: From :func:`summary_table`.
        metric_info: ``{metric: MetricInfo or metrics.json entry}``.
        decimals: As in :func:`to_markdown`.

    Returns:
        LaTeX text; unavailable metrics appear as ``%`` comments with their reason.
    """
    tabled, unavailable = _plan(summary, metric_info)
    out = []
    for info in tabled:
        grid = _grid(summary, info.name, info.higher_is_better, decimals)
        arrow_tex = r"$\uparrow$" if info.higher_is_better else r"$\downarrow$"
        out.append(f"% {_tex(info.name)}: mean $\\pm$ std, best per column in bold\n")
        out.append("\\begin{tabular}{l" + "c" * len(grid.transforms) + "}\n\\toprule\n")
        out.append(" & ".join([f"{_tex(info.name)} {arrow_tex}", *map(_tex, grid.transforms)]) + " \\\\\n\\midrule\n")
        for method, cells, bold in zip(grid.methods, grid.cells, grid.bold, strict=True):
            shown = [_tex(c).replace(" ± ", r" $\pm$ ") for c in cells]
            shown = [f"\\textbf{{{c}}}" if b else c for c, b in zip(shown, bold, strict=True)]
            out.append(" & ".join([_tex(method), *shown]) + " \\\\\n")
        out.append("\\bottomrule\n\\end{tabular}\n\n")
    out.extend(f"% {_tex(i.name)}: unavailable ({_tex(i.reason or 'no reason given')})\n" for i in unavailable)
    return "".join(out)


def _write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _one_line(value: Any) -> str:
    return " ".join(str(value).split()) if value not in (None, "") else "not recorded"


def _runs_section(dirs: Sequence[Path], names: Sequence[str]) -> str:
    out = ["## Runs\n\n"]
    for run_dir, name in zip(dirs, names, strict=True):
        v = read_versions(run_dir)
        out.append(
            f"- **{_md_escape(name)}** (`{run_dir}`): git commit `{_one_line(v.get('git_commit'))}`, "
            f"device `{_one_line(v.get('device'))}`, date {_one_line(v.get('date'))}\n"
            f"  - generator: {_one_line(v.get('generator'))}\n"
            f"  - perceptual: {_one_line(v.get('perceptual'))}\n"
        )
    return "".join(out) + "\n"


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


def _timing_section(dirs: Sequence[Path]) -> str:
    timing = pd.concat([read_timing(d) for d in dirs], ignore_index=True)
    if timing.empty:
        return ""
    total = timing.groupby(["method", "transform"], sort=False)[["items", "seconds"]].sum().reset_index()
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
                 edit_item: str | None = None) -> dict[str, Path]:
    """Write the tables (``table.csv``, ``table.md``, ``table.tex``) and the figures of one or more runs.

    Figures, each PNG with a PDF twin: ``transforms.png`` (one item under every transform), metric curves
    and per-family curves, ``grid_<transform>.png`` (inputs and reconstructions, at most 6 items) and, for
    runs with ``--edit``, ``edits_<transform>.png`` (one item: methods x input, reconstruction, edits).

    Args:
        run_dirs: Run directories to merge.
        out_dir: Output folder (created).
        edit_item: Item shown in the edit figures (default: the first sample item of each transform).

    Returns:
        ``{file name: path}`` for every file written, the summary figures before the per-transform ones.
    """
    dirs = _as_dirs(run_dirs)
    names = _run_names(dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df, info = load_results(dirs), load_metric_info(dirs)
    summary = summary_table(df)
    paths = {"table.csv": write_csv(summary, out / "table.csv")}
    for run_dir, name in zip(dirs, names, strict=True):
        file_name = "transforms.png" if len(dirs) == 1 else f"transforms_{figures.safe_label(name)}.png"
        try:
            paths[file_name] = figures.transform_figure(run_dir, out / file_name)
        except ValueError:
            pass  # a run without samples has no transform figure
    tabled, _ = _plan(summary, info)
    # curves for the headline metrics only: masked variants and per-strength edit metrics stay in the tables,
    # and the edit metrics are drawn averaged over every edit of the run (one figure per kind)
    headline = [m for m in tabled if "@" not in m.name and not m.name.startswith("edit[")]
    edit_summary, edit_info = mean_edit_metrics(df, info)
    if len(dirs) == 1:
        magnitudes = figures.transform_magnitudes(dirs[0])
        for table, metrics in ((summary, headline), (edit_summary, edit_info)):
            for metric in metrics:
                file_name = f"family_{figures.safe_label(metric.name)}.png"
                written = figures.family_curves(table, magnitudes, metric.name, out / file_name,
                                                metric.higher_is_better)
                if written is not None:
                    paths[file_name] = written
    for metric in headline:
        file_name = f"curve_{figures.safe_label(metric.name)}.png"
        paths[file_name] = figures.metric_curve(summary, metric.name, out / file_name, metric.higher_is_better)
    paths.update(_write_figures(dirs, names, out, df, edit_item))
    figure_md = "".join(f"![{k}]({k})\n\n" for k in paths if k.endswith(".png"))
    md = (
        "# Benchmark report\n\n"
        + _runs_section(dirs, names)
        + "## Results\n\nEach cell: mean ± sample std over ok rows (items × seeds); best per column in bold; "
        + f"{NAN_TEXT} = no value.\n\n"
        + to_markdown(summary, info)
        + _failed_section(df)
        + _timing_section(dirs)
        + ("## Figures\n\n" + figure_md if figure_md else "")
    )
    paths["table.md"] = _write_text(out / "table.md", md)
    paths["table.tex"] = _write_text(out / "table.tex", to_latex(summary, info))
    return paths
