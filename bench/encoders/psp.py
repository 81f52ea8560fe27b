"""pSp encoders: training on the world's faces, saving and loading (reference/methods.md §5.2, scaled).

Objective per batch (pSp's FFHQ-encode recipe): ``l2 * MSE(G(E(x)), x) + 0.8 * d(G(E(x)), x) + w_norm *
mean_b ||E(x)_b - latent_avg||_F`` with ``w_norm`` 0 by default, the generator frozen, everything at the
generator's resolution in [-1, 1]. Stated deviations:

- d is the world perceptual distance (``bench.world.perceptual``, LPIPS-style over the attribute net),
  standing in for LPIPS-AlexNet, which cannot be loaded offline.
- No identity loss (pSp's ``id_lambda`` 0.1): there is no face-recognition network for this domain.
- Optimiser: a minimal Ranger written here (RAdam + Lookahead k 6, alpha 0.5, gradient centralisation,
  betas (0.95, 0.999), eps 6.1e-5, as pSp's ``training/ranger.py``), constant lr. Default lr 1e-3, the
  value the pSp paper states; pSp's code defaults to 1e-4, for a backbone that starts from ArcFace weights.
  Ours starts from scratch under a short time box. A resumed call uses the ``lr`` it is given, so a last
  phase at ``--lr 1e-4`` continues the same checkpoint.
- Batch 32 (pSp: 8), because the 64 px world is small and the time box short.
- Data: procfaces renders from training seeds (batch seeds from ``PSP_SEED_BASE``, below 2**30, so no
  benchmark face is seen); optionally a fraction of each batch replaced by generator samples
  (``gen_fraction``, 0 by default as in pSp). No horizontal flips by default (pSp flips FFHQ with p 0.5,
  whose generator was trained on mirrored images too; the renderer draws hair strands and the fringe's
  wave in one orientation only and the world generator never saw them mirrored); ``--flip`` turns them on.

Training is time-boxed, resumable from ``WORK/psp.pt`` and logs JSON lines to ``WORK/log.jsonl``.
Usage: ``python -m bench.encoders.psp --work DIR --out DIR --minutes M`` (only torch + safetensors needed
to import; the perceptual distance is imported when training starts).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.encoders.files import load_strict, read_state, require_meta, save_state
from methods.optim import mse_per_image
from methods.psp import PSPConfig, PSPEncoder, encoder_input

FORMAT = "bench-psp-encoder"
PSP_SEED_BASE = 2**28  # batch seeds of the pSp training faces (procfaces training range is [0, 2**30))
CHECKPOINT = "psp.pt"
OUT_FILE = "psp_encoder.safetensors"


class Ranger:
    """RAdam + Lookahead + gradient centralisation (pSp's optimiser), as a thin wrapper over torch's RAdam.

    Gradient centralisation subtracts, for every parameter with 2 or more dimensions, the mean of its
    gradient over all but the first dimension; every ``k`` steps the slow weights move ``alpha`` of the way
    to the fast ones and the fast weights are reset to them.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.95, 0.999),
                 eps: float = 6.1e-5, k: int = 6, alpha: float = 0.5, centralise: bool = True) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.radam = torch.optim.RAdam(self.params, lr=lr, betas=betas, eps=eps)
        self.slow = [p.detach().clone() for p in self.params]
        self.k, self.alpha, self.centralise, self.steps = k, alpha, centralise, 0

    def zero_grad(self) -> None:
        self.radam.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self) -> None:
        """One RAdam step, then the Lookahead synchronisation every ``k`` steps."""
        if self.centralise:
            for p in self.params:
                if p.grad is not None and p.grad.ndim > 1:
                    p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.ndim)), keepdim=True))
        self.radam.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for p, slow in zip(self.params, self.slow, strict=True):
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)

    def state_dict(self) -> dict:
        return {"radam": self.radam.state_dict(), "slow": list(self.slow), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.radam.load_state_dict(state["radam"])
        with torch.no_grad():
            for slow, saved in zip(self.slow, state["slow"], strict=True):
                slow.copy_(saved)
        self.steps = int(state["steps"])


@dataclass(frozen=True)
class TrainOptions:
    """pSp training options (defaults: pSp's FFHQ encode recipe where it applies; see the module docstring)."""

    batch: int = 32
    lr: float = 1e-3
    l2_weight: float = 1.0
    perceptual_weight: float = 0.8
    w_norm_weight: float = 0.0
    gen_fraction: float = 0.0
    flip: bool = False
    max_steps: int = 500_000
    workers: int = 8
    log_every: int = 250
    eval_every: int = 2500
    eval_n: int = 64
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError on options that cannot work."""
        if self.batch < 1 or self.lr <= 0 or not 0 <= self.gen_fraction <= 1 or self.max_steps < 0:
            raise ValueError(f"pSp training options out of range: {self}")
        last_seed = PSP_SEED_BASE + (self.max_steps + 1) * max(self.workers, 1)
        if last_seed >= 2**30:
            raise ValueError(f"max_steps {self.max_steps} x workers {self.workers} would reach held-out face seeds")


def _log(work: Path, record: dict, echo: Callable[[str], None] = print) -> None:
    with (work / "log.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    echo(json.dumps(record))


def _batch(real: torch.Tensor, generator, opts: TrainOptions, step: int, device: torch.device) -> torch.Tensor:
    """Training images (B, 3, R, R) in [-1, 1]: flipped faces, optionally some replaced by generator samples."""
    rng = torch.Generator().manual_seed(opts.seed * 1_000_003 + step)
    x = real.to(device, non_blocking=True)
    if x.shape[-1] != generator.resolution:  # the face stream renders at 64 px
        x = encoder_input(x, generator.resolution).clamp(-1, 1)
    if opts.flip:
        flip = (torch.rand(len(x), generator=rng) < 0.5).to(device)[:, None, None, None]
        x = torch.where(flip, x.flip(-1), x)
    n_gen = round(opts.gen_fraction * len(x))
    if n_gen:
        with torch.no_grad():
            w = generator.mapping(torch.randn(n_gen, generator.z_dim, generator=rng).to(device))
            fake = generator.synthesis(w[:, None].expand(-1, generator.num_ws, -1)).clamp(-1, 1)
        x = torch.cat([fake, x[n_gen:]])
    return x


def psp_losses(enc: PSPEncoder, generator, perceptual, x: torch.Tensor, opts: TrainOptions) -> dict[str, torch.Tensor]:
    """Loss terms of pSp (batch means) and their weighted ``total`` for images x (B, 3, R, R) in [-1, 1]."""
    codes = enc(encoder_input(x, enc.config.input_size))
    rec = generator.synthesis(codes)
    terms = {"l2": mse_per_image(rec, x).mean()}
    total = opts.l2_weight * terms["l2"]
    if opts.perceptual_weight:
        terms["perceptual"] = perceptual(rec, x).mean()
        total = total + opts.perceptual_weight * terms["perceptual"]
    if opts.w_norm_weight:
        terms["w_norm"] = (codes - enc.latent_avg).flatten(1).norm(dim=1).mean()
        total = total + opts.w_norm_weight * terms["w_norm"]
    return {"total": total, **terms}


@torch.no_grad()
def heldout_quality(enc: PSPEncoder, generator, perceptual, images: torch.Tensor, chunk: int = 128) -> dict:
    """Mean PSNR (dB, [0, 1] images) and perceptual distance of pSp vs the mean latent on images in [-1, 1]."""
    was_training = enc.training
    enc.eval()
    sums = {"psnr_psp": 0.0, "psnr_mean_latent": 0.0, "perceptual_psp": 0.0, "perceptual_mean_latent": 0.0}
    mean_ws = generator.w_avg.expand(1, generator.num_ws, -1)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(generator.w_avg.device)
        recs = {"psp": generator.synthesis(enc(encoder_input(x, enc.config.input_size))).clamp(-1, 1),
                "mean_latent": generator.synthesis(mean_ws.expand(len(x), -1, -1)).clamp(-1, 1)}
        for name, rec in recs.items():
            sums[f"psnr_{name}"] += float((-10 * torch.log10(mse_per_image(rec, x) / 4)).sum())
            if perceptual is not None:
                sums[f"perceptual_{name}"] += float(perceptual(rec, x).sum())
    enc.train(was_training)
    out = {k: round(v / len(images), 4) for k, v in sums.items() if perceptual is not None or "psnr" in k}
    return {**out, "images": len(images)}


def _resume(work: Path, enc: PSPEncoder, opt: Ranger, device: torch.device) -> int:
    ckpt = work / CHECKPOINT
    if not ckpt.is_file():
        return 0
    state = torch.load(ckpt, map_location=device, weights_only=True)
    if state["arch"] != json.loads(json.dumps(asdict(enc.config))):
        raise ValueError(f"{ckpt}: checkpoint architecture {state['arch']} differs from {asdict(enc.config)}")
    enc.load_state_dict(state["encoder"])
    lr = opt.radam.param_groups[0]["lr"]
    opt.load_state_dict(state["opt"])
    for group in opt.radam.param_groups:  # this call's lr wins over the checkpoint's (lr phases)
        group["lr"] = lr
    return int(state["step"])


def _save(work: Path, enc: PSPEncoder, opt: Ranger, step: int) -> None:
    tmp = work / (CHECKPOINT + ".tmp")
    torch.save({"encoder": enc.state_dict(), "opt": opt.state_dict(), "step": step,
                "arch": json.loads(json.dumps(asdict(enc.config)))}, tmp)
    tmp.replace(work / CHECKPOINT)


def train_psp_encoder(generator, perceptual, work: Path, minutes: float, opts: TrainOptions | None = None,
                      arch: PSPConfig | None = None, log: Callable[[str], None] = print,
                      batches: Callable[[int], Iterable] | None = None,
                      progress: Callable[[int, float], None] | None = None) -> PSPEncoder:
    """Train (or resume from ``work/psp.pt``) a pSp encoder for a frozen generator, for ``minutes``.

    Args:
        generator: the frozen generator (``mapping``, ``synthesis``, ``w_avg``, ``num_ws``, ``w_dim``).
        perceptual: ``d(x, y) -> (N,)`` on [-1, 1] images, or None when ``opts.perceptual_weight`` is 0.
        work: folder for the checkpoint and ``log.jsonl``.
        minutes: wall-clock budget of this call.
        opts: training options.
        arch: encoder architecture (default: :class:`PSPConfig` sized for the generator).
        log: receives each JSON log line (also appended to ``work/log.jsonl``).
        batches: ``batches(step) -> iterable of (images, _)`` to train on instead of the world's faces
            (``bench train-encoder --data``); the periodic held-out evaluation on world faces is then skipped.
        progress: ``progress(step, loss)`` after every step.

    Returns:
        The encoder in eval mode, with ``trained_steps`` and ``train_minutes`` attributes.
    """
    from bench.world.training import face_loader

    opts = opts or TrainOptions()
    enc, opt, step = _setup(generator, perceptual, work, opts, arch)
    heldout = _heldout(opts.eval_n, generator.resolution) if batches is None else None
    device = generator.w_avg.device
    start = last_save = last_log = time.time()
    stream = face_loader(opts.batch, PSP_SEED_BASE + step * max(opts.workers, 1), opts.workers) \
        if batches is None else batches(step)
    for real, _ in stream:
        if step >= opts.max_steps or time.time() - start > minutes * 60:
            break
        terms = psp_losses(enc, generator, perceptual, _batch(real, generator, opts, step, device), opts)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        step += 1
        if progress is not None:
            progress(step, terms["total"].item())
        if step % opts.log_every == 0:
            rate = opts.log_every * opts.batch / (time.time() - last_log)
            last_log = time.time()
            _log(work, {"net": "psp", "step": step, **{k: round(v.item(), 5) for k, v in terms.items()},
                        "lr": opts.lr, "img_per_s": round(rate, 1), "minutes": round((last_log - start) / 60, 2)}, log)
        if heldout is not None and step % opts.eval_every == 0:
            quality = heldout_quality(enc, generator, perceptual, heldout)
            _log(work, {"net": "psp", "step": step, "heldout": quality}, log)
        if time.time() - last_save > 120:
            _save(work, enc, opt, step)
            last_save = time.time()
    _save(work, enc, opt, step)
    enc.trained_steps, enc.train_minutes = step, round((time.time() - start) / 60, 2)
    return enc.eval()


def _setup(generator, perceptual, work: Path, opts: TrainOptions,
           arch: PSPConfig | None) -> tuple[PSPEncoder, Ranger, int]:
    """Check the options, build the encoder and its optimiser, resume from ``work`` if it holds a checkpoint."""
    opts.check()
    if opts.perceptual_weight and perceptual is None:
        raise ValueError("pSp training: perceptual_weight > 0 needs a perceptual distance (pass --attributes)")
    work.mkdir(parents=True, exist_ok=True)
    generator.eval().requires_grad_(False)
    torch.manual_seed(opts.seed)
    device = generator.w_avg.device
    enc = PSPEncoder(arch or PSPConfig(generator.num_ws, generator.w_dim, generator.resolution)).to(device)
    enc.set_latent_avg(generator.w_avg)
    opt = Ranger(enc.parameters(), lr=opts.lr)
    step = _resume(work, enc, opt, device)
    return enc.train(), opt, step


def _heldout(n: int, resolution: int) -> torch.Tensor:
    """Return n held-out faces (seeds far from both the training and the benchmark faces), (n, 3, R, R) in [-1, 1]."""
    from bench.world.training import heldout_faces

    return heldout_faces(n, resolution)[0]


def save_encoder(enc: PSPEncoder, path: Path, extra: dict | None = None) -> None:
    """Save a pSp encoder as safetensors: weights in float16, ``latent_avg`` in float32, config in metadata."""
    save_state(enc, path, {"format": FORMAT, "config": asdict(enc.config), **(extra or {})},
               keep_float32=("latent_avg",))


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> PSPEncoder:
    """Load a pSp encoder written by :func:`save_encoder` (strict keys and shapes), frozen and in eval mode.

    Raises:
        ValueError: naming the file if it is missing, not a pSp encoder file, or does not match the
            architecture recorded in its metadata.
    """
    meta, state = read_state(path, FORMAT, "pSp encoder")
    require_meta(meta, ("config",), path)
    cfg = meta["config"]
    enc = PSPEncoder(PSPConfig(**{**cfg, "stage_widths": tuple(cfg["stage_widths"]),
                                  "stage_units": tuple(cfg["stage_units"])}))
    enc.trained_steps = int(meta.get("steps", 0))
    return load_strict(enc, state, path, device)


@torch.no_grad()
def inference_time(enc: PSPEncoder, generator, batch: int = 1, repeats: int = 50) -> dict:
    """Median milliseconds per image of ``E(x)`` and of ``G(E(x))`` at ``batch`` (device synchronised)."""
    device = generator.w_avg.device
    x = torch.zeros(batch, 3, enc.config.input_size, enc.config.input_size, device=device)
    out = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _device: None)
    for name, fn in (("encoder", lambda: enc(x)), ("encoder_and_synthesis", lambda: generator.synthesis(enc(x)))):
        times = []
        for _ in range(repeats + 5):  # the first 5 calls warm up
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
        out[f"ms_per_image_{name}"] = round(1000 * sorted(times[5:])[repeats // 2] / batch, 4)
    return {**out, "batch": batch}


def _load_world(args: argparse.Namespace, device: torch.device):
    """The generator and (if needed) the world perceptual distance named by the CLI (defaults: the zoo)."""
    from bench.generators.checkpoints import load_safetensors
    from bench.world import zoo

    gen_path = args.generator or zoo.asset_path("generator")
    if gen_path is None or not Path(gen_path).is_file():
        raise SystemExit(f"--generator: no generator file ({gen_path}); the world generator is not installed")
    generator = load_safetensors(gen_path).to(device).eval().requires_grad_(False)
    if not args.perceptual_weight:
        return generator, None
    attr_path = args.attributes or zoo.asset_path("attributes")
    if attr_path is None or not Path(attr_path).is_file():
        raise SystemExit(f"--attributes: no attribute net file ({attr_path}); needed for the perceptual loss")
    from bench.world.perceptual import WorldPerceptual, load_attribute_net_file  # imports bench.metrics

    return generator, WorldPerceptual(load_attribute_net_file(attr_path, device))


def _parse() -> argparse.Namespace:
    d = TrainOptions()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="checkpoint + log folder (resumed if present)")
    ap.add_argument("--out", type=Path, required=True, help=f"writes {OUT_FILE}, psp_eval.json, psp_log.jsonl")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this call")
    ap.add_argument("--generator", type=Path, default=None, help="generator safetensors (default: the world's)")
    ap.add_argument("--attributes", type=Path, default=None, help="attribute net for the perceptual loss")
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--l2-weight", type=float, default=d.l2_weight)
    ap.add_argument("--perceptual-weight", type=float, default=d.perceptual_weight)
    ap.add_argument("--w-norm-weight", type=float, default=d.w_norm_weight)
    ap.add_argument("--gen-fraction", type=float, default=d.gen_fraction, help="share of generator samples")
    ap.add_argument("--flip", action="store_true", help="random horizontal flips (p 0.5), as pSp on FFHQ")
    ap.add_argument("--max-steps", type=int, default=d.max_steps)
    ap.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers rendering faces")
    ap.add_argument("--log-every", type=int, default=d.log_every)
    ap.add_argument("--eval-every", type=int, default=d.eval_every)
    ap.add_argument("--eval-n", type=int, default=d.eval_n, help="held-out faces for the periodic evaluation")
    ap.add_argument("--final-eval-n", type=int, default=500, help="held-out faces for the final evaluation")
    ap.add_argument("--timing-repeats", type=int, default=50, help="timed calls per inference measurement")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    return ap.parse_args()


def main() -> None:
    """``python -m bench.encoders.psp --work DIR --out DIR --minutes M``: train, save, evaluate."""
    args = _parse()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    opts = TrainOptions(batch=args.batch, lr=args.lr, l2_weight=args.l2_weight,
                        perceptual_weight=args.perceptual_weight, w_norm_weight=args.w_norm_weight,
                        gen_fraction=args.gen_fraction, flip=args.flip, max_steps=args.max_steps, workers=args.workers,
                        log_every=args.log_every, eval_every=args.eval_every, eval_n=args.eval_n)
    generator, perceptual = _load_world(args, device)
    enc = train_psp_encoder(generator, perceptual, args.work, args.minutes, opts)
    args.out.mkdir(parents=True, exist_ok=True)
    save_encoder(enc, args.out / OUT_FILE, {"steps": enc.trained_steps, "options": asdict(opts)})
    record = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "steps": enc.trained_steps, "minutes_this_call": enc.train_minutes, "options": asdict(opts),
              "parameters": sum(p.numel() for p in enc.parameters()),
              "perceptual": getattr(perceptual, "name", None),
              "heldout": heldout_quality(enc, generator, perceptual, _heldout(args.final_eval_n, generator.resolution)),
              "inference": [inference_time(enc, generator, b, args.timing_repeats) for b in (1, 64)]}
    (args.out / "psp_eval.json").write_text(json.dumps(record, indent=2) + "\n")
    log_file = args.work / "log.jsonl"
    if log_file.is_file():
        (args.out / "psp_log.jsonl").write_text(log_file.read_text())
    print(json.dumps(record["heldout"]), flush=True)


if __name__ == "__main__":
    main()
