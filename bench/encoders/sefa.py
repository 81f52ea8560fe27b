"""SeFa (Shen and Zhou, CVPR 2021): closed-form edit directions from a generator's own weights.

Following genforce/sefa ``utils.factorize_weight`` for StyleGAN2: for the chosen ws rows (all by
default), take the weight of the style affine that row feeds (genforce ``layer{i}.style.weight``, i.e.
rosinality's ``conv1`` for row 0, ``convs[i-1]`` for rows 1 .. num_ws-2, and the last ``to_rgbs`` for the
last row: genforce's ``output{i//2}`` for ``i = num_layers - 1``), stack their transposes side by side
(w_dim x channels), normalise every column to unit length and take the eigenvectors of ``A A^T``
(w_dim x w_dim). The top-k eigenvectors are the directions; each applies to the rows it was computed from.

Differences from the official code, stated: the eigen-decomposition runs in float64 with ``eigh`` and
the directions are sorted by decreasing eigenvalue (the official takes ``np.linalg.eig``'s float32 order,
which is usually but not necessarily sorted); an eigenvector's sign is arbitrary, so each direction is
signed to make its largest-magnitude entry positive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class SeFaResult:
    """Directions (k, w_dim), unit norm; eigenvalues (k,), decreasing; the ws rows they were taken from."""

    directions: torch.Tensor
    eigenvalues: torch.Tensor
    rows: tuple[int, ...]


def style_weights(generator) -> list[torch.Tensor]:
    """Per ws row, the (channels, w_dim) weight of the style affine that SeFa reads for that row.

    Generators that are not this project's StyleGAN2 may offer ``sefa_style_weights()`` instead.
    """
    if hasattr(generator, "sefa_style_weights"):
        return list(generator.sefa_style_weights())
    try:
        convs = [generator.conv1, *generator.convs]
        last = generator.to_rgbs[-1]
    except AttributeError as err:
        raise ValueError(f"SeFa: {type(generator).__name__} is not a StyleGAN2 generator of this project "
                         "(no conv1/convs/to_rgbs) and offers no sefa_style_weights()") from err
    weights = [c.conv.modulation.weight for c in convs] + [last.conv.modulation.weight]
    if len(weights) != generator.num_ws:
        raise ValueError(f"SeFa: found {len(weights)} style affines for {generator.num_ws} ws rows")
    return [w.detach().float().cpu() for w in weights]


def parse_rows(text: str, num_ws: int) -> tuple[int, ...]:
    """``all``, ``0-3`` or ``0,2,4-5`` -> sorted row indices in [0, num_ws)."""
    if text.strip() == "all":
        return tuple(range(num_ws))
    rows: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            rows.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--layers {text!r}: expected all, N, N-M or a comma list of them") from None
    if not rows or min(rows) < 0 or max(rows) >= num_ws:
        raise ValueError(f"--layers {text!r}: rows must lie in 0..{num_ws - 1}")
    return tuple(sorted(rows))


def sefa(generator, rows: Sequence[int] | None = None, k: int = 5) -> SeFaResult:
    """The top-k SeFa directions of ``generator`` computed from the style affines of ``rows`` (default all)."""
    weights = style_weights(generator)
    rows = tuple(range(len(weights))) if rows is None else tuple(rows)
    a = torch.cat([weights[r].T for r in rows], dim=1).double()
    a = a / a.norm(dim=0, keepdim=True)
    vals, vecs = torch.linalg.eigh(a @ a.T)
    order = vals.argsort(descending=True)[:k]
    dirs = vecs[:, order].T
    sign = torch.sign(dirs.gather(1, dirs.abs().argmax(1, keepdim=True)))
    return SeFaResult((dirs * sign).float(), vals[order].float(), rows)


def save_directions(result: SeFaResult, num_ws: int, out: Path, meta: dict | None = None) -> list[Path]:
    """Write ``OUT/sefa_{i}.pt`` (num_ws, w_dim) per direction (zero outside its rows) and ``OUT/sefa.json``.

    The files are ``bench run --edit OUT/sefa_0.pt:-3,3`` directions (``bench.edits.load_direction``).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, d in enumerate(result.directions):
        full = torch.zeros(num_ws, d.shape[0])
        full[list(result.rows)] = d
        paths.append(out / f"sefa_{i}.pt")
        torch.save(full, paths[-1])
    record = {"method": "SeFa closed-form factorisation (genforce/sefa factorize_weight)", "rows": list(result.rows),
              "eigenvalues": [round(float(v), 6) for v in result.eigenvalues], **(meta or {})}
    (out / "sefa.json").write_text(json.dumps(record, indent=2) + "\n")
    return paths
