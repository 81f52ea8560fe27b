"""GAN inversion under geometric transforms: the benchmark's wiring (CLI, runner, data, generators, metrics).

Python API::

    from bench import RunConfig, run
    run_dir = run(RunConfig(methods="im2s", transforms=("rotate:20",)))
"""

from bench.config import RunConfig


def run(config: RunConfig, **kwargs):
    """Run the benchmark (see :func:`bench.runner.run`); returns the run directory."""
    from bench.runner import run as _run

    return _run(config, **kwargs)


__all__ = ["RunConfig", "run"]
