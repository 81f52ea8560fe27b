"""Summary tables from run directories: pandas, CSV, Markdown and LaTeX (the report folder: ``reports.build``).

Cells are ``mean ± std`` over the ``ok`` rows of one (method, transform, metric): items × seeds. Several run
directories are kept apart (a ``run`` column; table rows ``METHOD [RUN]``) unless pooled (``pool=True``, see
``reports.pooling``), when a cell holds the rows of every run. ``std`` is the sample standard deviation
(ddof=1), so a cell with one row has no std. Failed rows are counted (``n_failed``), never averaged. The best
cell of a column is marked only where it is compared with another value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports.rundir import (
    RESULT_COLUMNS,
    MetricInfo,
    RunDirError,
    check_run_dir,
    read_config,
    read_metrics,
    read_results,
    read_timing,
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


def summary_table(df: pd.DataFrame, metrics: Sequence[str] | None = None, *, pool: bool = False) -> pd.DataFrame:
    """Mean, std, n and n_failed per (method, transform, metric), and per run unless pooled.

    Args:
        df: Long results as from :func:`load_results` (needs the ``results.csv`` columns).
        metrics: Metrics to keep, in this order; default: all, in order of first appearance.
        pool: Merge the rows of several runs into one cell. Without it, a ``df`` whose ``run`` column holds
            more than one run gets one summary row per run (check settings first: ``reports.pooling``).

    Returns:
        Tidy DataFrame with columns ``method, transform, metric, mean, std, n, n_failed``, preceded by
        ``run`` when several runs are kept apart. ``run``, ``method``, ``transform`` and ``metric`` are
        ordered categoricals (order of first appearance in ``df``, i.e. run order); rows sorted by metric,
        method, run, transform. ``n`` counts ok rows with a value.
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
    by_run = not pool and "run" in df.columns and df["run"].nunique() > 1
    if by_run:
        keys = {"metric": keys["metric"], "method": keys["method"], "run": list(pd.unique(df["run"])),
                "transform": keys["transform"]}
    work = pd.DataFrame({k: pd.Categorical(df[k], categories=cats, ordered=True) for k, cats in keys.items()})
    work["value"] = df["value"].where(ok).to_numpy(dtype="float64")
    work["failed"] = (~ok).to_numpy()
    grouped = work.groupby(list(keys), observed=True, sort=True)
    out = grouped.agg(
        mean=("value", "mean"), std=("value", "std"), n=("value", "count"), n_failed=("failed", "sum")
    ).reset_index()
    out["n"] = out["n"].astype("int64")
    out["n_failed"] = out["n_failed"].astype("int64")
    return out[_columns(out)]


def _columns(summary: pd.DataFrame) -> list[str]:
    return (["run"] if "run" in summary.columns else []) + list(SUMMARY_COLUMNS) + \
        (["settings"] if "settings" in summary.columns else [])


NOT_RECORDED = "not recorded"


def _setting(value: Any) -> str:
    return " ".join(str(value).split()) if value not in (None, "") else NOT_RECORDED


def method_settings(run_dir: str | Path) -> dict[str, str]:
    """Per method of a run, what it actually ran with (``config.json``'s ``method_settings``), as one line.

    ``steps 300, lr 0.01, mse_weight 1.0, perceptual_weight 1.0, ...; perceptual attrnet-lpips; precision fp32,
    batch 8``: the steps first, then every hyper-parameter (loss weights included), the perceptual network of
    the loss (its name, before the first ``:`` of the recorded note), the precision and the batch size; a
    method the run left out (``skipped_methods``) gets ``not run: REASON``. Empty for a run recorded before
    ``method_settings`` existed.
    """
    out = {}
    for name, entry in (read_config(run_dir).get("method_settings") or {}).items():
        params = dict(entry.get("params") or {})
        steps = params.pop("steps", None)
        hyper = ", ".join([f"steps {_setting(steps)}", *(f"{k} {_setting(v)}" for k, v in params.items())])
        perceptual = _setting(entry.get("perceptual")).split(":", 1)[0]
        out[str(name)] = (f"{hyper}; perceptual {perceptual}; precision {_setting(entry.get('precision'))}, "
                          f"batch {_setting(entry.get('batch_size'))}"
                          + (f"; base code {entry['base_code']}" if entry.get("base_code") else "")
                          + (f"; encoder {_setting(entry['encoder'])}" if entry.get("encoder") else ""))
    for name, why in (read_config(run_dir).get("skipped_methods") or {}).items():  # left out by the run
        out.setdefault(str(name), f"not run: {_setting(why)}")
    return out


def add_settings(summary: pd.DataFrame, run_dirs: Sequence[str | Path], names: Sequence[str] | None = None,
                 ) -> pd.DataFrame:
    """The summary with a ``settings`` column: each row's :func:`method_settings` line, for its captions.

    Rows kept per run get their run's settings; a pooled row gets the one line its runs share, or each run's
    (``[RUN] ...``, joined by `` / ``) where they differ (pooled with ``--force``).

    Args:
        summary: From :func:`summary_table` over ``run_dirs``.
        run_dirs: The run directories, in the order the summary was made from.
        names: Their run names (as in the ``run`` column); default: :func:`_run_names`.
    """
    dirs = _as_dirs(run_dirs)
    per_run = dict(zip(names if names is not None else _run_names(dirs), map(method_settings, dirs), strict=True))
    if "run" in summary.columns:
        text = [per_run.get(str(r), {}).get(str(m), NOT_RECORDED) for r, m in zip(summary["run"], summary["method"],
                                                                                   strict=True)]
        return summary.assign(settings=text)

    def pooled(method: str) -> str:
        found = {run: s[method] for run, s in per_run.items() if method in s}
        if len(set(found.values())) <= 1:
            return next(iter(found.values()), NOT_RECORDED)
        return " / ".join(f"[{run}] {line}" for run, line in found.items())

    lines = {m: pooled(m) for m in map(str, pd.unique(summary["method"].astype(str)))}
    return summary.assign(settings=summary["method"].astype(str).map(lines).fillna(NOT_RECORDED))


def settings_caption(summary: pd.DataFrame, metric: str) -> list[str]:
    """The caption lines of one metric's table: ``Settings of LABEL: ...`` per row, in table order.

    Empty when the summary has no ``settings`` column; one line when no row's settings were recorded (a run
    from before ``config.json`` had ``method_settings``).
    """
    if "settings" not in summary.columns:
        return []
    rows = summary[summary["metric"].astype(str) == metric]
    by_label = dict(zip(row_labels(rows), rows["settings"].astype(str), strict=True))
    if by_label and set(by_label.values()) == {NOT_RECORDED}:
        return ["Method settings: not recorded (this run's config.json has no method_settings; see its settings "
                "line)"]
    return [f"Settings of {label}: {by_label[label]}" for label in row_order(rows) if label in by_label]


def row_labels(summary: pd.DataFrame) -> pd.Series:
    """Each summary row's label in tables and figure legends: the method, or ``METHOD [RUN]`` per run."""
    if "run" not in summary.columns:
        return summary["method"].astype(str)
    return summary["method"].astype(str) + " [" + summary["run"].astype(str) + "]"


def row_order(summary: pd.DataFrame) -> list[str]:
    """The table rows in order: methods in run order, each followed by its runs when they are kept apart."""
    methods = [str(m) for m in _categories(summary["method"])]
    if "run" not in summary.columns:
        return methods
    present = set(row_labels(summary))
    runs = [str(r) for r in _categories(summary["run"])]
    return [label for m in methods for r in runs if (label := f"{m} [{r}]") in present]


def timing_table(dirs: Sequence[Path], names: Sequence[str], pooled: bool) -> pd.DataFrame:
    """Items and seconds per (method, transform), summed over the runs when pooled, else per ``METHOD [RUN]``."""
    frames = []
    for run_dir, name in zip(dirs, names, strict=True):
        timing = read_timing(run_dir)
        if len(dirs) > 1 and not pooled:
            timing = timing.assign(method=timing["method"].astype(str) + f" [{name}]")
        frames.append(timing)
    timing = pd.concat(frames, ignore_index=True)
    return timing.groupby(["method", "transform"], sort=False)[["items", "seconds"]].sum().reset_index()


def write_csv(summary: pd.DataFrame, path: str | Path) -> Path:
    """Write the summary as tidy CSV (``[run,] method, transform, metric, mean, std, n, n_failed[, settings]``).

    ``settings`` (from :func:`add_settings`) is each row's method settings line, so that a table read on its own
    says what it measured.
    """
    text_columns = {c: str for c in ("run", "method", "transform", "metric", "settings") if c in summary.columns}
    text = summary[_columns(summary)].astype(text_columns).to_csv(index=False)
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
    """The metric's cells; a column's best is bold only where the column has two values or more."""
    methods = row_order(summary)
    transforms = [str(t) for t in _categories(summary["transform"])]
    rows = summary[summary["metric"].astype(str) == metric]
    index = pd.MultiIndex.from_product([methods, transforms])
    stats = rows.set_index([row_labels(rows), rows["transform"].astype(str)])[["mean", "std"]]
    stats = stats.reindex(index)
    means = stats["mean"].to_numpy(dtype="float64").reshape(len(methods), len(transforms))
    stds = stats["std"].to_numpy(dtype="float64").reshape(len(methods), len(transforms))
    dec = _decimals(means) if decimals is None else decimals
    # Ties are judged at the printed precision: equal-looking numbers are marked alike.
    shown = np.round(means, dec)
    best = np.nanmax(shown, axis=0, initial=-np.inf) if higher_is_better else np.nanmin(shown, axis=0, initial=np.inf)
    compared = (~np.isnan(shown)).sum(axis=0) >= 2
    bold = (shown == best[None, :]) & ~np.isnan(shown) & compared[None, :]
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
    parts = [f"{label} / {r.transform}: {r.n_failed} failed, {r.n} ok"
             for label, r in zip(row_labels(rows), rows.itertuples(), strict=True)]
    return "Failed rows excluded: " + "; ".join(parts) + ".\n\n"


def cell_legend(summary: pd.DataFrame, pooled_runs: int = 1) -> str:
    """The sentence under "Results" saying what a cell is and when a cell is bold."""
    over = "items × seeds" + (f" × {pooled_runs} pooled runs" if pooled_runs > 1 else "")
    apart = " Runs are kept apart: rows read METHOD [RUN]." if "run" in summary.columns else ""
    return (f"Each cell: mean ± sample std over ok rows ({over}); the best value of a column is bold where the "
            f"column compares two values or more (with one method nothing is bold); {NAN_TEXT} = no value.{apart}")


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
        caption = settings_caption(summary, info.name)
        if caption:
            out.append("  \n".join(map(_md_escape, caption)) + "\n\n")
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
        out.extend(f"% {line}\n" for line in settings_caption(summary, info.name))
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
