"""Metric plots a reader understands without the table: one figure per metric family, titled, with units.

A metric family is a metric and its ``@valid`` twin (the same metric on the pixels that came from inside the
source); each figure has a row per variant. The transform axis is numeric where every transform of the run
belongs to one family (identity, translation, rotation or scale: one panel per family, lines between the
magnitudes) and categorical otherwise (points only: the order of ``R30`` and ``S3/4`` means nothing). Each
point is the mean over the ok rows of a cell (items × seeds) and its bar is ±1 sample standard deviation;
the figure says so. For protocol runs (``config.json`` names a protocol) the translation axis also shows the
protocol's 1024 px units, since ``T150`` is a shift of 150 px at 1024 px, only 9.4 px at 64 px.

Figures are drawn on a bare ``matplotlib.figure.Figure`` (no pyplot), as in :mod:`reports.figures`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.figures import FONT_PT, _save, transform_magnitudes
from reports.rundir import MetricInfo, check_run_dir, read_config
from reports.tables import _categories, row_labels, row_order

PROTOCOL_RESOLUTION = 1024
"""The resolution the named protocols' labels are given at (``transforms.REFERENCE_RESOLUTION``)."""
VALID_SUFFIX = "@valid"
FAMILY_ORDER = ("translation", "rotation", "scale")
MAX_TICK_LABELS = 6  # a numeric panel names its transforms under the ticks up to this many points
DISPLAY = {
    "psnr": ("PSNR", "dB"),
    "mse": ("MSE", "on [0, 1] images"),
    "ssim": ("SSIM", ""),
    "ms-ssim": ("MS-SSIM", ""),
    "lpips-alex": ("LPIPS (AlexNet)", ""),
    "lpips-vgg": ("LPIPS (VGG16)", ""),
    "attrnet-lpips": ("attrnet-LPIPS", "world perceptual distance"),
    "attr-gain": ("attribute gain", "attribute-net score"),
    "attr-drift": ("attribute drift", "attribute-net score"),
}
"""metric base name -> (display name, unit or what the number is on)."""
AXIS_TEXT = {"translation": "shift (px at {res} px)", "rotation": "|angle| (degrees)", "scale": "scale factor"}


def _display(name: str) -> tuple[str, str]:
    """``(display name, unit)`` of a metric, edit metrics (``edit[all]/psnr``) included."""
    base = name.removesuffix(VALID_SUFFIX)
    prefix, slash, kind = base.partition("]/")
    if slash and prefix.startswith("edit["):
        what = prefix.removeprefix("edit[")
        scope = "mean over all edits" if what == "all" else what
        consistency = kind.startswith("consistency-")
        inner, unit = _display(kind.removeprefix("consistency-"))
        lead = "edit consistency: " if consistency else ("edit: " if kind in ("psnr", "ssim", "mse") else "edit ")
        return f"{lead}{inner} ({scope})", unit
    return DISPLAY.get(base, (base, ""))


def metric_label(name: str, higher_is_better: bool | None = None) -> str:
    """Axis label: ``"PSNR (dB) ↑"``, ``"SSIM ↑"``, ``"PSNR@valid (dB) ↑"``."""
    title, unit = _display(name)
    title += VALID_SUFFIX if name.endswith(VALID_SUFFIX) else ""
    arrow = "" if higher_is_better is None else (" ↑" if higher_is_better else " ↓")
    return title + (f" ({unit})" if unit else "") + arrow


def metric_families(infos: Sequence[MetricInfo]) -> list[tuple[str, list[MetricInfo]]]:
    """Group metrics by family (``psnr`` with ``psnr@valid``), whole-image variant first, in first-seen order."""
    families: dict[str, list[MetricInfo]] = {}
    for info in infos:
        families.setdefault(info.name.removesuffix(VALID_SUFFIX), []).append(info)
    return [(base, sorted(v, key=lambda i: i.name.endswith(VALID_SUFFIX))) for base, v in families.items()]


@dataclass(frozen=True)
class TransformAxis:
    """What the report knows about its transforms: magnitudes, working resolution and protocol.

    Attributes:
        magnitudes: label -> (family, mean magnitude) of single-family transforms
            (:func:`reports.figures.transform_magnitudes`); labels whose magnitude differs between runs are
            left out, so they are drawn as categories.
        resolution: Working resolution in pixels (``transforms.csv``), or None when runs differ or none says.
        protocol: The protocol named in ``config.json`` (the same in every run), else None.
    """

    magnitudes: dict[str, tuple[str, float]] = field(default_factory=dict)
    resolution: int | None = None
    protocol: str | None = None

    @property
    def protocol_scale(self) -> float | None:
        """Factor from working pixels to the protocol's 1024 px units, when a protocol run is below 1024 px."""
        if self.protocol is None or self.resolution is None or self.resolution == PROTOCOL_RESOLUTION:
            return None
        return PROTOCOL_RESOLUTION / self.resolution


def _resolution(run_dir: Path) -> int | None:
    path = run_dir / "transforms.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=1)
    if df.empty or "params" not in df.columns:
        return None
    value = json.loads(df["params"].iloc[0]).get("resolution")
    return int(value) if value else None


def transform_axis(run_dirs: Sequence[str | Path]) -> TransformAxis:
    """The :class:`TransformAxis` of one or more runs (read from ``transforms.csv`` and ``config.json``)."""
    dirs = [check_run_dir(d) for d in run_dirs]
    merged: dict[str, tuple[str, float]] = {}
    clashes: set[str] = set()
    for run_dir in dirs:
        for label, value in transform_magnitudes(run_dir).items():
            if label in merged and (merged[label][0] != value[0] or abs(merged[label][1] - value[1]) > 1e-6):
                clashes.add(label)
            merged.setdefault(label, value)
    resolutions = {_resolution(d) for d in dirs}
    protocols = {read_config(d).get("protocol") for d in dirs}
    return TransformAxis({k: v for k, v in merged.items() if k not in clashes},
                         resolutions.pop() if len(resolutions) == 1 else None,
                         protocols.pop() if len(protocols) == 1 else None)


def _panels(transforms: Sequence[str], axis: TransformAxis) -> list[str]:
    """One panel per transform family when every transform has a family, else one categorical panel."""
    families = [f for f in FAMILY_ORDER if any(axis.magnitudes.get(t, ("",))[0] == f for t in transforms)]
    if families and all(t in axis.magnitudes for t in transforms):
        return families
    return ["categorical"]


def _positions(panel: str, transforms: Sequence[str], axis: TransformAxis) -> dict[str, float]:
    """The x position of each transform drawn in ``panel``; the identity sits at 0 (1 on the scale axis)."""
    if panel == "categorical":
        return {t: float(k) for k, t in enumerate(transforms)}
    out = {}
    for t in transforms:
        family, magnitude = axis.magnitudes[t]
        if family == panel:
            out[t] = magnitude
        elif family == "identity":
            out[t] = 1.0 if panel == "scale" else 0.0
    return out


def _tick_text(label: str, axis: TransformAxis) -> str:
    """A categorical tick: the label, plus its working-resolution shift for protocol translations."""
    family, magnitude = axis.magnitudes.get(label, ("", 0.0))
    if family == "translation" and axis.protocol_scale is not None:
        return f"{label}\n{magnitude:.1f} px"
    return label


def _draw_panel(ax, panel: str, rows: pd.DataFrame, series: Sequence[str], transforms: Sequence[str],
                axis: TransformAxis) -> None:
    """Points (and, on a numeric axis, lines) with ±1 std bars for every series of one metric variant."""
    pos = _positions(panel, transforms, axis)
    labels = row_labels(rows)
    span = (max(pos.values()) - min(pos.values())) or 1.0
    step = (0.5 if panel == "categorical" else 0.03 * span) / max(len(series), 1)
    for k, name in enumerate(series):
        part = rows[labels == name]
        stats = part.set_index(part["transform"].astype(str))[["mean", "std"]]
        shown = [t for t in pos if t in stats.index]
        if not shown:
            continue
        shown.sort(key=pos.get)
        x = np.array([pos[t] for t in shown]) + (k - (len(series) - 1) / 2) * step
        mean = stats.loc[shown, "mean"].to_numpy(float)
        std = np.nan_to_num(stats.loc[shown, "std"].to_numpy(float))
        ax.errorbar(x, mean, yerr=std, fmt="o" if panel == "categorical" else "o-", capsize=3, markersize=4,
                    linewidth=1, label=name)
    if panel == "categorical":
        ax.set_xticks(list(pos.values()), [_tick_text(t, axis) for t in pos], fontsize=FONT_PT - 1,
                      rotation=30 if len(pos) > 5 else 0, ha="right" if len(pos) > 5 else "center")
        ax.set_xlim(-0.5, len(pos) - 0.5)
        ax.set_xlabel("transform", fontsize=FONT_PT)
        return
    if len(pos) <= MAX_TICK_LABELS:
        ax.set_xticks(list(pos.values()), [f"{v:.3g}\n{t}" for t, v in pos.items()], fontsize=FONT_PT - 1)
    ax.set_xlabel(AXIS_TEXT[panel].format(res=axis.resolution or "working"), fontsize=FONT_PT)
    if panel == "translation" and axis.protocol_scale is not None:
        scale = axis.protocol_scale
        top = ax.secondary_xaxis("top", functions=(lambda v: v * scale, lambda v: v / scale))
        top.set_xticks([v * scale for v in pos.values()])
        top.set_xlabel(f"shift in the protocol's {PROTOCOL_RESOLUTION} px units", fontsize=FONT_PT - 1)
        top.tick_params(labelsize=FONT_PT - 1)


def _subtitle(rows: pd.DataFrame, axis: TransformAxis, pooled_runs: int) -> str:
    n = rows["n"].to_numpy()
    n_text = f"n = {n.min()}" if n.min() == n.max() else f"n = {n.min()}-{n.max()}"
    over = "items × seeds" + (f" of {pooled_runs} pooled runs" if pooled_runs > 1 else "")
    text = f"points: mean over {over} ({n_text} per point); bars: ±1 sample std"
    if axis.protocol_scale is not None:
        text += (f"\n{axis.protocol} labels are in {PROTOCOL_RESOLUTION} px units; this run works at "
                 f"{axis.resolution} px (T150 = {150 / axis.protocol_scale:.1f} px here)")
    return text


def metric_figure(summary: pd.DataFrame, variants: Sequence[MetricInfo], axis: TransformAxis,
                  out_path: str | Path, *, pooled_runs: int = 1, arrows: bool = True) -> Path | None:
    """Save one metric family against transform: a row per variant (whole image, ``@valid``), titled.

    Args:
        summary: From :func:`reports.tables.summary_table` (runs kept apart become ``METHOD [RUN]`` series).
        variants: The family's metrics (:func:`metric_families`), drawn top to bottom.
        axis: From :func:`transform_axis`.
        out_path: PNG to write (with a PDF twin).
        pooled_runs: How many runs the cells pool (said in the subtitle).
        arrows: Mark the direction (↑ higher is better, ↓ lower) in the axis labels.

    Returns:
        ``out_path`` as a Path, or None when the summary has no row of these metrics.
    """
    names = [v.name for v in variants]
    rows_all = summary[summary["metric"].astype(str).isin(names)]
    variants = [v for v in variants if (rows_all["metric"].astype(str) == v.name).any()]
    if not variants:
        return None
    transforms = [str(t) for t in _categories(summary["transform"]) if (rows_all["transform"].astype(str) == t).any()]
    series = [s for s in row_order(summary) if s in set(row_labels(rows_all))]
    panels = _panels(transforms, axis)
    width = (max(4.0, 1.6 + 0.6 * len(transforms)) if panels == ["categorical"] else 3.2 * len(panels))
    fig = Figure(figsize=(width + 1.4, 2.5 * len(variants) + 0.9))
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(variants), len(panels), squeeze=False, sharey="row")
    for r, info in enumerate(variants):
        rows = rows_all[rows_all["metric"].astype(str) == info.name]
        for c, panel in enumerate(panels):
            ax = grid[r][c]
            _draw_panel(ax, panel, rows, series, transforms, axis)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=FONT_PT - 1)
            if c == 0:
                region = "valid region only" if info.name.endswith(VALID_SUFFIX) else "whole image"
                label = metric_label(info.name, info.higher_is_better if arrows else None)
                ax.set_ylabel(f"{label}\n{region}", fontsize=FONT_PT)
    grid[0][-1].legend(fontsize=FONT_PT - 1, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    title, _ = _display(variants[0].name)
    subtitle = _subtitle(rows_all, axis, pooled_runs)
    top = 1 - (0.17 * (subtitle.count("\n") + 1) + 0.1) / fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.text(0.5, top + 0.005, subtitle, ha="center", va="bottom", fontsize=FONT_PT - 0.5, color="0.3")
    fig.suptitle(f"{title} by transform", y=1.0, va="bottom", fontsize=FONT_PT + 3, weight="bold")
    return _save(fig, out_path, 100, bbox_inches="tight")


def metric_curve(summary: pd.DataFrame, metric: str, out_path: str | Path,
                 higher_is_better: bool | None = None) -> Path:
    """One metric against transform as categories (points with ±1 std bars), titled and with units.

    Args:
        summary: From :func:`reports.tables.summary_table`.
        metric: Metric name.
        out_path: PNG to write.
        higher_is_better: Adds ↑ or ↓ to the axis label when given.

    Returns:
        ``out_path`` as a Path.
    """
    if not (summary["metric"].astype(str) == metric).any():
        raise ValueError(f"metric {metric!r} not in summary; has {list(pd.unique(summary['metric'].astype(str)))}")
    info = MetricInfo(metric, bool(higher_is_better))
    path = metric_figure(summary, [info], TransformAxis(), out_path, arrows=higher_is_better is not None)
    if path is None:  # pragma: no cover - the metric was found above
        raise ValueError(f"metric {metric!r}: nothing to draw")
    return path
