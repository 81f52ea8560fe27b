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


class EncoderFileError(ValueError):
    """An encoder (or side) file is missing, unreadable, of an unknown format or of the wrong architecture."""


def read_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: no code in the file runs.

    Raises:
        EncoderFileError: naming the file and ``what`` was expected if it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderFileError(f"{path}: no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is reported with the file name
        raise EncoderFileError(f"{path}: cannot be read as a weights-only torch file ({what}): {err}") from err


def check_keys(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: str | Path,
               fmt: str, optional: Iterable[str] = ()) -> None:
    """Raise :class:`EncoderFileError` unless ``state`` has exactly the expected keys and shapes.

    Args:
        expected: the architecture's ``state_dict()``.
        state: the file's tensors.
        path: the file (named in the error).
        fmt: the format's name (named in the error).
        optional: keys that may be absent (e.g. BatchNorm's ``num_batches_tracked``, unused at inference).
    """
    opt = set(optional)
    missing = sorted(set(expected) - set(state) - opt)
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
             for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = [f"{len(v)} {what}, e.g. {v[:4]}" for what, v in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if v]
    if problems:
        raise EncoderFileError(f"{path}: does not match the {fmt} architecture: " + "; ".join(problems))


def load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, fmt: str,
                 device: torch.device | str, optional: Iterable[str] = ()) -> torch.nn.Module:
    """Check keys and shapes (:func:`check_keys`), load as float32, freeze, eval mode, move to ``device``."""
    expected = module.state_dict()
    check_keys(expected, state, path, fmt, optional)
    full = {k: (state[k] if k in state else expected[k]).to(expected[k].dtype) for k in expected}
    module.load_state_dict(full, strict=True)
    return module.to(device).eval().requires_grad_(False)
