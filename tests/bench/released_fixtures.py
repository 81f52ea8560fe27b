"""Helpers for the released-format fixtures (``tests/encoders_fixtures``, made by scripts/make_encoder_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from bench.encoders.reference import seeded_state_dict, state_checksums

FIXTURES = Path(__file__).resolve().parents[1] / "encoders_fixtures"


def fixture(name: str) -> dict:
    """The fixture's record (official keys and shapes, checksums, settings, commit)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def expected(name: str) -> dict[str, torch.Tensor]:
    """The official network's outputs stored by the script."""
    return load_file(str(FIXTURES / f"{name}_expected.safetensors"))


def rebuild_state(record: dict, unit_std: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The seeded weights the official network ran with, checked against the recorded checksums."""
    state = seeded_state_dict(record["shapes"], record["settings"]["seed"], unit_std)
    sums = state_checksums(state)
    bad = [k for k, v in record["checksums"].items() if abs(sums[k] - v) > 1e-6 * max(1.0, abs(v))]
    assert not bad, f"seeded weights differ from the fixture's (recipe or torch RNG changed): {bad[:3]}"
    return state


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, float64."""
    return float((a.double() - b.double()).abs().max())
