"""Text for ``bench ls ...`` and ``bench zoo ls``."""

from __future__ import annotations

from dataclasses import fields

from bench.config import RunConfig


def methods() -> str:
    """One line per method preset: latent space, steps, GPU precision of ``--precision auto``, description."""
    import torch

    from bench.accel import resolve_accel
    from methods import list_presets

    lines = [f"{'name':<10} {'space':<6} {'steps':>6}  {'gpu auto':<8}  description"]
    for p in list_presets():
        gpu = resolve_accel("auto", torch.device("cuda"), tested=p.gpu_precisions).precision
        lines.append(f"{p.name:<10} {p.latent_space:<6} {p.default_steps:>6}  {gpu:<8}  {p.description}")
    lines.append("gpu auto: the precision `--precision auto` runs the method at on CUDA (the fastest that held the "
                 "GPU parity test; fp32 on the CPU)")
    return "\n".join(lines)


def transforms() -> str:
    """The transform grammar."""
    from transforms import GRAMMAR

    return GRAMMAR


def metrics() -> str:
    """Registered metrics with direction and description."""
    from bench.metrics import list_metrics

    lines = []
    for m in list_metrics():
        arrow = "↑" if m.higher_is_better else "↓"
        lines.append(f"{m.name:<11} {arrow}  {m.description}")
    lines.append("Each metric is also recorded on the transform's valid region as NAME@valid.")
    return "\n".join(lines)


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


def zoo() -> str:
    """Shipped assets and what can be added."""
    from bench.world import zoo as z

    entries = z.manifest()["assets"]
    lines = ["Shipped with the embedded world (bench/world/assets):"]
    if not entries:
        lines.append("  (nothing yet: the world's networks have not been trained; bench run uses a random generator)")
    for name, e in entries.items():
        lines.append(f"  {name:<17} {e['file']:<26} {e['bytes'] / 1e6:5.2f} MB  {e.get('description', '')}")
    lines += ["", "You can add (pass with the options shown):",
              "  a StyleGAN2 checkpoint, rosinality .pt layout         bench run --generator PATH.pt",
              "  torchvision AlexNet / VGG16 weights, for real LPIPS   bench run --lpips-weights DIR "
              "(alexnet-owt-7be5be79.pth, vgg16-397923af.pth), or put them in $TORCH_HOME/hub/checkpoints",
              "  an encoder trained for your generator (F/W+, IDinvert, pSp)  bench run --encoder METHOD=PATH",
              "  P-norm+ statistics of your generator    bench zoo pnorm-stats --generator G --out F; "
              "bench run --pnorm-stats F"]
    return "\n".join(lines)
