"""Where the time of one optimisation step goes.

``python scripts/profile_step.py CONFIG METHOD PRECISION BATCH [compile]`` runs a few warm-up steps, then
profiles two inversions of METHOD (e.g. im2s), of 3 and 11 steps, on a ``bench speed`` timing setup
(config-f-256, config-f-1024, world, world256) at PRECISION (fp32, tf32, bf16, channels-last on CUDA), with
``compile`` compiled as ``--compile`` runs (the generator and the perceptual distance). Each kernel's time per
step is the difference between the two windows over the 8 extra steps, so an inversion's one-off work (its
float32 start and final renders, the set-up) drops out. It prints the device time per step by kind of kernel,
then the kernels that take the most. Used for the notes of issues #7 and #17 (benchmarks/RESULTS.md).
"""

import re
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from bench.accel import Accel
from bench.speed import _resources, build_timing_setup, config_params, timing_method

STEPS = (3, 11)  # the two profiled inversions: the per-step time is their difference over the extra steps


def main(config: str, name: str, precision: str, batch: int, compile_: bool = False) -> None:
    """Profile inversions of 3 and 11 steps and print the time per step by kind of kernel, then the top kernels."""
    dev = torch.device("cuda")
    gen, perceptual, desc = build_timing_setup(config, dev)
    accel = Accel(precision, channels_last=True, compile=compile_)
    accel.prepare(gen, perceptual)
    z = torch.randn(batch, gen.z_dim, device=dev)
    with torch.no_grad():
        targets = gen(z).clamp(-1, 1)
    params = config_params(config, [name])[0].get(name)
    resources = _resources(name, gen, params)

    def invert(steps: int) -> None:
        timing_method(name, gen, steps, params, resources).invert(targets, gen, seeds=list(range(batch)),
                                                                  perceptual=perceptual)
        torch.cuda.synchronize()

    windows = []
    with accel.context(dev):
        invert(3)  # warm-up (and compilation)
        for steps in STEPS:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                invert(steps)
            windows.append(kernel_times(prof))
    span, none = STEPS[1] - STEPS[0], (0.0, 0)
    per_step = {k: tuple((b - a) / span for a, b in zip(windows[0].get(k, none), windows[1].get(k, none), strict=True))
                for k in set(windows[0]) | set(windows[1])}  # kernel -> (us, calls) per step
    print(f"# {desc}; {name}; {accel.label}; batch {batch}; per step = (window of {STEPS[1]} steps - window of "
          f"{STEPS[0]}) / {STEPS[1] - STEPS[0]}")
    print(summary({k: t for k, (t, _) in per_step.items()}, batch))
    print(top_kernels(per_step))


def kernel_times(prof) -> dict[str, tuple[float, int]]:
    """Device time (us) and calls per kernel name in a profiled window."""
    times: dict[str, tuple[float, int]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            t, n = times.get(event.name, (0.0, 0))
            times[event.name] = (t + event.device_time_total, n + 1)
    return times


def top_kernels(per_step: dict[str, tuple[float, float]], rows: int = 40) -> str:
    """The kernels that take the most device time per step: ms, share, calls per step, name (shortened)."""
    whole = sum(t for t, _ in per_step.values())
    lines = [f"{'ms/step':>8} {'share':>6} {'calls':>6}  kernel"]
    for k, (t, calls) in sorted(per_step.items(), key=lambda kv: -kv[1][0])[:rows]:
        lines.append(f"{t / 1e3:8.2f} {100 * t / whole:5.1f}% {calls:6.1f}  {k[:150]}")
    return "\n".join(lines)


KINDS = (  # (kind, pattern in a kernel's name), first match wins
    ("Triton template (max-autotune)", r"^triton_(tem|conv|mm)"),
    ("Triton pointwise (Inductor)", r"^triton_poi"),
    ("Triton reduction (Inductor)", r"^triton_(red|per)"),
    ("convolution / matrix (cuDNN, cuBLAS, CUTLASS)", r"conv|xmma|cudnn|sm\d\d_|gemm|cutlass|wgrad|dgrad|fprop"),
    ("copies and fills", r"copy|fill|memset|memcpy"),
)


def summary(per_step: dict[str, float], batch: int) -> str:
    """Device time per step by kind of kernel, and the rate it implies (image-steps/s of device time)."""
    totals: dict[str, float] = {}
    for name, t in per_step.items():
        kind = next((k for k, pat in KINDS if re.search(pat, name, re.IGNORECASE)), "other")
        totals[kind] = totals.get(kind, 0.0) + t
    whole = sum(totals.values())
    lines = [f"device time per step: {whole / 1e3:.1f} ms ({batch / (whole / 1e6):.0f} image-steps/s if nothing "
             "else ran)"]
    lines += [f"  {k}: {t / 1e3:.1f} ms ({100 * t / whole:.0f} %)"
              for k, t in sorted(totals.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:6] == ["compile"])
