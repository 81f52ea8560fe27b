"""A method never drops its perceptual term silently (issue #18)."""

import warnings

import pytest
import torch

from methods import build_method
from methods.base import NO_PERCEPTUAL, PerceptualDroppedWarning


def _targets(gen, n=1):
    with torch.no_grad():
        return gen.synthesis(gen.w_avg.expand(n, gen.num_ws, -1)).clamp(-1, 1)


def test_leaving_the_perceptual_distance_out_warns(tiny_generator):
    method = build_method("im2s", {"steps": 1})
    with pytest.warns(PerceptualDroppedWarning, match=r"im2s.invert: no perceptual distance given.*weight 1"):
        method.invert(_targets(tiny_generator), tiny_generator, seeds=[0])


@pytest.mark.parametrize("choice", [NO_PERCEPTUAL, None])
def test_an_explicit_none_runs_quietly(tiny_generator, choice):
    method = build_method("im2s", {"steps": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inv = method.invert(_targets(tiny_generator), tiny_generator, seeds=[0], perceptual=choice)
    assert inv.images.shape == (1, 3, 32, 32)


def test_no_warning_when_the_method_has_no_perceptual_term(tiny_generator):
    method = build_method("im2s", {"steps": 1, "perceptual_weight": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.invert(_targets(tiny_generator), tiny_generator, seeds=[0])


def test_other_text_is_refused(tiny_generator):
    with pytest.raises(ValueError, match="perceptual='lpips': expected a perceptual distance, None or 'none'"):
        build_method("im2s", {"steps": 1}).invert(_targets(tiny_generator), tiny_generator, seeds=[0],
                                                  perceptual="lpips")
