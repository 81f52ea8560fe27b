"""BDInvert's released files: the base-code encoder checkpoint and the P-norm+ statistics.

Encoder (reference/methods.md §1.2): ``train_basecode_encoder.py`` saves ``{'encoder': state_dict,
'optimizer', 'scheduler', 'epoch'}`` (e.g. ``encoder_stylegan2_ffhq1024_basesize16.pth``) of
``encoder_simple``: three stages of 3 x [conv3x3 + BN + LReLU(0.2)] + AvgPool(2) whose widths double from
``filter_min`` (128) up to ``filter_max`` (512), then conv3x3 + BN + LReLU and a linear conv3x3, both as
wide as the base code (512 for FFHQ-1024). The state dict keys are ``model.{i}.*``; this is
:class:`methods.fwplus.BaseCodeEncoder` with ``head_width = out_channels``, whose keys are the same.
Widths are read from the weights' shapes and every key and shape is then checked.

The file does not say which base size it was trained for (the network is fully convolutional: it maps
8s x 8s to s x s for any s); the loader takes it from ``base_res`` or from a ``basesize{s}`` in the file
name, and otherwise leaves it open.

P-norm+ statistics (§1.6, ``pca_p_space.py``): a folder with ``mean_latent.npy`` (w_dim,),
``eigen_values.npy`` (w_dim,) and ``eigen_vectors.npy`` (w_dim, w_dim, eigenvectors as columns), read
without pickle. BDInvert's ``project_w2pN`` is ``(lrelu5(w) - mean) @ V / sqrt(lambda)``, which is
:meth:`methods.pnorm.PNormStats.whiten`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from bench.encoders.files import EncoderFileError, load_checked, read_torch_file
from methods.fwplus import BaseCodeEncoder
from methods.pnorm import PNormStats

FORMAT = "BDInvert base-code encoder checkpoint ({'encoder': state_dict of encoder_simple, ...})"
PNORM_FILES = ("mean_latent.npy", "eigen_values.npy", "eigen_vectors.npy")


def is_bdinvert_checkpoint(obj: object) -> bool:
    """Whether a loaded ``.pth`` object looks like BDInvert's encoder checkpoint."""
    return isinstance(obj, dict) and isinstance(obj.get("encoder"), dict) and "model.0.weight" in obj["encoder"]


def _conv_widths(state: dict[str, torch.Tensor], path: Path) -> list[tuple[int, int]]:
    """(in, out) channels of each 3x3 conv ``model.{i}.weight``, in layer order."""
    convs = sorted((int(m.group(1)), v) for k, v in state.items()
                   if (m := re.fullmatch(r"model\.(\d+)\.weight", k)) and v.ndim == 4)
    if len(convs) != 11:
        raise EncoderFileError(f"{path}: {FORMAT}: expected 11 convolutions (encoder_simple), found {len(convs)}")
    return [(int(v.shape[1]), int(v.shape[0])) for _, v in convs]


def base_res_from_name(path: Path) -> int | None:
    """The base size written in a released file's name (``..._basesize16.pth`` -> 16), if any."""
    m = re.search(r"basesize(\d+)", path.name)
    return int(m.group(1)) if m else None


def encoder_from_checkpoint(ckpt: object, path: str | Path, device: torch.device | str = "cpu",
                            base_res: int | None = None) -> BaseCodeEncoder:
    """Build the encoder from an already loaded checkpoint object (strict keys and shapes).

    Raises:
        EncoderFileError: naming the file if it is not BDInvert's checkpoint layout or the weights do not
            match ``encoder_simple``.
    """
    path = Path(path)
    if not is_bdinvert_checkpoint(ckpt):
        keys = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise EncoderFileError(f"{path}: not a {FORMAT}; top level has {keys}")
    state = ckpt["encoder"]
    widths = _conv_widths(state, path)
    if widths[0][0] != 3:
        raise EncoderFileError(f"{path}: {FORMAT}: the first convolution takes {widths[0][0]} channels, not RGB")
    stage = [w[1] for w in widths[:9]]
    enc = BaseCodeEncoder(widths[-1][1], width=stage[0], max_width=max(stage), head_width=widths[-2][1])
    enc = load_checked(enc, state, path, FORMAT, device)
    enc.base_res = base_res if base_res is not None else base_res_from_name(path)
    enc.family, enc.source = "basecode", f"{path.name} (BDInvert release format)"
    return enc


def load_bdinvert_encoder(path: str | Path, device: torch.device | str = "cpu",
                          base_res: int | None = None) -> BaseCodeEncoder:
    """Load BDInvert's ``encoder_*.pth`` (weights only), frozen and in eval mode.

    Args:
        path: the checkpoint.
        device: where the encoder goes.
        base_res: the base size it was trained for (default: from ``basesize{s}`` in the name, else None).

    Returns:
        A :class:`~methods.fwplus.BaseCodeEncoder` with ``base_res``, ``family`` ("basecode") and ``source``.
    """
    return encoder_from_checkpoint(read_torch_file(path, "BDInvert encoder"), path, device, base_res)


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EncoderFileError(f"{path}: missing (BDInvert P-norm+ statistics are {', '.join(PNORM_FILES)})")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise EncoderFileError(f"{path}: not a plain .npy array (pickled files are refused): {err}") from err


def load_bdinvert_pnorm(path: str | Path) -> PNormStats:
    """Read BDInvert's P-norm+ statistics from their folder (or one of its three files).

    Raises:
        EncoderFileError: naming the file that is missing, pickled, of the wrong shape, complex with a
            non-zero imaginary part, or has a non-positive eigenvalue.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    mean, vals, vecs = (_read_npy(folder / name) for name in PNORM_FILES)
    d = mean.shape[0] if mean.ndim == 1 else -1
    for name, arr, shape in zip(PNORM_FILES, (mean, vals, vecs), ((d,), (d,), (d, d)), strict=True):
        if arr.shape != shape or d < 1:
            raise EncoderFileError(f"{folder / name}: shape {arr.shape}, expected {shape} (from {PNORM_FILES[0]})")
        if np.iscomplexobj(arr) and np.abs(arr.imag).max() > 0:
            raise EncoderFileError(f"{folder / name}: complex values with a non-zero imaginary part")
    vals = vals.real.astype(np.float32)
    if (vals <= 0).any():
        raise EncoderFileError(f"{folder / PNORM_FILES[1]}: {int((vals <= 0).sum())} eigenvalues <= 0; "
                               "whitening needs positive ones")
    return PNormStats(torch.from_numpy(mean.real.astype(np.float32)), torch.from_numpy(vecs.real.astype(np.float32)),
                      torch.from_numpy(vals), samples=0)
