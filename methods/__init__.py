"""Inversion methods: one family per module, registered by preset name (see ``methods.base``)."""

from methods.base import (
    EditDirection,
    GeneratorLike,
    Inversion,
    Method,
    PerceptualLike,
    Preset,
    build_method,
    expand_method_names,
    get_preset,
    list_presets,
    register_alias,
    register_preset,
)

__all__ = [
    "EditDirection", "GeneratorLike", "Inversion", "Method", "PerceptualLike", "Preset", "build_method",
    "expand_method_names", "get_preset", "list_presets", "register_alias", "register_preset",
]
