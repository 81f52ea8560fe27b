"""The 256 px world: the 64 px world generator with two trained detail blocks on top, for faithful proportions.

BDInvert's base codes are 1/64 (16x16) and 1/128 (8x8) of a 1024 px image's side and hold about 4 % and
1 % as many numbers as the image has pixel values. In the 64 px world a 16x16 base code is 1/4 of the side
and holds 5.3x as many numbers as the image: it stores any image, so its robustness says nothing about the
generator. At 256 px a 4x4 base code is 1/64 of the side, and with the world's 256 channels it holds 2.1 %
as many numbers as the image (coarser than the paper's 4 %): the paper's 16x16 proportion.

The generator is the shipped 64 px world StyleGAN2 (frozen, bit for bit) with StyleGAN2 blocks at 128 px
(32 channels) and 256 px (16 channels) whose skip-RGB outputs add detail to the upsampled 64 px image. Only
those blocks are trained (a GAN on 256 px procedural faces, plus an L1 term that keeps the 4x4 average of
the output equal to the 64 px image), and only they are shipped (``generator256_sr``, about 0.2 MB); the
asset records the SHA-256 of the base generator it extends. The architecture is the same
``StyleGAN2Generator`` that loads real checkpoints, so every method runs on it unchanged.

Usage (GPU machine): ``python -m bench.world.world256 train --out DIR --minutes M``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator
from bench.world import WORLD_CONFIG, procfaces, zoo

NAME = "world256"
ASSET = "generator256_sr"
RESOLUTION = 256
CONFIG = GeneratorConfig(resolution=RESOLUTION, w_dim=WORLD_CONFIG.w_dim, n_mlp=WORLD_CONFIG.n_mlp,
                         channels={**dict(WORLD_CONFIG.channels), 128: 32, 256: 16}, lr_mlp=WORLD_CONFIG.lr_mlp,
                         z_dim=WORLD_CONFIG.z_dim)
SR_SEED_BASE = 2**28  # training faces for the detail blocks: seeds [2**28, 2**29), inside the training range


def detail_keys(state: dict[str, torch.Tensor], base: StyleGAN2Generator) -> list[str]:
    """Keys of the 256 px generator's state that the 64 px base lacks: the detail blocks' weights.

    Their constant noise maps are left out: they are drawn again from the noise seed.
    """
    have = set(base.state_dict())
    return [k for k in state if k not in have and not k.startswith("noises.")]


def compose(base: StyleGAN2Generator, detail: dict[str, torch.Tensor] | None = None,
            noise_seed: int = 0) -> StyleGAN2Generator:
    """The 256 px generator: ``base``'s weights (and w_avg) plus ``detail`` for the new blocks.

    Without ``detail`` the new blocks keep their initialisation (random convolutions, zero biases): used
    to start training.
    """
    if base.config.resolution != WORLD_CONFIG.resolution or base.config.w_dim != CONFIG.w_dim:
        raise ValueError(f"world256: the base must be the {WORLD_CONFIG.resolution} px world generator, "
                         f"got {base.config}")
    gen = StyleGAN2Generator(CONFIG, noise_seed=noise_seed)
    state = gen.state_dict()
    state.update({k: v.to(state[k].dtype) for k, v in base.state_dict().items()})
    if detail is not None:
        missing = sorted(set(detail_keys(state, base)) - set(detail))
        if missing:
            raise ValueError(f"world256: detail weights lack {missing[:4]}")
        state.update({k: v.float() for k, v in detail.items()})
    else:  # the new RGB outputs start at zero: training begins from the upsampled 64 px image
        for k in detail_keys(state, base):
            if k.startswith("to_rgbs.") and k.endswith("conv.weight"):
                state[k] = torch.zeros_like(state[k])
    gen.load_state_dict(state, strict=True)
    return gen


def load() -> StyleGAN2Generator:
    """The shipped 256 px world generator (the 64 px world generator plus its detail blocks).

    Raises:
        ValueError: if the detail asset is not shipped, or was trained on another base generator.
    """
    from safetensors import safe_open

    from bench.world.defaults import default_generator

    path, base_path = zoo.asset_path(ASSET), zoo.asset_path("generator")
    if path is None or base_path is None:
        raise ValueError(f"--generator {NAME}: the 256 px world's detail blocks ({ASSET}) are not installed "
                         "(bench zoo ls); train them with python -m bench.world.world256 train")
    with safe_open(str(path), framework="pt") as fh:
        meta, detail = fh.metadata() or {}, {k: fh.get_tensor(k) for k in fh.keys()}
    if meta.get("base_sha256") != zoo.sha256(base_path):
        raise ValueError(f"{path}: trained on the base generator {meta.get('base_sha256', '?')[:12]}, but the "
                         f"shipped one is {zoo.sha256(base_path)[:12]}; retrain the detail blocks")
    gen = compose(default_generator(), detail)
    gen.description = (f"embedded world StyleGAN2 256px ({path.name}: the 64 px world generator + detail blocks at "
                       f"128/256 px, trained on procfaces at 256 px)")
    gen.source_format = "embedded world"
    gen.checkpoint_info = {"format": "embedded world 256", "w_avg": "of the 64 px world",
                           **json.loads(meta.get("extra", "{}"))}
    return gen.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------
# Encoders of the 64 px world, lifted to this one

# Methods whose 64 px world encoder serves this world: its first rows are the 64 px generator's, on the same
# W space, so the encoder's code is the code of the 64 px image, and the detail layers' rows repeat its last
# (finest) row. The encoder sees the 256 px target downsampled to its 64 px input: 4x, as pSp feeds a 1024 px
# generator's encoder a 256 px image. (IDinvert's published encoder sees its 256 px generator's full image;
# stated where it runs.)
LIFTED_ENCODERS = ("psp", "idinvert")


def lift_encoder(encoder: torch.nn.Module, num_ws: int) -> torch.nn.Module:
    """A copy of a 64 px world pSp or IDinvert encoder whose code has ``num_ws`` rows.

    The added rows repeat the encoder's last row exactly: for pSp through ``PSPConfig.repeat_last``, for
    IDinvert by repeating the last row's block of the final linear layer and its batch norm. The first
    rows are the original code, bit for bit. ``source`` says what was done.

    Raises:
        ValueError: for another kind of encoder, or one with more rows than ``num_ws``.
    """
    from dataclasses import replace

    from methods.idinvert import DomainGuidedEncoder
    from methods.psp import PSPEncoder

    if not isinstance(encoder, (PSPEncoder, DomainGuidedEncoder)):
        raise ValueError(f"world256: no lift for a {type(encoder).__name__}; only {', '.join(LIFTED_ENCODERS)}")
    rows = encoder.config.num_ws if isinstance(encoder, PSPEncoder) else encoder.num_ws
    if rows > num_ws:
        raise ValueError(f"world256: cannot lift {type(encoder).__name__} ({rows} rows) to {num_ws} rows")
    extra = num_ws - rows
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    if isinstance(encoder, PSPEncoder):
        lifted = PSPEncoder(replace(encoder.config, num_ws=num_ws, repeat_last=encoder.config.repeat_last + extra))
        state["latent_avg"] = torch.cat([state["latent_avg"], state["latent_avg"][-1:].expand(extra, -1)])
    else:
        lifted = DomainGuidedEncoder(**{**encoder.config(), "num_ws": num_ws})
        w = encoder.w_dim
        for key in ("fc.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            t = state[key]
            state[key] = torch.cat([t, t[-w:].repeat(extra, *([1] * (t.ndim - 1)))])
    lifted.load_state_dict(state, strict=True)
    lifted = lifted.to(next(encoder.parameters()).device).eval().requires_grad_(False)
    for attr in ("family", "metadata", "trained_steps"):
        if hasattr(encoder, attr):
            setattr(lifted, attr, getattr(encoder, attr))
    lifted.source = (f"{getattr(encoder, 'source', type(encoder).__name__)}, the 64 px world's encoder lifted to "
                     f"{num_ws} rows (rows {rows}-{num_ws - 1}, the detail blocks', repeat row {rows - 1}; input "
                     f"downsampled to {_input_side(encoder)} px)")
    return lifted


def _input_side(encoder: torch.nn.Module) -> int:
    cfg = getattr(encoder, "config", None)
    return int(getattr(cfg, "input_size", 0) or getattr(encoder, "resolution", 0))


# ----------------------------------------------------------------------------------------------------------
# Training (GPU machine)


def _faces(batch: int, seed: int) -> torch.Tensor:
    return procfaces.render(procfaces.sample_params(batch, seed), RESOLUTION, supersample=1)


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, batch: int, seed_base: int) -> None:
        self.batch, self.seed_base = batch, seed_base

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k, step = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:  # one thread per worker: 14 workers x 16 threads starved the session 6 run (3.3 it/s)
            torch.set_num_threads(1)
        while True:
            yield _faces(self.batch, self.seed_base + k * 7919)
            k += step


def train(out: Path, minutes: float, device: torch.device, batch: int = 32, workers: int = 14,
          consistency: float = 10.0, gamma: float = 0.5, r1_every: int = 16,
          lr: float = 0.0025) -> StyleGAN2Generator:
    """Train the detail blocks for ``minutes`` (base frozen); writes ``out/generator256_sr.safetensors``."""
    from bench.world.defaults import default_generator
    from bench.world.networks import Discriminator
    from bench.world.training import _mixed_ws

    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    base = default_generator().to(device).requires_grad_(False)
    g = compose(base.cpu()).to(device)
    base = base.to(device)
    trainable = set(detail_keys(g.state_dict(), base))
    for name, p in g.named_parameters():
        p.requires_grad_(name in trainable)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    d = Discriminator(RESOLUTION, {256: 32, 128: 64, 64: 128, 32: 256, 16: 256, 8: 256, 4: 256}).to(device)
    params = [p for p in g.parameters() if p.requires_grad]
    c = r1_every / (r1_every + 1)
    opt_g = torch.optim.Adam(params, lr=lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr * c, betas=(0.0, 0.99**c))
    ema_beta = 0.5 ** (batch / 10_000)
    loader = torch.utils.data.DataLoader(_Stream(batch, SR_SEED_BASE), batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None, persistent_workers=bool(workers))
    start, step, log = time.time(), 0, []
    for real in loader:
        if time.time() - start > minutes * 60:
            break
        real = real.to(device, non_blocking=True)
        ws = _mixed_ws(g, batch, device)
        with torch.no_grad():
            fake = g.synthesis(ws)
        loss_d = F.softplus(d(fake)).mean() + F.softplus(-d(real)).mean()
        if step % r1_every == 0:
            real.requires_grad_(True)
            (grad,) = torch.autograd.grad(d(real).sum(), real, create_graph=True)
            loss_d = loss_d + gamma / 2 * grad.square().sum((1, 2, 3)).mean() * r1_every
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        ws = _mixed_ws(g, batch, device)
        fake = g.synthesis(ws)
        with torch.no_grad():
            low = base.synthesis(ws[:, : base.num_ws])
        keep = (F.avg_pool2d(fake, RESOLUTION // base.resolution) - low).abs().mean()
        loss_g = F.softplus(-d(fake)).mean() + consistency * keep
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            for pe, p in zip(g_ema.parameters(), g.parameters(), strict=True):
                if p.requires_grad:
                    pe.lerp_(p, 1 - ema_beta)
        step += 1
        if step % 200 == 0:
            log.append({"step": step, "kimg": step * batch / 1000, "loss_d": round(loss_d.item(), 4),
                        "loss_g": round(loss_g.item(), 4), "l1_64": round(keep.item(), 5),
                        "minutes": round((time.time() - start) / 60, 2)})
            print(json.dumps(log[-1]), flush=True)
    save(g_ema.cpu(), base.cpu(), out, {"steps": step, "kimg": round(step * batch / 1000, 1), "batch": batch,
                                        "minutes": minutes, "consistency": consistency, "gamma": gamma})
    return g_ema


def save(gen: StyleGAN2Generator, base: StyleGAN2Generator, out: Path, extra: dict) -> Path:
    """Write the detail blocks of ``gen`` (float16) with the base generator's SHA-256."""
    from safetensors.torch import save_file

    state = gen.state_dict()
    detail = {k: state[k].detach().half().contiguous() for k in detail_keys(state, base)}
    base_path = zoo.asset_path("generator")
    meta = {"format": "bench-world256-detail", "base_sha256": zoo.sha256(base_path) if base_path else "",
            "config": json.dumps(CONFIG.to_dict()), "extra": json.dumps(extra)}
    path = out / f"{ASSET}.safetensors"
    save_file(detail, str(path), metadata=meta)
    return path


def main() -> None:
    """``python -m bench.world.world256 train --out DIR --minutes M``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["train"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    train(a.out, a.minutes, torch.device(a.device), a.batch, a.workers)


if __name__ == "__main__":
    main()
