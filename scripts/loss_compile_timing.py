"""Time what compiling the perceptual distance adds to the compiled generator (issue #17, item 4).

For each timing configuration and method: ``bench speed``'s batched rate (``bench.speed.time_method``, bf16,
channels-last) eager, compiled with the perceptual distance left eager (the generator alone, as before
session 14), and compiled whole (the generator and the distance's part of the step, the default now).
One process per configuration, so the generator's compiled graph is made once and serves both compiled
rows. Prints one markdown row per (configuration, method, variant) and writes them as JSON.

    python scripts/loss_compile_timing.py --configs config-f-256,world256 --methods im2s,fwplus16 \
        --batches 256,550 --out OUT/loss_compile.json

``--flops`` instead counts, on the CPU, the FLOPs of one image-step with the target's perceptual features
computed once per inversion (``against``) and at every step (what LPIPS did before session 14).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.accel import Accel
from bench.speed import _flops_per_image_step, build_timing_setup, config_params, time_method


class NoAgainst:
    """The perceptual distance without ``against``: the target goes through the network at every step."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name

    def __call__(self, x, y):
        return self.inner(x, y)


def count_flops(configs: list[str], names: list[str]) -> None:
    """Print GFLOP per image-step (CPU path) with and without the perceptual distance's ``against``."""
    dev = torch.device("cpu")
    for config in configs:
        gen, perceptual, _ = build_timing_setup(config, dev)
        params, _ = config_params(config, names)
        z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            target = gen(z).clamp(-1, 1)
        for name in names:
            with_, without = (_flops_per_image_step(name, gen, p, target, params.get(name)) / 1e9
                              for p in (perceptual, NoAgainst(perceptual)))
            print(f"{config} {name}: {with_:.1f} GFLOP per image-step with against, {without:.1f} without "
                  f"({(without - with_) / without:.1%} saved)", flush=True)


class EagerDistance:
    """The perceptual distance without its compiled path: ``bench.compiling`` does not see through it."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name

    def __call__(self, x, y):
        return self.inner(x, y)

    def against(self, y):
        return self.inner.against(y)

    @property
    def module(self):  # Accel.prepare sets the layout of the wrapped network's weights
        return getattr(self.inner, "module", None) or getattr(self.inner, "net", None)


def main() -> None:
    """Time the variants and print and write the rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="config-f-256,world256")
    ap.add_argument("--methods", default="im2s,fwplus16")
    ap.add_argument("--batches", default="256,550", help="one batch per configuration")
    ap.add_argument("--steps", default="3,13")
    ap.add_argument("--variants", default="eager,generator,whole")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", help="fp32 for a CPU smoke test")
    ap.add_argument("--flops", action="store_true", help="count FLOPs with and without against (CPU)")
    args = ap.parse_args()
    if args.flops:
        count_flops(args.configs.split(","), args.methods.split(","))
        return
    dev = torch.device(args.device)
    lo, hi = (int(s) for s in args.steps.split(","))
    rows = []
    print("| configuration | method | compiled | batch | image-steps/s | peak MB / image |", flush=True)
    print("|---|---|---|---:|---:|---:|", flush=True)
    for config, batch in zip(args.configs.split(","), (int(b) for b in args.batches.split(",")), strict=True):
        gen, perceptual, _ = build_timing_setup(config, dev)
        names = args.methods.split(",")
        params, _ = config_params(config, names)
        for name in names:
            for variant in args.variants.split(","):
                accel = Accel(args.precision, channels_last=dev.type == "cuda", compile=variant != "eager")
                dist = EagerDistance(perceptual) if variant == "generator" else perceptual
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                row = time_method(name, gen, dist, batch, (lo, hi), dev, accel, log=lambda m: None, single=False,
                                  params=params.get(name))
                rows.append({"config": config, "method": name, "compiled": variant, "batch": row.batch,
                             "image_steps_per_s": row.image_steps_per_s, "peak_mb": row.peak_mem_per_image_mb,
                             "gflop_per_image_step": row.flops_per_image_step / 1e9})
                print(f"| {config} | {name} | {variant} | {row.batch} | {row.image_steps_per_s:,.1f} | "
                      f"{row.peak_mem_per_image_mb:.0f} |", flush=True)
                if args.out:
                    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
