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
is faster, and the two-step form on the CPU, where it is. The "stencil" form (an experiment, not the default:
``BENCH_COMPILED_UPCONV=stencil`` in compiled graphs on CUDA, ``BENCH_UPCONV=stencil`` everywhere) keeps the
transposed convolution, with a quarter of the polyphase form's multiply-adds, and writes the FIR as shifted
sums (:func:`fir_shifted`) that a compiled graph fuses into the epilogue; timed compiled on an H100 it was
no faster at 1024² (+0.5 %) and 5 % slower on the 256 px world (benchmarks/RESULTS.md, session 18). The RGB skip's FIR
upsampling is likewise a 3-group convolution and a pixel shuffle; in a compiled graph, ``COMPILED_RGB`` can
write it as shifted sums (:func:`upsample_pointwise`) and the RGB layer's 1x1 convolution as a per-pixel dot
product (:func:`modulated_rgb_pointwise`), for Inductor to make its own kernels of (an experiment, not the
default). A third form, per-image bf16 matrix products with float32 sums and output, was 14 % slower on the
256 px world and 28 % slower at 1024² (benchmarks/RESULTS.md, session 19) and was taken out. Other FIR
filters (``upfirdn``, used by the discriminator) are depthwise convolutions; there are no custom CUDA kernels.

Inversion keeps the generator's weights frozen, so autograd need not keep what only a weight gradient would
use. With frozen weights the styled convolution (modulate, convolve, demodulate, noise, bias, leaky ReLU)
and the RGB layer run as autograd functions (:class:`StyledConvFn`, :class:`ModulatedRGBFn`) that keep, per
layer, only the convolution's output and the layer's input and output (which the neighbouring layers keep
anyway), with the backward pass written out; plain autograd kept also the modulated input and the
pre-activation, and under bf16 a float32 copy of each RGB layer's input: 1457 against 582 MiB per image at
1024 px, batch 2 (``scripts/saved_memory.py``, benchmarks/RESULTS.md). Trainable weights (the world's
training) take the plain autograd path; ``BENCH_LEAN_BACKWARD=0`` forces it. Both are the same function, and their
gradients agree to float64 rounding (tests/generators/test_lean_backward.py). With ``BENCH_FUSED_STYLED=1`` the
frozen styled layers of at most 64 channels and the RGB layers run under bf16 on CUDA as Triton kernels that keep
the pointwise work in registers (:mod:`bench.generators.fused_styled`; an experiment, not yet timed on a GPU).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from bench.generators import fused_styled

BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)
# How the 2x up-convolution runs (all the same function; tests compare each with the naive model):
#   "auto"       polyphase on CUDA, two-step on the CPU (the faster one on each, benchmarks/RESULTS.md)
#   "polyphase"  dense 3x3 conv into 4 C_out channels + pixel shuffle
#   "two-step"   transposed 3x3 conv at stride 2, then the FIR blur
#   "transposed" one transposed 6x6 conv at stride 2 with the FIR folded in: no pixel shuffle and no
#                re-layout copy; not yet timed on the GPU (BENCH_UPCONV=transposed to try it)
#   "stencil"    the transposed 3x3 conv at stride 2, then the FIR as 16 shifted multiply-adds (fir_shifted),
#                for a compiled graph, where Inductor fuses them into the pointwise work around: a quarter of
#                the polyphase form's multiply-adds, with no blur pass of its own (BENCH_UPCONV=stencil);
#                compiled on an H100: +0.5 % at 1024², -5 % on the 256 px world, so not the default
UPCONV_MODES = ("auto", "polyphase", "two-step", "transposed", "stencil")
UPCONV = os.environ.get("BENCH_UPCONV", "auto")
if UPCONV not in UPCONV_MODES:
    raise ValueError(f"BENCH_UPCONV={UPCONV!r}: expected one of {', '.join(UPCONV_MODES)}")
# The form "auto" gives the up-convolutions inside a compiled graph on CUDA (eager steps and renders keep
# polyphase there): "polyphase" (the default, the fastest timed) or "stencil" (a quarter of the multiply-adds,
# no faster when timed; BENCH_COMPILED_UPCONV=stencil to try it in real runs), or another explicit form
COMPILED_UPCONV = os.environ.get("BENCH_COMPILED_UPCONV", "polyphase")
if COMPILED_UPCONV not in UPCONV_MODES[1:]:
    raise ValueError(f"BENCH_COMPILED_UPCONV={COMPILED_UPCONV!r}: expected one of {', '.join(UPCONV_MODES[1:])}")
# How a compiled graph computes the RGB path (the same function; tests compare the forms):
#   "cudnn"     as eager: the 1x1 convolution and the skip's 3-group convolution run as cuDNN kernels (default:
#               the measured one)
#   "upsample"  the skip's upsampling as shifted sums (upsample_pointwise), fused by Inductor: an experiment
#   "pointwise" that, and the 1x1 convolution as a per-pixel dot product (modulated_rgb_pointwise): slower at
#               1024 px on an H100 (244 against 276 image-steps/s, benchmarks/RESULTS.md, session 16)
COMPILED_RGB_MODES = ("cudnn", "upsample", "pointwise")
COMPILED_RGB = os.environ.get("BENCH_COMPILED_RGB", "cudnn")
if COMPILED_RGB not in COMPILED_RGB_MODES:
    raise ValueError(f"BENCH_COMPILED_RGB={COMPILED_RGB!r}: expected one of {', '.join(COMPILED_RGB_MODES)}")
LRELU_GAIN = math.sqrt(2.0)
LEAN_BACKWARD = os.environ.get("BENCH_LEAN_BACKWARD", "1") != "0"


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


def fir_shifted(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``upfirdn(x, kernel, pad=pad)`` (no upsampling) as K x K shifted multiply-adds, for Inductor to fuse.

    A depthwise convolution is a cuDNN call that a compiled graph cannot fuse with anything; written as sums of
    shifted slices it becomes part of the pointwise kernel around it. Summed in float32 (float64 stays float64)
    and rounded once to ``x``'s dtype, compiled or not.
    """
    k = kernel.shape[-1]
    acc = torch.promote_types(x.dtype, torch.float32)
    taps = torch.flip(kernel, (0, 1)).to(acc)  # a true convolution, as upfirdn's
    xp = F.pad(x, (pad[0], pad[1], pad[0], pad[1])).to(acc)
    h, w = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    out = None
    for a in range(k):
        for b in range(k):
            term = taps[a, b] * xp[:, :, a : a + h, b : b + w]
            out = term if out is None else out + term
    return out.to(x.dtype)


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


def _built_once(module: nn.Module, key: tuple, tensors: tuple[torch.Tensor, ...], build):  # noqa: ANN001, ANN202
    """``build()``, kept on ``module`` for ``key`` while ``tensors`` keep their storage and version counter.

    For what a frozen generator derives from its weights at every call: a state-dict load, an in-place
    change or a move to another device or dtype gives the tensors a new storage or version, so ``build``
    runs again. Under ``torch.compile`` nothing is kept: the graph computes (and folds) it.
    """
    if torch.compiler.is_compiling():
        return build()
    key = key + tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
    cache = module.__dict__.setdefault("_built_once", {})
    if key not in cache:
        if len(cache) >= 4:  # stale entries (another device, dtype or weight version)
            cache.clear()
        with torch.no_grad():
            cache[key] = build()
    return cache[key]


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

    def conv_mode(self, x: torch.Tensor) -> str:
        """How this layer's convolution runs on ``x``'s device: "plain", or an up-conv mode of UPCONV_MODES."""
        if not self.upsample:
            return "plain"
        if UPCONV != "auto":
            return UPCONV
        if not x.is_cuda:
            return "two-step"
        return COMPILED_UPCONV if torch.compiler.is_compiling() else "polyphase"

    def conv_weight(self, mode: str) -> torch.Tensor:
        """The scaled weight in the layout that :func:`conv` takes for ``mode``."""
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        if mode == "transposed":
            return fused_upconv_weight(weight, self.blur.kernel)
        if mode == "polyphase":
            return upconv_weight(weight, self.blur.kernel)
        if mode in ("two-step", "stencil"):
            return weight.transpose(0, 1)
        return weight

    def _weight_square_sums(self) -> torch.Tensor:
        """(out, in) sums over the kernel of the squared scaled weight, in float32 (float64 for float64 checks)."""
        weight = self.weight[0] * self.scale
        return weight.to(torch.promote_types(weight.dtype, torch.float32)).square().sum(dim=(2, 3))

    def frozen(self, mode: str, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``conv_weight(mode)`` (cast to ``dtype``) and the demodulation's square sums, built once while frozen.

        Inversion never changes the generator's weights, so rebuilding them at every step only costs
        dispatch: about ten operations per layer (:func:`_built_once`).
        """
        def build() -> tuple[torch.Tensor, torch.Tensor]:
            weight = self.conv_weight(mode)
            return (weight if dtype is None else weight.to(dtype)), self._weight_square_sums()

        tensors = (self.weight, self.blur.kernel) if self.upsample else (self.weight,)
        return _built_once(self, (mode, dtype), tensors, build)

    def demodulation(self, style: torch.Tensor, square_sums: torch.Tensor | None = None) -> torch.Tensor:
        """Demodulation coefficients (N, out), computed in float32 (float64 for float64 gradient checks)."""
        wsq = self._weight_square_sums() if square_sums is None else square_sums
        with torch.autocast(style.device.type, enabled=False):
            # sum_{i,k} (W_oik * s_i)^2 = (s^2) @ (sum_k W_oik^2)^T
            return torch.rsqrt(style.to(wsq.dtype).square() @ wsq.t() + 1e-8)

    def modulated(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution of the style-modulated input and the demodulation coefficients (N, out), or None.

        ``forward`` is their product; :class:`StyledConv` folds the coefficients into its epilogue instead.
        The activations keep their dtype (bf16 under autocast); the coefficients are computed in float32.
        """
        style = self.modulation(w)  # (N, in)
        mode = self.conv_mode(x)
        out = conv(x * style.to(x.dtype)[:, :, None, None], self.conv_weight(mode), mode,
                   self.blur.kernel if self.upsample else None)
        return out, (self.demodulation(style) if self.demodulate else None)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out, dcoef = self.modulated(x, w)
        return out if dcoef is None else out * dcoef.to(out.dtype)[:, :, None, None]


def conv(x: torch.Tensor, weight: torch.Tensor, mode: str, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """The modulated layer's (linear) convolution of ``x`` with ``weight`` from :meth:`ModulatedConv2d.conv_weight`.

    The up-conv modes are one function (transposed 3x3 at stride 2, then the FIR ``kernel`` with pad 1):
    "polyphase" a dense 3x3 conv into 4 C_out channels and a pixel shuffle (one convolution on tensor
    cores instead of a transposed one plus a memory-bound blur), "two-step" the transposed conv then the
    blur (the CPU's choice: there the polyphase form's 4x multiply-adds cost more than the blur saves, 174
    vs 130 ms per world-generator step at batch 8, benchmarks/RESULTS.md), "transposed" one 6x6
    transposed conv, "stencil" the transposed conv then the FIR as shifted sums (:func:`fir_shifted`).
    """
    if mode == "plain":
        return F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if mode == "polyphase":
        out = F.pixel_shuffle(F.conv2d(x, weight, padding=1), 2)
        if x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out
    if mode == "transposed":
        return F.conv_transpose2d(x, weight, stride=2, padding=2)
    if mode == "two-step":
        return upfirdn(F.conv_transpose2d(x, weight, stride=2), kernel, pad=(1, 1))
    if mode == "stencil":
        return fir_shifted(F.conv_transpose2d(x, weight, stride=2), kernel, pad=(1, 1))
    raise ValueError(f"unknown convolution mode {mode!r}")


def conv_input_grad(g: torch.Tensor, weight: torch.Tensor, mode: str,
                    kernel: torch.Tensor | None = None) -> torch.Tensor:
    """The adjoint of :func:`conv` applied to ``g``: the gradient with respect to its input."""
    if mode == "plain":
        return F.conv_transpose2d(g, weight, padding=weight.shape[-1] // 2)
    if mode == "polyphase":
        return F.conv_transpose2d(F.pixel_unshuffle(g, 2), weight, padding=1)
    if mode == "transposed":
        return F.conv2d(g, weight, stride=2, padding=2)
    if mode == "two-step":  # the blur's adjoint (a transposed depthwise conv that crops the pad), then the conv's
        c = g.shape[1]
        blur = torch.flip(kernel, (0, 1)).to(g.dtype)[None, None].repeat(c, 1, 1, 1)
        return F.conv2d(F.conv_transpose2d(g, blur, padding=1, groups=c), weight, stride=2)
    if mode == "stencil":  # the blur's adjoint is the FIR of the flipped kernel with the complementary pad
        k = kernel.shape[-1]
        return F.conv2d(fir_shifted(g, torch.flip(kernel, (0, 1)), pad=(k - 2, k - 2)), weight, stride=2)
    raise ValueError(f"unknown convolution mode {mode!r}")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a convolution of ``x`` in (``x``'s own outside autocast or for float64)."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and x.dtype != torch.float64:
        return torch.get_autocast_dtype(device)
    return x.dtype


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    dims = tuple(i for i, (a, b) in enumerate(zip(t.shape, shape, strict=True)) if b == 1 and a != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


class StyledConvFn(torch.autograd.Function):
    """``clamp(lrelu(conv(x * s, W) * scale + shift))`` for a frozen W, keeping only conv's output for backward.

    Forward is the same arithmetic as :meth:`StyledConv.forward`'s plain path, op for op (bit-identical).
    Backward keeps ``x``, the output ``y`` (whose sign and clamp give the activation's derivative; both are
    the neighbouring layers' activations, kept by them anyway) and the convolution's output (for the
    gradient of ``scale``), not the modulated input or the pre-activation. ``W`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, x, style, weight, scale, shift, mode, kernel, clamp):  # noqa: ANN001, D102
        cdt = _compute_dtype(x)
        weight = weight.to(cdt)
        with torch.autocast(x.device.type, enabled=False):
            out = conv((x * style.to(x.dtype)[:, :, None, None]).to(cdt), weight, mode, kernel)
            if out.is_contiguous(memory_format=torch.channels_last):
                shift = shift.contiguous(memory_format=torch.channels_last)
            y = F.leaky_relu(torch.addcmul(shift.to(out.dtype), out, scale.to(out.dtype)[:, :, None, None]), 0.2)
            if clamp is not None:
                y = y.clamp(-clamp, clamp)
        ctx.save_for_backward(x, style, weight, scale, out, y, kernel)
        ctx.mode, ctx.clamp, ctx.shift_shape, ctx.shift_dtype = mode, clamp, shift.shape, shift.dtype
        return y

    @staticmethod
    def backward(ctx, gy):  # noqa: ANN001, D102
        x, style, weight, scale, out, y, kernel = ctx.saved_tensors
        need_x, need_style, _, need_scale, need_shift = ctx.needs_input_grad[:5]
        gy = gy.to(y.dtype)
        # y > 0 exactly where the pre-activation is; one kernel, bit-identical to where(y > 0, gy, gy * 0.2),
        # which took three passes (the comparison, the product, the select): 11 % of a 256 px world step's bytes
        gz = torch.ops.aten.leaky_relu_backward(gy, y, 0.2, True)
        if ctx.clamp is not None:  # clamp passes the gradient inside the range (at its edge too, unlike here)
            gz = gz * (y.abs() < ctx.clamp).to(y.dtype)
        acc = torch.promote_types(gz.dtype, torch.float32)  # sums in float32 (float64 in gradient checks)
        g_scale = (gz * out).sum(dim=(2, 3), dtype=acc).to(scale.dtype) if need_scale else None
        g_shift = _sum_to(gz, ctx.shift_shape).to(ctx.shift_dtype) if need_shift else None
        g_x = g_style = None
        if need_x or need_style:
            g_xs = conv_input_grad(gz * scale.to(gz.dtype)[:, :, None, None], weight, ctx.mode, kernel)
            if need_style:
                g_style = (g_xs * x.to(g_xs.dtype)).sum(dim=(2, 3), dtype=acc).to(style.dtype)
            if need_x:
                g_x = (g_xs * style.to(g_xs.dtype)[:, :, None, None]).to(x.dtype)
        return g_x, g_style, None, g_scale, g_shift, None, None, None


class ModulatedRGBFn(torch.autograd.Function):
    """``conv1x1(x * s, W)`` in ``W``'s dtype (float32 under bf16 autocast) for a frozen W, keeping ``x`` as it is.

    Plain autograd kept a float32 copy of ``x`` and of ``x * s``: at 1024 px, 256 MiB per image.
    """

    @staticmethod
    def forward(ctx, x, style, weight):  # noqa: ANN001, D102
        ctx.save_for_backward(x, style, weight)
        if torch.promote_types(x.dtype, weight.dtype) == weight.dtype:
            # one pass: the product promotes x exactly (bf16 -> float32), as the cast-then-multiply did in two
            return F.conv2d(x * style.to(weight.dtype)[:, :, None, None], weight)
        return F.conv2d(x.to(weight.dtype) * style[:, :, None, None], weight)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, D102
        x, style, weight = ctx.saved_tensors
        g_xs = F.conv_transpose2d(g.to(weight.dtype), weight)
        g_style = (g_xs * x).sum(dim=(2, 3)).to(style.dtype) if ctx.needs_input_grad[1] else None
        g_x = (g_xs * style[:, :, None, None]).to(x.dtype) if ctx.needs_input_grad[0] else None
        return g_x, g_style, None


def modulated_rgb_pointwise(x: torch.Tensor, style: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """:class:`ModulatedRGBFn`'s ``conv1x1(x * s, W)`` as a dot product over channels at each pixel, for Inductor.

    Compiled, the convolution runs as cuDNN's TF32 kernels with float32 layout transforms around them, and its
    backward materialises a float32 gradient for every input channel. Written as a product and a sum (float32
    products and sums of the bf16 ``x``), Inductor makes reductions of it instead, and chooses what autograd
    keeps. Measured with :func:`upsample_pointwise` on an H100, it made the compiled config-f 1024² step 11.5 %
    slower and 9 % bigger (``BENCH_COMPILED_RGB=pointwise``; benchmarks/RESULTS.md, session 16).
    """
    wn = style[:, None, :] * weight[None, :, :, 0, 0]  # (N, out, in), W's dtype (float32)
    prod = x.permute(0, 2, 3, 1)[:, :, :, None, :] * wn[:, None, None]  # (N, H, W, out, in), promoted to float32
    return prod.sum(-1).permute(0, 3, 1, 2)


def upsample_pointwise(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """:class:`Upsample`'s polyphase convolution as shifted sums, for Inductor to fuse into one kernel.

    ``taps``: (4, 3, 3), one channel's block of :func:`upsample_weight` (phase ``2 py + px``). Output pixel
    (2a + py, 2b + px) is the sum over its phase's four non-zero taps, at slots (py + sy, px + sx) for sy, sx
    in {0, 1}, of the taps times the input padded by 1 at (a + py + sy, b + px + sx): the same sums as the
    3x3 convolution with padding 1 and its pixel shuffle. Compiled, that convolution is cuDNN's grouped direct
    kernel on a 3-channel float32 image (5 % of a profile of the 256 px world's compiled step; benchmarks/
    RESULTS.md, session 15). Not yet timed on its own (``BENCH_COMPILED_RGB=upsample``).
    """
    n, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1))
    # each phase correlates its (h + 1, w + 1) window of the padded input with its 2x2 block of taps
    phases = [fir_shifted(xp[:, :, py : py + h + 1, px : px + w + 1],
                          torch.flip(taps[2 * py + px, py : py + 2, px : px + 2], (0, 1)))
              for py in (0, 1) for px in (0, 1)]
    out = torch.stack(phases, dim=-1).view(n, c, h, w, 2, 2)  # (..., py, px)
    return out.permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


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
        # the polyphase weight for RGB, built once: building it is 16 element copies, which had been about
        # 460 of the 1430 operations an Im2S step dispatches on the 64 px world (scripts/dispatch_count.py)
        self.register_buffer("rgb_weight", upsample_weight(self.kernel, 3), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def refresh(self) -> None:
        """Rebuild the cached RGB weight from ``kernel`` (after a state dict is loaded)."""
        with torch.no_grad():
            self.rgb_weight = upsample_weight(self.kernel, 3).to(self.rgb_weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if COMPILED_RGB != "cudnn" and torch.compiler.is_compiling():  # one channel's taps serve every channel
            return upsample_pointwise(x, upsample_weight(self.kernel, 1)[:, 0].to(x.dtype))
        c = x.shape[1]
        weight = self.rgb_weight if c == 3 else upsample_weight(self.kernel, c)
        return F.pixel_shuffle(F.conv2d(x, weight.to(x.dtype), padding=1, groups=c), 2)


def _refresh_after_load(module: nn.Module, _keys: object) -> None:
    module.refresh()


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
        layer = self.conv
        shift = self._shift(noise)
        if LEAN_BACKWARD and not layer.weight.requires_grad:
            style = layer.modulation(w)
            mode = layer.conv_mode(x)
            cdt = _compute_dtype(x)
            if self._fusable(x, cdt, mode, noise):
                return self._fused(x, style, cdt, mode, noise)
            weight, square_sums = layer.frozen(mode, cdt)
            return StyledConvFn.apply(x, style, weight, layer.demodulation(style, square_sums) * LRELU_GAIN,
                                      shift, mode, layer.blur.kernel if layer.upsample else None, self.clamp)
        out, dcoef = layer.modulated(x, w)
        if out.is_contiguous(memory_format=torch.channels_last):
            shift = shift.contiguous(memory_format=torch.channels_last)
        scale = (dcoef * LRELU_GAIN).to(out.dtype)[:, :, None, None]
        out = F.leaky_relu(torch.addcmul(shift.to(out.dtype), out, scale), 0.2)
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)

    def _fusable(self, x: torch.Tensor, compute_dtype: torch.dtype, mode: str, noise: torch.Tensor) -> bool:
        """Whether this frozen layer runs as :mod:`bench.generators.fused_styled`'s kernels (BENCH_FUSED_STYLED=1)."""
        layer = self.conv
        if not fused_styled.supported(x, compute_dtype, layer.in_ch, layer.out_ch, layer.kernel_size, mode):
            return False
        side = x.shape[-1] * (2 if layer.upsample else 1)
        frozen = not (self.activate.bias.requires_grad or self.noise.weight.requires_grad or noise.requires_grad)
        return frozen and noise.numel() == side * side and x.shape[-2] == x.shape[-1]

    def _fused(self, x: torch.Tensor, style: torch.Tensor, compute_dtype: torch.dtype, mode: str,
               noise: torch.Tensor) -> torch.Tensor:
        """The layer as :func:`bench.generators.fused_styled.styled_conv` (the same function, fewer roundings)."""
        layer, gain = self.conv, LRELU_GAIN

        def build() -> tuple[torch.Tensor, ...]:
            weight, square_sums = layer.frozen(mode, compute_dtype)
            return (fused_styled.weight_taps(weight), square_sums, (self.activate.bias * gain).float(),
                    (self.noise.weight * noise.reshape(noise.shape[-2:]) * gain).float().contiguous())

        tensors = (layer.weight, self.activate.bias, self.noise.weight, noise)
        taps, square_sums, bias, shift = _built_once(self, ("fused", mode, compute_dtype), tensors, build)
        style = style.float().contiguous()
        scale = (layer.demodulation(style, square_sums) * gain).contiguous()
        return fused_styled.styled_conv(x.to(compute_dtype), style, taps, scale, bias, shift,
                                        layer.upsample, float(self.clamp or 0.0))

    def _shift(self, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(2) * (bias + strength * noise)`` (1, C, H, W); built once while bias and strength are frozen."""
        bias, strength = self.activate.bias, self.noise.weight

        def build() -> torch.Tensor:
            return (bias[None, :, None, None] + strength * noise) * LRELU_GAIN

        if bias.requires_grad or strength.requires_grad:
            return build()
        return _built_once(self, ("shift",), (bias, strength, noise), build)


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
            layer = self.conv
            if LEAN_BACKWARD and not layer.weight.requires_grad:  # x stays as it is (bf16) for backward
                weight, _ = layer.frozen("plain", acc)
                style = layer.modulation(w.to(acc))
                if acc == torch.float32 and fused_styled.rgb_supported(x):  # BENCH_FUSED_STYLED=1
                    out = fused_styled.modulated_rgb(x, style.contiguous(), weight[:, :, 0, 0].contiguous()) + self.bias
                elif COMPILED_RGB == "pointwise" and torch.compiler.is_compiling():
                    out = modulated_rgb_pointwise(x, style, weight) + self.bias
                else:
                    out = ModulatedRGBFn.apply(x, style, weight) + self.bias
            else:
                out = layer(x.to(acc), w.to(acc)) + self.bias
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
