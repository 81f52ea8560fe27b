import copy
import json

import pytest
import torch

import methods.idinvert  # noqa: F401 - registers the preset until methods.base loads it itself
from bench.encoders import idinvert as enc_io
from methods import build_method, get_preset
from methods.idinvert import DomainGuidedEncoder, domain_regularizer, encode

FAST = {"steps": 5}


def targets_from(gen, n, seed=5):
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gen(z).clamp(-1, 1)


def tiny_encoder(gen, seed=0):
    """Random-init encoder for the 32 px generator, with non-trivial BN running statistics, in eval mode."""
    torch.manual_seed(seed)
    enc = DomainGuidedEncoder(gen.num_ws, gen.w_dim, gen.resolution, width=8, max_width=32, code_channels=4)
    enc.set_w_avg(gen.w_avg)
    with torch.no_grad():
        enc.train()
        for k in range(3):  # a few batches so that eval mode uses statistics that are not (0, 1)
            enc(torch.rand(8, 3, gen.resolution, gen.resolution, generator=torch.Generator().manual_seed(k)) * 2 - 1)
        enc.bn.weight.mul_(0.3)  # offsets of the order of W's spread, so G(E(x)) stays a plausible image
    return enc.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def encoder(tiny_generator):
    return tiny_encoder(tiny_generator)


def test_world_encoder_shapes_and_budget():
    enc = DomainGuidedEncoder(num_ws=10, w_dim=256, resolution=64).eval()
    out = enc(torch.zeros(3, 3, 64, 64))
    assert out.shape == (3, 10, 256) and out.dtype == torch.float32
    # shipped weights must stay under ~2.5 MB in float16
    assert sum(p.numel() for p in enc.parameters()) <= 1_250_000
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\), got \(1, 3, 32, 32\)"):
        enc(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        DomainGuidedEncoder(10, 256, resolution=48)


def test_encoder_output_is_offset_from_w_avg(encoder, tiny_generator):
    x = targets_from(tiny_generator, 2)
    shifted = copy.deepcopy(encoder)
    w_avg = torch.randn(tiny_generator.w_dim, generator=torch.Generator().manual_seed(3))
    shifted.set_w_avg(w_avg)
    with torch.no_grad():
        diff = shifted(x) - encoder(x)
    assert torch.allclose(diff, (w_avg - tiny_generator.w_avg).expand_as(diff), atol=1e-5)
    # encode() resizes inputs of another side to the encoder's
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    with torch.no_grad():
        assert encode(encoder, big).shape == (2, tiny_generator.num_ws, tiny_generator.w_dim)


def test_preset_metadata():
    p = get_preset("idinvert")
    assert p.needs_encoder and p.latent_space == "W+" and p.default_steps == 100
    m = build_method("idinvert")
    assert (m.params.lr, m.params.regularizer_weight, m.params.mse_weight) == (0.01, 2.0, 1.0)


def test_invert_contract_and_improves_on_encoder(encoder, tiny_generator, fake_perceptual):
    gen = tiny_generator
    x = targets_from(gen, 3)
    inv = build_method("idinvert", {"steps": 20}, encoder=encoder).invert(x, gen, seeds=[0, 1, 2],
                                                                         perceptual=fake_perceptual)
    assert inv.images.shape == x.shape and inv.images.abs().max() <= 1
    assert inv.latents["wp"].shape == inv.latents["wp_init"].shape == (3, gen.num_ws, gen.w_dim)
    assert inv.failed == (None, None, None) and torch.isfinite(inv.loss).all()
    with torch.no_grad():
        assert torch.allclose(inv.latents["wp_init"], encoder(x))
        err0 = (gen.synthesis(inv.latents["wp_init"]).clamp(-1, 1) - x).square().mean()
    assert (inv.images - x).square().mean() < err0
    assert all(p.grad is None for p in encoder.parameters())  # the encoder stays frozen


def test_batch_invariance(encoder, tiny_generator, fake_perceptual):
    """Inverting 4 images together gives, per image, what inverting each alone gives."""
    gen = tiny_generator
    x = targets_from(gen, 4, seed=9)
    method = build_method("idinvert", FAST, encoder=encoder)
    together = method.invert(x, gen, seeds=[0, 1, 2, 3], perceptual=fake_perceptual)
    for i in range(4):
        alone = method.invert(x[i : i + 1], gen, seeds=[i], perceptual=fake_perceptual)
        assert torch.allclose(alone.latents["wp"][0], together.latents["wp"][i], atol=1e-5, rtol=1e-4)
        assert torch.allclose(alone.images[0], together.images[i], atol=1e-4)


def test_regularizer_changes_result(encoder, tiny_generator, fake_perceptual):
    gen = tiny_generator
    x = targets_from(gen, 2, seed=4)
    with_reg = build_method("idinvert", FAST, encoder=encoder).invert(x, gen, seeds=[0, 1], perceptual=fake_perceptual)
    no_reg = build_method("idinvert", {**FAST, "regularizer_weight": 0.0}, encoder=encoder).invert(
        x, gen, seeds=[0, 1], perceptual=fake_perceptual)
    assert torch.equal(with_reg.latents["wp_init"], no_reg.latents["wp_init"])
    assert (with_reg.latents["wp"] - no_reg.latents["wp"]).abs().max() > 1e-4


def test_regularizer_gradient_flows_through_encoder(encoder, tiny_generator):
    """d/dwp of mean((wp - E(G(wp)))^2) matches central differences in float64, and E's path contributes."""
    gen, enc = copy.deepcopy(tiny_generator).double(), copy.deepcopy(encoder).double()
    wp = (gen.w_avg + 0.5 * torch.randn(1, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(1),
                                         dtype=torch.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(domain_regularizer(wp, gen, enc).sum(), wp)
    v = torch.randn(wp.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eps = 1e-5
    with torch.no_grad():
        fd = (domain_regularizer(wp + eps * v, gen, enc) - domain_regularizer(wp - eps * v, gen, enc)) / (2 * eps)
    assert torch.allclose((grad * v).sum(), fd.sum(), rtol=1e-5, atol=1e-9)
    # without the path through E(G(wp)) the gradient would be 2 (wp - E(G(wp))) / numel
    with torch.no_grad():
        direct = 2 * (wp - enc(gen.synthesis(wp))) / wp[0].numel()
    assert (grad - direct).abs().max() > 1e-3 * direct.abs().max()


def test_missing_or_mismatched_encoder(tiny_generator):
    x = targets_from(tiny_generator, 1)
    with pytest.raises(ValueError, match="needs its domain-guided encoder"):
        build_method("idinvert", FAST).invert(x, tiny_generator, seeds=[0])
    wrong = DomainGuidedEncoder(tiny_generator.num_ws + 2, tiny_generator.w_dim, 32, 8, 16, 4)
    with pytest.raises(ValueError, match="trained for another generator"):
        build_method("idinvert", FAST, encoder=wrong).invert(x, tiny_generator, seeds=[0])


def test_save_load_roundtrip_and_strictness(encoder, tiny_generator, tmp_path):
    path = tmp_path / "enc.safetensors"
    enc_io.save_encoder(encoder, path, {"steps": 7})
    loaded = enc_io.load_encoder(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.config() == encoder.config() and loaded.trained_steps == 7
    x = targets_from(tiny_generator, 2)
    with torch.no_grad():
        assert torch.allclose(loaded(x), encoder(x), atol=2e-2)  # float16 storage
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        meta, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    save_file(state, str(tmp_path / "wrongfmt.safetensors"), metadata={**meta, "format": json.dumps("other")})
    with pytest.raises(ValueError, match="not an IDinvert encoder file"):
        enc_io.load_encoder(tmp_path / "wrongfmt.safetensors")
    save_file(state, str(tmp_path / "shape.safetensors"), metadata={**meta, "code_channels": "8"})
    with pytest.raises(ValueError, match="keys or shapes do not match"):
        enc_io.load_encoder(tmp_path / "shape.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable"):
        enc_io.load_encoder(tmp_path / "junk.safetensors")


def test_training_runs_logs_and_resumes(tiny_generator, fake_perceptual, tmp_path):
    gen = copy.deepcopy(tiny_generator)
    s = enc_io.TrainSettings(iterations=2, batch=4, workers=0, width=8, max_width=16, code_channels=4, log_every=1)
    lines = []
    enc = enc_io.train_idinvert_encoder(gen, fake_perceptual, tmp_path, minutes=1.0, settings=s, log=lines.append)
    assert enc.trained_steps == 2 and not enc.training and len(lines) == 2
    rec = json.loads(lines[-1])
    assert rec["step"] == 2 and all(torch.isfinite(torch.tensor(rec[k])) for k in ("loss_e", "loss_d", "r1", "adv"))
    assert torch.equal(enc.w_avg, gen.w_avg)
    s3 = enc_io.TrainSettings(**{**s.__dict__, "iterations": 3})
    enc3 = enc_io.train_idinvert_encoder(gen, fake_perceptual, tmp_path, minutes=1.0, settings=s3, log=lines.append)
    assert enc3.trained_steps == 3 and len(lines) == 3  # resumed at step 2: one more step
    logged = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]
    # on another machine: continue from the float16 encoder file (its step count), without the checkpoint
    enc_io.save_encoder(enc3, tmp_path / "enc.safetensors", {"steps": enc3.trained_steps})
    s4 = enc_io.TrainSettings(**{**s.__dict__, "iterations": 4})
    enc4 = enc_io.train_idinvert_encoder(gen, fake_perceptual, tmp_path / "elsewhere", minutes=1.0, settings=s4,
                                         init_encoder=tmp_path / "enc.safetensors", log=lines.append)
    assert enc4.trained_steps == 4 and json.loads(lines[-1])["step"] == 4


def test_shipped_encoder_beats_mean_latent():
    from bench.world import zoo

    path = zoo.asset_path("idinvert_encoder")
    if path is None:
        pytest.skip("no IDinvert encoder is shipped yet (bench/world/assets manifest has no 'idinvert_encoder'; "
                    "train it on the GPU: python -m bench.encoders.idinvert)")
    from bench.world.defaults import default_generator
    from bench.world.training import heldout_faces

    gen = default_generator()
    enc = enc_io.load_encoder(path)
    x, _ = heldout_faces(32)
    with torch.no_grad():
        rec = gen.synthesis(encode(enc, x)).clamp(-1, 1)
        mean = gen.synthesis(gen.w_avg.expand(len(x), gen.num_ws, -1)).clamp(-1, 1)
    err_enc = (rec - x).square().flatten(1).mean(1)
    err_mean = (mean - x).square().flatten(1).mean(1)
    assert err_enc.mean() < 0.5 * err_mean.mean()
    assert (err_enc < err_mean).float().mean() >= 0.9
