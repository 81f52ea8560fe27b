"""Pixel metrics: MSE, PSNR and SSIM, computed on [0, 1] images (peak 1).

Inputs follow the image contract (float32, NCHW, RGB, [-1, 1], square); each metric maps them to
[0, 1] with ``(x + 1) / 2`` first, so the numbers are comparable with papers that report PSNR and SSIM
on [0, 1] (or, equivalently, on 8-bit images with peak 255).
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F

from bench.metrics.base import Metric, MetricInfo, MetricOptions, register_metric

PSNR_MSE_FLOOR = 1e-10
"""MSE floor for PSNR, so identical images score 10*log10(1/1e-10) = 100 dB instead of inf."""

SSIM_WINDOW = 11
"""SSIM window size: kornia's Gaussian window, sigma 1.5 (fixed by kornia), 11 taps."""

SSIM_RADIUS = SSIM_WINDOW // 2


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] to [0, 1].

    Args:
        x: Images in [-1, 1], any shape.

    Returns:
        ``(x + 1) / 2``, same shape and dtype, values in [0, 1].
    """
    return (x + 1) / 2


def masked_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean of ``values`` over channels and the pixels that ``weights`` marks.

    Args:
        values: (N, C, H, W) per-pixel values.
        weights: (N, 1, H, W) non-negative pixel weights (a 0/1 mask), or None for a plain mean.

    Returns:
        (N,) means in the dtype of ``values``; NaN for an image whose weights are all zero.
    """
    if weights is None:
        return values.mean(dim=(1, 2, 3))
    weights = weights.to(values.dtype)
    total = (values * weights).sum(dim=(1, 2, 3))
    count = weights.sum(dim=(1, 2, 3)) * values.shape[1]
    nan = torch.full_like(total, math.nan)
    return torch.where(count > 0, total / count.clamp_min(1e-30), nan)


def _mse01(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # float64 keeps PSNR exact to well below 1e-4 dB even near the floor.
    diff = to_unit_range(pred.double()) - to_unit_range(target.double())
    return masked_mean(diff.square(), mask)


@register_metric("mse")
class MSEMetric(Metric):
    """Mean squared error on [0, 1] images, over channels and (valid) pixels; lower is better."""

    info = MetricInfo(
        name="mse", higher_is_better=False, value_range=(0.0, 1.0),
        description="MSE on [0,1] images, mean over channels and pixels (masked: valid pixels only)",
    )

    def __init__(self, options: MetricOptions | None = None) -> None:
        del options  # no weights, no device: computed where the inputs live

    def _compute(self, pred: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        return _mse01(pred, target, mask)


@register_metric("psnr")
class PSNRMetric(Metric):
    """PSNR on [0, 1] images with peak 1: ``10 log10(1 / max(MSE, 1e-10))``; higher is better.

    The MSE floor caps identical images at 100 dB so that tables never hold inf. Masked: the MSE is
    taken over valid pixels only; an empty mask gives NaN.
    """

    info = MetricInfo(
        name="psnr", higher_is_better=True, value_range=(0.0, 100.0), unit="dB",
        description="PSNR on [0,1] images, peak 1, MSE floored at 1e-10 (identical images -> 100 dB)",
    )

    def __init__(self, options: MetricOptions | None = None) -> None:
        del options

    def _compute(self, pred: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        mse = _mse01(pred, target, mask)
        return 10 * torch.log10(1 / mse.clamp_min(PSNR_MSE_FLOOR))


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Erode a 0/1 mask with a square window, treating pixels outside the image as invalid.

    Args:
        mask: (N, 1, H, W) float mask in {0, 1}.
        radius: Half-width of the square window; a pixel survives when every pixel within
            ``radius`` (Chebyshev distance) is valid and inside the image.

    Returns:
        (N, 1, H, W) eroded mask in {0, 1}.
    """
    padded = F.pad(mask, (radius,) * 4, value=0.0)
    return -F.max_pool2d(-padded, kernel_size=2 * radius + 1, stride=1)


def ssim_weights(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of the SSIM map that count: centres of windows lying wholly inside the valid region.

    The mask is eroded by the window radius (5 px), with the image border counted as invalid, so a
    full mask keeps the interior ``[5:-5, 5:-5]`` exactly as scikit-image does. Where erosion leaves
    an image with no pixel (valid region thinner than the window), that image falls back to its
    un-eroded mask.

    Args:
        mask: (N, 1, H, W) float mask in {0, 1}.

    Returns:
        (N, 1, H, W) float mask in {0, 1}.
    """
    eroded = erode(mask, SSIM_RADIUS)
    empty = eroded.sum(dim=(1, 2, 3), keepdim=True) == 0
    return torch.where(empty, mask, eroded)


@register_metric("ssim")
class SSIMMetric(Metric):
    """SSIM on [0, 1] images (kornia map, Gaussian window 11 taps, sigma 1.5); higher is better.

    kornia's map (reflect padding, ``max_val=1``, K1=0.01, K2=0.03, population covariances) is averaged
    over channels and over the centres of windows that lie wholly inside the image, i.e. the map
    cropped by 5 px, which is what ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)`` reports. Masked: the mask is eroded by
    5 px (see ``ssim_weights``) so windows straddling invalid pixels do not count; if that empties
    it, the un-eroded mask is used; an all-zero mask gives NaN.
    """

    info = MetricInfo(
        name="ssim", higher_is_better=True, value_range=(-1.0, 1.0),
        description="SSIM on [0,1] images, Gaussian window 11 (sigma 1.5), mean over the map "
                    "cropped by 5 px (masked: mask eroded by 5 px)",
    )

    def __init__(self, options: MetricOptions | None = None) -> None:
        del options

    def _compute(self, pred: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        size = pred.shape[-1]
        if size <= SSIM_RADIUS:
            raise ValueError(f"ssim needs images larger than {SSIM_RADIUS} px, got {size}x{size}")
        # eps=0: the constants C1, C2 already keep the denominator positive; matches scikit-image.
        ssim_map = kornia.metrics.ssim(to_unit_range(pred), to_unit_range(target), SSIM_WINDOW,
                                       max_val=1.0, eps=0.0)
        if mask is None:
            mask = torch.ones_like(pred[:, :1])
        return masked_mean(ssim_map, ssim_weights(mask))
