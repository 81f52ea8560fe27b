"""Training commands of the embedded world (run on the GPU machine; resumable; time-boxed).

- ``train_attributes``: the attribute net on renderer faces (labels + nuisance parameters as auxiliary
  targets, all binary cross-entropy on [0, 1] targets).
- ``train_generator``: the world StyleGAN2 on renderer faces: non-saturating logistic loss, lazy R1 on
  reals (every 16 steps), style mixing (p=0.9), generator EMA (half-life 10k images), Adam(0, 0.99). Not
  used, and stated: path-length regularisation and random noise inputs (the benchmark holds noise constant,
  so the generator is trained with its constant noise maps).

Faces come from the renderer with training seeds (< 2**30) in DataLoader workers, so the GPU never waits.
Usage: ``python -m bench.world.training attributes|generator --out DIR --minutes M`` (only torch needed).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from bench.generators.stylegan2 import StyleGAN2Generator
from bench.world import WORLD_CONFIG, procfaces
from bench.world.networks import AttributeNet, Discriminator

GEN_SEED_BASE = 0  # generator training faces: seeds [0, 2**29)
ATTR_SEED_BASE = 2**29  # attribute-net training faces: seeds [2**29, 2**30)
EVAL_SEED_BASE = procfaces.HELDOUT_SEED_OFFSET + 10**8  # held-out, far from the benchmark's procfaces:N seeds
AUX_NAMES = ("hair_style_0", "hair_style_1", "hair_style_2", "hair_warmth", "eye_r", "eye_g", "eye_b",
             "shirt_r", "shirt_g", "shirt_b", "bg_saturation", "bg_brightness", "light_x", "light_y")
N_OUTPUTS = len(procfaces.ATTRIBUTES) + len(AUX_NAMES)


def targets(params: procfaces.FaceParams) -> torch.Tensor:
    """(N, N_OUTPUTS) targets in [0, 1]: the labelled attributes, then the nuisance parameters."""
    style = F.one_hot(params.hair_style, 3).float()
    aux = torch.cat([style, params.hair_warmth[:, None], params.eye_color, params.shirt_color,
                     params.background_tone, params.light], dim=1)
    return torch.cat([procfaces.labels(params), aux.float()], dim=1)


class FaceStream(IterableDataset):
    """Endless batches of (images, targets) rendered from consecutive seeds, split over workers."""

    def __init__(self, batch: int, seed_base: int, resolution: int = 64) -> None:
        self.batch, self.seed_base, self.resolution = batch, seed_base, resolution

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        k = wid
        while True:
            params = procfaces.sample_params(self.batch, self.seed_base + k)
            yield procfaces.render(params, self.resolution), targets(params)
            k += nw


def face_loader(batch: int, seed_base: int, workers: int) -> DataLoader:
    """DataLoader over :class:`FaceStream` (each item is already a batch)."""
    return DataLoader(FaceStream(batch, seed_base), batch_size=None, num_workers=workers,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                      pin_memory=torch.cuda.is_available())


def heldout_faces(n: int, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Return n held-out faces and their targets (seed ``EVAL_SEED_BASE``)."""
    params = procfaces.sample_params(n, EVAL_SEED_BASE)
    return procfaces.render(params, resolution), targets(params)


def _log(out: Path, record: dict) -> None:
    with (out / "log.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def train_attributes(out: Path, minutes: float, device: torch.device, batch: int = 256, workers: int = 8,
                     lr: float = 1e-3) -> AttributeNet:
    """Train the attribute net for ``minutes`` (resuming ``out/attributes.pt``); returns it in eval mode."""
    out.mkdir(parents=True, exist_ok=True)
    net = AttributeNet(N_OUTPUTS).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ckpt, step = out / "attributes.pt", 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
    start = time.time()
    for images, tgt in face_loader(batch, ATTR_SEED_BASE + step * max(workers, 1), workers):
        if time.time() - start > minutes * 60:
            break
        images, tgt = images.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
        loss = F.binary_cross_entropy_with_logits(net(images), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            _log(out, {"net": "attributes", "step": step, "loss": round(loss.item(), 5),
                       "minutes": round((time.time() - start) / 60, 2)})
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
    return net.eval()


def _mixed_ws(g: StyleGAN2Generator, n: int, device: torch.device, p_mix: float = 0.9) -> torch.Tensor:
    z = torch.randn(2, n, g.z_dim, device=device)
    w = g.mapping(z.flatten(0, 1)).view(2, n, -1)
    ws = w[0][:, None].repeat(1, g.num_ws, 1)
    cut = torch.where(torch.rand(n, device=device) < p_mix,
                      torch.randint(1, g.num_ws, (n,), device=device), torch.full((n,), g.num_ws, device=device))
    later = torch.arange(g.num_ws, device=device)[None, :] >= cut[:, None]
    return torch.where(later[:, :, None], w[1][:, None], ws)


class GanState:
    """Generator, EMA generator, discriminator and their optimisers, with save/load."""

    def __init__(self, device: torch.device, lr: float = 0.0025, r1_every: int = 16) -> None:
        torch.manual_seed(0)
        self.g = StyleGAN2Generator(WORLD_CONFIG, noise_seed=0).to(device)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.d = Discriminator(64, {64: 64, 32: 128, 16: 256, 8: 256, 4: 256}).to(device)
        c = r1_every / (r1_every + 1)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr * c, betas=(0.0, 0.99**c))
        self.images_seen = 0

    def save(self, path: Path) -> None:
        torch.save({k: getattr(self, k).state_dict() for k in ("g", "g_ema", "d", "opt_g", "opt_d")}
                   | {"images_seen": self.images_seen}, path)

    def load(self, path: Path, device: torch.device) -> None:
        state = torch.load(path, map_location=device, weights_only=True)
        for k in ("g", "g_ema", "d", "opt_g", "opt_d"):
            getattr(self, k).load_state_dict(state[k])
        self.images_seen = int(state["images_seen"])


def _d_step(s: GanState, real: torch.Tensor, step: int, gamma: float, r1_every: int) -> dict:
    with torch.no_grad():
        fake = s.g.synthesis(_mixed_ws(s.g, real.shape[0], real.device))
    loss = F.softplus(s.d(fake)).mean() + F.softplus(-s.d(real)).mean()
    logs = {"loss_d": loss.detach()}
    if step % r1_every == 0:
        real = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(s.d(real).sum(), real, create_graph=True)
        r1 = grad.square().sum(dim=(1, 2, 3)).mean()
        loss = loss + gamma / 2 * r1 * r1_every
        logs["r1"] = r1.detach()
    s.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    s.opt_d.step()
    return logs


def _g_step(s: GanState, n: int, device: torch.device, ema_beta: float) -> dict:
    fake = s.g.synthesis(_mixed_ws(s.g, n, device))
    loss = F.softplus(-s.d(fake)).mean()
    s.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    s.opt_g.step()
    with torch.no_grad():
        for pe, p in zip(s.g_ema.parameters(), s.g.parameters(), strict=True):
            pe.lerp_(p, 1 - ema_beta)
    return {"loss_g": loss.detach()}


def train_generator(out: Path, minutes: float, device: torch.device, batch: int = 64, workers: int = 12,
                    gamma: float = 0.05, r1_every: int = 16, init: Path | None = None,
                    profile: bool = False) -> StyleGAN2Generator:
    """Train (or resume) the world StyleGAN2 for ``minutes``; returns the EMA generator.

    Resumes from ``out/gan.pt`` if present, else from the float16 weights in ``init`` (written by
    :func:`export_weights`; the optimisers restart), else from scratch.
    """
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    s, ckpt = GanState(device, r1_every=r1_every), out / "gan.pt"
    if ckpt.is_file():
        s.load(ckpt, device)
    elif init is not None and (init / "gan_g.safetensors").is_file():
        import_weights(s, init, device)
    ema_beta = 0.5 ** (batch / 10_000)
    start, last_save, step = time.time(), time.time(), s.images_seen // batch
    first_step = step
    for real, _ in face_loader(batch, GEN_SEED_BASE + s.images_seen, workers):
        if time.time() - start > minutes * 60:
            break
        real = real.to(device, non_blocking=True)
        if profile and step == first_step + 5:
            _profile(s, real, step, gamma, r1_every, batch, ema_beta)
        logs = _d_step(s, real, step, gamma, r1_every) | _g_step(s, batch, device, ema_beta)
        s.images_seen += batch
        step += 1
        if step % 500 == 0:
            _log(out, {"net": "generator", "kimg": s.images_seen // 1000,
                       **{k: round(float(v), 4) for k, v in logs.items()},
                       "minutes": round((time.time() - start) / 60, 2)})
        if time.time() - last_save > 120:
            s.save(ckpt)
            last_save = time.time()
    s.save(ckpt)
    s.g_ema.compute_w_avg(10_000, seed=0)
    return s.g_ema


def _profile(s: GanState, real: torch.Tensor, step: int, gamma: float, r1_every: int, batch: int,
             ema_beta: float) -> None:
    """Print where ten training iterations spend their time (CUDA and CPU), once."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if real.is_cuda else [])
    t0 = time.time()
    with profile(activities=acts) as prof:
        for k in range(10):
            _d_step(s, real, step + k * (r1_every if k == 0 else 1), gamma, r1_every)
            _g_step(s, batch, real.device, ema_beta)
        if real.is_cuda:
            torch.cuda.synchronize()
    print(f"profile: 10 iterations in {time.time() - t0:.3f}s")
    key = "self_cuda_time_total" if real.is_cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))


HALF_KEYS = ("g", "g_ema", "d")


def export_weights(s: GanState, out: Path) -> None:
    """Save g, g_ema and d as float16 safetensors (each under 16 MB) so training can resume elsewhere."""
    from safetensors.torch import save_file

    for k in HALF_KEYS:
        sd = {n: v.detach().half().cpu().contiguous() for n, v in getattr(s, k).state_dict().items()}
        save_file(sd, str(out / f"gan_{k}.safetensors"), metadata={"images_seen": str(s.images_seen)})


def import_weights(s: GanState, folder: Path, device: torch.device) -> None:
    """Load weights written by :func:`export_weights` (optimiser states start afresh)."""
    from safetensors import safe_open

    for k in HALF_KEYS:
        path = folder / f"gan_{k}.safetensors"
        if k == "g_ema" and not path.is_file():
            path = folder / "generator.safetensors"  # the exported EMA generator has the same keys
        with safe_open(str(path), framework="pt") as fh:
            getattr(s, k).load_state_dict({n: fh.get_tensor(n).float().to(device) for n in fh.keys()})
            if "images_seen" in (fh.metadata() or {}):
                s.images_seen = int(fh.metadata()["images_seen"])


def main() -> None:
    """``python -m bench.world.training attributes|generator --out DIR --minutes M``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["attributes", "generator"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--init", type=Path, default=None, help="folder with gan_*.safetensors to resume from")
    ap.add_argument("--export", type=Path, default=None, help="also write gan_*.safetensors here")
    ap.add_argument("--profile", action="store_true", help="print a profile of 10 iterations")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.what == "attributes":
        train_attributes(args.out, args.minutes, device, batch=args.batch or 256, workers=args.workers)
    else:
        train_generator(args.out, args.minutes, device, batch=args.batch or 64, workers=args.workers,
                        init=args.init, profile=args.profile)
        if args.export is not None:
            s = GanState(device)
            s.load(args.out / "gan.pt", device)
            export_weights(s, args.export)


if __name__ == "__main__":
    main()
