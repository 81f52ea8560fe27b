"""Paper-style edit figure: rows methods; columns the transformed input, the reconstruction and the edits.

One item under one transform, as in BDInvert's editing figures: each method's reconstruction, then its edits
grouped by direction and ordered by strength (``age -2, age -1, age +1, age +2, smile -2, ...``). Cells are
drawn at the samples' own resolution, so a 64 px run gives a figure of a few hundred kilobytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reports.figures import FONT_PT, Mosaic, _fit, _load_rgb, _methods, _save, split_edit_kind
from reports.rundir import check_run_dir, read_sample_index, sample_path

EDIT_DPI = 100  # modest: a 64 px cell is 0.64 inch, labels stay legible
EDIT_GAP_PX = 2  # white between cells
GROUP_GAP_PX = 8  # extra white between the reconstruction and each edit direction
LABEL_PX = 80  # row-label band (method names)
TITLE_PX = 44  # figure title line and column titles
MIN_SIDE_PX, MAX_SIDE_PX = 48, 256  # smaller samples are enlarged by a whole factor, larger ones shrunk


@dataclass(frozen=True)
class EditColumn:
    """One edit column: the direction, the strength and its title (``"age -2"``)."""

    direction: str
    strength: float

    @property
    def title(self) -> str:
        """``"age -2"``, ``"smile +0.5"``."""
        return f"{self.direction} {self.strength:+g}"


def edit_columns(kinds: Sequence[str]) -> list[EditColumn]:
    """The edits present among sample ``kinds``: grouped by direction (first-seen order), by strength within.

    Args:
        kinds: Sample kinds from ``samples/index.csv`` (``"input"``, ``"im2s"``, ``"im2s age:+2"`` ...).

    Returns:
        One :class:`EditColumn` per distinct (direction, strength); empty when the run has no edits.
    """
    kinds = list(dict.fromkeys(map(str, kinds)))
    found: dict[str, set[float]] = {}
    for kind in kinds:
        parts = split_edit_kind(kind, kinds)
        if parts is not None:
            found.setdefault(parts[1], set()).add(parts[2])
    return [EditColumn(d, s) for d, strengths in found.items() for s in sorted(strengths)]


def has_edit_samples(run_dir: str | Path) -> bool:
    """Whether the run saved edited samples (kinds like ``"im2s smile:+2"``)."""
    return bool(edit_columns(read_sample_index(check_run_dir(run_dir))["kind"]))


def _side(resolution: int) -> int:
    if resolution > MAX_SIDE_PX:
        return MAX_SIDE_PX
    return resolution * max(1, -(-MIN_SIDE_PX // resolution))


def edit_figure(
    run_dir: str | Path,
    transform: str,
    out_path: str | Path,
    item: str | None = None,
    methods: Sequence[str] | None = None,
    dpi: int = EDIT_DPI,
) -> Path:
    """Save the edit figure of one item under one transform (PNG, with a PDF twin).

    Rows are methods (run order); columns are ``input`` (the transformed input), ``recon`` (the method's
    reconstruction) and one column per edit, grouped by direction and ordered by strength, titled like
    ``"age -2"``. Each image is ``side`` pixels square: the sample's own resolution (enlarged by a whole
    factor below ``MIN_SIDE_PX``, shrunk to ``MAX_SIDE_PX`` above it), followed by ``EDIT_GAP_PX`` white
    pixels, with ``GROUP_GAP_PX`` more before the first edit of each direction. The PNG is thus
    ``LABEL_PX + cols * (side + EDIT_GAP_PX) + GROUP_GAP_PX * directions`` by
    ``TITLE_PX + methods * (side + EDIT_GAP_PX)`` pixels, with ``cols = 2 + edits``.

    Args:
        run_dir: Run directory with edited samples (``--edit`` runs).
        transform: Transform label (``"R30"``).
        out_path: PNG to write.
        item: Item to show; default the first item with samples under ``transform``.
        methods: Method rows in order (default: the run order of ``results.csv``).
        dpi: Dots per inch of the PNG (sets the label size relative to the cells, not the cell pixels).

    Returns:
        ``out_path`` as a Path. Missing samples (a method without edits) become grey cells saying so.

    Raises:
        ValueError: If the run has no samples for ``transform``, ``item`` has none there, or the run
            has no edited samples.
    """
    run_dir = check_run_dir(run_dir)
    index = read_sample_index(run_dir)
    columns = edit_columns(index["kind"])
    if not columns:
        raise ValueError(f"{run_dir}: no edited samples (kinds like 'im2s smile:+2'); run with --edit")
    rows_t = index[index["transform"] == transform]
    items = list(pd.unique(rows_t["item"]))
    if not items:
        known = list(pd.unique(index["transform"]))
        raise ValueError(f"{run_dir / 'samples' / 'index.csv'}: no samples for transform {transform!r}; has {known}")
    item = items[0] if item is None else str(item)
    if item not in items:
        raise ValueError(f"{run_dir}: no samples of item {item!r} under {transform!r}; has {items}")
    paths = rows_t[rows_t["item"] == item].drop_duplicates("kind").set_index("kind")["path"]
    methods = _methods(run_dir, index, methods)

    kinds = list(paths.index)
    edits = {parts: kind for kind in kinds if (parts := split_edit_kind(kind, kinds)) is not None}

    def cell(kind: str | None) -> np.ndarray | str:
        return _load_rgb(sample_path(run_dir, paths[kind])) if kind in paths.index else "missing"

    cells = {}
    for r, method in enumerate(methods):
        row = ["input", method, *(edits.get((method, col.direction, col.strength)) for col in columns)]
        for c, kind in enumerate(row):
            cells[(r, c)] = cell(kind)
    sizes = [c.shape[0] for c in cells.values() if not isinstance(c, str)]
    starts = [k for k, col in enumerate(columns) if k == 0 or col.direction != columns[k - 1].direction]
    col_gaps = [0, 0, *(GROUP_GAP_PX if k in starts else 0 for k in range(len(columns)))]
    grid = Mosaic.build(len(methods), 2 + len(columns), _side(sizes[0] if sizes else 64), EDIT_GAP_PX,
                        LABEL_PX, TITLE_PX, col_gaps)
    fig = grid.draw(cells, dpi)
    cell_in = grid.side / dpi
    title, size = _fit(f"{transform} · {item}", grid.width / dpi - 0.1)
    grid.text(fig, 4, TITLE_PX * 0.3, title, fontsize=size, weight="bold")
    for c, text in enumerate(["input", "recon", *(col.title for col in columns)]):
        text, size = _fit(text, cell_in, FONT_PT - 1)
        grid.text(fig, grid.xs[c] + grid.side / 2, TITLE_PX * 0.75, text, fontsize=size, ha="center")
    for r, method in enumerate(methods):
        text, size = _fit(method, (LABEL_PX - 6) / dpi, FONT_PT - 1)
        grid.text(fig, LABEL_PX - 4, grid.ys[r] + grid.side / 2, text, fontsize=size, ha="right")
    return _save(fig, out_path, dpi)
