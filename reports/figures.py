"""Figures from a run directory: paper-style sample grids and metric-vs-transform curves.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
that drawing needs no display, leaves the caller's matplotlib backend alone and leaks no open figures.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from reports.rundir import check_run_dir, read_results, read_sample_index, sample_path, write_atomic

CELL_IN = 1.0  # one image cell, inches (a 64x64 sample is one inch wide)
GAP_IN = 0.04  # white border around each image, inches
LABEL_IN = 1.0  # row-label column on the left, inches
TITLE_IN = 0.3  # column-title band on top, inches
FONT_PT = 8.0
MISSING_GREY = 204  # uint8 grey of a cell without an image
MAX_DPI = 256


def safe_label(label: str) -> str:
    """A file-name-safe version of a transform label (``"rotate:20"`` -> ``"rotate_20"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("._") or "_"


def cell_dpi(resolution: int) -> int:
    """Dots per inch so that one image cell (one inch) shows a sample of ``resolution`` pixels.

    Small samples are enlarged by a whole factor (crisp pixels, labels at least ~96 dpi); large ones
    are shown at most at ``MAX_DPI`` to keep the PNG small.
    """
    if resolution >= MAX_DPI:
        return MAX_DPI
    return resolution if resolution >= 96 else resolution * math.ceil(96 / resolution)


def _load_rgb(path: Path) -> np.ndarray | str:
    """The image as HxWx3 uint8, or a short reason why it cannot be shown."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return "unreadable"


def _fit(text: str, width_in: float, size: float = FONT_PT) -> tuple[str, float]:
    """Shrink (then truncate from the left) text so that it fits ``width_in`` inches."""
    fits = max(4, int(width_in * 72 / (0.6 * size)))  # ~0.6 em per character
    if len(text) <= fits:
        return text, size
    size = max(5.0, size * fits / len(text))
    fits = max(4, int(width_in * 72 / (0.6 * size)))
    return (text if len(text) <= fits else "…" + text[-(fits - 1) :]), size


def _methods(run_dir: Path, index: pd.DataFrame) -> list[str]:
    """Methods in run order (results.csv), then any that only have samples."""
    methods = list(pd.unique(read_results(run_dir)["method"]))
    extra = [k for k in pd.unique(index["kind"]) if k not in ("input", "target") and k not in methods]
    return [*methods, *extra]


def _save(fig: Figure, out_path: str | Path, dpi: float, **kwargs: object) -> Path:
    """Write the figure as PNG at ``out_path`` and as a PDF twin beside it (for papers); returns the PNG."""
    def writer(fmt: str):
        return lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt, facecolor="white", **kwargs)

    write_atomic(Path(out_path).with_suffix(".pdf"), writer("pdf"))
    return write_atomic(out_path, writer("png"))


def _draw_cell(fig: Figure, rect: list[float], cell: np.ndarray | str, dpi: int) -> None:
    ax = fig.add_axes(rect)
    ax.set_axis_off()
    if isinstance(cell, str):
        ax.imshow(np.full((8, 8, 3), MISSING_GREY, np.uint8), aspect="auto")
        ax.text(0.5, 0.5, cell, transform=ax.transAxes, ha="center", va="center", fontsize=FONT_PT, color="0.3")
        return
    # Nearest when enlarging keeps pixels honest; antialiasing when shrinking avoids moire.
    interpolation = "nearest" if dpi >= cell.shape[0] else "antialiased"
    ax.imshow(cell, interpolation=interpolation, aspect="auto")


def figure_grid(
    run_dir: str | Path, transform: str, out_path: str | Path, max_items: int = 8, dpi: int | None = None
) -> Path:
    """Save a grid of samples for one transform: rows ``input`` then each method, columns items.

    Args:
        run_dir: Run directory (reads ``samples/index.csv``, the PNGs and ``results.csv``).
        transform: Transform label as in ``results.csv`` (``"rotate:20"``).
        out_path: PNG to write (parent folders are created).
        max_items: At most this many items (columns), in the order of ``samples/index.csv``.
        dpi: Override the resolution; default :func:`cell_dpi` of the sample size. The PNG is
            ``(LABEL_IN + cols * CELL_IN) * dpi`` by ``(TITLE_IN + rows * CELL_IN) * dpi`` pixels.

    Returns:
        ``out_path`` as a Path. Missing or unreadable samples become grey cells saying so.

    Raises:
        ValueError: If ``max_items < 1`` or the run has no samples for ``transform``.
        RunDirError: If ``run_dir`` is not a run directory.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    run_dir = check_run_dir(run_dir)
    index = read_sample_index(run_dir)
    rows_t = index[index["transform"] == transform]
    if rows_t.empty:
        known = list(pd.unique(index["transform"]))
        raise ValueError(f"{run_dir / 'samples' / 'index.csv'}: no samples for transform {transform!r}; has {known}")
    items = list(pd.unique(rows_t["item"]))[:max_items]
    kinds = ["input", *_methods(run_dir, index)]
    first = rows_t.drop_duplicates(["item", "kind"]).set_index(["item", "kind"])["path"]
    cells = {
        (kind, item): _load_rgb(sample_path(run_dir, first[(item, kind)])) if (item, kind) in first.index else "missing"
        for kind in kinds
        for item in items
    }
    sizes = [c.shape[0] for c in cells.values() if not isinstance(c, str)]
    dpi = dpi or cell_dpi(sizes[0] if sizes else 64)
    width, height = LABEL_IN + len(items) * CELL_IN, TITLE_IN + len(kinds) * CELL_IN
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    text, size = _fit(str(transform), LABEL_IN - 0.1)
    fig.text(0.05 / width, 1 - TITLE_IN / 2 / height, text, fontsize=size, weight="bold", va="center")
    for c, item in enumerate(items):
        text, size = _fit(str(item), CELL_IN - 0.05)
        x = (LABEL_IN + (c + 0.5) * CELL_IN) / width
        fig.text(x, 1 - TITLE_IN / 2 / height, text, fontsize=size, ha="center", va="center")
    for r, kind in enumerate(kinds):
        bottom = height - TITLE_IN - (r + 1) * CELL_IN
        text, size = _fit(str(kind), LABEL_IN - 0.1)
        fig.text(
            (LABEL_IN - 0.05) / width,
            (bottom + CELL_IN / 2) / height,
            text,
            fontsize=size,
            ha="right",
            va="center",
        )
        for c, item in enumerate(items):
            left = LABEL_IN + c * CELL_IN
            side = CELL_IN - GAP_IN
            rect = [(left + GAP_IN / 2) / width, (bottom + GAP_IN / 2) / height, side / width, side / height]
            _draw_cell(fig, rect, cells[(kind, item)], dpi)
    return _save(fig, out_path, dpi)


def metric_curve(
    summary: pd.DataFrame, metric: str, out_path: str | Path, higher_is_better: bool | None = None
) -> Path:
    """Save a plot of one metric against transform (run order), one line per method, std as error bars.

    Args:
        summary: From :func:`reports.tables.summary_table`.
        metric: Metric name.
        out_path: PNG to write.
        higher_is_better: Adds ↑ or ↓ to the axis label when given.

    Returns:
        ``out_path`` as a Path.
    """
    rows = summary[summary["metric"].astype(str) == metric]
    if rows.empty:
        raise ValueError(f"metric {metric!r} not in summary; has {list(pd.unique(summary['metric'].astype(str)))}")
    transforms = [str(t) for t in pd.unique(rows["transform"].astype(str))]
    if isinstance(summary["transform"].dtype, pd.CategoricalDtype):
        transforms = [str(t) for t in summary["transform"].cat.categories if str(t) in transforms]
    fig = Figure(figsize=(max(4.0, 2.0 + 0.6 * len(transforms)), 3.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(transforms))
    for method, part in rows.groupby(rows["method"].astype(str), sort=False):
        stats = part.set_index(part["transform"].astype(str))[["mean", "std"]].reindex(transforms)
        ax.errorbar(x, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=method)
    ax.set_xticks(
        x,
        transforms,
        rotation=30 if len(transforms) > 5 else 0,
        ha="right" if len(transforms) > 5 else "center",
    )
    arrow = "" if higher_is_better is None else (" ↑" if higher_is_better else " ↓")
    ax.set_ylabel(metric + arrow)
    ax.set_xlabel("transform")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT_PT, frameon=False)
    return _save(fig, out_path, 100, bbox_inches="tight")


def transform_figure(run_dir: str | Path, out_path: str | Path, item: str | None = None) -> Path:
    """One row: the same item under every transform of the run (its ``input`` samples), titled by label.

    Args:
        run_dir: A run directory with samples.
        out_path: PNG path (a PDF twin is written beside it).
        item: Which item to show (default: the first item that has an input sample).
    """
    run_dir = check_run_dir(run_dir)
    index = read_sample_index(run_dir)
    inputs = index[index["kind"] == "input"]
    if inputs.empty:
        raise ValueError(f"{run_dir}: no input samples to draw the transform figure from")
    item = item if item is not None else inputs["item"].iloc[0]
    rows = inputs[inputs["item"] == item]
    labels = list(pd.unique(rows["transform"]))
    cells = [_load_rgb(sample_path(run_dir, rows[rows["transform"] == t]["path"].iloc[0])) for t in labels]
    res = next((c.shape[0] for c in cells if not isinstance(c, str)), 64)
    dpi = cell_dpi(res)
    width, height = float(len(labels)), 1.3
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    for k, (label, cell) in enumerate(zip(labels, cells, strict=True)):
        _draw_cell(fig, [k / width, 0.0, 1.0 / width, 1.0 / height], cell, dpi)
        text, size = _fit(label, 1.0)
        fig.text((k + 0.5) / width, 1.0 - 0.15 / height, text, ha="center", va="center", fontsize=size)
    return _save(fig, out_path, dpi)


def transform_magnitudes(run_dir: str | Path) -> dict[str, tuple[str, float]]:
    """Transform label -> (family, mean magnitude) from ``transforms.csv``.

    Families: ``rotation`` (mean |angle|, degrees), ``translation`` (mean shift, pixels), ``scale`` (the
    factor); the identity belongs to every family (0, 0 and 1). Compositions are left out.
    """
    import json

    path = check_run_dir(run_dir) / "transforms.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    out: dict[str, tuple[str, float]] = {}
    for label, part in df.groupby("transform", sort=False):
        p = [json.loads(v) for v in part["params"]]
        angle = float(np.mean([abs(q.get("angle", 0.0)) for q in p]))
        shift = float(np.mean([math.hypot(*q.get("translation", (0.0, 0.0))) for q in p]))
        scale = float(np.mean([q.get("scale", 1.0) for q in p]))
        moved = [angle > 1e-6, shift > 1e-6, abs(scale - 1) > 1e-6]
        if not any(moved):
            out[label] = ("identity", 0.0)
        elif sum(moved) == 1:
            out[label] = [("rotation", angle), ("translation", shift), ("scale", scale)][moved.index(True)]
    return out


def family_curves(summary: pd.DataFrame, magnitudes: dict[str, tuple[str, float]], metric: str,
                  out_path: str | Path, higher_is_better: bool | None = None) -> Path | None:
    """Metric against transform magnitude, one panel per family, one line per method with a ±std band.

    Returns None when the run has no single-family transform.
    """
    rows = summary[summary["metric"].astype(str) == metric]
    families = [f for f in ("translation", "rotation", "scale") if any(v[0] == f for v in magnitudes.values())]
    if rows.empty or not families:
        return None
    units = {"translation": "shift (px)", "rotation": "|angle| (deg)", "scale": "scale factor"}
    fig = Figure(figsize=(3.2 * len(families), 3.0))
    FigureCanvasAgg(fig)
    arrow = "" if higher_is_better is None else (" ↑" if higher_is_better else " ↓")
    for k, family in enumerate(families):
        ax = fig.add_subplot(1, len(families), k + 1)
        for method, part in rows.groupby(rows["method"].astype(str), sort=False):
            pts = []
            for _, r in part.iterrows():
                fam, mag = magnitudes.get(str(r["transform"]), (None, None))
                if fam == family or fam == "identity":
                    pts.append((1.0 if fam == "identity" and family == "scale" else mag, r["mean"], r["std"]))
            if not pts:
                continue
            x, m, s = (np.array(v, dtype=float) for v in zip(*sorted(pts), strict=True))
            s = np.nan_to_num(s)
            ax.plot(x, m, marker="o", label=method)
            ax.fill_between(x, m - s, m + s, alpha=0.2)
        ax.set_xlabel(units[family])
        ax.set_ylabel(metric + arrow if k == 0 else "")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=FONT_PT, frameon=False)
    return _save(fig, out_path, 100, bbox_inches="tight")
