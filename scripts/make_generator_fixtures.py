r"""Build random-weight generator files WITH THE OFFICIAL CODE and record the official code's outputs.

Needs the official repositories (never part of this project) exported as plain folders under OFFICIAL:

    OFFICIAL/NVlabs+stylegan2-ada-pytorch   (NVlabs/stylegan2-ada-pytorch d72cc7d)
    OFFICIAL/kkang831+BDInvert_Release      (kkang831/BDInvert_Release 8bbd373: genforce models with the F/W+ split)
    OFFICIAL/genforce+idinvert_pytorch      (genforce/idinvert_pytorch ce866b0)

For each configuration it writes the checkpoint in the format its authors ship (``.pkl`` snapshot, genforce
``.pth``) and ``NAME.expected.safetensors`` with the official outputs for fixed codes and the constant noise:
``z``, ``w`` (mapping), ``img_z`` (z -> image), ``ws`` and ``img_ws`` (W+ -> image), ``w_trunc`` and
``img_trunc`` (psi 0.7 on all layers), and for the F/W+ split at ``split_res``: ``f`` (the base code) and
``img_split`` (``synthesis_from(f + delta, ws)``). The tests (tests/generators/test_real_formats.py) load the
checkpoints with the project's loaders and compare, without the official code.

    python scripts/make_generator_fixtures.py --official /work/scratch/official --set fixtures \\
        --out tests/generators/fixtures
    python scripts/make_generator_fixtures.py --official /work/scratch/official --set heldout \\
        --out /work/scratch/heldout && python scripts/make_generator_fixtures.py --compare /work/scratch/heldout

The official modules are imported from OFFICIAL with sys.path (acceptable in a script, never in the package);
``requests`` (imported by NVIDIA's dnnlib for downloads) is stubbed. CUDA ops fall back to their reference
implementations on the CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pickle
import sys
import types
from pathlib import Path

import torch

SEED = 0
N = 2  # images per check (n= in a configuration overrides it)


# ------------------------------------------------------------------------------------------------- helpers
def _save_expected(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(path),
              metadata={k: json.dumps(v) for k, v in meta.items()})


def _randomise(module: torch.nn.Module, names: tuple[str, ...], std: float, seed: int) -> None:
    """Non-trivial values for parameters that are zero at init (noise strengths, biases), so every path counts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(name.endswith(n) for n in names):
                p.copy_(p + torch.randn(p.shape, generator=gen) * std)


def _codes(z_dim: int, num_ws: int, w_dim: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED + 1)
    z = torch.randn(N, z_dim, generator=gen)
    ws = w[:, None].repeat(1, num_ws, 1) + 0.3 * torch.randn(N, num_ws, w_dim, generator=gen)
    return z, ws


# ------------------------------------------------------------------------------------------------- NVIDIA
def _import_nvidia(official: Path):
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    sys.path.insert(0, str(official / "NVlabs+stylegan2-ada-pytorch"))
    import dnnlib
    from training import augment, networks

    return dnnlib, networks, augment


def nvidia_snapshot(official: Path, out: Path, name: str, *, res: int, z_dim: int, w_dim: int, map_layers: int,
                    channel_base: int, channel_max: int, num_fp16_res: int, conv_clamp: float | None,
                    split_res: int, protocol: int = 4, with_d: bool = True) -> None:
    """A snapshot dict like training_loop.py writes (G, D, G_ema, augment_pipe), and the official outputs."""
    dnnlib, networks, augment = _import_nvidia(official)
    torch.manual_seed(SEED)
    g_kwargs = dnnlib.EasyDict(z_dim=z_dim, c_dim=0, w_dim=w_dim, img_resolution=res, img_channels=3,
                               mapping_kwargs=dnnlib.EasyDict(num_layers=map_layers),
                               synthesis_kwargs=dnnlib.EasyDict(channel_base=channel_base, channel_max=channel_max,
                                                                num_fp16_res=num_fp16_res, conv_clamp=conv_clamp))
    G = networks.Generator(**g_kwargs)
    _randomise(G, ("noise_strength", "bias"), 0.3, SEED)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(w_dim) * 0.5)
    G = G.eval().requires_grad_(False)
    data = {"training_set_kwargs": {"resolution": res, "use_labels": False}}
    if with_d:
        D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=channel_base,
                                   channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp)
        data["G"] = copy.deepcopy(G)
        data["D"] = D.eval().requires_grad_(False)
        data["augment_pipe"] = augment.AugmentPipe(xflip=1, rotate90=1, xint=1).eval().requires_grad_(False)
    data["G_ema"] = copy.deepcopy(G)
    with open(out / f"{name}.pkl", "wb") as fh:
        pickle.dump(data, fh, protocol=protocol)
    _nvidia_outputs(G, out / f"{name}.expected.safetensors", split_res,
                    {"format": "nvidia-pkl", "official": "NVlabs/stylegan2-ada-pytorch d72cc7d", "res": res,
                     "kwargs": json.loads(json.dumps(g_kwargs)), "protocol": protocol})


def _nvidia_from(G, f: torch.Tensor, ws: torch.Tensor, split_res: int) -> torch.Tensor:
    """The F/W+ split composed from the official layers: f replaces b{s}.conv0's output, the skip at s is zero."""
    syn = G.synthesis
    kw = dict(noise_mode="const", fused_modconv=True)
    w_idx, x, img = 0, None, None
    for r in syn.block_resolutions:
        block = getattr(syn, f"b{r}")
        cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
        w_idx += block.num_conv
        if r < split_res:
            continue
        if r == split_res:
            x = block.conv1(f, cur[:, 1], **kw)
            img = block.torgb(x, cur[:, 2], fused_modconv=True)
        else:
            x, img = block(x, img, cur, force_fp32=True, noise_mode="const")
    return img


def _nvidia_features(G, ws: torch.Tensor, split_res: int) -> torch.Tensor:
    feats = {}
    hook = getattr(G.synthesis, f"b{split_res}").conv0.register_forward_hook(lambda m, i, o: feats.update(f=o))
    G.synthesis(ws, noise_mode="const", force_fp32=True)
    hook.remove()
    return feats["f"]


def _nvidia_outputs(G, path: Path, split_res: int, meta: dict) -> None:
    with torch.no_grad():
        w0 = G.mapping(torch.randn(N, G.z_dim, generator=torch.Generator().manual_seed(SEED + 2)), None)[:, 0]
        z, ws = _codes(G.z_dim, G.num_ws, G.w_dim, w0)
        w = G.mapping(z, None)
        w_trunc = G.mapping(z, None, truncation_psi=0.7)
        f = _nvidia_features(G, ws, split_res)
        delta = 0.1 * torch.randn(f.shape, generator=torch.Generator().manual_seed(SEED + 3))
        t = {"z": z, "w": w[:, 0], "img_z": G(z, None, noise_mode="const", force_fp32=True), "ws": ws,
             "img_ws": G.synthesis(ws, noise_mode="const", force_fp32=True), "w_trunc": w_trunc[:, 0],
             "img_trunc": G.synthesis(w_trunc, noise_mode="const", force_fp32=True), "f": f, "delta": delta,
             "img_split": _nvidia_from(G, f + delta, ws, split_res), "w_avg": G.mapping.w_avg}
    _save_expected(path, t, {**meta, "split_res": split_res})


# ------------------------------------------------------------------------------------------------- genforce
def _import_genforce(official: Path):
    sys.path.insert(0, str(official / "kkang831+BDInvert_Release"))
    from models.stylegan2_generator import StyleGAN2Generator
    from models.stylegan_generator import StyleGANGenerator

    return StyleGAN2Generator, StyleGANGenerator


def genforce_generator(official: Path, out: Path, name: str, *, family: str, res: int, z_dim: int, w_dim: int,
                       map_layers: int, fmaps_base: int, fmaps_max: int, split_res: int, layout: str) -> None:
    """A genforce StyleGAN2 / StyleGAN v1 ``.pth`` (zoo or runner layout) and the official outputs."""
    sg2_cls, sg1_cls = _import_genforce(official)
    cls = sg2_cls if family == "stylegan2" else sg1_cls
    torch.manual_seed(SEED)
    G = cls(res, z_space_dim=z_dim, w_space_dim=w_dim, mapping_layers=map_layers, mapping_fmaps=w_dim,
            fmaps_base=fmaps_base, fmaps_max=fmaps_max)
    _randomise(G, ("noise_strength", "bias", "apply_noise.weight"), 0.3, SEED)
    with torch.no_grad():
        G.truncation.w_avg.copy_(torch.randn(w_dim) * 0.5)
    G = G.eval().requires_grad_(False)
    smooth = {k: v.clone() for k, v in G.state_dict().items()}
    raw = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() and k != "synthesis.lod" else v.clone()
           for k, v in smooth.items()}  # the non-EMA generator differs: the loader must take generator_smooth
    if layout == "zoo":
        ckpt = {"generator": raw, "generator_smooth": smooth}
    else:
        ckpt = {"models": {"generator": raw, "generator_smooth": smooth},
                "running_metadata": {"iter": 10, "seen_img": 1000}}
    torch.save(ckpt, out / f"{name}.pth")
    _genforce_outputs(G, family, out / f"{name}.expected.safetensors", split_res,
                      {"format": f"genforce-{family}", "layout": layout, "res": res,
                       "official": "kkang831/BDInvert_Release 8bbd373 (genforce models with the F/W+ split)"})


def _genforce_outputs(G, family: str, path: Path, split_res: int, meta: dict) -> None:
    m = 2 * int(math.log2(split_res)) - 4
    layer = f"x{m - 1:02d}" if family == "stylegan2" else f"x{m:02d}"
    trunc_layers = G.num_layers // 2
    with torch.no_grad():
        w0 = G.mapping(torch.randn(N, G.z_space_dim, generator=torch.Generator().manual_seed(SEED + 2)))["w"]
        z, ws = _codes(G.z_space_dim, G.num_layers, G.w_space_dim, w0)
        w = G.mapping(z)["w"]
        w_trunc = G.truncation(w, 0.7, G.num_layers)
        ws_layers = G.truncation(w, 0.7, trunc_layers)
        res = G.synthesis(ws)
        f = res[layer]
        delta = 0.1 * torch.randn(f.shape, generator=torch.Generator().manual_seed(SEED + 3))
        t = {"z": z, "w": w, "img_z": G.synthesis(G.truncation(w))["image"], "ws": ws, "img_ws": res["image"],
             "w_trunc": w_trunc[:, 0], "img_trunc": G.synthesis(w_trunc)["image"], "f": f, "delta": delta,
             "img_split": G.synthesis(ws, basecode_layer=layer, basecode=f + delta)["image"],
             "ws_trunc_layers": ws_layers, "img_trunc_layers": G.synthesis(ws_layers)["image"],
             "trunc_layers": torch.tensor(float(trunc_layers)), "w_avg": G.truncation.w_avg}
    _save_expected(path, t, {**meta, "split_res": split_res, "basecode_layer": layer})


# ------------------------------------------------------------------------------------------------- sets
FIXTURES = {  # committed: tiny, float32, a few hundred kB in all
    "nvidia_map8_fp16_clamp": dict(kind="nvidia", res=32, z_dim=32, w_dim=32, map_layers=8, channel_base=256,
                                   channel_max=16, num_fp16_res=2, conv_clamp=256, split_res=8),
    "nvidia_map2_zdim_clamp05_p2": dict(kind="nvidia", res=16, z_dim=48, w_dim=32, map_layers=2, channel_base=256,
                                        channel_max=16, num_fp16_res=0, conv_clamp=0.5, split_res=8, protocol=2),
}
FIXTURES.update({
    "genforce_sg2_zoo_32": dict(kind="genforce", family="stylegan2", res=32, z_dim=32, w_dim=32, map_layers=8,
                                fmaps_base=256, fmaps_max=16, split_res=8, layout="zoo"),
    "genforce_sg2_runner_16": dict(kind="genforce", family="stylegan2", res=16, z_dim=32, w_dim=32, map_layers=2,
                                   fmaps_base=256, fmaps_max=16, split_res=8, layout="runner"),
    "genforce_sg1_zoo_32": dict(kind="genforce", family="stylegan1", res=32, z_dim=32, w_dim=32, map_layers=8,
                                fmaps_base=256, fmaps_max=16, split_res=8, layout="zoo"),
    "genforce_sg1_runner_128_fused": dict(kind="genforce", family="stylegan1", res=128, z_dim=16, w_dim=16,
                                          map_layers=2, fmaps_base=256, fmaps_max=16, split_res=16, layout="runner",
                                          n=1),
})
HELDOUT = {  # not committed: the sizes NVIDIA ships, for docs/VERIFICATION.md
    "nvidia_64_map8_w512": dict(kind="nvidia", res=64, z_dim=512, w_dim=512, map_layers=8, channel_base=16384,
                                channel_max=512, num_fp16_res=4, conv_clamp=256, split_res=16, with_d=False),
    "nvidia_256_map2_w256": dict(kind="nvidia", res=256, z_dim=512, w_dim=256, map_layers=2, channel_base=8192,
                                 channel_max=256, num_fp16_res=4, conv_clamp=256, split_res=16, with_d=False),
    "nvidia_1024_configf": dict(kind="nvidia", res=1024, z_dim=512, w_dim=512, map_layers=8, channel_base=32768,
                                channel_max=512, num_fp16_res=4, conv_clamp=256, split_res=16, with_d=False),
}
HELDOUT.update({
    "genforce_sg2_64_zoo": dict(kind="genforce", family="stylegan2", res=64, z_dim=512, w_dim=512, map_layers=8,
                                fmaps_base=16384, fmaps_max=512, split_res=16, layout="zoo"),
    "genforce_sg2_256_runner": dict(kind="genforce", family="stylegan2", res=256, z_dim=512, w_dim=512,
                                    map_layers=8, fmaps_base=16384, fmaps_max=512, split_res=8, layout="runner"),
    "genforce_sg2_1024_configf": dict(kind="genforce", family="stylegan2", res=1024, z_dim=512, w_dim=512,
                                      map_layers=8, fmaps_base=32768, fmaps_max=512, split_res=16, layout="zoo"),
    "genforce_sg1_64_zoo": dict(kind="genforce", family="stylegan1", res=64, z_dim=512, w_dim=512, map_layers=8,
                                fmaps_base=16384, fmaps_max=512, split_res=8, layout="zoo"),
    "genforce_sg1_256_runner": dict(kind="genforce", family="stylegan1", res=256, z_dim=512, w_dim=512,
                                    map_layers=8, fmaps_base=16384, fmaps_max=512, split_res=16, layout="runner"),
    "genforce_sg1_1024_zoo": dict(kind="genforce", family="stylegan1", res=1024, z_dim=512, w_dim=512,
                                  map_layers=8, fmaps_base=16384, fmaps_max=512, split_res=16, layout="zoo"),
})
BUILDERS = {"nvidia": nvidia_snapshot, "genforce": genforce_generator}


def build(official: Path, out: Path, configs: dict[str, dict], only: str | None) -> None:
    """Write every configuration's checkpoint and expected outputs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, cfg in configs.items():
        if only and only not in name:
            continue
        global N
        cfg = dict(cfg)
        N = cfg.pop("n", 2)
        BUILDERS[cfg.pop("kind")](official, out, name, **cfg)
        print(f"wrote {name}")


# ------------------------------------------------------------------------------------------------- compare
def compare(folder: Path, only: str | None = None) -> dict[str, dict[str, float]]:
    """Load every checkpoint in ``folder`` with the project's loader and print max |project - official|."""
    from safetensors import safe_open

    from bench.generators.checkpoints import load_generator
    from bench.generators.verify import measure

    table = {}
    for exp in sorted(folder.glob("*.expected.safetensors")):
        stem = exp.name[: -len(".expected.safetensors")]
        if only and only not in stem:
            continue
        ckpt = next(p for p in folder.iterdir() if p.stem == stem and not p.name.endswith(".safetensors"))
        with safe_open(str(exp), framework="pt") as fh:
            t = {k: fh.get_tensor(k) for k in fh.keys()}
            split_res = json.loads(fh.metadata()["split_res"])
        table[stem] = measure(load_generator(ckpt), t, split_res)
        print(stem, json.dumps({k: float(f"{v:.2e}") for k, v in table[stem].items()}))
    return table


def main() -> None:
    """Command line: build a set with the official code, or compare a built folder with the project."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", type=Path, default=os.environ.get("BENCH_OFFICIAL"))
    ap.add_argument("--set", choices=["fixtures", "heldout"], default="fixtures")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", default=None, help="Build only the configurations whose name contains this.")
    ap.add_argument("--compare", type=Path, default=None, help="Compare a built folder with the project's loaders.")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.compare:
        compare(args.compare, args.only)
        return
    if args.official is None or args.out is None:
        ap.error("--official (or BENCH_OFFICIAL) and --out are needed to build")
    build(args.official, args.out, FIXTURES if args.set == "fixtures" else HELDOUT, args.only)


if __name__ == "__main__":
    main()
