"""A single self-contained HTML report: run information, the summary tables and every figure embedded.

The file needs nothing beside it and nothing from the network: styles are inline, figures are base64
``data:`` URIs, and a Content-Security-Policy forbids any other source, so it opens offline and can be
mailed or attached to a CI job as one file. Tables come from the same summary and the same best-cell
logic as the Markdown and LaTeX tables (:mod:`reports.tables`); every piece of text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reports.build import run_settings_line
from reports.figures import safe_label, transform_magnitudes
from reports.pooling import PoolPlan, plan_pooling, repeated_rows
from reports.rundir import read_config, read_versions, write_atomic
from reports.tables import (
    NAN_TEXT,
    MetricInfoLike,
    _as_dirs,
    _failure_note,
    _grid,
    _plan,
    _run_names,
    add_settings,
    arrow,
    cell_legend,
    load_metric_info,
    load_results,
    method_settings,
    settings_caption,
    summary_table,
    timing_table,
)

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
"""Figure files that browsers show in ``<img>`` (a PDF is not one: pass its PNG twin)."""

FAILED_ROWS_SHOWN = 100
TIMING_ROWS_SHOWN = 20
MAX_FIGURE_BYTES = 7 * 2**20
"""Figures embedded in one report, in bytes: about 9.3 MB of base64, so the page stays under ~10 MB."""
PER_TRANSFORM_PREFIXES = ("grid_", "edits_")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 90em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; display: block; overflow-x: auto; }
th, td { padding: 0.2em 0.5em; border-bottom: 1px solid #ddd; }
thead th { border-bottom: 2px solid #444; }
td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; }
details { margin: 1em 0; }
"""

# Nothing but inline styles and data: images may load, even if someone edits the file later.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _one_line(value: Any) -> str:
    return " ".join(str(value).split()) if value not in (None, "") else "not recorded"


def _table(head: Sequence[str] | None, rows: Sequence[Sequence[str]], *, raw: bool = False) -> str:
    """An HTML table, the first cell of a row as its header; cells escaped unless ``raw`` (done by the caller)."""
    cell = (lambda c: c) if raw else _e
    out = ["<table>\n"]
    if head is not None:
        out.extend(["<thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead>\n"])
    out.append("<tbody>\n")
    for row in rows:
        out.append("<tr><th>" + cell(row[0]) + "</th>" + "".join(f"<td>{cell(c)}</td>" for c in row[1:]) + "</tr>\n")
    return "".join(out) + "</tbody>\n</table>\n"


def to_html(summary: pd.DataFrame, metric_info: MetricInfoLike, decimals: int | None = None) -> str:
    """HTML tables, one per metric: rows methods, columns transforms, cells ``mean ± std``.

    Same content as :func:`reports.tables.to_markdown`: ↑/↓ after the metric name, the best method per
    column in ``<b>`` (ties all bold), ``–`` for missing cells, unavailable metrics listed with reasons.

    Args:
        summary: From :func:`reports.tables.summary_table`.
        metric_info: ``{metric: MetricInfo or metrics.json entry}``.
        decimals: Digits after the point; default as in the Markdown tables.

    Returns:
        An HTML fragment (no ``<html>`` wrapper).
    """
    tabled, unavailable = _plan(summary, metric_info)
    out = []
    for info in tabled:
        grid = _grid(summary, info.name, info.higher_is_better, decimals)
        out.append(f"<h3>{_e(info.name)} {arrow(info)}</h3>\n")
        if info.description:
            out.append(f'<p class="note">{_e(info.description)}</p>\n')
        rows = [
            [_e(method), *(f"<b>{_e(c)}</b>" if b else _e(c) for c, b in zip(cells, bold, strict=True))]
            for method, cells, bold in zip(grid.methods, grid.cells, grid.bold, strict=True)
        ]
        out.append(_table([f"{info.name} {arrow(info)}", *grid.transforms], rows, raw=True))
        note = _failure_note(summary, info.name).strip()
        if note:
            out.append(f'<p class="note">{_e(note)}</p>\n')
        caption = settings_caption(summary, info.name)
        if caption:
            out.append('<p class="note">' + "<br>\n".join(map(_e, caption)) + "</p>\n")
    if not tabled:
        out.append("<p>No results.</p>\n")
    if unavailable:
        out.append("<p><b>Unavailable metrics</b> (not computed, no table):</p>\n<ul>\n")
        out.extend(f"<li>{_e(i.name)} {arrow(i)}: {_e(i.reason or 'no reason given')}</li>\n" for i in unavailable)
        out.append("</ul>\n")
    return "".join(out)


def _runs_html(dirs: Sequence[Path], names: Sequence[str], plan: PoolPlan | None = None) -> str:
    out = ["<h2>Runs</h2>\n"]
    for run_dir, name in zip(dirs, names, strict=True):
        v, config = read_versions(run_dir), read_config(run_dir)
        packages = v.get("packages")
        fields = {
            "folder": str(run_dir),
            "git commit": v.get("git_commit"),
            "device": v.get("device"),
            "date": v.get("date"),
            "generator": v.get("generator"),
            "data": v.get("data"),
            "perceptual": v.get("perceptual"),
            "settings": run_settings_line(run_dir) or None,
            **{f"method {name}": line for name, line in method_settings(run_dir).items()},
            "python": v.get("python"),
            "packages": ", ".join(f"{k} {p}" for k, p in packages.items()) if isinstance(packages, dict) else None,
        }
        out.append(f"<h3>{_e(name)}</h3>\n")
        out.append(_table(None, [[k, _one_line(val)] for k, val in fields.items()]))
        if config:
            text = json.dumps(config, indent=2, default=str)
            out.append(f"<details><summary>config.json</summary><pre>{_e(text)}</pre></details>\n")
    note = plan.note() if plan is not None else ""
    return "".join(out) + (f'<p class="note">{_e(note)}</p>\n' if note else "")


def _failed_html(df: pd.DataFrame) -> str:
    keys = ["run", "item", "method", "transform", "seed", "status"]
    failed = df[df["status"] != "ok"].drop_duplicates(keys)[keys]
    if failed.empty:
        return "<h2>Failed items</h2>\n<p>None.</p>\n"
    rows = [
        [r.run, r.item, r.method, r.transform, r.seed, str(r.status).removeprefix("failed:").strip() or r.status]
        for r in failed.head(FAILED_ROWS_SHOWN).itertuples(index=False)
    ]
    more = len(failed) - FAILED_ROWS_SHOWN
    tail = f"<p>... and {more} more (see results.csv).</p>\n" if more > 0 else ""
    head = f"<h2>Failed items</h2>\n<p>{len(failed)} (item, method, transform, seed) failed:</p>\n"
    return head + _table(["run", "item", "method", "transform", "seed", "reason"], rows) + tail


def _per_item(seconds: float, items: float) -> str:
    return f"{seconds / items:.2f}" if items else NAN_TEXT


def _timing_html(dirs: Sequence[Path], names: Sequence[str], pooled: bool) -> str:
    total = timing_table(dirs, names, pooled)
    if total.empty:
        return ""
    timing = total
    rows = [
        [r.method, r.transform, f"{r.items:g}", f"{r.seconds:.1f}", _per_item(r.seconds, r.items)]
        for r in total.itertuples(index=False)
    ]
    table = _table(["method", "transform", "items", "seconds", "s / item"], rows)
    if len(rows) <= TIMING_ROWS_SHOWN:
        return "<h2>Timing</h2>\n" + table
    # many transforms: per-method totals first, the full table folded (it would push the figures far down)
    per_method = timing.groupby("method", sort=False)[["items", "seconds"]].sum()
    head = [[r.method, f"{r.items:g}", f"{r.seconds:.1f}", _per_item(r.seconds, r.items)]
            for r in per_method.reset_index().itertuples(index=False)]
    return ("<h2>Timing</h2>\n" + _table(["method", "items (all transforms)", "seconds", "s / item"], head)
            + f"<details><summary>Per transform ({len(rows)} rows)</summary>\n{table}</details>\n")


def embed_image(path: str | Path) -> str:
    """The image file as a ``data:`` URI (base64), for ``<img src=...>``.

    Raises:
        ValueError: If the file does not exist or is not a type browsers show in ``<img>``.
    """
    path = Path(path)
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"figure {path}: cannot embed a {path.suffix or 'suffix-less'} file in HTML; "
                         f"use one of {sorted(IMAGE_TYPES)} (for a PDF figure, pass its PNG)")
    if not path.is_file():
        raise ValueError(f"figure {path}: no such file")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def key_transforms(run_dirs: Sequence[str | Path]) -> set[str]:
    """File-name labels (:func:`reports.figures.safe_label`) of the transforms that best show a run.

    The identity and, per family (``transforms.csv``), the largest translation and rotation and the
    smallest and largest scale factor.
    """
    keep = set()
    for run_dir in run_dirs:
        by_family: dict[str, list[tuple[float, str]]] = {}
        for label, (family, magnitude) in transform_magnitudes(run_dir).items():
            by_family.setdefault(family, []).append((magnitude, label))
        for family, found in by_family.items():
            ends = [max(found)] if family in ("translation", "rotation") else [min(found), max(found)]
            keep |= {safe_label(label) for _, label in (found if family == "identity" else ends)}
    return keep


def choose_figures(
    figures: Sequence[str | Path], run_dirs: Sequence[str | Path], max_bytes: int | None = MAX_FIGURE_BYTES
) -> tuple[list[Path], list[Path]]:
    """Split figures into (embedded, left out) so that the embedded ones stay under ``max_bytes``.

    All are embedded when they fit (or ``max_bytes`` is None). Otherwise the per-transform figures
    (``grid_*``, ``edits_*``) are kept only for the :func:`key_transforms`, and if that is still too
    much, the last per-transform figures are left out too. Summary figures are always embedded.
    """
    figures = [Path(f) for f in figures]

    def size(group: Sequence[Path]) -> int:
        return sum(f.stat().st_size for f in group if f.is_file())

    if max_bytes is None or size(figures) <= max_bytes:
        return figures, []
    per_transform = [f for f in figures if f.name.startswith(PER_TRANSFORM_PREFIXES)]
    keys = key_transforms(run_dirs)
    left = [f for f in per_transform if not any(f.stem.endswith("_" + k) for k in keys)]
    embedded = [f for f in figures if f not in left]
    while size(embedded) > max_bytes and any(f in per_transform for f in embedded):
        last = max(i for i, f in enumerate(embedded) if f in per_transform)
        left.append(embedded.pop(last))
    return embedded, sorted(left, key=figures.index)


def _figures_html(figures: Sequence[str | Path], left_out: Sequence[Path] = ()) -> str:
    if not figures and not left_out:
        return ""
    out = ["<h2>Figures</h2>\n"]
    if left_out:
        names = ", ".join(f.name for f in left_out)
        out.append(f'<p class="note">Not embedded, to keep this page small: {len(left_out)} figures that '
                   f"<code>bench report</code> writes beside it (PNG, each with a PDF twin): {_e(names)}.</p>\n")
    for fig in map(Path, figures):
        out.append(f'<figure><img src="{embed_image(fig)}" alt="{_e(fig.name)}">'
                   f"<figcaption>{_e(fig.name)}</figcaption></figure>\n")
    return "".join(out)


def _results_html(summary: pd.DataFrame, metric_info: MetricInfoLike) -> str:
    """The metric tables; the per-edit ones (``edit[LABEL]/...``, many per run) folded in a ``<details>``."""
    is_edit = summary["metric"].astype(str).str.startswith("edit[")
    info = dict(metric_info)
    main = to_html(summary[~is_edit], {k: v for k, v in info.items() if not k.startswith("edit[")})
    if not is_edit.any():
        return main
    edits = to_html(summary[is_edit], {k: v for k, v in info.items() if k.startswith("edit[")})
    count = summary.loc[is_edit, "metric"].astype(str).nunique()
    tables = f"{count} table" + ("s" if count != 1 else "")
    return (main + f"<details><summary><b>Edit metrics</b>: {tables}, one per edit and metric "
            "(click to open)</summary>\n" + edits + "</details>\n")


def render_html(
    run_dirs: Sequence[str | Path] | str | Path,
    figures: Sequence[str | Path] = (),
    *,
    summary: pd.DataFrame | None = None,
    metric_info: MetricInfoLike | None = None,
    title: str = "Benchmark report",
    max_figure_bytes: int | None = MAX_FIGURE_BYTES,
    pool: bool = False,
    force: bool = False,
) -> str:
    """The whole report as one HTML document (see :func:`write_html`)."""
    dirs = _as_dirs(run_dirs)
    names = _run_names(dirs)
    df = load_results(dirs)
    plan = plan_pooling(dirs, names, pool=pool, force=force, repeated_rows=repeated_rows(df))
    figures, left_out = choose_figures(figures, dirs, max_figure_bytes)
    summary = summary_table(df, pool=plan.pooled) if summary is None else summary
    if "settings" not in summary.columns:
        summary = add_settings(summary, dirs, names)
    metric_info = load_metric_info(dirs) if metric_info is None else metric_info
    body = (
        f"<h1>{_e(title)}</h1>\n"
        + _runs_html(dirs, names, plan)
        + f"<h2>Results</h2>\n<p>{_e(cell_legend(summary, len(dirs) if plan.pooled else 1))}</p>\n"
        + _results_html(summary, metric_info)
        + _failed_html(df)
        + _timing_html(dirs, names, plan.pooled)
        + _figures_html(figures, left_out)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def write_html(
    run_dirs: Sequence[str | Path] | str | Path,
    out_path: str | Path,
    figures: Sequence[str | Path] = (),
    *,
    summary: pd.DataFrame | None = None,
    metric_info: MetricInfoLike | None = None,
    title: str = "Benchmark report",
    max_figure_bytes: int | None = MAX_FIGURE_BYTES,
    pool: bool = False,
    force: bool = False,
) -> Path:
    """Write one self-contained HTML report that opens offline.

    Args:
        run_dirs: Run directories to merge (as for :func:`reports.build.write_report`).
        out_path: The ``.html`` file to write (atomically; parent folders created).
        figures: Image files to embed, in order (PNG, JPEG, GIF, WebP or SVG), e.g. the ``.png`` paths
            that :func:`reports.build.write_report` returned.
        summary: A summary from :func:`reports.tables.summary_table`; default: computed from the runs.
        metric_info: ``{metric: MetricInfo}``; default: merged from the runs' ``metrics.json``.
        title: Page title and heading.
        max_figure_bytes: Embed figures up to this many bytes in all (base64 adds a third); beyond it
            only the identity and the largest transforms' grids and edit figures are embedded, and the
            page names the figures left out (see :func:`choose_figures`). None embeds every figure.
        pool: Merge several runs into one cell (as :func:`reports.build.write_report`); default: kept apart.
        force: With ``pool``, pool runs whose settings differ.

    Returns:
        ``out_path`` as a Path.

    Raises:
        reports.RunDirError: If a directory is not a run directory.
        ValueError: If a figure is missing or of a type that cannot be embedded.
    """
    text = render_html(run_dirs, figures, summary=summary, metric_info=metric_info, title=title,
                       max_figure_bytes=max_figure_bytes, pool=pool, force=force)
    return write_atomic(out_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
