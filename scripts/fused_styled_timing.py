"""One styled layer's forward and backward, unfused (eager and compiled) against the fused Triton kernels (#17).

For each layer shape of the 256 px world and of config-f 1024² (input channels, output channels, input side,
up-convolution or not), it times on CUDA under bf16 autocast, with CUDA events over ``--steps`` repetitions
after warm-up, one step = the layer's forward and the gradients of x and w:

- ``eager``: the frozen layer's default path (:class:`bench.generators.layers.StyledConvFn`, cuDNN);
- ``compiled``: the same under ``torch.compile`` (Inductor's kernels around cuDNN's convolutions);
- ``fused``: :mod:`bench.generators.fused_styled` (``BENCH_FUSED_STYLED``'s path), eager: three Triton kernels.

It prints microseconds per image and the bandwidth the fused kernels would use if they moved only what they must
(x read twice, dL/dx written, y written, the convolution's output and dL/dconv written and read, dL/dy read:
2 bytes per element in bf16), and checks the fused result against the eager one (relative error of
the output and the gradients). Writes a JSON list with ``--out``.

    python scripts/fused_styled_timing.py --out fused_layers.json
    python scripts/fused_styled_timing.py --only-fused --sweep 1024x4,1024x8,2048x4,4096x8,8192x8   # tile sizes
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("BENCH_FUSED_STYLED", "1")

import torch  # noqa: E402

from bench.generators import fused_styled, layers  # noqa: E402

# (name, C_in, C_out, input side, upsample, batch): the world's two 256 px layers and its 128 px ones; config-f's
# 1024 px and 512 px layers at the batch item 4 runs (48)
SHAPES = [
    ("world 256 plain", 16, 16, 256, False, 550), ("world 256 up", 32, 16, 128, True, 550),
    ("world 128 plain", 32, 32, 128, False, 550), ("world 128 up", 64, 32, 64, True, 550),
    ("config-f 1024 plain", 32, 32, 1024, False, 48), ("config-f 1024 up", 64, 32, 512, True, 48),
    ("config-f 512 plain", 64, 64, 512, False, 48),
]


def _step(layer, x, w, noise):  # noqa: ANN001, ANN202
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x, w, noise)
    return (y, *torch.autograd.grad(y.float().square().mean(), (x, w)))


def _time(fn, steps: int) -> float:  # noqa: ANN001
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(steps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / steps


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--bandwidth", type=float, default=3.35e12, help="bytes/s, for the share printed")
    ap.add_argument("--sweep", default=None, help="tile elements x warps to time the fused kernels at, e.g. "
                    "1024x4,2048x8,4096x8 (fused_styled.TILE_ELEMENTS, NUM_WARPS; the default's row is 'fused')")
    ap.add_argument("--only-fused", action="store_true", help="time the fused kernels only (with --sweep)")
    args = ap.parse_args()
    layers.UPCONV = "polyphase"
    torch.backends.cudnn.benchmark = True
    rows = []
    for name, c_in, c_out, side, up, batch in SHAPES:
        torch.manual_seed(0)
        layer = layers.StyledConv(c_in, c_out, 512, upsample=up).cuda().requires_grad_(False)
        out_side = side * (2 if up else 1)
        noise = torch.randn(1, 1, out_side, out_side, device="cuda")
        x = torch.randn(batch, c_in, side, side, device="cuda", dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        w = torch.randn(batch, 512, device="cuda", requires_grad=True)
        row = {"layer": name, "c_in": c_in, "c_out": c_out, "side": side, "up": up, "batch": batch}
        results = {}
        compiled = torch.compile(_step)
        variants = [] if args.only_fused else [("eager", False, _step, None), ("compiled", False, compiled, None)]
        variants.append(("fused", True, _step, None))
        for config in (args.sweep.split(",") if args.sweep else []):
            variants.append((f"fused_{config}", True, _step, tuple(int(v) for v in config.split("x"))))
        default_tiles = fused_styled.TILE_ELEMENTS, fused_styled.NUM_WARPS
        for variant, fused, fn, tiles in variants:
            fused_styled.ENABLED = fused
            fused_styled.TILE_ELEMENTS, fused_styled.NUM_WARPS = tiles or default_tiles
            try:
                results[variant] = fn(layer, x, w, noise)
                args_ = (layer, x, w, noise)
                seconds = _time(lambda fn=fn, a=args_: fn(*a), args.steps)
                row[f"{variant}_us_per_image"] = round(seconds / batch * 1e6, 3)
            except Exception as err:  # noqa: BLE001 - a variant that fails is reported, the others still run
                row[f"{variant}_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        if "fused" in results and "eager" in results:
            row["fused_vs_eager_rel_error"] = [
                round(((a.float() - b.float()).norm() / b.float().norm()).item(), 5)
                for a, b in zip(results["fused"], results["eager"], strict=True)]
        # x read twice and dL/dx written; y written, the convolution's output written and read, dL/dy read, dL/dconv
        # written and read (the convolution's output and dL/dconv have as many elements as y)
        must = 2 * batch * (3 * c_in * side * side + 6 * c_out * out_side * out_side)
        row["fused_bytes_per_image"] = must // batch
        if "fused_us_per_image" in row:
            rate = must / batch / (row["fused_us_per_image"] * 1e-6)
            row["fused_share_of_bandwidth"] = round(rate / args.bandwidth, 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
