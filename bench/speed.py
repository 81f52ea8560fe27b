"""``bench speed``: image-steps per second of each optimisation method, batched and one image at a time.

One image-step is one optimiser step of one image. Each method is timed after a warm-up as the
difference between runs of ``steps_hi`` and ``steps_lo`` steps (so set-up such as encoder passes or
statistics is excluded), with the device synchronised around each run. A difference below a floor
(``MIN_TIMED_S``; timer jitter and scheduling would dominate it) is never turned into a rate: the run is
extended (more steps) until the difference clears the floor, or refused with :class:`TimingFloorError`.
FLOPs per image-step come from ``torch.utils.flop_counter`` over one step; peak memory per image from
CUDA's allocator.

Timing configurations use random weights where no trained network exists (compute does not depend on
the values); such networks are used for timing only and never produce a reported metric.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.accel import AUTO_BATCH_CAP, Accel, probe_batch_size
from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator, default_channels
from bench.metrics.lpips_metric import LPIPSDistance
from methods import build_method, get_preset

MIN_TIMED_S = 0.1
"""Shortest timed difference (seconds) a rate is taken from: a few ms of jitter stay a few per cent."""
MAX_TIMED_STEPS = 20_000
"""Most optimiser steps ``bench speed`` extends a run to before it refuses to report a rate."""

CONFIGS = {
    # name: (resolution, channel base, channel max, w_dim, mapping layers)
    "tiny": (32, 512, 32, 32, 2),
    "config-f-256": (256, 16384, 512, 512, 8),
    "config-f-1024": (1024, 32768, 512, 512, 8),
}


@dataclass(frozen=True)
class SpeedRow:
    """One method's timing: batched on the fast path, and one image at a time (fast path and float32)."""

    method: str
    batch: int
    fast_path: str  # Accel.label, e.g. "bf16, channels-last"
    image_steps_per_s: float
    single_image_steps_per_s: float
    single_fp32_image_steps_per_s: float
    flops_per_image_step: float
    peak_mem_per_image_mb: float
    precision: str = "fp32"  # of the batched run (keys the matrix-product peak it is compared with)
    steps: tuple[int, int] = (0, 0)  # (LO, HI) steps the batched rate was taken from (HI may be extended)

    @property
    def ratio(self) -> float:
        """Batched fast path over float32 one image at a time (the way these methods are usually run)."""
        return self.image_steps_per_s / self.single_fp32_image_steps_per_s

    @property
    def ratio_same_precision(self) -> float:
        """Batched over one image at a time, both on the fast path."""
        return self.image_steps_per_s / self.single_image_steps_per_s


def random_lpips_for_timing(device: torch.device) -> LPIPSDistance:
    """LPIPS-VGG16 with random weights, at 256 px: for TIMING ONLY.

    v0.1's scaling, five VGG stages, unit normalisation and linear layers: the loss a real run computes
    with ImageNet weights, at the same cost.
    """
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's note on lpips's `pretrained=` argument
        module = lpips.LPIPS(net="vgg", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    module = module.to(device).eval().requires_grad_(False)
    return LPIPSDistance(module, "vgg", name="random-lpips-vgg16-for-timing")


WORLDS = ("world", "world256")
"""The embedded worlds ``bench speed`` times: the 64 px default and the 256 px world of the protocol runs."""


def build_timing_setup(config: str, device: torch.device):
    """(generator, perceptual, description) for a timing configuration name, ``world`` or ``world256``."""
    if config in WORLDS:
        from bench.world.perceptual import load_world_perceptual

        if config == "world":
            from bench.world.defaults import default_generator

            gen, desc = default_generator(), "embedded world generator (64 px) + attrnet-lpips"
        else:
            from bench.world import world256

            gen, desc = world256.load(), "embedded 256 px world generator (the protocol runs') + attrnet-lpips"
        perceptual, _ = load_world_perceptual(device)
        return gen.to(device), perceptual, desc
    if config not in CONFIGS:
        raise ValueError(f"--config {config!r}: expected {', '.join(WORLDS)} or one of {', '.join(CONFIGS)}")
    res, base, cmax, w_dim, n_mlp = CONFIGS[config]
    torch.manual_seed(0)
    gen = StyleGAN2Generator(GeneratorConfig(res, w_dim, n_mlp, default_channels(res, base, cmax)))
    gen = gen.to(device).eval().requires_grad_(False)
    gen.compute_w_avg(1000)
    perceptual = random_lpips_for_timing(device) if config != "tiny" else None
    desc = f"random-weight StyleGAN2 {res}px (channel base {base}, max {cmax})" + \
        (" + random-weight LPIPS-VGG16 at 256 px" if perceptual is not None else "")
    return gen, perceptual, desc


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def config_params(config: str, names: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Per-method parameters of a timing configuration, as ``bench run`` uses them, and the methods left out.

    On ``world256`` the F/W+ presets take the world's base-code size (``fwplus16`` runs 4x4; ``fwplus8`` has
    none, and is left out with the reason): :func:`bench.prepare.world_proportions`, which raises when no
    method is left.
    """
    if config != "world256":
        return {}, {}
    from bench.config import RunConfig
    from bench.prepare import WORLD256, world_proportions

    return world_proportions(RunConfig(methods=",".join(names), generator=WORLD256), {})


def _resources(name: str, gen, params: dict | None = None) -> dict:
    """Random-init encoders for methods that need one (timing only); ``params``: the method's overrides."""
    preset = get_preset(name)
    if not preset.needs_encoder:
        return {}
    device = gen.w_avg.device
    if name.startswith("fwplus"):
        from methods.fwplus import BaseCodeEncoder

        res = (params or {}).get("base_res", preset.params["base_res"])
        return {"encoder": BaseCodeEncoder(gen.feature_shape(res)[0]).to(device).eval()}
    if name == "idinvert":
        from bench.encoders.idinvert import DomainGuidedEncoder, TrainSettings

        s = TrainSettings()
        enc = DomainGuidedEncoder(gen.num_ws, gen.w_dim, gen.resolution, s.width, s.max_width, s.code_channels)
        return {"encoder": enc.to(device).eval()}
    raise ValueError(f"bench speed: no timing encoder for {name!r}")


def _invert_seconds(method, gen, perceptual, targets: torch.Tensor, accel: Accel) -> float:
    dev = targets.device
    accel.prepare(gen, perceptual)
    _sync(dev)
    start = time.perf_counter()
    with accel.context(dev):
        method.invert(targets, gen, seeds=list(range(targets.shape[0])), perceptual=perceptual)
    _sync(dev)
    return time.perf_counter() - start


class TimingFloorError(ValueError):
    """A timed difference stayed below the floor even at the largest number of steps allowed."""


def timed_difference(seconds_for: Callable[[int], float], lo: int, hi: int, *, floor_s: float = MIN_TIMED_S,
                     max_steps: int = MAX_TIMED_STEPS, what: str = "run") -> tuple[float, int]:
    """``seconds_for(hi) - seconds_for(lo)``, with ``hi`` raised until the difference is at least ``floor_s``.

    ``seconds_for(lo)`` runs once first as a warm-up. Each retry multiplies ``hi - lo`` by the factor the
    last difference fell short by (times 1.5, at least 2, at most 64), up to ``max_steps``.

    Args:
        seconds_for: Wall seconds of a run of that many steps.
        lo: Steps of the short run (>= 0).
        hi: Steps of the long run (> lo).
        floor_s: Shortest difference accepted, seconds.
        max_steps: Largest ``hi`` tried.
        what: Names the timed run in the error.

    Returns:
        ``(difference in seconds, the hi it was timed at)``.

    Raises:
        TimingFloorError: If the difference is below ``floor_s`` at ``hi == max_steps``.
    """
    seconds_for(lo)  # warm-up (allocations, cuDNN choices)
    while True:
        diff = seconds_for(hi) - seconds_for(lo)
        if diff >= floor_s:
            return diff, hi
        if hi >= max_steps:
            raise TimingFloorError(
                f"bench speed: {what}: {hi - lo} steps took {diff * 1e3:.2f} ms more than {lo}, below the "
                f"{floor_s * 1e3:.0f} ms floor a rate can be taken from, even at {max_steps} steps; "
                f"pass a larger --batch or --steps")
        factor = 4.0 if diff <= 0 else min(64.0, max(2.0, 1.5 * floor_s / diff))
        hi = min(max_steps, lo + math.ceil((hi - lo) * factor))


def timing_method(name: str, gen, steps: int, params: dict | None = None, resources: dict | None = None):
    """Method ``name`` at ``steps`` steps, as a timing configuration runs it.

    ``params``: the configuration's overrides (:func:`config_params`); ``resources``: the timing-only
    encoders (:func:`_resources`), built here when not given.
    """
    resources = _resources(name, gen, params) if resources is None else resources
    return build_method(name, {**(params or {}), "steps": steps}, **resources)


def _rate(name: str, gen, perceptual, targets: torch.Tensor, lo: int, hi: int, accel: Accel,
          floor_s: float = MIN_TIMED_S, max_steps: int = MAX_TIMED_STEPS,
          params: dict | None = None) -> tuple[float, int]:
    """Image-steps per second of ``name`` on ``targets`` and the HI steps it was timed at (see timed_difference)."""
    resources = _resources(name, gen, params)

    def seconds_for(steps: int) -> float:
        return _invert_seconds(timing_method(name, gen, steps, params, resources), gen, perceptual, targets, accel)

    what = f"{name} at batch {targets.shape[0]} ({accel.label})"
    diff, hi = timed_difference(seconds_for, lo, hi, floor_s=floor_s, max_steps=max_steps, what=what)
    return targets.shape[0] * (hi - lo) / diff, hi


def _flops_per_image_step(name: str, gen, perceptual, targets: torch.Tensor, params: dict | None = None) -> float:
    """FLOPs of one optimiser step per image: a 2-step minus a 1-step inversion, after a 1-step warm-up.

    A method's first use of a generator builds what it caches (P-norm+'s statistics: hundreds of GFLOP on the
    64 px world); counted inside the 1-step run, that would make the difference negative.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    resources = _resources(name, gen, params)
    _invert_seconds(timing_method(name, gen, 1, params, resources), gen, perceptual, targets, Accel())
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            _invert_seconds(timing_method(name, gen, steps, params, resources), gen, perceptual, targets, Accel())
        counts.append(counter.get_total_flops())
    return (counts[1] - counts[0]) / targets.shape[0]


def auto_batch(name: str, gen, perceptual, device: torch.device, accel: Accel,
               params: dict | None = None) -> tuple[int, str]:
    """``--batch auto``: the runner's probe (:func:`bench.accel.probe_batch_size`) for this method."""
    method = timing_method(name, gen, 2, params)
    z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        one = gen(z).clamp(-1, 1)

    def invert(b: int) -> None:
        _invert_seconds(method, gen, perceptual, one.expand(b, -1, -1, -1).contiguous(), accel)

    return probe_batch_size(invert, device, limit=AUTO_BATCH_CAP)


def time_method(name: str, gen, perceptual, batch: int | str, steps: tuple[int, int], device: torch.device,
                accel: Accel | None = None, log: Callable[[str], None] = print, single: bool = True,
                floor_s: float = MIN_TIMED_S, max_steps: int = MAX_TIMED_STEPS,
                params: dict | None = None) -> SpeedRow:
    """Batched and one-image-at-a-time throughput, FLOPs and peak memory of one method.

    ``params``: the method's overrides in this configuration (:func:`config_params`). The batched run and
    the first one-image run use ``accel`` (the fast path); the second one-image run
    is float32 in the default layout, the reference the fast path is compared with; ``single=False`` skips
    both (their rates are NaN). Each rate comes from a timed difference of at least ``floor_s`` seconds:
    runs that are too short are extended up to ``max_steps`` steps (logged), else refused
    (:class:`TimingFloorError`).
    """
    lo, hi = steps

    def rate(targets: torch.Tensor, acc: Accel, label: str) -> float:
        value, used = _rate(name, gen, perceptual, targets, lo, hi, acc, floor_s, max_steps, params)
        if used != hi:
            log(f"{name}: {label}: {hi - lo} steps timed under {floor_s * 1e3:.0f} ms; extended to {lo},{used}")
        return value

    accel = accel or Accel()
    if batch == "auto":
        batch, note = auto_batch(name, gen, perceptual, device, accel, params)
        log(f"{name}: batch {note}")
    while True:
        z = torch.randn(batch, gen.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            targets = gen(z).clamp(-1, 1)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            batched, hi_used = _rate(name, gen, perceptual, targets, lo, hi, accel, floor_s, max_steps, params)
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            del targets, z
            batch //= 2
            log(f"{name}: out of memory; batch halved to {batch}")
    if hi_used != hi:
        log(f"{name}: batched: {hi - lo} steps timed under {floor_s * 1e3:.0f} ms; extended to {lo},{hi_used}")
    peak = torch.cuda.max_memory_allocated(device) / batch / 2**20 if device.type == "cuda" else float("nan")
    # written before the slow one-image runs, so that a run cut short still leaves the batched figures
    log(f"{name}: {batched:.1f} image-steps/s batched ({batch}, {accel.label}), peak {peak:.0f} MB / image")
    one = one_fp32 = float("nan")
    if single:
        one = rate(targets[:1], accel, "one at a time")
        one_fp32 = rate(targets[:1], Accel(), "one at a time in fp32") if accel != Accel() else one
        log(f"{name}: {one:.1f} image-steps/s one at a time ({accel.label}), {one_fp32:.1f} one at a time in fp32")
    flops = _flops_per_image_step(name, gen, perceptual, targets[:1], params)
    return SpeedRow(name, batch, accel.label, batched, one, one_fp32, flops, peak, accel.precision, (lo, hi_used))


def matmul_peak_tflops(device: torch.device, precision: str = "fp32", n: int = 8192) -> float:
    """Measured dense matrix-product rate at ``precision`` (fp32 strict, tf32 or bf16)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if device.type != "cuda":
        n = 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        for _ in range(3):
            a @ b
        _sync(device)
        reps = 20 if device.type == "cuda" else 2
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def format_rows(rows: list[SpeedRow], peak_tflops: dict[str, float]) -> str:
    """Markdown table of the timings; ``peak_tflops``: precision -> measured matrix-product peak (TFLOP/s).

    Rates that were not measured (``--no-single``) are shown as a dash. A line under the table gives the
    steps each batched rate was timed at (HI is larger than asked where a run was extended).
    """
    head = ("| method | precision | batch | image-steps/s | one at a time (same precision) | one at a time (fp32) "
            "| ratio vs fp32 single | ratio vs same-precision single | GFLOP / image-step "
            "| achieved TFLOP/s | matrix-product peak TFLOP/s | peak MB / image |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        achieved = r.flops_per_image_step * r.image_steps_per_s / 1e12
        peak = peak_tflops.get(r.precision, math.nan)
        lines.append(f"| {r.method} | {r.fast_path} | {r.batch} | {r.image_steps_per_s:.1f} | "
                     f"{_num(r.single_image_steps_per_s)} | {_num(r.single_fp32_image_steps_per_s)} | "
                     f"{_num(r.ratio, 'x')} | {_num(r.ratio_same_precision, 'x')} | "
                     f"{r.flops_per_image_step / 1e9:.2f} | {achieved:.1f} | {_num(peak, digits=0)} | "
                     f"{_num(r.peak_mem_per_image_mb, digits=0)} |")
    timed = ", ".join(f"{r.method} {r.steps[0]},{r.steps[1]}" for r in rows)
    lines.append(f"\nRates from the time difference of runs of LO and HI steps (each above the timing floor, "
                 f"--min-seconds); batched LO,HI: {timed}.")
    return "\n".join(lines)


def _num(value: float, unit: str = "", digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}{unit}"
