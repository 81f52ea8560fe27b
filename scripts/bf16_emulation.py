"""bf16 parity emulated on the CPU: ``PYTHONPATH=. python scripts/bf16_emulation.py METHOD STEPS N [VARIANTS]``.

The CPU's bf16 autocast (oneDNN convolutions in bfloat16 with float32 accumulation) stands in for the GPU's
to find which part of the bf16 path moves a method's results, without device time. On the embedded world
(N held-out faces, attrnet-lpips loss) each variant inverts the batch under bf16 autocast and is compared,
image by image, with the same batch in float32: largest and mean (± standard error) difference of the final
PSNR and of the final loss, in dB. VARIANTS (comma list, default ``bf16,bf16-oldrgb``):

- ``bf16``: the generator as it is (RGB path in float32, ``layers.ToRGB``);
- ``bf16-oldrgb``: the RGB path under autocast as before (each layer's RGB output and the upsampled skip
  rounded to bf16);
- ``+percfp32`` on either: the perceptual distance outside autocast;
- ``+polyphase``, ``+stencil``, ``+transposed`` on either: that form of the 2x up-convolution (``BENCH_UPCONV``;
  the float32 reference runs the CPU's own, two-step).

Used for the notes of issue #7 (benchmarks/RESULTS.md); GPU figures come from ``tests/accel``.
"""

import math
import statistics
import sys
import time

import torch

from bench.generators import layers
from bench.metrics import build_metrics
from bench.world.defaults import default_generator
from bench.world.perceptual import load_world_perceptual
from bench.world.training import heldout_faces
from methods import build_method
from tests.accel.test_parity import _resources

CURRENT_TORGB = layers.ToRGB.forward


def old_torgb(self, x, w, skip=None):
    """The RGB path before the float32 change: autocast rounds its convolutions' outputs to bf16."""
    out = self.conv(x, w) + self.bias
    if skip is not None:
        out = out + self.upsample(skip)
    return out


class Float32Perceptual:
    """A perceptual distance evaluated outside autocast."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name

    def __call__(self, x, y):
        with torch.autocast("cpu", enabled=False):
            return self.inner(x.float(), y.float())

    def against(self, y):
        """``x -> d(x, y)``, y's features computed once in float32."""
        with torch.autocast("cpu", enabled=False):
            distance = self.inner.against(y.float())

        def d(x):
            with torch.autocast("cpu", enabled=False):
                return distance(x.float())

        return d


def _summary(d: list[float]) -> str:
    se = statistics.stdev(d) / math.sqrt(len(d))
    return f"max {max(map(abs, d)):.3f} mean {statistics.mean(d):+.3f} ± {se:.3f}"


def main(name: str, steps: int, n: int, variants: list[str]) -> None:
    """Print one line per variant."""
    torch.set_num_threads(2)
    gen = default_generator().eval().requires_grad_(False)
    perceptual, _ = load_world_perceptual(torch.device("cpu"))
    targets = heldout_faces(n, resolution=gen.resolution)[0]
    psnr = build_metrics(["psnr"], device=torch.device("cpu"))[0]

    upconv = layers.UPCONV

    def run(variant: str):
        layers.ToRGB.forward = old_torgb if "oldrgb" in variant else CURRENT_TORGB
        layers.UPCONV = next((m for m in layers.UPCONV_MODES if f"+{m}" in variant), upconv)
        distance = Float32Perceptual(perceptual) if "percfp32" in variant else perceptual
        method = build_method(name, {"steps": steps}, **_resources(name, gen))
        start = time.time()
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant != "fp32"):
                out = method.invert(targets, gen, seeds=list(range(n)), perceptual=distance)
        finally:
            layers.ToRGB.forward, layers.UPCONV = CURRENT_TORGB, upconv
        return out.loss, psnr(out.images, targets), time.time() - start

    ref_loss, ref_psnr, seconds = run("fp32")
    print(f"{name}, {steps} steps, {n} faces; float32 took {seconds:.0f} s", flush=True)
    for variant in variants:
        loss, score, seconds = run(variant)
        d_loss = [10 * math.log10(a / b) for a, b in zip(loss.tolist(), ref_loss.tolist(), strict=True)]
        d_psnr = (score - ref_psnr).tolist()
        print(f"{variant:24s} {seconds:4.0f} s   PSNR {_summary(d_psnr)}   loss {_summary(d_loss)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
         (sys.argv[4] if len(sys.argv) > 4 else "bf16,bf16-oldrgb").split(","))
