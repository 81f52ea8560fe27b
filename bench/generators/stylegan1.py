"""StyleGAN (v1) generator in pure PyTorch, behind the same interface as :class:`StyleGAN2Generator`.

Karras et al., CVPR 2019, as released (and as genforce and BDInvert run it): a mapping network of dense
layers with gain sqrt(2) and leaky ReLU; a synthesis network of 2 layers per resolution, each
``conv -> noise -> bias -> lrelu(0.2) -> instance norm -> AdaIN``; the first starts from a learned 4x4
constant, the up-layers upsample 2x (nearest + 3x3 conv below 128 px, a fused transposed 4x4 conv from
128 px on) and blur with the [1, 2, 1] filter; one 1x1 ToRGB at the end (``tanh`` after it for IDinvert's
models). Layer i uses ``ws[:, i]``; there are ``num_ws = 2 * log2(R) - 2`` of them. Noise is constant
(``noises.noise_i``), so the same ws always give the same image.

F/W+ split, following BDInvert's StyleGAN v1 support (``models/stylegan_generator.py``): for base size
s = 2^n the base layer is M = 2n - 4 (``x02`` for 8x8, ``x04`` for 16x16); ``features(ws, s)`` is the output
of layer M (after AdaIN), and ``synthesis_from(f, ws, s)`` puts f in place of layer M's activation, before
its instance norm and AdaIN (which still use ``ws[:, M]``), and runs the rest. Instance norm of an
AdaIN-ed map gives back the normalised map wherever the AdaIN scale is positive, so
``synthesis_from(features(ws, s), ws, s)`` reproduces ``synthesis(ws)`` there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.generators.stylegan2 import ChannelsDict

LRELU_SLOPE = 0.2
FUSED_MIN_RES = 128  # genforce / NVIDIA fused_scale='auto'


def stylegan1_channels(resolution: int, fmaps_base: int = 8192, fmaps_max: int = 512) -> dict[int, int]:
    """StyleGAN v1's channel schedule ``min(fmaps_base // res, fmaps_max)``."""
    return {2**i: min(fmaps_base // 2**i, fmaps_max) for i in range(2, int(math.log2(resolution)) + 1)}


@dataclass(frozen=True)
class StyleGAN1Config(ChannelsDict):
    """Architecture of a StyleGAN v1 generator.

    Attributes:
        resolution: output side, a power of two >= 8.
        w_dim: w dimension.
        n_mlp: mapping layers.
        channels: feature channels per resolution, keys 4..resolution.
        z_dim: z dimension (``None``: ``w_dim``).
        mapping_hidden: width of the hidden mapping layers (``None``: ``w_dim``).
        lr_mlp: mapping learning-rate multiplier (0.01).
        fused_min_res: up-layers at this resolution and above use the fused transposed convolution.
        final_tanh: ``tanh`` on the output (IDinvert's models).
    """

    resolution: int
    w_dim: int = 512
    n_mlp: int = 8
    channels: dict[int, int] = field(default_factory=dict)
    z_dim: int | None = None
    mapping_hidden: int | None = None
    lr_mlp: float = 0.01
    fused_min_res: int = FUSED_MIN_RES
    final_tanh: bool = False

    def __post_init__(self) -> None:
        log = math.log2(self.resolution) if self.resolution > 0 else -1
        if log != int(log) or self.resolution < 8:
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if not self.channels:
            object.__setattr__(self, "channels", stylegan1_channels(self.resolution))
        for name in ("z_dim", "mapping_hidden"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.w_dim)
        missing = [2**i for i in range(2, int(log) + 1) if 2**i not in self.channels]
        if missing:
            raise ValueError(f"channels has no entry for resolutions {missing}: {self.channels}")



class ScaledDense(nn.Module):
    """Dense layer with run-time weight scaling ``gain * lr_mul / sqrt(in)``, optionally leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, *, gain: float = math.sqrt(2.0), lr_mul: float = 1.0,
                 activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        # (gain / sqrt(in)) * lr_mul in this order: the released implementations round it so
        self.scale, self.lr_mul, self.activate = gain / math.sqrt(in_dim) * lr_mul, lr_mul, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, LRELU_SLOPE) if self.activate else out


class PixelNorm(nn.Module):
    """Normalise each latent to unit root-mean-square, as ``x / sqrt(mean(x^2) + 1e-8)`` (the released rounding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample, per-channel normalisation to zero mean and unit root-mean-square."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x / torch.sqrt(x.square().mean(dim=(2, 3), keepdim=True) + eps)


def blur121(x: torch.Tensor) -> torch.Tensor:
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 low-pass filter, zero padding 1."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(x, k, padding=1, groups=x.shape[1])


class StyleLayer(nn.Module):
    """One synthesis layer: [upsample] conv, noise, bias, lrelu (the activation), then instance norm + AdaIN.

    ``mode``: ``const`` (the 4x4 start, no convolution), ``conv`` (3x3), ``up`` (nearest 2x + 3x3) or
    ``up-fused`` (a 4x4 transposed convolution at stride 2, the 3x3 kernel summed over its 4 shifts).
    """

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode != "const":
            self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
            self.scale = math.sqrt(2.0) / math.sqrt(in_ch * 9)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_weight = nn.Parameter(torch.zeros(out_ch))
        self.style = ScaledDense(w_dim, 2 * out_ch, gain=1.0, activate=False)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        if self.mode == "conv":
            return F.conv2d(x, w, padding=1)
        if self.mode == "up":
            return blur121(F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, padding=1))
        w4 = F.pad(w, (1, 1, 1, 1))
        w4 = w4[:, :, 1:, 1:] + w4[:, :, :-1, 1:] + w4[:, :, 1:, :-1] + w4[:, :, :-1, :-1]
        return blur121(F.conv_transpose2d(x, w4.transpose(0, 1), stride=2, padding=1))

    def activation(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``lrelu(conv(x) + noise * noise_weight + bias)``; ``x`` is the constant for the first layer."""
        x = x if self.mode == "const" else self._conv(x)
        x = x + noise * self.noise_weight[None, :, None, None] + self.bias[None, :, None, None]
        return F.leaky_relu(x, LRELU_SLOPE)

    def adain(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Instance norm, then the style of ``w``: ``x * (1 + scale) + shift``."""
        scale, shift = self.style(w)[:, :, None, None].chunk(2, dim=1)
        return instance_norm(x) * (scale + 1.0) + shift

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.adain(self.activation(x, noise), w)


class StyleGAN1Generator(nn.Module):
    """StyleGAN v1 implementing the benchmark's generator interface (see the module docstring)."""

    family = "stylegan1"

    def __init__(self, config: StyleGAN1Config, *, noise_seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.w_dim, self.z_dim = config.w_dim, int(config.z_dim)
        self.log_size = int(math.log2(config.resolution))
        self.num_ws = self.num_layers = 2 * self.log_size - 2
        widths = [self.z_dim] + [int(config.mapping_hidden)] * (config.n_mlp - 1) + [config.w_dim]
        self.style = nn.Sequential(PixelNorm(), *[ScaledDense(widths[i], widths[i + 1], lr_mul=config.lr_mlp)
                                                  for i in range(config.n_mlp)])
        ch = config.channels
        self.const = nn.Parameter(torch.ones(1, ch[4], 4, 4))
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            r = 2 ** (i // 2 + 2)
            mode = "const" if i == 0 else "conv" if i % 2 else "up-fused" if r >= config.fused_min_res else "up"
            self.layers.append(StyleLayer(ch[r // 2] if mode.startswith("up") else ch[r], ch[r], config.w_dim, mode))
        self.to_rgb = nn.Conv2d(ch[config.resolution], 3, 1)
        nn.init.normal_(self.to_rgb.weight)
        nn.init.zeros_(self.to_rgb.bias)
        self.noises = nn.Module()
        gen = torch.Generator().manual_seed(noise_seed)
        for i in range(self.num_layers):
            r = 2 ** (i // 2 + 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r, generator=gen))
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        self.description = f"StyleGAN v1 {config.resolution}px, w_dim {config.w_dim}"

    # ----------------------------------------------------------------------------------- mapping
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Map z (N, z_dim) to w (N, w_dim), with optional truncation towards ``w_avg`` (all layers)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        w = self.style(z)
        if truncation_psi != 1.0:
            w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w

    def truncate(self, w: torch.Tensor, psi: float, layers: int | None = None) -> torch.Tensor:
        """W+ codes (N, num_ws, w_dim) of w with rows < ``layers`` (all if ``None``) moved towards ``w_avg``.

        StyleGAN v1's sampling default is psi 0.7 on the first 8 layers.
        """
        ws = w[:, None].repeat(1, self.num_ws, 1)
        rows = self.num_ws if layers is None else min(int(layers), self.num_ws)
        coefs = torch.ones(self.num_ws, dtype=w.dtype, device=w.device)
        coefs[:rows] = psi  # one float32 coefficient per row, like genforce's truncation buffer
        return self.w_avg + (ws - self.w_avg) * coefs[None, :, None]

    @torch.no_grad()
    def compute_w_avg(self, n: int = 10_000, seed: int = 0) -> torch.Tensor:
        """Set ``w_avg`` to the mean of ``mapping(z)`` over n seeded samples and return it."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed))
        self.w_avg.copy_(self.mapping(z.to(self.w_avg.device)).mean(0))
        return self.w_avg

    # --------------------------------------------------------------------------------- synthesis
    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")

    def _base_layer(self, res: int) -> int:
        n = int(math.log2(res)) if res > 0 else -1
        if 2**n != res or not 8 <= res <= self.resolution:
            raise ValueError(f"base resolution must be a power of two in [8, {self.resolution}], got {res}")
        return 2 * n - 4

    def _layer(self, i: int, x: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        return self.layers[i](x, ws[:, i], getattr(self.noises, f"noise_{i}"))

    def _run(self, x: torch.Tensor, ws: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for i in range(start, stop):
            x = self._layer(i, x, ws)
        return x

    def _to_image(self, x: torch.Tensor) -> torch.Tensor:
        img = F.conv2d(x, self.to_rgb.weight * (1.0 / math.sqrt(x.shape[1]))) + self.to_rgb.bias[None, :, None, None]
        return torch.tanh(img) if self.config.final_tanh else img

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Render ws (N, num_ws, w_dim) to images (N, 3, R, R) with the constant noise maps."""
        self._check_ws(ws)
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        return self._to_image(self._run(x, ws, 0, self.num_layers))

    def features(self, ws: torch.Tensor, res: int) -> torch.Tensor:
        """The F/W+ base code at ``res``: layer M's output after AdaIN (BDInvert's ``x{M}``)."""
        self._check_ws(ws)
        m = self._base_layer(res)
        return self._run(self.const.expand(ws.shape[0], -1, -1, -1), ws, 0, m + 1)

    def synthesis_from(self, f: torch.Tensor, ws: torch.Tensor, res: int) -> torch.Tensor:
        """Render with f as layer M's activation (then its instance norm and AdaIN with ws[M]); uses ws[M:]."""
        self._check_ws(ws)
        m = self._base_layer(res)
        expected = self.feature_shape(res)
        if f.ndim != 4 or tuple(f.shape[1:]) != expected or f.shape[0] != ws.shape[0]:
            raise ValueError(f"f must have shape (N, {expected}) with N = {ws.shape[0]}, got {tuple(f.shape)}")
        x = self.layers[m].adain(f, ws[:, m])
        return self._to_image(self._run(x, ws, m + 1, self.num_layers))

    def first_ws_index(self, res: int) -> int:
        """M, the first ws row that ``synthesis_from(f, ws, res)`` uses (2*log2(res) - 4)."""
        return self._base_layer(res)

    def feature_shape(self, res: int) -> tuple[int, int, int]:
        """(C, res, res) of the base code at ``res``."""
        self._base_layer(res)
        return (self.config.channels[res], res, res)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Sample images from z (N, z_dim): one w broadcast to all layers."""
        w = self.mapping(z, truncation_psi)
        return self.synthesis(w[:, None].expand(-1, self.num_ws, -1))
