"""The embedded world's perceptual distance (trained on the procedural faces); see bench.world.zoo."""

from __future__ import annotations

import torch


def load_world_perceptual(device: torch.device):
    """Return ``(distance, "")`` if the world's perceptual network is shipped, else ``(None, reason)``."""
    from bench.world import zoo

    path = zoo.asset_path("perceptual")
    if path is None:
        return None, "the embedded world's perceptual network is not installed (bench zoo ls)"
    raise NotImplementedError  # replaced when the world's perceptual network is trained (issue #3)
