"""Bytes one optimisation step moves through memory in eager mode, by operation (issue #17, item 4).

Each eager operation reads its inputs from device memory and writes its outputs back; a view moves nothing.
Summing those bytes over one step (forward, backward, Adam) gives the traffic of the eager path, which bounds
its rate on a memory-bound card: image-steps/s <= bandwidth / bytes per image-step. This counts on the CPU,
with the CUDA path's settings (bf16 autocast, channels-last activations, the polyphase up-convolution), the
per-step traffic from the difference of a 2-step and a 4-step inversion and the per-image traffic from the
difference of batch 2 and batch 4 (so the weights, read once per batch, drop out as they do at batch 550):

    BENCH_UPCONV=polyphase python scripts/memory_traffic.py --config world256 --method im2s [--top 15]

The count is of the operations as dispatched; fused kernels (``--compile``) move less, cuDNN's convolutions may
move more (workspaces), and autocast on the CPU casts a few operations differently from CUDA.
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.speed import _resources, build_timing_setup, config_params, timing_method


def _nbytes(x: object) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    return 0


class _Traffic(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.bytes: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            read = _nbytes(list(args)) + _nbytes(list((kwargs or {}).values()))
            self.bytes[str(func.overloadpacket)] += read + _nbytes(out)
        return out


def traffic(config: str, method: str, batch: int, steps: int) -> collections.Counter[str]:
    """Bytes by operation of a ``steps``-step inversion of ``batch`` images, CUDA-path settings on the CPU."""
    gen, perceptual, _ = build_timing_setup(config, torch.device("cpu"))
    gen.channels_last = True
    with torch.no_grad():
        targets = gen(torch.randn(batch, gen.z_dim, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    params = config_params(config, [method])[0].get(method)
    resources = _resources(method, gen, params)
    mode = _Traffic()
    with torch.autocast("cpu", dtype=torch.bfloat16), mode:
        timing_method(method, gen, steps, params, resources).invert(
            targets.contiguous(memory_format=torch.channels_last), gen, seeds=list(range(batch)),
            perceptual=perceptual)
    return mode.bytes


def per_image_step(config: str, method: str) -> dict[str, float]:
    """Bytes per image-step by operation: (4 steps - 2 steps) / 2, then (batch 4 - batch 2) / 2."""
    per_step = {}
    for batch in (2, 4):
        two, four = traffic(config, method, batch, 2), traffic(config, method, batch, 4)
        per_step[batch] = {k: (four[k] - two[k]) / 2 for k in four}
    keys = set(per_step[2]) | set(per_step[4])
    return {k: (per_step[4].get(k, 0.0) - per_step[2].get(k, 0.0)) / 2 for k in keys}


def main() -> None:
    """Print one JSON line: MB per image-step in all, and the operations that move the most."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="world256")
    ap.add_argument("--method", default="im2s")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    ops = per_image_step(a.config, a.method)
    total = sum(ops.values())
    top = {k: round(v / 2**20, 2) for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[: a.top]}
    print(json.dumps({"config": a.config, "method": a.method, "upconv": os.environ.get("BENCH_UPCONV", "auto"),
                      "mib_per_image_step": round(total / 2**20, 1), "top_mib": top, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
