"""pSp: encoder architecture, the feed-forward method, the Ranger optimiser, training, save/load, shipped encoder."""

import json

import pytest
import torch

import methods.psp  # noqa: F401 - registers the preset until methods.base loads it as a built-in
from bench.encoders import psp as psp_train
from methods import EditDirection, build_method, get_preset
from methods.optim import mse_per_image
from methods.psp import PSP, PSPConfig, PSPEncoder, style_split

TINY_ARCH = dict(stem_width=8, stage_widths=(8, 12, 16, 16), stage_units=(1, 1, 1, 1))


def tiny_encoder(gen, seed=0, **kw):
    torch.manual_seed(seed)
    enc = PSPEncoder(PSPConfig(gen.num_ws, gen.w_dim, gen.resolution, **{**TINY_ARCH, **kw}))
    enc.set_latent_avg(gen.w_avg)
    with torch.no_grad():  # non-trivial BN statistics, so that eval vs train mode matters
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return enc


def faces(n, resolution, seed=3):
    from bench.world import procfaces

    return procfaces.render(procfaces.sample_params(n, seed), resolution)


@pytest.mark.parametrize(("num_ws", "expected"), [(18, (3, 4, 11)), (10, (2, 2, 6)), (8, (1, 2, 5)), (3, (1, 1, 1))])
def test_style_split_follows_psp_proportions(num_ws, expected):
    assert style_split(num_ws) == expected
    with pytest.raises(ValueError, match="at least 3"):
        style_split(2)


def test_world_encoder_shapes_heads_and_size():
    enc = PSPEncoder(PSPConfig(num_ws=10, w_dim=256, input_size=64)).eval()
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params <= 1_200_000, n_params  # <= ~2.5 MB in float16
    c3, p2, p1 = enc.pyramid(torch.zeros(1, 3, 64, 64))
    assert (c3.shape[-1], p2.shape[-1], p1.shape[-1]) == (4, 8, 16)  # strides 16, 8, 4 as in pSp
    # each head has log2(side of its map) stride-2 convs: 2 coarse rows from 4x4, 2 middle from 8x8, 6 fine from 16x16
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in head.modules()) for head in enc.styles]
    assert convs == [2, 2, 3, 3] + [4] * 6
    with torch.no_grad():
        out = enc(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert out.shape == (3, 10, 256) and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        enc(torch.zeros(1, 3, 32, 32))


def test_output_starts_from_latent_avg(tiny_generator):
    gen = tiny_generator
    enc = tiny_encoder(gen).eval()
    with torch.no_grad():
        for head in enc.styles:
            head.linear.weight.zero_()
            head.linear.bias.zero_()
        out = enc(faces(2, gen.resolution))
    assert torch.equal(out, gen.w_avg.expand(2, gen.num_ws, -1))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="power of two"):
        PSPConfig(10, 256, input_size=48)
    with pytest.raises(ValueError, match="4 stages"):
        PSPConfig(10, 256, stage_units=(1, 0, 1, 1))


def test_preset_metadata():
    p = get_preset("psp")
    assert p.needs_encoder and p.default_steps == 0 and p.latent_space == "W+" and p.supports_editing
    with pytest.raises(ValueError, match="steps must be 0"):
        build_method("psp", {"steps": 5})


def test_invert_is_one_forward_pass(tiny_generator, fake_perceptual):
    gen = tiny_generator
    enc = tiny_encoder(gen)
    x = faces(3, gen.resolution)
    inv = build_method("psp", encoder=enc).invert(x, gen, seeds=[0, 1, 2], perceptual=fake_perceptual)
    with torch.no_grad():
        wp = enc.eval()(x)
        images = gen.synthesis(wp)
    assert torch.allclose(inv.latents["wp"], wp, atol=1e-6)
    assert torch.allclose(inv.images, images.clamp(-1, 1), atol=1e-5)
    expected = mse_per_image(images, x) + 0.8 * fake_perceptual(images, x)
    assert torch.allclose(inv.loss, expected, rtol=1e-4, atol=1e-6)
    assert inv.failed == (None,) * 3 and inv.info["steps"] == 0 and inv.info["perceptual"] == fake_perceptual.name


def test_forward_is_deterministic_and_per_image(tiny_generator):
    """Two calls give the same codes; a batch of 4 equals 4 single images (encoder handed over in train mode)."""
    gen = tiny_generator
    method = build_method("psp", encoder=tiny_encoder(gen).train())
    x = faces(4, gen.resolution)
    first = method.invert(x, gen, seeds=[0, 1, 2, 3])
    second = method.invert(x, gen, seeds=[9, 9, 9, 9])
    assert torch.equal(first.latents["wp"], second.latents["wp"])
    for i in range(4):
        alone = method.invert(x[i : i + 1], gen, seeds=[i])
        assert torch.allclose(alone.latents["wp"][0], first.latents["wp"][i], atol=1e-5, rtol=1e-5)
        assert torch.allclose(alone.images[0], first.images[i], atol=1e-5)


def test_edit_adds_direction_in_wplus(tiny_generator):
    gen = tiny_generator
    method = build_method("psp", encoder=tiny_encoder(gen))
    inv = method.invert(faces(2, gen.resolution), gen, seeds=[0, 1])
    vec = torch.nn.functional.normalize(torch.randn(gen.w_dim, generator=torch.Generator().manual_seed(1)), dim=0)
    direction = EditDirection("smile", vec, layers=(0, 1, 2))
    with torch.no_grad():
        edited = method.edit(inv, gen, direction, 2.0)
        wp = inv.latents["wp"].clone()
        wp[:, :3] += 2.0 * vec
        assert torch.allclose(edited, gen.synthesis(wp), atol=1e-5)
        assert torch.allclose(method.edit(inv, gen, direction, 0.0), method.render(inv, gen), atol=1e-6)


def test_invert_errors(tiny_generator):
    gen = tiny_generator
    x = faces(1, gen.resolution)
    with pytest.raises(ValueError, match="needs a pSp encoder"):
        build_method("psp").invert(x, gen, seeds=[0])
    other = PSPEncoder(PSPConfig(gen.num_ws + 2, gen.w_dim, gen.resolution, **TINY_ARCH))
    with pytest.raises(ValueError, match="another generator"):
        PSP("psp", PSP.Params(), encoder=other).invert(x, gen, seeds=[0])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        build_method("psp", encoder=tiny_encoder(gen)).invert(x * 3, gen, seeds=[0])


class NaNForBlankImages(torch.nn.Module):
    """Wraps an encoder; returns NaN codes for all-zero images (a stand-in for a broken forward pass)."""

    def __init__(self, enc):
        super().__init__()
        self.enc, self.config = enc, enc.config

    def forward(self, x):
        blank = x.flatten(1).abs().sum(1) == 0
        return torch.where(blank[:, None, None], float("nan"), self.enc(x))


def test_nonfinite_code_is_reported_per_image(tiny_generator):
    gen = tiny_generator
    x = faces(2, gen.resolution)
    x[1] = 0.0
    inv = build_method("psp", encoder=NaNForBlankImages(tiny_encoder(gen))).invert(x, gen, seeds=[0, 1])
    assert inv.failed[0] is None and "not finite" in inv.failed[1]
    assert torch.isfinite(inv.loss[0]) and torch.isnan(inv.loss[1]) and torch.isfinite(inv.images).all()


def _quadratic_grad(p):
    p.grad = None
    (0.5 * (p * torch.arange(1.0, 7.0).view(2, 3)).square().sum()).backward()
    return p.grad.clone()


def test_ranger_first_step_closed_form():
    """RAdam's first steps are un-rectified momentum steps: p1 = p0 - lr * g; with centralisation g - mean_row(g)."""
    p0 = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]])
    for centralise in (False, True):
        p = p0.clone().requires_grad_(True)
        opt = psp_train.Ranger([p], lr=0.1, centralise=centralise, k=100)
        g = _quadratic_grad(p)
        opt.step()
        if centralise:
            g = g - g.mean(dim=1, keepdim=True)
        assert torch.allclose(p.detach(), p0 - 0.1 * g, atol=1e-6)


def test_ranger_lookahead_against_plain_radam():
    """Every k steps the weights become slow + alpha * (fast - slow), fast being plain RAdam's trajectory."""
    p0 = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]])
    p = p0.clone().requires_grad_(True)
    q = p0.clone().requires_grad_(True)
    ranger = psp_train.Ranger([p], lr=0.05, k=3, alpha=0.5, centralise=False)
    radam = torch.optim.RAdam([q], lr=0.05, betas=(0.95, 0.999), eps=6.1e-5)
    for _ in range(3):
        _quadratic_grad(p)
        ranger.step()
        _quadratic_grad(q)
        radam.step()
    assert torch.allclose(p.detach(), p0 + 0.5 * (q.detach() - p0), atol=1e-6)
    state = ranger.state_dict()
    again = psp_train.Ranger([p0.clone().requires_grad_(True)], lr=0.05, k=3)
    again.load_state_dict(state)
    assert again.steps == 3 and torch.equal(again.slow[0], ranger.slow[0])


def test_losses_and_training_reduce_loss(tiny_generator, fake_perceptual):
    gen = tiny_generator
    enc = tiny_encoder(gen).train()
    x = faces(4, gen.resolution)
    opts = psp_train.TrainOptions(lr=3e-3, w_norm_weight=0.01)
    terms = psp_train.psp_losses(enc, gen, fake_perceptual, x, opts)
    with torch.no_grad():
        codes = enc(x)
        rec = gen.synthesis(codes)
    assert torch.allclose(terms["l2"], (rec - x).square().mean(), rtol=1e-4)
    assert torch.allclose(terms["w_norm"], (codes - gen.w_avg).flatten(1).norm(dim=1).mean(), rtol=1e-4)
    total = terms["l2"] + 0.8 * terms["perceptual"] + 0.01 * terms["w_norm"]
    assert torch.allclose(terms["total"], total, rtol=1e-5)
    opt = psp_train.Ranger(enc.parameters(), lr=opts.lr)
    first = terms["total"].item()
    for _ in range(25):
        loss = psp_train.psp_losses(enc, gen, fake_perceptual, x, opts)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_train_resumes_and_logs(tmp_path, tiny_generator, fake_perceptual):
    gen = tiny_generator
    opts = psp_train.TrainOptions(batch=2, workers=0, max_steps=2, log_every=1, eval_every=2, eval_n=2)
    arch = PSPConfig(gen.num_ws, gen.w_dim, gen.resolution, **TINY_ARCH)
    enc = psp_train.train_psp_encoder(gen, fake_perceptual, tmp_path, 1.0, opts, arch, log=lambda s: None)
    assert enc.trained_steps == 2 and not enc.training and (tmp_path / "psp.pt").is_file()
    longer = psp_train.TrainOptions(**{**opts.__dict__, "max_steps": 3, "lr": 2e-4})
    enc = psp_train.train_psp_encoder(gen, fake_perceptual, tmp_path, 1.0, longer, arch, log=lambda s: None)
    assert enc.trained_steps == 3
    state = torch.load(tmp_path / "psp.pt", weights_only=True)
    assert state["step"] == 3 and state["opt"]["radam"]["param_groups"][0]["lr"] == 2e-4  # this call's lr
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "total" in r] == [1, 2, 3]
    held = [r["heldout"] for r in records if "heldout" in r]
    assert len(held) == 1 and held[0]["images"] == 2 and "perceptual_psp" in held[0]
    with pytest.raises(ValueError, match="architecture"):
        psp_train.train_psp_encoder(gen, fake_perceptual, tmp_path, 1.0, longer,
                                    PSPConfig(gen.num_ws, gen.w_dim, gen.resolution), log=lambda s: None)


def test_save_load_roundtrip_and_errors(tmp_path, tiny_generator):
    gen = tiny_generator
    enc = tiny_encoder(gen).eval()
    path = tmp_path / "psp.safetensors"
    psp_train.save_encoder(enc, path, {"steps": 7})
    loaded = psp_train.load_encoder(path)
    assert loaded.config == enc.config and loaded.trained_steps == 7 and not loaded.training
    assert torch.equal(loaded.latent_avg, enc.latent_avg)  # stored in float32
    x = faces(2, gen.resolution)
    with torch.no_grad():
        assert torch.allclose(loaded(x), enc(x), atol=2e-2)  # weights in float16
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(1)}, str(bad), metadata={"format": json.dumps("bench-basecode-encoder")})
    with pytest.raises(ValueError, match="not a pSp encoder file"):
        psp_train.load_encoder(bad)
    with pytest.raises(ValueError, match="no such encoder file"):
        psp_train.load_encoder(tmp_path / "missing.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    state["styles.0.linear.bias"] = torch.zeros(3, dtype=torch.float16)
    save_file(state, str(bad), metadata=meta)
    with pytest.raises(ValueError, match="do not match"):
        psp_train.load_encoder(bad)


def test_shipped_encoder_beats_mean_latent():
    from bench.world import zoo

    path = zoo.asset_path("psp_encoder")
    if path is None:
        pytest.skip("no pSp encoder is shipped yet (bench/world/assets/psp_encoder.safetensors): it is trained on "
                    "the GPU machine with `python -m bench.encoders.psp`")
    from bench.world import procfaces
    from bench.world.defaults import default_generator

    gen = default_generator()
    # held-out benchmark faces 0..15 (seeds >= 2**30, never used for training)
    params = procfaces.FaceParams.cat([procfaces.sample_params(1, procfaces.HELDOUT_SEED_OFFSET + i)
                                       for i in range(16)])
    x = procfaces.render(params, gen.resolution)
    inv = build_method("psp", encoder=psp_train.load_encoder(path)).invert(x, gen, seeds=list(range(16)))
    with torch.no_grad():
        mean = gen.synthesis(gen.w_avg.expand(16, gen.num_ws, -1)).clamp(-1, 1)
    err_psp, err_mean = mse_per_image(inv.images, x), mse_per_image(mean, x)
    assert err_psp.mean() < 0.5 * err_mean.mean()
    assert (err_psp < err_mean).float().mean() >= 0.9
