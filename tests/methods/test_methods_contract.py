import pytest
import torch

from methods import EditDirection, build_method, expand_method_names, get_preset, list_presets
from methods.base import Method, Preset, register_preset

FAST = {"im2s": {"steps": 8}, "w": {"steps": 8, "w_std_samples": 200}}


def targets_from(gen, n, seed=5):
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gen(z).clamp(-1, 1)


def optimisation_presets():
    return [p.name for p in list_presets() if p.default_steps > 0 and not p.needs_encoder]


def test_registry_lists_builtin_presets():
    names = [p.name for p in list_presets()]
    assert {"im2s", "w"} <= set(names)
    for p in list_presets():
        assert p.latent_space and p.description


def test_unknown_method_suggests():
    with pytest.raises(ValueError, match=r"Did you mean 'im2s'.*Available"):
        get_preset("im2z")
    with pytest.raises(ValueError, match="unknown method"):
        expand_method_names("im2s,bogus")


def test_register_rejects_non_method():
    with pytest.raises(TypeError, match="not a subclass"):
        register_preset(Preset("x", dict, {}, "W", "bad"))  # type: ignore[arg-type]


def test_build_overrides_and_rejects_unknown():
    m = build_method("im2s", {"steps": 7})
    assert isinstance(m, Method) and m.params.steps == 7 and m.params.lr == 0.01
    with pytest.raises(ValueError, match="no parameter"):
        build_method("im2s", {"stepz": 7})


@pytest.mark.parametrize("name", ["im2s", "w"])
def test_invert_contract(name, tiny_generator, fake_perceptual):
    gen = tiny_generator
    x = targets_from(gen, 3)
    inv = build_method(name, FAST[name]).invert(x, gen, seeds=[1, 2, 3], perceptual=fake_perceptual)
    assert inv.images.shape == x.shape and inv.images.abs().max() <= 1
    assert inv.loss.shape == (3,) and torch.isfinite(inv.loss).all()
    assert inv.failed == (None, None, None)
    assert inv.latents["wp"].shape == (3, gen.num_ws, gen.w_dim)
    assert inv.info["perceptual"] == fake_perceptual.name
    # reconstruction improves on the starting point (mean latent)
    with torch.no_grad():
        start = gen.synthesis(gen.w_avg.expand(3, gen.num_ws, -1))
    err0 = (start - x).square().mean()
    err1 = (inv.images - x).square().mean()
    assert err1 < err0


@pytest.mark.parametrize("name", ["im2s", "w"])
def test_batch_invariance(name, tiny_generator, fake_perceptual):
    """Inverting 4 images together gives, per image, what inverting each alone gives."""
    gen = tiny_generator
    x = targets_from(gen, 4)
    method = build_method(name, FAST[name])
    seeds = [11, 12, 13, 14]
    together = method.invert(x, gen, seeds=seeds, perceptual=fake_perceptual)
    for i in range(4):
        alone = method.invert(x[i : i + 1], gen, seeds=seeds[i : i + 1], perceptual=fake_perceptual)
        assert torch.allclose(alone.latents["wp"][0], together.latents["wp"][i], atol=1e-5, rtol=1e-4)
        assert torch.allclose(alone.images[0], together.images[i], atol=1e-4)


def test_diverging_image_does_not_poison_batch(tiny_generator):
    gen = tiny_generator
    x = targets_from(gen, 3)
    method = build_method("im2s", {"steps": 5})

    class NanForSecond:
        name = "nan-for-image-1"

        def __call__(self, a, b):
            d = (a - b).square().flatten(1).mean(1)
            return d + torch.tensor([0.0, float("nan"), 0.0])

    bad = method.invert(x, gen, seeds=[0, 1, 2], perceptual=NanForSecond())
    class Plain:
        name = "plain"

        def __call__(self, a, b):
            return (a - b).square().flatten(1).mean(1)

    good = method.invert(x, gen, seeds=[0, 1, 2], perceptual=Plain())
    assert bad.failed[1] and bad.failed[0] is None and bad.failed[2] is None
    assert torch.allclose(bad.latents["wp"][0], good.latents["wp"][0], atol=1e-6)


def test_no_perceptual_is_recorded(tiny_generator):
    x = targets_from(tiny_generator, 1)
    inv = build_method("im2s", {"steps": 2}).invert(x, tiny_generator, seeds=[0], perceptual=None)
    assert "none" in inv.info["perceptual"]
    inv = build_method("w", {"steps": 2, "w_std_samples": 100}).invert(x, tiny_generator, seeds=[0])
    assert "MSE" in inv.info["perceptual"]


def test_targets_checked(tiny_generator):
    m = build_method("im2s", {"steps": 1})
    with pytest.raises(ValueError, match=r"targets must be \(N, 3, 32, 32\)"):
        m.invert(torch.zeros(1, 3, 16, 16), tiny_generator, seeds=[0])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        m.invert(torch.full((1, 3, 32, 32), 3.0), tiny_generator, seeds=[0])


def test_edit_moves_only_selected_rows(tiny_generator):
    gen = tiny_generator
    x = targets_from(gen, 2)
    m = build_method("im2s", {"steps": 1})
    inv = m.invert(x, gen, seeds=[0, 1])
    d = EditDirection("test", torch.nn.functional.normalize(torch.randn(gen.w_dim), dim=0), layers=(4, 5))
    with torch.no_grad():
        assert torch.allclose(m.edit(inv, gen, d, 0.0), m.render(inv, gen))
        edited = m.edit(inv, gen, d, 3.0)
        manual = inv.latents["wp"].clone()
        manual[:, 4:6] += 3.0 * d.vector
        assert torch.allclose(edited, gen.synthesis(manual), atol=1e-6)
