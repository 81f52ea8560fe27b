"""Operations one optimisation step dispatches (issue #17: per-step overhead at small images).

On a GPU an eager step costs a fixed host time per dispatched operation, whatever the batch: at the 64 px
world's protocol batch (550) that fixed cost, not the arithmetic, sets Im2S's 5000 steps' time. This counts
the aten operations of one step (forward, backward, Adam) on the CPU, from the difference of a 2-step and a
4-step inversion, so the one-off set-up and the final evaluation cancel:

    python scripts/dispatch_count.py --config world --method im2s [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.speed import _resources, build_timing_setup, config_params, timing_method


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def per_step(config: str, method: str, batch: int = 2) -> dict[str, float]:
    """Aten operations per optimisation step, by operation."""
    gen, perceptual, _ = build_timing_setup(config, torch.device("cpu"))
    with torch.no_grad():
        targets = gen(torch.randn(batch, gen.z_dim, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    params = config_params(config, [method])[0].get(method)
    resources = _resources(method, gen, params)
    counts = {}
    for steps in (2, 4):
        mode = _Count()
        with mode:
            timing_method(method, gen, steps, params, resources).invert(targets, gen, seeds=list(range(batch)),
                                                                        perceptual=perceptual)
        counts[steps] = mode.counts
    return {k: (counts[4][k] - counts[2][k]) / 2 for k in counts[4] if counts[4][k] != counts[2][k]}


def main() -> None:
    """Print one JSON line: the total per step and the most frequent operations."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="world")
    ap.add_argument("--method", default="im2s")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    ops = per_step(a.config, a.method)
    top = dict(sorted(ops.items(), key=lambda kv: -kv[1])[: a.top])
    print(json.dumps({"config": a.config, "method": a.method, "ops_per_step": sum(ops.values()), "top": top,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
