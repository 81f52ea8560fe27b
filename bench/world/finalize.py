"""Finish a world training run: measure it, fit edit directions, and export the shippable assets.

``python -m bench.world.finalize --work DIR --out OUTDIR`` reads ``DIR/attributes.pt`` and ``DIR/gan.pt``
(from ``bench.world.training``) and writes to OUTDIR: ``generator.safetensors`` (EMA generator, float16),
``attributes.safetensors`` (float16), ``directions.safetensors``, ``world_eval.json`` (attribute accuracy,
direction fit and effects, KID table, training length, device) and ``world_samples.png``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from bench.generators.checkpoints import save_safetensors
from bench.generators.stylegan2 import StyleGAN2Generator
from bench.world import WORLD_CONFIG, evaluation, procfaces
from bench.world.networks import AttributeNet
from bench.world.training import N_OUTPUTS, GanState, heldout_faces


def attribute_accuracy(net: AttributeNet, images: torch.Tensor, tgt: torch.Tensor) -> dict:
    """Held-out quality per labelled attribute: accuracy (binary) or MAE and Pearson r (continuous)."""
    pred = evaluation.attribute_scores(net, images).cpu()
    out = {}
    for a, name in enumerate(procfaces.ATTRIBUTES):
        y, p = tgt[:, a], pred[:, a]
        if name in procfaces.BINARY:
            out[name] = {"accuracy": round(float(((p > 0.5) == (y > 0.5)).float().mean()), 4)}
        else:
            r = torch.corrcoef(torch.stack([y, p]))[0, 1]
            out[name] = {"mae": round(float((p - y).abs().mean()), 4), "pearson_r": round(float(r), 4)}
    return out


def kid_table(net: AttributeNet, g_ema: StyleGAN2Generator, device: torch.device, n: int = 5000) -> dict:
    """KID (x1000) of generator samples, an untrained generator and a second renderer set vs renderer faces."""
    real = heldout_faces(2 * n)[0].to(device)
    feats = {"renderer": evaluation.pooled_features(net, real[:n]),
             "renderer (disjoint set)": evaluation.pooled_features(net, real[n:]),
             "trained generator": evaluation.pooled_features(net, evaluation.sample_images(g_ema, n, seed=7))}
    torch.manual_seed(0)
    untrained = StyleGAN2Generator(WORLD_CONFIG, noise_seed=0).to(device).eval()
    untrained.compute_w_avg(2000)
    feats["untrained generator"] = evaluation.pooled_features(net, evaluation.sample_images(untrained, n, seed=7))
    table = {}
    for name in ("renderer (disjoint set)", "trained generator", "untrained generator"):
        mean, std = evaluation.kid(feats[name], feats["renderer"])
        table[f"{name} vs renderer"] = {"kid_x1000": round(mean * 1000, 4), "std_x1000": round(std * 1000, 4)}
    return table


def save_half(module_state: dict, path: Path, meta: dict) -> None:
    """Save a state dict as float16 safetensors with string metadata."""
    save_file({k: v.detach().half().cpu().contiguous() for k, v in module_state.items()}, str(path),
              metadata={k: json.dumps(v) for k, v in meta.items()})


def load_attribute_net(work: Path, device: torch.device) -> tuple[AttributeNet, int]:
    """The attribute net from ``work/attributes.pt`` (training checkpoint) or ``attributes.safetensors``."""
    net = AttributeNet(N_OUTPUTS).to(device)
    if (work / "attributes.pt").is_file():
        state = torch.load(work / "attributes.pt", map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        steps = int(state["step"])
    else:
        from safetensors import safe_open

        with safe_open(str(work / "attributes.safetensors"), framework="pt") as fh:
            net.load_state_dict({k: fh.get_tensor(k).float().to(device) for k in fh.keys()})
            steps = int(json.loads(fh.metadata().get("steps", "-1")))
    return net.eval().requires_grad_(False), steps


def finalize(work: Path, out: Path, device: torch.device, scale: float = 1.0) -> dict:
    """Evaluate the trained world in ``work`` and export its assets to ``out``; returns the eval record.

    ``scale`` < 1 shrinks every sample count (for a CPU smoke test); the shipped record uses 1.
    """
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    net, attr_steps = load_attribute_net(work, device)
    gan = GanState(device)
    gan.load(work / "gan.pt", device)
    g = gan.g_ema.eval().requires_grad_(False)
    g.load_state_dict({k: v.half().float() for k, v in g.state_dict().items()})  # evaluate what ships
    g.compute_w_avg(10_000, seed=0)
    images, tgt = heldout_faces(int(5000 * scale))
    record = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "generator_kimg": gan.images_seen // 1000, "attribute_net_steps": attr_steps,
              "attributes_heldout": attribute_accuracy(net, images.to(device), tgt)}
    z = torch.randn(int(20_000 * scale), g.z_dim, generator=torch.Generator().manual_seed(99)).to(device)
    with torch.no_grad():
        w = g.mapping(z)
    scores = evaluation.attribute_scores(net, evaluation._render(g, w))
    dirs = evaluation.fit_directions(w, scores)
    record["directions"] = {"fit": dirs["quality"], "sigma": dirs["sigma"],
                            "effects_k_sigma": evaluation.direction_effects(g, net, dirs, n=int(1000 * scale))}
    record["kid"] = kid_table(net, g, device, n=int(5000 * scale))
    evaluation.save_grid_png(evaluation.sample_images(g, 32, seed=1), heldout_faces(32)[0],
                             out / "world_samples.png")
    save_safetensors(g, out / "generator.safetensors", extra={"kimg": record["generator_kimg"]}, dtype=torch.float16)
    save_half(net.state_dict(), out / "attributes.safetensors",
              {"outputs": N_OUTPUTS, "attributes": list(procfaces.ATTRIBUTES), "steps": attr_steps})
    save_file({"vectors": dirs["vectors"].contiguous()}, str(out / "directions.safetensors"),
              metadata={"names": json.dumps(list(procfaces.ATTRIBUTES)), "layers": json.dumps(None),
                        "sigma": json.dumps(dirs["sigma"]), "fit": json.dumps(dirs["quality"])})
    record["finalize_seconds"] = round(time.time() - t0, 1)
    evaluation.write_json(out / "world_eval.json", record)
    return record


def main() -> None:
    """CLI entry: ``--work DIR --out OUTDIR``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink sample counts (smoke tests)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rec = finalize(args.work, args.out, device, args.scale)
    print(json.dumps({k: rec[k] for k in ("generator_kimg", "attributes_heldout", "kid")}, indent=1))


if __name__ == "__main__":
    main()
