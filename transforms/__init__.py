"""Geometric transforms over kornia: the spec grammar, per-item parameters, application and protocols.

The grammar (:mod:`transforms.spec`) and the protocols (:mod:`transforms.protocols`) are plain Python and
load at once; the kornia/torch half (:mod:`transforms.geometric`) is imported on first use of one of its
names (PEP 562), so that ``bench ls transforms``, ``bench ls protocols`` and a bad ``--transform`` answer
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from transforms.protocols import (
    PROTOCOLS,
    REFERENCE_RESOLUTION,
    Protocol,
    expand_protocol,
    list_protocols,
    register_protocol,
)
from transforms.spec import GRAMMAR, Op, TransformSpec, TransformSpecError, parse_spec, parse_transforms

_GEOMETRIC = ("FILL_MODES", "MASK_THRESHOLD", "GeometricTransform", "TransformParams", "TransformResult",
              "apply_transform", "invert_params", "sample_params")

__all__ = [
    "FILL_MODES", "GRAMMAR", "MASK_THRESHOLD", "PROTOCOLS", "REFERENCE_RESOLUTION", "GeometricTransform", "Op",
    "Protocol", "TransformParams", "TransformResult", "TransformSpec", "TransformSpecError", "apply_transform",
    "expand_protocol", "invert_params", "list_protocols", "parse_spec", "parse_transforms", "register_protocol",
    "sample_params",
]


def __getattr__(name: str) -> Any:
    if name in _GEOMETRIC:
        value = getattr(importlib.import_module("transforms.geometric"), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'transforms' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
