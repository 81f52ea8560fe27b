"""Train what the methods need on the world generator: P-norm+ statistics and F/W+ base-code encoders.

``python -m bench.world.train_methods --generator FILE --attributes FILE --work DIR --out OUTDIR
--minutes M`` writes ``pnorm_stats.safetensors``, ``encoder8.safetensors``, ``encoder16.safetensors`` and
``methods_eval.json`` (encoder quality on fresh generator samples: PSNR of ``synthesis_from(E(G(w)), ws)``
next to the mean latent's PSNR; training steps and minutes; device) to OUTDIR.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from bench.encoders.basecode import save_encoder, train_basecode_encoder, truncated_samples
from bench.generators.checkpoints import load_safetensors
from bench.world.perceptual import WorldPerceptual
from methods.fwplus import encoder_input
from methods.pnorm import compute_pnorm_stats


def save_pnorm_stats(stats, path: Path) -> None:
    """P-norm+ statistics as safetensors (float32)."""
    save_file({"mean": stats.mean.cpu(), "eigvecs": stats.eigvecs.cpu().contiguous(), "eigvals": stats.eigvals.cpu()},
              str(path), metadata={"samples": str(stats.samples), "format": "bench-pnorm-stats"})


@torch.no_grad()
def encoder_quality(generator, enc, base_res: int, n: int = 500) -> dict:
    """PSNR (dB, [0,1] images) of encoder reconstructions vs the mean latent on fresh truncated samples."""
    ws, x = truncated_samples(generator, n, torch.Generator().manual_seed(12345))
    rec = generator.synthesis_from(enc(encoder_input(x, base_res)), ws, base_res).clamp(-1, 1)
    mean = generator.synthesis(generator.w_avg.expand(n, generator.num_ws, -1)).clamp(-1, 1)

    def psnr(a):
        return float((10 * torch.log10(1 / ((a - x) / 2).square().flatten(1).mean(1))).mean())

    return {"psnr_encoder": round(psnr(rec), 3), "psnr_mean_latent": round(psnr(mean), 3), "samples": n}


def main() -> None:
    """CLI entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", type=Path, required=True)
    ap.add_argument("--attributes", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=2.0, help="per encoder")
    ap.add_argument("--pnorm-samples", type=int, default=1_000_000)
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    g = load_safetensors(args.generator).to(dev)
    from bench.world.perceptual import load_attribute_net_file

    perceptual = WorldPerceptual(load_attribute_net_file(args.attributes, dev))
    record = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    t = time.time()
    stats = compute_pnorm_stats(g, args.pnorm_samples)
    save_pnorm_stats(stats, args.out / "pnorm_stats.safetensors")
    record["pnorm"] = {"samples": stats.samples, "seconds": round(time.time() - t, 1),
                       "eigval_min": float(stats.eigvals.min()), "eigval_max": float(stats.eigvals.max())}
    for s in (8, 16):
        t = time.time()
        enc = train_basecode_encoder(g, perceptual, s, args.work, args.minutes)
        save_encoder(enc, args.out / f"encoder{s}.safetensors", s, {"steps": enc.trained_steps})
        record[f"encoder{s}"] = {"steps": enc.trained_steps, "batch": 16, "minutes": round((time.time() - t) / 60, 2),
                                 **encoder_quality(g, enc, s)}
        print(json.dumps(record[f"encoder{s}"]), flush=True)
    (args.out / "methods_eval.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
