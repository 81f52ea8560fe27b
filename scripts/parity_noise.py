"""How reproducible is a method in float32 itself? ``PYTHONPATH=. python scripts/parity_noise.py METHOD STEPS N``.

On the embedded world (held-out faces, attrnet-lpips loss), float32, on the CPU:

- one image at a time against a batch of N (image i gets seed i either way): the largest per-image
  difference of the final PSNR and of the final loss (dB), and how it grows over the steps;
- the batch against the same batch with the targets moved by 1e-6;
- how much the loss of one run changes between consecutive steps over the last 20 steps.

Used for the parity notes of issue #7 (benchmarks/RESULTS.md): F/W+ amplifies float rounding, so that no
implementation can match it image by image.
"""

import math
import sys
import time

import torch

import methods.optim as optim
from bench.metrics import build_metrics
from bench.world.defaults import default_generator
from bench.world.perceptual import load_world_perceptual
from bench.world.training import heldout_faces
from methods import build_method
from tests.accel.test_parity import _resources

_TRAJECTORIES: list[torch.Tensor] = []
_run_adam = optim.run_adam


def _recording_run_adam(variables, loss_fn, **kwargs):
    """``run_adam`` that keeps the per-step losses (the last row is the final evaluation)."""
    history = []

    def recorded(step):
        loss = loss_fn(step)
        history.append(loss.detach().clone())
        return loss

    result = _run_adam(variables, recorded, **kwargs)
    _TRAJECTORIES.append(torch.stack(history))
    return result


def _trajectory() -> torch.Tensor:
    """(steps + 1, N) losses of the inversions since the last call, images side by side."""
    out = torch.cat(_TRAJECTORIES, 1)
    _TRAJECTORIES.clear()
    return out


def main(name: str, steps: int, n: int) -> None:
    """Print the three comparisons for METHOD at STEPS steps on N faces."""
    for module in list(sys.modules.values()):  # the methods imported run_adam by name
        if module is not None and getattr(module, "run_adam", None) is _run_adam:
            module.run_adam = _recording_run_adam
    device = torch.device("cpu")
    gen = default_generator().eval().requires_grad_(False)
    perceptual, _ = load_world_perceptual(device)
    targets = heldout_faces(n, resolution=gen.resolution)[0]
    psnr = build_metrics(["psnr"], device=device)[0]

    def invert(t, first_seed=0):
        method = build_method(name, {"steps": steps}, **_resources(name, gen))
        return method.invert(t, gen, seeds=list(range(first_seed, first_seed + t.shape[0])), perceptual=perceptual)

    start = time.time()
    singles = [invert(targets[i : i + 1], first_seed=i) for i in range(n)]
    ref = (torch.cat([s.loss for s in singles]), psnr(torch.cat([s.images for s in singles]), targets))
    ref_traj = _trajectory()
    print(f"{name}, {steps} steps, {n} faces; one at a time took {time.time() - start:.0f} s")

    def compare(label, out, against, against_traj):
        traj = _trajectory()
        d_psnr = psnr(out.images, targets) - against[1]
        d_loss = 10 * torch.log10(out.loss / against[0])
        growth = (10 * torch.log10(traj / against_traj)).abs().max(1).values
        marks = [s for s in (0, 1, 5, 10, 20, 50, 100, 200, 500, steps) if s <= steps]
        print(f"{label}: max |dPSNR| {d_psnr.abs().max():.4f} dB, max |dloss| {d_loss.abs().max():.4f} dB, "
              f"mean dPSNR {d_psnr.mean():+.4f}; per image {[round(v, 3) for v in d_psnr.tolist()]}")
        print("   max |dloss| (dB) by step:", {s: round(growth[s].item(), 4) for s in marks})
        return traj

    batched = invert(targets)
    batch_traj = compare("batched vs one at a time", batched, ref, ref_traj)
    moved = invert(targets + 1e-6 * torch.randn(targets.shape, generator=torch.Generator().manual_seed(0)))
    compare("batched, targets moved by 1e-6, vs batched", moved,
            (batched.loss, psnr(batched.images, targets)), batch_traj)
    jumps = (10 * torch.log10(ref_traj[1:steps] / ref_traj[: steps - 1]))[-20:].abs()
    print(f"one run's loss change between consecutive steps, last 20 steps: mean {jumps.mean():.3f} dB, "
          f"max {jumps.max():.3f} dB ({math.prod(jumps.shape)} step pairs)")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
