"""Whether several runs may be pooled into one cell per (method, transform, metric), and what that means.

``bench report A B`` keeps runs apart (each row is ``METHOD [RUN]``); ``--pool`` merges them, but only when
the settings that change the numbers agree: everything in ``config.json`` except what only says where, how
fast or how much (``IGNORED_KEYS``), and the generator, perceptual network and data that ``versions.json``
describes. ``--force`` pools anyway, and the report then lists every difference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.rundir import read_config, read_versions

IGNORED_KEYS = frozenset({
    # where and how fast: never changes a number
    "run_dir", "device", "batch_size", "compile", "lpips_weights", "quiet",
    # how much is run or kept: pooled cells simply hold more rows
    "methods", "transforms", "protocol", "include_identity", "metrics", "edits", "max_samples",
    "save_latents", "seed",
})
"""Leaf keys of ``config.json`` (at any depth) that may differ between pooled runs."""

VERSION_KEYS = ("generator", "perceptual", "data")
"""``versions.json`` descriptions that must agree between pooled runs."""


class PoolingError(ValueError):
    """Runs whose settings differ were asked to be pooled without ``--force``."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def run_settings(run_dir: str | Path) -> dict[str, Any]:
    """The settings of one run that pooling compares: flattened ``config.json`` keys and ``versions.json``.

    Nested keys read ``method_params.im2s.lr``; ``versions.json`` entries read ``versions.generator``.
    Keys whose last part is in :data:`IGNORED_KEYS` are left out.
    """
    config = {k: v for k, v in _flatten(read_config(run_dir)).items() if k.rsplit(".", 1)[-1] not in IGNORED_KEYS}
    versions = read_versions(run_dir)
    config.update({f"versions.{k}": versions.get(k) for k in VERSION_KEYS if k in versions})
    return config


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def setting_differences(run_dirs: Sequence[str | Path], names: Sequence[str]) -> list[str]:
    """One line per setting that is not the same in every run: ``"steps: run_a 20, run_b 10"``.

    A setting recorded by some runs only counts as a difference (shown as ``not recorded``).
    """
    settings = [run_settings(d) for d in run_dirs]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    lines = []
    for key in keys:
        if key.startswith("method_settings.") and not all(key in s for s in settings):
            continue  # a method that only some runs have shares no cell with the others
        values = [s.get(key, "not recorded") for s in settings]
        if any(v != values[0] for v in values[1:]):
            shown = ", ".join(f"{n} {_show(v)}" for n, v in zip(names, values, strict=True))
            lines.append(f"{key}: {shown}")
    return lines


@dataclass(frozen=True)
class PoolPlan:
    """How a report treats several runs.

    Attributes:
        pooled: Whether rows of different runs share cells.
        names: The runs' names, in order.
        differences: Settings that differ between the runs (see :func:`setting_differences`).
        repeated_rows: Pooled rows whose (item, method, transform, seed, metric) occurs in another run too.
    """

    pooled: bool
    names: tuple[str, ...]
    differences: tuple[str, ...] = ()
    repeated_rows: int = 0

    def note(self) -> str:
        """A sentence or two for the report saying whether and what was pooled."""
        runs = ", ".join(self.names)
        if len(self.names) < 2:
            return ""
        if not self.pooled:
            head = (f"{len(self.names)} runs kept apart ({runs}): each row is METHOD [RUN]; "
                    "`bench report --pool` merges runs whose settings agree.")
            if self.differences:
                head += " Settings that differ: " + "; ".join(self.differences) + "."
            return head
        text = f"Pooled {len(self.names)} runs ({runs}): each cell's n counts the ok rows of all of them."
        if self.differences:
            text += " Pooled with --force although these settings differ: " + "; ".join(self.differences) + "."
        else:
            text += " Their settings agree (config.json, and generator, perceptual and data in versions.json)."
        if self.repeated_rows:
            text += (f" {self.repeated_rows} rows repeat an (item, method, transform, seed) of another run, so those"
                     " items count more than once.")
        return text


def plan_pooling(run_dirs: Sequence[str | Path], names: Sequence[str], *, pool: bool, force: bool = False,
                 repeated_rows: int = 0) -> PoolPlan:
    """Decide how several runs are reported.

    Args:
        run_dirs: The run directories.
        names: Their names in the tables (``reports.tables._run_names``).
        pool: Merge the runs into one cell per (method, transform, metric).
        force: Pool even when settings differ.
        repeated_rows: Rows that occur in more than one run (for the note).

    Returns:
        The :class:`PoolPlan`.

    Raises:
        PoolingError: If ``pool`` and settings differ and not ``force``; the message lists the differences.
    """
    differences = tuple(setting_differences(run_dirs, names)) if len(run_dirs) > 1 else ()
    if pool and differences and not force:
        raise PoolingError(f"--pool: runs {', '.join(names)} differ in {'; '.join(differences)} "
                           "(pass --force to pool them anyway)")
    return PoolPlan(pool and len(run_dirs) > 1, tuple(names), differences, repeated_rows if pool else 0)


def repeated_rows(df: Any) -> int:
    """Rows of a merged results frame whose (item, method, transform, seed, metric) also occurs in another run."""
    if "run" not in df.columns or df["run"].nunique() < 2:
        return 0
    keys = ["item", "method", "transform", "seed", "metric"]
    runs_per_key = df.groupby(keys, sort=False)["run"].transform("nunique")
    return int((runs_per_key > 1).sum())
