"""Quality parity of the fast batched path (issue #7): ``pytest -m gpu tests/accel`` on the GPU machine.

The fast path (a batch of 8, TF32 or bf16 autocast, channels-last activations) must give each image the
same result as float32 one image at a time: the final reconstruction PSNR against the target, and the final
loss expressed in dB (10 log10 of the loss ratio), on the embedded world (64 px generator, attrnet-lpips
perceptual loss), 8 held-out procfaces faces, 200 steps of each method. Both are measured the same way
whatever precision the steps ran at (``methods.base.full_precision``).

Tolerance: 0.1 dB per image, where float32 itself is reproducible to that level. Whether it is, is measured
here, not assumed: the float32 batched inversion of the targets perturbed by 1e-6 (far below 8-bit
quantisation, 4e-3; three draws, the largest change counts) is compared with that of the unperturbed
targets. A method whose results move by more than 0.05 dB under that perturbation amplifies float rounding
(F/W+: Adam at a constant learning rate keeps its loss oscillating to the last step), so that no
implementation, float32 included, can match it image by image; for such a method the test requires the
mean difference over the images (the tables report means) within 0.1 dB plus two standard errors of that
mean, and records the per-image differences next to the float32 self-noise. (On the H100, F/W+ 16x16's own
float32 control, batched against one at a time, has a mean PSNR difference of -0.110 +- 0.060 dB: a bare
0.1 dB on the mean would fail float32 itself.)

Which reduced precisions a method held is recorded on its preset (``methods.base.Preset.gpu_precisions``), and
``--precision auto`` runs it at the fastest of them (``bench.accel``); a case outside that record is an
expected failure here (not strict: a pass shows as XPASS). On the H100 (2026-11-27, benchmarks/RESULTS.md)
every method held at TF32 and bf16 except the W projector (one image moved by 0.16 dB at TF32, one image's
loss by 0.12 dB at bf16), judged then image by image on a one-draw noise probe (0.027 dB). With three draws
(H200, 2026-12-04) W's float32 noise is 0.144 dB, so it is held to the mean, and it holds at both
(TF32 -0.005 +- 0.010 dB PSNR, bf16 +0.008 +- 0.020). bf16 had failed Im2S (0.14 dB) and F/W+ 16x16
(+0.45 dB on the mean) while the RGB path ran in bf16; it runs in float32 since (``layers.ToRGB``).

The fp32 case (batched, channels-last, float32) is the control: it separates what batching and layout
change (cuDNN picks other algorithms, so float rounding differs) from what the reduced precisions change.
Set PARITY_OUT to a folder to keep the records as JSON lines. On the CPU the same comparison runs small
(fp32, channels-last against the default layout, batched against one at a time).
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
from methods import build_method, get_preset

TOLERANCE_DB = 0.1
STABLE_DB = 0.05  # float32 self-noise below which a method is held to the tolerance image by image
PERTURBATION = 1e-6
NOISE_DRAWS = int(os.environ.get("PARITY_NOISE_DRAWS", "3"))  # perturbations of the float32 noise probe
# PARITY_METHODS=w,idinvert runs a subset (a device run has minutes, not hours)
STEPS = int(os.environ.get("PARITY_STEPS", "200"))  # PARITY_STEPS=1000: W at the steps of its protocol
METHODS = os.environ.get("PARITY_METHODS", "im2s,fwplus16,pnorm,w,fwplus8,idinvert").split(",")
_REFERENCE: dict = {}
_NOISE: dict = {}


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


def _invert(name, gen, perceptual, targets, accel, steps, first_seed=0):
    """Image i of ``targets`` gets seed ``first_seed + i`` (the W projector's noise), batched or alone."""
    method = build_method(name, {"steps": steps}, **_resources(name, gen))
    accel.prepare(gen, perceptual)
    try:
        with accel.context(targets.device):
            seeds = list(range(first_seed, first_seed + targets.shape[0]))
            return method.invert(targets, gen, seeds=seeds, perceptual=perceptual)
    finally:
        Accel().prepare(gen, perceptual)


def _scores(out, targets, psnr) -> tuple[torch.Tensor, torch.Tensor]:
    return out.loss.cpu(), psnr(out.images, targets).cpu()


def _differences(scores, ref) -> tuple[list[float], list[float]]:
    """Per-image (PSNR difference, loss difference), both in dB."""
    (loss, psnr), (ref_loss, ref_psnr) = scores, ref
    d_loss = [10 * math.log10(a / b) for a, b in zip(loss.tolist(), ref_loss.tolist(), strict=True)]
    return (psnr - ref_psnr).tolist(), d_loss


def float32_noise(name: str, gen, perceptual, targets: torch.Tensor, psnr, steps: int) -> float:
    """Largest per-image change (dB, PSNR or loss) of float32 batched results when targets move by 1e-6.

    The largest over :data:`NOISE_DRAWS` perturbations: one draw can miss how far rounding carries a method
    (the W projector's single draw read 0.027 dB on the H100 while its own batched float32 control moved an
    image by 0.044).
    """
    key = (name, targets.device.type, targets.shape[0], steps)
    if key not in _NOISE:
        accel = Accel("fp32", channels_last=targets.device.type == "cuda")
        base = _scores(_invert(name, gen, perceptual, targets, accel, steps), targets, psnr)
        largest = 0.0
        for draw in range(NOISE_DRAWS):
            noise = torch.randn(targets.shape, generator=torch.Generator().manual_seed(draw)).to(targets)
            moved = _scores(_invert(name, gen, perceptual, targets + PERTURBATION * noise, accel, steps),
                            targets, psnr)
            largest = max(largest, *map(abs, sum(_differences(moved, base), [])))
        _NOISE[key] = largest
    return _NOISE[key]


def parity_record(name: str, fast: Accel, device: torch.device, n: int, steps: int) -> dict:
    """Per-image PSNR and loss of the fast batched path against float32 one image at a time."""
    gen, perceptual = _world(device)
    targets = heldout_faces(n, resolution=gen.resolution)[0].to(device)
    psnr = build_metrics(["psnr"], device=device)[0]
    key = (name, device.type, n, steps)
    if key not in _REFERENCE:  # float32 one image at a time, shared by the precisions compared with it
        ref = [_invert(name, gen, perceptual, targets[i : i + 1], Accel("fp32"), steps, first_seed=i) for i in range(n)]
        _REFERENCE[key] = (torch.cat([r.loss for r in ref]).cpu(),
                           psnr(torch.cat([r.images for r in ref]), targets).cpu())
    scores = _scores(_invert(name, gen, perceptual, targets, fast, steps), targets, psnr)
    d_psnr, d_loss = _differences(scores, _REFERENCE[key])
    noise = float32_noise(name, gen, perceptual, targets, psnr, steps)
    return {"method": name, "fast_path": fast.label, "steps": steps, "images": n,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "psnr_ref": _REFERENCE[key][1].tolist(), "psnr_fast": scores[1].tolist(), "d_psnr_db": d_psnr,
            "d_loss_db": d_loss, "max_abs_d_psnr_db": max(map(abs, d_psnr)), "max_abs_d_loss_db": max(map(abs, d_loss)),
            "mean_d_psnr_db": sum(d_psnr) / n, "mean_d_loss_db": sum(d_loss) / n,
            "se_d_psnr_db": _standard_error(d_psnr), "se_d_loss_db": _standard_error(d_loss),
            "float32_noise_db": noise, "per_image": noise <= STABLE_DB}


def _standard_error(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1) / len(values))


def _check(record: dict) -> None:
    if os.environ.get("PARITY_OUT"):
        out = Path(os.environ["PARITY_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        with (out / "parity.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    keys = ("method", "fast_path", "max_abs_d_psnr_db", "max_abs_d_loss_db", "mean_d_psnr_db", "mean_d_loss_db",
            "se_d_psnr_db", "se_d_loss_db", "float32_noise_db")
    print(json.dumps({k: record[k] for k in keys}))
    if record["per_image"]:
        assert record["max_abs_d_psnr_db"] <= TOLERANCE_DB, record
        assert record["max_abs_d_loss_db"] <= TOLERANCE_DB, record
    else:  # float32 itself is not reproducible image by image at this level (see the module docstring)
        assert abs(record["mean_d_psnr_db"]) <= TOLERANCE_DB + 2 * record["se_d_psnr_db"], record
        assert abs(record["mean_d_loss_db"]) <= TOLERANCE_DB + 2 * record["se_d_loss_db"], record


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("name", METHODS)
def test_fast_batched_path_matches_float32_one_at_a_time(name, precision, request):
    _expect_failure_unless_held(name, precision, request)
    _check(parity_record(name, Accel(precision, channels_last=True), torch.device("cuda"), n=8, steps=STEPS))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("name", ["im2s", "fwplus16"])
def test_compiled_path_matches_float32_one_at_a_time(name, precision, request):
    """The configurations that meet the speed targets (--compile; bf16 is what --precision auto picks)."""
    _expect_failure_unless_held(name, precision, request)
    accel = Accel(precision, channels_last=True, compile=True)
    _check(parity_record(name, accel, torch.device("cuda"), n=8, steps=STEPS))


def _expect_failure_unless_held(name: str, precision: str, request) -> None:
    """Mark a reduced precision that the method's preset does not list as held as an expected failure."""
    if precision != "fp32" and precision not in get_preset(name).gpu_precisions:
        request.applymarker(pytest.mark.xfail(
            reason=f"{name} did not hold the tolerance at {precision} on the GPU (its preset's gpu_precisions); "
                   "--precision auto runs it in float32", strict=False))


@pytest.mark.parametrize("name", ["im2s", "fwplus16"])
def test_cpu_batched_channels_last_matches_one_at_a_time(name):
    _check(parity_record(name, Accel("fp32", channels_last=True), torch.device("cpu"), n=2, steps=3))


def test_check_holds_a_method_unstable_in_float32_to_its_mean():
    """Above STABLE_DB of float32 self-noise, per-image differences may exceed the tolerance; the mean may not
    (beyond two standard errors)."""
    d = [0.3, -0.25, 0.2, -0.1]
    record = {"method": "x", "fast_path": "tf32", "max_abs_d_psnr_db": 0.3, "max_abs_d_loss_db": 0.3,
              "mean_d_psnr_db": sum(d) / 4, "mean_d_loss_db": sum(d) / 4, "se_d_psnr_db": _standard_error(d),
              "se_d_loss_db": _standard_error(d), "float32_noise_db": 0.3, "per_image": False}
    _check(record)  # mean +0.04 dB: passes although images differ by up to 0.3 dB
    with pytest.raises(AssertionError):
        _check({**record, "per_image": True})  # the same record held image by image fails
    shifted = [v + 0.35 for v in d]  # a bias: mean +0.39 dB, beyond 0.1 + 2 standard errors (0.36)
    with pytest.raises(AssertionError):
        _check({**record, "mean_d_loss_db": sum(shifted) / 4, "se_d_loss_db": _standard_error(shifted)})
