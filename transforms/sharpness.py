"""How much of a target's fine detail survives its transform: the high-frequency energy ratio.

A bilinear warp is a low-pass filter: a half-pixel shift averages neighbours and removes much of the
Laplacian energy of a sharp image, which makes transformed targets easier to reconstruct than aligned ones.
:func:`hf_ratio` measures it per item: the mean squared Laplacian of the transformed target over its valid
region (eroded by one pixel, so no stencil straddles the border) divided by the same for the aligned image
over the region that maps there. An unblurred translation or rotation gives about 1; a bilinear warp of a
64 px procedural face gives 0.37-0.49. A scale changes the ratio by itself, whatever the resampler: zooming in
by s spreads the same detail over s^2 as many pixels (a perfect 5/4 magnification of a procedural face gives
0.86), zooming out concentrates it (3/4: 1.10). The ratio is reported as measured, without compensation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_energy(images: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean squared Laplacian (over channels and the pixels of ``region``) per image.

    Args:
        images: (N, C, H, W) float.
        region: (N, 1, H, W) in {0, 1}; eroded by one pixel before use.

    Returns:
        (N,) float32; NaN where the eroded region is empty.
    """
    c = images.shape[1]
    kernel = _LAPLACE.to(images).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    lap = F.conv2d(images.float(), kernel.float(), groups=c)  # valid convolution: (H-2, W-2)
    inner = -F.max_pool2d(-region.float(), 3, stride=1)  # erosion by one pixel, (H-2, W-2)
    energy = (lap**2).mean(1, keepdim=True)
    count = inner.flatten(1).sum(1)
    total = (energy * inner).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def hf_ratio(aligned: torch.Tensor, transformed: torch.Tensor, mask: torch.Tensor,
             matrices: torch.Tensor) -> torch.Tensor:
    """High-frequency energy of transformed targets relative to their aligned images.

    Args:
        aligned: (N, C, H, W) aligned images.
        transformed: (N, C, H, W) the targets made from them.
        mask: (N, 1, H, W) validity mask of the targets.
        matrices: (N, 3, 3) source-to-destination pixel maps of the transforms.

    Returns:
        (N,) float32 on the CPU: ``E(transformed | mask) / E(aligned | inverse-mapped mask)``, where E is
        :func:`laplacian_energy`; NaN for an empty valid region.
    """
    m = matrices.to(device=mask.device, dtype=torch.float32)
    back = warp_affine(mask.float(), torch.linalg.inv(m)[:, :2, :], tuple(mask.shape[-2:]), mode="nearest",
                       padding_mode="zeros", align_corners=True)
    return (laplacian_energy(transformed, mask) / laplacian_energy(aligned, back)).float().cpu()
