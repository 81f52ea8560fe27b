"""Encoders that methods need: training, saving and loading, one module per family.

Every encoder file is a safetensors file whose metadata has a ``format`` key; :func:`load_encoder` reads
it and hands the file to the loader registered for that format. Families: ``basecode`` (F/W+),
``idinvert`` (IDinvert's domain-guided encoder), ``psp`` (pSp's pyramid encoder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

_LOADERS: dict[str, Callable[[Path, torch.device | str], torch.nn.Module]] = {}


def register_encoder_format(fmt: str, loader: Callable[[Path, torch.device | str], torch.nn.Module]) -> None:
    """Register the loader for an encoder file format (the ``format`` entry of its metadata)."""
    _LOADERS[fmt] = loader


def encoder_format(path: str | Path) -> str:
    """The ``format`` recorded in an encoder file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such encoder file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as err:  # noqa: BLE001 - report any unreadable file by name
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    fmt = meta.get("format")
    return json.loads(fmt) if fmt and fmt.startswith('"') else (fmt or "")


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load any registered encoder file (strict keys and shapes), frozen and in eval mode."""
    _register_builtin()
    fmt = encoder_format(path)
    if fmt not in _LOADERS:
        raise ValueError(f"{path}: unknown encoder format {fmt!r}; known: {sorted(_LOADERS)}")
    return _LOADERS[fmt](Path(path), device)


def _register_builtin() -> None:
    from bench.encoders import basecode, idinvert, psp

    for module in (basecode, idinvert, psp):
        register_encoder_format(module.FORMAT, module.load_encoder)
