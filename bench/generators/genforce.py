"""genforce ``.pth`` generators (StyleGAN2 and StyleGAN v1), as BDInvert and the genforce zoo ship them.

Layouts read (``torch.load(weights_only=True)``, so no code from the file runs):

- zoo / converted files: ``{'generator': sd, 'discriminator': sd, 'generator_smooth': sd}``;
- runner checkpoints: ``{'models': {'generator': sd, 'generator_smooth': sd, ...}, 'running_metadata': ...}``;
- a bare generator state dict.

``generator_smooth`` (the EMA generator) is used when present. The family is told by the keys:
``synthesis.early_layer.const`` is StyleGAN2 (genforce ``models/stylegan2_generator.py``), ``synthesis.lod``
with ``synthesis.layer0.const`` is StyleGAN v1 (``models/stylegan_generator.py``).

StyleGAN2 is renamed to the rosinality layout of :class:`StyleGAN2Generator` (reference/methods.md §7.3):
``mapping.dense{i}`` -> ``style.{i+1}``; ``layer0`` -> ``conv1``, ``layer{2j+1}`` -> ``convs.{2j}`` (weight
flipped on both spatial axes: genforce keeps TF's unflipped up-conv kernel and flips at run time),
``layer{2j+2}`` -> ``convs.{2j+1}``; ``output0`` -> ``to_rgb1``, ``output{j+1}`` -> ``to_rgbs.{j}``;
``style.bias`` + 1 -> ``modulation.bias`` (genforce adds the 1 at run time); ``truncation.w_avg`` -> ``w_avg``.

StyleGAN v1 maps onto :class:`StyleGAN1Generator` one layer to one layer; only the final ToRGB is used
(the lower-resolution ``output*`` layers of progressive growing do not contribute at ``lod = 0``, and a file
with ``lod != 0`` is refused). The mapping's learning-rate multiplier (0.01) and the resolution from which
up-layers are fused (128) are genforce's defaults, which its released files use; neither is stored.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from bench.generators.checkpoints import CheckpointError, check_state_dict
from bench.generators.stylegan1 import StyleGAN1Config, StyleGAN1Generator
from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator

FORMAT = "genforce .pth"
KINDS = ("generator_smooth", "generator")


def _generator_dict(ckpt: object) -> tuple[dict | None, str]:
    """The generator state dict inside a genforce checkpoint and where it was found."""
    if not isinstance(ckpt, dict):
        return None, ""
    for holder, prefix in ((ckpt, ""), (ckpt.get("models"), "models.")):
        if isinstance(holder, dict):
            for kind in KINDS:
                if isinstance(holder.get(kind), dict):
                    return holder[kind], prefix + kind
    if any(isinstance(k, str) and k.startswith("mapping.dense") for k in ckpt):
        return ckpt, "state dict"
    return None, ""


def is_genforce(ckpt: object) -> bool:
    """Whether ``ckpt`` (a loaded torch file) holds a genforce generator."""
    return _generator_dict(ckpt)[0] is not None


def family_of(sd: dict) -> str:
    """``stylegan2``, ``stylegan1`` or ``unknown`` from a genforce generator state dict."""
    if "synthesis.early_layer.const" in sd:
        return "stylegan2"
    if "synthesis.layer0.const" in sd and "synthesis.lod" in sd:
        return "stylegan1"
    if any(k.startswith("synthesis.layer0.epilogue") for k in sd):
        return "idinvert"
    return "unknown"


def _fail(path: Path, family: str, text: str) -> CheckpointError:
    return CheckpointError(f"{path}: {FORMAT} ({family}): {text}")


def _mapping_dims(path: Path, family: str, sd: dict) -> tuple[int, int, int, int]:
    """(z_dim, hidden, w_dim, n_mlp) of ``mapping.dense*``; conditional mappings are refused."""
    if "mapping.label_weight" in sd:
        raise _fail(path, family, "conditional generator (mapping.label_weight); use an unconditional model")
    n = len([k for k in sd if re.fullmatch(r"mapping\.dense\d+\.weight", k)])
    if n == 0:
        raise _fail(path, family, "no mapping.dense* weights")
    z_dim = sd["mapping.dense0.weight"].shape[1]
    hidden = sd["mapping.dense0.weight"].shape[0] if n > 1 else sd["mapping.dense0.weight"].shape[0]
    w_dim = sd["truncation.w_avg"].numel() if "truncation.w_avg" in sd else sd[f"mapping.dense{n - 1}.weight"].shape[0]
    if sd[f"mapping.dense{n - 1}.weight"].shape[0] != w_dim:
        raise _fail(path, family, f"the mapping outputs {sd[f'mapping.dense{n - 1}.weight'].shape[0]} values for "
                    f"w_dim {w_dim} (repeat_w=False: one w per layer); only a shared w is supported")
    return z_dim, hidden, w_dim, n


# --------------------------------------------------------------------------------------- StyleGAN2
def stylegan2_config(path: Path, sd: dict) -> GeneratorConfig:
    """The project configuration of a genforce StyleGAN2 generator."""
    z_dim, hidden, w_dim, n_mlp = _mapping_dims(path, "StyleGAN2", sd)
    if n_mlp > 1 and hidden != w_dim:
        raise _fail(path, "StyleGAN2", f"hidden mapping width {hidden} differs from w_dim {w_dim}; not supported")
    if any(k.startswith("synthesis.skip_layer") for k in sd):
        raise _fail(path, "StyleGAN2", "resnet synthesis architecture; only 'skip' is supported")
    n_layers = len([k for k in sd if re.fullmatch(r"synthesis\.layer\d+\.style\.weight", k)])
    n_out = len([k for k in sd if re.fullmatch(r"synthesis\.output\d+\.style\.weight", k)])
    if n_layers % 2 == 0 or n_out != (n_layers + 1) // 2:
        raise _fail(path, "StyleGAN2", f"{n_layers} layers and {n_out} ToRGB outputs: not the 'skip' architecture")
    channels = {4: sd["synthesis.layer0.bias"].shape[0]}
    for j in range((n_layers - 1) // 2):
        channels[2 ** (j + 3)] = sd[f"synthesis.layer{2 * j + 1}.bias"].shape[0]
    return GeneratorConfig(resolution=max(channels), w_dim=w_dim, n_mlp=n_mlp, channels=channels, z_dim=z_dim)


def _sg2_layer(sd: dict, i: int, dst: str, flip: bool, out: dict) -> None:
    src = f"synthesis.layer{i}"
    weight = sd[f"{src}.weight"]
    out[f"{dst}.conv.weight"] = (weight.flip(2, 3) if flip else weight)[None]
    out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.style.weight"]
    out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.style.bias"] + 1.0
    out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
    out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
    out[f"noises.noise_{i}"] = sd[f"{src}.noise"].reshape(1, 1, *sd[f"{src}.noise"].shape[-2:])


def _sg2_rgb(sd: dict, k: int, dst: str, out: dict) -> None:
    src = f"synthesis.output{k}"
    out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
    out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.style.weight"]
    out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.style.bias"] + 1.0
    out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, 3, 1, 1)


def stylegan2_state_dict(sd: dict, config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """The genforce StyleGAN2 tensors renamed to the project's (rosinality) keys."""
    out: dict[str, torch.Tensor] = {}
    for i in range(config.n_mlp):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.dense{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.dense{i}.bias"]
    out["input.input"] = sd["synthesis.early_layer.const"]
    _sg2_layer(sd, 0, "conv1", False, out)
    _sg2_rgb(sd, 0, "to_rgb1", out)
    for j in range(int(math.log2(config.resolution)) - 2):
        _sg2_layer(sd, 2 * j + 1, f"convs.{2 * j}", True, out)
        _sg2_layer(sd, 2 * j + 2, f"convs.{2 * j + 1}", False, out)
        _sg2_rgb(sd, j + 1, f"to_rgbs.{j}", out)
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def _check_sg2_filters(path: Path, sd: dict) -> None:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    base = torch.outer(k, k) / torch.outer(k, k).sum()
    for key, value in sd.items():
        if re.fullmatch(r"synthesis\.(layer\d+\.filter|upsample)\.kernel", key):
            v = value.float().reshape(-1, 4, 4) if value.numel() % 16 == 0 else value.float()
            ok = v.shape[-2:] == (4, 4) and any(torch.allclose(v[0], base * g, atol=1e-6) for g in (1.0, 4.0))
            if not ok:
                raise _fail(path, "StyleGAN2", f"{key} is not the [1,3,3,1] filter; other filters are unsupported")


def load_stylegan2(path: Path, sd: dict) -> StyleGAN2Generator:
    """A genforce StyleGAN2 generator state dict as a :class:`StyleGAN2Generator` (strict keys and shapes)."""
    source = f"{path} ({FORMAT}, StyleGAN2)"
    try:
        config = stylegan2_config(path, sd)
        state = stylegan2_state_dict(sd, config)
    except KeyError as err:
        raise _fail(path, "StyleGAN2", f"missing key {err}") from err
    _check_sg2_filters(path, sd)
    used = _used_sg2_keys(config)
    extra = sorted(k for k in sd if k not in used and not k.endswith(".kernel"))
    if extra:
        raise _fail(path, "StyleGAN2", f"{len(extra)} unexpected keys, e.g. {extra[:5]}")
    gen = StyleGAN2Generator(config)
    fir = {k: v for k, v in gen.state_dict().items() if k.endswith(".kernel")}
    check_state_dict(gen, {**state, **fir}, source, ignore=("w_avg",))
    gen.load_state_dict({**state, **fir, "w_avg": gen.w_avg}, strict=True)
    return gen


def _used_sg2_keys(config: GeneratorConfig) -> set[str]:
    keys = {f"mapping.dense{i}.{p}" for i in range(config.n_mlp) for p in ("weight", "bias")}
    keys |= {"truncation.w_avg", "synthesis.early_layer.const"}
    n_layers = 2 * (int(math.log2(config.resolution)) - 2) + 1
    for i in range(n_layers):
        keys |= {f"synthesis.layer{i}.{p}" for p in ("weight", "bias", "noise", "noise_strength", "style.weight",
                                                    "style.bias")}
    for k in range((n_layers + 1) // 2):
        keys |= {f"synthesis.output{k}.{p}" for p in ("weight", "bias", "style.weight", "style.bias")}
    return keys


# --------------------------------------------------------------------------------------- StyleGAN v1
def stylegan1_config(path: Path, sd: dict, *, final_tanh: bool = False) -> StyleGAN1Config:
    """The project configuration of a genforce StyleGAN v1 generator."""
    z_dim, hidden, w_dim, n_mlp = _mapping_dims(path, "StyleGAN v1", sd)
    n_layers = len([k for k in sd if re.fullmatch(r"synthesis\.layer\d+\.style\.weight", k)])
    if n_layers < 4 or n_layers % 2:
        raise _fail(path, "StyleGAN v1", f"{n_layers} synthesis layers; expected an even number >= 4")
    channels = {2 ** (i // 2 + 2): sd[f"synthesis.layer{i}.bias"].shape[0] for i in range(0, n_layers, 2)}
    return StyleGAN1Config(resolution=max(channels), w_dim=w_dim, n_mlp=n_mlp, channels=channels, z_dim=z_dim,
                           mapping_hidden=hidden if n_mlp > 1 else w_dim, final_tanh=final_tanh)


def stylegan1_state_dict(sd: dict, config: StyleGAN1Config) -> dict[str, torch.Tensor]:
    """The genforce StyleGAN v1 tensors renamed to :class:`StyleGAN1Generator`'s keys (final ToRGB only)."""
    out: dict[str, torch.Tensor] = {}
    for i in range(config.n_mlp):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.dense{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.dense{i}.bias"]
    out["const"] = sd["synthesis.layer0.const"]
    n_layers = 2 * int(math.log2(config.resolution)) - 2
    for i in range(n_layers):
        src, dst = f"synthesis.layer{i}", f"layers.{i}"
        if i > 0:
            out[f"{dst}.weight"] = sd[f"{src}.weight"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"]
        out[f"{dst}.noise_weight"] = sd[f"{src}.apply_noise.weight"]
        out[f"{dst}.style.weight"] = sd[f"{src}.style.weight"]
        out[f"{dst}.style.bias"] = sd[f"{src}.style.bias"]
        noise = sd[f"{src}.apply_noise.noise"]
        out[f"noises.noise_{i}"] = noise.reshape(1, 1, *noise.shape[-2:])
    last = n_layers // 2 - 1
    out["to_rgb.weight"] = sd[f"synthesis.output{last}.weight"]
    out["to_rgb.bias"] = sd[f"synthesis.output{last}.bias"]
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def _check_sg1(path: Path, sd: dict) -> None:
    lod = sd.get("synthesis.lod")
    if lod is not None and float(lod) != 0.0:
        raise _fail(path, "StyleGAN v1", f"synthesis.lod = {float(lod):g}: a checkpoint taken during progressive "
                    "growing; only finished generators (lod 0) are supported")
    k = torch.tensor([1.0, 2.0, 1.0])
    want = torch.outer(k, k) / 16.0
    for key, value in sd.items():
        if key.endswith("blur.kernel") and not torch.allclose(value.float().reshape(-1, 3, 3), want, atol=1e-6):
            raise _fail(path, "StyleGAN v1", f"{key} is not the [1,2,1] blur; other filters are unsupported")


def load_stylegan1(path: Path, sd: dict) -> StyleGAN1Generator:
    """A genforce StyleGAN v1 generator state dict as a :class:`StyleGAN1Generator` (strict keys and shapes)."""
    source = f"{path} ({FORMAT}, StyleGAN v1)"
    _check_sg1(path, sd)
    try:
        config = stylegan1_config(path, sd)
        state = stylegan1_state_dict(sd, config)
    except KeyError as err:
        raise _fail(path, "StyleGAN v1", f"missing key {err}") from err
    known = re.compile(r"(mapping\.dense\d+\.(weight|bias)|truncation\.w_avg|synthesis\.lod|synthesis\.layer\d+\."
                       r"(const|weight|bias|apply_noise\.(weight|noise)|style\.(weight|bias)|blur\.kernel)|"
                       r"synthesis\.output\d+\.(weight|bias))")
    extra = sorted(k for k in sd if not known.fullmatch(k))
    if extra:
        raise _fail(path, "StyleGAN v1", f"{len(extra)} unexpected keys, e.g. {extra[:5]}")
    gen = StyleGAN1Generator(config)
    check_state_dict(gen, state, source, ignore=("w_avg",))
    gen.load_state_dict({**state, "w_avg": gen.w_avg}, strict=True)
    return gen


# --------------------------------------------------------------------------------------- entry point
def read_genforce(path: Path, ckpt: object) -> tuple[dict, str, str]:
    """(generator state dict, where it was found, family) of a genforce checkpoint."""
    sd, where = _generator_dict(ckpt)
    if sd is None:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: {FORMAT}: no 'generator_smooth' / 'generator' state dict, got {keys}")
    family = family_of(sd)
    if family == "idinvert":
        raise _fail(path, "IDinvert StyleGAN v1", "IDinvert's own layout (layerI.epilogue.*, one w per layer) "
                    "is not supported yet; genforce-layout StyleGAN v1 files are")
    if family == "unknown":
        raise CheckpointError(f"{path}: {FORMAT}: {where} is neither a StyleGAN2 (synthesis.early_layer.const) "
                              "nor a StyleGAN v1 (synthesis.layer0.const, synthesis.lod) generator")
    return sd, where, family


def load_genforce(path: str | Path, ckpt: object, *, w_avg_samples: int = 10_000) -> torch.nn.Module:
    """Load a genforce StyleGAN2 or StyleGAN v1 generator from a loaded checkpoint ``ckpt`` of ``path``.

    Args:
        path: the file (for messages and the description).
        ckpt: its content, read with ``torch.load(weights_only=True)``.
        w_avg_samples: used only when the file has no ``truncation.w_avg``.

    Returns:
        The generator in eval mode with gradients disabled; ``family`` says which.
    """
    path = Path(path)
    sd, where, family = read_genforce(path, ckpt)
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    gen = load_stylegan2(path, sd) if family == "stylegan2" else load_stylegan1(path, sd)
    w_avg = sd.get("truncation.w_avg")
    if w_avg is not None:
        gen.w_avg.copy_(w_avg.float().reshape(-1))
        note = "truncation.w_avg from file"
    else:
        gen.compute_w_avg(w_avg_samples, seed=0)
        note = f"w_avg = mean of {w_avg_samples} mapped samples (file has none)"
    name = "StyleGAN2" if family == "stylegan2" else "StyleGAN v1"
    gen.source_format = FORMAT
    gen.checkpoint_info = {"format": FORMAT, "w_avg": note, "generator": where}
    gen.description = f"{name} {gen.resolution}px from {path.name} ({FORMAT} {where}; {note})"
    return gen.eval().requires_grad_(False)
