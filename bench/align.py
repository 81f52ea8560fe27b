"""``bench align``: FFHQ-align a folder of face photos, recording each crop and naming the faces not found.

For every image under SRC_DIR (recursively, the formats ``bench.data.images`` reads) the most confident
dlib face is found, its 68 landmarks fitted and the FFHQ crop square cut and resized (``bench.faces``).
The aligned PNGs go to OUT_DIR under the same relative names; ``OUT_DIR/alignment.csv`` holds one row per
source image: status (``ok``, ``no face`` or ``unreadable``), the reason, the detection (box, score, how
many faces) and the crop (centre, side, angle, the quad's corners, eye and mouth points, shrink, crop and
pad). Needs the ``faces`` extra.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench.data.images import from_uint8, list_image_files
from bench.data.sources import FolderSource, Item, item_seed

CSV_NAME = "alignment.csv"
FIRST_COLUMNS = ("file", "output", "status", "reason", "width", "height", "faces", "det_score", "box_left",
                 "box_top", "box_right", "box_bottom", "center_x", "center_y", "size", "angle_deg", "shrink",
                 "crop", "pad")


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file as (H, W, 3) uint8 RGB, EXIF orientation applied (ValueError/OSError if bad)."""
    with Image.open(path) as img:
        img.load()
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def align_row(image: np.ndarray, size: int, transform_size: int) -> tuple[np.ndarray | None, dict]:
    """Align one decoded photo; returns the aligned image (or None) and its CSV fields."""
    from bench.faces import align_photo

    res = align_photo(image, size, transform_size)
    row: dict = {"width": image.shape[1], "height": image.shape[0]}
    if res.image is None:
        return None, row | {"status": "no face", "reason": res.reason, "faces": 0}
    det, steps = res.detection, res.steps
    row |= {"status": "ok", "reason": "", "faces": det.count, "det_score": round(det.score, 4),
            **dict(zip(("box_left", "box_top", "box_right", "box_bottom"), det.box, strict=True)),
            "shrink": steps.shrink, "crop": " ".join(map(str, steps.crop)), "pad": " ".join(map(str, steps.pad))}
    return res.image, row | res.quad.record()


@dataclass
class AlignSummary:
    """What ``align_folder`` did."""

    total: int = 0
    aligned: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    csv_path: Path | None = None


def _write_csv(rows: list[dict], path: Path) -> None:
    extra = sorted({k for r in rows for k in r} - set(FIRST_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*FIRST_COLUMNS, *extra], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def align_folder(src: str | Path, out: str | Path, *, size: int = 1024, transform_size: int = 4096,
                 progress: bool = True, log: Callable[[str], None] = print) -> AlignSummary:
    """FFHQ-align every image under ``src`` into ``out`` (same relative names, ``.png``).

    Args:
        src: Folder of photos (searched recursively).
        out: Output folder (created); must not be ``src`` itself.
        size: Side of the aligned images.
        transform_size: The recipe's intermediate resampling size (4096 in FFHQ).
        progress: Show a progress bar on stderr.
        log: Receives one line per image that fails (no face, unreadable).

    Returns:
        Counts, the names without a face and the unreadable ones, and the CSV's path.

    Raises:
        ValueError: A missing or empty source folder, or ``out`` equal to ``src``.
        RuntimeError: The ``faces`` extra is not installed.
    """
    from tqdm.auto import tqdm

    from bench.faces import face_models

    src, out = Path(src).expanduser(), Path(out).expanduser()
    files = list_image_files(src, "align")
    if out.resolve() == src.resolve():
        raise ValueError(f"align: the output folder {out} is the source folder; choose another")
    face_models()  # fail now, with the install hint, when the extra is missing
    out.mkdir(parents=True, exist_ok=True)
    summary, rows = AlignSummary(total=len(files)), []
    for ident, path in tqdm(files.items(), desc="bench align", unit="img", disable=not progress, dynamic_ncols=True):
        rel = path.relative_to(src).as_posix()
        target = out / f"{ident}.png"
        try:
            image = read_rgb(path)
        except Exception as exc:  # Pillow raises many types for bad files; all mean "unreadable"
            summary.unreadable.append(rel)
            rows.append({"file": rel, "status": "unreadable", "reason": f"{type(exc).__name__}: {exc}"})
            log(f"{path}: unreadable ({type(exc).__name__}: {exc})")
            continue
        aligned, row = align_row(image, size, transform_size)
        rows.append({"file": rel, "output": target.relative_to(out).as_posix() if aligned is not None else ""} | row)
        if aligned is None:
            summary.no_face.append(rel)
            log(f"{path}: {row['reason']}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(aligned).save(target)
        summary.aligned += 1
    summary.csv_path = out / CSV_NAME
    _write_csv(rows, summary.csv_path)
    return summary


def describe(summary: AlignSummary) -> str:
    """The one-paragraph report ``bench align`` prints."""
    def names(items: list[str]) -> str:
        return ", ".join(items[:20]) + (f" and {len(items) - 20} more" if len(items) > 20 else "")

    text = (f"aligned {summary.aligned} of {summary.total} images; {len(summary.no_face)} without a detected face"
            f"{': ' + names(summary.no_face) if summary.no_face else ''}")
    if summary.unreadable:
        text += f"; {len(summary.unreadable)} unreadable: {names(summary.unreadable)}"
    return text + f"  (crop parameters: {summary.csv_path})"


class AlignedFolderSource(FolderSource):
    """``folder:PATH,align=1``: each photo FFHQ-aligned on the fly to the run's resolution.

    Photos without a detected face are reported through ``on_error`` and skipped like unreadable files (a
    subset of N is drawn from the photos that align); the description names and counts them. Each item's
    ``meta["align"]`` holds its crop (the ``alignment.csv`` fields).
    """

    def __init__(self, *args, **kwargs) -> None:
        """Same arguments as ``FolderSource``; fails at once when the faces extra is missing."""
        from bench.faces import faces_unavailable_reason

        reason = faces_unavailable_reason()
        if reason:
            raise ValueError(f"folder:...,align=1: {reason}")
        super().__init__(*args, **kwargs)
        self._no_face: list[str] = []

    def _load(self, item_id: str) -> Item | None:
        path = self._files[item_id]
        name = path.name if path.parent == Path(self.where) else str(path)
        try:
            image = read_rgb(path)
        except Exception as exc:  # see align_folder
            self.on_error(f"{path}: {type(exc).__name__}: {exc}")
            self._skipped.append(name)
            return None
        aligned, row = align_row(image, self.resolution, 4096)
        if aligned is None:
            self.on_error(f"{path}: {row['reason']}; skipped")
            self._no_face.append(name)
            return None
        tensor = from_uint8(aligned.copy()).permute(2, 0, 1).contiguous()
        return Item(id=item_id, image=tensor, seed=item_seed(self.seed, item_id),
                    meta={"path": str(path), "align": row})

    @property
    def description(self) -> str:
        """The folder's description plus the alignment: how many had no face, named."""
        text = FolderSource.description.fget(self)
        if self._items is None:
            return text + ", FFHQ-aligned on the fly"
        missing = "" if not self._no_face else ": " + ", ".join(self._no_face[:10]) + (
            f" and {len(self._no_face) - 10} more" if len(self._no_face) > 10 else "")
        return text + f", FFHQ-aligned on the fly ({len(self._no_face)} skipped without a detected face{missing})"

    @description.setter
    def description(self, value: str) -> None:  # set by Source.__init__
        pass
