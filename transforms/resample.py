"""Band-limited affine warps: Lanczos-3, widened when the transform shrinks the image.

``transforms.apply_transform`` warps bilinearly by default, as every peer does; a bilinear sample between
pixels is a two-tap average, a low-pass that removes a third to a half of a 64 px image's Laplacian energy
(see ``transforms.sharpness``). :func:`warp_lanczos` samples each destination pixel with a separable
Lanczos window of ``a`` lobes around its source location, in source pixels; where the transform shrinks the
image (scale s < 1) the window is stretched by 1/s so that it also anti-aliases.
"""

from __future__ import annotations

import math

import torch

_ROWS_PER_CHUNK_TAPS = 2**24  # bound on gathered values per chunk (memory ~ 4 bytes * channels * this)


def lanczos(x: torch.Tensor, a: int) -> torch.Tensor:
    """The Lanczos window ``sinc(x) * sinc(x / a)`` for |x| < a, else 0."""
    out = torch.sinc(x) * torch.sinc(x / a)
    return torch.where(x.abs() < a, out, torch.zeros_like(out))


def _index(i: torch.Tensor, size: int, fill: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices after the border rule, and which taps fall inside the image."""
    inside = (i >= 0) & (i < size)
    if fill == "reflection":  # about the edge pixel centres, like grid_sample(align_corners=True)
        period = 2 * (size - 1) if size > 1 else 1
        r = torch.remainder(i, period)
        i = torch.where(r > size - 1, period - r, r)
    else:  # "border" repeats the edge; "zeros" reads anything and is masked by ``inside``
        i = i.clamp(0, size - 1)
    return i, inside


def warp_lanczos(images: torch.Tensor, matrices: torch.Tensor, fill: str, a: int = 3) -> torch.Tensor:
    """Warp ``images`` by source-to-destination pixel ``matrices`` with a Lanczos-``a`` window.

    Args:
        images: (N, C, H, W) float in [-1, 1].
        matrices: (N, 3, 3) affine maps (pixel centres at integers), as in ``transforms.apply_transform``.
        fill: ``"reflection"``, ``"border"`` or ``"zeros"`` (black, -1).
        a: lobes of the window (3: Lanczos-3).

    Returns:
        (N, C, H, W) in the input dtype, not clamped (the window rings slightly past edges).
    """
    n, c, h, w = images.shape
    inv = torch.linalg.inv(matrices.to(device=images.device, dtype=torch.float64))
    out = torch.empty_like(images)
    for k in range(n):
        scale = math.sqrt(abs(float(torch.linalg.det(matrices[k, :2, :2].double()))))
        stretch = max(1.0, 1.0 / scale)  # minification: widen the window to low-pass before sampling
        taps = 2 * math.ceil(a * stretch)
        rows = max(1, _ROWS_PER_CHUNK_TAPS // (w * taps * taps))
        for r0 in range(0, h, rows):
            out[k, :, r0 : r0 + rows] = _warp_rows(images[k], inv[k], r0, min(h, r0 + rows), fill, a, stretch, taps)
    return out


def _warp_rows(img: torch.Tensor, inv: torch.Tensor, r0: int, r1: int, fill: str, a: int, stretch: float,
               taps: int) -> torch.Tensor:
    c, h, w = img.shape
    yd, xd = torch.meshgrid(torch.arange(r0, r1, device=img.device, dtype=torch.float64),
                            torch.arange(w, device=img.device, dtype=torch.float64), indexing="ij")
    xs = inv[0, 0] * xd + inv[0, 1] * yd + inv[0, 2]
    ys = inv[1, 0] * xd + inv[1, 1] * yd + inv[1, 2]
    offsets = torch.arange(taps, device=img.device) - (taps // 2 - 1)
    ix = torch.floor(xs).long().unsqueeze(-1) + offsets  # (rows, W, taps)
    iy = torch.floor(ys).long().unsqueeze(-1) + offsets
    wx = lanczos((xs.unsqueeze(-1) - ix) / stretch, a)
    wy = lanczos((ys.unsqueeze(-1) - iy) / stretch, a)
    ix, in_x = _index(ix, w, fill)
    iy, in_y = _index(iy, h, fill)
    weight = wy.unsqueeze(-1) * wx.unsqueeze(-2)  # (rows, W, taps_y, taps_x)
    flat = (iy.unsqueeze(-1) * w + ix.unsqueeze(-2)).flatten()
    values = img.reshape(c, h * w)[:, flat].view(c, *weight.shape).double()
    if fill == "zeros":
        inside = (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).unsqueeze(0)
        values = torch.where(inside, values, torch.full_like(values, -1.0))
    total = weight.sum((-1, -2))
    return ((values * weight).sum((-1, -2)) / total).to(img.dtype)
