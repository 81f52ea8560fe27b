"""Bytes per image-step of a stack of frozen styled convolutions, compiled, with and without kept activations.

``PYTHONPATH=. python scripts/styled_stack_traffic.py [--layers 3] [--channels 32] [--size 32]`` compiles
``loss = mean(stack(x, w)^2)`` with real Inductor on the CPU (bf16 autocast, channels-last, the layout forced,
batch dynamic), counts each kernel's bytes as ``scripts/compiled_traffic.py`` does, and prints the per-image
share (the difference of batches 4 and 2) twice: with AOTAutograd's partitioner as it is, and with
``bench.compiling.keep_activations`` (``BENCH_SAVE_ACTIVATIONS=1``). ``--detail PATTERN`` prints the buffers of
the matching kernels. The isolated case behind benchmarks/RESULTS.md, session 19 (3.26 against 2.70 MiB).
"""

from __future__ import annotations

import argparse

import torch

from bench import compiling
from bench.generators.layers import StyledConv
from scripts.compiled_traffic import MIB, counting_kernels


def count(layers: int, channels: int, size: int, keep: bool, detail: str | None) -> float:
    """MiB per image-step of the stack, compiled, with the activations kept or not."""
    from torch._inductor import config as inductor

    torch.manual_seed(0)
    convs = torch.nn.ModuleList([StyledConv(channels, channels, 64) for _ in range(layers)]).requires_grad_(False)
    noise = [torch.randn(1, 1, size, size) for _ in range(layers)]

    def step(x, ws):
        for conv, w, n in zip(convs, ws, noise, strict=True):
            x = conv(x, w, n)
        return (x.float() ** 2).mean()

    total = {}
    partitioner = compiling.keep_activations() if keep else None
    with inductor.patch(force_layout_optimization=True, custom_partitioner_fn=partitioner):
        for batch in (2, 4):
            torch._dynamo.reset()
            x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
            ws = [torch.randn(batch, 64, requires_grad=True) for _ in range(layers)]
            torch._dynamo.maybe_mark_dynamic(x, 0)
            for w in ws:
                torch._dynamo.maybe_mark_dynamic(w, 0)
            with counting_kernels(detail if batch == 4 else None) as records:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = torch.compile(step)(x, ws)
                loss.backward()
            total[batch] = sum(n for _, n in records)
    return (total[4] - total[2]) / 2 / MIB


def main() -> None:
    """Print the stack's per-image traffic with the default partitioner and with the activations kept."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--detail", default=None)
    args = ap.parse_args()
    for keep in (False, True):
        mib = count(args.layers, args.channels, args.size, keep, args.detail)
        print(f"{'activations kept' if keep else 'default partitioner':20s} {mib:.3f} MiB per image-step", flush=True)


if __name__ == "__main__":
    main()
