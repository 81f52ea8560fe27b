"""NVIDIA StyleGAN2-ADA PyTorch ``.pkl`` snapshots onto the project's :class:`StyleGAN2Generator`.

The file is read by :mod:`bench.generators.safe_unpickle` (no code from it runs); ``G_ema``'s parameters and
buffers are renamed to the rosinality layout the generator uses:

| NVIDIA (``G_ema.``)                              | project                                   |
|--------------------------------------------------|-------------------------------------------|
| ``mapping.fc{i}.weight`` / ``.bias``             | ``style.{i+1}.weight`` / ``.bias``        |
| ``mapping.w_avg`` (running average of w)         | ``w_avg``                                 |
| ``synthesis.b4.const`` (C, 4, 4)                 | ``input.input`` (1, C, 4, 4)              |
| ``synthesis.b4.conv1``, ``b4.torgb``             | ``conv1``, ``to_rgb1``                    |
| ``synthesis.b{r}.conv0`` / ``conv1`` / ``torgb`` | ``convs.{2j}`` / ``convs.{2j+1}`` / ``to_rgbs.{j}``, r = 2^(j+3) |
| ``*.weight`` (O, I, k, k)                        | ``*.conv.weight`` (1, O, I, k, k), no flip |
| ``*.affine.weight`` / ``.bias``                  | ``*.conv.modulation.weight`` / ``.bias``  |
| ``*.noise_strength`` ()  / ``*.bias`` (O,)       | ``*.noise.weight`` (1,) / ``*.activate.bias`` |
| ``*.noise_const`` (r, r)                         | ``noises.noise_{i}`` (1, 1, r, r)         |
| ``torgb.bias`` (3,)                              | ``to_rgb*.bias`` (1, 3, 1, 1)             |

NVIDIA's up-convolution weight is already flipped the way rosinality's is (``legacy.py`` flips TF's
``Conv0_up``), so no weight is flipped here. ``conv_clamp`` (256 in NVIDIA's configurations) is applied
exactly, in every precision. The fp16 resolutions (``num_fp16_res``) are a training-speed setting of the
original: here the generator computes at the run's precision (float32 on the CPU; ``--precision`` on CUDA),
which is what NVIDIA's own ``force_fp32=True`` path computes; :func:`describe_pkl` reports them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.generators.checkpoints import CheckpointError
from bench.generators.safe_unpickle import PersistentObject, UnsafePickleError, module_tensors, safe_load, submodules
from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator

FORMAT = "NVIDIA StyleGAN2-ADA .pkl"


class NvidiaPklError(CheckpointError):
    """An NVIDIA snapshot that this project cannot map (conditional, StyleGAN3, other architecture...)."""


@dataclass(frozen=True)
class PklInfo:
    """What a snapshot's ``G_ema`` is, read from its records.

    Attributes:
        config: the project's generator configuration.
        fp16_resolutions: resolutions the original ran in fp16 (computed here at the run's precision).
        has_w_avg: whether the mapping network tracked a running ``w_avg``.
        keys: the snapshot's top-level keys.
    """

    config: GeneratorConfig
    fp16_resolutions: tuple[int, ...]
    has_w_avg: bool
    keys: tuple[str, ...]


def _fail(path: Path, text: str) -> NvidiaPklError:
    return NvidiaPklError(f"{path}: {FORMAT}: {text}")


def read_g_ema(path: str | Path) -> tuple[PersistentObject, tuple[str, ...]]:
    """Unpickle the snapshot safely and return ``G_ema`` (or a bare pickled ``Generator``) and the keys."""
    path = Path(path)
    try:
        obj = safe_load(path)
    except UnsafePickleError as err:
        raise NvidiaPklError(str(err)) from None
    if isinstance(obj, PersistentObject):
        obj, keys = obj, ()
    elif isinstance(obj, dict):
        keys = tuple(str(k) for k in obj)
        g = obj.get("G_ema")
        if not isinstance(g, PersistentObject):
            raise _fail(path, f"expected a snapshot dict with 'G_ema', got keys {list(keys)[:8]}")
        obj = g
    else:
        raise _fail(path, f"expected a snapshot dict with 'G_ema', got {type(obj).__name__}")
    if obj.class_name != "Generator":
        raise _fail(path, f"G_ema is a {obj.class_name!r}, expected a StyleGAN2 'Generator'")
    return obj, keys


def _attr(obj: PersistentObject, name: str, default: Any = None) -> Any:
    return obj.state.get(name, default)


def _check_architecture(path: Path, g: PersistentObject, mods: dict[str, PersistentObject]) -> None:
    names = {m.class_name for m in mods.values()}
    if "SynthesisInput" in names or any(n.startswith("L") and "_" in n for n in mods):
        raise _fail(path, "this is a StyleGAN3 generator (alias-free synthesis); only StyleGAN2 is supported")
    if int(_attr(g, "c_dim", 0) or 0) > 0 or "mapping.embed" in mods:
        raise _fail(path, f"conditional generator (c_dim = {_attr(g, 'c_dim')}): class-conditional models need a "
                    "label for every image, which the benchmark's methods do not give; use an unconditional model")
    if int(_attr(g, "img_channels", 3)) != 3:
        raise _fail(path, f"img_channels = {_attr(g, 'img_channels')}; only RGB generators are supported")
    for name, m in mods.items():
        if m.class_name == "SynthesisBlock" and _attr(m, "architecture", "skip") != "skip":
            raise _fail(path, f"{name} uses architecture {_attr(m, 'architecture')!r}; only 'skip' is supported")
        if m.class_name == "SynthesisLayer" and (not _attr(m, "use_noise", True) or _attr(m, "activation") != "lrelu"):
            raise _fail(path, f"{name}: only layers with noise and lrelu activation are supported")


def _conv_clamp(path: Path, mods: dict[str, PersistentObject]) -> float | None:
    clamps = {_attr(m, "conv_clamp") for m in mods.values() if m.class_name in ("SynthesisLayer", "ToRGBLayer")}
    if len(clamps) != 1:
        raise _fail(path, f"layers have different conv_clamp values {sorted(map(str, clamps))}")
    value = clamps.pop()
    return None if value is None else float(value)


def _mapping_lr(path: Path, mods: dict[str, PersistentObject], n_mlp: int) -> float:
    lrs = set()
    for i in range(n_mlp):
        fc = mods[f"mapping.fc{i}"]
        if _attr(fc, "activation") != "lrelu":
            raise _fail(path, f"mapping.fc{i} has activation {_attr(fc, 'activation')!r}; expected 'lrelu'")
        lrs.add(round(float(_attr(fc, "bias_gain", 0.01)), 12))
    if len(lrs) != 1:
        raise _fail(path, f"mapping layers have different learning-rate multipliers {sorted(lrs)}")
    return lrs.pop()


def infer_config(path: Path, g: PersistentObject, sd: dict[str, torch.Tensor]) -> PklInfo:
    """The project configuration of ``G_ema`` from its records and tensor shapes."""
    mods = submodules(g)
    _check_architecture(path, g, mods)
    n_mlp = len([k for k in sd if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    res = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if not n_mlp or not res or res[0] != 4:
        raise _fail(path, "G_ema has no mapping.fc* / synthesis.b4 tensors")
    w_dim = sd["mapping.fc0.weight"].shape[0]
    z_dim = sd["mapping.fc0.weight"].shape[1]
    hidden = {sd[f"mapping.fc{i}.weight"].shape[0] for i in range(n_mlp)}
    if hidden != {w_dim}:
        raise _fail(path, f"mapping layer widths {sorted(hidden)} differ from w_dim {w_dim}; not supported")
    channels = {r: sd[f"synthesis.b{r}.conv1.weight"].shape[0] for r in res}
    config = GeneratorConfig(resolution=res[-1], w_dim=w_dim, n_mlp=n_mlp, channels=channels,
                             lr_mlp=_mapping_lr(path, mods, n_mlp), z_dim=z_dim, conv_clamp=_conv_clamp(path, mods))
    fp16 = tuple(r for r in res if _attr(mods[f"synthesis.b{r}"], "use_fp16", False))
    return PklInfo(config, fp16, "mapping.w_avg" in sd, ())


def _layer(sd: dict, src: str, dst: str, noise_index: int, out: dict) -> None:
    out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
    out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
    out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
    out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
    out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
    out[f"noises.noise_{noise_index}"] = sd[f"{src}.noise_const"][None, None]


def _torgb(sd: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
    out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
    out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
    out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, 3, 1, 1)


def to_project_state_dict(sd: dict[str, torch.Tensor], config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """Rename ``G_ema``'s tensors to the project's keys (the FIR buffers are the project's own)."""
    out: dict[str, torch.Tensor] = {}
    for i in range(config.n_mlp):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    _layer(sd, "synthesis.b4.conv1", "conv1", 0, out)
    _torgb(sd, "synthesis.b4.torgb", "to_rgb1", out)
    for j in range(int(math.log2(config.resolution)) - 2):
        r = 2 ** (j + 3)
        _layer(sd, f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1, out)
        _layer(sd, f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2, out)
        _torgb(sd, f"synthesis.b{r}.torgb", f"to_rgbs.{j}", out)
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def check_filters(path: Path, sd: dict[str, torch.Tensor]) -> None:
    """Every ``resample_filter`` must be NVIDIA's normalised [1, 3, 3, 1] (the only filter the project has)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    want = torch.outer(k, k) / torch.outer(k, k).sum()
    for key, value in sd.items():
        if key.endswith("resample_filter") and key.startswith("synthesis."):
            if value.shape != want.shape or not torch.allclose(value.float(), want, atol=1e-6):
                raise _fail(path, f"{key} is not the [1,3,3,1] filter; other filters are unsupported")


def read_pkl(path: str | Path) -> tuple[PklInfo, dict[str, torch.Tensor], torch.Tensor | None]:
    """Read a snapshot: its :class:`PklInfo`, the project state dict and ``w_avg`` (or ``None``).

    Raises:
        NvidiaPklError: naming the file and the problem (a refused global, a conditional model...).
    """
    path = Path(path)
    g, keys = read_g_ema(path)
    sd = module_tensors(g)
    info = infer_config(path, g, sd)
    check_filters(path, sd)
    try:
        state = to_project_state_dict(sd, info.config)
    except KeyError as err:
        raise _fail(path, f"G_ema lacks the tensor {err}") from err
    w_avg = sd.get("mapping.w_avg")
    info = PklInfo(info.config, info.fp16_resolutions, w_avg is not None, keys)
    return info, state, None if w_avg is None else w_avg.detach().float().reshape(-1)


def build_generator(path: Path, info: PklInfo, state: dict[str, torch.Tensor]) -> StyleGAN2Generator:
    """The project generator with ``state`` loaded under strict key and shape checks."""
    from bench.generators.checkpoints import check_state_dict

    gen = StyleGAN2Generator(info.config)
    own = gen.state_dict()
    fir = {k: own[k] for k in own if k.endswith(".kernel")}
    check_state_dict(gen, {**state, **fir}, f"{path} ({FORMAT})", ignore=("w_avg",))
    gen.load_state_dict({**state, **fir, "w_avg": gen.w_avg}, strict=True)
    return gen


def describe_fp16(info: PklInfo) -> str:
    """How the fp16 resolutions and the clamp are handled, for descriptions and ``bench zoo inspect``."""
    fp16 = ", ".join(map(str, info.fp16_resolutions)) or "none"
    clamp = "none" if info.config.conv_clamp is None else f"{info.config.conv_clamp:g} (applied)"
    return f"fp16 resolutions in the original: {fp16} (computed at the run's precision); conv_clamp {clamp}"


def load_nvidia_pkl(path: str | Path, *, w_avg_samples: int = 10_000) -> StyleGAN2Generator:
    """Load ``G_ema`` of an NVIDIA StyleGAN2-ADA PyTorch snapshot on the CPU, running no code from the file.

    Args:
        path: the ``.pkl`` file (a renamed one is recognised by its content).
        w_avg_samples: used only when the mapping network kept no running ``w_avg``.

    Returns:
        The generator in eval mode with gradients disabled; ``family``, ``source_format`` and
        ``description`` say what the file was.

    Raises:
        NvidiaPklError: naming the file and the format (a refused global, a conditional model, StyleGAN3...).
    """
    path = Path(path)
    info, state, w_avg = read_pkl(path)
    gen = build_generator(path, info, state)
    if w_avg is not None:
        gen.w_avg.copy_(w_avg)
        note = "running w_avg from file"
    else:
        gen.compute_w_avg(w_avg_samples, seed=0)
        note = f"w_avg = mean of {w_avg_samples} mapped samples (file has none)"
    gen.source_format = FORMAT
    gen.checkpoint_info = {"format": FORMAT, "w_avg": note, "snapshot keys": ", ".join(info.keys),
                           "fp16 resolutions (original)": ", ".join(map(str, info.fp16_resolutions)) or "none",
                           "conv_clamp": "none" if info.config.conv_clamp is None else f"{info.config.conv_clamp:g}"}
    gen.description = (f"StyleGAN2 {info.config.resolution}px from {path.name} ({FORMAT} G_ema; {note}; "
                       f"{describe_fp16(info)})")
    return gen.eval().requires_grad_(False)
