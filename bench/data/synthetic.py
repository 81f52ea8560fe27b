"""The ``synthetic`` data source: generator samples, registered lazily by ``bench.data.sources``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from bench.data.sources import ErrorHandler, Item, Source, item_seed, select_subset

__all__ = ["SyntheticSource", "synthetic_factory"]


def _generator_device(generator: Any) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype the generator computes: from its first parameter, else its ``device``."""
    params = getattr(generator, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    if first is not None:
        return first.device, first.dtype if first.is_floating_point() else torch.float32
    return torch.device(getattr(generator, "device", "cpu")), torch.float32


class SyntheticSource(Source):
    """Generator samples (the ``synthetic`` kind): z from the item seed, w = mapping(z), image = G(w).

    Item ``i`` has id ``synthetic-{i:06d}``; its z is drawn on CPU from
    ``torch.Generator().manual_seed(item.seed)``, so an item does not depend on how many are asked for.
    Samples are generated ``batch_size`` at a time under ``torch.no_grad`` on the generator's device.
    """

    batch_size = 8

    def __init__(self, generator: Any, ids: Sequence[str], *, resolution: int, seed: int, on_error: ErrorHandler):
        """Create a source of the given sample ids (``synthetic-NNNNNN``) from ``generator``."""
        missing = [a for a in ("mapping", "synthesis", "z_dim", "num_ws") if not hasattr(generator, a)]
        if missing:
            raise ValueError(
                f"synthetic: the generator lacks {', '.join(missing)}; it needs mapping, synthesis, z_dim and num_ws"
            )
        super().__init__("synthetic", f"{len(ids)} generator samples (seed {seed})", ids, seed=seed, on_error=on_error)
        self.generator = generator
        self.resolution = resolution

    def __iter__(self) -> Iterator[Item]:
        for start in range(0, len(self._ids), self.batch_size):
            yield from (it for it in self._generate(self._ids[start : start + self.batch_size]) if it is not None)

    def _load(self, item_id: str) -> Item | None:
        return self._generate([item_id])[0]

    def _generate(self, ids: Sequence[str]) -> list[Item | None]:
        g, res = self.generator, self.resolution
        seeds = [item_seed(self.seed, i) for i in ids]
        z = torch.cat([torch.randn(1, int(g.z_dim), generator=torch.Generator().manual_seed(s)) for s in seeds])
        device, dtype = _generator_device(g)
        with torch.no_grad():
            w = g.mapping(z.to(device=device, dtype=dtype))
            images = g.synthesis(w.unsqueeze(1).repeat(1, int(g.num_ws), 1))
        w, images = w.detach().float().cpu(), images.detach().float().cpu()
        if w.dim() != 2 or w.shape[0] != len(ids):
            raise ValueError(
                f"synthetic: generator.mapping returned shape {tuple(w.shape)}, expected ({len(ids)}, w_dim)"
            )
        if tuple(images.shape) != (len(ids), 3, res, res):
            raise ValueError(
                f"synthetic: generator.synthesis returned shape {tuple(images.shape)}, expected "
                f"({len(ids)}, 3, {res}, {res}); the resolution must match the generator's"
            )
        items: list[Item | None] = []
        for item_id, s, wi, img in zip(ids, seeds, w, images, strict=True):
            if not bool(torch.isfinite(img).all()):
                self.on_error(f"synthetic:{item_id}: the generator produced NaN or Inf values; skipped")
                items.append(None)
                continue
            items.append(Item(item_id, img.clamp(-1.0, 1.0).contiguous(), s, latent=wi.clone(), meta={"z_seed": s}))
        return items


def synthetic_factory(
    arg: str, *, resolution: int, n: int | None, seed: int, generator: Any, on_error: ErrorHandler
) -> Source:
    """Source factory for ``synthetic:COUNT`` (see ``bench.data.sources.open_source``)."""
    if not arg.strip().isdigit() or int(arg) < 1:
        raise ValueError(f"synthetic: expected synthetic:COUNT with COUNT >= 1, got synthetic:{arg}")
    if generator is None:
        raise ValueError(f"synthetic:{arg} needs a generator (pass generator=... to open_source)")
    ids = select_subset([f"synthetic-{i:06d}" for i in range(int(arg))], n, seed, on_error, f"synthetic:{arg}")
    return SyntheticSource(generator, ids, resolution=resolution, seed=seed, on_error=on_error)
