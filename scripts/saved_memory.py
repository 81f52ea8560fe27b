"""Bytes autograd keeps for the backward pass of one inversion step, per image (issue #17: memory per image).

Builds a random-weight StyleGAN2 of the given size (rosinality config-f channels), renders a batch from
``ws`` that require grad (the Im2S / W case) or from an F/W+ base code, and counts the unique storages that
autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``), so that no GPU is needed:

    python scripts/saved_memory.py --resolution 1024 --batch 1 --precision bf16 [--device cuda]

Prints one JSON line: saved MiB per image in all, split by dtype and by the largest shapes. On a GPU the
peak also holds the weights, the gradients of the activations while they flow back, and cuDNN's
workspace; this counts what the activations cost, which is what grows with the batch.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch

from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator, rosinality_channels


def measure(resolution: int, batch: int, precision: str, device: str, base: int | None = None) -> dict:
    """One forward and backward step; the unique storages autograd saved, in MiB per image."""
    torch.manual_seed(0)
    config = GeneratorConfig(resolution=resolution, channels=rosinality_channels(resolution, 2))
    gen = StyleGAN2Generator(config).to(device).eval().requires_grad_(False)
    gen.channels_last = device == "cuda"
    ws = gen.mapping(torch.randn(batch, config.z_dim, device=device))[:, None].repeat(1, gen.num_ws, 1)
    ws.requires_grad_(True)
    target = torch.zeros(batch, 3, resolution, resolution, device=device)
    storages: dict[int, tuple[int, torch.dtype, tuple]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages.setdefault(s.data_ptr(), (s.nbytes(), t.dtype, tuple(t.shape)))
        return t

    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        if base is None:
            img = gen.synthesis(ws)
        else:
            f = gen.features(ws.detach(), base).detach().requires_grad_(True)
            img = gen.synthesis_from(f, ws, base)
        loss = (img.float() - target).square().mean()
    loss.backward()
    seconds = time.perf_counter() - start
    by_dtype: dict[str, float] = collections.defaultdict(float)
    by_shape: dict[str, float] = collections.defaultdict(float)
    for nbytes, dtype, shape in storages.values():
        by_dtype[str(dtype).replace("torch.", "")] += nbytes / 2**20 / batch
        by_shape[f"{str(dtype).replace('torch.', '')}{list(shape[1:])}"] += nbytes / 2**20 / batch
    top = dict(sorted(by_shape.items(), key=lambda kv: -kv[1])[:12])
    return {"resolution": resolution, "batch": batch, "precision": precision, "device": device,
            "base": base, "saved_mib_per_image": round(sum(by_dtype.values()), 1),
            "by_dtype": {k: round(v, 1) for k, v in by_dtype.items()},
            "largest": {k: round(v, 1) for k, v in top.items()}, "seconds": round(seconds, 2),
            "torch": torch.__version__}


def main() -> None:
    """Measure once and print the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--base", type=int, default=None, help="F/W+ base size (e.g. 16); default: ws only")
    a = ap.parse_args()
    print(json.dumps(measure(a.resolution, a.batch, a.precision, a.device, a.base)))


if __name__ == "__main__":
    main()
