"""Where the time of one optimisation step goes.

``python scripts/profile_step.py CONFIG METHOD PRECISION BATCH [compile]`` runs a few warm-up steps, then
profiles 5 steps of METHOD (e.g. im2s) on a ``bench speed`` timing setup (config-f-256, config-f-1024,
world, world256) at PRECISION (fp32, tf32, bf16, channels-last on CUDA), with ``compile`` of the torch.compile'd
generator (``--compile``), and prints the kernels that take the most GPU time. Used for the notes of
issue #7 (benchmarks/RESULTS.md).
"""

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
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:6] == ["compile"])
