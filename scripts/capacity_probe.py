"""Capacity probe (issue #16): can a method's latent store images its generator cannot make?

Inverts three kinds of target with each method and reports PSNR (dB):
  aligned      held-out procedural faces (what the generator was trained on);
  upside-down  the same faces rotated by 180 degrees (a face, but far outside the generator's range);
  field        smooth random colour fields (bicubic upsampling of CxC uniform colour noise, --field-cells C,
               default 16): no face at all. A 4x4 field is exactly what a 4x4 base code holds, so it only
               probes codes finer than its cells.
A latent that reconstructs the last two nearly as well as the first measures a code's capacity rather
than the generator's prior. F/W+ with a 16x16 base code on the 64 px world (the base code holds 5.3x as
many numbers as the image) is the case the probe was written for; the default is the world of the protocol
runs, the 256 px world, where fwplus16 runs the paper's proportion (a 4x4 code, 2.1 % of the pixel values).

    python scripts/capacity_probe.py --methods fwplus16,im2s --n 10 --out probe.json      # the 256 px world
    python scripts/capacity_probe.py --generator world64 --methods fwplus16,fwplus8,im2s --n 10
    python scripts/capacity_probe.py --methods fwplus16 --param fwplus16.basecode_weight=0
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from bench.cli import parse_method_params
from bench.config import RunConfig, method_overrides
from bench.metrics import build_metrics
from bench.prepare import method_resources, prepare
from methods import build_method, get_preset
from methods.fwplus import describe_base_code


def targets(aligned: torch.Tensor, seed: int = 0, cells: int = 16) -> dict[str, torch.Tensor]:
    """The three target sets, each (n, 3, R, R) in [-1, 1]."""
    n, _, r, _ = aligned.shape
    g = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.rand(n, 3, cells, cells, generator=g) * 2 - 1, size=(r, r), mode="bicubic",
                          align_corners=False).clamp(-1, 1)
    return {"aligned": aligned, "upside-down": torch.flip(aligned, dims=(2, 3)), "field": field}


def main() -> None:
    """Probe the methods named on the command line and write the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="world256", help="world256 (default: the protocol runs' world), "
                    "world64, or a checkpoint")
    ap.add_argument("--methods", default="fwplus16,im2s")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--steps", type=int, default=None, help="default: each method's paper steps")
    ap.add_argument("--encoder", action="append", default=[], help="METHOD=PATH")
    ap.add_argument("--param", action="append", default=[], help="METHOD.KEY=VALUE, as for bench run")
    ap.add_argument("--field-cells", type=int, default=16, help="cells per side of the random field")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    encoders = dict(e.split("=", 1) for e in a.encoder)
    config = RunConfig(methods=a.methods, generator=a.generator, n=a.n, steps=a.steps, profile="paper",
                       device=a.device, encoders=encoders, method_params=parse_method_params(tuple(a.param)))
    prep = prepare(config, log=lambda m: None)
    aligned = torch.stack([it.image for it in prep.items])
    psnr = build_metrics(["psnr"], device=prep.device)[0]
    res = prep.generator.resolution
    out = {"generator": prep.descriptions["generator"], "resolution": res, "n": len(aligned),
           "field_cells": a.field_cells, "rows": []}
    for name in prep.methods:
        preset = get_preset(name)
        overrides = method_overrides(prep.config, name, preset.default_steps)
        method = build_method(name, overrides, **method_resources(preset, prep))
        row = {"method": name, "steps": overrides.get("steps", preset.default_steps),
               "params": {k: v for k, v in overrides.items() if k != "steps"}}
        if hasattr(method.params, "base_res"):
            row["base"] = describe_base_code(prep.generator, method.params.base_res)
        for kind, target in targets(aligned, cells=a.field_cells).items():
            t0 = time.time()
            target = target.to(prep.device)
            with prep.accels[name].context(prep.device):
                inv = method.invert(target, prep.generator, seeds=list(range(len(target))), perceptual=prep.perceptual)
            row[kind] = round(float(psnr(inv.images.clamp(-1, 1).float(), target).mean()), 2)
            row[f"{kind}_s"] = round(time.time() - t0, 1)
        print(json.dumps(row), flush=True)
        out["rows"].append(row)
        if a.out:  # after every method, so that a cut-off run keeps what it finished
            with open(a.out, "w") as fh:
                json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
