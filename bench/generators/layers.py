"""StyleGAN2 building blocks in pure PyTorch, named after the paper (Karras et al., CVPR 2020).

Module and parameter names follow the layout of the widely used rosinality ``.pt`` checkpoints
(``conv.weight``, ``conv.modulation``, ``noise.weight``, ``activate.bias``, ``blur.kernel``...), so that a
state dict in that format loads with strict key and shape checks. The arithmetic is written for batched
inversion: modulation scales the activations and demodulation scales the outputs, so one shared weight
serves the whole batch (a dense convolution instead of a grouped one with per-sample weights); this is the
same function as the grouped formulation up to float rounding.

No custom CUDA kernels: the FIR filters (``upfirdn``) are depthwise convolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)
LRELU_GAIN = math.sqrt(2.0)


def make_fir_kernel(taps: tuple[float, ...] = BLUR_KERNEL, gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel, normalised to sum ``gain``.

    Args:
        taps: 1-D filter taps.
        gain: sum of the returned kernel (4 for 2x upsampling, which keeps the mean).

    Returns:
        (K, K) float32 kernel.
    """
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum() * gain


def upfirdn(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, then filter with ``kernel`` (true convolution, i.e. flipped).

    Args:
        x: (N, C, H, W) features.
        kernel: (K, K) FIR kernel.
        up: integer upsampling factor.
        pad: (before, after) padding applied to both spatial axes after upsampling.

    Returns:
        (N, C, H*up + pad0 + pad1 - K + 1, same for W).
    """
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    # a contiguous depthwise weight: an expanded (stride-0) one sends cuDNN down slow paths
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, groups=c)


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale)
        out = out + self.bias * self.lr_mul
        if self.activate:
            out = F.leaky_relu(out, 0.2) * LRELU_GAIN
        return out


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) convolution, optionally with 2x upsampling."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, w_dim: int, *, demodulate: bool = True,
                 upsample: bool = False) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            # transposed 3x3 conv at stride 2 gives 2H+1; a 4-tap blur with pad (1, 1) brings it to 2H
            self.blur = Blur(gain=4.0, pad=(1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.modulation(w)  # (N, in)
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * style[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            out = self.blur(out)
        else:
            out = F.conv2d(x, weight, padding=self.kernel_size // 2)
        if self.demodulate:
            # sum_{i,k} (W_oik * s_i)^2 = (s^2) @ (sum_k W_oik^2)^T
            wsq = weight.square().sum(dim=(2, 3))  # (out, in)
            dcoef = torch.rsqrt(style.square() @ wsq.t() + 1e-8)  # (N, out)
            out = out * dcoef[:, :, None, None]
        return out


class Blur(nn.Module):
    """FIR low-pass filter with the [1, 3, 3, 1] kernel (stored as buffer ``kernel``)."""

    def __init__(self, *, gain: float = 1.0, pad: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(gain=gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip (zero insertion then the [1, 3, 3, 1] filter, gain 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(gain=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn(x, self.kernel, up=2, pad=(2, 1))


class NoiseInjection(nn.Module):
    """Adds a learned multiple of a (constant, caller-supplied) noise map."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class BiasLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU (0.2), gain sqrt(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * LRELU_GAIN


class StyledConv(nn.Module):
    """Modulated conv, then noise, bias and activation."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, *, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = BiasLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), plus the upsampled coarser RGB skip if given."""

    def __init__(self, in_ch: int, w_dim: int, *, upsample: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample()

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 constant that starts synthesis."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)
