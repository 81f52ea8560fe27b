"""The lean backward of frozen generators (``layers.StyledConvFn``, ``layers.ModulatedRGBFn``): same forward,
same gradients, far less kept for backward.

References: the naive float64 StyleGAN2 of ``naive_stylegan2`` (its own modulated weights per image, plain
autograd) for whole-generator gradients, and the plain-autograd path of the layers themselves
(``BENCH_LEAN_BACKWARD=0``) layer by layer, for every convolution mode and with a conv clamp.
"""

import pytest
import torch

from bench.generators import layers
from bench.generators.layers import StyledConv, ToRGB
from tests.generators import naive_stylegan2 as naive
from tests.generators.test_stylegan2 import random_generator

MODES = ["two-step", "polyphase", "transposed", "stencil"]


def _frozen_layer(upsample, clamp, seed=0):
    torch.manual_seed(seed)
    layer = StyledConv(6, 5, 8, upsample=upsample, clamp=clamp).double()
    with torch.no_grad():
        layer.activate.bias.normal_(0, 0.5)
        layer.noise.weight.fill_(0.7)
    layer.conv.requires_grad_(False)  # the conv weight frozen (the lean path); bias, noise strength trainable
    return layer


def _layer_grads(layer, lean, monkeypatch, x, w, noise):
    monkeypatch.setattr(layers, "LEAN_BACKWARD", lean)
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = layer(x, w, noise)
    r = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    params = [layer.activate.bias, layer.noise.weight]
    grads = torch.autograd.grad((y * r).sum(), [x, w, *params])
    return y.detach(), grads


@pytest.mark.parametrize(("upconv", "upsample"), [(MODES[0], False)] + [(m, True) for m in MODES])
@pytest.mark.parametrize("clamp", [None, 0.6])
def test_styled_conv_lean_gradients_match_autograd(monkeypatch, upconv, upsample, clamp):
    """One styled conv, every convolution mode (the up-conv modes only matter with upsampling)."""
    monkeypatch.setattr(layers, "UPCONV", upconv)
    layer = _frozen_layer(upsample, clamp)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(3, 8, generator=g, dtype=torch.float64)
    side = 16 if upsample else 8
    noise = torch.randn(1, 1, side, side, generator=g, dtype=torch.float64)
    y_ref, ref = _layer_grads(layer, False, monkeypatch, x, w, noise)
    y, got = _layer_grads(layer, True, monkeypatch, x, w, noise)
    assert torch.equal(y, y_ref)
    if clamp is not None:  # the clamp is active on part of the output, so its masking is exercised
        assert 0.05 < (y_ref.abs() >= clamp).double().mean() < 0.95
    for a, b in zip(got, ref, strict=True):
        assert b.abs().max() > 1e-3
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_rgb_lean_gradients_match_autograd(monkeypatch):
    torch.manual_seed(0)
    rgb = ToRGB(6, 8).double().requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(2, 8, generator=g, dtype=torch.float64)
    skip = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    results = []
    for lean in (False, True):
        monkeypatch.setattr(layers, "LEAN_BACKWARD", lean)
        xs, ws, sk = (t.clone().requires_grad_(True) for t in (x, w, skip))
        out = rgb(xs, ws, sk)
        results.append((out.detach(), torch.autograd.grad((out * out.detach().sin()).sum(), [xs, ws, sk])))
    (ref_out, ref), (out, got) = results
    assert torch.equal(out, ref_out)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("upconv", MODES)
def test_frozen_generator_gradients_match_naive_reference(monkeypatch, upconv):
    """ws gradients of the whole frozen generator (lean path) against autograd through the naive model."""
    monkeypatch.setattr(layers, "UPCONV", upconv)
    gen = random_generator().double().requires_grad_(False)
    sd = gen.state_dict()
    noise = torch.randn(2, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ws = (gen.w_avg[None, None] + 0.5 * noise).requires_grad_(True)
    target = torch.linspace(-1, 1, 32, dtype=torch.float64)
    (grad,) = torch.autograd.grad(((gen.synthesis(ws) - target) ** 2).sum(), ws)
    ref_ws = ws.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(((naive.synthesis(sd, ref_ws, len(gen.to_rgbs)) - target) ** 2).sum(), ref_ws)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-9 * ref.abs().max().item())


def test_base_code_gradients_match_plain_autograd(monkeypatch):
    """F/W+: gradients with respect to the base code f and ws, lean against plain autograd."""
    gen = random_generator().double().requires_grad_(False)
    ws = gen.w_avg[None, None] + 0.5 * torch.randn(2, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(4),
                                                   dtype=torch.float64)
    f = gen.features(ws, 8)
    grads = []
    for lean in (False, True):
        monkeypatch.setattr(layers, "LEAN_BACKWARD", lean)
        fv, wv = f.clone().requires_grad_(True), ws.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(gen.synthesis_from(fv, wv, 8).square().sum(), [fv, wv]))
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_bf16_forward_identical_and_gradients_close(monkeypatch):
    """Under CPU bf16 autocast the lean forward is the plain one bit for bit; gradients agree to bf16 rounding."""
    gen = random_generator().requires_grad_(False)
    ws = gen.w_avg[None, None] + 0.5 * torch.randn(3, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(5))
    out = []
    for lean in (False, True):
        monkeypatch.setattr(layers, "LEAN_BACKWARD", lean)
        wv = ws.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img = gen.synthesis(wv)
        (grad,) = torch.autograd.grad(img.float().square().sum(), wv)
        out.append((img.detach(), grad))
    assert torch.equal(out[0][0], out[1][0])
    ref, got = out[0][1], out[1][1]
    assert (got - ref).norm() / ref.norm() < 2e-2


def test_lean_backward_keeps_less(monkeypatch):
    """What autograd keeps for backward (unique storages): the lean path keeps less than half of plain autograd."""
    gen = random_generator(64, 32, channels={4: 32, 8: 32, 16: 32, 32: 32, 64: 16}).requires_grad_(False)
    ws = gen.w_avg[None, None].repeat(4, gen.num_ws, 1).requires_grad_(True)
    kept = {}
    for lean in (False, True):
        monkeypatch.setattr(layers, "LEAN_BACKWARD", lean)
        storages = {}

        def pack(t, storages=storages):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            img = gen.synthesis(ws)
        kept[lean] = sum(storages.values())
        img.float().sum().backward()
    assert kept[True] < 0.5 * kept[False]


def test_frozen_weight_cache_follows_weight_changes():
    """The cached derived weights are rebuilt after a state-dict load, an in-place change and a dtype move:
    each render equals that of a generator built afresh (no cache yet) from the same state."""

    def fresh(state):
        g = random_generator(seed=11).requires_grad_(False)
        g.load_state_dict(state)
        return g

    gen = random_generator().requires_grad_(False)
    other = random_generator(seed=7).requires_grad_(False)
    ws = gen.w_avg[None, None].repeat(2, gen.num_ws, 1)
    with torch.no_grad():
        first = gen.synthesis(ws)  # fills the caches
        gen.load_state_dict(other.state_dict())
        assert not torch.equal(gen.synthesis(ws), first)
        assert torch.equal(gen.synthesis(ws), fresh(other.state_dict()).synthesis(ws))
        gen.convs[0].conv.weight.mul_(0.5)
        gen.to_rgbs[0].conv.weight.mul_(2.0)
        assert torch.equal(gen.synthesis(ws), fresh(gen.state_dict()).synthesis(ws))
        gen.double()
        ref = fresh(gen.state_dict()).double()
        out = gen.synthesis(ws.double())
        assert out.dtype == torch.float64
        assert torch.equal(out, ref.synthesis(ws.double()))


@pytest.mark.parametrize("upconv", MODES)
def test_channels_last_lean_gradients_match_plain(monkeypatch, upconv):
    """The CUDA layout (channels-last activations) through the lean path: same images and ws gradients."""
    monkeypatch.setattr(layers, "UPCONV", upconv)
    gen = random_generator().double().requires_grad_(False)
    ws = gen.w_avg[None, None] + 0.5 * torch.randn(2, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(6),
                                                   dtype=torch.float64)
    results = []
    for lean, channels_last in ((False, False), (True, True)):
        monkeypatch.setattr(layers, "LEAN_BACKWARD", lean)
        gen.channels_last = channels_last
        wv = ws.clone().requires_grad_(True)
        img = gen.synthesis(wv)
        results.append((img.detach(), torch.autograd.grad((img * img.detach().cos()).sum(), wv)[0]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_one_pass_forms_equal_the_multi_pass_ones_bit_for_bit(dtype):
    """The leaky ReLU's gradient in one kernel and the RGB modulation's promoting product (issue #17's byte cuts)
    give exactly what the three-pass select and the cast-then-multiply gave, zeros and NaN included."""
    gen = torch.Generator().manual_seed(7)
    g = torch.randn(2, 16, 9, 7, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(2, 16, 9, 7, generator=gen, dtype=torch.float64).to(dtype)
    y[0, 0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")], dtype=dtype)
    g, y = (t.contiguous(memory_format=torch.channels_last) for t in (g, y))
    assert torch.equal(torch.ops.aten.leaky_relu_backward(g, y, 0.2, True), torch.where(y > 0, g, g * 0.2))
    weight = torch.randn(3, 16, 1, 1, generator=gen, dtype=torch.float64).to(torch.promote_types(dtype, torch.float32))
    style = torch.randn(2, 16, generator=gen).to(dtype)
    lean = layers.ModulatedRGBFn.apply(g, style, weight)
    assert torch.equal(lean, torch.nn.functional.conv2d(g.to(weight.dtype) * style[:, :, None, None], weight))
