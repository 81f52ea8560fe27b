"""IDinvert's domain-guided encoder: training on rendered faces, saving and loading.

Training follows IDinvert's ``train_encoder.py`` (reference/methods.md §4.2), scaled to the embedded world:
the generator is frozen; the real images are procfaces renders from training seeds (``ENCODER_SEED_BASE``
onwards, inside the generator's training range and disjoint from the seeds it actually used); per step

    L_E = MSE(G(E(x)), x) + perceptual_weight * d(G(E(x)), x) + adv_weight * mean(softplus(-D(G(E(x)))))
    L_D = mean(softplus(D(G(E(x))))) + mean(softplus(-D(x))) + r1_gamma / 2 * mean(|grad_x D(x)|^2)

with Adam(lr 1e-4, betas (0.9, 0.99)) for both, the learning rate decayed by 0.8 every quarter of
``iterations`` (continuous, as published), BatchNorm in train mode. Scaled, stated: perceptual weight 0.05
on the world distance (the role of 5e-5 on VGG conv4_3; see ``methods.idinvert``); adversarial weight 0.08
as published; R1 gamma 10 -> 0.625 (scaled by resolution squared, 256 -> 64, the StyleGAN2-ADA heuristic),
applied lazily every 16 steps with weight x16 (StyleGAN2's lazy regularisation; published: every step);
batch 64 instead of 128; D (``bench.world.networks.Discriminator``, the world GAN's widths) starts from the
world GAN's D when ``--init-d`` gives it (as published: IDinvert loads the GAN's D), else from scratch; the D
step scores the reconstructions made before the encoder update (published: after it; this saves a
synthesis); no mirror augmentation (the renderer is not mirror-symmetric in hair styles and lighting, so a
mirrored face could leave the domain).

Time-boxed and resumable from ``WORK/idinvert.pt``; JSON lines to ``WORK/log.jsonl``. Usage::

    python -m bench.encoders.idinvert --work DIR --out DIR --minutes M

writes ``OUT/idinvert_encoder.safetensors`` (float16, format ``bench-idinvert-encoder``),
``OUT/idinvert_eval.json`` (held-out reconstruction next to the mean latent's) and ``OUT/idinvert_d.safetensors``
(float16 D, to continue on another machine with ``--init-encoder`` and ``--init-d``). Needs only torch and
safetensors at import; the world perceptual distance is imported when training starts.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from bench.encoders.files import load_strict, read_state, require_meta, save_state
from bench.world.networks import Discriminator
from bench.world.training import face_loader, heldout_faces
from methods.idinvert import PERCEPTUAL_WEIGHT, DomainGuidedEncoder, encode
from methods.optim import mse_per_image

FORMAT = "bench-idinvert-encoder"
ENCODER_SEED_BASE = 2**28  # one seed per batch: stays far below the held-out seeds (>= 2**30)
CHECKPOINT = "idinvert.pt"


@dataclass(frozen=True)
class TrainSettings:
    """Encoder training settings (see the module docstring for what is published and what is scaled)."""

    iterations: int = 40_000
    batch: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    lr_decay: float = 0.8
    perceptual_weight: float = PERCEPTUAL_WEIGHT
    adv_weight: float = 0.08
    r1_gamma: float = 0.625
    r1_every: int = 16
    workers: int = 8
    width: int = 16
    max_width: int = 128
    code_channels: int = 16
    d_max_width: int = 256
    log_every: int = 200
    save_every_s: float = 120.0


class EncoderTraining:
    """Encoder, discriminator, their optimisers and the step counter; saved to and resumed from a checkpoint."""

    def __init__(self, generator, s: TrainSettings, device: torch.device) -> None:
        self.enc = DomainGuidedEncoder(generator.num_ws, generator.w_dim, generator.resolution, s.width,
                                       s.max_width, s.code_channels).to(device)
        self.enc.set_w_avg(generator.w_avg.detach().float())
        r = generator.resolution
        widths = {2**k: min(4096 // 2**k, s.d_max_width) for k in range(2, r.bit_length())}
        self.d = Discriminator(r, widths).to(device)
        self.opt_e = torch.optim.Adam(self.enc.parameters(), lr=s.lr, betas=s.betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=s.lr, betas=s.betas)
        self.step = 0
        self.r1 = torch.full((), float("nan"), device=device)  # last R1 value (computed every r1_every steps)

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically (a killed run keeps the previous one)."""
        tmp = path.with_suffix(".tmp")
        torch.save({"enc": self.enc.state_dict(), "d": self.d.state_dict(), "opt_e": self.opt_e.state_dict(),
                    "opt_d": self.opt_d.state_dict(), "step": self.step}, tmp)
        os.replace(tmp, path)

    def load(self, path: Path, device: torch.device) -> None:
        """Resume from a checkpoint written by :meth:`save` (strict keys)."""
        state = torch.load(path, map_location=device, weights_only=True)
        for k in ("enc", "d", "opt_e", "opt_d"):
            getattr(self, k).load_state_dict(state[k])
        self.step = int(state["step"])

    def init_discriminator(self, path: Path) -> None:
        """Start D from the world GAN's D (``gan_d.safetensors`` from ``bench.world.training.export_weights``)."""
        try:
            with safe_open(str(path), framework="pt") as fh:
                state = {k: fh.get_tensor(k).float() for k in fh.keys()}
            self.d.load_state_dict(state, strict=True)
        except Exception as err:  # noqa: BLE001 - name the file whatever went wrong
            raise ValueError(f"{path}: not a discriminator of the world GAN's architecture ({err})") from err

    def init_encoder(self, path: Path) -> None:
        """Continue from an encoder file (:func:`save_encoder`) and its ``steps``; the optimisers restart."""
        enc = load_encoder(path)
        if enc.config() != self.enc.config():
            raise ValueError(f"{path}: encoder architecture {enc.config()} differs from {self.enc.config()}")
        self.enc.load_state_dict(enc.state_dict())
        self.step = int(enc.trained_steps or 0)

    def set_lr(self, s: TrainSettings) -> float:
        """Published schedule: ``lr * decay ** (step / (iterations / 4))``; returns the rate set."""
        lr = s.lr * s.lr_decay ** (self.step / max(s.iterations / 4, 1))
        for opt in (self.opt_e, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr


def _encoder_step(t: EncoderTraining, generator, perceptual, real: torch.Tensor, s: TrainSettings):
    """One encoder update; returns the reconstructions (detached) and the loss terms."""
    t.d.requires_grad_(False)  # D only scores here; its own step follows
    rec = generator.synthesis(encode(t.enc, real))
    mse = mse_per_image(rec, real).mean()
    perc = perceptual(rec, real).mean() if perceptual is not None and s.perceptual_weight else rec.new_zeros(())
    adv = F.softplus(-t.d(rec)).mean()
    loss = mse + s.perceptual_weight * perc + s.adv_weight * adv
    t.opt_e.zero_grad(set_to_none=True)
    loss.backward()
    t.opt_e.step()
    t.d.requires_grad_(True)
    return rec.detach(), {"loss_e": loss.detach(), "mse": mse.detach(), "perceptual": perc.detach(),
                          "adv": adv.detach()}


def _discriminator_step(t: EncoderTraining, fake: torch.Tensor, real: torch.Tensor, s: TrainSettings) -> dict:
    """One logistic discriminator update, plus lazy R1 on reals every ``r1_every`` steps (weighted by it)."""
    lazy = t.step % s.r1_every == 0
    real = real.detach().requires_grad_(lazy)
    real_logits = t.d(real)
    loss = F.softplus(t.d(fake)).mean() + F.softplus(-real_logits).mean()
    total = loss
    if lazy:
        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        r1 = grad.square().sum(dim=(1, 2, 3)).mean()
        total = loss + s.r1_gamma / 2 * r1 * s.r1_every
        t.r1 = r1.detach()
    t.opt_d.zero_grad(set_to_none=True)
    total.backward()
    t.opt_d.step()
    return {"loss_d": loss.detach(), "r1": t.r1}


def _log(work: Path, record: dict, log: Callable[[str], None]) -> None:
    line = json.dumps(record)
    with (work / "log.jsonl").open("a") as fh:
        fh.write(line + "\n")
    log(line)


def _record(t: EncoderTraining, logs: dict, lr: float, elapsed: float, first: int, s: TrainSettings) -> dict:
    values = {k: round(float(v), 5) if bool(torch.isfinite(v)) else None for k, v in logs.items()}  # JSON: no NaN
    return {"net": "idinvert_encoder", "step": t.step, **values,
            "lr": lr, "minutes": round(elapsed / 60, 2),
            "images_per_s": round((t.step - first) * s.batch / max(elapsed, 1e-9), 1)}


def train_idinvert_encoder(generator, perceptual, work: Path, minutes: float, settings: TrainSettings | None = None,
                           *, init_d: Path | None = None, init_encoder: Path | None = None,
                           log: Callable[[str], None] = print, batches: Callable[[int], object] | None = None,
                           progress: Callable[[int, float], None] | None = None) -> DomainGuidedEncoder:
    """Train (or resume from ``work/idinvert.pt``) the domain-guided encoder for ``generator``.

    Args:
        generator: the frozen generator (its device is used); reals are resized to its resolution.
        perceptual: differentiable distance ``d(x, y) -> (N,)`` on [-1, 1] images, or None (term dropped).
        work: folder for the checkpoint and ``log.jsonl``.
        minutes: wall-clock budget of this call; training stops earlier at ``settings.iterations``.
        settings: training settings.
        init_d: the world GAN's discriminator weights to start D from (when not resuming), as published
            (IDinvert starts D from the GAN's), or ``idinvert_d.safetensors`` of an earlier run; None: scratch.
        init_encoder: an encoder file of an earlier run to continue from (when not resuming a checkpoint):
            resumes on another machine from what came back (float16 weights; the optimisers restart).
        log: receives each JSON log line.
        batches: ``batches(step) -> iterable of (images, _)`` to train on instead of the world's faces
            (``bench train-encoder --data``); resuming at step k calls it with k.
        progress: ``progress(step, encoder_loss)`` after every step (e.g. a progress bar).

    Returns:
        The encoder in eval mode, with ``trained_steps`` and ``last_log`` (the last logged record) set.
    """
    s, dev = settings or TrainSettings(), generator.w_avg.device
    work.mkdir(parents=True, exist_ok=True)
    generator.eval().requires_grad_(False)
    t, ckpt = EncoderTraining(generator, s, dev), work / CHECKPOINT
    if ckpt.is_file():
        t.load(ckpt, dev)
    else:
        if init_d is not None:
            t.init_discriminator(init_d)
        if init_encoder is not None:
            t.init_encoder(init_encoder)
    t.enc.train()
    start = last_save = time.time()
    first, record = t.step, {}
    # one seed per batch: resuming at step k continues the same stream of faces
    stream = batches(t.step) if batches is not None else face_loader(s.batch, ENCODER_SEED_BASE + t.step, s.workers)
    for real, _ in stream:
        if t.step >= s.iterations or time.time() - start > minutes * 60:
            break
        real = real.to(dev, non_blocking=True)
        if real.shape[-1] != generator.resolution:
            real = F.interpolate(real, size=(generator.resolution,) * 2, mode="bilinear", antialias=True)
        lr = t.set_lr(s)
        rec, logs = _encoder_step(t, generator, perceptual, real, s)
        logs |= _discriminator_step(t, rec, real, s)
        t.step += 1
        if progress is not None:
            progress(t.step, float(logs["loss_e"]))
        if t.step % s.log_every == 0:
            record = _record(t, logs, lr, time.time() - start, first, s)
            _log(work, record, log)
        if time.time() - last_save > s.save_every_s:
            t.save(ckpt)
            last_save = time.time()
    if t.step > first and record.get("step") != t.step:  # the end values of this call, always logged
        record = _record(t, logs, lr, time.time() - start, first, s)
        _log(work, record, log)
    t.save(ckpt)
    t.enc.trained_steps, t.enc.last_log = t.step, record
    return t.enc.eval()


@torch.no_grad()
def heldout_quality(generator, enc: DomainGuidedEncoder, perceptual=None, n: int = 256, batch: int = 64) -> dict:
    """PSNR (dB, [0, 1] images) and perceptual distance of ``G(E(x))`` vs ``G(w_avg)`` on n held-out faces."""
    enc.eval()
    x_all, _ = heldout_faces(n, generator.resolution)
    sums = {"psnr_encoder": 0.0, "psnr_mean_latent": 0.0, "perceptual_encoder": 0.0, "perceptual_mean_latent": 0.0}
    for i in range(0, n, batch):
        x = x_all[i : i + batch].to(generator.w_avg.device)
        rec = generator.synthesis(encode(enc, x)).clamp(-1, 1)
        mean = generator.synthesis(generator.w_avg.expand(len(x), generator.num_ws, -1)).clamp(-1, 1)
        for name, y in (("encoder", rec), ("mean_latent", mean)):
            sums[f"psnr_{name}"] += float((10 * torch.log10(4 / mse_per_image(y, x))).sum())
            if perceptual is not None:
                sums[f"perceptual_{name}"] += float(perceptual(y, x).sum())
    out = {k: round(v / n, 4) for k, v in sums.items() if perceptual is not None or "perceptual" not in k}
    return {**out, "images": n, "seeds": "bench.world.training.heldout_faces"}


def save_encoder(enc: DomainGuidedEncoder, path: Path, extra: dict | None = None) -> None:
    """Save the encoder as float16 safetensors with its architecture (and ``extra``) in the metadata."""
    save_state(enc, path, {"format": FORMAT, **enc.config(), **(extra or {})})


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> DomainGuidedEncoder:
    """Load an encoder written by :func:`save_encoder`: strict keys and shapes, float32, frozen, eval mode."""
    meta, state = read_state(path, FORMAT, "IDinvert encoder")
    keys = ("num_ws", "w_dim", "resolution", "width", "max_width", "code_channels")
    require_meta(meta, keys, path)
    enc = DomainGuidedEncoder(*(int(meta[k]) for k in keys))
    enc.trained_steps = meta.get("steps")
    return load_strict(enc, state, path, device)


def _world_perceptual(path: Path, device: torch.device):
    from bench.world.perceptual import WorldPerceptual, load_attribute_net_file  # imports bench.metrics

    return WorldPerceptual(load_attribute_net_file(path, device))


def _asset(option: Path | None, name: str, flag: str) -> Path:
    from bench.world import zoo

    path = option if option is not None else zoo.asset_path(name)
    if path is None or not Path(path).is_file():
        raise SystemExit(f"{flag}: {path or 'the shipped ' + name} is not a file (bench zoo ls)")
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.encoders.idinvert --work DIR --out DIR --minutes M``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="checkpoint and log folder (resumed if present)")
    ap.add_argument("--out", type=Path, required=True, help="where the encoder file and its evaluation go")
    ap.add_argument("--minutes", type=float, required=True, help="training time budget of this call")
    ap.add_argument("--generator", type=Path, default=None, help="generator safetensors (default: shipped)")
    ap.add_argument("--attributes", type=Path, default=None, help="attribute net for the perceptual loss")
    ap.add_argument("--init-d", type=Path, default=None, help="D weights to start from: the world GAN's "
                    "gan_d.safetensors, or idinvert_d.safetensors of an earlier run")
    ap.add_argument("--init-encoder", type=Path, default=None, help="idinvert_encoder.safetensors to continue")
    defaults = TrainSettings()
    for name in ("iterations", "batch", "workers", "r1_every"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("lr", "perceptual_weight", "adv_weight", "r1_gamma"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    args = ap.parse_args(argv)
    from bench.generators.checkpoints import load_safetensors

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    g = load_safetensors(_asset(args.generator, "generator", "--generator")).to(dev)
    perceptual = _world_perceptual(_asset(args.attributes, "attributes", "--attributes"), dev)
    names = ("iterations", "batch", "workers", "r1_every", "lr", "perceptual_weight", "adv_weight", "r1_gamma")
    s = TrainSettings(**{k: getattr(args, k) for k in names})
    t0 = time.time()
    enc = train_idinvert_encoder(g, perceptual, args.work, args.minutes, s, init_d=args.init_d,
                                 init_encoder=args.init_encoder)
    args.out.mkdir(parents=True, exist_ok=True)
    save_encoder(enc, args.out / "idinvert_encoder.safetensors", {"steps": enc.trained_steps, "batch": s.batch})
    d_state = torch.load(args.work / CHECKPOINT, map_location="cpu", weights_only=True)["d"]
    save_file({k: v.half().contiguous() for k, v in d_state.items()}, str(args.out / "idinvert_d.safetensors"),
              metadata={"steps": str(enc.trained_steps)})
    record = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "steps": enc.trained_steps, "minutes_this_call": round((time.time() - t0) / 60, 2),
              "settings": asdict(s), "init_d": str(args.init_d or ""), "init_encoder": str(args.init_encoder or ""),
              "last_log": enc.last_log,
              "heldout": heldout_quality(g, enc, perceptual)}
    (args.out / "idinvert_eval.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["heldout"]), flush=True)


if __name__ == "__main__":
    main()
