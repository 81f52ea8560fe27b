"""StyleGAN2 building blocks in pure PyTorch, named after the paper (Karras et al., CVPR 2020).

Module and parameter names follow the layout of the widely used rosinality ``.pt`` checkpoints
(``conv.weight``, ``conv.modulation``, ``noise.weight``, ``activate.bias``, ``blur.kernel``...), so that a
state dict in that format loads with strict key and shape checks. The arithmetic is written for batched
inversion: modulation scales the activations and demodulation scales the outputs, so one shared weight
serves the whole batch (a dense convolution instead of a grouped one with per-sample weights); this is the
same function as the grouped formulation up to float rounding.

2x upsampling is written in polyphase form: the transposed 3x3 convolution at stride 2 followed by the
[1, 3, 3, 1] FIR filter is one linear map, which equals a dense 3x3 convolution of the low-resolution input
into 4 x C_out channels (one set per output phase) followed by a pixel shuffle. That runs as one ordinary
convolution on tensor cores, with no zero-filled intermediate and no separate depthwise blur, and is the
same function as the two-step form (tested against it) up to float rounding; it is used on CUDA, where it
is faster, and the two-step form on the CPU, where it is. The RGB skip's FIR
upsampling is likewise a 3-group convolution and a pixel shuffle. Other FIR filters (``upfirdn``, used by
the discriminator) are depthwise convolutions; there are no custom CUDA kernels.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)
# How the 2x up-convolution runs (all the same function; tests compare each with the naive model):
#   "auto"       polyphase on CUDA, two-step on the CPU (the faster one on each, benchmarks/RESULTS.md)
#   "polyphase"  dense 3x3 conv into 4 C_out channels + pixel shuffle
#   "two-step"   transposed 3x3 conv at stride 2, then the FIR blur
#   "transposed" one transposed 6x6 conv at stride 2 with the FIR folded in: no pixel shuffle and no
#                re-layout copy; not yet timed on the GPU (BENCH_UPCONV=transposed to try it)
UPCONV_MODES = ("auto", "polyphase", "two-step", "transposed")
UPCONV = os.environ.get("BENCH_UPCONV", "auto")
if UPCONV not in UPCONV_MODES:
    raise ValueError(f"BENCH_UPCONV={UPCONV!r}: expected one of {', '.join(UPCONV_MODES)}")
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


def _phase_taps(kernel: torch.Tensor) -> torch.Tensor:
    """(3, 3, 4, 3, 3) map P with ``W4[o, f, i] = sum_ab W[o, i, a, b] P[a, b, f]`` (see :func:`upconv_weight`).

    For a 3x3 weight W and a 4x4 FIR ``kernel`` applied (as a true convolution, like ``upfirdn``) with pad 1
    after the stride-2 transposed convolution, the fused 6x6 kernel is the full convolution of W with
    ``kernel`` and output
    phase (py, px) is the correlation, padding 1, of the low-resolution input with
    ``flip(F[py::2, px::2])``.
    """
    k = kernel.shape[-1]
    if kernel.shape != (4, 4):
        raise ValueError(f"polyphase upsampling expects a 4x4 FIR kernel, got {tuple(kernel.shape)}")
    full = kernel.new_zeros(3, 3, 6, 6)  # full[a, b] = the 6x6 response of a unit tap at (a, b)
    for a in range(3):
        for b in range(3):
            full[a, b, a : a + k, b : b + k] = kernel
    phases = [torch.flip(full[:, :, py::2, px::2], (2, 3)) for py in (0, 1) for px in (0, 1)]
    return torch.stack(phases, dim=2)  # (3, 3, 4, 3, 3)


def fused_upconv_weight(weight: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(in, out, 6, 6) weight of 'transposed 3x3 conv at stride 2, then FIR with pad 1' as one transposed conv.

    ``F.conv_transpose2d(x, fused_upconv_weight(W, K), stride=2, padding=2)`` equals
    ``upfirdn(F.conv_transpose2d(x, W.transpose(0, 1), stride=2), K, pad=(1, 1))``: the 6x6 kernel is the
    full convolution of W with K.
    """
    k = kernel.to(weight.dtype)
    full = weight.new_zeros(*weight.shape[:2], 6, 6)
    for a in range(4):
        for b in range(4):
            full[:, :, a : a + 3, b : b + 3] += k[a, b] * weight
    return full.transpose(0, 1)


def upconv_weight(weight: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Polyphase weight (4 * out, in, 3, 3) of 'transposed 3x3 conv at stride 2, then FIR with pad 1'.

    ``F.pixel_shuffle(F.conv2d(x, upconv_weight(W, K), padding=1), 2)`` equals
    ``upfirdn(F.conv_transpose2d(x, W.transpose(0, 1), stride=2), K, pad=(1, 1))``.
    """
    out_ch, in_ch = weight.shape[:2]
    taps = _phase_taps(kernel.to(weight.dtype))
    return torch.einsum("oiab,abfst->ofist", weight, taps).reshape(4 * out_ch, in_ch, 3, 3)


def upsample_weight(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """Depthwise polyphase weight (4 * C, 1, 3, 3) of ``upfirdn(x, kernel, up=2, pad=(2, 1))`` (see Upsample)."""
    # zero insertion, pad (2, 1), 4-tap filter: even outputs use taps 0 and 2 at offsets -1 and 0, odd
    # outputs taps 1 and 3 at offsets 0 and +1 (after the flip of a true convolution)
    f = torch.flip(kernel, (0, 1))
    idx = {0: ((0, 0), (1, 2)), 1: ((1, 1), (2, 3))}  # phase -> ((offset slot, tap), ...)
    w = kernel.new_zeros(2, 2, 3, 3)
    for py in (0, 1):
        for px in (0, 1):
            for sy, ty in idx[py]:
                for sx, tx in idx[px]:
                    w[py, px, sy, sx] = f[ty, tx]
    return w.reshape(4, 1, 3, 3).repeat(channels, 1, 1, 1)


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
            if kernel_size != 3:
                raise ValueError(f"upsampling modulated convolutions are 3x3, got kernel_size {kernel_size}")
            # transposed 3x3 conv at stride 2 gives 2H+1; a 4-tap blur with pad (1, 1) brings it to 2H.
            # Both run fused (UPCONV: polyphase on CUDA) or in two steps; the blur's kernel is kept as a buffer.
            self.blur = Blur(gain=4.0, pad=(1, 1))

    def modulated(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution of the style-modulated input and the demodulation coefficients (N, out), or None.

        ``forward`` is their product; :class:`StyledConv` folds the coefficients into its epilogue instead.
        The activations keep their dtype (bf16 under autocast); the coefficients are computed in float32.
        """
        style = self.modulation(w)  # (N, in)
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * style.to(x.dtype)[:, :, None, None]
        mode = UPCONV if UPCONV != "auto" else ("polyphase" if x.is_cuda else "two-step")
        if self.upsample and mode == "transposed":
            out = F.conv_transpose2d(x, fused_upconv_weight(weight, self.blur.kernel), stride=2, padding=2)
        elif self.upsample and mode == "polyphase":
            # one dense convolution on tensor cores instead of a transposed one plus a memory-bound blur
            out = F.pixel_shuffle(F.conv2d(x, upconv_weight(weight, self.blur.kernel), padding=1), 2)
            if x.is_contiguous(memory_format=torch.channels_last):
                out = out.contiguous(memory_format=torch.channels_last)
        elif self.upsample:
            # the CPU's choice: there the polyphase form's 4x multiply-adds cost more than the blur saves
            # (174 vs 130 ms per world-generator step at batch 8, benchmarks/RESULTS.md)
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.kernel_size // 2)
        if not self.demodulate:
            return out, None
        with torch.autocast(x.device.type, enabled=False):
            # sum_{i,k} (W_oik * s_i)^2 = (s^2) @ (sum_k W_oik^2)^T
            acc = torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 for gradient checks
            wsq = weight.to(acc).square().sum(dim=(2, 3))  # (out, in)
            dcoef = torch.rsqrt(style.to(acc).square() @ wsq.t() + 1e-8)  # (N, out)
        return out, dcoef

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out, dcoef = self.modulated(x, w)
        return out if dcoef is None else out * dcoef.to(out.dtype)[:, :, None, None]


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
        weight = upsample_weight(self.kernel.to(x.dtype), x.shape[1])
        return F.pixel_shuffle(F.conv2d(x, weight, padding=1, groups=x.shape[1]), 2)


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
    """Modulated conv, then noise, bias and activation (then an optional clamp to [-clamp, clamp])."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, *, upsample: bool = False,
                 clamp: float | None = None) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = BiasLeakyReLU(out_ch)
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``activate(noise(conv(x, w)))`` in two elementwise passes: one multiply-add, one leaky ReLU.

        With out, d = the modulated convolution and its demodulation coefficients, and g = sqrt(2) > 0,
        ``g * lrelu(out * d + a * noise + b) = lrelu(out * (g d) + g (a * noise + b))``.
        """
        out, dcoef = self.conv.modulated(x, w)
        shift = (self.activate.bias[None, :, None, None] + self.noise.weight * noise) * LRELU_GAIN
        if out.is_contiguous(memory_format=torch.channels_last):
            shift = shift.contiguous(memory_format=torch.channels_last)
        scale = (dcoef * LRELU_GAIN).to(out.dtype)[:, :, None, None]
        out = F.leaky_relu(torch.addcmul(shift.to(out.dtype), out, scale), 0.2)
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), plus the upsampled coarser RGB skip if given.

    With ``clamp``, the layer's own output (before the skip is added) is clamped to [-clamp, clamp], as
    NVIDIA's ``conv_clamp`` does.
    """

    def __init__(self, in_ch: int, w_dim: int, *, upsample: bool = True, clamp: float | None = None) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp
        if upsample:
            self.upsample = Upsample()

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """The RGB path runs in float32 even under bf16 autocast (3 output channels: cheap).

        In bf16 the image's running sum has a spacing of 2^-7 near 1, and rounding each layer's RGB output and
        the upsampled skip shifted the optimisation: under the CPU's bf16 autocast (24 faces, 200 steps),
        F/W+ 16x16's mean final loss moved by +0.22 dB with a bf16 RGB path and by +0.05 dB with this one,
        Im2S's by at most 0.127 and 0.067 dB per image (scripts/bf16_emulation.py, benchmarks/RESULTS.md).
        """
        acc = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for gradient checks
        with torch.autocast(x.device.type, enabled=False):
            out = self.conv(x.to(acc), w.to(acc)) + self.bias
            if self.clamp is not None:
                out = out.clamp(-self.clamp, self.clamp)
            if skip is not None:
                out = out + self.upsample(skip.to(acc))
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 constant that starts synthesis."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)
