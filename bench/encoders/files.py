"""The encoder file format shared by every encoder family: safetensors + JSON metadata, strict loading.

A file holds the state dict (floating tensors in float16 unless kept in float32 on purpose) and string
metadata whose values are JSON: ``format`` names the family, the rest describes the architecture.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def save_state(module: torch.nn.Module, path: str | Path, meta: dict[str, Any],
               keep_float32: Iterable[str] = ()) -> None:
    """Save ``module``'s state dict as float16 (except ``keep_float32`` keys) with JSON metadata."""
    keep = set(keep_float32)
    tensors = {k: (v.half() if v.is_floating_point() and k not in keep else v).detach().cpu().contiguous()
               for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})


def read_state(path: str | Path, fmt: str, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read ``(metadata, tensors)`` of an encoder file, checking that its ``format`` is ``fmt``.

    Raises:
        ValueError: naming the file if it is missing, unreadable or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such encoder file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = {k: json.loads(v) for k, v in (fh.metadata() or {}).items()}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # noqa: BLE001 - report any unreadable file by name
        raise ValueError(f"{path}: not a readable {what} file ({err})") from err
    if meta.get("format") != fmt:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise ValueError(f"{path}: not {article} {what} file (format {meta.get('format')!r}, expected {fmt!r})")
    return meta, state


def require_meta(meta: dict[str, Any], keys: Iterable[str], path: str | Path) -> None:
    """Raise ValueError naming the file if architecture entries are missing from the metadata."""
    missing = [k for k in keys if k not in meta]
    if missing:
        raise ValueError(f"{path}: metadata lacks the architecture entries {missing}")


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                device: torch.device | str) -> torch.nn.Module:
    """Load ``state`` into ``module`` with exact keys and shapes (cast to the module's dtypes), frozen, eval."""
    expected = module.state_dict()
    bad = sorted(set(expected) ^ set(state))
    bad += [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in state
            if k in expected and state[k].shape != expected[k].shape]
    if bad:
        raise ValueError(f"{path}: keys or shapes do not match the encoder architecture: {bad[:5]}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return module.to(device).eval().requires_grad_(False)
