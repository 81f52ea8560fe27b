"""The fused Triton styled convolution (``bench.generators.fused_styled``, ``BENCH_FUSED_STYLED=1``).

Its kernels run on CUDA, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, read when Triton
compiles, so before ``fused_styled`` is imported). On the CPU without it, ``test_runs_under_the_interpreter``
runs this file again in a child process with the interpreter on; the other tests then run there.

References: the unfused frozen layer (``layers.StyledConvFn``, itself checked against plain autograd and a
naive float64 StyleGAN2 in test_lean_backward.py), in float32 to float rounding; and under bf16, a float64
evaluation of the same layer on the same bf16 inputs, against which the fused path must be about as accurate
as the unfused one (a wrong index or a missing term gives errors of the size of the values themselves).
"""

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.generators import fused_styled, layers
from bench.generators.layers import StyledConv, ToRGB
from tests.generators.test_stylegan2 import random_generator

INTERPRETED = fused_styled.INTERPRET and fused_styled.AVAILABLE
needs_kernels = pytest.mark.skipif(not INTERPRETED, reason="the CPU runs the kernels under TRITON_INTERPRET=1 only")
needs_triton = pytest.mark.skipif(not fused_styled.AVAILABLE, reason="BENCH_FUSED_STYLED=1 imports Triton")
# (upsample, C_in, C_out, side of the input, clamp): odd sides and channel counts leave partial tiles; 17 px
# makes two tiles of 256 pixels, whose sums are added
CASES = [(False, 16, 32, 8, None), (False, 16, 16, 17, None), (False, 48, 16, 5, 0.5), (True, 32, 16, 5, None),
         (True, 16, 48, 4, 0.4)]


@pytest.fixture
def fused(monkeypatch):
    """Switch the fused path on, list its calls ("up", "plain", "rgb"), run up-convolutions in polyphase form."""
    calls = []
    styled, rgb = fused_styled.styled_conv, fused_styled.modulated_rgb

    def counted_styled(*args):
        calls.append("up" if args[6] else "plain")
        return styled(*args)

    def counted_rgb(*args):
        calls.append("rgb")
        return rgb(*args)

    monkeypatch.setattr(fused_styled, "styled_conv", counted_styled)
    monkeypatch.setattr(fused_styled, "modulated_rgb", counted_rgb)
    monkeypatch.setattr(layers, "UPCONV", "polyphase")

    def set_enabled(on):
        monkeypatch.setattr(fused_styled, "ENABLED", on)
        return calls

    return set_enabled


def _layer(upsample, c_in, c_out, clamp, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    layer = StyledConv(c_in, c_out, 8, upsample=upsample, clamp=clamp).to(dtype)
    with torch.no_grad():
        layer.activate.bias.normal_(0, 0.5)
        layer.noise.weight.fill_(0.3)
    return layer.requires_grad_(False)


def _run(layer, x, w, noise, g, autocast=False):
    x, w = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        y = layer(x, w, noise)
    gx, gw = torch.autograd.grad(y, (x, w), g.to(y.dtype))
    return [t.double() for t in (y, gx, gw)]


def _inputs(upsample, c_in, side, device="cpu", dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    out = side * (2 if upsample else 1)
    x = torch.randn(3, c_in, side, side, generator=gen).to(device, dtype).contiguous(memory_format=torch.channels_last)
    return x, torch.randn(3, 8, generator=gen).to(device), torch.randn(1, 1, out, out, generator=gen).to(device)


@needs_kernels
@pytest.mark.parametrize(("upsample", "c_in", "c_out", "side", "clamp"), CASES)
def test_fused_layer_matches_the_unfused_one_in_float32(fused, upsample, c_in, c_out, side, clamp):
    layer = _layer(upsample, c_in, c_out, clamp)
    x, w, noise = _inputs(upsample, c_in, side)
    g = torch.randn(3, c_out, side * (1 + upsample), side * (1 + upsample))
    calls = fused(False)
    ref = _run(layer, x, w, noise, g)
    fused(True)
    got = _run(layer, x, w, noise, g)
    assert calls == ["up" if upsample else "plain"]
    for name, a, b in zip(("y", "dL/dx", "dL/dw"), got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5 * b.abs().max().item(), rtol=1e-5, msg=name)


def _accuracy_against_float64(layer, x, w, noise, g, fused):
    """Median and mean |error| of (y, dL/dx, dL/dw) under bf16 autocast, unfused and fused, against float64."""
    fused(False)
    ref = _run(layer.double(), x.double(), w.double(), noise.double(), g.double())
    layer.float()
    errors = {}
    for on in (False, True):
        fused(on)
        got = _run(layer, x, w, noise, g, autocast=True)
        errors[on] = [((a - b).abs().median().item(), (a - b).abs().mean().item(), b.abs().max().item())
                      for a, b in zip(got, ref, strict=True)]
    return errors


def _assert_as_accurate(errors):
    """The fused path's errors are at most twice the unfused one's, or within 0.2 % (median) / 2 % (mean) of the
    largest value.

    Under bf16 a pre-activation next to zero or to the clamp can take the other side of it, which changes the
    derivative there and the input gradient at all nine neighbours: one such element in the clamp case moves
    dL/dx's mean error to six times the unfused path's (which had none there), and dL/dw's (24 sums) by 1.7 %
    of its size. A wrong index or a missing term gives errors of about the values' own size.
    """
    for name, (unf_median, unf_mean, size), (fus_median, fus_mean, _) in zip(
            ("y", "dL/dx", "dL/dw"), errors[False], errors[True], strict=True):
        assert fus_median <= 2 * unf_median + 2e-3 * size, (name, errors)
        assert fus_mean <= 2 * unf_mean + 2e-2 * size, (name, errors)


@needs_kernels
@pytest.mark.parametrize(("upsample", "c_in", "c_out", "side", "clamp"), CASES)
def test_fused_layer_under_bf16_is_as_accurate_as_the_unfused_one(fused, upsample, c_in, c_out, side, clamp):
    layer = _layer(upsample, c_in, c_out, clamp)
    x, w, noise = _inputs(upsample, c_in, side, dtype=torch.bfloat16)
    g = torch.randn(3, c_out, side * (1 + upsample), side * (1 + upsample)).bfloat16()
    calls = fused(False)
    _assert_as_accurate(_accuracy_against_float64(layer, x, w, noise, g, fused))
    assert calls == ["up" if upsample else "plain"]


@needs_kernels
def test_fused_generator_matches_the_unfused_one(fused):
    """A whole frozen generator (constant input expanded over the batch, skips, RGB layers): W+ gradients."""
    gen = random_generator(resolution=16, w_dim=16, channels={4: 32, 8: 32, 16: 16}).requires_grad_(False)
    gen.channels_last = True
    ws = gen.w_avg + 0.5 * torch.randn(2, gen.num_ws, 16, generator=torch.Generator().manual_seed(3))
    out = []
    for on in (False, True):
        calls = fused(on)
        w = ws.clone().requires_grad_(True)
        img = gen.synthesis(w)
        (grad,) = torch.autograd.grad((img * torch.linspace(-1, 1, img.numel()).view(img.shape)).sum(), w)
        out.append((img, grad))
    # conv1 and its RGB layer at 4 px, then an up-convolution, a plain one and an RGB layer at 8 and 16 px
    assert calls == ["plain", "rgb"] + ["up", "plain", "rgb"] * 2
    torch.testing.assert_close(out[1][0], out[0][0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out[1][1], out[0][1], atol=2e-5 * out[0][1].abs().max().item(), rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize(("c_in", "side", "layout"), [(16, 18, torch.channels_last), (48, 6, torch.contiguous_format)])
def test_fused_rgb_layer_matches_the_unfused_one(fused, c_in, side, layout):
    """The RGB layer (with its upsampled skip): float32 to float rounding; bf16 input, against float64."""
    torch.manual_seed(0)
    layer = ToRGB(c_in, 8).requires_grad_(False)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, c_in, side, side, generator=gen).contiguous(memory_format=layout)
    w, skip = torch.randn(3, 8, generator=gen), torch.randn(3, 3, side // 2, side // 2, generator=gen)
    g = torch.randn(3, 3, side, side, generator=gen)

    def run(x, w, dtype=None):
        x, w = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
        out = layer.to(dtype or torch.float32)(x, w, skip.to(out_dtype(dtype)))
        return [t.double() for t in (out, *torch.autograd.grad(out, (x, w), g.to(out.dtype)))]

    def out_dtype(dtype):
        return torch.float64 if dtype == torch.float64 else torch.float32

    results = {}
    for on in (False, True):
        calls = fused(on)
        results[on] = run(x, w), run(x.bfloat16(), w)
    assert calls == ["rgb", "rgb"]
    for a, b in zip(results[True][0], results[False][0], strict=True):
        torch.testing.assert_close(a, b, atol=2e-5 * b.abs().max().item(), rtol=1e-5)
    fused(False)
    ref = run(x.bfloat16().double(), w.double(), torch.float64)
    layer.float()
    errors = {on: [((a - b).abs().median().item(), (a - b).abs().mean().item(), b.abs().max().item())
                   for a, b in zip(results[on][1], ref, strict=True)] for on in (False, True)}
    _assert_as_accurate(errors)


def test_fused_path_is_off_by_default_and_for_unsupported_layers(monkeypatch):
    if os.environ.get("BENCH_FUSED_STYLED") is None:
        assert not fused_styled.ENABLED
    monkeypatch.setattr(fused_styled, "ENABLED", True)
    x = torch.zeros(1, 16, 4, 4)
    if INTERPRETED:  # the layers it does take
        assert fused_styled.supported(x, torch.float32, 64, 64, 3, "plain")
        assert fused_styled.supported(x, torch.bfloat16, 16, 32, 3, "polyphase")
    for mode in ("two-step", "transposed", "stencil"):
        assert not fused_styled.supported(x, torch.float32, 16, 16, 3, mode)
    assert not fused_styled.supported(x, torch.float32, 16, 16, 1, "plain")  # 1x1 (the RGB layers)
    assert not fused_styled.supported(x, torch.float32, 128, 64, 3, "plain")  # cuDNN keeps the wide layers
    assert not fused_styled.supported(x, torch.float16, 16, 16, 3, "plain")


@pytest.mark.skipif(INTERPRETED or importlib.util.find_spec("triton") is None or torch.cuda.is_available(),
                    reason="runs the kernels' tests under the interpreter from a CPU session without it")
def test_runs_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    others = ("test_runs_under_the_interpreter", "test_the_cuda_ops_trace_with_fake_tensors",
              "test_the_kernels_compile_for_sm90")  # these run their own child processes, without the interpreter
    args = ["-q", "-p", "no:cacheprovider", "-m", "not gpu", "-k", " and ".join(f"not {t}" for t in others)]
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, str(Path(__file__))], env=env, capture_output=True,
                          text=True, timeout=900, cwd=Path(__file__).resolve().parents[2], check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


def trace_cuda_ops():
    """Trace the ops' CUDA path (Triton ops, real kernels) with fake CUDA tensors: what torch.compile does first.

    Run by :func:`test_the_cuda_ops_trace_with_fake_tensors` in a child process with ``BENCH_FUSED_STYLED=1``
    and no interpreter, so that the kernels are Triton's JIT functions, as on the GPU.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    assert fused_styled.AVAILABLE and not fused_styled.INTERPRET
    launched = []
    real_wrap = fused_styled.wrap_triton

    def checked_wrap(kernel):  # each launch's arguments must bind to its kernel's parameters, as Triton's would
        def at(grid):
            def launch(*args, num_warps=None, **kwargs):
                inspect.signature(kernel.fn).bind(*args, **kwargs)
                launched.append(kernel.fn.__name__)
                return real_wrap(kernel)[grid](*args, num_warps=num_warps, **kwargs)
            return launch
        return type("Checked", (), {"__getitem__": lambda self, grid: at(grid)})()

    fused_styled.wrap_triton = checked_wrap
    with FakeTensorMode():
        x = torch.empty(4, 16, 8, 8, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        style, scale = torch.empty(4, 16, device="cuda"), torch.empty(4, 16, device="cuda")
        taps = torch.empty(9, 16, 64, device="cuda", dtype=torch.bfloat16)
        bias, noise, rgb_weight = (torch.empty(16, device="cuda"), torch.empty(16, 16, device="cuda"),
                                   torch.empty(3, 16, device="cuda"))

    def step(x, style, scale):
        y, out = fused_styled._styled_conv_op(x, style, taps, scale, bias, noise, True, 0.0)
        gz, g_scale = fused_styled.styled_conv_output_grad(torch.ones_like(y), out, scale, bias, noise, True, 0.0)
        g_x, g_style = fused_styled.styled_conv_input_grad(gz, x, style, taps)
        rgb = fused_styled.modulated_rgb(y, style, rgb_weight)
        g_y, g_rgb_style = fused_styled.modulated_rgb_backward(rgb, y, style, rgb_weight)
        return y, out, gz, g_scale, g_x, g_style, rgb, g_y, g_rgb_style

    graph = make_fx(step, tracing_mode="fake")(x, style, scale)
    shapes = [tuple(node.meta["val"].shape) for node in graph.graph.find_nodes(op="output")[0].args[0]]
    assert shapes == [(4, 16, 16, 16), (4, 64, 64), (4, 64, 64), (4, 16), (4, 16, 8, 8), (4, 16), (4, 3, 16, 16),
                      (4, 16, 16, 16), (4, 16)], shapes
    ops = {str(node.target) for node in graph.graph.nodes if node.op == "call_function"}
    assert {f"bench.{name}.default" for name in ("styled_conv", "styled_conv_output_grad", "styled_conv_input_grad",
                                                "modulated_rgb", "modulated_rgb_backward")} <= ops, ops
    assert len(set(launched)) == 5, launched


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")
def test_the_cuda_ops_trace_with_fake_tensors():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"BENCH_FUSED_STYLED": "1"}
    code = "from tests.generators.test_fused_styled import trace_cuda_ops; trace_cuda_ops(); print('traced')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[2], check=False)
    assert proc.returncode == 0 and "traced" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")
def test_the_kernels_compile_for_sm90():
    """Triton compiles every kernel ahead of time for sm_90 (H100, H200) with the ptxas its wheel ships."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "scripts/fused_styled_resources.py", "--shapes", "2"], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if "REG:" in line]
    assert len(lines) == 8, proc.stdout  # the world's two 256 px layers: 3 kernels each, and the RGB layer's 2


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize(("upsample", "c_in", "c_out", "side", "clamp"), CASES + [(True, 64, 32, 32, None)])
def test_fused_layer_on_cuda_is_as_accurate_as_the_unfused_one(fused, upsample, c_in, c_out, side, clamp):
    layer = _layer(upsample, c_in, c_out, clamp).cuda()
    x, w, noise = _inputs(upsample, c_in, side, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(3, c_out, side * (1 + upsample), side * (1 + upsample), device="cuda").bfloat16()
    calls = fused(False)
    _assert_as_accurate(_accuracy_against_float64(layer, x, w, noise, g, fused))
    assert calls == ["up" if upsample else "plain"]


@pytest.mark.gpu
@needs_triton
def test_fused_generator_compiles_on_cuda(fused):
    """In the generator's compiled graph (batch dynamic), the kernels give the eager fused path's result."""
    gen = random_generator(resolution=32, w_dim=32, channels={4: 64, 8: 64, 16: 32, 32: 16}).cuda()
    gen.requires_grad_(False).channels_last = True
    calls = fused(True)
    ws4 = gen.w_avg + 0.5 * torch.randn(4, gen.num_ws, 32, device="cuda")
    out = []
    for compiled, batch in ((False, 4), (True, 4), (True, 3)):  # the second batch reuses the dynamic graph
        gen.compiled = compiled
        ws = ws4[:batch].clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            img = gen.synthesis(ws)
        out.append((img.float(), torch.autograd.grad(img.float().square().mean(), ws)[0]))
    assert gen.compile_failure is None
    assert len(calls) >= 8  # eight layers in the eager pass (the compiled graph may replay the count)
    for a, b in zip(out[1], out[0], strict=True):
        torch.testing.assert_close(a, b, atol=1e-2 * b.abs().max().item(), rtol=1e-2)
    torch.testing.assert_close(out[2][0], out[1][0][:3], atol=1e-2, rtol=1e-2)
