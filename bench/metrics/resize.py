"""Antialiased bilinear resizing for the perceptual distances: torch's kernel, or the same map as matrix products.

``F.interpolate(x, mode="bilinear", antialias=True, align_corners=False)`` is separable: each output row is a
fixed weighted sum of input rows, and each output column of input columns. So it equals ``R @ x @ C.T``,
with ``R`` (h, H) and ``C`` (w, W) the weights of each direction. :func:`resize_weights` takes them from
torch's own kernel (by resizing an identity), so they are torch's weights to the bit; the products sum in
another order, so the images agree to float32 rounding (``tests/metrics/test_resize.py``).

Why two forms: in a compiled optimisation step (:func:`compiled_distance`) torch's kernel stays an eager
call before the graph, and its backward is a slow generic kernel, 5 % of the compiled step's GPU time on
the 256 px world (256 -> 64 px) and 2.5 % at 1024 px (1024 -> 256 for LPIPS; ``scripts/profile_step.py``,
benchmarks/RESULTS.md, session 15). As matrix products the resize runs inside the graph. Everywhere else
(the metrics, eager steps) torch's kernel runs, as the ``lpips`` package does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bench.compiling import Compilable

_WEIGHTS: dict[tuple[int, int, str], torch.Tensor] = {}


def resize_antialiased(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size), bilinear with antialiasing (``x`` itself if already that size)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def resize_weights(in_size: int, out_size: int, device: torch.device | str) -> torch.Tensor:
    """(out_size, in_size) float32 weights of one direction of :func:`resize_antialiased`, on ``device``.

    Column j is the resize of the unit vector e_j, read off torch's kernel applied to an identity image along
    its height (the width keeps its size, where the antialiased filter is the identity). Kept per device.
    """
    key = (in_size, out_size, str(device))
    if key not in _WEIGHTS:
        eye = torch.eye(in_size, device=device).view(1, 1, in_size, in_size)
        with torch.no_grad():
            _WEIGHTS[key] = F.interpolate(eye, size=(out_size, in_size), mode="bilinear", align_corners=False,
                                          antialias=True)[0, 0].contiguous()
    return _WEIGHTS[key]


def resize_by_matrices(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ cols.T`` in float32 (autocast off): :func:`resize_antialiased` with the weights given."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.matmul(torch.matmul(rows, x.float()), cols.t())


def compiled_distance(net: Compilable, fn: Callable[..., torch.Tensor], x: torch.Tensor, size: int,
                      *args: Any) -> torch.Tensor:
    """``fn(resize_antialiased(x, size), *args)`` through ``net``'s compiled graph (``Compilable.run_compiled``).

    When it runs compiled and ``x`` needs resizing, the resize is part of the graph, as matrix products (one
    graph per input size); otherwise torch's kernel resizes, eager, as before.
    """
    height, width = x.shape[-2:]
    if not (net.compiled and torch.is_grad_enabled()) or (height, width) == (size, size):
        return net.run_compiled("distance", fn, resize_antialiased(x, size), *args)
    fixed = (resize_weights(height, size, x.device), resize_weights(width, size, x.device))

    def resized(rows: torch.Tensor, cols: torch.Tensor, image: torch.Tensor, *rest: Any) -> torch.Tensor:
        return fn(resize_by_matrices(image, rows, cols), *rest)

    return net.run_compiled(f"distance from {height}x{width}", resized, x, *args, fixed=fixed)
