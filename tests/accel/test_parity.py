"""Quality parity of the fast batched path (issue #7): ``pytest -m gpu tests/accel`` on the GPU machine.

The fast path (a batch of 8, TF32 or bf16 autocast, channels-last activations) must give each image the
same result as float32 one image at a time, within 0.1 dB: the final reconstruction PSNR against the target,
and the final loss expressed in dB (10 log10 of the loss ratio). The embedded world (64 px generator,
attrnet-lpips perceptual loss), 8 held-out procfaces faces, 200 steps of each method. Set PARITY_OUT to a
folder to keep the per-image numbers as JSON lines. The fp32 case (batched, channels-last, float32) is the
control: it separates what batching and layout change (cuDNN picks other algorithms, so float rounding
differs) from what the reduced precisions change. On the CPU the same comparison runs small (fp32,
channels-last against the default layout, batched against one at a time) to keep the machinery tested.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from bench.accel import Accel
from bench.metrics import build_metrics
from bench.world.defaults import default_generator
from bench.world.perceptual import load_world_perceptual
from bench.world.training import heldout_faces
from methods import build_method

TOLERANCE_DB = 0.1
METHODS = ["im2s", "fwplus16", "pnorm", "w", "fwplus8", "idinvert"]
_REFERENCE: dict = {}


def _world(device):
    gen = default_generator().to(device).eval().requires_grad_(False)
    perceptual, reason = load_world_perceptual(device)
    assert perceptual is not None, reason
    return gen, perceptual


def _resources(name, gen):
    from bench.encoders import load_encoder
    from bench.runner import attach_pnorm_stats
    from bench.world import zoo

    attach_pnorm_stats(gen, use_world=True)
    path = zoo.asset_path(f"{name}_encoder")
    return {"encoder": load_encoder(path, gen.w_avg.device)} if path is not None else {}


def _invert(name, gen, perceptual, targets, accel, steps):
    method = build_method(name, {"steps": steps}, **_resources(name, gen))
    accel.prepare(gen, perceptual)
    try:
        with accel.context(targets.device):
            return method.invert(targets, gen, seeds=list(range(targets.shape[0])), perceptual=perceptual)
    finally:
        Accel().prepare(gen, perceptual)


def parity_record(name: str, fast: Accel, device: torch.device, n: int, steps: int) -> dict:
    """Per-image PSNR and loss of the fast batched path against float32 one image at a time."""
    gen, perceptual = _world(device)
    targets = heldout_faces(n, resolution=gen.resolution)[0].to(device)
    psnr = build_metrics(["psnr"], device=device)[0]
    key = (name, device.type, n, steps)
    if key not in _REFERENCE:  # float32 one image at a time, shared by the precisions compared with it
        ref = [_invert(name, gen, perceptual, targets[i : i + 1], Accel("fp32"), steps) for i in range(n)]
        images = torch.cat([r.images for r in ref])
        _REFERENCE[key] = (torch.cat([r.loss for r in ref]).cpu(), psnr(images, targets).cpu())
    ref_loss, ref_psnr = _REFERENCE[key]
    out = _invert(name, gen, perceptual, targets, fast, steps)
    fast_psnr = psnr(out.images, targets).cpu()
    d_psnr = (fast_psnr - ref_psnr).tolist()
    d_loss = [10 * math.log10(a / b) for a, b in zip(out.loss.cpu().tolist(), ref_loss.tolist(), strict=True)]
    return {"method": name, "fast_path": fast.label, "steps": steps, "images": n,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "psnr_ref": ref_psnr.tolist(), "psnr_fast": fast_psnr.tolist(), "d_psnr_db": d_psnr,
            "d_loss_db": d_loss, "max_abs_d_psnr_db": max(map(abs, d_psnr)), "max_abs_d_loss_db": max(map(abs, d_loss))}


def _check(record: dict) -> None:
    if os.environ.get("PARITY_OUT"):
        out = Path(os.environ["PARITY_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        with (out / "parity.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in ("method", "fast_path", "max_abs_d_psnr_db", "max_abs_d_loss_db")}))
    assert record["max_abs_d_psnr_db"] <= TOLERANCE_DB, record
    assert record["max_abs_d_loss_db"] <= TOLERANCE_DB, record


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("name", METHODS)
def test_fast_batched_path_matches_float32_one_at_a_time(name, precision):
    _check(parity_record(name, Accel(precision, channels_last=True), torch.device("cuda"), n=8, steps=200))


@pytest.mark.parametrize("name", ["im2s", "fwplus16"])
def test_cpu_batched_channels_last_matches_one_at_a_time(name):
    _check(parity_record(name, Accel("fp32", channels_last=True), torch.device("cpu"), n=2, steps=3))
