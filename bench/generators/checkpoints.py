"""Loading generator checkpoints safely, with strict key and shape checks.

Supported formats:

- rosinality StyleGAN2 ``.pt`` (``{'g_ema': state_dict, 'latent_avg': (512,)}`` from ``convert_weight.py``,
  or a training checkpoint with ``g_ema`` and no ``latent_avg``), read with ``torch.load(weights_only=True)``
  so that no code in the file runs.
- the project's own ``.safetensors`` generator files (architecture in the metadata).

Every load compares the file's keys and shapes with the architecture inferred from it and raises
:class:`CheckpointError` naming the file and the offending keys: nothing is loaded with ``strict=False``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from bench.generators.layers import make_fir_kernel
from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator


class CheckpointError(ValueError):
    """A checkpoint file is missing, of an unknown format, or does not match the architecture."""


def infer_rosinality_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> GeneratorConfig:
    """Infer resolution, w_dim, mapping depth and channels from a rosinality ``g_ema`` state dict."""
    try:
        w_dim = sd["style.1.weight"].shape[1]
        n_mlp = len({m.group(1) for k in sd if (m := re.match(r"style\.(\d+)\.weight$", k))})
        n_rgbs = len({m.group(1) for k in sd if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
        channels = {4: sd["conv1.conv.weight"].shape[1]}
        for j in range(n_rgbs):
            channels[2 ** (j + 3)] = sd[f"convs.{2 * j}.conv.weight"].shape[1]
    except KeyError as err:
        raise CheckpointError(f"{source}: not a rosinality StyleGAN2 state dict (missing key {err})") from err
    return GeneratorConfig(resolution=2 ** (n_rgbs + 2), w_dim=w_dim, n_mlp=n_mlp, channels=channels)


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str,
                     ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointError` unless ``sd`` has exactly the model's keys and shapes."""
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in ignore}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k])}"
             for k in sorted(set(sd) & set(expected)) if sd[k].shape != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches, e.g. {wrong[:5]}")
    if problems:
        raise CheckpointError(f"{source}: does not match the StyleGAN2 architecture: " + "; ".join(problems))


def _check_fir_buffers(sd: dict[str, torch.Tensor], source: str) -> None:
    for key, gain in ((r"convs\.\d+\.conv\.blur\.kernel", 4.0), (r"to_rgbs\.\d+\.upsample\.kernel", 4.0)):
        want = make_fir_kernel(gain=gain)
        for k in (k for k in sd if re.fullmatch(key, k)):
            if sd[k].shape != want.shape or not torch.allclose(sd[k].float(), want, atol=1e-6):
                raise CheckpointError(f"{source}: {k} is not the [1,3,3,1] blur kernel; other kernels are unsupported")


def load_rosinality(path: str | Path, *, w_avg_samples: int = 10_000, ckpt: object = None) -> StyleGAN2Generator:
    """Load a rosinality StyleGAN2 ``.pt`` file (``g_ema`` weights) on the CPU.

    Args:
        path: the ``.pt`` file.
        w_avg_samples: if the file has no ``latent_avg``, ``w_avg`` is the mean of this many mapped
            samples (seed 0), as rosinality's ``mean_latent`` does; the description says so.
        ckpt: the file's content when the caller has already read it.

    Returns:
        The generator in eval mode with gradients disabled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if ckpt is None:
        if sniff(path) == "pickle":
            raise CheckpointError(f"{path}: this is a bare pickle, not a torch file: an NVIDIA StyleGAN2-ADA .pkl "
                                  "(whatever its extension) is read by load_generator / bench run --generator")
        ckpt = read_torch(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: expected a dict with a 'g_ema' state dict (rosinality layout), got {keys}")
    sd = {k: v.float() for k, v in ckpt["g_ema"].items()}
    source = f"{path} (rosinality .pt)"
    config = infer_rosinality_config(sd, source)
    gen = StyleGAN2Generator(config)
    check_state_dict(gen, sd, source, ignore=("w_avg",))
    _check_fir_buffers(sd, source)
    gen.load_state_dict({**sd, "w_avg": gen.w_avg}, strict=True)
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None:
        latent_avg = torch.as_tensor(latent_avg).float().reshape(-1)
        if latent_avg.shape != (config.w_dim,):
            raise CheckpointError(f"{path}: latent_avg has shape {tuple(latent_avg.shape)}, expected ({config.w_dim},)")
        gen.w_avg.copy_(latent_avg)
        avg_note = "latent_avg from file"
    else:
        gen.compute_w_avg(w_avg_samples, seed=0)
        avg_note = f"w_avg = mean of {w_avg_samples} mapped samples (file has no latent_avg)"
    gen.source_format = "rosinality .pt"
    gen.checkpoint_info = {"format": gen.source_format, "w_avg": avg_note}
    gen.description = f"StyleGAN2 {config.resolution}px from {path.name} (rosinality .pt; {avg_note})"
    return gen.eval().requires_grad_(False)


def save_rosinality(gen: StyleGAN2Generator, path: str | Path, *, with_latent_avg: bool = True) -> None:
    """Write ``gen`` in the rosinality ``convert_weight.py`` layout (used by tests and converters)."""
    sd = {k: v.detach().cpu().clone() for k, v in gen.state_dict().items() if k != "w_avg"}
    ckpt: dict = {"g_ema": sd}
    if with_latent_avg:
        ckpt["latent_avg"] = gen.w_avg.detach().cpu().clone()
    torch.save(ckpt, path)


FAMILIES = {"bench-stylegan2": "stylegan2", "bench-stylegan1": "stylegan1"}


def _family_classes(fmt: str) -> tuple[type, type]:
    if fmt == "bench-stylegan1":
        from bench.generators.stylegan1 import StyleGAN1Config, StyleGAN1Generator

        return StyleGAN1Config, StyleGAN1Generator
    return GeneratorConfig, StyleGAN2Generator


def save_safetensors(gen: torch.nn.Module, path: str | Path, extra: dict | None = None,
                     dtype: torch.dtype = torch.float32) -> None:
    """Write the project's safetensors generator format (weights + JSON architecture in the metadata).

    Serves StyleGAN2 (``bench-stylegan2``) and StyleGAN v1 (``bench-stylegan1``) generators; ``w_avg`` and the
    constant noise are among the tensors. ``dtype=torch.float16`` halves the file; :func:`load_safetensors`
    always returns float32 weights.
    """
    from safetensors.torch import save_file

    fmt = "bench-stylegan1" if getattr(gen, "family", "stylegan2") == "stylegan1" else "bench-stylegan2"
    meta = {"format": fmt, "config": json.dumps(gen.config.to_dict()), "extra": json.dumps(extra or {})}
    tensors = {k: v.detach().to(dtype).cpu().contiguous() for k, v in gen.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def load_safetensors(path: str | Path) -> torch.nn.Module:
    """Load a generator written by :func:`save_safetensors` (no pickle involved), with strict checks."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            sd = {k: fh.get_tensor(k).float() for k in fh.keys()}
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    fmt = meta.get("format")
    if fmt not in FAMILIES:
        raise CheckpointError(f"{path}: safetensors metadata format is {fmt!r}, expected one of {sorted(FAMILIES)}")
    config_cls, gen_cls = _family_classes(fmt)
    try:
        gen = gen_cls(config_cls.from_dict(json.loads(meta["config"])))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {fmt} safetensors: bad architecture metadata ({err})") from err
    check_state_dict(gen, sd, f"{path} ({fmt} safetensors)")
    gen.load_state_dict(sd, strict=True)
    extra = json.loads(meta.get("extra") or "{}")
    name = "StyleGAN v1" if fmt == "bench-stylegan1" else "StyleGAN2"
    origin = f"; converted from {extra['source']} ({extra.get('source_format', '?')})" if "source" in extra else ""
    gen.source_format = "project .safetensors"
    gen.checkpoint_info = {"format": gen.source_format, "w_avg": "from file", **extra}
    gen.description = f"{name} {gen.resolution}px from {path.name} (project .safetensors{origin})"
    return gen.eval().requires_grad_(False)


TORCH_LEGACY_MAGIC = bytes.fromhex("8a0a6cfc9c46f9206aa85019")  # pickled torch.save magic number (LONG1)


def sniff(path: Path) -> str:
    """What the file's first bytes say it is: ``zip`` (torch.save), ``torch-legacy``, ``pickle``, ``safetensors``.

    The extension is not trusted: an NVIDIA ``.pkl`` renamed to ``.pt`` is still a bare pickle.
    """
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and head[2:14] == TORCH_LEGACY_MAGIC:
        return "torch-legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def read_torch(path: Path) -> object:
    """``torch.load(weights_only=True)`` on the CPU; any failure is a :class:`CheckpointError` naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is reported with the file name
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch file ({err})") from err


def torch_layout(ckpt: object) -> str:
    """Which generator layout a torch checkpoint holds: ``rosinality``, ``genforce`` or ``unknown``."""
    from bench.generators.genforce import is_genforce

    if isinstance(ckpt, dict) and isinstance(ckpt.get("g_ema"), dict):
        return "rosinality"
    if is_genforce(ckpt):
        return "genforce"
    return "unknown"


def load_generator(path: str | Path) -> torch.nn.Module:
    """Load any supported generator file, choosing the reader by its content (not its extension).

    Formats: rosinality ``.pt``, NVIDIA StyleGAN2-ADA ``.pkl`` (restricted unpickler), genforce ``.pth``
    (StyleGAN2 and StyleGAN v1, zoo and runner layouts), the project's ``.safetensors``. Every error is a
    :class:`CheckpointError` naming the file and the format that was detected.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    kind = sniff(path)
    if kind == "safetensors" or (kind == "unknown" and path.suffix.lower() == ".safetensors"):
        return load_safetensors(path)
    if kind == "pickle":
        from bench.generators.nvidia_pkl import load_nvidia_pkl

        return load_nvidia_pkl(path)
    if kind == "unknown":
        raise CheckpointError(f"{path}: unknown generator format (neither a torch file, a pickle nor safetensors); "
                              "expected rosinality .pt, NVIDIA .pkl, genforce .pth or .safetensors")
    ckpt = read_torch(path)
    layout = torch_layout(ckpt)
    if layout == "rosinality":
        return load_rosinality(path, ckpt=ckpt)
    if layout == "genforce":
        from bench.generators.genforce import load_genforce

        return load_genforce(path, ckpt)
    keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(f"{path}: torch file of unknown layout: expected a dict with a 'g_ema' state dict "
                          f"(rosinality) or 'generator_smooth' / 'generator' / 'models' (genforce), got {keys}")
