"""``--compile``: the torch.compile'd generator computes the same images and gradients as the eager one.

On the CPU the graph capture runs with the ``aot_eager`` backend (dynamo and AOTAutograd, no code
generation: seconds instead of a minute of C++ compilation); on the GPU machine ``pytest -m gpu`` runs the
real inductor backend at bf16.
"""

import shutil

import pytest
import torch

from bench import compiling
from bench.accel import Accel
from bench.speed import build_timing_setup
from methods import build_method


def _synthesis_and_grad(gen, ws, base_res=None):
    ws = ws.clone().requires_grad_(True)
    if base_res is None:
        img = gen.synthesis(ws)
    else:
        f = gen.features(ws.detach(), base_res)
        img = gen.synthesis_from(f, ws, base_res)
    (img.float() * torch.linspace(-1, 1, img.shape[-1], device=img.device)).square().sum().backward()
    return img.detach().float(), ws.grad


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": "aot_eager"})


@pytest.mark.parametrize("base_res", [None, 8])
def test_compiled_generator_matches_eager_on_cpu(aot_eager, base_res):
    gen, _, _ = build_timing_setup("tiny", torch.device("cpu"))
    ws = gen.w_avg[None, None].repeat(3, gen.num_ws, 1) + 0.5 * torch.randn(3, gen.num_ws, gen.w_dim)
    ref_img, ref_grad = _synthesis_and_grad(gen, ws, base_res)
    Accel(compile=True).prepare(gen)
    try:
        assert gen.compiled
        img, grad = _synthesis_and_grad(gen, ws, base_res)
    finally:
        Accel().prepare(gen)
    assert not gen.compiled and "blocks" in gen.__dict__["_compiled_graphs"]  # compiled once, switched off again
    torch.testing.assert_close(img, ref_img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-4 * ref_grad.abs().max().item())
    assert not any("compiled" in k for k in gen.state_dict())


def test_compiled_inversion_matches_eager_on_cpu(aot_eager):
    gen, _, _ = build_timing_setup("tiny", torch.device("cpu"))
    with torch.no_grad():
        targets = gen(torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    method = build_method("im2s", {"steps": 4})
    ref = method.invert(targets, gen, seeds=[0, 1])
    Accel(compile=True).prepare(gen)
    try:
        out = method.invert(targets, gen, seeds=[0, 1])
    finally:
        Accel().prepare(gen)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out.latents["wp"], ref.latents["wp"], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_generator_matches_eager_on_gpu(precision):
    """Inductor on CUDA: images within bf16 rounding of eager at the same precision, gradients likewise."""
    device = torch.device("cuda")
    gen, _, _ = build_timing_setup("config-f-256", device)
    torch.manual_seed(0)
    ws = gen.w_avg[None, None].repeat(4, gen.num_ws, 1) + 0.5 * torch.randn(4, gen.num_ws, gen.w_dim, device=device)
    accel = Accel(precision, channels_last=True)
    compiled = Accel(precision, channels_last=True, compile=True)
    tol = {"fp32": 1e-3, "bf16": 3e-2}[precision]
    results = []
    for a in (accel, compiled):
        a.prepare(gen)
        with a.context(device):
            results.append(_synthesis_and_grad(gen, ws))
    Accel().prepare(gen)
    (ref_img, ref_grad), (img, grad) = results
    assert (img - ref_img).abs().max().item() <= tol * ref_img.abs().max().item()
    rel = (grad - ref_grad).norm() / ref_grad.norm()
    assert rel.item() <= tol, rel.item()


def test_one_graph_serves_the_w_plus_methods_and_every_batch_size(aot_eager):
    """Compiling takes about a minute per graph on the GPU: Im2S, W and P-norm+ at batch 2, 6 and 5 share one."""
    from torch._dynamo.utils import counters

    gen, _, _ = build_timing_setup("tiny", torch.device("cpu"))
    torch._dynamo.reset()
    counters.clear()
    Accel(compile=True).prepare(gen)
    try:
        for name in ("im2s", "w", "pnorm"):
            for batch in (2, 6, 5):
                with torch.no_grad():
                    targets = gen(torch.randn(batch, gen.z_dim, generator=torch.Generator().manual_seed(batch)))
                build_method(name, {"steps": 2}).invert(targets.clamp(-1, 1), gen, seeds=list(range(batch)),
                                                        perceptual="none")
    finally:
        Accel().prepare(gen)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="Inductor's CPU code needs a C compiler")
@pytest.mark.parametrize("upconv", ["auto", "stencil"])
def test_inductor_with_its_layout_forced_matches_eager_on_cpu(upconv, monkeypatch):
    """Real Inductor (C++ on the CPU), as a run compiles: Inductor's forced channels-last layout
    (``compiling.INDUCTOR_CONFIG``) with a dynamic batch (2, then 3 reusing the graph), and the perceptual
    distance resizing 128 px images inside its graph (``bench.metrics.resize``); the generator's up-convolution
    as the CPU runs it (two-step) and in the stencil form that Inductor fuses. Values and gradients of the
    whole step against eager: measured within 3.4e-8 and 6.3e-6 (relative), in both forms (``-s`` prints them)."""
    from bench.generators import layers
    from bench.world.perceptual import load_world_perceptual

    monkeypatch.setattr(layers, "UPCONV", upconv)
    gen, _, _ = build_timing_setup("tiny", torch.device("cpu"))
    perceptual, reason = load_world_perceptual("cpu")
    if perceptual is None:
        pytest.skip(reason)

    def step(batch):
        ws = gen.w_avg.expand(batch, gen.num_ws, -1) + 0.3 * torch.randn(
            batch, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(batch))
        up = lambda img: torch.nn.functional.interpolate(img, size=128, mode="bilinear")  # noqa: E731
        with torch.no_grad():
            target = up(gen.synthesis(0.9 * ws))
        ws = ws.clone().requires_grad_(True)
        d = perceptual.against(target)(up(gen.synthesis(ws)))
        d.sum().backward()
        return d.detach(), ws.grad

    ref = [step(b) for b in (2, 3)]
    torch._dynamo.reset()
    Accel(compile=True).prepare(gen, perceptual)
    try:
        got = [step(b) for b in (2, 3)]
        graphs = list(gen.__dict__["_compiled_graphs"]) + list(perceptual.__dict__["_compiled_graphs"])
        failures = (gen.compile_failure, perceptual.compile_failure)
    finally:
        Accel().prepare(gen, perceptual)
    assert graphs == ["blocks", "distance from 128x128"] and failures == (None, None)
    for (d, g), (d_ref, g_ref) in zip(got, ref, strict=True):
        # the figures in the docstring: pytest -s tests/accel/test_compile.py -k inductor
        print(f"{upconv}, batch {len(d)}: values within {(d - d_ref).abs().max().item():.2g}, gradients within "
              f"{((g - g_ref).norm() / g_ref.norm()).item():.2g} (relative)")
        torch.testing.assert_close(d, d_ref, rtol=1e-5, atol=1e-7)
        assert ((g - g_ref).norm() / g_ref.norm()).item() < 1e-4
    from torch._inductor import config as inductor

    assert inductor.force_layout_optimization


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="Inductor's CPU code needs a C compiler")
def test_keep_activations_saves_each_leaky_relu_output_for_backward(monkeypatch):
    """``BENCH_SAVE_ACTIVATIONS=1``'s partitioner: every leaky ReLU's output of two frozen styled convolutions
    becomes an output of the forward graph (kept for backward, not recomputed there), and the gradients stay
    those of eager to bf16 rounding."""
    import torch._functorch.partitioners as partitioners
    from torch._inductor import config as inductor

    from bench import compiling
    from bench.generators.layers import StyledConv

    torch.manual_seed(0)
    convs = torch.nn.ModuleList([StyledConv(8, 8, 16) for _ in range(2)]).requires_grad_(False)
    noise = [torch.randn(1, 1, 8, 8) for _ in range(2)]

    def step(x, ws):
        for conv, w, n in zip(convs, ws, noise, strict=True):
            x = conv(x, w, n)
        return (x.float() ** 2).mean()

    seen = {}
    minimum_cut = partitioners.min_cut_rematerialization_partition

    def recording(gm, joint_inputs, **kwargs):
        marked = {n.name for n in gm.graph.nodes if n.meta.get("recompute") is not None}
        fw, bw = minimum_cut(gm, joint_inputs, **kwargs)
        seen["marked"], seen["saved"] = marked, {a.name for a in fw.graph.find_nodes(op="output")[0].args[0]
                                                 if hasattr(a, "name")}
        return fw, bw

    monkeypatch.setattr(partitioners, "min_cut_rematerialization_partition", recording)
    x = torch.randn(2, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    ws = [torch.randn(2, 16) for _ in range(2)]

    def grads(fn):
        wr = [w.clone().requires_grad_(True) for w in ws]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(x, wr)
        return torch.autograd.grad(loss, wr)

    torch._dynamo.reset()
    with inductor.patch(custom_partitioner_fn=compiling.keep_activations(), force_disable_caches=True):
        compiled = grads(torch.compile(step))
    assert len(seen["marked"]) == 2 and seen["marked"] <= seen["saved"]
    # the styles' gradients pass bf16 matrix products in both: a few bf16 spacings (2^-8 relative) apart
    for c, e in zip(compiled, grads(step), strict=True):
        assert (c - e).abs().max() <= 2**-5 * e.abs().max()
