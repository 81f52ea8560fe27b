"""The embedded world's perceptual distance: LPIPS-style, over the attribute net trained on procfaces.

What it is, stated everywhere it is used: features from the four stages of the world's attribute net (a
CNN trained on the renderer's labels and nuisance parameters, never on ImageNet), unit-normalised over
channels, squared differences summed over channels, averaged over positions, summed over the stages with
equal weights (LPIPS's "lin" layers are calibrated on human judgements; none exist for this domain, so it
uses equal weights). Images are resized to the net's 64 px. It is meant for the procedural-face domain
only; ``bench`` does not offer it for other generators.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from bench.compiling import Compilable
from bench.metrics import Metric, MetricInfo, MetricOptions, register_metric
from bench.metrics.resize import compiled_distance, resize_antialiased
from bench.world import zoo
from bench.world.networks import AttributeNet

NAME = "attrnet-lpips"
DESCRIPTION = ("LPIPS-style distance over the embedded world's attribute net (trained on procedural faces, "
               "not ImageNet; unit-normalised features of 4 stages, equal weights, at 64 px)")
NET_RESOLUTION = 64


def load_attribute_net_file(path, device: torch.device | str = "cpu") -> AttributeNet:
    """An attribute net from a safetensors file written by ``bench.world.finalize`` (frozen, eval)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        outputs = int(json.loads(fh.metadata()["outputs"]))
        state = {k: fh.get_tensor(k).float() for k in fh.keys()}
    net = AttributeNet(outputs)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval().requires_grad_(False)


def load_attribute_net(device: torch.device | str = "cpu") -> tuple[AttributeNet | None, str]:
    """The shipped attribute net (frozen, eval) or ``(None, reason)``."""
    path = zoo.asset_path("attributes")
    if path is None:
        return None, "the embedded world's attribute net is not installed (bench zoo ls)"
    return load_attribute_net_file(path, device), ""


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()


class WorldPerceptual(Compilable):
    """Differentiable distance ``d(x, y) -> (N,)`` on [-1, 1] images (``methods.base.PerceptualLike``).

    With ``compiled`` (``--compile``), the optimisation step's distance runs through ``torch.compile``.
    """

    name = NAME
    description = DESCRIPTION
    compile_label = "the perceptual network"

    def __init__(self, net: AttributeNet) -> None:
        self.net = net

    @staticmethod
    def _resize(x: torch.Tensor) -> torch.Tensor:
        return resize_antialiased(x, NET_RESOLUTION)

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage distance maps (N, 1, h, w)."""
        return self._maps(self._resize(x), self._resize(y))

    def against(self, y: torch.Tensor):
        """``x -> d(x, y)`` with y's unit-normalised features computed once (for optimisation loops)."""
        with torch.no_grad():
            fy = [_unit(f) for f in self.net.features(self._resize(y))]

        def distance(x: torch.Tensor) -> torch.Tensor:
            return compiled_distance(self, self._distance_to, x, NET_RESOLUTION, fy)

        return distance

    def _distance_to(self, x: torch.Tensor, fy: list[torch.Tensor]) -> torch.Tensor:
        fx = self.net.features(x)
        return sum((_unit(a) - b).square().sum(dim=1).mean(dim=(1, 2)) for a, b in zip(fx, fy, strict=True))

    def _maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        feats = self.net.features(torch.cat([x, y]))
        return [(_unit(f[: len(x)]) - _unit(f[len(x) :])).square().sum(dim=1, keepdim=True) for f in feats]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(m.mean(dim=(1, 2, 3)) for m in self.layer_maps(x, y))


def load_world_perceptual(device: torch.device | str = "cpu") -> tuple[WorldPerceptual | None, str]:
    """``(distance, "")`` if the world's attribute net is shipped, else ``(None, reason)``."""
    net, reason = load_attribute_net(device)
    return (WorldPerceptual(net), "") if net is not None else (None, reason)


@register_metric(NAME)
class WorldPerceptualMetric(Metric):
    """The world perceptual distance as a metric (lower is better); masked: maps weighted by the mask."""

    info = MetricInfo(name=NAME, higher_is_better=False, value_range=(0.0, float("inf")), description=DESCRIPTION)

    def __init__(self, options: MetricOptions | None = None) -> None:
        device = options.device if options is not None else torch.device("cpu")
        self.distance, self.reason = load_world_perceptual(device)
        self.available = self.distance is not None

    def _compute(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        maps = self.distance.layer_maps(pred, target)
        if mask is None:
            return sum(m.mean(dim=(1, 2, 3)) for m in maps)
        total = 0.0
        for m in maps:
            # fraction of valid pixels under each feature cell, as in the LPIPS metric's masked variant
            w = F.adaptive_avg_pool2d(mask, m.shape[-2:])
            total = total + (m * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))
        return total
