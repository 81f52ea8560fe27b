"""What a ``--data`` spec says by itself, read without opening it (torch-free, used while resolving options).

``procfaces:100`` and ``synthetic:8`` name their count, ``folder:D:50`` has a subset suffix, and a made set
(``set:PATH``) is already transformed: :func:`stated_count` and :func:`check_data_options` let the
configuration honour that instead of a profile's default (``bench.config.resolve``).
"""

from __future__ import annotations

import re
from typing import Any

COUNT_KINDS = ("procfaces", "synthetic")
"""Kinds whose argument is the number of items (``KIND:N``)."""
_SUFFIX = re.compile(r"^(.+):(\d+)$")


class DataOptionError(ValueError):
    """An option that cannot apply to the chosen ``--data``."""


def stated_count(spec: str | None) -> tuple[bool, int | None]:
    """Whether ``spec`` decides how many items a run has, and how many (None: all of them).

    ``procfaces:100`` -> ``(True, 100)``; ``folder:D:50`` -> ``(True, 50)``; ``set:PATH`` -> ``(True, None)``
    (a made set is run whole: its records are item x transform); ``folder:D`` or no spec -> ``(False, None)``.
    """
    if not spec or ":" not in spec:
        return False, None
    kind, rest = spec.split(":", 1)
    kind = kind.strip().lower()
    match = _SUFFIX.match(rest)
    if match:
        return True, int(match.group(2))
    if kind in COUNT_KINDS and rest.strip().isdigit():
        return True, int(rest)
    if kind == "set":
        return True, None
    return False, None


def check_data_options(config: Any, defaults: Any) -> None:
    """Refuse options that cannot apply to ``config.data`` (a RunConfig; ``defaults`` is ``RunConfig()``).

    A made set (``set:PATH``) holds transformed images and their masks: ``--transform``, ``--protocol`` and
    ``--fill`` would be silently ignored, so they are refused.

    Raises:
        DataOptionError: Naming the option and the data spec.
    """
    if not (config.data or "").strip().lower().startswith("set:"):
        return
    given = [name for name, on in (("--transform", bool(config.transforms)), ("--protocol", bool(config.protocol)),
                                   ("--fill", config.fill != defaults.fill)) if on]
    if given:
        raise DataOptionError(f"{'/'.join(given)} cannot apply to --data {config.data}: a made set is already "
                              "transformed (bench make-set wrote its transforms); make another set with them, or "
                              "run the source the set was made from")
