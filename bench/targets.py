"""Transformed targets: warped, or rendered directly when the source can, with a record of how.

A bilinear warp blurs: at 64 px it removes half of a procedural face's Laplacian energy, which makes
every transformed column an easier target than the aligned one. So a source that can render an item under
a transform (``Item.render``: the procedural faces) gets its transformed targets rendered in the
renderer's own coordinates; every other source is warped with the run's ``--resample`` mode (bilinear,
bicubic or band-limited Lanczos-3). Masks and matrices are those of ``transforms.apply_transform`` in
every case, and each target records how it was made and its high-frequency ratio (``transforms.sharpness``).

Rendered targets are kept in a bounded in-memory cache (:data:`RENDER_CACHE_BYTES`), keyed by renderer, item,
matrix and fill: a protocol run renders each (face, transform) once instead of once per method. Rendering is
deterministic and per image, so a cached target is the same tensor, bit for bit. (A 50-face protocol's 500
transformed 256 px targets take 39 s on a 2-core CPU, ``scripts/render_timing.py``; every method had paid that
again.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.data import Item
from transforms import TransformParams, apply_transform
from transforms.sharpness import hf_ratio

RENDERED = "render"  # how a directly rendered target is recorded
RENDER_CACHE_BYTES = 2 * 2**30  # rendered targets kept in memory (least recently used dropped first)


@dataclass(frozen=True)
class Targets:
    """Transformed targets of a batch of items.

    Attributes:
        image: (N, 3, R, R) in [-1, 1], on the device of the input images.
        mask: (N, 1, R, R) float32 validity mask.
        matrix: (N, 3, 3) float32 source-to-destination pixel matrices.
        made: per item, how its target was made: ``"render"`` or the resampling mode.
        hf_ratio: (N,) float32 on the CPU, high-frequency energy of the target relative to the aligned image.
    """

    image: torch.Tensor
    mask: torch.Tensor
    matrix: torch.Tensor
    made: tuple[str, ...]
    hf_ratio: torch.Tensor


def make_targets(items: Sequence[Item], params: Sequence[TransformParams], device: torch.device | str = "cpu",
                 resample: str = "bilinear") -> Targets:
    """Targets of ``items`` under ``params``: rendered directly where the item's source can, else warped.

    Identity transforms keep the aligned image itself (made ``"identity"``).
    """
    images = torch.stack([it.image for it in items]).to(device)
    warped = apply_transform(images, params, resample=resample)
    image = warped.image.clone()
    made = ["identity" if _is_identity(p) else resample for p in params]
    for render, index in _render_groups(items, params):
        for fill in sorted({params[i].fill for i in index}):  # one call per border fill
            part = [i for i in index if params[i].fill == fill]
            rows = torch.tensor(part, device=image.device)
            matrices = warped.matrix[rows].double().cpu()
            image[rows] = _render_cache.get(render, [items[i] for i in part], matrices, fill).to(image)
            for i in part:
                made[i] = RENDERED
    ratio = hf_ratio(images, image, warped.mask, warped.matrix)
    return Targets(image, warped.mask, warped.matrix, tuple(made), ratio)


class _RenderCache:
    """Rendered targets by (renderer, item id, matrix, fill), least recently used dropped past a byte budget."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def get(self, render, items: Sequence[Item], matrices: torch.Tensor, fill: str) -> torch.Tensor:
        """``render(items, matrices, fill)``, (N, 3, R, R) on the CPU; only the targets not cached are rendered."""
        keys = [(render, it.id, tuple(m.flatten().tolist()), fill) for it, m in zip(items, matrices, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self.entries]
        if todo:
            fresh = render([items[i] for i in todo], matrices[todo], fill).cpu()
            for j, i in enumerate(todo):
                self.entries[keys[i]] = fresh[j].clone()
                self.bytes += fresh[j].nbytes
        out = torch.stack([self.entries[k] for k in keys])
        for k in keys:
            self.entries.move_to_end(k)
        while self.entries and self.bytes > RENDER_CACHE_BYTES:
            self.bytes -= self.entries.popitem(last=False)[1].nbytes
        return out

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0


_render_cache = _RenderCache()


def _is_identity(p: TransformParams) -> bool:
    return all(abs(p.matrix[r][c] - (1.0 if r == c else 0.0)) < 1e-12 for r in range(3) for c in range(3))


def _render_groups(items: Sequence[Item], params: Sequence[TransformParams]) -> list[tuple[object, list[int]]]:
    """(renderer, indices) for the non-identity items whose source renders them (renderers compare equal)."""
    groups: list[tuple[object, list[int]]] = []
    for i, (it, p) in enumerate(zip(items, params, strict=True)):
        if it.render is None or _is_identity(p):
            continue
        for render, index in groups:
            if render == it.render:
                index.append(i)
                break
        else:
            groups.append((it.render, [i]))
    return groups
