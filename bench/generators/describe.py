"""What a generator file is (``bench zoo inspect``) and its conversion to the project format (``zoo convert``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from bench.generators.checkpoints import CheckpointError, load_generator, load_safetensors, save_safetensors

FAMILY_NAMES = {"stylegan2": "StyleGAN2", "stylegan1": "StyleGAN v1"}


def mapping_depth(gen: torch.nn.Module) -> int:
    """Dense layers in the mapping network."""
    return int(gen.config.n_mlp)


def inspect_generator(path: str | Path) -> dict[str, object]:
    """Load ``path`` (any supported format) and describe it.

    Returns:
        Ordered fields: file, format, family, resolution, z_dim, w_dim, num_ws, mapping layers, channels per
        resolution, w_avg (from the file or computed), then format-specific entries (fp16 resolutions and
        conv_clamp for NVIDIA snapshots, where the genforce generator was found...).
    """
    path = Path(path)
    gen = load_generator(path)
    info = dict(getattr(gen, "checkpoint_info", {}))
    channels = ", ".join(f"{r}:{c}" for r, c in sorted(gen.config.channels.items()))
    out: dict[str, object] = {
        "file": str(path), "format": info.pop("format", getattr(gen, "source_format", "?")),
        "family": FAMILY_NAMES.get(gen.family, gen.family), "resolution": gen.resolution, "z_dim": gen.z_dim,
        "w_dim": gen.w_dim, "num_ws": gen.num_ws, "mapping layers": mapping_depth(gen), "channels": channels,
        "w_avg": info.pop("w_avg", "?"), "parameters": sum(p.numel() for p in gen.parameters()),
    }
    if gen.family == "stylegan1":
        out["final tanh"] = bool(gen.config.final_tanh)
    out.update({k: v for k, v in info.items() if k not in ("source", "source_sha256")})
    return out


def format_inspection(fields: dict[str, object]) -> str:
    """``key: value`` lines for the terminal."""
    width = max(len(k) for k in fields)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in fields.items())


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_generator(path: str | Path, out: str | Path) -> torch.nn.Module:
    """Convert any supported generator file to the project's ``.safetensors`` and check the result.

    The output holds the weights, ``w_avg`` and the constant noise, with the architecture and the source
    (file name, format, SHA-256) in its metadata; it loads with :func:`load_safetensors`, without pickle.
    A render of the same codes through both is compared before returning.

    Raises:
        CheckpointError: naming the file (and its format) if it cannot be read, or if ``out`` is not a
            ``.safetensors`` path.
    """
    path, out = Path(path), Path(out)
    if out.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{out}: the converted file must end in .safetensors")
    gen = load_generator(path)
    extra = {"source": path.name, "source_format": getattr(gen, "source_format", "?"),
             "source_sha256": file_sha256(path), "w_avg": f"from the source ({gen.checkpoint_info.get('w_avg')})"}
    for key in ("fp16 resolutions (original)", "conv_clamp", "generator"):
        if key in gen.checkpoint_info:
            extra[key] = gen.checkpoint_info[key]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(gen, out, extra=extra)
    back = load_safetensors(out)
    ws = gen.w_avg.expand(1, gen.num_ws, -1).clone()
    with torch.no_grad():
        if not torch.equal(gen.synthesis(ws), back.synthesis(ws)):
            raise CheckpointError(f"{out}: the converted generator does not reproduce {path.name}")
    return back
