"""F/W+ inversion (BDInvert; Kang, Kim, Cho, ICCV 2021): a coarse feature map f plus fine-layer codes.

The latent is (f, w+): f replaces the generator's features at base resolution s (8 or 16), and only the
ws rows from M = 2*log2(s) - 4 on shape the image (``generator.synthesis_from``; the coarse RGB skip is
zeroed there). Inversion (reference/methods.md §1.4): f starts at ``E(target)`` from a fully
convolutional base-code encoder, w+ at the mean latent; Adam (lr 0.01, no schedule, 1200 steps) minimises
``MSE + 10 * perceptual + 10 * mean((f - f0)^2) + 0.01 * P-norm+(w+)`` per image. Editing adds a
direction to the detail code's rows M.. only; f stays (§1.5).

The encoder is handed to the method (``build_method(..., encoder=module)``); the benchmark loads it.
Deviation, stated: the encoder input is an antialiased bicubic resize to 8s x 8s (BDInvert: PIL Lanczos
on uint8 images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import (
    EditDirection,
    GeneratorLike,
    Inversion,
    Method,
    PerceptualLike,
    Preset,
    check_targets,
    full_precision,
    register_alias,
    register_preset,
)
from methods.optim import failure_reasons, mean_latent_wp, perceptual_note, run_adam, target_loss
from methods.pnorm import pnorm_stats_for


class BaseCodeEncoder(nn.Module):
    """BDInvert's fully convolutional base-code encoder (methods.md §1.2), widths as parameters.

    Three stages of 3 x [conv3x3 + BN + LReLU(0.2)] then AvgPool(2), widths doubling from ``width`` up to
    ``max_width``; then conv3x3 + BN + LReLU to ``head_width`` and a linear conv3x3 to ``out_channels``.
    Input: (N, 3, 8s, 8s) in [-1, 1]; output: (N, out_channels, s, s), in the generator's post-activation
    feature domain. BDInvert's ``encoder_simple`` is ``head_width = out_channels`` (its last two convs
    have the output's width); ``head_width=None`` keeps the last stage's width (the world's encoders).
    """

    def __init__(self, out_channels: int, width: int = 32, max_width: int = 128, blocks: int = 3,
                 head_width: int | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for b in range(blocks):
            c = min(width * 2**b, max_width)
            for _ in range(3):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
                c_in = c
            layers.append(nn.AvgPool2d(2))
        head = head_width or c_in
        layers += [nn.Conv2d(c_in, head, 3, padding=1), nn.BatchNorm2d(head), nn.LeakyReLU(0.2),
                   nn.Conv2d(head, out_channels, 3, padding=1)]
        self.model = nn.Sequential(*layers)
        self.stride = 2**blocks
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def encoder_input(images: torch.Tensor, base_res: int, stride: int = 8) -> torch.Tensor:
    """Resize (N, 3, R, R) images to the encoder's input side ``stride * base_res`` (antialiased bicubic)."""
    side = stride * base_res
    if images.shape[-1] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bicubic", align_corners=False, antialias=True)


class FWPlus(Method):
    """F/W+ inversion at base resolution ``base_res``."""

    @dataclass(frozen=True)
    class Params:
        """Hyper-parameters (defaults: BDInvert's released ``invert.py``)."""

        base_res: int = 16
        steps: int = 1200
        lr: float = 0.01
        mse_weight: float = 1.0
        perceptual_weight: float = 10.0
        basecode_weight: float = 10.0
        pnorm_weight: float = 0.01

    def __init__(self, name: str, params: Params, encoder: nn.Module | None = None) -> None:
        super().__init__(name, params)
        self.encoder = encoder

    def _encode(self, targets: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise ValueError(f"method {self.name!r} needs its base-code encoder for {self.params.base_res}x"
                             f"{self.params.base_res}; none was given (bench zoo ls)")
        enc_res = getattr(self.encoder, "base_res", None)
        if enc_res is not None and int(enc_res) != self.params.base_res:
            raise ValueError(f"method {self.name!r} needs a {self.params.base_res}x{self.params.base_res} base-code "
                             f"encoder; the one given was trained for {enc_res}x{enc_res}")
        self.encoder.eval()
        with torch.no_grad(), full_precision(targets.device):
            return self.encoder(encoder_input(targets.float(), self.params.base_res)).float()

    def invert(self, targets: torch.Tensor, generator: GeneratorLike, *, seeds: Sequence[int],
               perceptual: PerceptualLike | None = None) -> Inversion:
        """Invert targets (N, 3, R, R) in [-1, 1]; deterministic (seeds are not needed)."""
        check_targets(targets, generator.resolution)
        p, res = self.params, self.params.base_res
        f0 = self._encode(targets)
        f = f0.clone().requires_grad_(True)
        wp = mean_latent_wp(generator, targets.shape[0])
        stats = pnorm_stats_for(generator) if p.pnorm_weight else None

        recon = target_loss(targets, perceptual, p.mse_weight, p.perceptual_weight)

        def loss_fn(step: int) -> torch.Tensor:
            loss = recon(generator.synthesis_from(f, wp, res))
            loss = loss + p.basecode_weight * (f - f0).square().flatten(1).mean(1)
            if stats is not None:
                loss = loss + p.pnorm_weight * stats.penalty(wp)
            return loss

        result = run_adam([wp, f], loss_fn, steps=p.steps, lr=p.lr)
        info = {**asdict(p), "perceptual": perceptual_note(perceptual, p.perceptual_weight),
                "first_ws": generator.first_ws_index(res)}
        return self._finish({"wp": wp, "f": f}, result.loss, failure_reasons(result.diverged), info, generator)

    def render(self, inversion: Inversion, generator: GeneratorLike) -> torch.Tensor:
        """Synthesise from the base code f and the detail code."""
        return generator.synthesis_from(inversion.latents["f"], inversion.latents["wp"], self.params.base_res)

    def edit(self, inversion: Inversion, generator: GeneratorLike, direction: EditDirection,
             strength: float) -> torch.Tensor:
        """Move the detail code's rows M.. along ``direction``; the base code f is unchanged."""
        m = generator.first_ws_index(self.params.base_res)
        wp = inversion.latents["wp"]
        offset = direction.offset(generator.num_ws, strength, allowed=range(m, generator.num_ws)).to(wp)
        return generator.synthesis_from(inversion.latents["f"], wp + offset, self.params.base_res)


def describe_base_code(generator: GeneratorLike, base_res: int) -> str:
    """How coarse a base code is relative to the image.

    E.g. ``4x4 x 256 ch: 1/64 of the 256 px side, 2.1 % of the image's pixel values``; BDInvert's 16x16 at
    1024 px is 1/64 and 4.2 %, its 8x8 1/128 and 1.0 %.
    """
    c = generator.feature_shape(base_res)[0]
    r = generator.resolution
    share = 100 * c * base_res * base_res / (3 * r * r)
    return (f"{base_res}x{base_res} x {c} ch: 1/{r // base_res} of the {r} px side, {share:.1f} % of the image's "
            "pixel values")


for _s in (4, 8, 16):  # 4: the paper's 16x16 proportion (1/64 of the side) on the 256 px world
    register_preset(Preset(
        name=f"fwplus{_s}", cls=FWPlus, params={"base_res": _s}, latent_space="F/W+", needs_encoder=True,
        description=f"BDInvert F/W+ with a {_s}x{_s} base code: encoder init, Adam lr 0.01, 1200 steps, "
                    "MSE + 10 perc + 10 |f-f0|^2 + 0.01 P-norm+",
        reference="Kang, Kim, Cho. GAN Inversion for Out-of-Range Images with Geometric Transformations. ICCV 2021",
        gpu_precisions=("tf32", "bf16")))  # both held the GPU parity test (on the mean: test_parity)
register_alias("fwplus", ("fwplus8", "fwplus16"))
