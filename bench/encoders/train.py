"""``bench train-encoder``: train the encoder a method needs for any generator, with the published recipe.

One entry point over the families' training loops (``bench.encoders.basecode``, ``.idinvert``, ``.psp``,
the same code that trained the embedded world's encoders), run on the generator the user gives:

- ``fwplus8`` / ``fwplus16``: BDInvert's ``train_basecode_encoder.py`` (reference/methods.md §1.3):
  synthetic samples only (truncation 0.7 on rows 0..7), ``MSE + 10 * perceptual``, Adam 1e-3 with
  StepLR(2000, 0.1), batch 16, 10,000 iterations, ``encoder_simple`` widths 128..512 with a head as wide
  as the base code. No ``--data``.
- ``idinvert``: IDinvert's encoder training (§4.2) on real images (``--data``): ``MSE + perceptual +
  0.08 * adversarial`` with a discriminator trained alongside (logistic loss, R1 gamma 10, lazy every 16
  steps), Adam 1e-4 (0.9, 0.99) decayed by 0.8 every quarter, batch 128, 14,000 kimg; widths 64..1024.
- ``psp``: pSp's FFHQ-encode recipe (§5.2) on real images (``--data``, random horizontal flips):
  ``MSE + 0.8 * perceptual`` (no identity loss), Ranger lr 1e-4, batch 8, 500,000 steps; an IR-SE
  backbone of 3/4/14/3 units at 64..512 channels trained from scratch, at the generator's side up to 256.

Stated deviations: the perceptual distance is LPIPS where its backbone weights are present (``--perceptual``,
``--lpips-weights``), else none (the file's recipe says which); IDinvert's D starts from scratch (the
published one starts from the GAN's D) and the encoder's final FC is factorised (``methods.idinvert``);
``--data`` images are read once (``--n`` of them, at the generator's resolution) and batches are drawn
from them with a seed per step. ``--width`` scales every architecture down (for tests and small
generators) and ``--iterations`` / ``--batch`` override the recipe; the file records what was run.

Training checkpoints go to ``--work`` (default ``OUT.work``); the same command resumes there. The output is
the project's encoder format with ``recipe``, ``generator_sha256`` (``bench.encoders.provenance``),
``steps`` and ``iterations_per_s`` in its metadata.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from bench.encoders.provenance import generator_hash

METHODS = ("fwplus4", "fwplus8", "fwplus16", "idinvert", "psp")
NEEDS_DATA = ("idinvert", "psp")
# each recipe's published batch size
DEFAULT_BATCH = {"fwplus4": 16, "fwplus8": 16, "fwplus16": 16, "idinvert": 128, "psp": 8}
# published length of each recipe, in iterations (IDinvert: 14,000 kimg at batch 128)
DEFAULT_ITERATIONS = {"fwplus4": 10_000, "fwplus8": 10_000, "fwplus16": 10_000, "idinvert": 14_000_000 // 128,
                      "psp": 500_000}


@dataclass(frozen=True)
class TrainEncoderOptions:
    """Options of ``bench train-encoder`` (each maps 1:1 to a CLI option); None means the recipe's value."""

    method: str
    generator: str
    out: str
    data: str | None = None
    work: str | None = None
    iterations: int | None = None
    batch: int | None = None
    minutes: float | None = None
    width: int | None = None
    head_width: int | None = None
    n: int = 1000
    perceptual: str = "auto"
    lpips_weights: str | None = None
    device: str = "auto"
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError on options that cannot work (naming the option)."""
        if self.method not in METHODS:
            raise ValueError(f"train-encoder: unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.method in NEEDS_DATA and not self.data:
            raise ValueError(f"train-encoder {self.method}: the published recipe trains on real images; pass --data "
                             "(e.g. folder:PATH, celebahq:PATH or synthetic:N for generator samples)")
        if self.method not in NEEDS_DATA and self.data:
            raise ValueError(f"train-encoder {self.method}: BDInvert's recipe uses generator samples only; "
                             "--data is not used")
        if self.head_width is not None and not self.method.startswith("fwplus"):
            raise ValueError(f"train-encoder {self.method}: --head-width applies to the F/W+ encoders only")
        for name in ("iterations", "batch", "width", "head_width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")


def image_stream(spec: str, generator, n: int, batch: int, seed: int,
                 log: Callable[[str], None]) -> Callable[[int], Iterator[tuple[torch.Tensor, None]]]:
    """``stream(step)``: endless (images, None) batches drawn from ``n`` images of a data spec, one seed a step."""
    from bench.data import open_source

    source = open_source(spec, resolution=generator.resolution, n=n, seed=seed, generator=generator, on_error=log)
    images = torch.stack([item.image for item in source]) if len(source) else None
    if images is None:
        raise ValueError(f"--data {spec}: no readable images")
    log(f"training images: {len(images)} from {spec} ({source.description})")

    def stream(step: int) -> Iterator[tuple[torch.Tensor, None]]:
        while True:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            yield images[torch.randint(len(images), (batch,), generator=gen)], None
            step += 1

    return stream


class Progress:
    """A tqdm bar over training steps with the loss, iterations/s and ETA; also measures the rate."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="it", disable=not enabled, dynamic_ncols=True)
        self.first: int | None = None
        self.start = self.end = time.perf_counter()
        self.last = 0

    def __call__(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        if self.first is None:  # the first step of this call warms up: the rate counts the steps after it
            self.first, self.start = step, now
            self.bar.n = step - 1
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.last, self.end = step, now

    def rate(self) -> float:
        """Iterations per second over this call's steps after the first (0 if fewer than two ran)."""
        if self.first is None or self.last == self.first:
            return 0.0
        return (self.last - self.first) / max(self.end - self.start, 1e-9)

    def close(self) -> None:
        self.bar.close()


def _basecode(g, perceptual, o: TrainEncoderOptions, work: Path, progress: Progress, log) -> tuple:
    from bench.encoders.basecode import save_encoder, train_basecode_encoder

    base = int(o.method[len("fwplus"):])
    w = o.width or 128
    settings = {"iterations": o.iterations, "batch": o.batch or DEFAULT_BATCH[o.method], "lr": 1e-3,
                "lr_schedule": "StepLR(2000, 0.1)",
                "perceptual_weight": 10.0 if perceptual is not None else 0.0, "width": w, "max_width": 4 * w,
                "head_width": o.head_width or g.feature_shape(base)[0], "truncation": "psi 0.7 on rows 0..7"}
    enc = train_basecode_encoder(g, perceptual, base, work, o.minutes or float("inf"),
                                 iterations=settings["iterations"], batch=settings["batch"],
                                 perceptual_weight=settings["perceptual_weight"], width=w, max_width=4 * w,
                                 head_width=settings["head_width"], log=log, progress=progress)
    return enc, settings, lambda e, path, extra: save_encoder(e, path, base, extra)


def _idinvert(g, perceptual, o: TrainEncoderOptions, work: Path, progress: Progress, log) -> tuple:
    from bench.encoders.idinvert import TrainSettings, save_encoder, train_idinvert_encoder

    w = o.width or 64
    s = TrainSettings(iterations=o.iterations, batch=o.batch or DEFAULT_BATCH["idinvert"], r1_gamma=10.0, workers=0,
                      width=w, max_width=16 * w, code_channels=max(w, 4), d_max_width=min(8 * w, 512),
                      perceptual_weight=TrainSettings.perceptual_weight if perceptual is not None else 0.0)
    stream = image_stream(o.data, g, o.n, s.batch, o.seed, log)
    enc = train_idinvert_encoder(g, perceptual, work, o.minutes or float("inf"), s, log=log, batches=stream,
                                 progress=progress)
    return enc, asdict(s), lambda e, path, extra: save_encoder(e, path, extra)


def _psp(g, perceptual, o: TrainEncoderOptions, work: Path, progress: Progress, log) -> tuple:
    from bench.encoders.psp import TrainOptions, save_encoder, train_psp_encoder
    from methods.psp import PSPConfig

    w = o.width or 64
    opts = TrainOptions(batch=o.batch or DEFAULT_BATCH["psp"], lr=1e-4,
                        perceptual_weight=0.8 if perceptual is not None else 0.0, flip=True,
                        max_steps=o.iterations, workers=0, seed=o.seed)
    arch = PSPConfig(g.num_ws, g.w_dim, input_size=max(32, min(256, g.resolution)), stem_width=w,
                     stage_widths=(w, 2 * w, 4 * w, 8 * w), stage_units=(3, 4, 14, 3))
    stream = image_stream(o.data, g, o.n, opts.batch, o.seed, log)
    enc = train_psp_encoder(g, perceptual, work, o.minutes or float("inf"), opts, arch, log=log, batches=stream,
                            progress=progress)
    return enc, {**asdict(opts), "arch": asdict(arch)}, lambda e, path, extra: save_encoder(e, path, extra)


RECIPES = {"fwplus4": ("bdinvert-basecode-encoder", _basecode),
           "fwplus8": ("bdinvert-basecode-encoder", _basecode), "fwplus16": ("bdinvert-basecode-encoder", _basecode),
           "idinvert": ("idinvert-domain-guided-encoder", _idinvert), "psp": ("psp-ffhq-encode", _psp)}


def _work_dir(o: TrainEncoderOptions, digest: str) -> Path:
    """The checkpoint folder, tied to the generator: resuming another generator's training is refused."""
    work = Path(o.work) if o.work else Path(o.out + ".work")
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "generator_sha256"
    if stamp.is_file() and stamp.read_text().strip() != digest:
        raise ValueError(f"--work {work}: holds a training run for another generator ({stamp.read_text()[:12]}); "
                         "give another --work folder")
    stamp.write_text(digest + "\n")
    return work


def train_encoder(options: TrainEncoderOptions, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train (or resume) the encoder for ``options.method`` on ``options.generator`` and write ``options.out``.

    Returns:
        A summary: ``out``, ``steps``, ``iterations_per_s``, ``minutes``, ``recipe``, ``generator_sha256``.
    """
    from bench.encoders.psp_release import load_generator_file
    from bench.perceptual import resolve_perceptual
    from bench.prepare import resolve_device

    options.check()
    options = replace(options, iterations=options.iterations or DEFAULT_ITERATIONS[options.method])
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    g = load_generator_file(options.generator).to(device).eval().requires_grad_(False)
    digest = generator_hash(g)
    work = _work_dir(options, digest)
    perceptual, perceptual_text = resolve_perceptual(options.perceptual, device, options.lpips_weights,
                                                     world_domain=options.generator in ("world256", "world64"))
    log(f"generator: {g.description} (weights {digest[:12]}); perceptual: {perceptual_text}")
    name, fn = RECIPES[options.method]
    t0 = time.time()
    bar = Progress(options.iterations, options.method, enabled=progress)
    try:
        enc, settings, save = fn(g, perceptual, options, work, bar, log)
    except torch.cuda.OutOfMemoryError as err:  # the published batches are for 256 px generators
        batch = options.batch or DEFAULT_BATCH[options.method]
        raise ValueError(f"train-encoder {options.method}: out of GPU memory at batch {batch} with the "
                         f"{g.resolution} px generator {options.generator}; pass a smaller --batch "
                         f"(e.g. --batch {max(1, batch // 4)}); checkpoints already written stay in {work}") from err
    finally:
        bar.close()
    steps = int(getattr(enc, "trained_steps", 0) or 0)
    rate = round(bar.rate(), 3)
    recipe = {"name": name, "method": options.method, "settings": settings, "perceptual": perceptual_text,
              "data": options.data}
    extra = {"recipe": recipe, "generator_sha256": digest, "generator": g.description, "steps": steps,
             "iterations_per_s": rate, "device": str(device),
             "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    save(enc, Path(options.out), extra)
    return {"out": options.out, "steps": steps, "iterations_per_s": rate, "minutes": round((time.time() - t0) / 60, 2),
            "recipe": name, "generator_sha256": digest, "work": str(work)}

