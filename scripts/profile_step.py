"""Where the time of one optimisation step goes.

``python scripts/profile_step.py CONFIG METHOD PRECISION BATCH [compile]`` runs a few warm-up steps, then
profiles an inversion of 5 steps of METHOD (e.g. im2s) on a ``bench speed`` timing setup (config-f-256,
config-f-1024, world, world256) at PRECISION (fp32, tf32, bf16, channels-last on CUDA), with ``compile`` compiled
as ``--compile`` runs (the generator and the perceptual distance), and prints the device time per step by kind
of kernel, then the kernels and operations that take the most. The window holds the inversion's float32
start and final passes too (two eager renders), so a share of it is not quite a share of the steady step.
Used for the notes of issues #7 and #17 (benchmarks/RESULTS.md).
"""

import re
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from bench.accel import Accel
from bench.speed import _resources, build_timing_setup, config_params, timing_method


def main(config: str, name: str, precision: str, batch: int, compile_: bool = False) -> None:
    """Profile 5 steps and print the top kernels by GPU time."""
    dev = torch.device("cuda")
    gen, perceptual, desc = build_timing_setup(config, dev)
    accel = Accel(precision, channels_last=True, compile=compile_)
    accel.prepare(gen, perceptual)
    z = torch.randn(batch, gen.z_dim, device=dev)
    with torch.no_grad():
        targets = gen(z).clamp(-1, 1)
    params = config_params(config, [name])[0].get(name)
    resources = _resources(name, gen, params)
    with accel.context(dev):
        timing_method(name, gen, 3, params, resources).invert(targets, gen, seeds=list(range(batch)),
                                                              perceptual=perceptual)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            timing_method(name, gen, 5, params, resources).invert(targets, gen, seeds=list(range(batch)),
                                                                  perceptual=perceptual)
            torch.cuda.synchronize()
    print(f"# {desc}; {name}; {accel.label}; batch {batch}; 5 steps")
    print(summary(prof, 5, batch))
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90))


KINDS = (  # (kind, pattern in a kernel's name), first match wins
    ("Triton template (max-autotune)", r"^triton_(tem|conv|mm)"),
    ("Triton pointwise (Inductor)", r"^triton_poi"),
    ("Triton reduction (Inductor)", r"^triton_(red|per)"),
    ("convolution / matrix (cuDNN, cuBLAS, CUTLASS)", r"conv|xmma|cudnn|sm\d\d_|gemm|cutlass|wgrad|dgrad|fprop"),
    ("copies and fills", r"copy|fill|memset|memcpy"),
)


def summary(prof, steps: int, batch: int) -> str:
    """Device time per step by kind of kernel, and the rate it implies (image-steps/s of device time)."""
    totals: dict[str, float] = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        kind = next((k for k, pat in KINDS if re.search(pat, event.name, re.IGNORECASE)), "other")
        totals[kind] = totals.get(kind, 0.0) + event.device_time_total
    whole = sum(totals.values())
    # the window is one inversion: its steps, and its float32 start and final passes, spread over the steps
    lines = [f"device time per step: {whole / steps / 1e3:.1f} ms ({batch * steps / (whole / 1e6):.0f} image-steps/s; "
             "the inversion's float32 start and final passes included)"]
    lines += [f"  {k}: {t / steps / 1e3:.1f} ms ({100 * t / whole:.0f} %)"
              for k, t in sorted(totals.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:6] == ["compile"])
