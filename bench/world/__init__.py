"""The embedded default world: procedural aligned faces and the small networks trained on them.

Modules: ``procfaces`` (the renderer), ``procfaces_source`` (the ``procfaces:N`` data source),
``networks`` (discriminator, attribute predictor), ``training`` (the training commands, run on the GPU
machine), ``perceptual`` (the domain perceptual distance), ``zoo`` (shipped assets and their manifest),
``defaults`` (what ``bench run`` uses without ``--generator``/``--data``). This package's ``__init__``
imports nothing heavy, so the training scripts run where only torch is installed.
"""

from bench.generators.stylegan2 import GeneratorConfig, default_channels

WORLD_CONFIG = GeneratorConfig(resolution=64, w_dim=256, n_mlp=4, channels=default_channels(64, 4096, 256))
