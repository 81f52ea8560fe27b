"""Which perceptual distance the methods' losses use, chosen once per run and named in every output.

Order for ``auto``: LPIPS-VGG with real ImageNet weights (as the StyleGAN2 projector and II2S use), then
LPIPS-AlexNet, then the embedded world's domain-trained perceptual network; if none is present the
methods run without a perceptual term and the run says so. Random-weight networks are never used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.metrics import BACKBONE_FILES, LPIPSDistance, load_lpips

PERCEPTUAL_CHOICES = ("auto", "lpips-vgg", "lpips-alex", "world", "none")


def lpips_weight_files(location: str | None) -> dict[str, str]:
    """Map ``alex``/``vgg`` to backbone files found in ``location`` (a folder or a single file)."""
    if not location:
        return {}
    path = Path(location)
    if path.is_file():
        for net, fname in BACKBONE_FILES.items():
            if path.name == fname:
                return {net: str(path)}
        names = sorted(BACKBONE_FILES.values())
        raise ValueError(f"--lpips-weights {path}: expected one of the torchvision files {names}")
    if not path.is_dir():
        raise ValueError(f"--lpips-weights {path}: no such file or folder")
    return {net: str(path / fname) for net, fname in BACKBONE_FILES.items() if (path / fname).is_file()}


def _world_distance(device: torch.device):
    from bench.world.perceptual import load_world_perceptual

    return load_world_perceptual(device)


def resolve_perceptual(choice: str, device: torch.device, lpips_weights: str | None = None,
                       world_domain: bool = True):
    """Return ``(distance or None, text)`` for ``choice`` in auto, lpips-vgg, lpips-alex, world, none.

    ``world_domain`` says the images are the embedded world's faces; only then does ``auto`` fall back
    to the world's perceptual network (it knows nothing of other domains).
    """
    if choice not in PERCEPTUAL_CHOICES:
        raise ValueError(f"--perceptual {choice!r}: expected one of {', '.join(PERCEPTUAL_CHOICES)}")
    if choice == "none":
        return None, "none (--perceptual none)"
    files = lpips_weight_files(lpips_weights)
    reasons = []
    for net in ("vgg", "alex"):
        if choice in ("auto", f"lpips-{net}"):
            module, reason = load_lpips(net, files.get(net), device=device)
            if module is not None:
                return LPIPSDistance(module, net), f"lpips-{net} (LPIPS v0.1 with ImageNet backbone weights)"
            reasons.append(reason)
    if choice == "world" or (choice == "auto" and world_domain):
        dist, reason = _world_distance(device)
        if dist is not None:
            return dist, f"{dist.name}: {dist.description}"
        reasons.append(reason)
    if choice != "auto":
        raise ValueError(f"--perceptual {choice}: unavailable: {' | '.join(reasons)}")
    return None, "none: no perceptual network available, methods use their pixel losses only (" + \
        " | ".join(reasons) + ")"
