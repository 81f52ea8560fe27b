"""Figures from a run directory: paper-style sample grids and the transform strip (metric plots: ``reports.plots``).

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
that drawing needs no display, leaves the caller's matplotlib backend alone and leaks no open figures.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


EDIT_KIND = re.compile(r"^(?P<method>\S+) (?P<direction>.+):(?P<strength>[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)$")
"""A sample kind of an edited reconstruction, as the runner writes it: ``"fwplus16 smile:+2"``."""


def split_edit_kind(kind: str, base_kinds: Collection[str]) -> tuple[str, str, float] | None:
    """``(method, direction, strength)`` when ``kind`` is an edit of one of ``base_kinds``, else None.

    ``"fwplus16 smile:+2"`` -> ``("fwplus16", "smile", 2.0)`` if ``"fwplus16"`` is a base kind, so that a
    method whose own name has a space and a colon is never mistaken for an edit.
    """
    match = EDIT_KIND.match(str(kind))
    if match is None or match["method"] not in base_kinds:
        return None
    return match["method"], match["direction"], float(match["strength"])


def _methods(run_dir: Path, index: pd.DataFrame, methods: Sequence[str] | None = None) -> list[str]:
    """Methods in run order (``methods``, default from results.csv), then any that only have samples.

    Edited samples (``"METHOD age:+2"``) are not methods and are left out.
    """
    methods = list(pd.unique(read_results(run_dir)["method"])) if methods is None else list(methods)
    kinds = [k for k in pd.unique(index["kind"]) if k not in ("input", "target")]
    extra = [k for k in kinds if k not in methods and split_edit_kind(k, kinds) is None]
    return [*methods, *extra]


def _save(fig: Figure, out_path: str | Path, dpi: float, **kwargs: object) -> Path:
    """Write the figure as PNG at ``out_path`` and as a PDF twin beside it (for papers); returns the PNG.

    Sample figures (no ``kwargs``) are stored losslessly as RGB at compression level 9. Plots (drawn with
    ``kwargs`` such as ``bbox_inches``) are stored with a 256-colour palette: only the antialiased edges
    change (mean 0.4/255), and the file is about a third of the RGBA one, which matters in report.html.
    """
    def pdf(tmp: Path) -> None:
        fig.savefig(tmp, dpi=dpi, format="pdf", facecolor="white", **kwargs)

    def png(tmp: Path) -> None:
        if kwargs:
            buffer = io.BytesIO()
            fig.savefig(buffer, dpi=dpi, format="png", facecolor="white", **kwargs)
            with Image.open(buffer) as image:
                out = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        else:
            fig.set_dpi(dpi)
            fig.patch.set_facecolor("white")
            FigureCanvasAgg(fig).draw()
            out = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        out.save(tmp, format="png", dpi=(dpi, dpi), optimize=True)

    write_atomic(Path(out_path).with_suffix(".pdf"), pdf)
    return write_atomic(out_path, png)


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


def _cell_image(cell: np.ndarray, side: int) -> np.ndarray:
    """The sample scaled to ``side`` x ``side`` pixels (nearest when enlarging, Lanczos when shrinking)."""
    if cell.shape[:2] == (side, side):
        return cell
    method = Image.Resampling.NEAREST if side >= max(cell.shape[:2]) else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(cell).resize((side, side), method))


@dataclass(frozen=True)
class Mosaic:
    """Pixel layout of a figure of image cells: a label band on the left, a title band on top.

    Column ``c`` starts at ``xs[c]`` pixels from the left, row ``r`` at ``ys[r]`` from the top; every cell
    is ``side`` pixels square and ``width`` x ``height`` is the size of the PNG.
    """

    side: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]
    width: int
    height: int

    @classmethod
    def build(cls, rows: int, cols: int, side: int, gap: int, left: int, top: int,
              col_gaps: Sequence[int] = ()) -> Mosaic:
        """``col_gaps[c]``: extra white pixels before column ``c`` (to group columns)."""
        xs, x = [], left
        for c in range(cols):
            x += col_gaps[c] if c < len(col_gaps) else 0
            xs.append(x)
            x += side + gap
        ys = tuple(top + r * (side + gap) for r in range(rows))
        return cls(side, tuple(xs), ys, x, top + rows * (side + gap))

    def draw(self, cells: Mapping[tuple[int, int], np.ndarray | str], dpi: float) -> Figure:
        """A figure of exactly ``width`` x ``height`` pixels at ``dpi`` with every cell pasted unresampled.

        The cells are composed into one RGB array and placed with ``figimage``: one image instead of one
        axes per cell keeps drawing fast, and the PDF twin holds one bitmap. Missing cells are grey and
        name their reason.
        """
        canvas = np.full((self.height, self.width, 3), 255, np.uint8)
        for (r, c), cell in cells.items():
            y, x = self.ys[r], self.xs[c]
            block = MISSING_GREY if isinstance(cell, str) else _cell_image(cell, self.side)
            canvas[y : y + self.side, x : x + self.side] = block
        # a hair over the pixel size, so that the renderer's int() of width * dpi cannot lose a pixel
        fig = Figure(figsize=((self.width + 1e-3) / dpi, (self.height + 1e-3) / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        fig.figimage(canvas, 0, 0, origin="upper", resize=False)
        for (r, c), cell in cells.items():
            if isinstance(cell, str):
                self.text(fig, self.xs[c] + self.side / 2, self.ys[r] + self.side / 2, cell, ha="center",
                          color="0.3")
        return fig

    def text(self, fig: Figure, x: float, y: float, text: str, **kwargs: Any) -> None:
        """Text at pixel ``(x, y)`` from the top left (vertically centred there)."""
        kwargs = {"fontsize": FONT_PT, "va": "center", **kwargs}
        fig.text(x / self.width, 1 - y / self.height, text, **kwargs)


def figure_grid(
    run_dir: str | Path,
    transform: str,
    out_path: str | Path,
    max_items: int = 6,
    dpi: int | None = None,
    methods: Sequence[str] | None = None,
) -> Path:
    """Save a grid of reconstructions for one transform: rows ``input`` then each method, columns items.

    Edited samples (kinds ``"METHOD smile:+2"``) are not drawn here; see :func:`reports.edit_figure.edit_figure`.

    Args:
        run_dir: Run directory (reads ``samples/index.csv``, the PNGs and, unless ``methods`` is given,
            ``results.csv``).
        transform: Transform label as in ``results.csv`` (``"rotate:20"``).
        out_path: PNG to write (parent folders are created); a PDF twin is written beside it.
        max_items: At most this many items (columns), in the order of ``samples/index.csv``.
        dpi: Override the resolution; default :func:`cell_dpi` of the sample size. Each image is one
            inch (``dpi`` pixels) square, followed by a white gap of ``GAP_IN`` inches; the PNG is
            ``LABEL_IN * dpi + cols * (dpi + gap)`` by ``TITLE_IN * dpi + rows * (dpi + gap)`` pixels
            (each term rounded to whole pixels).
        methods: Method rows in order (default: the run order of ``results.csv``).

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
    kinds = ["input", *_methods(run_dir, index, methods)]
    first = rows_t.drop_duplicates(["item", "kind"]).set_index(["item", "kind"])["path"]
    cells = {
        (r, c): _load_rgb(sample_path(run_dir, first[(item, kind)])) if (item, kind) in first.index else "missing"
        for r, kind in enumerate(kinds)
        for c, item in enumerate(items)
    }
    sizes = [c.shape[0] for c in cells.values() if not isinstance(c, str)]
    dpi = dpi or cell_dpi(sizes[0] if sizes else 64)
    grid = Mosaic.build(len(kinds), len(items), dpi, max(1, round(GAP_IN * dpi)), round(LABEL_IN * dpi),
                        round(TITLE_IN * dpi))
    fig = grid.draw(cells, dpi)
    text, size = _fit(str(transform), LABEL_IN - 0.1)
    grid.text(fig, 0.05 * dpi, grid.ys[0] / 2, text, fontsize=size, weight="bold")
    for c, item in enumerate(items):
        text, size = _fit(str(item), CELL_IN - 0.05)
        grid.text(fig, grid.xs[c] + grid.side / 2, grid.ys[0] / 2, text, fontsize=size, ha="center")
    for r, kind in enumerate(kinds):
        text, size = _fit(str(kind), LABEL_IN - 0.1)
        grid.text(fig, grid.xs[0] - 0.05 * dpi, grid.ys[r] + grid.side / 2, text, fontsize=size, ha="right")
    return _save(fig, out_path, dpi)


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
