"""Inversion methods: one family per module, registered by preset name (see ``methods.base``).

The names below come from :mod:`methods.base` (which imports torch) on first use (PEP 562), so that
importing a torch-free part of the package costs nothing; ``bench ls methods`` and the command line's name
checks read :mod:`bench.registry_snapshot` instead, which a test keeps equal to the live registry.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EditDirection", "GeneratorLike", "Inversion", "Method", "PerceptualLike", "Preset", "build_method",
    "expand_method_names", "get_preset", "list_presets", "register_alias", "register_preset",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("methods.base"), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'methods' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
