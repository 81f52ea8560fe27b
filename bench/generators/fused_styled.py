"""The frozen styled and RGB layers as Triton kernels, for bf16 inversion on CUDA (an experiment, off by default).

Compiled, a styled layer (modulate, 3x3 convolution, demodulate, noise, bias, leaky ReLU) runs as a cuDNN
convolution with Inductor's pointwise kernels around it, and its backward as another convolution with
pointwise kernels and pixel sums around that. Counted on the CPU, those pointwise kernels are about 60 % of
the bytes a compiled step moves and the convolutions 28 % (benchmarks/RESULTS.md, session 18): every map is
written and read again several times, some of them in float32. Here each pass is one kernel that reads its
inputs once and writes its outputs once, with the pointwise work done in registers:

- forward (:func:`_styled_forward_kernel`): read ``x``, convolve ``x * s`` (an implicit GEMM: nine shifted
  tiles times the weight's taps, float32 sums), keep the convolution's output in bf16 (as the unfused path
  does, for the backward pass), scale by the demodulation, add the noise and the bias, leaky ReLU, clamp;
  write ``y``;
- backward, first pass (:func:`_styled_output_grad_kernel`, pointwise): read the convolution's output and
  ``dL/dy``, take the activation's derivative, sum ``dL/dscale`` over the tile's pixels; write ``dL/dconv``;
- backward, second pass (:func:`_styled_input_grad_kernel`): read ``dL/dconv`` and ``x``, run the transposed
  convolution, sum ``dL/ds`` over the tile's pixels; write ``dL/dx``.

That is 2 bytes an element for each of nine map passes (about 18 bytes per element of the output map), with
the unfused path's multiply-adds (no convolution is run twice). The RGB layer (:func:`modulated_rgb`, a 1x1
modulated convolution to 3 float32 channels) reads the bf16 activation once each way, where the unfused path
wrote a float32 copy of it and a float32 gradient for every channel. Counted as a whole compiled Im2S step
on the 256 px world: 165.9 MiB per image-step unfused, 99.6 fused (``scripts/compiled_traffic.py``,
benchmarks/RESULTS.md, session 20).

Layers with more than :data:`MAX_CHANNELS` channels keep cuDNN: their cost is arithmetic, which the kernels'
small tiles would run further from the tensor cores' peak. The pixel sums are written per tile and added by
torch in a fixed order, so results do not depend on scheduling. The 2x up-convolution runs in polyphase form
(a 3x3 convolution into 4 C_out channels, :func:`bench.generators.layers.upconv_weight`), and the kernels
write and read its outputs at their pixel-shuffled places, so no shuffle runs on its own.

The same function as :class:`bench.generators.layers.StyledConvFn` and ``ModulatedRGBFn`` (tests compare
them), with fewer roundings: the noise-and-bias shift and ``dL/dx`` before the style are kept in float32.
Enabled by ``BENCH_FUSED_STYLED=1`` for frozen layers under bf16 on CUDA (and under Triton's interpreter,
``TRITON_INTERPRET=1``, on the CPU, where the tests run it); not yet timed on a GPU. The kernels compile for
sm_90 without spilling (``scripts/fused_styled_resources.py``).
"""

from __future__ import annotations

import os

import torch

ENABLED = os.environ.get("BENCH_FUSED_STYLED", "0") == "1"
# Layers with more channels (in or out) keep cuDNN's convolutions: their arithmetic, not their bytes, is what costs,
# and the kernels' small tiles (2k elements) would run it further from the tensor cores' peak
MAX_CHANNELS = int(os.environ.get("BENCH_FUSED_STYLED_MAX_CHANNELS", "64"))
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
triton = None
if ENABLED or INTERPRET:  # Triton is imported (about 70 ms) only where the kernels may run
    try:
        import triton
        import triton.language as tl
        from torch.library import triton_op, wrap_triton
    except ImportError:  # pragma: no cover - torch's CUDA wheels bring Triton; without it the option is off
        triton = None
AVAILABLE = triton is not None


def supported(x: torch.Tensor, compute_dtype: torch.dtype, in_ch: int, out_ch: int, kernel_size: int,
              mode: str) -> bool:
    """Whether a frozen styled layer on ``x`` runs as these kernels (``BENCH_FUSED_STYLED=1`` and bf16 CUDA)."""
    if not (ENABLED and AVAILABLE) or kernel_size != 3 or mode not in ("plain", "polyphase"):
        return False
    return max(in_ch, out_ch) <= MAX_CHANNELS and _runs(x, compute_dtype)


def rgb_supported(x: torch.Tensor) -> bool:
    """Whether a frozen RGB layer on ``x`` (bf16 on CUDA, or under the interpreter) runs as :func:`modulated_rgb`."""
    return ENABLED and AVAILABLE and _runs(x, x.dtype)


def _runs(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the kernels run on ``x``'s device in ``dtype``: bf16 on CUDA; bf16 or float32 under the interpreter."""
    if x.is_cuda:
        return dtype == torch.bfloat16
    return INTERPRET and x.device.type == "cpu" and dtype in (torch.bfloat16, torch.float32)


def weight_taps(weight: torch.Tensor) -> torch.Tensor:
    """A conv weight (C_out', C_in, 3, 3) as taps (9, C_in, C_out'), contiguous: tap ``3 dy + dx``."""
    c_out, c_in = weight.shape[:2]
    return weight.permute(2, 3, 1, 0).reshape(9, c_in, c_out).contiguous()


if AVAILABLE:

    @triton.jit
    def _dot(a, b, INTERPRETED: tl.constexpr):
        """The product a @ b with float32 sums (in float32 under the interpreter, whose bf16 dot is wrong)."""
        if INTERPRETED:
            return tl.dot(a.to(tl.float32), b.to(tl.float32))
        return tl.dot(a, b)

    @triton.jit
    def _cast(v, dtype: tl.constexpr, INTERPRETED: tl.constexpr):
        """``v.to(dtype)``, rounded to nearest even under the interpreter too (its own bf16 casts truncate)."""
        if INTERPRETED:
            if dtype == tl.bfloat16:
                b = v.to(tl.float32).to(tl.int32, bitcast=True)
                b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
                v = b.to(tl.float32, bitcast=True)
        return v.to(dtype)

    @triton.jit
    def _pixels(pid, H, W, BP: tl.constexpr):
        """Program ``pid``'s BP pixels of an H x W map: flat indices, their mask, rows and columns."""
        p = pid * BP + tl.arange(0, BP)
        return p, p < H * W, p // W, p % W

    @triton.jit
    def _block(pid, C, B: tl.constexpr):
        """Program ``pid``'s B channels of C, and their mask."""
        c = pid * B + tl.arange(0, B)
        return c, c < C

    @triton.jit
    def _modulated_conv_tile(x_ptr, s_ptr, w_ptr, n, h, w, pmask, j, H, W, CIN, COUT,
                             sxn, sxc, sxh, sxw,
                             BP: tl.constexpr, BK: tl.constexpr, BJ: tl.constexpr, INTERPRETED: tl.constexpr):
        """(BP, BJ) float32: the 3x3 convolution (padding 1) of ``x * s`` at pixels (h, w), output channels j."""
        acc = tl.zeros((BP, BJ), dtype=tl.float32)
        x_img = x_ptr + n.to(tl.int64) * sxn
        jmask = j < COUT
        for k0 in range(0, CIN, BK):
            k = k0 + tl.arange(0, BK)
            kmask = k < CIN
            s = tl.load(s_ptr + n * CIN + k, mask=kmask, other=0.0).to(tl.float32)
            for t in range(9):
                hh = h + (t // 3 - 1)
                ww = w + (t % 3 - 1)
                inside = pmask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                xt = tl.load(x_img + hh[:, None] * sxh + ww[:, None] * sxw + k[None, :] * sxc,
                             mask=inside[:, None] & kmask[None, :], other=0.0)
                # the modulated input, rounded to the taps' dtype as the unfused path's product is
                xs = _cast(xt.to(tl.float32) * s[None, :], w_ptr.dtype.element_ty, INTERPRETED)
                wt = tl.load(w_ptr + t * CIN * COUT + k[:, None] * COUT + j[None, :],
                             mask=kmask[:, None] & jmask[None, :], other=0.0)
                acc += _dot(xs, wt, INTERPRETED)
        return acc

    @triton.jit
    def _output_places(j, h, w, UP: tl.constexpr):
        """Output channel o and the output pixel (oh, ow) of conv channel j at conv pixel (h, w).

        With UP, conv channel j = 4 o + 2 py + px is pixel-shuffled to (2 h + py, 2 w + px).
        """
        if UP:
            o = j // 4
            oh = 2 * h[:, None] + ((j // 2) % 2)[None, :]
            ow = 2 * w[:, None] + (j % 2)[None, :]
        else:
            o = j
            oh = h[:, None] + 0 * j[None, :]
            ow = w[:, None] + 0 * j[None, :]
        return o, oh, ow

    @triton.jit
    def _pre_activation(acc, scale_ptr, bias_ptr, noise_ptr, n, o, oh, ow, mask, jmask, WO, COUT_OUT):
        """The pre-activation acc * scale[n, o] + bias[o] + noise[oh, ow] (the gain sqrt(2) is in all three)."""
        scale = tl.load(scale_ptr + n * COUT_OUT + o, mask=jmask, other=0.0)
        bias = tl.load(bias_ptr + o, mask=jmask, other=0.0)
        noise = tl.load(noise_ptr + oh * WO + ow, mask=mask, other=0.0)
        return acc * scale[None, :] + bias[None, :] + noise, scale

    @triton.jit
    def _styled_forward_kernel(x_ptr, s_ptr, w_ptr, scale_ptr, bias_ptr, noise_ptr, y_ptr, out_ptr,
                               H, W, WO, CIN, COUT, COUT_OUT, clamp,
                               sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                               UP: tl.constexpr, CLAMP: tl.constexpr,
                               BP: tl.constexpr, BK: tl.constexpr, BJ: tl.constexpr, INTERPRETED: tl.constexpr):
        pid_p, n, pid_j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        p, pmask, h, w = _pixels(pid_p, H, W, BP)
        j, jmask = _block(pid_j, COUT, BJ)
        acc = _modulated_conv_tile(x_ptr, s_ptr, w_ptr, n, h, w, pmask, j, H, W, CIN, COUT,
                                   sxn, sxc, sxh, sxw, BP, BK, BJ, INTERPRETED)
        mask = pmask[:, None] & jmask[None, :]
        # the convolution's output, rounded as the unfused path's, kept (N, H W, C_out') for the backward pass
        out = _cast(acc, out_ptr.dtype.element_ty, INTERPRETED)
        tl.store(out_ptr + (n.to(tl.int64) * H * W + p[:, None]) * COUT + j[None, :], out, mask=mask)
        o, oh, ow = _output_places(j, h, w, UP)
        z, _ = _pre_activation(out.to(tl.float32), scale_ptr, bias_ptr, noise_ptr, n, o, oh, ow, mask, jmask, WO,
                               COUT_OUT)
        y = tl.where(z > 0, z, z * 0.2)
        if CLAMP:
            y = tl.minimum(tl.maximum(y, -clamp), clamp)
        tl.store(y_ptr + n.to(tl.int64) * syn + o[None, :] * syc + oh * syh + ow * syw,
                 _cast(y, y_ptr.dtype.element_ty, INTERPRETED), mask=mask)

    @triton.jit
    def _styled_output_grad_kernel(out_ptr, scale_ptr, bias_ptr, noise_ptr, gy_ptr, gz_ptr, gscale_ptr,
                                   H, W, WO, COUT, COUT_OUT, clamp, sgn, sgc, sgh, sgw,
                                   UP: tl.constexpr, CLAMP: tl.constexpr, BP: tl.constexpr, BJ: tl.constexpr,
                                   INTERPRETED: tl.constexpr):
        pid_p, n, pid_j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        p, pmask, h, w = _pixels(pid_p, H, W, BP)
        j, jmask = _block(pid_j, COUT, BJ)
        mask = pmask[:, None] & jmask[None, :]
        at = (n.to(tl.int64) * H * W + p[:, None]) * COUT + j[None, :]  # (N, H W, C_out') at the conv's pixels
        out = tl.load(out_ptr + at, mask=mask, other=0.0).to(tl.float32)
        o, oh, ow = _output_places(j, h, w, UP)
        z, scale = _pre_activation(out, scale_ptr, bias_ptr, noise_ptr, n, o, oh, ow, mask, jmask, WO, COUT_OUT)
        gy = tl.load(gy_ptr + n.to(tl.int64) * sgn + o[None, :] * sgc + oh * sgh + ow * sgw, mask=mask, other=0.0)
        # the leaky ReLU's derivative, rounded in gy's dtype as torch's leaky_relu_backward is
        gz = tl.where(z > 0, gy, _cast(gy.to(tl.float32) * 0.2, gy.dtype, INTERPRETED)).to(tl.float32)
        if CLAMP:
            y = tl.where(z > 0, z, z * 0.2)
            gz = tl.where((y < clamp) & (y > -clamp), gz, 0.0)
        gz = tl.where(mask, gz, 0.0)
        # dL/dscale[n, j] over this tile's pixels; the tiles' rows are added by torch
        tl.store(gscale_ptr + (n.to(tl.int64) * tl.num_programs(0) + pid_p) * COUT + j, tl.sum(gz * out, axis=0),
                 mask=jmask)
        tl.store(gz_ptr + at, _cast(gz * scale[None, :], gz_ptr.dtype.element_ty, INTERPRETED), mask=mask)

    @triton.jit
    def _styled_input_grad_kernel(gz_ptr, x_ptr, s_ptr, w_ptr, gx_ptr, gs_ptr, H, W, CIN, COUT,
                                  sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw,
                                  BP: tl.constexpr, BK: tl.constexpr, BJ: tl.constexpr, INTERPRETED: tl.constexpr):
        pid_p, n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        p, pmask, h, w = _pixels(pid_p, H, W, BP)
        k, kmask = _block(pid_k, CIN, BK)
        acc = tl.zeros((BP, BK), dtype=tl.float32)
        gz_img = gz_ptr + n.to(tl.int64) * H * W * COUT
        for j0 in range(0, COUT, BJ):
            j = j0 + tl.arange(0, BJ)
            jmask = j < COUT
            # the adjoint of out(p) = sum_t in(p + d_t) W_t is in'(q) = sum_t out'(q - d_t) W_t^T
            for t in range(9):
                hh = h - (t // 3 - 1)
                ww = w - (t % 3 - 1)
                inside = pmask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                g = tl.load(gz_img + (hh[:, None] * W + ww[:, None]) * COUT + j[None, :],
                            mask=inside[:, None] & jmask[None, :], other=0.0)
                wt = tl.load(w_ptr + t * CIN * COUT + k[None, :] * COUT + j[:, None],
                             mask=kmask[None, :] & jmask[:, None], other=0.0)
                acc += _dot(g, wt, INTERPRETED)
        mask = pmask[:, None] & kmask[None, :]
        x = tl.load(x_ptr + n.to(tl.int64) * sxn + k[None, :] * sxc + h[:, None] * sxh + w[:, None] * sxw,
                    mask=mask, other=0.0).to(tl.float32)
        tl.store(gs_ptr + (n.to(tl.int64) * tl.num_programs(0) + pid_p) * CIN + k, tl.sum(acc * x, axis=0),
                 mask=kmask)
        s = tl.load(s_ptr + n * CIN + k, mask=kmask, other=0.0).to(tl.float32)
        tl.store(gx_ptr + n.to(tl.int64) * sgn + k[None, :] * sgc + h[:, None] * sgh + w[:, None] * sgw,
                 _cast(acc * s[None, :], gx_ptr.dtype.element_ty, INTERPRETED), mask=mask)

    # Warps per program, and elements per program's tile: compiled for sm_90, no kernel spills registers at these
    # (scripts/fused_styled_resources.py; --tile and --warps try others). The nine taps run as a loop, not unrolled
    NUM_WARPS = 8
    TILE_ELEMENTS = 2048

    def _blocks(h: int, w: int, c_in: int, c_out: int) -> tuple[int, int, int]:
        """Tile sizes: pixels, input channels, output channels (powers of two, at least 16 for tl.dot)."""
        bk = max(16, min(32, triton.next_power_of_2(c_in)))
        bj = max(16, min(64, triton.next_power_of_2(c_out)))
        bp = max(16, min(TILE_ELEMENTS // max(bk, bj), triton.next_power_of_2(h * w)))
        return bp, bk, bj

    def _pointwise_blocks(h: int, w: int, c_conv: int) -> tuple[int, int]:
        """Tile sizes of the pointwise output-gradient pass: pixels, and channels (whole pixels where they fit)."""
        bj = max(16, min(64, triton.next_power_of_2(c_conv)))
        return max(16, min(TILE_ELEMENTS // bj, triton.next_power_of_2(h * w))), bj

    def _custom_op(name: str, fake):  # noqa: ANN001, ANN202
        """Register the decorated function as the op ``bench::name``, for Triton or for its interpreter.

        On CUDA a Triton op, whose kernels Inductor sees. Under the interpreter, whose kernels cannot be traced,
        an opaque op with ``fake`` for its output shapes.

        Compiled under the interpreter, each op counts as one external kernel that reads its inputs and writes
        its outputs once: the bytes these kernels move (``scripts/compiled_traffic.py``).
        """
        def register(fn):  # noqa: ANN001, ANN202
            if not INTERPRET:
                return triton_op(f"bench::{name}", fn, mutates_args=())
            op = torch.library.custom_op(f"bench::{name}", fn, mutates_args=())
            op.register_fake(fake)
            return op

        return register

    def _conv_shapes(x: torch.Tensor, taps: torch.Tensor, up: bool) -> tuple[int, ...]:
        n, c_in, h, w = x.shape
        c_conv = taps.shape[2]
        return n, c_in, h, w, c_conv, c_conv // 4 if up else c_conv

    def _styled_conv_fake(x, style, taps, scale, bias, noise, up, clamp):  # noqa: ANN001, ANN202
        n, _, h, w, c_conv, c_out = _conv_shapes(x, taps, up)
        y = x.new_empty((n, c_out, h * (1 + up), w * (1 + up))).contiguous(memory_format=_memory_format(x))
        return y, taps.new_empty((n, h * w, c_conv))

    @_custom_op("styled_conv", _styled_conv_fake)
    def _styled_conv_op(x: torch.Tensor, style: torch.Tensor, taps: torch.Tensor, scale: torch.Tensor,
                        bias: torch.Tensor, noise: torch.Tensor, up: bool,
                        clamp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`styled_conv`'s output, and the convolution's (N, H W, C_out') in the taps' dtype (for backward).

        Three dimensions, not four: a compiled graph whose layout is forced channels-last would copy a 4-d
        (N, H, W, C) map into another layout on its way between the ops (26 MiB per image-step on the world).
        """
        n, c_in, h, w, c_conv, c_out = _conv_shapes(x, taps, up)
        y = torch.empty((n, c_out, h * (1 + up), w * (1 + up)), dtype=x.dtype, device=x.device,
                        memory_format=_memory_format(x))
        out = torch.empty((n, h * w, c_conv), dtype=taps.dtype, device=x.device)
        bp, bk, bj = _blocks(h, w, c_in, c_conv)
        grid = (triton.cdiv(h * w, bp), n, triton.cdiv(c_conv, bj))
        wrap_triton(_styled_forward_kernel)[grid](
            x, style, taps, scale, bias, noise, y, out, h, w, w * (1 + up), c_in, c_conv, c_out, clamp,
            *x.stride(), *y.stride(), UP=up, CLAMP=clamp > 0, BP=bp, BK=bk, BJ=bj, INTERPRETED=INTERPRET,
            num_warps=NUM_WARPS)
        return y, out

    def styled_conv(x: torch.Tensor, style: torch.Tensor, taps: torch.Tensor, scale: torch.Tensor,
                    bias: torch.Tensor, noise: torch.Tensor, up: bool, clamp: float) -> torch.Tensor:
        """``clamp(lrelu(conv(x * style, taps) * scale + bias + noise))``: see the module's docstring.

        x (N, C_in, H, W); style (N, C_in) float32; taps (9, C_in, C_out') from :func:`weight_taps`, C_out' =
        C_out (4 C_out with ``up``); scale (N, C_out), bias (C_out,) and noise (H_out, W_out) float32, the
        gain sqrt(2) in each; clamp 0 for none. Returns (N, C_out, H_out, W_out) in x's dtype and memory format.
        """
        return _styled_conv_op(x, style, taps, scale, bias, noise, up, clamp)[0]

    def _output_grad_fake(gy, out, scale, bias, noise, up, clamp):  # noqa: ANN001, ANN202
        return torch.empty_like(out), scale.new_empty(scale.shape)

    @_custom_op("styled_conv_output_grad", _output_grad_fake)
    def styled_conv_output_grad(gy: torch.Tensor, out: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                                noise: torch.Tensor, up: bool, clamp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient at the convolution's output ``out`` (N, H W, C_out'), in its dtype, and dL/dscale."""
        n, _, c_conv = out.shape
        h, w = gy.shape[2] // (1 + up), gy.shape[3] // (1 + up)
        c_out = c_conv // 4 if up else c_conv
        bp, bj = _pointwise_blocks(h, w, c_conv)
        tiles = triton.cdiv(h * w, bp)
        gz = torch.empty_like(out)
        g_scale = torch.empty((n, tiles, c_conv), dtype=torch.float32, device=out.device)
        wrap_triton(_styled_output_grad_kernel)[(tiles, n, triton.cdiv(c_conv, bj))](
            out, scale, bias, noise, gy, gz, g_scale, h, w, w * (1 + up), c_conv, c_out, clamp, *gy.stride(),
            UP=up, CLAMP=clamp > 0, BP=bp, BJ=bj, INTERPRETED=INTERPRET, num_warps=NUM_WARPS)
        g_scale = g_scale.sum(1)
        if up:  # the four phases of each output channel
            g_scale = g_scale.view(n, c_out, 4).sum(2)
        return gz, g_scale

    def _input_grad_fake(gz, x, style, taps):  # noqa: ANN001, ANN202
        return torch.empty_like(x), style.new_empty(style.shape, dtype=torch.float32)

    @_custom_op("styled_conv_input_grad", _input_grad_fake)
    def styled_conv_input_grad(gz: torch.Tensor, x: torch.Tensor, style: torch.Tensor,
                               taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dL/dx and dL/dstyle from the gradient at the convolution's output."""
        n, c_in, h, w, c_conv, _ = _conv_shapes(x, taps, False)
        bp, bk, bj = _blocks(h, w, c_in, c_conv)
        tiles = triton.cdiv(h * w, bp)
        g_x = torch.empty_like(x)
        g_style = torch.empty((n, tiles, c_in), dtype=torch.float32, device=x.device)
        wrap_triton(_styled_input_grad_kernel)[(tiles, n, triton.cdiv(c_in, bk))](
            gz, x, style, taps, g_x, g_style, h, w, c_in, c_conv, *x.stride(), *g_x.stride(),
            BP=bp, BK=bk, BJ=bj, INTERPRETED=INTERPRET, num_warps=NUM_WARPS)
        return g_x, g_style.sum(1)

    def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        x, style, taps, scale, bias, noise, up, clamp = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(x, style, taps, scale, bias, noise, output[1])
        ctx.up, ctx.clamp = up, clamp

    def _backward(ctx, gy, _g_out):  # noqa: ANN001, ANN202
        x, style, taps, scale, bias, noise, out = ctx.saved_tensors
        gz, g_scale = styled_conv_output_grad(gy, out, scale, bias, noise, ctx.up, ctx.clamp)
        g_x, g_style = styled_conv_input_grad(gz, x, style, taps)
        return g_x, g_style.to(style.dtype), None, g_scale.to(scale.dtype), None, None, None, None

    _styled_conv_op.register_autograd(_backward, setup_context=_setup_context)

    @triton.jit
    def _rgb_forward_kernel(x_ptr, s_ptr, w_ptr, out_ptr, HW, CIN, sxn, sxc, sxp, son, soc,
                            BP: tl.constexpr, BK: tl.constexpr):
        pid_p, n = tl.program_id(0), tl.program_id(1)
        p = pid_p * BP + tl.arange(0, BP)
        pmask = p < HW
        acc0 = tl.zeros((BP,), dtype=tl.float32)
        acc1 = tl.zeros((BP,), dtype=tl.float32)
        acc2 = tl.zeros((BP,), dtype=tl.float32)
        for k0 in range(0, CIN, BK):
            k = k0 + tl.arange(0, BK)
            kmask = k < CIN
            x = tl.load(x_ptr + n.to(tl.int64) * sxn + p[:, None] * sxp + k[None, :] * sxc,
                        mask=pmask[:, None] & kmask[None, :], other=0.0).to(tl.float32)
            xs = x * tl.load(s_ptr + n * CIN + k, mask=kmask, other=0.0)[None, :]
            acc0 += tl.sum(xs * tl.load(w_ptr + k, mask=kmask, other=0.0)[None, :], axis=1)
            acc1 += tl.sum(xs * tl.load(w_ptr + CIN + k, mask=kmask, other=0.0)[None, :], axis=1)
            acc2 += tl.sum(xs * tl.load(w_ptr + 2 * CIN + k, mask=kmask, other=0.0)[None, :], axis=1)
        out = out_ptr + n.to(tl.int64) * son + p
        tl.store(out, acc0, mask=pmask)
        tl.store(out + soc, acc1, mask=pmask)
        tl.store(out + 2 * soc, acc2, mask=pmask)

    @triton.jit
    def _rgb_backward_kernel(g_ptr, x_ptr, s_ptr, w_ptr, gx_ptr, gs_ptr, HW, CIN, sgn, sgc, sxn, sxc, sxp,
                             BP: tl.constexpr, BK: tl.constexpr, INTERPRETED: tl.constexpr):
        pid_p, n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        p = pid_p * BP + tl.arange(0, BP)
        pmask = p < HW
        k = pid_k * BK + tl.arange(0, BK)
        kmask = k < CIN
        g = g_ptr + n.to(tl.int64) * sgn + p
        g0 = tl.load(g, mask=pmask, other=0.0)
        g1 = tl.load(g + sgc, mask=pmask, other=0.0)
        g2 = tl.load(g + 2 * sgc, mask=pmask, other=0.0)
        gxs = (g0[:, None] * tl.load(w_ptr + k, mask=kmask, other=0.0)[None, :]
               + g1[:, None] * tl.load(w_ptr + CIN + k, mask=kmask, other=0.0)[None, :]
               + g2[:, None] * tl.load(w_ptr + 2 * CIN + k, mask=kmask, other=0.0)[None, :])
        mask = pmask[:, None] & kmask[None, :]
        offsets = n.to(tl.int64) * sxn + p[:, None] * sxp + k[None, :] * sxc
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(gs_ptr + (n.to(tl.int64) * tl.num_programs(0) + pid_p) * CIN + k, tl.sum(gxs * x, axis=0),
                 mask=kmask)
        s = tl.load(s_ptr + n * CIN + k, mask=kmask, other=0.0)
        tl.store(gx_ptr + offsets, _cast(gxs * s[None, :], gx_ptr.dtype.element_ty, INTERPRETED), mask=mask)

    def _rgb_blocks(hw: int, c_in: int) -> tuple[int, int]:
        bk = min(64, triton.next_power_of_2(c_in))
        return max(16, min(TILE_ELEMENTS // bk, triton.next_power_of_2(hw))), bk

    def _pixel_stride(x: torch.Tensor) -> int:
        """The stride of one pixel in x's flattened (H W) (C for channels-last, 1 for contiguous)."""
        if x.stride(2) != x.stride(3) * x.shape[3] and x.shape[2] > 1:
            raise ValueError(f"the RGB kernels need x's pixels in one stride, got strides {x.stride()}")
        return x.stride(3)

    def _modulated_rgb_fake(x, style, weight):  # noqa: ANN001, ANN202
        return weight.new_empty((x.shape[0], 3, x.shape[2], x.shape[3]))

    @_custom_op("modulated_rgb", _modulated_rgb_fake)
    def modulated_rgb(x: torch.Tensor, style: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The RGB layer's ``conv1x1(x * style, weight)`` in float32 from bf16 ``x``: (N, 3, H, W) float32.

        x (N, C, H, W) with its pixels in one stride (channels-last or contiguous); style (N, C) and weight
        (3, C) float32, contiguous. Each pixel's three sums run in float32 on the CUDA cores (3 K multiply-adds
        a pixel), reading x once; the unfused path wrote x * style as a float32 copy for cuDNN to read.
        """
        n, c_in, h, w = x.shape
        out = torch.empty((n, 3, h, w), dtype=weight.dtype, device=x.device)
        bp, bk = _rgb_blocks(h * w, c_in)
        wrap_triton(_rgb_forward_kernel)[(triton.cdiv(h * w, bp), n)](
            x, style, weight, out, h * w, c_in, x.stride(0), x.stride(1), _pixel_stride(x), out.stride(0),
            out.stride(1), BP=bp, BK=bk, num_warps=NUM_WARPS)
        return out

    def _rgb_backward_fake(g, x, style, weight):  # noqa: ANN001, ANN202
        return torch.empty_like(x), style.new_empty(style.shape)

    @_custom_op("modulated_rgb_backward", _rgb_backward_fake)
    def modulated_rgb_backward(g: torch.Tensor, x: torch.Tensor, style: torch.Tensor,
                               weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dL/dx (x's dtype and layout) and dL/dstyle of :func:`modulated_rgb` for the output gradient ``g``."""
        n, c_in, h, w = x.shape
        g = g.contiguous()
        bp, bk = _rgb_blocks(h * w, c_in)
        tiles = triton.cdiv(h * w, bp)
        g_x = torch.empty_like(x)
        g_style = torch.empty((n, tiles, c_in), dtype=torch.float32, device=x.device)
        wrap_triton(_rgb_backward_kernel)[(tiles, n, triton.cdiv(c_in, bk))](
            g, x, style, weight, g_x, g_style, h * w, c_in, g.stride(0), g.stride(1), x.stride(0), x.stride(1),
            _pixel_stride(x), BP=bp, BK=bk, INTERPRETED=INTERPRET, num_warps=NUM_WARPS)
        return g_x, g_style.sum(1)

    def _rgb_setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        ctx.save_for_backward(*inputs)

    def _rgb_backward(ctx, g):  # noqa: ANN001, ANN202
        g_x, g_style = modulated_rgb_backward(g, *ctx.saved_tensors)
        return g_x, g_style, None

    modulated_rgb.register_autograd(_rgb_backward, setup_context=_rgb_setup_context)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
