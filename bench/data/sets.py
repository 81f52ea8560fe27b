"""Made sets: transformed targets written to disk once (``bench make-set``) and read back as a source.

Layout of a set folder::

    set.json          format, version, resolution, count, complete flag, creation info from the caller
    transforms.csv    one row per item: id, file, label, angle, tx, ty, scale, fill, resolution,
                      matrix (JSON), params (JSON of the whole transform dict)
    images/FILE.png   the transformed image, 8-bit RGB
    masks/FILE.png    its validity mask, 8-bit gray (0 or 255 for a binary mask)

``FILE`` is ``safe_name(id)`` (plus a short hash if two ids would share a file name, e.g. on a
case-insensitive file system); the ``file`` column records it, so readers never recompute it. Every file
is written atomically, and the CSV is the record of what is finished: a killed ``write_set`` resumes
where it stopped, keeping the ids already in the CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.data.images import check_images, describe_tensor, load_image, save_image
from bench.data.sources import ErrorHandler, Item, Source, item_seed, select_subset

__all__ = [
    "CSV_COLUMNS",
    "SET_FORMAT",
    "SET_VERSION",
    "SetRecord",
    "SetSource",
    "existing_ids",
    "read_set",
    "safe_name",
    "set_factory",
    "write_set",
]

SET_FORMAT = "gan-inversion-bench/set"
SET_VERSION = 1
CSV_COLUMNS = ("id", "file", "label", "angle", "tx", "ty", "scale", "fill", "resolution", "matrix", "params")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._,+=-]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_MAX_NAME = 150


@dataclass(frozen=True, eq=False)
class SetRecord:
    """One item of a made set.

    Attributes:
        id: Item id, unique within the set, e.g. ``"000123__rotate_20"``.
        image: float32 (3, R, R), RGB, values in [-1, 1].
        mask: (1, R, R) validity mask, values in [0, 1] (binary masks round-trip exactly; others are
            stored to 1/255).
        transform: Transform parameters (label, angle, tx, ty, scale, fill, matrix, ...); tensors and
            arrays are stored as nested lists.
    """

    id: str
    image: torch.Tensor
    mask: torch.Tensor
    transform: dict


def safe_name(text: str) -> str:
    r"""Turn an id or a transform label into a readable file-name-safe string.

    Letters, digits and ``. _ , + = -`` are kept; every other character (``: / \ * ? " < > |``, spaces,
    non-ASCII) becomes ``_``; a leading ``.`` becomes ``_``. Names that could still be a problem (Windows
    device names, over 150 characters) get a short hash of ``text``. The mapping is not injective
    (``rotate:20`` and ``rotate_20`` both give ``rotate_20``); ``write_set`` resolves such clashes.

    Args:
        text: Any non-empty string, e.g. ``"rotate:10+scale:1.125"``.

    Returns:
        The safe name, e.g. ``"rotate_10+scale_1.125"``.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"safe_name: expected a non-empty string, got {text!r}")
    name = _UNSAFE_RE.sub("_", text)
    name = "_" + name[1:] if name.startswith(".") else name
    if len(name) > _MAX_NAME or name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = f"{name[: _MAX_NAME - 9]}-{_short_hash(text)}"
    return name


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _jsonable(value: Any, where: str) -> Any:
    """Convert tensors, arrays, tuples and paths to plain JSON values."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"{where}: cannot store a {type(value).__name__} in a set (use numbers, strings, lists)")


def _row(record: SetRecord, file: str, resolution: int) -> dict[str, str]:
    params = _jsonable(record.transform, f"record {record.id!r} transform")
    cell = {k: "" if params.get(k) is None else str(params[k]) for k in ("label", "angle", "tx", "ty", "scale", "fill")}
    matrix = "" if params.get("matrix") is None else json.dumps(params["matrix"])
    return {
        "id": record.id,
        "file": file,
        **cell,
        "resolution": str(resolution),
        "matrix": matrix,
        "params": json.dumps(params, sort_keys=True),
    }


def _check_record(record: SetRecord, resolution: int | None) -> int:
    """Validate one record and return its resolution."""
    if not isinstance(record, SetRecord):
        raise ValueError(f"write_set: expected SetRecord items, got {type(record).__name__}")
    if not isinstance(record.id, str) or not record.id:
        raise ValueError(f"write_set: record id must be a non-empty string, got {record.id!r}")
    check_images(
        record.image[None] if isinstance(record.image, torch.Tensor) else record.image,
        f"write_set: record {record.id!r} image",
    )
    res = int(record.image.shape[-1])
    mask = record.mask
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (1, res, res):
        got = describe_tensor(mask) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"write_set: record {record.id!r} mask must have shape (1, {res}, {res}), got {got}")
    if resolution is not None and res != resolution:
        raise ValueError(f"write_set: record {record.id!r} is {res}x{res} but the set is {resolution}x{resolution}")
    if not isinstance(record.transform, dict):
        raise ValueError(f"write_set: record {record.id!r} transform must be a dict")
    return res


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _flush(out: Path, rows: dict[str, dict[str, str]], resolution: int, info: dict, complete: bool) -> None:
    """Write transforms.csv, then set.json, each atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows.values())
    _atomic_write_text(out / "transforms.csv", buffer.getvalue())
    meta = {
        "format": SET_FORMAT,
        "version": SET_VERSION,
        "resolution": resolution,
        "count": len(rows),
        "complete": complete,
        "creation": _jsonable(info, "write_set info"),
    }
    _atomic_write_text(out / "set.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def existing_ids(out_dir: str | os.PathLike) -> set[str]:
    """Return the ids already written to a (possibly unfinished) set, so a caller can skip their work.

    Args:
        out_dir: The set folder; it need not exist.

    Returns:
        Ids listed in its transforms.csv (empty if there is none).
    """
    out = Path(out_dir)
    return set(_read_rows(out)) if (out / "transforms.csv").is_file() else set()


def write_set(
    out_dir: str | os.PathLike, records: Iterable[SetRecord], *, info: dict | None = None, flush_seconds: float = 2.0
) -> int:
    """Write records as a made set, resuming an unfinished one.

    Records whose id is already in the set (with both files present) are kept as they are, not rewritten.
    The CSV and set.json are rewritten (atomically) at most every ``flush_seconds`` and at the end, so a
    killed writer loses at most that much work; set.json says ``"complete": true`` only at the end.

    Args:
        out_dir: Set folder, created if missing.
        records: ``SetRecord``s: images (3, R, R) float32 in [-1, 1], masks (1, R, R) in [0, 1], all of
            one resolution R (matching the existing set when resuming).
        info: JSON-able creation info (command, source spec, seed, versions), stored in set.json.
        flush_seconds: Longest time between CSV checkpoints.

    Returns:
        The number of records written by this call (kept ones not counted).

    Raises:
        ValueError: Bad record (shape, range, duplicate id, non-JSON transform), resolution mismatch with
            the existing set, or no records at all.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = _read_rows(out) if (out / "transforms.csv").is_file() else {}
    resolution = _read_meta(out)["resolution"] if rows else None
    used = {row["file"].casefold(): rid for rid, row in rows.items()}
    seen: set[str] = set()
    written, last_flush = 0, time.monotonic()
    for record in records:
        resolution = _check_record(record, resolution)
        if record.id in seen:
            raise ValueError(f"write_set: duplicate record id {record.id!r}")
        seen.add(record.id)
        old = rows.get(record.id)
        if (
            old
            and (out / "images" / f"{old['file']}.png").is_file()
            and (out / "masks" / f"{old['file']}.png").is_file()
        ):
            continue
        file = old["file"] if old else safe_name(record.id)
        if used.get(file.casefold(), record.id) != record.id:
            file = f"{file}-{_short_hash(record.id)}"
        save_image(record.image, out / "images" / f"{file}.png")
        save_image(record.mask.float(), out / "masks" / f"{file}.png", is_mask=True)
        rows[record.id], used[file.casefold()] = _row(record, file, resolution), record.id
        written += 1
        if time.monotonic() - last_flush > flush_seconds:
            _flush(out, rows, resolution, info or {}, complete=False)
            last_flush = time.monotonic()
    if resolution is None:
        raise ValueError(f"write_set: no records to write to {str(out)!r}")
    _flush(out, rows, resolution, info or {}, complete=True)
    return written


def _read_meta(path: Path) -> dict:
    meta_file = path / "set.json"
    if not meta_file.is_file():
        raise ValueError(f"set {str(path)!r}: {meta_file.name} is missing (not a set made by bench make-set?)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_file}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != SET_FORMAT:
        raise ValueError(f"{meta_file}: not a set description (format should be {SET_FORMAT!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > SET_VERSION:
        raise ValueError(f"{meta_file}: set format version {meta.get('version')!r} is newer than {SET_VERSION}")
    if not isinstance(meta.get("resolution"), int) or not isinstance(meta.get("count"), int):
        raise ValueError(f"{meta_file}: resolution and count must be integers")
    return meta


def _read_rows(path: Path) -> dict[str, dict[str, str]]:
    csv_file = path / "transforms.csv"
    if not csv_file.is_file():
        raise ValueError(f"set {str(path)!r}: {csv_file.name} is missing")
    with open(csv_file, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_file}: missing columns {missing}")
        rows: dict[str, dict[str, str]] = {}
        for line_no, row in enumerate(reader, start=2):
            if not row["id"] or not row["file"] or row["id"] in rows or None in row.values():
                raise ValueError(f"{csv_file}: line {line_no} is malformed or repeats id {row['id']!r}")
            rows[row["id"]] = row
    return rows


def _load_mask(path: Path, resolution: int) -> torch.Tensor:
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except Exception as exc:  # Pillow raises many types on corrupt files
        raise ValueError(f"{path}: cannot read the mask ({type(exc).__name__}: {exc})") from exc
    if gray.shape != (resolution, resolution):
        raise ValueError(f"{path}: mask is {gray.shape[1]}x{gray.shape[0]}, expected {resolution}x{resolution}")
    return torch.from_numpy(gray)[None]


class SetSource(Source):
    """A made set read back (the ``set`` kind): items carry image, mask and transform dict.

    Unlike folder sources, a damaged set is an error, not a skipped item: it was made by this tool.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        resolution: int,
        n: int | None = None,
        seed: int = 0,
        on_error: ErrorHandler = print,
    ):
        """Open the set at ``path``, checking that it is complete and that every file is present."""
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise ValueError(f"set: path {str(self.path)!r} is not a folder")
        meta = _read_meta(self.path)
        if not meta.get("complete", False):
            raise ValueError(f"set {str(self.path)!r} is incomplete (writing was interrupted); run make-set again")
        if meta["resolution"] != resolution:
            raise ValueError(f"set {str(self.path)!r} was made at {meta['resolution']} px, not {resolution} px")
        self._rows = _read_rows(self.path)
        if len(self._rows) != meta["count"]:
            raise ValueError(f"{self.path / 'transforms.csv'}: {len(self._rows)} rows, set.json says {meta['count']}")
        for row in self._rows.values():
            for sub in ("images", "masks"):
                if not (self.path / sub / f"{row['file']}.png").is_file():
                    raise ValueError(f"set {str(self.path)!r}: {sub}/{row['file']}.png is missing (id {row['id']!r})")
        ids = select_subset(list(self._rows), n, seed, on_error, f"set:{self.path}")
        found = len(self._rows)
        text = f"{len(ids)} of {found} items of set {self.path} ({found} found, {len(ids)} used, none skipped)"
        super().__init__("set", text, ids, seed=seed, on_error=on_error)
        self.resolution, self.meta = resolution, meta

    def _load(self, item_id: str) -> Item:
        row = self._rows[item_id]
        image_file = self.path / "images" / f"{row['file']}.png"
        image = load_image(image_file, self.resolution)  # same size, so no resampling happens
        with Image.open(image_file) as img:
            if img.size != (self.resolution, self.resolution):
                raise ValueError(f"{image_file}: image is {img.size[0]}x{img.size[1]}, expected {self.resolution}")
        mask = _load_mask(self.path / "masks" / f"{row['file']}.png", self.resolution)
        try:
            transform = json.loads(row["params"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path / 'transforms.csv'}: bad params JSON for id {item_id!r}") from exc
        meta = {"set": str(self.path), "file": row["file"]}
        return Item(item_id, image, item_seed(self.seed, item_id), mask=mask, transform=transform, meta=meta)


def read_set(path: str | os.PathLike, resolution: int, *, seed: int = 0) -> list[Item]:
    """Read a whole made set into memory.

    Args:
        path: Set folder written by ``write_set``.
        resolution: Expected side R; must equal the set's.
        seed: Source seed for the items' ``seed`` field.

    Returns:
        Items in id order, each with image (3, R, R) float32 in [-1, 1], mask (1, R, R) in [0, 1] and the
        transform dict as written (tensors as nested lists).

    Raises:
        ValueError: Missing or malformed set.json / transforms.csv, missing or unreadable image or mask,
            row count mismatch, incomplete set, or resolution mismatch; the message names the file.
    """
    return list(SetSource(path, resolution=resolution, seed=seed))


def set_factory(
    arg: str, *, resolution: int, n: int | None, seed: int, generator: Any, on_error: ErrorHandler
) -> Source:
    """Source factory for ``set:PATH`` (see ``bench.data.sources.open_source``)."""
    return SetSource(arg, resolution=resolution, n=n, seed=seed, on_error=on_error)
