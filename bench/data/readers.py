"""Readers of published datasets: the ``celebahq`` and ``lsun`` sources, registered lazily by ``bench.data.sources``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb

from bench.data.images import ImageLoadError, decode_image, list_image_files
from bench.data.sources import (
    ErrorHandler,
    Item,
    Source,
    _subset_positions,
    folder_subset,
    item_seed,
)

__all__ = ["LmdbSource", "celebahq_factory", "lsun_factory"]


def _split_options(arg: str, allowed: set[str], what: str) -> tuple[str, dict[str, str]]:
    """Split ``PATH,key=value,...`` (options are taken from the end, so paths may contain commas)."""
    parts, options = arg.split(","), {}
    while len(parts) > 1 and re.match(r"^\s*[A-Za-z_]+\s*=", parts[-1]):
        key, value = (t.strip() for t in parts.pop().split("=", 1))
        if key not in allowed or not value:
            raise ValueError(f"{what}: bad option {key}={value!r}; allowed: {', '.join(sorted(allowed))}=VALUE")
        options[key] = value
    return ",".join(parts), options


def _split_candidates(token: str) -> list[str]:
    stem = Path(token).stem
    return [token, Path(token).name, stem] + ([str(int(stem))] if stem.isdigit() else [])


def _apply_split(files: dict[str, Path], split_file: Path, on_error: ErrorHandler) -> dict[str, Path]:
    """Keep the files named in a split list (first token per line: a file name, a stem or an index)."""
    if not split_file.is_file():
        raise ValueError(f"celebahq: split file {str(split_file)!r} not found")
    lookup: dict[str, str] = {}
    for fid, path in files.items():
        for key in [fid, path.name] + _split_candidates(path.name)[2:]:
            lookup.setdefault(key, fid)
    wanted, missing = set(), []
    for line in split_file.read_text(encoding="utf-8", errors="replace").splitlines():
        tokens = line.split("#", 1)[0].split()
        if tokens:
            fid = next((lookup[k] for k in _split_candidates(tokens[0]) if k in lookup), None)
            wanted.add(fid) if fid is not None else missing.append(tokens[0])
    if not wanted:
        raise ValueError(f"celebahq: split file {str(split_file)!r} matches none of the {len(files)} images")
    if missing:
        on_error(f"warning: split file {split_file}: {len(missing)} entries match no image, e.g. {missing[:3]}")
    return {k: v for k, v in files.items() if k in wanted}


def celebahq_factory(
    arg: str, *, resolution: int, n: int | None, seed: int, generator: Any, on_error: ErrorHandler
) -> Source:
    """Source factory for ``celebahq:PATH[,split=FILE]`` (see ``bench.data.sources.open_source``)."""
    path, options = _split_options(arg, {"split"}, "celebahq")
    files = list_image_files(path, "celebahq")
    where = path
    if "split" in options:
        files = _apply_split(files, Path(options["split"]).expanduser(), on_error)
        where = f"{path} (split {options['split']})"
    return folder_subset("celebahq", files, f"celebahq:{arg}", resolution=resolution, n=n, seed=seed,
                         on_error=on_error, where=where)


def _open_lmdb(path: Path) -> lmdb.Environment:
    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=path.is_dir())
    except lmdb.Error as exc:
        raise ValueError(f"lsun: cannot open LMDB {str(path)!r}: {exc}") from exc


class LmdbSource(Source):
    """An LSUN category LMDB as distributed (keys -> encoded WebP/JPEG bytes); ids are the keys as ASCII."""

    def __init__(
        self, path: Path, keys: list[bytes], *, total: int, resolution: int, seed: int, on_error: ErrorHandler
    ):
        """Create a source over ``keys`` (already subset, in database order) of the LMDB at ``path``."""
        ids = [k.decode("ascii", errors="backslashreplace") for k in keys]
        desc = f"{len(ids)} of {total} images from LMDB {path}"
        super().__init__("lsun", desc, ids, seed=seed, on_error=on_error)
        self.path, self.resolution = path, resolution
        self._keys = dict(zip(ids, keys, strict=True))

    def __iter__(self) -> Iterator[Item]:
        env = _open_lmdb(self.path)
        try:
            with env.begin() as txn:
                for item_id in self._ids:
                    item = self._decode(txn, item_id)
                    if item is not None:
                        yield item
        finally:
            env.close()

    def _load(self, item_id: str) -> Item | None:
        env = _open_lmdb(self.path)
        try:
            with env.begin() as txn:
                return self._decode(txn, item_id)
        finally:
            env.close()

    def _decode(self, txn: lmdb.Transaction, item_id: str) -> Item | None:
        name = f"{self.path}[{item_id}]"
        data = txn.get(self._keys[item_id])
        try:
            if data is None:
                raise ImageLoadError(f"{name}: key not found in the database")
            image = decode_image(data, self.resolution, name)
        except ImageLoadError as exc:
            self.on_error(str(exc))
            return None
        meta = {"lmdb": str(self.path), "key": item_id}
        return Item(id=item_id, image=image, seed=item_seed(self.seed, item_id), meta=meta)


def lsun_factory(
    arg: str, *, resolution: int, n: int | None, seed: int, generator: Any, on_error: ErrorHandler
) -> Source:
    """Source factory for ``lsun:PATH``, an LMDB or a folder (see ``bench.data.sources.open_source``)."""
    path = Path(arg).expanduser()
    if not path.exists():
        raise ValueError(f"lsun: path {arg!r} does not exist")
    if path.is_dir() and not (path / "data.mdb").is_file():
        return folder_subset("lsun", list_image_files(path, "lsun"), f"lsun:{arg}", resolution=resolution, n=n,
                             seed=seed, on_error=on_error, where=arg)
    env = _open_lmdb(path)
    try:
        with env.begin() as txn:
            total = txn.stat()["entries"]
            if total == 0:
                raise ValueError(f"lsun: LMDB {arg!r} holds no entries")
            # Positions, not a full key list, so that a small subset of a 3M-key database stays small.
            picks = _subset_positions(total, n, seed, on_error, f"lsun:{arg}")
            chosen = None if picks is None else set(picks.tolist())
            keys = [k for i, k in enumerate(txn.cursor().iternext(values=False)) if chosen is None or i in chosen]
    finally:
        env.close()
    return LmdbSource(path, keys, total=total, resolution=resolution, seed=seed, on_error=on_error)
