"""Checks of ``--param`` hyper-parameter overrides against a preset's declared parameters, without torch.

A parameter's *kind* is what its ``Params`` field declares, as text: ``bool``, ``int``, ``float``, ``str`` or
``tuple:N`` (N numbers). :func:`methods.base.check_overrides` derives the kinds from the dataclass; the
command line's fast check (``bench.choices``) reads them from ``bench.registry_snapshot``, so that a bad
``--param`` is refused in a tenth of a second with the same message.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from typing import Any


def param_kind(hint: Any) -> str:
    """The kind of a ``Params`` field's type hint (``"other"`` for types the checks do not know)."""
    if hint in (bool, int, float, str):
        return hint.__name__
    if typing.get_origin(hint) is tuple:
        return f"tuple:{len(typing.get_args(hint))}"
    return "other"


def check_params(name: str, overrides: Mapping[str, Any], kinds: Mapping[str, str]) -> None:
    """Refuse overrides that preset ``name`` does not have or that do not fit their kind.

    Numbers must not be negative, a learning rate must be positive and Adam's betas lie in [0, 1).

    Raises:
        ValueError: naming the method, the parameter, the value and what was expected.
    """
    known = sorted(kinds)
    for key, value in overrides.items():
        if key not in kinds:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"method {name!r} has no parameter {key!r}.{hint} It has {', '.join(known)}")
        problem = param_problem(key, value, kinds[key])
        if problem:
            raise ValueError(f"method {name!r}: parameter {key}={value!r} {problem}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def param_problem(key: str, value: Any, kind: str) -> str | None:
    """Why ``value`` does not fit a parameter of ``kind`` (None if it does)."""
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "str":
        return None if isinstance(value, str) else "must be text"
    if kind == "other":
        return None
    if kind.startswith("tuple:"):
        n = int(kind.split(":", 1)[1])
        if not (isinstance(value, list | tuple) and len(value) == n and all(_is_number(v) for v in value)):
            return f"must be a list of {n} numbers"
        if key == "betas" and not all(0 <= v < 1 for v in value):
            return "must lie in [0, 1)"
        return None
    if kind == "int" and not (_is_number(value) and float(value).is_integer()):
        return "must be a whole number"
    if kind == "float" and not _is_number(value):
        return "must be a finite number"
    if value < 0:
        return "must not be negative"
    if key == "lr" and value == 0:
        return "must be positive"
    return None


def resolve_method_params(methods: str, method_params: Mapping[str, Any], expand, check) -> dict[str, dict]:
    """``--param`` overrides per preset, aliases expanded (a preset's own entry wins over its alias's).

    Args:
        methods: the run's ``--methods`` text.
        method_params: ``{method or alias: {key: value}}`` as given.
        expand: expands a method list or alias to preset names (raising on unknown names).
        check: ``check(preset, overrides)`` raising ``ValueError`` on a bad override.

    Raises:
        ValueError: an unknown method, a method that is not in this run, an unknown parameter or a value
            that does not fit it, naming the ``--param`` entry.
    """
    run = expand(methods)
    out: dict[str, dict] = {}
    for key, values in sorted(method_params.items(), key=lambda kv: kv[0] in run):
        where = f"--param {key}.{next(iter(values), 'KEY') if isinstance(values, dict) else 'KEY'}"
        try:
            targets = expand(key)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        outside = [t for t in targets if t not in run]
        if outside:
            raise ValueError(f"{where}: method {key!r} is not among this run's methods ({', '.join(run)})")
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a table of parameter values, got {values!r}")
        for t in targets:
            try:
                check(t, values)
            except ValueError as err:
                raise ValueError(f"--param: {err}") from None
            out[t] = out.get(t, {}) | values
    return out
