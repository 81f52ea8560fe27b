import copy

import pytest
import torch

from bench.generators.checkpoints import (
    CheckpointError,
    load_generator,
    load_rosinality,
    save_rosinality,
    save_safetensors,
)
from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator, default_channels
from tests.generators import naive_stylegan2 as naive

# float32 generator vs float64 naive reference: max abs difference (issue #2 asks for 1e-4)
TOL_IMAGE = 1e-4


def random_generator(resolution=32, w_dim=64, seed=0, channels=None):
    torch.manual_seed(seed)
    cfg = GeneratorConfig(resolution, w_dim, n_mlp=3, channels=channels or default_channels(resolution, 512, 32))
    gen = StyleGAN2Generator(cfg, noise_seed=seed)
    # non-trivial noise strengths and biases, so those paths are exercised
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith("rgb1.bias"):
                p.normal_(0, 0.3)
    gen.compute_w_avg(500)
    return gen.eval()


@pytest.fixture(scope="module")
def gen():
    return random_generator()


@pytest.mark.parametrize("upconv", ["two-step", "polyphase", "transposed", "stencil"])
def test_matches_naive_reference(gen, upconv, monkeypatch):
    """Every form of the 2x up-convolution (two-step on the CPU, polyphase on CUDA, the fused transposed one,
    the stencil one for compiled graphs) matches the naive model."""
    from bench.generators import layers

    monkeypatch.setattr(layers, "UPCONV", upconv)
    z = torch.randn(3, gen.z_dim, generator=torch.Generator().manual_seed(1))
    sd = gen.state_dict()
    w = gen.mapping(z)
    w_ref = naive.mapping(sd, z, gen.config.n_mlp)
    assert (w.double() - w_ref).abs().max() < 1e-4
    ws = torch.randn(3, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(2)) * 0.5 + w[:1, None]
    with torch.no_grad():
        img = gen.synthesis(ws)
    ref = naive.synthesis(sd, ws, len(gen.to_rgbs))
    assert img.shape == (3, 3, 32, 32)
    assert (img.double() - ref).abs().max() < TOL_IMAGE
    assert ref.abs().max() > 0.05  # the comparison is not between two near-zero images


def test_rosinality_like_channels_at_64():
    # rosinality Generator(64, w, n, channel_multiplier=1) channel table, scaled down: 4..32 wide, 64 narrower
    g = random_generator(64, 32, seed=3, channels={4: 32, 8: 32, 16: 32, 32: 32, 64: 16})
    ws = torch.randn(2, g.num_ws, g.w_dim)
    with torch.no_grad():
        out = g.synthesis(ws)
    ref = naive.synthesis(g.state_dict(), ws, len(g.to_rgbs))
    assert (out.double() - ref).abs().max() < TOL_IMAGE


def test_constant_noise_determinism(gen):
    ws = gen.w_avg.expand(2, gen.num_ws, -1).clone()
    with torch.no_grad():
        a, b = gen.synthesis(ws), gen.synthesis(ws)
    assert torch.equal(a, b)


def test_batch_independence(gen):
    ws = torch.randn(4, gen.num_ws, gen.w_dim)
    with torch.no_grad():
        batch = gen.synthesis(ws)
        single = torch.cat([gen.synthesis(ws[i : i + 1]) for i in range(4)])
    assert (batch - single).abs().max() < 1e-5


@pytest.mark.parametrize("res", [8, 16])
def test_split_equals_full_minus_coarse_skip(gen, res):
    """synthesis_from(features(ws, s), ws, s) must equal the naive full synthesis in which the RGB skip
    arriving at resolution s is dropped (and nothing else changes); and the difference to the unmodified
    image must be exactly the upsampled coarse skip."""
    ws = torch.randn(2, gen.num_ws, gen.w_dim)
    j = {8: 0, 16: 1}[res]
    with torch.no_grad():
        f = gen.features(ws, res)
        split = gen.synthesis_from(f, ws, res)
        full = gen.synthesis(ws)
    assert f.shape == (2, *gen.feature_shape(res))
    ref_zeroed = naive.synthesis(gen.state_dict(), ws, len(gen.to_rgbs), zero_skip_at=j)
    assert (split.double() - ref_zeroed).abs().max() < TOL_IMAGE
    _, skips = naive.synthesis(gen.state_dict(), ws, len(gen.to_rgbs), return_skips=True)
    contribution = skips[j]  # RGB at res/2, entering the ToRGB at res
    for _ in range(len(gen.to_rgbs) - j):
        contribution = naive._upsample2(contribution)
    assert (full.double() - split.double() - contribution).abs().max() < TOL_IMAGE


def test_split_uses_only_ws_from_M(gen):
    ws = torch.randn(1, gen.num_ws, gen.w_dim)
    f = torch.randn(1, *gen.feature_shape(16))
    m = gen.first_ws_index(16)
    assert m == 4
    ws2 = ws.clone()
    ws2[:, :m] += 5.0
    with torch.no_grad():
        assert torch.equal(gen.synthesis_from(f, ws, 16), gen.synthesis_from(f, ws2, 16))
        ws3 = ws.clone()
        ws3[:, m] += 1.0
        assert not torch.allclose(gen.synthesis_from(f, ws, 16), gen.synthesis_from(f, ws3, 16))


def test_bad_shapes_raise(gen):
    with pytest.raises(ValueError, match="ws must have shape"):
        gen.synthesis(torch.zeros(1, 3, gen.w_dim))
    with pytest.raises(ValueError, match="base resolution"):
        gen.features(torch.zeros(1, gen.num_ws, gen.w_dim), 12)
    with pytest.raises(ValueError, match="f must have shape"):
        gen.synthesis_from(torch.zeros(1, 7, 16, 16), torch.zeros(1, gen.num_ws, gen.w_dim), 16)


def test_rosinality_roundtrip(tmp_path, gen):
    path = tmp_path / "g.pt"
    save_rosinality(gen, path)
    loaded = load_generator(path)
    ws = torch.randn(2, gen.num_ws, gen.w_dim)
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(ws), gen.synthesis(ws))
    assert torch.equal(loaded.w_avg, gen.w_avg)
    assert "latent_avg from file" in loaded.description


def test_rosinality_without_latent_avg(tmp_path, gen):
    path = tmp_path / "g.pt"
    save_rosinality(gen, path, with_latent_avg=False)
    loaded = load_rosinality(path, w_avg_samples=500)
    assert "no latent_avg" in loaded.description
    assert torch.allclose(loaded.w_avg, gen.w_avg, atol=1e-5)  # same 500 seeded samples


def test_rosinality_wrong_key_and_shape(tmp_path, gen):
    ckpt = {"g_ema": {k: v.clone() for k, v in gen.state_dict().items() if k != "w_avg"}}
    ckpt["g_ema"]["convs.1.conv.weight_typo"] = ckpt["g_ema"].pop("convs.1.conv.weight")
    torch.save(ckpt, tmp_path / "bad_key.pt")
    with pytest.raises(CheckpointError, match=r"bad_key\.pt.*missing keys.*convs\.1\.conv\.weight"):
        load_generator(tmp_path / "bad_key.pt")
    ckpt = {"g_ema": {k: v.clone() for k, v in gen.state_dict().items() if k != "w_avg"}}
    ckpt["g_ema"]["convs.1.activate.bias"] = torch.zeros(5)
    torch.save(ckpt, tmp_path / "bad_shape.pt")
    with pytest.raises(CheckpointError, match=r"bad_shape\.pt.*convs\.1\.activate\.bias"):
        load_generator(tmp_path / "bad_shape.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="g_ema"):
        load_generator(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_generator(tmp_path / "junk.pt")


def test_weights_only_refuses_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"g_ema": Evil()}))
    with pytest.raises(CheckpointError):
        load_generator(tmp_path / "evil.pt")


def test_safetensors_roundtrip(tmp_path, gen):
    save_safetensors(gen, tmp_path / "g.safetensors")
    loaded = load_generator(tmp_path / "g.safetensors")
    ws = torch.randn(1, gen.num_ws, gen.w_dim)
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(ws), gen.synthesis(ws))


@pytest.mark.parametrize("seed", [0, 1])
def test_polyphase_forms_equal_the_two_step_forms(seed):
    """Up-conv: transposed 3x3 at stride 2 then a 4x4 FIR (pad 1) = dense 3x3 into 4 C_out + pixel shuffle;
    RGB skip: zero insertion, pad (2, 1), FIR = 3-group 3x3 + pixel shuffle. Float64, random (asymmetric)
    kernels, so a flipped or transposed tap cannot cancel out."""
    import torch.nn.functional as F

    from bench.generators.layers import (
        fused_upconv_weight,
        make_fir_kernel,
        upconv_weight,
        upfirdn,
        upsample_pointwise,
        upsample_weight,
    )

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    for k in (make_fir_kernel(gain=4.0).double(), torch.randn(4, 4, generator=g, dtype=torch.float64)):
        two_step = upfirdn(F.conv_transpose2d(x, w.transpose(0, 1), stride=2), k, pad=(1, 1))
        poly = F.pixel_shuffle(F.conv2d(x, upconv_weight(w, k), padding=1), 2)
        assert poly.shape == two_step.shape == (2, 4, 14, 12)
        assert (poly - two_step).abs().max() < 1e-12
        fused = F.conv_transpose2d(x, fused_upconv_weight(w, k), stride=2, padding=2)
        assert fused.shape == two_step.shape and (fused - two_step).abs().max() < 1e-12
        two_step = upfirdn(x, k, up=2, pad=(2, 1))
        poly = F.pixel_shuffle(F.conv2d(x, upsample_weight(k, 5), padding=1, groups=5), 2)
        assert poly.shape == two_step.shape and (poly - two_step).abs().max() < 1e-12
        shifted = upsample_pointwise(x, upsample_weight(k, 1)[:, 0])  # the compiled graphs' form
        assert shifted.shape == two_step.shape and (shifted - two_step).abs().max() < 1e-12


def test_auto_up_convolution_form_by_device_and_compilation(monkeypatch):
    """auto: two-step on the CPU; on CUDA polyphase eager and BENCH_COMPILED_UPCONV's form in a compiled graph
    (the one-off renders and eager methods keep polyphase); an explicit BENCH_UPCONV wins everywhere."""
    from types import SimpleNamespace

    from bench.generators import layers

    conv = layers.ModulatedConv2d(4, 4, 3, 8, upsample=True)
    cpu, cuda = SimpleNamespace(is_cuda=False), SimpleNamespace(is_cuda=True)
    monkeypatch.setattr(layers, "UPCONV", "auto")
    monkeypatch.setattr(layers, "COMPILED_UPCONV", "stencil")
    assert layers.ModulatedConv2d(4, 4, 3, 8).conv_mode(cuda) == "plain"
    compiling = {"now": False}
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling["now"])
    assert (conv.conv_mode(cpu), conv.conv_mode(cuda)) == ("two-step", "polyphase")
    compiling["now"] = True
    assert (conv.conv_mode(cpu), conv.conv_mode(cuda)) == ("two-step", "stencil")
    monkeypatch.setattr(layers, "UPCONV", "transposed")
    assert (conv.conv_mode(cpu), conv.conv_mode(cuda)) == ("transposed", "transposed")


def test_a_bad_up_convolution_form_is_refused_at_import():
    import os
    import subprocess
    import sys

    for var in ("BENCH_UPCONV", "BENCH_COMPILED_UPCONV"):
        r = subprocess.run([sys.executable, "-c", "import bench.generators.layers"], capture_output=True, text=True,
                           env={**os.environ, var: "fast"})
        assert r.returncode != 0 and f"{var}='fast'" in r.stderr, r.stderr[-500:]


@pytest.mark.parametrize("pad", [(1, 1), (2, 1), (0, 2)])
def test_shifted_fir_equals_upfirdn_and_its_adjoint_is_the_flipped_fir(pad):
    """The stencil up-conv's blur (shifted sums) equals upfirdn's depthwise convolution, float64, with the
    default kernel and a random asymmetric one; the backward's form is its adjoint (<A x, g> = <x, A* g>)
    and equals autograd's gradient of upfirdn."""
    from bench.generators.layers import fir_shifted, make_fir_kernel, upfirdn

    g = torch.Generator().manual_seed(sum(pad))
    for k in (make_fir_kernel(gain=4.0).double(), torch.randn(4, 4, generator=g, dtype=torch.float64)):
        x = torch.randn(2, 3, 9, 7, generator=g, dtype=torch.float64, requires_grad=True)
        ref = upfirdn(x, k, pad=pad)
        out = fir_shifted(x, k, pad=pad)
        assert out.shape == ref.shape and out.dtype == torch.float64
        assert (out - ref).abs().max() < 1e-12 and ref.abs().max() > 0.1
        gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        adjoint = fir_shifted(gy, torch.flip(k, (0, 1)), pad=(3 - pad[0], 3 - pad[1]))
        (grad,) = torch.autograd.grad(ref, x, gy)
        assert adjoint.shape == x.shape and (adjoint - grad).abs().max() < 1e-12
        assert abs((out * gy).sum() - (x * adjoint).sum()) < 1e-10


def test_shifted_fir_sums_bf16_in_float32_and_rounds_once():
    """Under bf16 the 16 products are summed in float32 and rounded once: equal to the float64 sum rounded."""
    from bench.generators.layers import fir_shifted, make_fir_kernel

    x = torch.randn(2, 4, 12, 12, generator=torch.Generator().manual_seed(5)).bfloat16()
    k = make_fir_kernel(gain=4.0)
    out = fir_shifted(x, k, pad=(1, 1))
    assert out.dtype == torch.bfloat16
    exact = fir_shifted(x.double(), k.double(), pad=(1, 1))
    assert torch.equal(out, exact.bfloat16())


def test_pointwise_rgb_layer_equals_the_convolution():
    """The compiled graphs' RGB layer (a dot product over channels per pixel) is conv1x1(x * s, W): values and
    the gradients for x and s, float64, against F.conv2d and autograd."""
    import torch.nn.functional as F

    from bench.generators.layers import ModulatedRGBFn, modulated_rgb_pointwise

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, 1, 1, generator=g, dtype=torch.float64)
    ref = F.conv2d(x * s[:, :, None, None], w)
    out = modulated_rgb_pointwise(x, s, w)
    assert out.shape == ref.shape == (3, 3, 5, 4)
    assert (out - ref).abs().max() < 1e-12 and ref.abs().max() > 0.1
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(out, (x, s), gy), torch.autograd.grad(ref, (x, s), gy), strict=True):
        assert (a - b).abs().max() < 1e-12
    assert (ModulatedRGBFn.apply(x, s, w) - ref).abs().max() < 1e-12  # the eager form, for the record


@pytest.mark.parametrize("mode", ["cudnn", "upsample", "pointwise"])
def test_compiled_rgb_layer_matches_eager_under_bf16_autocast(gen, mode, monkeypatch):
    """Through dynamo (aot_eager backend: the graph Inductor would get, run by eager kernels), the ToRGB layer
    in each compiled form stays float32 under bf16 autocast; values and gradients match eager. The layer is
    frozen, as in an inversion, so that its lean forms (ModulatedRGBFn, the pointwise form) are the ones run."""
    from bench.generators import layers

    monkeypatch.setattr(layers, "COMPILED_RGB", mode)
    torch.manual_seed(1)
    layer = copy.deepcopy(gen.to_rgbs[-1]).requires_grad_(False)  # frozen, as in inversion: the lean forms run
    x = torch.randn(2, layer.conv.in_ch, 16, 16).bfloat16()
    skip, w = torch.randn(2, 3, 8, 8), gen.w_avg.expand(2, -1).clone()

    def run(fn):
        xs, ws, ss = (t.detach().clone().requires_grad_(True) for t in (x, w, skip))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(xs, ws, ss)
        return out, torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), (xs, ws, ss))

    torch._dynamo.reset()
    eager, g_eager = run(layer)
    compiled, g_compiled = run(torch.compile(layer, backend="aot_eager", fullgraph=True))
    assert compiled.dtype == eager.dtype == torch.float32
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    (gx_c, gw_c, gs_c), (gx_e, gw_e, gs_e) = g_compiled, g_eager
    torch.testing.assert_close(gs_c, gs_e, rtol=1e-5, atol=1e-5)
    # x's gradient is bf16, as x is: the compiled graph may round its products once where eager rounds twice,
    # so single values differ by a bf16 spacing (2^-7 near the largest) and the mean difference is small
    assert gx_c.dtype == gx_e.dtype == torch.bfloat16
    diff, scale = (gx_c.float() - gx_e.float()).abs(), gx_e.float().abs()
    assert diff.max() <= 2**-7 * scale.max()
    assert diff.mean() <= 2**-8 * scale.mean()
    # w's gradient: AOTAutograd traces the modulation's backward matrix product under the caller's autocast,
    # so it rounds to bf16 (0.4 % here; the same with the convolution form, before the pointwise forms)
    assert ((gw_c - gw_e).abs().max() / gw_e.abs().max()) < 2**-7


def test_rgb_path_is_float32_under_bf16_autocast(gen):
    """Under bf16 autocast the ToRGB layers (modulated 1x1 conv, bias, upsampled skip) compute in float32.

    Fed activations and a skip that bf16 represents exactly, the autocast result equals the float32 one to
    float32 rounding; a bf16 RGB path would differ by bf16 rounding (spacing 2^-7 near 1).
    """
    torch.manual_seed(0)
    layer = gen.to_rgbs[-1]
    x = torch.randn(2, layer.conv.in_ch, 16, 16).bfloat16().float()
    skip = torch.randn(2, 3, 8, 8).bfloat16().float()
    w = gen.w_avg.expand(2, -1).clone()
    with torch.no_grad():
        ref = layer(x, w, skip)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x.bfloat16(), w, skip)
            bf16_skip = gen.to_rgbs[-1].upsample(skip)  # what autocast makes of the skip's FIR without the fix
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert bf16_skip.dtype == torch.bfloat16 and (bf16_skip.float() - layer.upsample(skip)).abs().max() > 1e-4
