"""Reconstruction metrics (MSE, PSNR, SSIM, LPIPS, face identity) behind a registry.

Importing this package registers every metric. Build them with ``build_metrics(names, device=...)``;
list them with ``list_metrics()``.
"""

from bench.metrics.base import (
    DEFAULT_METRICS,
    LPIPS_NETS,
    MASKED_SUFFIX,
    Metric,
    MetricInfo,
    MetricOptions,
    PerceptualDistance,
    build_metrics,
    check_image_pair,
    check_mask,
    list_metrics,
    register_metric,
)
from bench.metrics.effnet import EffNetLPIPSMetric  # noqa: F401  (registers effnet-lpips)
from bench.metrics.identity import IDENTITY_INFO, IdentityMetric
from bench.metrics.lpips_metric import (
    BACKBONE_FILES,
    LPIPS_RESOLUTION,
    LPIPSDistance,
    LPIPSMetric,
    find_backbone_weights,
    load_lpips,
)
from bench.metrics.pixel import PSNR_MSE_FLOOR, SSIM_WINDOW, MSEMetric, PSNRMetric, SSIMMetric

__all__ = [
    "BACKBONE_FILES",
    "DEFAULT_METRICS",
    "IDENTITY_INFO",
    "IdentityMetric",
    "LPIPS_NETS",
    "LPIPS_RESOLUTION",
    "LPIPSDistance",
    "LPIPSMetric",
    "MASKED_SUFFIX",
    "MSEMetric",
    "Metric",
    "MetricInfo",
    "MetricOptions",
    "PSNRMetric",
    "PSNR_MSE_FLOOR",
    "PerceptualDistance",
    "SSIMMetric",
    "SSIM_WINDOW",
    "build_metrics",
    "check_image_pair",
    "check_mask",
    "find_backbone_weights",
    "list_metrics",
    "load_lpips",
    "register_metric",
]
