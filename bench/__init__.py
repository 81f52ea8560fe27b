"""GAN inversion under geometric transforms: the benchmark's wiring (CLI, runner, data, generators, metrics).

Python API (``docs/api.md`` has a runnable walk-through)::

    from bench import RunConfig, run
    run_dir = run(RunConfig(methods="im2s", transforms=("rotate:20",)))

    import bench
    gen = bench.default_generator()        # the embedded world's 64 px StyleGAN2

Importing ``bench`` loads neither torch nor the models: the functions below import them when called, so
that ``bench --help`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.config import RunConfig

if TYPE_CHECKING:
    from pathlib import Path

    from bench.generators.stylegan2 import StyleGAN2Generator


def run(config: RunConfig, **kwargs: Any) -> Path:
    """Run the benchmark (see :func:`bench.runner.run`); returns the run directory."""
    from bench.runner import run as _run

    return _run(config, **kwargs)


def default_generator() -> StyleGAN2Generator:
    """The embedded world's generator (64 px StyleGAN2 trained on procfaces), in eval mode on the CPU.

    It is the generator ``bench run`` uses without ``--generator``; until the world's weights are installed
    it is a seeded random-weight stand-in whose ``description`` says so.
    """
    from bench.world.defaults import default_generator as _default_generator

    return _default_generator().eval().requires_grad_(False)


__all__ = ["RunConfig", "default_generator", "run"]
