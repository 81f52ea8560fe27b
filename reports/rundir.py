"""Read the files of one run directory (the contract between the runner and the report stage).

The report stage reads only these files, never models. Layout (written by the runner)::

    RUN_DIR/config.json  versions.json  metrics.json  results.csv  transforms.csv  timing.csv
    RUN_DIR/samples/index.csv  RUN_DIR/samples/*.png

``results.csv`` and ``metrics.json`` are required (they make a directory a run directory); the
others are read when present. Every reader raises :class:`RunDirError` naming the file and the problem.
:func:`write_atomic` is the one writer the report stage uses for its own outputs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

REQUIRED_FILES = ("results.csv", "metrics.json")
RESULT_COLUMNS = ("item", "method", "transform", "seed", "metric", "value", "status")
SAMPLE_COLUMNS = ("item", "transform", "kind", "path")
TIMING_COLUMNS = ("method", "transform", "items", "seconds")


class RunDirError(ValueError):
    """A directory is not a run directory, or one of its files is malformed."""


@dataclass(frozen=True)
class MetricInfo:
    """What ``metrics.json`` says about one metric.

    Attributes:
        name: Metric name as it appears in ``results.csv`` (``"psnr"``, ``"psnr@valid"``...).
        higher_is_better: Direction used for ↑/↓ and for marking the best cell.
        range: ``(lo, hi)`` value range, or ``None`` when not declared.
        description: Free text.
        available: ``False`` when the metric could not be computed (for example missing weights).
        reason: Why it is unavailable (empty when available).
    """

    name: str
    higher_is_better: bool
    range: tuple[float, float] | None = None
    description: str = ""
    available: bool = True
    reason: str = ""

    @classmethod
    def from_json(cls, name: str, entry: Any, source: str = "metrics.json") -> MetricInfo:
        """Build from one ``metrics.json`` entry, raising :class:`RunDirError` on a malformed one."""
        if isinstance(entry, MetricInfo):
            return entry
        if not isinstance(entry, Mapping):
            raise RunDirError(f"{source}: entry for metric {name!r} must be an object, got {type(entry).__name__}")
        hib = entry.get("higher_is_better")
        if not isinstance(hib, bool):
            raise RunDirError(f"{source}: metric {name!r} needs a boolean 'higher_is_better', got {hib!r}")
        rng = entry.get("range")
        if rng is not None:
            if not isinstance(rng, (list, tuple)) or len(rng) != 2:
                raise RunDirError(f"{source}: metric {name!r} 'range' must be [lo, hi], got {rng!r}")
            rng = (float(rng[0]), float(rng[1]))
        available = entry.get("available", True)
        if not isinstance(available, bool):
            raise RunDirError(f"{source}: metric {name!r} 'available' must be a boolean, got {available!r}")
        return cls(name, hib, rng, str(entry.get("description", "")), available, str(entry.get("reason", "")))


def check_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a :class:`Path` after checking that it is a run directory.

    Raises:
        RunDirError: If the directory does not exist or lacks ``results.csv`` / ``metrics.json``.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} does not exist or is not a directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise RunDirError(
            f"{str(path)!r} is not a run directory: missing {', '.join(missing)} "
            f"(a run directory holds {', '.join(REQUIRED_FILES)} written by `bench run`)"
        )
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"cannot read {path}: {err}") from err


def _read_csv(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    """Read a CSV as strings (so that item ids like ``007`` or ``NA`` survive) and check its columns."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=list(columns), dtype=str)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise RunDirError(f"cannot read {path}: {err}") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def _to_float(text: str) -> float:
    # float() accepts "nan", "inf", "-inf" as the runner writes them; pandas.to_numeric does not.
    return math.nan if text.strip() == "" else float(text)


def _numeric(df: pd.DataFrame, column: str, path: Path) -> pd.Series:
    try:
        return df[column].map(_to_float).astype("float64")
    except ValueError as err:
        raise RunDirError(f"{path}: column {column!r} must be numeric: {err}") from err


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """Read ``results.csv`` (long format) with ``value`` as float64 and the other columns as strings.

    Args:
        run_dir: A run directory.

    Returns:
        DataFrame with columns ``item, method, transform, seed, metric, value, status`` (plus any
        extra columns the runner wrote), rows in file order (the run order).
    """
    path = check_run_dir(run_dir) / "results.csv"
    df = _read_csv(path, RESULT_COLUMNS)
    _check_complete_rows(df, path)
    df["value"] = _numeric(df, "value", path)
    df["status"] = df["status"].str.strip()
    _check_no_duplicates(df, path)
    return df


UNIT_KEY = ("item", "method", "transform", "seed", "metric")


def _check_complete_rows(df: pd.DataFrame, path: Path) -> None:
    """Refuse a row cut short (a run killed while appending leaves one), naming its line."""
    torn = df[(df[["method", "transform", "metric", "status"]] == "").any(axis=1)]
    if not torn.empty:
        line = int(torn.index[0]) + 2  # the header is line 1
        raise RunDirError(f"{path}: line {line} is incomplete (a run was interrupted while writing it); "
                          f"re-run the same `bench run ... --run-dir {path.parent}` (or `bench report` once no run "
                          "holds it), which repairs the table from the run's journal")


def _check_no_duplicates(df: pd.DataFrame, path: Path) -> None:
    """Refuse a table that holds a unit's row twice (two writers at once): it would be counted twice."""
    dup = df.duplicated(list(UNIT_KEY), keep="first")
    if dup.any():
        first = df[dup].iloc[0]
        units = df[dup][["item", "method", "transform"]].drop_duplicates()
        raise RunDirError(f"{path}: {int(dup.sum())} rows appear twice ({len(units)} units, e.g. item "
                          f"{first['item']!r}, method {first['method']!r}, transform {first['transform']!r}): the "
                          "directory was written by two runs at once; the report refuses to count them twice")


def read_metrics(run_dir: str | Path) -> dict[str, MetricInfo]:
    """Read ``metrics.json`` into ``{name: MetricInfo}`` (file order kept)."""
    path = check_run_dir(run_dir) / "metrics.json"
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise RunDirError(f"{path}: expected an object {{metric: info}}, got {type(raw).__name__}")
    return {name: MetricInfo.from_json(name, entry, str(path)) for name, entry in raw.items()}


def _read_optional_json(run_dir: str | Path, name: str) -> dict[str, Any]:
    path = Path(run_dir) / name
    if not path.is_file():
        return {}
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def read_versions(run_dir: str | Path) -> dict[str, Any]:
    """Read ``versions.json`` (empty dict when absent)."""
    return _read_optional_json(check_run_dir(run_dir), "versions.json")


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read ``config.json`` (empty dict when absent)."""
    return _read_optional_json(check_run_dir(run_dir), "config.json")


def read_timing(run_dir: str | Path) -> pd.DataFrame:
    """Read ``timing.csv`` (``method, transform, items, seconds``); empty frame when absent."""
    path = check_run_dir(run_dir) / "timing.csv"
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=str) for c in TIMING_COLUMNS})
    df = _read_csv(path, TIMING_COLUMNS)
    for column in ("items", "seconds"):
        df[column] = _numeric(df, column, path)
    return df


def read_sample_index(run_dir: str | Path) -> pd.DataFrame:
    """Read ``samples/index.csv`` (``item, transform, kind, path``); empty frame when absent.

    ``path`` is relative to ``RUN_DIR/samples``; use :func:`sample_path` to resolve it.
    """
    path = check_run_dir(run_dir) / "samples" / "index.csv"
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=str) for c in SAMPLE_COLUMNS})
    return _read_csv(path, SAMPLE_COLUMNS)


def sample_path(run_dir: str | Path, relative: str) -> Path:
    """Resolve a ``samples/index.csv`` path against ``RUN_DIR/samples``."""
    return Path(run_dir) / "samples" / relative


def run_name(run_dir: str | Path) -> str:
    """Name of a run in merged tables: the folder name."""
    return Path(run_dir).resolve().name


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A report being regenerated is thus never seen half-written. Parent folders are created.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename and hide the report from other users.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
