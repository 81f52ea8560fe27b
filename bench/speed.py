"""``bench speed``: image-steps per second of each optimisation method, batched and one image at a time.

One image-step is one optimiser step of one image. Each method is timed after a warm-up as the
difference between runs of ``steps_hi`` and ``steps_lo`` steps (so set-up such as encoder passes or
statistics is excluded), with the device synchronised around each run. FLOPs per image-step come from
``torch.utils.flop_counter`` over one step; peak memory per image from CUDA's allocator.

Timing configurations use random weights where no trained network exists (compute does not depend on
the values); such networks are used for timing only and never produce a reported metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator, default_channels
from methods import build_method, get_preset

CONFIGS = {
    # name: (resolution, channel base, channel max, w_dim, mapping layers)
    "tiny": (32, 512, 32, 32, 2),
    "config-f-256": (256, 16384, 512, 512, 8),
    "config-f-1024": (1024, 32768, 512, 512, 8),
}


@dataclass(frozen=True)
class SpeedRow:
    """One method's timing at one batch size."""

    method: str
    batch: int
    image_steps_per_s: float
    single_image_steps_per_s: float
    flops_per_image_step: float
    peak_mem_per_image_mb: float

    @property
    def ratio(self) -> float:
        """Batched over one-at-a-time throughput."""
        return self.image_steps_per_s / self.single_image_steps_per_s


class RandomVGGPerceptual:
    """A VGG16-sized perceptual network with random weights, at 256 px: for TIMING ONLY."""

    name = "random-vgg16-for-timing"

    def __init__(self, device: torch.device) -> None:
        from torchvision.models import vgg16

        self.net = vgg16(weights=None).features[:23].to(device).eval().requires_grad_(False)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=256, mode="bilinear", align_corners=False)
        y = torch.nn.functional.interpolate(y, size=256, mode="bilinear", align_corners=False)
        return (self.net(x) - self.net(y)).square().flatten(1).mean(1)


def build_timing_setup(config: str, device: torch.device):
    """(generator, perceptual, description) for a timing configuration name or ``world``."""
    if config == "world":
        from bench.world.defaults import default_generator
        from bench.world.perceptual import load_world_perceptual

        gen = default_generator().to(device)
        perceptual, _ = load_world_perceptual(device)
        return gen, perceptual, "embedded world generator (64 px) + attrnet-lpips"
    if config not in CONFIGS:
        raise ValueError(f"--config {config!r}: expected world or one of {', '.join(CONFIGS)}")
    res, base, cmax, w_dim, n_mlp = CONFIGS[config]
    torch.manual_seed(0)
    gen = StyleGAN2Generator(GeneratorConfig(res, w_dim, n_mlp, default_channels(res, base, cmax)))
    gen = gen.to(device).eval().requires_grad_(False)
    gen.compute_w_avg(1000)
    perceptual = RandomVGGPerceptual(device) if config != "tiny" else None
    desc = f"random-weight StyleGAN2 {res}px (channel base {base}, max {cmax})" + \
        (" + random VGG16 features at 256 px" if perceptual is not None else "")
    return gen, perceptual, desc


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resources(name: str, gen) -> dict:
    """Random-init encoders for methods that need one (timing only)."""
    preset = get_preset(name)
    if not preset.needs_encoder:
        return {}
    if name.startswith("fwplus"):
        from methods.fwplus import BaseCodeEncoder

        res = preset.params["base_res"]
        return {"encoder": BaseCodeEncoder(gen.feature_shape(res)[0]).to(gen.w_avg.device).eval()}
    raise ValueError(f"bench speed: no timing encoder for {name!r}")


def _invert_seconds(name: str, gen, perceptual, targets: torch.Tensor, steps: int) -> float:
    method = build_method(name, {"steps": steps}, **_resources(name, gen))
    dev = targets.device
    _sync(dev)
    start = time.perf_counter()
    method.invert(targets, gen, seeds=list(range(targets.shape[0])), perceptual=perceptual)
    _sync(dev)
    return time.perf_counter() - start


def _rate(name: str, gen, perceptual, targets: torch.Tensor, lo: int, hi: int) -> float:
    _invert_seconds(name, gen, perceptual, targets, lo)  # warm-up (allocations, cuDNN choices)
    t_lo = _invert_seconds(name, gen, perceptual, targets, lo)
    t_hi = _invert_seconds(name, gen, perceptual, targets, hi)
    return targets.shape[0] * (hi - lo) / max(t_hi - t_lo, 1e-9)


def _flops_per_image_step(name: str, gen, perceptual, targets: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            _invert_seconds(name, gen, perceptual, targets, steps)
        counts.append(counter.get_total_flops())
    return (counts[1] - counts[0]) / targets.shape[0]


def time_method(name: str, gen, perceptual, batch: int, steps: tuple[int, int], device: torch.device,
                log: Callable[[str], None] = print) -> SpeedRow:
    """Batched and one-image-at-a-time throughput, FLOPs and peak memory of one method."""
    z = torch.randn(batch, gen.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        targets = gen(z).clamp(-1, 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batched = _rate(name, gen, perceptual, targets, *steps)
    peak = torch.cuda.max_memory_allocated(device) / batch / 2**20 if device.type == "cuda" else float("nan")
    single = _rate(name, gen, perceptual, targets[:1], *steps)
    flops = _flops_per_image_step(name, gen, perceptual, targets[:1])
    log(f"{name}: {batched:.1f} image-steps/s batched ({batch}), {single:.1f} one at a time")
    return SpeedRow(name, batch, batched, single, flops, peak)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096) -> float:
    """Measured dense matrix-product rate at ``dtype`` (TF32 allowed for float32 if enabled globally)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps = 10 if device.type == "cuda" else 2
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def format_rows(rows: list[SpeedRow], peak_tflops: float) -> str:
    """Markdown table of the timings."""
    head = ("| method | batch | image-steps/s | one at a time | ratio | GFLOP / image-step | achieved TFLOP/s "
            f"(peak {peak_tflops:.1f}) | peak MB / image |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        achieved = r.flops_per_image_step * r.image_steps_per_s / 1e12
        lines.append(f"| {r.method} | {r.batch} | {r.image_steps_per_s:.1f} | {r.single_image_steps_per_s:.1f} | "
                     f"{r.ratio:.1f}x | {r.flops_per_image_step / 1e9:.2f} | {achieved:.3f} | "
                     f"{r.peak_mem_per_image_mb:.0f} |")
    return "\n".join(lines)
