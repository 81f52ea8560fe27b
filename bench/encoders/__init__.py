"""Encoders that methods need: training, saving and loading, one module per family.

Two kinds of file load:

- the project's own encoder files: safetensors whose metadata has a ``format`` key (:func:`load_encoder`
  hands the file to the loader registered for it). Families: ``basecode`` (F/W+), ``idinvert``
  (IDinvert's domain-guided encoder), ``psp`` (pSp's pyramid encoder). Files written by ``bench
  train-encoder`` also record the recipe and the hash of the generator they were trained for
  (``bench.encoders.provenance``).
- the files the papers released (``.pt`` / ``.pth``, read with ``weights_only=True``): BDInvert's
  base-code encoder (``bench.encoders.bdinvert``), pSp and e4e checkpoints (``bench.encoders.psp_release``)
  and IDinvert's encoder (``bench.encoders.idinvert_release``), recognised by their contents.

Every loaded encoder carries ``family`` (which methods it serves) and ``source`` (a short description).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from bench.encoders.files import EncoderFileError, read_torch_file

_LOADERS: dict[str, Callable[[Path, torch.device | str], torch.nn.Module]] = {}
_FAMILIES: dict[str, str] = {}
# which encoder family each method preset needs
METHOD_FAMILIES = {"fwplus8": "basecode", "fwplus16": "basecode", "idinvert": "idinvert", "psp": "psp"}
RELEASED_SUFFIXES = (".pt", ".pth", ".ckpt")


def register_encoder_format(fmt: str, loader: Callable[[Path, torch.device | str], torch.nn.Module],
                            family: str = "") -> None:
    """Register the loader for an encoder file format (the ``format`` entry of its metadata)."""
    _LOADERS[fmt] = loader
    _FAMILIES[fmt] = family


def encoder_metadata(path: str | Path) -> dict:
    """The JSON-decoded metadata of a project encoder file (``format``, architecture, provenance)."""
    path = Path(path)
    if not path.is_file():
        raise EncoderFileError(f"{path}: no such encoder file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except Exception as err:  # noqa: BLE001 - report any unreadable file by name
        raise EncoderFileError(f"{path}: not a readable safetensors file ({err})") from err
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def encoder_format(path: str | Path) -> str:
    """The ``format`` recorded in an encoder file's metadata."""
    return str(encoder_metadata(path).get("format") or "")


def load_encoder(path: str | Path, device: torch.device | str = "cpu", *,
                 method: str | None = None) -> torch.nn.Module:
    """Load any supported encoder file (strict keys and shapes), frozen and in eval mode.

    Args:
        path: a project ``.safetensors`` encoder or a released ``.pt``/``.pth`` file.
        device: where the encoder goes.
        method: the preset it is for (checks that the file is of the family the method needs; for F/W+
            also fixes the base size of a released encoder whose file does not say it).

    Returns:
        The encoder, with ``family``, ``source`` and (project files) ``metadata`` attributes.
    """
    path = Path(path)
    if path.suffix.lower() in RELEASED_SUFFIXES:
        enc = _load_released(path, device, method)
    else:
        _register_builtin()
        meta = encoder_metadata(path)
        fmt = str(meta.get("format") or "")
        if fmt not in _LOADERS:
            raise EncoderFileError(f"{path}: unknown encoder format {fmt!r}; known: {sorted(_LOADERS)} and the "
                                   f"released {', '.join(RELEASED_SUFFIXES)} files of BDInvert, pSp/e4e and IDinvert")
        enc = _LOADERS[fmt](path, device)
        enc.family, enc.metadata = _FAMILIES[fmt], meta
        enc.source = f"{path.name} ({fmt}" + (f", recipe {meta['recipe']['name']})" if "recipe" in meta else ")")
    if method is not None:
        want = METHOD_FAMILIES.get(method)
        if want is not None and enc.family != want:
            raise EncoderFileError(f"{path}: a {enc.family} encoder, but method {method!r} needs a {want} encoder")
    return enc


def _load_released(path: Path, device: torch.device | str, method: str | None) -> torch.nn.Module:
    """Recognise a released checkpoint by its contents and load it."""
    from bench.encoders import bdinvert, idinvert_release, psp_release

    obj = read_torch_file(path, "encoder")
    if bdinvert.is_bdinvert_checkpoint(obj):
        base = int(method[len("fwplus"):]) if method in ("fwplus8", "fwplus16") else None
        named = bdinvert.base_res_from_name(path)
        if base is not None and named is not None and named != base:
            raise EncoderFileError(f"{path}: the file name says base size {named}, method {method!r} needs {base}")
        return bdinvert.encoder_from_checkpoint(obj, path, device, base_res=named or base)
    if psp_release.is_psp_checkpoint(obj):
        return psp_release.encoder_from_checkpoint(obj, path, device)
    if idinvert_release.is_idinvert_encoder(obj):
        return idinvert_release.encoder_from_state(obj, path, device)
    keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
    raise EncoderFileError(f"{path}: not a known released encoder (BDInvert {{'encoder': ...}}, pSp/e4e "
                           f"{{'state_dict', 'opts', 'latent_avg'}}, IDinvert encoder state dict); top level: {keys}")


def _register_builtin() -> None:
    from bench.encoders import basecode, idinvert, psp

    for module, family in ((basecode, "basecode"), (idinvert, "idinvert"), (psp, "psp")):
        register_encoder_format(module.FORMAT, module.load_encoder, family)
