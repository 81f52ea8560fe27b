"""IDinvert (Zhu, Shen, Zhao, Zhou, ECCV 2020): a domain-guided encoder and domain-regularised optimisation.

Encoder (reference/methods.md §4.2, scaled to the embedded world): conv3x3 + BN + LReLU(0.2) stem, then
AvgPool(2) + residual block (two conv3x3 + BN + LReLU, hidden width min(in, out), a 1x1 conv + BN + LReLU
shortcut when the width changes, summed) per halving down to 4x4, then a fully connected layer + BN to
``num_ws * w_dim`` values. Deviations, stated:

- Widths 16..128 instead of 64..1024, and the FC is factorised through a linear 1x1 conv to
  ``code_channels`` (16 x 4 x 4 = 256 = w_dim inputs, i.e. a rank-256 FC): a plain FC from 128 x 4 x 4
  to 10 x 256 alone would be 5M parameters; the whole encoder stays near 1.1M (2.2 MB in float16).
- The encoder's output is an offset added to the generator's mean latent ``w_avg`` (kept in the encoder
  as a buffer, so the file is self-contained): ``E(x) = w_avg + BN(FC(h))``, shape (N, num_ws, w_dim). The
  published encoder outputs the W+ code directly; starting at the mean latent is what an untrained
  offset does here, and the BN's scale is learnable (published: fixed at 1, bias only).

Inversion (§4.3): the W+ code starts at ``E(x)``; Adam (lr 0.01, PyTorch's default betas, no schedule,
100 steps) minimises per image

    MSE(G(wp), x) + perceptual_weight * d(G(wp), x) + 2.0 * mean((wp - E(G(wp)))^2)

where the last term is the domain regulariser: the frozen encoder (eval mode, no parameter gradients)
re-encodes the current reconstruction every step, and the gradient reaches wp through both wp and
E(G(wp)). Editing is the default W+ edit (all rows).

Perceptual weight: the published 5e-5 multiplies the mean squared difference of raw VGG16 conv4_3
features (inputs in [0, 255]), which for face reconstructions is of the same order as the [-1, 1] pixel
MSE [inference: the Keras VGG16 weights are not available offline to measure it]. The world's perceptual
distance (LPIPS-style, ``bench.world.perceptual``) is 8x the MSE at the mean latent and about 30x at a
fitted reconstruction on held-out procfaces (measured: MSE 0.126 vs d 1.02; after 100 MSE-only Adam steps
0.0096 vs 0.33), so a weight of 0.05 puts the weighted perceptual term at 0.4-1.5x the MSE over an
inversion, the same role as in the paper. The encoder is trained with the same weight, as published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import (
    GeneratorLike,
    Inversion,
    Method,
    PerceptualLike,
    Preset,
    check_targets,
    full_precision,
    register_preset,
)
from methods.optim import failure_reasons, perceptual_note, run_adam, target_loss

PERCEPTUAL_WEIGHT = 0.05  # see the module docstring: same role as the published 5e-5 on VGG conv4_3


def _conv_bn_act(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.2))


class EncoderResBlock(nn.Module):
    """Two conv3x3 + BN + LReLU (hidden width min(in, out)) plus a shortcut (1x1 conv block if widths differ)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = min(c_in, c_out)
        self.conv1 = _conv_bn_act(c_in, hidden, 3)
        self.conv2 = _conv_bn_act(hidden, c_out, 3)
        self.shortcut = _conv_bn_act(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.shortcut(x)


class DomainGuidedEncoder(nn.Module):
    """IDinvert's domain-guided encoder, scaled: image (N, 3, R, R) in [-1, 1] -> W+ code (N, num_ws, w_dim).

    The output is ``w_avg + BN(FC(h))``: an offset from the generator's mean latent (buffer ``w_avg``,
    set with :meth:`set_w_avg` from the generator the encoder is trained for).

    Args:
        num_ws: rows of the generator's W+ code.
        w_dim: width of each row.
        resolution: input side R (power of two, >= 8).
        width: stem width; it doubles at each halving up to ``max_width``.
        max_width: widest residual block.
        code_channels: channels of the linear 1x1 bottleneck at 4x4 that factorises the final FC.
    """

    def __init__(self, num_ws: int, w_dim: int, resolution: int = 64, width: int = 16, max_width: int = 128,
                 code_channels: int = 16) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"DomainGuidedEncoder: resolution must be a power of two >= 8, got {resolution}")
        self.num_ws, self.w_dim, self.resolution = num_ws, w_dim, resolution
        self.width, self.max_width, self.code_channels = width, max_width, code_channels
        self.stem = _conv_bn_act(3, width, 3)
        blocks, c, r = [], width, resolution
        while r > 4:
            c_out = min(c * 2, max_width)
            blocks.append(nn.Sequential(nn.AvgPool2d(2), EncoderResBlock(c, c_out)))
            c, r = c_out, r // 2
        self.blocks = nn.Sequential(*blocks)
        self.reduce = nn.Conv2d(c, code_channels, 1, bias=False)
        self.fc = nn.Linear(code_channels * 16, num_ws * w_dim, bias=False)
        self.bn = nn.BatchNorm1d(num_ws * w_dim)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def config(self) -> dict[str, int]:
        """Constructor arguments (stored in saved files)."""
        return {"num_ws": self.num_ws, "w_dim": self.w_dim, "resolution": self.resolution, "width": self.width,
                "max_width": self.max_width, "code_channels": self.code_channels}

    @torch.no_grad()
    def set_w_avg(self, w_avg: torch.Tensor) -> None:
        """Set the mean latent (w_dim,) that the output offsets are added to."""
        if w_avg.shape != (self.w_dim,):
            raise ValueError(f"w_avg must have shape ({self.w_dim},), got {tuple(w_avg.shape)}")
        self.w_avg.copy_(w_avg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode (N, 3, R, R) images in [-1, 1] (the range is not checked: this runs every optimisation step)."""
        if x.ndim != 4 or x.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"encoder input must be (N, 3, {self.resolution}, {self.resolution}), "
                             f"got {tuple(x.shape)}")
        h = self.reduce(self.blocks(self.stem(x)))
        offset = self.bn(self.fc(h.flatten(1)))
        return offset.view(-1, self.num_ws, self.w_dim) + self.w_avg


def encode(encoder: DomainGuidedEncoder, images: torch.Tensor) -> torch.Tensor:
    """W+ codes (N, num_ws, w_dim) of (N, 3, R, R) images, resized (antialiased bilinear) to the encoder's side."""
    if images.shape[-1] != encoder.resolution:
        images = F.interpolate(images, size=(encoder.resolution,) * 2, mode="bilinear", align_corners=False,
                               antialias=True)
    return encoder(images)


def domain_regularizer(wp: torch.Tensor, generator: GeneratorLike, encoder: DomainGuidedEncoder,
                       images: torch.Tensor | None = None) -> torch.Tensor:
    """``mean((wp - E(G(wp)))^2)`` per image, (N,); differentiable in wp through both terms.

    Args:
        wp: (N, num_ws, w_dim) W+ codes.
        generator: the generator; ``G(wp)`` is its synthesis (unclamped, as in the published code).
        encoder: the domain-guided encoder (use it in eval mode so that images do not interact).
        images: ``G(wp)`` if already computed (saves a synthesis).
    """
    rec = generator.synthesis(wp) if images is None else images
    return (wp - encode(encoder, rec)).square().flatten(1).mean(1)


class IDInvert(Method):
    """Domain-regularised W+ optimisation from the domain-guided encoder's code."""

    @dataclass(frozen=True)
    class Params:
        """Hyper-parameters (defaults: idinvert_pytorch ``invert.py``; perceptual weight rescaled, see module)."""

        steps: int = 100
        lr: float = 0.01
        mse_weight: float = 1.0
        perceptual_weight: float = PERCEPTUAL_WEIGHT
        regularizer_weight: float = 2.0
        betas: tuple[float, float] = (0.9, 0.999)

    def __init__(self, name: str, params: Params, encoder: DomainGuidedEncoder | None = None) -> None:
        super().__init__(name, params)
        self.encoder = encoder

    def _checked_encoder(self, generator: GeneratorLike) -> DomainGuidedEncoder:
        enc = self.encoder
        if enc is None:
            raise ValueError(f"method {self.name!r} needs its domain-guided encoder; none was given "
                             "(pass --encoder idinvert=PATH, or train one: python -m bench.encoders.idinvert)")
        if (getattr(enc, "num_ws", None), getattr(enc, "w_dim", None)) != (generator.num_ws, generator.w_dim):
            raise ValueError(f"method {self.name!r}: the encoder outputs ({getattr(enc, 'num_ws', '?')}, "
                             f"{getattr(enc, 'w_dim', '?')}) codes, the generator takes ({generator.num_ws}, "
                             f"{generator.w_dim}); it was trained for another generator")
        return enc.eval().requires_grad_(False)  # frozen: BN on running stats keeps images independent

    def invert(self, targets: torch.Tensor, generator: GeneratorLike, *, seeds: Sequence[int],
               perceptual: PerceptualLike | None = None) -> Inversion:
        """Invert targets (N, 3, R, R) in [-1, 1]; deterministic (seeds are not needed).

        Returns:
            An :class:`Inversion` with latents ``wp`` (optimised) and ``wp_init`` (the encoder's code), both
            (N, num_ws, w_dim).
        """
        check_targets(targets, generator.resolution)
        p = self.params
        enc = self._checked_encoder(generator)
        with torch.no_grad(), full_precision(targets.device):
            wp_init = encode(enc, targets.float()).float()
        wp = wp_init.clone().requires_grad_(True)

        recon = target_loss(targets, perceptual, p.mse_weight, p.perceptual_weight)

        def loss_fn(step: int) -> torch.Tensor:
            pred = generator.synthesis(wp)
            loss = recon(pred)
            if p.regularizer_weight:
                loss = loss + p.regularizer_weight * domain_regularizer(wp, generator, enc, pred)
            return loss

        result = run_adam([wp], loss_fn, steps=p.steps, lr=p.lr, betas=p.betas)
        info = {**asdict(p), "perceptual": perceptual_note(perceptual, p.perceptual_weight),
                "encoder": {**enc.config(), "trained_steps": getattr(enc, "trained_steps", None)}}
        return self._finish({"wp": wp, "wp_init": wp_init}, result.loss, failure_reasons(result.diverged), info,
                            generator)


register_preset(Preset(
    name="idinvert", cls=IDInvert, params={}, latent_space="W+", needs_encoder=True,
    description="IDinvert: W+ from the domain-guided encoder, Adam lr 0.01, 100 steps, MSE + 0.05 perceptual "
                "(world scale of the published 5e-5 VGG) + 2 |wp - E(G(wp))|^2",
    reference="Zhu, Shen, Zhao, Zhou. In-Domain GAN Inversion for Real Image Editing. ECCV 2020",
    gpu_precisions=("tf32", "bf16")))  # both held the GPU parity test
