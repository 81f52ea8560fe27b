"""Edit directions for ``bench`` runs: the world's fitted directions and InterFaceGAN-style files.

A direction is a ``methods.EditDirection``: a unit vector in W (applied to every row a method edits) or a
per-layer (num_ws, w_dim) tensor. Sources:

- the embedded world's ``directions.safetensors`` (one fitted direction per attribute), by name;
- ``.npy`` files (InterFaceGAN boundaries, shape (w_dim,) or (1, w_dim)); pickled ``.npy`` files (such as
  IDinvert's boundary dicts) are refused, because loading them would run code from the file;
- ``.pt`` files (encoder4editing's directions: (1, w_dim) or (1, num_ws, w_dim)), read with
  ``weights_only=True``.

Edit specs read ``NAME_OR_FILE:STRENGTHS``; strengths are a comma list (``age:-3,3``) or evenly spaced
values with both ends included, ``START..STOP/COUNT`` (``age:-2..2/5`` = -2, -1, 0, 1, 2). Unlike transform
sweeps, whose ``/`` gives a step (``rotate:0..30/10``), an edit sweep names how many strengths to apply.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from methods import EditDirection
from transforms.spec import format_number

EDIT_GRAMMAR = ("NAME_OR_FILE:STRENGTHS, strengths as a list or START..STOP/COUNT, e.g. age:-2..2/5 "
                "(= -2,-1,0,1,2), smile:-3,3 or boundaries/age_w.npy:-2,2")
MAX_STRENGTHS = 21


@dataclass(frozen=True)
class EditSpec:
    """A parsed ``--edit`` value: the direction's name or file, and the strengths to apply."""

    direction: str
    strengths: tuple[float, ...]


def parse_edit_spec(text: str) -> EditSpec:
    """Parse ``NAME_OR_FILE:STRENGTHS`` (split at the last ':'); errors quote the spec and the grammar."""
    name, sep, values = text.rpartition(":")
    if not sep or not name.strip() or not values.strip():
        raise ValueError(f"--edit {text!r}: expected {EDIT_GRAMMAR}")
    strengths: list[float] = []
    for item in values.split(","):
        strengths += _strengths(item, text)
    if len(strengths) > MAX_STRENGTHS:
        raise ValueError(f"--edit {text!r}: {len(strengths)} strengths, more than {MAX_STRENGTHS}")
    return EditSpec(name.strip(), tuple(strengths))


def _strengths(item: str, text: str) -> list[float]:
    """One comma item: a number, or ``START..STOP/COUNT`` -> COUNT evenly spaced values, ends included."""
    def bad(why: str) -> ValueError:
        return ValueError(f"--edit {text!r}: {why}; expected {EDIT_GRAMMAR}")

    def number(part: str) -> float:
        try:
            value = float(part)
        except ValueError:
            raise bad(f"{part.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise bad(f"{part.strip()!r} is not a finite number")
        return value

    if ".." not in item:
        return [number(item)]
    start_s, _, rest = item.partition("..")
    stop_s, slash, count_s = rest.partition("/")
    if not slash:
        raise bad(f"sweep {item.strip()!r} needs a count: START..STOP/COUNT")
    start, stop = number(start_s), number(stop_s)
    try:
        count = int(count_s.strip())
    except ValueError:
        raise bad(f"the count of {item.strip()!r} must be a whole number, got {count_s.strip()!r}") from None
    if count < 2 or stop <= start:
        raise bad(f"sweep {item.strip()!r} needs STOP > START and a count of at least 2")
    if count > MAX_STRENGTHS:
        raise bad(f"sweep {item.strip()!r} has {count} values, more than {MAX_STRENGTHS}")
    return [round(start + (stop - start) * i / (count - 1), 10) + 0.0 for i in range(count)]


def format_strengths(strengths: tuple[float, ...]) -> str:
    """``(-2.0, 0.0, 2.0)`` -> ``"-2, 0, 2"`` for the run header."""
    return ", ".join(format_number(v) for v in strengths)


def world_directions() -> dict[str, EditDirection]:
    """The embedded world's directions by attribute name (empty if not shipped)."""
    from safetensors import safe_open

    from bench.world import zoo

    path = zoo.asset_path("directions")
    if path is None:
        return {}
    with safe_open(str(path), framework="pt") as fh:
        vectors = fh.get_tensor("vectors").float()
        meta = fh.metadata() or {}
    names, layers = json.loads(meta["names"]), json.loads(meta.get("layers", "null"))
    return {n: EditDirection(n, vectors[i], None if layers is None else tuple(layers)) for i, n in enumerate(names)}


def _as_direction(array: torch.Tensor, name: str, num_ws: int, w_dim: int, source: str) -> EditDirection:
    t = torch.as_tensor(array).float()
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.shape == (w_dim,):
        return EditDirection(name, t / t.norm())
    if t.shape == (num_ws, w_dim):
        return EditDirection(name, t)
    raise ValueError(f"{source}: direction of shape {tuple(torch.as_tensor(array).shape)} fits neither W "
                     f"({w_dim},) nor W+ ({num_ws}, {w_dim}) of this generator")


def load_direction(path: str | Path, *, num_ws: int, w_dim: int, name: str | None = None) -> EditDirection:
    """Load a direction file (.npy without pickle, .pt weights-only, or a world directions .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such direction file")
    name = name or path.stem
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: pickled .npy files are refused (loading would run code from the file); "
                             "save the boundary as a plain array") from err
        return _as_direction(torch.from_numpy(np.asarray(array, dtype=np.float32)), name, num_ws, w_dim, str(path))
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is reported with the file name
            raise ValueError(f"{path}: cannot be read as a weights-only torch file ({err})") from err
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{path}: expected a tensor, got {type(obj).__name__}")
        return _as_direction(obj, name, num_ws, w_dim, str(path))
    raise ValueError(f"{path}: unknown direction format {path.suffix!r}; expected .npy or .pt")


def resolve_direction(spec: EditSpec, *, num_ws: int, w_dim: int) -> EditDirection:
    """A file path, or the name of one of the world's directions (unknown names get a suggestion)."""
    if spec.direction.endswith((".npy", ".pt", ".pth")) or Path(spec.direction).is_file():
        return load_direction(spec.direction, num_ws=num_ws, w_dim=w_dim)
    known = world_directions()
    if spec.direction not in known:
        close = difflib.get_close_matches(spec.direction, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"--edit {spec.direction!r}: no such direction or file.{hint} "
                         f"Known: {', '.join(known) or 'none shipped'}")
    direction = known[spec.direction]
    if direction.vector.shape[-1] != w_dim:
        raise ValueError(f"--edit {spec.direction!r}: the world's directions are for w_dim "
                         f"{direction.vector.shape[-1]}, this generator has {w_dim}")
    return direction
