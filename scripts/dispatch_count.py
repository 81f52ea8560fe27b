"""Operations one optimisation step dispatches, or the bytes they move (issue #17: where an eager step goes).

On a GPU an eager step costs a fixed host time per dispatched operation, whatever the batch: at the 64 px
world's protocol batch (550) that fixed cost, not the arithmetic, sets Im2S's 5000 steps' time. This counts
the aten operations of one step (forward, backward, Adam) on the CPU, from the difference of a 2-step and a
4-step inversion, so the one-off set-up and the final evaluation cancel:

    python scripts/dispatch_count.py --config world --method im2s [--top 25]

With ``--bytes`` it sums instead the bytes each operation reads and writes (a view moves nothing): the memory
traffic of the eager path, which bounds its rate on a memory-bound card (image-steps/s <= bandwidth / bytes
per image-step). That count runs with the CUDA path's settings (bf16 autocast, channels-last; set
``BENCH_UPCONV=polyphase`` for its up-convolution), and takes the per-image share from the difference of batch
2 and batch 4, so the weights, read once per batch, drop out as they do at batch 550:

    BENCH_UPCONV=polyphase python scripts/dispatch_count.py --bytes --config world256 --method im2s

Fused kernels (``--compile``) move less; cuDNN's convolutions may move more (workspaces); autocast on the CPU
casts a few operations differently from CUDA.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os

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


def _nbytes(x: object) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    return 0


class _Traffic(_Count):
    """Bytes read and written per operation (in ``counts``); views are free."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.counts[str(func.overloadpacket)] += _nbytes([*args, *(kwargs or {}).values(), out])
        return out


def _measure(config: str, method: str, batch: int, steps: int, mode: _Count, cuda_path: bool,
             loss_net: bool = True) -> dict[str, int]:
    """``mode``'s counts over a ``steps``-step inversion of ``batch`` generated images.

    ``loss_net``: with the configuration's perceptual network in the loss, else without it.
    """
    gen, perceptual, _ = build_timing_setup(config, torch.device("cpu"))
    perceptual = perceptual if loss_net else "none"
    gen.channels_last = cuda_path
    with torch.no_grad():
        targets = gen(torch.randn(batch, gen.z_dim, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    if cuda_path:
        targets = targets.contiguous(memory_format=torch.channels_last)
    params = config_params(config, [method])[0].get(method)
    resources = _resources(method, gen, params)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if cuda_path else contextlib.nullcontext()
    with autocast, mode:
        timing_method(method, gen, steps, params, resources).invert(targets, gen, seeds=list(range(batch)),
                                                                    perceptual=perceptual)
    return mode.counts


def _per_step(config: str, method: str, batch: int, mode: type[_Count], cuda_path: bool,
              loss_net: bool = True) -> dict[str, float]:
    two, four = (_measure(config, method, batch, s, mode(), cuda_path, loss_net) for s in (2, 4))
    return {k: (four[k] - two.get(k, 0)) / 2 for k in four if four[k] != two.get(k, 0)}


def per_step(config: str, method: str, batch: int = 2) -> dict[str, float]:
    """Aten operations per optimisation step, by operation."""
    return _per_step(config, method, batch, _Count, cuda_path=False)


def bytes_per_image_step(config: str, method: str, loss_net: bool = True) -> dict[str, float]:
    """Bytes per image-step by operation (CUDA-path settings): the step's bytes at batch 4 less batch 2, / 2."""
    two, four = (_per_step(config, method, b, _Traffic, cuda_path=True, loss_net=loss_net) for b in (2, 4))
    return {k: (four.get(k, 0.0) - two.get(k, 0.0)) / 2 for k in set(two) | set(four)}


def main() -> None:
    """Print one JSON line: the total per step and the operations that count most."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="world")
    ap.add_argument("--method", default="im2s")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--bytes", action="store_true", help="memory traffic per image-step instead of operations")
    ap.add_argument("--no-loss-net", action="store_true",
                    help="leave the perceptual network out of the loss (its share is the difference)")
    a = ap.parse_args()
    if a.no_loss_net and not a.bytes:
        ap.error("--no-loss-net goes with --bytes")
    ops = bytes_per_image_step(a.config, a.method, not a.no_loss_net) if a.bytes else per_step(a.config, a.method)
    ranked = sorted(ops.items(), key=lambda kv: -kv[1])[: a.top]
    head = {"config": a.config, "method": a.method} | ({"loss_net": False} if a.no_loss_net else {})
    if a.bytes:
        body = {"upconv": os.environ.get("BENCH_UPCONV", "auto"),
                "mib_per_image_step": round(sum(ops.values()) / 2**20, 1),
                "top_mib": {k: round(v / 2**20, 2) for k, v in ranked}}
    else:
        body = {"ops_per_step": sum(ops.values()), "top": dict(ranked)}
    print(json.dumps(head | body | {"torch": torch.__version__}))


if __name__ == "__main__":
    main()
