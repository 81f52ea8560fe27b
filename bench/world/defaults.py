"""Defaults that make the embedded world the out-of-the-box setting of ``bench run``.

``default_generator()`` is the shipped trained StyleGAN2 if present, otherwise a seeded random-weight
StyleGAN2 that every output labels as such. Importing this module registers the ``procfaces`` source.
"""

from __future__ import annotations

import torch

from bench.data import register_source
from bench.generators.checkpoints import load_safetensors
from bench.generators.stylegan2 import StyleGAN2Generator
from bench.world import WORLD_CONFIG, zoo
from bench.world.procfaces_source import procfaces_source

register_source("procfaces", procfaces_source, replace=True)


def default_generator() -> StyleGAN2Generator:
    """The shipped world generator, or (until one is trained) a seeded random-weight stand-in."""
    path = zoo.asset_path("generator")
    if path is not None:
        gen = load_safetensors(path)
        gen.description = f"embedded world StyleGAN2 {gen.resolution}px ({path.name}, trained on procfaces)"
        return gen
    torch.manual_seed(0)
    gen = StyleGAN2Generator(WORLD_CONFIG, noise_seed=0)
    gen.compute_w_avg(10_000, seed=0)
    gen.description = ("RANDOM-WEIGHT StyleGAN2 64px (seed 0): the embedded world's trained generator is not "
                       "installed, so these numbers say nothing about inversion quality")
    return gen.eval()


def default_data_spec(n: int) -> str:
    """Default ``--data``: n of the world's held-out procedural faces."""
    return f"procfaces:{n}"
