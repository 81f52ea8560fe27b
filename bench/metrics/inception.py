"""Inception-v3 pool features for FID/KID, only from weights a user already has.

The FID network is the TensorFlow Inception-v3 graph of 2015-12-05 as ported to PyTorch by pytorch-fid
(``pt_inception-2015-12-05-6726825d.pth``) and torch-fidelity (``weights-inception-2015-12-05-6726825d.pth``).
Both are downloads, so they are never fetched here: the file is taken from ``BENCH_INCEPTION_WEIGHTS`` (a
path) or from torch hub's cache (``torch.hub.get_dir()/checkpoints``, set by ``TORCH_HOME``). Without one,
FID/KID are unavailable (the report uses EfficientNet-Lite0 features under their own name instead).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

INCEPTION_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_ENV = "BENCH_INCEPTION_WEIGHTS"
POOL_DIM = 2048


def find_inception_weights() -> tuple[Path | None, str]:
    """The Inception-v3 FID weight file, or ``(None, reason)`` naming where it looked."""
    given = os.environ.get(WEIGHTS_ENV)
    if given:
        path = Path(given).expanduser()
        return (path, "") if path.is_file() else (None, f"{WEIGHTS_ENV}={given} is not a file")
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (folder / name).is_file():
            return folder / name, ""
    return None, (f"FID/KID need the Inception-v3 FID weights ({' or '.join(INCEPTION_FILES)}), a download that "
                  f"is not available here: looked in {folder} (torch.hub.get_dir()/checkpoints, set by TORCH_HOME) "
                  f"and {WEIGHTS_ENV}")


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool leaves the padding out of the mean
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max3(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _mixed_a(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([b.branch1x1(x), b.branch5x5_2(b.branch5x5_1(x)),
                      b.branch3x3dbl_3(b.branch3x3dbl_2(b.branch3x3dbl_1(x))), b.branch_pool(_avg3(x))], 1)


def _mixed_c(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seven = b.branch7x7_3(b.branch7x7_2(b.branch7x7_1(x)))
    dbl = x
    for k in range(1, 6):
        dbl = getattr(b, f"branch7x7dbl_{k}")(dbl)
    return torch.cat([b.branch1x1(x), seven, dbl, b.branch_pool(_avg3(x))], 1)


def _mixed_e(b: nn.Module, x: torch.Tensor, pool) -> torch.Tensor:
    three = b.branch3x3_1(x)
    dbl = b.branch3x3dbl_2(b.branch3x3dbl_1(x))
    return torch.cat([b.branch1x1(x), b.branch3x3_2a(three), b.branch3x3_2b(three),
                      b.branch3x3dbl_3a(dbl), b.branch3x3dbl_3b(dbl), b.branch_pool(pool(x))], 1)


class FIDInception(nn.Module):
    """The FID Inception-v3 (TF graph 2015-12-05) on torchvision's Inception3 modules: 2048-d pool features.

    It differs from torchvision's own forward where the TF graph does: the average pools of the A, C and
    first E blocks exclude the padding, and the last E block (``Mixed_7c``) max-pools its pool branch.
    Input: [-1, 1] images, resized to 299x299 (bilinear, no antialias), as pytorch-fid feeds it.

    Not verified against the real weights (they cannot be had here); the architecture and loading are
    tested against pytorch-fid's module on random weights when pytorch-fid is importable.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                                   init_weights=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2"):
            x = getattr(n, name)(x)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = _mixed_a(getattr(n, name), x)
        x = n.Mixed_6a(x)
        for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = _mixed_c(getattr(n, name), x)
        x = _mixed_e(n.Mixed_7b, n.Mixed_7a(x), _avg3)
        x = _mixed_e(n.Mixed_7c, x, _max3)
        return x.mean(dim=(2, 3))


def load_inception_file(path: Path, device: torch.device | str = "cpu") -> FIDInception:
    """An :class:`FIDInception` with every tensor of ``path`` (``weights_only``, strict: names and shapes).

    Raises:
        ValueError: If the file is not a state dict of this architecture (the message names the file).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = FIDInception()
        model.net.load_state_dict(state, strict=True)
    except Exception as exc:  # unreadable file, missing/unexpected keys, wrong shapes: one message
        raise ValueError(f"{path}: not an Inception-v3 FID state dict ({type(exc).__name__}: {exc})") from exc
    return model.to(device).eval().requires_grad_(False)


def load_fid_inception(device: torch.device | str = "cpu"):
    """A ``bench.features.FeatureNet`` over the FID Inception-v3, or ``(None, reason)``."""
    from bench.features import FeatureNet

    path, reason = find_inception_weights()
    if path is None:
        return None, reason
    model = _cached(str(path), str(torch.device(device)))
    return FeatureNet("inception-v3", POOL_DIM,
                      f"Inception-v3 FID network ({path.name}), 2048-d pool features, images resized to 299x299 "
                      "(this loader was not verified against the real weights, only against pytorch-fid's "
                      "module on random weights)", model), ""


@functools.lru_cache(maxsize=2)
def _cached(path: str, device: str) -> FIDInception:
    return load_inception_file(Path(path), device)
