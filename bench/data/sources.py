"""Data sources: where the benchmark's target images come from.

A source is opened from a spec string ``KIND:ARG[:N]`` (see ``open_source``) and yields ``Item``s, each an
image in the benchmark convention (float32 (3, R, R), RGB, [-1, 1]) with a stable id and a per-item seed.
Built-in kinds: ``synthetic`` (in ``bench.data.synthetic``), ``folder``, ``celebahq`` and ``lsun`` (in
``bench.data.readers``), ``set`` (in ``bench.data.sets``); other modules add kinds with ``register_source``.
Sources are lazy: files are decoded while iterating, and unreadable ones are reported through ``on_error``
and skipped, so ``len(source)`` counts candidates and may exceed what iteration yields.
"""

from __future__ import annotations

import abc
import difflib
import hashlib
import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from bench.data.images import MIN_SIDE, ImageLoadError, list_image_files, load_image

__all__ = [
    "Item",
    "Source",
    "SourceFactory",
    "available_kinds",
    "item_seed",
    "open_source",
    "parse_source_spec",
    "register_source",
    "select_subset",
]

ErrorHandler = Callable[[str], None]


class DirectRender(Protocol):
    """Renders items of one procedural source under affine transforms, without resampling.

    Called with items that share this renderer, their (N, 3, 3) source-to-destination pixel matrices (the
    ``TransformParams.matrix`` convention) and the border fill; returns (N, 3, R, R) float32 in [-1, 1]
    on the CPU. Renderers of one source compare equal, so the runner can render a batch in one call.
    """

    def __call__(self, items: Sequence[Item], matrices: torch.Tensor, fill: str) -> torch.Tensor: ...


@dataclass(frozen=True, eq=False)
class Item:
    """One target image and what is known about it.

    Compared by identity (tensor fields have no single truth value).

    Attributes:
        id: Stable id, unique within its source (file path stem, LMDB key, ``"synthetic-000007"``).
        image: float32 (3, R, R), RGB, values in [-1, 1], on CPU.
        seed: Per-item seed in [0, 2**31 - 1], ``item_seed(source_seed, id)``.
        latent: For generator samples, the w vector (w_dim,) float32 on CPU that produced ``image``.
        mask: For items read from a made set, the (1, R, R) validity mask in [0, 1].
        transform: For items read from a made set, the transform parameters recorded with it.
        meta: Free-form provenance, e.g. ``{"path": "..."}``.
        render: For procedural sources, the source's exact renderer of transformed targets (see
            :class:`DirectRender`): the runner then renders each transformed target directly instead of
            warping ``image``, so it carries no resampling blur. None for every other source.
    """

    id: str
    image: torch.Tensor
    seed: int
    latent: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    transform: dict | None = None
    meta: dict = field(default_factory=dict)
    render: DirectRender | None = None

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3 or img.shape[1] != img.shape[2]:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"Item {self.id!r}: image must be a (3, R, R) tensor, got {shape}")
        if img.dtype != torch.float32:
            raise ValueError(f"Item {self.id!r}: image must be float32, got {img.dtype}")


def item_seed(seed: int, item_id: str) -> int:
    """Derive a per-item seed from the source seed and the item id, stable across runs and machines.

    Args:
        seed: The source seed.
        item_id: The item id.

    Returns:
        An integer in [0, 2**31 - 1] (SHA-256 based, unlike the per-process salted ``hash()``).
    """
    digest = hashlib.sha256(f"{int(seed)}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class Source(abc.ABC):
    """A sized, re-iterable collection of ``Item``s.

    Attributes:
        name: The source kind, e.g. ``"folder"``.
        description: Human-readable summary (what, where, how many).
    """

    def __init__(self, name: str, description: str, ids: Sequence[str], *, seed: int, on_error: ErrorHandler):
        """Create a source over ``ids`` (already subset and in id order)."""
        self.name = name
        self.description = description
        self.seed = int(seed)
        self.on_error = on_error
        self._ids = list(ids)

    def ids(self) -> list[str]:
        """Return the ids this source will try to yield, in order."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Item]:
        for item_id in self._ids:
            item = self._load(item_id)
            if item is not None:
                yield item

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {self.description}>"

    @abc.abstractmethod
    def _load(self, item_id: str) -> Item | None:
        """Load one item, or report the problem through ``on_error`` and return None."""


class SourceFactory(Protocol):
    """Builds a source from the argument part of a spec; registered with ``register_source``."""

    def __call__(
        self, arg: str, *, resolution: int, n: int | None, seed: int, generator: Any, on_error: ErrorHandler
    ) -> Source:
        """Open the source for ``arg`` at ``resolution``, keeping a seeded subset of ``n`` items if given."""
        ...


_REGISTRY: dict[str, SourceFactory] = {}
_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_COUNT_SUFFIX_RE = re.compile(r"^(.+):(\d+)$")


def register_source(kind: str, factory: SourceFactory, *, replace: bool = False) -> None:
    """Register a source kind so that ``open_source("KIND:ARG")`` calls ``factory``.

    Args:
        kind: Lower-case name (letters, digits, ``_``, ``-``), e.g. ``"procfaces"``.
        factory: Called as ``factory(arg, *, resolution, n, seed, generator, on_error)``; should apply
            ``select_subset`` for ``n``.
        replace: Allow replacing an existing registration.

    Raises:
        ValueError: If ``kind`` is malformed or already registered (and ``replace`` is False).
    """
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ValueError(f"source kind must match {_KIND_RE.pattern}, got {kind!r}")
    if kind in _REGISTRY and not replace:
        raise ValueError(f"source kind {kind!r} is already registered")
    _REGISTRY[kind] = factory


def available_kinds() -> list[str]:
    """Return the registered source kinds, built-in ones first."""
    return list(_REGISTRY)


def parse_source_spec(spec: str) -> tuple[str, str, int | None]:
    """Split ``KIND:ARG[:N]`` into its parts.

    The kind is the text before the first ``:``. A trailing ``:<digits>`` after a non-empty argument is the
    subset size N (so ``synthetic:8`` is kind ``synthetic``, argument ``8``, no N; ``folder:/d:50`` has
    N = 50). A path that really ends in ``:<digits>`` can be written with a trailing ``/``.

    Args:
        spec: The spec string.

    Returns:
        ``(kind, arg, n)`` with ``n`` None when there is no suffix.

    Raises:
        ValueError: If the spec has no kind, no argument, or N is 0.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"data source spec must look like KIND:ARG (kinds: {_kinds_text()}), got {spec!r}")
    kind, rest = spec.split(":", 1)
    kind = kind.strip().lower()
    n = None
    match = _COUNT_SUFFIX_RE.match(rest)
    if match:
        rest, n = match.group(1), int(match.group(2))
        if n == 0:
            raise ValueError(f"data source spec {spec!r}: the subset size after the last ':' must be >= 1")
    if not rest:
        raise ValueError(f"data source spec {spec!r}: nothing after {kind + ':'!r}")
    return kind, rest, n


def _kinds_text() -> str:
    return ", ".join(_REGISTRY) + " (other modules may register more)"


def open_source(
    spec: str,
    *,
    resolution: int,
    n: int | None = None,
    seed: int = 0,
    generator: Any = None,
    on_error: ErrorHandler = print,
) -> Source:
    """Open a data source from a spec string.

    Specs: ``synthetic:N`` (N generator samples; needs ``generator``), ``folder:PATH[,align=1]`` (any image
    folder, recursive; ``align=1`` FFHQ-aligns each face photo on the fly, needs the faces extra),
    ``celebahq:PATH[,split=FILE]`` (CelebA-HQ folder, optionally restricted to a split list:
    one file name or index per line), ``lsun:PATH`` (LSUN LMDB directory, or a folder), ``set:PATH`` (a
    set written by ``write_set``), and any kind added with ``register_source``. A ``:N`` suffix keeps a
    seeded random subset of N items (``numpy.random.default_rng(seed)``, kept in id order so the subset is
    stable); if both the suffix and the ``n`` argument are given, ``n`` wins.

    Args:
        spec: ``KIND:ARG[:N]``, see ``parse_source_spec``.
        resolution: Side R of the yielded images, in pixels.
        n: Subset size, overriding a ``:N`` suffix.
        seed: Source seed: drives the subset choice and every item's seed.
        generator: Generator for ``synthetic`` (``mapping``, ``synthesis``, ``z_dim``, ``num_ws``).
        on_error: Receives a message for each skipped item and for warnings; the iteration goes on.

    Returns:
        The source; iterate it for ``Item``s with images (3, R, R) float32 in [-1, 1].

    Raises:
        ValueError: Unknown kind (the message lists the kinds), malformed argument, missing or empty path.
    """
    kind, arg, spec_n = parse_source_spec(spec)
    factory = _REGISTRY.get(kind)
    if factory is None:
        close = difflib.get_close_matches(kind, list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown data source kind {kind!r} in {spec!r}; known kinds: {_kinds_text()}.{hint}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_SIDE:
        raise ValueError(f"resolution must be an integer >= {MIN_SIDE}, got {resolution!r}")
    if n is None:
        n = spec_n
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    return factory(arg, resolution=resolution, n=n, seed=seed, generator=generator, on_error=on_error)


def select_subset(
    ids: Sequence[str], n: int | None, seed: int, on_error: ErrorHandler, what: str = "source"
) -> list[str]:
    """Keep a seeded random subset of ``n`` ids, in their original order.

    Args:
        ids: All available ids, in id order.
        n: Subset size; None keeps everything. Larger than ``len(ids)`` keeps everything with a warning.
        seed: Seed for ``numpy.random.default_rng``.
        on_error: Receives the warning when ``n`` is too large.
        what: Names the source in the warning.

    Returns:
        The chosen ids in the order they had in ``ids``.
    """
    ids = list(ids)
    picks = _subset_positions(len(ids), n, seed, on_error, what)
    return ids if picks is None else [ids[i] for i in picks]


def _subset_positions(total: int, n: int | None, seed: int, on_error: ErrorHandler, what: str) -> np.ndarray | None:
    """Sorted positions of a seeded subset of ``n`` out of ``total``; None means keep everything."""
    if n is None or n == total:
        return None
    if n > total:
        on_error(f"warning: {what}: asked for {n} items but only {total} are available; using all of them")
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


class FolderSource(Source):
    """Image files on disk (the ``folder`` and ``celebahq`` kinds, and ``lsun`` given a folder).

    A subset of ``n`` is drawn from the *readable* files: the candidates are visited in a seeded random
    order (``numpy.random.default_rng(seed).permutation``) and decoded until ``n`` have loaded, so that a
    broken file is replaced by the next candidate instead of shrinking the set; the kept items come out in id
    order. Broken files are reported through ``on_error`` and named in :attr:`description`.
    """

    def __init__(
        self,
        name: str,
        files: dict[str, Path],
        *,
        resolution: int,
        seed: int,
        on_error: ErrorHandler,
        where: str,
        n: int | None = None,
    ):
        """Create a source over ``files`` (id -> path, in id order), keeping ``n`` readable ones if given."""
        super().__init__(name, "", list(files), seed=seed, on_error=on_error)
        self.resolution, self.where, self.n = resolution, where, n
        self._files = dict(files)
        self._items: list[Item] | None = None
        self._skipped: list[str] = []

    def _load(self, item_id: str) -> Item | None:
        path = self._files[item_id]
        try:
            image = load_image(path, self.resolution)
        except ImageLoadError as exc:
            self.on_error(str(exc))
            self._skipped.append(path.name if path.parent == Path(self.where) else str(path))
            return None
        return Item(id=item_id, image=image, seed=item_seed(self.seed, item_id), meta={"path": str(path)})

    def _materialise(self) -> list[Item]:
        if self._items is None:
            ids = list(self._files)
            order = ids if self.n is None or self.n >= len(ids) else \
                [ids[i] for i in np.random.default_rng(self.seed).permutation(len(ids))]
            items: list[Item] = []
            for item_id in order:
                if self.n is not None and len(items) == self.n:
                    break
                item = self._load(item_id)
                if item is not None:
                    items.append(item)
            if self.n is not None and len(items) < self.n:
                self.on_error(f"warning: {self.name}:{self.where}: asked for {self.n} items but only {len(items)} "
                              f"of {len(ids)} files are readable; using those")
            position = {k: i for i, k in enumerate(ids)}
            self._items = sorted(items, key=lambda it: position[it.id])
        return self._items

    def ids(self) -> list[str]:
        """The candidate ids without a subset; with one, the ids of the readable files chosen."""
        return list(self._files) if self.n is None else [it.id for it in self._materialise()]

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Item]:
        yield from self._materialise()

    @property
    def description(self) -> str:
        """What was found, used and skipped (named), once the source has been read."""
        if self._items is None:
            return f"{len(self._files)} image files in {self.where}"
        skipped = "" if not self._skipped else ": " + ", ".join(self._skipped[:10]) + (
            f" and {len(self._skipped) - 10} more" if len(self._skipped) > 10 else "")
        return (f"{len(self._items)} images from {self.where} ({len(self._files)} image files found, "
                f"{len(self._items)} used, {len(self._skipped)} skipped as unreadable{skipped})")

    @description.setter
    def description(self, value: str) -> None:  # set by Source.__init__; this class describes itself
        pass


def folder_subset(kind: str, files: dict[str, Path], spec: str, *, resolution: int, n: int | None, seed: int,
                  on_error: ErrorHandler, where: str) -> FolderSource:
    """A ``FolderSource`` keeping ``n`` readable files (shared by folder, celebahq and lsun-as-folder)."""
    return FolderSource(kind, files, resolution=resolution, seed=seed, on_error=on_error, where=where, n=n)


def _folder_factory(
    arg: str, *, resolution: int, n: int | None, seed: int, generator: Any, on_error: ErrorHandler
) -> Source:
    """``folder:PATH[,align=1]``; ``align=1`` FFHQ-aligns each photo on the fly (``bench.align``, faces extra)."""
    from bench.data.readers import _split_options

    path, options = _split_options(arg, {"align"}, "folder")
    if options.get("align", "0") not in ("0", "1"):
        raise ValueError(f"folder: align={options['align']!r}; expected align=1 or align=0")
    if options.get("align") == "1":
        from bench.align import AlignedFolderSource

        return AlignedFolderSource("folder", list_image_files(path, "folder"), resolution=resolution, seed=seed,
                                   on_error=on_error, where=path, n=n)
    return folder_subset("folder", list_image_files(path, "folder"), f"folder:{arg}", resolution=resolution, n=n,
                         seed=seed, on_error=on_error, where=path)


def _lazy_factory(module: str, attr: str) -> SourceFactory:
    """A factory that imports ``module`` on first use and calls its ``attr``.

    Lazy because those modules import this one for Item and Source, and so that ``lmdb`` loads only when used.
    """

    def factory(arg: str, **kwargs: Any) -> Source:
        return getattr(importlib.import_module(module), attr)(arg, **kwargs)

    return factory


register_source("synthetic", _lazy_factory("bench.data.synthetic", "synthetic_factory"))
register_source("folder", _folder_factory)
register_source("celebahq", _lazy_factory("bench.data.readers", "celebahq_factory"))
register_source("lsun", _lazy_factory("bench.data.readers", "lsun_factory"))
register_source("set", _lazy_factory("bench.data.sets", "set_factory"))
