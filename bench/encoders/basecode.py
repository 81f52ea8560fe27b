"""F/W+ base-code encoders: training, saving and loading.

``train_basecode_encoder`` follows BDInvert's ``train_basecode_encoder.py`` (reference/methods.md §1.3):
synthetic samples only (z -> w, truncation 0.7 on ws rows 0..7), the encoder sees the image resized to
8s x 8s, and the loss compares ``synthesis_from(E(x), ws, s)`` with x: MSE + 10 * perceptual; Adam lr 1e-3
with StepLR(2000, 0.1); BatchNorm in train mode. Time-boxed and resumable from its checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from bench.encoders.files import load_strict, read_state, require_meta, save_state
from methods.fwplus import BaseCodeEncoder, encoder_input
from methods.optim import reconstruction_loss

FORMAT = "bench-basecode-encoder"


def truncated_samples(generator, batch: int, rng: torch.Generator, psi: float = 0.7,
                      trunc_layers: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(ws, images) of generator samples truncated on ws rows < ``trunc_layers`` (BDInvert's encoder data).

    z is drawn on the CPU from ``rng`` and moved, so the samples do not depend on the device.
    """
    dev = generator.w_avg.device
    w = generator.mapping(torch.randn(batch, generator.z_dim, generator=rng).to(dev))
    ws = w[:, None].repeat(1, generator.num_ws, 1)
    rows = min(trunc_layers, generator.num_ws)
    ws[:, :rows] = generator.w_avg + psi * (ws[:, :rows] - generator.w_avg)
    return ws, generator.synthesis(ws).clamp(-1, 1)


def train_basecode_encoder(generator, perceptual, base_res: int, work: Path, minutes: float, *,
                           iterations: int = 10_000, batch: int = 16, lr: float = 1e-3,
                           perceptual_weight: float = 10.0, width: int = 32, max_width: int = 128,
                           head_width: int | None = None, log=print, progress=None) -> BaseCodeEncoder:
    """Train (or resume from ``work/encoder{s}.pt``) the F/W+ base-code encoder for ``base_res``.

    ``head_width`` is the width of the last hidden conv (None: the last stage's, as the world's encoders;
    BDInvert's ``encoder_simple``: the base code's channels). ``progress(step, loss)`` is called after
    every step (e.g. a progress bar).
    """
    dev = generator.w_avg.device
    channels = generator.feature_shape(base_res)[0]
    enc = BaseCodeEncoder(channels, width, max_width, head_width=head_width).to(dev)
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2000, gamma=0.1)
    ckpt, step = work / f"encoder{base_res}.pt", 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        enc.load_state_dict(state["encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = int(state["step"])
    enc.train()
    rng = torch.Generator().manual_seed(1 + step)  # BDInvert seeds 1; a resumed run continues with new draws
    start = time.time()
    while step < iterations and time.time() - start < minutes * 60:
        with torch.no_grad():
            ws, x = truncated_samples(generator, batch, rng)
        rec = generator.synthesis_from(enc(encoder_input(x, base_res)), ws, base_res)
        loss = reconstruction_loss(rec, x, perceptual, 1.0, perceptual_weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if progress is not None:
            progress(step, loss.item())
        if step % 500 == 0:
            log(json.dumps({"encoder": base_res, "step": step, "loss": round(loss.item(), 5),
                            "minutes": round((time.time() - start) / 60, 2)}))
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder": enc.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step}, ckpt)
    enc.trained_steps = step
    return enc.eval()


def save_encoder(enc: BaseCodeEncoder, path: Path, base_res: int, extra: dict | None = None) -> None:
    """Save a base-code encoder as float16 safetensors with its architecture in the metadata."""
    conv = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    widths = [c.out_channels for c in conv[:-2]]
    save_state(enc, path, {"format": FORMAT, "base_res": base_res, "out_channels": conv[-1].out_channels,
                           "width": conv[0].out_channels, "max_width": max(widths),
                           "head_width": conv[-1].in_channels, **(extra or {})})


def load_encoder(path: Path, device: torch.device | str = "cpu") -> BaseCodeEncoder:
    """Load a base-code encoder written by :func:`save_encoder` (strict keys and shapes)."""
    meta, state = read_state(path, FORMAT, "base-code encoder")
    require_meta(meta, ("base_res", "out_channels", "width", "max_width"), path)
    enc = BaseCodeEncoder(meta["out_channels"], meta["width"], meta["max_width"],
                          head_width=meta.get("head_width"))  # older files: the last stage's width
    enc.base_res = int(meta["base_res"])
    return load_strict(enc, state, path, device)
