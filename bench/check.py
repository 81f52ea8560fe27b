"""Regression checks: compare a run's per-(method, transform, metric) means against a committed baseline.

A baseline is a JSON file written from a trusted run by ``bench check RUN_DIR --baseline FILE
--write-baseline --how "COMMAND"``::

    {
      "format": "gan-inversion-bench-baseline/1",
      "how": "bench run --methods im2s ...",     the exact command that made the run
      "date": "...", "run_dir": "...",
      "config": {...}, "versions": {...},         the run's config.json and versions.json
      "tolerances": {"psnr": {"abs": 0.5}, "mse*": {"rel": 0.25}, ...},
      "entries": [{"method": ..., "transform": ..., "metric": ..., "mean": ..., "n": ...,
                   "higher_is_better": ...}, ...]
    }

A metric may move by ``max(abs, rel * |baseline|)`` in either direction. Moving further in its worse
direction (from the run's ``metrics.json``) is a regression; moving further in its better direction is
reported as ``improved`` and passes. A baseline entry that the run lacks fails, and so does an entry
averaged over fewer rows than the baseline (an item that used to succeed now fails). Tolerances come
from the baseline's ``tolerances`` (exact metric names first, then shell-style patterns, in file order),
then from :data:`DEFAULT_TOLERANCES`; a masked metric ``NAME@valid`` falls back to the entries of ``NAME``.
An entry may carry its own ``"tolerance"``, which beats both.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import SPEED_ONLY_KEYS
from reports.rundir import read_config, read_versions, write_atomic
from reports.tables import load_metric_info, load_results, summary_table

FORMAT = "gan-inversion-bench-baseline/1"
MASKED_SUFFIX = "@valid"  # as bench.metrics.base; repeated so that a check does not import torch


class BaselineError(ValueError):
    """A baseline file is missing, malformed, or does not fit the run."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Tolerance:
    """How far a mean may move: ``max(abs, rel * |baseline|)``.

    Attributes:
        abs: Absolute allowance, in the metric's unit (dB for PSNR).
        rel: Allowance as a fraction of the baseline's magnitude (0.25 = 25 %).
    """

    abs: float = 0.0
    rel: float = 0.0

    def __post_init__(self) -> None:
        for name, value in (("abs", self.abs), ("rel", self.rel)):
            if not _is_number(value) or value < 0:
                raise ValueError(f"tolerance {name!r} must be a finite number >= 0, got {value!r}")

    def allowed(self, baseline: float) -> float:
        """The largest move from ``baseline`` that still counts as unchanged."""
        return max(self.abs, self.rel * abs(baseline))

    def describe(self) -> str:
        """Short text, e.g. ``abs 0.5`` or ``rel 25%`` or ``abs 0.005|rel 25%``."""
        parts = ([f"abs {self.abs:g}"] if self.abs else []) + ([f"rel {self.rel * 100:g}%"] if self.rel else [])
        return "|".join(parts) or "exact"

    def to_json(self) -> dict[str, float]:
        """The JSON form stored in baseline files."""
        return {k: v for k, v in (("abs", self.abs), ("rel", self.rel)) if v}

    @classmethod
    def from_json(cls, entry: Any, where: str) -> Tolerance:
        """Parse ``{"abs": x, "rel": y}`` (either key optional), naming ``where`` in errors."""
        if not isinstance(entry, Mapping) or not entry or set(entry) - {"abs", "rel"}:
            raise BaselineError(f'{where}: expected {{"abs": X, "rel": Y}} (either may be left out), got {entry!r}')
        try:
            return cls(abs=entry.get("abs", 0.0), rel=entry.get("rel", 0.0))
        except ValueError as err:
            raise BaselineError(f"{where}: {err}") from err


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    # Chosen so that seed-to-seed noise of a CPU CI run on a few images passes and a real
    # degradation (about 1 dB, or a quarter of a distance) does not.
    "*psnr*": Tolerance(abs=0.5),  # dB
    "*ssim*": Tolerance(abs=0.02),  # also ms-ssim
    "*mse*": Tolerance(abs=1e-6, rel=0.25),  # MSE spans decades: relative
    "*lpips*": Tolerance(abs=0.005, rel=0.25),  # lpips-alex, lpips-vgg, attrnet-lpips
    "*": Tolerance(abs=1e-6, rel=0.10),  # any other metric (editing scores...): 10 %, tiny floor at 0
}
"""Default tolerance per metric pattern (shell-style, first match wins); overridable in the baseline file."""


def _lookup(names: Sequence[str], table: Mapping[str, Tolerance]) -> Tolerance | None:
    for name in names:  # exact names beat patterns, the full name beats its unmasked base
        if name in table:
            return table[name]
    for name in names:
        for pattern, tol in table.items():
            if fnmatch.fnmatchcase(name, pattern):
                return tol
    return None


def resolve_tolerance(metric: str, overrides: Mapping[str, Tolerance] | None = None) -> Tolerance:
    """The tolerance of ``metric``: the baseline's overrides first, then :data:`DEFAULT_TOLERANCES`.

    Args:
        metric: Metric name as in ``results.csv`` (``"psnr"``, ``"psnr@valid"``...).
        overrides: ``{metric name or pattern: Tolerance}`` from the baseline file.

    Returns:
        The first matching tolerance (the ``"*"`` default always matches).
    """
    names = [metric, metric.removesuffix(MASKED_SUFFIX)] if metric.endswith(MASKED_SUFFIX) else [metric]
    found = _lookup(names, overrides or {}) or _lookup(names, DEFAULT_TOLERANCES)
    return found or DEFAULT_TOLERANCES["*"]


@dataclass(frozen=True)
class BaselineEntry:
    """One (method, transform, metric) mean of the baseline run."""

    method: str
    transform: str
    metric: str
    mean: float
    n: int
    higher_is_better: bool
    tolerance: Tolerance | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.method, self.transform, self.metric


@dataclass(frozen=True)
class Baseline:
    """A parsed baseline file.

    Attributes:
        entries: The recorded means.
        tolerances: ``{metric name or pattern: Tolerance}`` overrides, in file order.
        how: Everything else in the file (command, date, config, versions), kept for the record.
    """

    entries: list[BaselineEntry]
    tolerances: dict[str, Tolerance]
    how: dict[str, Any]


def _entry(raw: Any, where: str) -> BaselineEntry:
    if not isinstance(raw, Mapping):
        raise BaselineError(f"{where}: expected an object, got {type(raw).__name__}")
    missing = [k for k in ("method", "transform", "metric", "mean", "higher_is_better") if k not in raw]
    if missing:
        raise BaselineError(f"{where}: missing key(s) {missing}")
    mean, hib, n = raw["mean"], raw["higher_is_better"], raw.get("n", 0)
    problems = {
        "'mean' must be a finite number": not _is_number(mean),
        "'higher_is_better' must be true or false": not isinstance(hib, bool),
        "'n' must be an integer >= 0": not (_is_number(n) and n == int(n) and n >= 0),
    }
    for problem in (p for p, bad in problems.items() if bad):
        raise BaselineError(f"{where}: {problem}; got {dict(raw)!r}")
    tol = Tolerance.from_json(raw["tolerance"], f"{where}.tolerance") if "tolerance" in raw else None
    names = [str(raw[k]) for k in ("method", "transform", "metric")]
    return BaselineEntry(*names, mean=float(mean), n=int(n), higher_is_better=hib, tolerance=tol)


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file.

    Raises:
        BaselineError: Naming the file and the problem (unreadable, not JSON, wrong format, bad entry).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BaselineError(f"baseline {path}: cannot read: {err}") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise BaselineError(f"baseline {path}: expected an object with \"format\": {FORMAT!r}, got {got!r}")
    tolerances = raw.get("tolerances", {})
    entries = raw.get("entries")
    if not isinstance(tolerances, dict):
        raise BaselineError(f"baseline {path}: 'tolerances' must be an object {{metric: {{abs, rel}}}}")
    if not isinstance(entries, list):
        raise BaselineError(f"baseline {path}: 'entries' must be a list")
    tols = {str(k): Tolerance.from_json(v, f"baseline {path}: tolerances[{k!r}]") for k, v in tolerances.items()}
    parsed = [_entry(e, f"baseline {path}: entries[{i}]") for i, e in enumerate(entries)]
    seen: set[tuple[str, str, str]] = set()
    for e in parsed:
        if e.key in seen:
            raise BaselineError(f"baseline {path}: entry {e.key} appears twice")
        seen.add(e.key)
    how = {k: v for k, v in raw.items() if k not in ("entries", "tolerances")}
    return Baseline(parsed, tols, how)


def run_means(run_dir: str | Path) -> dict[tuple[str, str, str], tuple[float, int, bool]]:
    """``{(method, transform, metric): (mean, n, higher_is_better)}`` of one run, available metrics only.

    Cells without an ok value (all failed, or a metric that could not be computed) are left out.
    """
    info = load_metric_info(run_dir)
    summary = summary_table(load_results(run_dir))
    out = {}
    for r in summary.itertuples(index=False):
        metric = str(r.metric)
        if info[metric].available and r.n > 0 and math.isfinite(r.mean):
            out[(str(r.method), str(r.transform), metric)] = (float(r.mean), int(r.n), info[metric].higher_is_better)
    return out


OK, IMPROVED, NEW = "ok", "improved", "new"
REGRESSED, MISSING, FEWER_ROWS = "REGRESSED", "MISSING", "FEWER-ROWS"
FAILING = (REGRESSED, MISSING, FEWER_ROWS)
"""Statuses that make a check fail (upper case, so that they stand out in a CI log)."""


@dataclass(frozen=True)
class Comparison:
    """One row of the diff table. ``baseline``/``now``/``delta`` are NaN where there is no value."""

    method: str
    transform: str
    metric: str
    baseline: float
    now: float
    delta: float
    allowed: float
    tolerance: str
    status: str
    note: str = ""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of :func:`compare`.

    Attributes:
        rows: Baseline entries in file order, then cells that the baseline does not know (``new``).
        config_diff: Keys of ``config.json`` that differ between the baseline's run and this one.
    """

    rows: list[Comparison]
    config_diff: list[str]

    @property
    def failures(self) -> list[Comparison]:
        return [r for r in self.rows if r.status in FAILING]

    @property
    def passed(self) -> bool:
        return not self.failures


def _judge(entry: BaselineEntry, now: float, n_now: int, tol: Tolerance) -> tuple[str, str]:
    allowed = tol.allowed(entry.mean)
    better = (now - entry.mean) * (1.0 if entry.higher_is_better else -1.0)
    status = REGRESSED if better < -allowed else IMPROVED if better > allowed else OK
    if n_now < entry.n and status != REGRESSED:
        status = FEWER_ROWS  # an item that used to succeed now fails: a regression even if the mean holds
    return status, (f"n {entry.n} -> {n_now}" if n_now != entry.n else "")


def _config_diff(baseline: Baseline, run_dir: str | Path) -> list[str]:
    old, new = baseline.how.get("config"), read_config(run_dir)
    if not isinstance(old, dict) or not new:
        return []
    # method_settings follow from the rest (and baselines older than it lack the key)
    return sorted(k for k in set(old) | set(new)
                  if k not in ("run_dir", "method_settings", *SPEED_ONLY_KEYS) and old.get(k) != new.get(k))


def compare(run_dir: str | Path, baseline: Baseline) -> CheckResult:
    """Compare every baseline entry with the run's mean for the same (method, transform, metric).

    Args:
        run_dir: A run directory (``results.csv`` and ``metrics.json`` at least).
        baseline: From :func:`load_baseline`.

    Returns:
        The diff rows and any configuration keys that differ.

    Raises:
        BaselineError: If the run and the baseline disagree on a metric's direction.
        reports.RunDirError: If ``run_dir`` is not a readable run directory.
    """
    means, info = run_means(run_dir), load_metric_info(run_dir)
    rows = []
    for e in baseline.entries:
        tol = e.tolerance or resolve_tolerance(e.metric, baseline.tolerances)
        allowed = tol.allowed(e.mean)
        if e.metric in info and info[e.metric].higher_is_better != e.higher_is_better:
            raise BaselineError(f"metric {e.metric!r} changed direction since the baseline was written; rewrite it")
        if e.key not in means:
            unavailable = e.metric in info and not info[e.metric].available
            note = f"metric unavailable: {info[e.metric].reason}" if unavailable else "no ok value in the run"
            rows.append(Comparison(*e.key, e.mean, math.nan, math.nan, allowed, tol.describe(), MISSING, note))
            continue
        now, n_now, _ = means[e.key]
        status, note = _judge(e, now, n_now, tol)
        rows.append(Comparison(*e.key, e.mean, now, now - e.mean, allowed, tol.describe(), status, note))
    known = {e.key for e in baseline.entries}
    for key, (now, _, _) in means.items():
        if key not in known:
            tol = resolve_tolerance(key[2], baseline.tolerances)
            rows.append(Comparison(*key, math.nan, now, math.nan, math.nan, tol.describe(), NEW, "not in baseline"))
    return CheckResult(rows, _config_diff(baseline, run_dir))


def check(run_dir: str | Path, baseline_path: str | Path) -> CheckResult:
    """Load the baseline file and :func:`compare` the run against it."""
    return compare(run_dir, load_baseline(baseline_path))


def _num(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def format_table(result: CheckResult, changed_only: bool = False) -> str:
    """The diff table as aligned text, followed by a one-line verdict.

    Args:
        result: From :func:`compare`.
        changed_only: Leave out the rows whose status is ``ok``.

    Returns:
        Text with columns method, transform, metric, baseline, now, delta, tolerance, status.
    """
    head = ["method", "transform", "metric", "baseline", "now", "delta", "tolerance", "status"]
    body = [
        [r.method, r.transform, r.metric, _num(r.baseline), _num(r.now), _num(r.delta, signed=True),
         r.tolerance if math.isnan(r.allowed) else f"±{r.allowed:.3g} ({r.tolerance})",
         f"{r.status} ({r.note})" if r.note else r.status]
        for r in result.rows
        if not (changed_only and r.status == OK)
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    numeric = {3, 4, 5}

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs)

    lines = [line(head), line(["-" * w for w in widths]), *map(line, body)]
    counts = {s: sum(r.status == s for r in result.rows) for s in (OK, IMPROVED, NEW, *FAILING)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if result.config_diff:
        lines.append(f"note: the run's configuration differs from the baseline's in {result.config_diff}")
    verdict = "PASS" if result.passed else "FAIL"
    lines.append(f"{verdict}: {len(result.rows)} cells compared ({summary or 'nothing to compare'})")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def make_baseline(run_dir: str | Path, how: str, previous: Baseline | None = None) -> dict[str, Any]:
    """The baseline of a run as a JSON-ready dict.

    Args:
        run_dir: The run to record.
        how: The exact command that made the run (stored so that the baseline can be remade).
        previous: An older baseline whose tolerance overrides and per-entry tolerances are kept.

    Returns:
        The baseline; tolerances are written out for every metric of the run, so the file states them.

    Raises:
        BaselineError: If ``how`` is empty or the run has no ok values.
    """
    if not how or not how.strip():
        raise BaselineError("a baseline needs --how: the exact command that made the run")
    means = run_means(run_dir)
    if not means:
        raise BaselineError(f"{run_dir}: no ok values to record (did the run fail, or not start?)")
    tolerances = dict(previous.tolerances) if previous else {}
    for metric in dict.fromkeys(key[2] for key in means):
        tolerances.setdefault(metric, resolve_tolerance(metric, tolerances))
    old = {e.key: e.tolerance for e in previous.entries if e.tolerance} if previous else {}
    entries = []
    for key, (mean, n, hib) in means.items():
        entry = dict(zip(("method", "transform", "metric"), key, strict=True), mean=mean, n=n, higher_is_better=hib)
        if key in old:
            entry["tolerance"] = old[key].to_json()
        entries.append(entry)
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {"format": FORMAT, "how": how.strip(), "date": date, "run_dir": str(run_dir),
            "config": read_config(run_dir), "versions": read_versions(run_dir),
            "tolerances": {k: v.to_json() for k, v in tolerances.items()}, "entries": entries}


def write_baseline(run_dir: str | Path, path: str | Path, how: str) -> Path:
    """Write (or rewrite) the baseline file of a run, keeping the tolerances of an existing one.

    Args:
        run_dir: The run to record.
        path: The baseline JSON file.
        how: The exact command that made the run.

    Returns:
        ``path``.

    Raises:
        BaselineError: If an existing file at ``path`` is not a valid baseline (its tolerances would be
            lost), or as :func:`make_baseline`.
    """
    path = Path(path)
    previous = load_baseline(path) if path.exists() else None
    data = make_baseline(run_dir, how, previous)
    # One tolerance and one entry per line keep the committed file short and its diffs readable.
    tols = "{\n" + ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in data["tolerances"].items()) + "\n  }"
    entries = "[\n" + ",\n".join(f"    {json.dumps(e)}" for e in data["entries"]) + "\n  ]"
    markers = {"tolerances": ("\x00tolerances\x00", tols), "entries": ("\x00entries\x00", entries)}
    text = json.dumps({**data, **{k: m for k, (m, _) in markers.items()}}, indent=2)
    for marker, block in markers.values():
        text = text.replace(json.dumps(marker), block)
    text += "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
