"""Tests for F/W+ (methods.fwplus): presets, the encoder requirement, edits on w_{M+} only, batch invariance.

All on a 32 px random-weight generator with a random-init base-code encoder in eval mode: these are
properties of the method's plumbing, not of trained weights (eval-mode BatchNorm uses running statistics,
so each image is encoded independently of the others in the batch).
"""

import pytest
import torch

from methods import EditDirection, Inversion, build_method, expand_method_names, get_preset
from methods.fwplus import BaseCodeEncoder
from methods.pnorm import compute_pnorm_stats
from tests.conftest import BlurPerceptual, make_tiny_generator

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


FIRST_WS = {4: 1, 8: 2, 16: 4}  # M = 2*log2(s) - 4; at 4x4 f is conv1's output, so M = 1


@pytest.fixture(scope="module")
def gen():
    """A private tiny generator with P-norm+ statistics from 20k samples attached (the 1M default is slow)."""
    g = make_tiny_generator(seed=5)
    g.pnorm_stats = compute_pnorm_stats(g, samples=20_000, batch=10_000, seed=1)
    return g


def encoder_for(g, s: int, seed: int = 0) -> BaseCodeEncoder:
    torch.manual_seed(seed)
    return BaseCodeEncoder(g.feature_shape(s)[0], width=8, max_width=16).eval().requires_grad_(False)


def targets(g, n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g(z).clamp(-1, 1)


def fwplus(g, s: int, steps: int):
    return build_method(f"fwplus{s}", {"steps": steps}, encoder=encoder_for(g, s))


def test_presets_metadata():
    assert expand_method_names("fwplus") == ["fwplus8", "fwplus16"]
    for s in (8, 16):
        p = get_preset(f"fwplus{s}")
        assert p.needs_encoder and p.latent_space == "F/W+" and p.supports_editing
        assert p.default_steps == 1200
        params = build_method(p.name).params
        assert params.base_res == s and params.pnorm_weight == 0.01 and params.basecode_weight == 10.0


@pytest.mark.parametrize("s", [4, 8, 16])
def test_missing_encoder_names_the_method(gen, s):
    method = build_method(f"fwplus{s}", {"steps": 1})
    with pytest.raises(ValueError, match=rf"'fwplus{s}' needs its base-code encoder"):
        method.invert(targets(gen, 1, seed=0), gen, seeds=[0])


@pytest.mark.parametrize("s", [4, 8, 16])
def test_invert_contract(gen, s):
    x = targets(gen, 2, seed=1)
    method = fwplus(gen, s, steps=3)
    inv = method.invert(x, gen, seeds=[0, 1], perceptual=BlurPerceptual())
    assert gen.first_ws_index(s) == FIRST_WS[s] and inv.info["first_ws"] == FIRST_WS[s]
    assert inv.latents["f"].shape == (2, *gen.feature_shape(s))
    assert inv.latents["wp"].shape == (2, gen.num_ws, gen.w_dim)
    assert inv.images.shape == x.shape and inv.failed == (None, None) and torch.isfinite(inv.loss).all()
    assert inv.info["pnorm_weight"] == 0.01 and inv.info["perceptual"] == BlurPerceptual.name
    with torch.no_grad():
        torch.testing.assert_close(method.render(inv, gen).clamp(-1, 1), inv.images)


def some_inversion(g, s: int) -> Inversion:
    """Latents of a short F/W+ run (f from the encoder, then 2 Adam steps)."""
    return fwplus(g, s, steps=2).invert(targets(g, 2, seed=2), g, seeds=[0, 1])


@pytest.mark.parametrize("s", [4, 8, 16])
def test_edit_moves_only_rows_from_M(gen, s):
    """Editing with a direction on every row equals adding its rows M.. by hand; f is left as it was."""
    inv = some_inversion(gen, s)
    m = FIRST_WS[s]
    f_before = inv.latents["f"].clone()
    g = torch.Generator().manual_seed(3)
    vec = torch.nn.functional.normalize(torch.randn(gen.num_ws, gen.w_dim, generator=g), dim=1)
    direction = EditDirection("all-rows", vec)
    method = fwplus(gen, s, steps=1)
    with torch.no_grad():
        edited = method.edit(inv, gen, direction, 2.0)
        manual = inv.latents["wp"].clone()
        manual[:, m:] += 2.0 * vec[m:]
        expected = gen.synthesis_from(inv.latents["f"], manual, s)
        unedited = method.render(inv, gen)
    assert torch.equal(edited, expected)
    assert torch.equal(inv.latents["f"], f_before)
    assert (edited - unedited).abs().max() > 1e-2  # the edit does something
    # a direction restricted to rows < M is not applied at all
    coarse = EditDirection("coarse", vec, layers=tuple(range(m)))
    with torch.no_grad():
        assert torch.equal(method.edit(inv, gen, coarse, 2.0), unedited)


@pytest.mark.parametrize("s", [4, 8, 16])
def test_rows_below_M_have_no_effect_on_render(gen, s):
    inv = some_inversion(gen, s)
    m = FIRST_WS[s]
    f, wp = inv.latents["f"], inv.latents["wp"]
    noise = torch.randn(wp.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = gen.synthesis_from(f, wp, s)
        scrambled = wp.clone()
        scrambled[:, :m] += 5.0 * noise[:, :m]
        assert torch.equal(gen.synthesis_from(f, scrambled, s), ref)
        row_m = wp.clone()
        row_m[:, m] += 5.0 * noise[:, m]  # control: row M itself does matter
        assert (gen.synthesis_from(f, row_m, s) - ref).abs().max() > 1e-2


@pytest.mark.parametrize("s", [4, 8, 16])
def test_batch_invariance(gen, s):
    """Four images inverted together give, per image, what each gives alone."""
    x = targets(gen, 4, seed=6)
    method = fwplus(gen, s, steps=3)
    perceptual = BlurPerceptual()
    together = method.invert(x, gen, seeds=[0, 1, 2, 3], perceptual=perceptual)
    for i in range(4):
        alone = method.invert(x[i : i + 1], gen, seeds=[i], perceptual=perceptual)
        for key in ("f", "wp"):
            # 1e-4: float rounding differs between batch sizes (other convolution algorithms), and Adam divides
            # each gradient by its running RMS, so an element whose gradient is near zero carries that rounding
            # into its step (seen: 2e-5 on 1 of 4096 elements of f, on one CPU); 1e-4 is 1/300 of the largest
            # movement of 3 steps at lr 0.01, while a batch leak moves whole maps by far more
            torch.testing.assert_close(alone.latents[key][0], together.latents[key][i], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(alone.images[0], together.images[i], atol=1e-4, rtol=0)
        torch.testing.assert_close(alone.loss[0], together.loss[i], atol=1e-6, rtol=1e-4)
