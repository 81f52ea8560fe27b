"""What Inductor makes of one up-sampling styled layer: ``PYTHONPATH=. python scripts/upconv_kernels.py [MODES]``.

For each 2x up-convolution form (``BENCH_UPCONV``; default ``polyphase,stencil``) it compiles one frozen
up-sampling :class:`~bench.generators.layers.StyledConv` (32 -> 16 channels, 16 -> 32 px, batch 4, channels-last,
Inductor's layout forced as ``bench.compiling`` forces it) with a backward pass, and lists, in order, the kernels
that the forward and backward graphs call: Inductor's fused kernels (named after the operations they fuse) and
the library calls (convolutions, matrix products). On the CPU, Inductor's C++ backend; its fusion decisions
are made before code generation, so the list shows what a GPU run fuses too, up to Triton's own splits. Used
for the notes of issue #17 (benchmarks/RESULTS.md, session 17).
"""

import re
import sys

import torch
from torch._inductor import config as inductor
from torch._inductor.utils import run_and_get_code

from bench.compiling import INDUCTOR_CONFIG
from bench.generators import layers
from bench.generators.layers import StyledConv

CALL = re.compile(r"^\s+(?:\w+ = )?((?:extern_kernels\.\w+)|(?:\w*fused\w*))\(", re.M)


def kernels(mode: str) -> list[list[str]]:
    """The calls of each generated graph (forward, then backward) for up-convolution form ``mode``."""
    layers.UPCONV = mode
    torch.manual_seed(0)
    layer = StyledConv(32, 16, 8, upsample=True).requires_grad_(False)
    x = torch.randn(4, 32, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = torch.randn(4, 8, requires_grad=True)
    noise = torch.randn(1, 1, 32, 32)
    torch._dynamo.reset()
    step = torch.compile(lambda x, w: layer(x, w, noise))

    def run() -> None:
        step(x, w).float().square().sum().backward()

    _, codes = run_and_get_code(run)
    return [[m.group(1) for m in CALL.finditer(code.split("def call(", 1)[-1])] for code in codes]


def main(modes: list[str]) -> None:
    """Print the kernel list of each mode's forward and backward graph."""
    for name, value in INDUCTOR_CONFIG.items():
        setattr(inductor, name, value)
    for mode in modes:
        for part, calls in zip(("forward", "backward"), kernels(mode), strict=False):
            print(f"{mode} {part}: {len(calls)} calls")
            for c in calls:
                print(f"  {c}")


if __name__ == "__main__":
    main((sys.argv[1] if len(sys.argv) > 1 else "polyphase,stencil").split(","))
