"""Geometric transforms over kornia: the spec grammar, per-item parameters, application and protocols."""

from transforms.geometric import (
    FILL_MODES,
    MASK_THRESHOLD,
    GeometricTransform,
    TransformParams,
    TransformResult,
    apply_transform,
    invert_params,
    sample_params,
)
from transforms.protocols import (
    PROTOCOLS,
    REFERENCE_RESOLUTION,
    Protocol,
    expand_protocol,
    list_protocols,
    register_protocol,
)
from transforms.spec import GRAMMAR, Op, TransformSpec, TransformSpecError, parse_spec, parse_transforms

__all__ = [
    "FILL_MODES",
    "GRAMMAR",
    "MASK_THRESHOLD",
    "PROTOCOLS",
    "REFERENCE_RESOLUTION",
    "GeometricTransform",
    "Op",
    "Protocol",
    "TransformParams",
    "TransformResult",
    "TransformSpec",
    "TransformSpecError",
    "apply_transform",
    "expand_protocol",
    "invert_params",
    "list_protocols",
    "parse_spec",
    "parse_transforms",
    "register_protocol",
    "sample_params",
]
