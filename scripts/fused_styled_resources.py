"""Compile the fused styled and RGB kernels for a GPU without one, and list each one's registers and spills (#17).

Triton compiles ahead of time for a named target (default sm_90: H100 and H200) with the ptxas that its wheel
ships, so the kernels of ``bench.generators.fused_styled`` can be checked on the CPU machine: that they compile,
and what each tile configuration costs in registers, spilled stack and shared memory (``cuobjdump
--dump-resource-usage``). A kernel that spills (STACK > 0) moves its spilled values through local memory, which
a memory-bound kernel cannot afford. The tile configurations are those :func:`fused_styled._blocks` picks for the
256 px world's and config-f 1024²'s layers.

    python scripts/fused_styled_resources.py [--arch 90] [--warps 4,8] [--tile 8192]   # default: the launchers'
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import tempfile

os.environ["BENCH_FUSED_STYLED"] = "1"
os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from bench.generators import fused_styled as fs  # noqa: E402

BF16, F32 = "*bf16", "*fp32"
STYLED_TYPES = {**dict.fromkeys(("x_ptr", "w_ptr", "y_ptr", "out_ptr", "gy_ptr", "gz_ptr", "gx_ptr"), BF16),
                **dict.fromkeys(("s_ptr", "scale_ptr", "bias_ptr", "noise_ptr", "gscale_ptr", "gs_ptr"), F32),
                "clamp": "fp32"}
RGB_TYPES = {"x_ptr": BF16, "gx_ptr": BF16, **dict.fromkeys(("s_ptr", "w_ptr", "out_ptr", "g_ptr", "gs_ptr"), F32)}
# (name, C_in, C_out, input side, up): layers the kernels take (at most fused_styled.MAX_CHANNELS channels)
SHAPES = [("world 256 plain", 16, 16, 256, False), ("world 256 up", 32, 16, 128, True),
          ("world 64 plain", 64, 64, 64, False), ("config-f 1024 plain", 32, 32, 1024, False),
          ("config-f 1024 up", 64, 32, 512, True)]


def resources(kernel, types: dict, consts: dict, target: GPUTarget, warps: int) -> str:  # noqa: ANN001
    """The resource line (REG, STACK, SHARED, LOCAL) cuobjdump gives ``kernel`` compiled with ``consts``."""
    names = kernel.arg_names
    signature = {n: "constexpr" if n in consts else types.get(n, "i32") for n in names}
    src = ASTSource(fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in consts.items()})
    compiled = triton.compile(src, target=target, options={"num_warps": warps})
    path = pathlib.Path(tempfile.mkdtemp()) / "kernel.cubin"
    path.write_bytes(compiled.asm["cubin"])
    cuobjdump = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    out = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(path)], capture_output=True, text=True,
                         check=True).stdout
    line = next(x for x in out.splitlines() if "REG:" in x)
    return " ".join(f for f in line.split() if f.split(":")[0] in ("REG", "STACK", "SHARED", "LOCAL"))


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--warps", default=None, help="default: the launchers' (fused_styled.NUM_WARPS)")
    ap.add_argument("--shapes", type=int, default=len(SHAPES), help="only the first N layer shapes")
    ap.add_argument("--tile", type=int, default=None, help="elements per tile (default: the launchers', "
                    "fused_styled.TILE_ELEMENTS)")
    args = ap.parse_args()
    fs.TILE_ELEMENTS = args.tile or fs.TILE_ELEMENTS
    target = GPUTarget("cuda", args.arch, 32)
    for name, c_in, c_out, side, up in SHAPES[:args.shapes]:
        c_conv = c_out * 4 if up else c_out
        bp, bk, bj = fs._blocks(side, side, c_in, c_conv)
        rbp, rbk = fs._rgb_blocks(side * side, c_out)
        for warps in (int(w) for w in (args.warps or str(fs.NUM_WARPS)).split(",")):
            tiles = {"BP": bp, "BK": bk, "BJ": bj, "INTERPRETED": False}
            pbp, pbj = fs._pointwise_blocks(side, side, c_conv)
            pointwise = {"BP": pbp, "BJ": pbj, "INTERPRETED": False}
            rows = [("forward", fs._styled_forward_kernel, {**tiles, "UP": up, "CLAMP": False}),
                    ("output grad", fs._styled_output_grad_kernel, {**pointwise, "UP": up, "CLAMP": False}),
                    ("input grad", fs._styled_input_grad_kernel, tiles)]
            if not up:  # the RGB layers read the plain layers' outputs
                rows += [("rgb forward", fs._rgb_forward_kernel, {"BP": rbp, "BK": rbk}),
                         ("rgb backward", fs._rgb_backward_kernel, {"BP": rbp, "BK": rbk, "INTERPRETED": False})]
            for what, kernel, consts in rows:
                types = RGB_TYPES if what.startswith("rgb") else STYLED_TYPES
                tile = ",".join(f"{k}={v}" for k, v in consts.items() if k.startswith("B"))
                print(f"{name:20s} {what:12s} warps {warps} {tile:18s} "
                      f"{resources(kernel, types, consts, target, warps)}", flush=True)


if __name__ == "__main__":
    main()
