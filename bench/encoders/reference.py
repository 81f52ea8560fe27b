"""Deterministic random weights for checking loaders against the official network definitions.

``scripts/make_encoder_fixtures.py`` fills an official network (run from a scratch copy of its repository)
with :func:`seeded_state_dict` values and records its outputs; the tests rebuild the same weights from the
committed key and shape list, write them in the released file layout, load that file through the
project's loaders and compare. Each tensor is drawn from its own generator (seed and key), so the values
do not depend on the order of the keys; :func:`state_checksums` guards against the recipe drifting.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable

import torch

# 1-D tensors named like these get values around 1 (BatchNorm scales, PReLU slopes); other 1-D tensors
# (biases, running means) get small values around 0; running variances stay positive.
_NEAR_ONE = re.compile(r"(^|\.)(weight|running_var)$")


def _draw(key: str, shape: tuple[int, ...], seed: int, unit_std: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.long)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=gen)
    x = torch.randn(shape, generator=gen)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return x if unit_std else x / math.sqrt(fan_in)
    if _NEAR_ONE.search(key):
        return 1.0 + 0.1 * x
    return 0.1 * x


def seeded_state_dict(shapes: dict[str, Iterable[int]], seed: int,
                      unit_std: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Random float32 tensors for the given keys and shapes, reproducible from ``seed``.

    Args:
        shapes: key -> shape, as listed by the official network's ``state_dict()``.
        seed: master seed.
        unit_std: regular expressions of keys whose (>= 2-D) weights keep a unit standard deviation
            (layers that scale their weight at run time, such as ``EqualLinear``); other weights are
            divided by the square root of their fan-in so that activations stay of order one.

    Returns:
        key -> tensor (``num_batches_tracked`` entries are int64 zeros).
    """
    patterns = [re.compile(p) for p in unit_std]
    return {k: _draw(k, tuple(int(s) for s in shape), seed, any(p.search(k) for p in patterns))
            for k, shape in shapes.items()}


def state_checksums(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sum of each tensor (float64), to check that a rebuilt state dict is the one the fixture used."""
    return {k: float(v.double().sum()) for k, v in state.items()}


def seeded_images(n: int, side: int, seed: int) -> torch.Tensor:
    """(n, 3, side, side) smooth random images in [-1, 1] (noise at 1/4 side, bilinearly upsampled)."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, max(side // 4, 1), max(side // 4, 1), generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(small, size=(side, side), mode="bilinear", align_corners=False)
