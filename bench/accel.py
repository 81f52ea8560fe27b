"""The fast path of optimisation-based inversion: precision, memory layout, compilation and batch size.

- **Precision** (``--precision``): ``fp32`` (strict float32, TF32 off: the reference), ``tf32`` (float32
  tensors, matrix products and convolutions on TF32 tensor cores) or ``bf16`` (autocast: convolutions and
  matrix products in bfloat16 on tensor cores, reductions in float32; latent codes, their gradients and Adam
  stay float32). ``auto`` is ``fp32`` on the CPU; on CUDA each method runs at the fastest reduced precision
  at which it held the GPU parity test (``tests/accel/test_parity.py``: per image within 0.1 dB of float32
  one image at a time, or on the mean for methods whose float32 runs are themselves that noisy; figures in
  ``benchmarks/RESULTS.md``), as its preset records (``methods.base.Preset.gpu_precisions``), else in
  float32. Im2S, P-norm+, F/W+ 8x8 and 16x16, IDinvert (H100) and the W projector (H200, on the mean) held at
  TF32 and bf16, so they run in bf16; pSp runs in float32. Whatever the precision, the final loss and the
  reconstructions are measured in float32 after the last step (``methods.base.full_precision``), and the RGB
  path stays float32 under autocast (``layers.ToRGB``: in bf16 its rounding had moved Im2S by 0.14 dB).
- **Memory layout**: on CUDA the generator's activations and the perceptual networks run channels-last
  (NHWC), the layout tensor-core convolutions want.
- **Compilation** (``--compile``): ``torch.compile`` of the generator's synthesis blocks (one graph for all
  batch sizes above 1), which fuses the modulation, the epilogue and the pixel shuffles around the cuDNN
  convolutions into few kernels: 1.6x at 1024 px, where that memory-bound work took 75 % of the step, 1.86x
  on the 256 px world; and of the perceptual distance's part of the step
  (``bench.compiling``). By default (``auto``) a method is compiled on CUDA when its optimisation in this run
  is long enough to repay the compilation (:func:`compile_pays`); the decision is made before its batch
  probe, so the probe measures what runs, and recorded in its settings. A compilation that fails (no
  Triton, no C compiler) falls back to eager networks with a warning
  (``bench.compiling.Compilable.stop_compiling``; a batch it broke runs again, ``bench.batch.invert_adaptive``).
- **Batch size** (``--batch-size auto``): from free GPU memory, measured with a two-step probe inversion at
  batch 2 and 6 after a warm-up (per-image peak memory from the difference); where the fixed part looks like
  a strict-float32 convolution workspace sized to the free memory, the batch the memory per image allows is
  itself probed (pSp at 1024 px had run at batch 1); the runner halves a batch and retries on out-of-memory,
  and keeps the smaller size for the method's later batches.

Batching does not change results: every loss is per image and Adam is element-wise (``methods.optim``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from bench.choices import PRECISION_CHOICES, PRECISIONS  # torch-free, so that the CLI starts fast
from bench.compiling import set_compiled
from bench.generators import fused_styled

# --compile auto: compile a method whose run is at least this many pixel-steps (images x steps x pixels per
# image). Compiling costs about a minute and saves 40-50 % of an eager step (1.86x on the 256 px world, 1.6x
# at 1024 px, H100, benchmarks/RESULTS.md); 2e10 is about 300k image-steps at 256 px (90 s eager there) and
# 19k at 1024 px (3 min eager), where the saving is above the cost.
COMPILE_MIN_PIXEL_STEPS = 2e10
AUTO_BATCH_CAP = 2048  # a 64 px world fits a whole protocol column set (550 units) in one batch
CPU_AUTO_BATCH = 8
MEMORY_FRACTION = 0.8
PROBE_BATCHES = (2, 6)


@dataclass(frozen=True)
class Accel:
    """How inversion runs on a device: ``precision`` in :data:`PRECISIONS`, channels-last or not."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")

    @property
    def label(self) -> str:
        """e.g. ``bf16, channels-last``; with the experimental fused styled convolutions switched on, says so."""
        fused = fused_styled.ENABLED and self.precision == "bf16"  # where they run (bf16 on CUDA)
        return ", ".join([self.precision] + ["channels-last"] * self.channels_last + ["compiled"] * self.compile
                         + ["fused styled convolutions (BENCH_FUSED_STYLED=1)"] * fused)

    @contextlib.contextmanager
    def context(self, device: torch.device) -> Iterator[None]:
        """Run the enclosed inversion at this precision (restores the global TF32 flags on exit)."""
        if device.type != "cuda":
            if self.precision != "fp32":
                raise ValueError(f"--precision {self.precision} needs a CUDA device, got {device}")
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        tf32 = self.precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            if self.precision == "bf16":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    yield
            else:
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def prepare(self, generator: torch.nn.Module, *networks: object) -> None:
        """Set the memory layout of the activations and weights, and whether they run compiled.

        The generator's activations and the networks' weights go channels-last or not; the generator and
        any :class:`bench.compiling.Compilable` network are switched to ``compile``.
        """
        if hasattr(generator, "channels_last"):
            generator.channels_last = self.channels_last
        set_compiled(self.compile, generator, *networks)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        for net in networks:
            # a distance holds its network as .net (the world's) or .module (LPIPS)
            held = (getattr(net, "net", None), getattr(net, "module", None))
            module = net if isinstance(net, torch.nn.Module) else next(
                (m for m in held if isinstance(m, torch.nn.Module)), None)
            if module is not None:
                module.to(memory_format=layout)


def resolve_accel(precision: str, device: torch.device, compile: bool | str = False,
                  tested: tuple[str, ...] = ()) -> Accel:
    """The :class:`Accel` of ``--precision`` and ``--compile`` for one method.

    ``tested``: the reduced precisions at which the method held the GPU parity test (its preset's
    ``gpu_precisions``). ``auto`` is the fastest of them on CUDA (bf16 over tf32; float32 if none) and float32
    on the CPU; a precision named explicitly applies as given. Channels-last on CUDA. ``compile="auto"``
    starts uncompiled: the runner decides per method (:func:`compile_pays`).
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"--precision {precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
    cuda = device.type == "cuda"
    if precision == "auto":
        precision = max(tested, key=PRECISIONS.index) if cuda and tested else "fp32"
    if precision != "fp32" and not cuda:
        raise ValueError(f"--precision {precision} needs a CUDA device; this run is on the {device.type}")
    return Accel(precision, channels_last=cuda, compile=compile is True)


def compile_pays(device: torch.device, units: int, steps: int, resolution: int) -> bool:
    """Whether ``--compile auto`` compiles a method that runs ``units`` images ``steps`` steps at ``resolution``."""
    return device.type == "cuda" and units * steps * resolution**2 >= COMPILE_MIN_PIXEL_STEPS


def describe_accels(accels: dict[str, Accel]) -> str:
    """One fast path (``bf16, channels-last``) or, where methods differ, each method's (``im2s: bf16, ...``)."""
    labels = {a.label for a in accels.values()}
    if len(labels) == 1:
        return labels.pop()
    return "; ".join(f"{name}: {a.label}" for name, a in accels.items())


def _probe_peak(invert: Callable[[int], object], device: torch.device, batch: int) -> float:
    """Bytes that ``invert(batch)`` needs above what was allocated before it (its peak)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    invert(batch)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def probe_batch_size(invert: Callable[[int], object], device: torch.device, limit: int,
                     cap: int = AUTO_BATCH_CAP) -> tuple[int, str]:
    """Largest batch that fits in free GPU memory, from probe inversions at batch 2 and 6 (PROBE_BATCHES).

    A first, unmeasured inversion at batch 2 takes the one-off costs (compilation, library workspaces).

    The two peaks give a memory per image and a fixed part. A fixed part above half the memory budget is
    what a convolution workspace looks like in strict float32: cuDNN picks FFT algorithms whose workspace
    takes what is free (65 GB for a 2-image render at 1024 px), and takes a leaner algorithm when less is
    free. That part does not stay fixed, so the batch it would leave (often 1) is not taken on trust: the
    batch that the memory per image allows is run as a probe itself, halved on out-of-memory, down to the
    first estimate. The note says when this happened.

    Args:
        invert: ``batch -> anything``; runs a short inversion of that many images (the probe).
        device: the CUDA device (on the CPU the answer is :data:`CPU_AUTO_BATCH`).
        limit: never more than this (e.g. the number of images to invert).
        cap: never more than this.

    Returns:
        ``(batch, note)``, the note saying how it was chosen.
    """
    limit = max(1, min(limit, cap))
    if device.type != "cuda":
        return min(CPU_AUTO_BATCH, limit), f"{min(CPU_AUTO_BATCH, limit)} (CPU default)"
    small, large = PROBE_BATCHES
    # a warm-up first: compilation (--compile) and one-off allocations happen in the first call, and in a
    # measured peak they had made batch 2 look as large as batch 6 (compiled Im2S on the H100: "0 MiB per image")
    _probe_peak(invert, device, small)
    peaks = [_probe_peak(invert, device, b) for b in (small, large)]
    torch.cuda.empty_cache()  # what the probes left cached is free for the run
    per_image = max((peaks[1] - peaks[0]) / (large - small), 1.0)
    fixed = max(peaks[0] - small * per_image, 0.0)
    free, _ = torch.cuda.mem_get_info(device)
    budget = free * MEMORY_FRACTION
    batch = max(1, min(int((budget - fixed) // per_image), limit))
    note = (f"{batch} (probe: {per_image / 2**20:.0f} MiB per image, {free / 2**30:.1f} GiB free; "
            f"{MEMORY_FRACTION:.0%} used, at most {limit})")
    if fixed > budget / 2 and batch < limit:
        candidate = max(1, min(int(budget // per_image), limit))
        while candidate > batch:
            try:
                peak = _probe_peak(invert, device, candidate)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                candidate = max(batch, candidate // 2)
                continue
            torch.cuda.empty_cache()
            note = (f"{candidate} (probe: {per_image / 2**20:.0f} MiB per image and {fixed / 2**30:.1f} GiB more "
                    f"at batch {small}, a convolution workspace sized to the free memory ({free / 2**30:.1f} "
                    f"GiB); batch {candidate} ran as a probe, peak {peak / 2**30:.1f} GiB; at most {limit})")
            return candidate, note
    return batch, note
