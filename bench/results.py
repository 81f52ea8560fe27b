"""The run directory: configuration, versions, the long results table, timings, latents and samples.

Layout (read by ``reports``, which never touches the models)::

    RUN_DIR/config.json        resolved RunConfig
    RUN_DIR/versions.json      packages, git commit, device, date, generator/perceptual/data descriptions
    RUN_DIR/metrics.json       per metric: higher_is_better, range, description, available, reason
    RUN_DIR/results.csv        item, method, transform, seed, metric, value, status  (one row per metric)
    RUN_DIR/transforms.csv     item, transform, params (JSON: angle, translation, scale, matrix, fill)
    RUN_DIR/timing.csv         method, transform, items, seconds
    RUN_DIR/latents/METHOD/TRANSFORM/ITEM.pt   (ITEM made file-name safe)
    RUN_DIR/samples/index.csv  item, transform, kind, path   (+ the PNGs)

Every table is flushed after each finished batch, so a killed run loses at most the batch in flight, and
:meth:`RunStore.done` tells a resumed run what to skip. ``results.csv`` only grows, so its new rows are
appended (and synced); a line left half-written by a kill is cut off when the run resumes. The small keyed
tables are rewritten atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from bench.data.sets import safe_name

RESULT_COLUMNS = ("item", "method", "transform", "seed", "metric", "value", "status")
TRANSFORM_COLUMNS = ("item", "transform", "params")
TIMING_COLUMNS = ("method", "transform", "items", "seconds")
SAMPLE_COLUMNS = ("item", "transform", "kind", "path")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_text(columns: tuple[str, ...], rows: Iterable[dict[str, Any]], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    # one line per row (a failure message could hold a newline), so a torn append is one partial line
    writer.writerows({k: v.replace("\n", " ") if isinstance(v, str) else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


class _Table:
    """A CSV table held in memory and rewritten atomically on every flush."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path, self.columns = path, columns
        self.rows: list[dict[str, Any]] = _read_csv(path)

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def flush(self) -> None:
        atomic_write_text(self.path, _csv_text(self.columns, self.rows))


class _AppendTable(_Table):
    """A CSV table that only grows: a flush appends the rows added since the last one and syncs the file.

    Rewriting a large results table after every batch would cost time quadratic in the run's length.
    """

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        _cut_partial_line(path)
        super().__init__(path, columns)
        self._written = len(self.rows)

    def flush(self) -> None:
        if not self.path.is_file():
            atomic_write_text(self.path, _csv_text(self.columns, self.rows))
        else:
            with self.path.open("a", newline="") as fh:
                fh.write(_csv_text(self.columns, self.rows[self._written :], header=False))
                fh.flush()
                os.fsync(fh.fileno())
        self._written = len(self.rows)


def _cut_partial_line(path: Path) -> None:
    """Drop a last line without its newline (an append cut short by a kill)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


class RunStore:
    """Writes (and, on resume, re-reads) one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.results = _AppendTable(self.dir / "results.csv", RESULT_COLUMNS)
        self.transforms = _Table(self.dir / "transforms.csv", TRANSFORM_COLUMNS)
        self.timing = _Table(self.dir / "timing.csv", TIMING_COLUMNS)
        self.samples = _Table(self.dir / "samples" / "index.csv", SAMPLE_COLUMNS)
        self._done = {(r["item"], r["method"], r["transform"]) for r in self.results.rows}
        self._params_done = {(r["item"], r["transform"]) for r in self.transforms.rows}

    def done(self, item: str, method: str, transform: str) -> bool:
        """True if this (item, method, transform) already has results."""
        return (item, method, transform) in self._done

    def check_config(self, config: dict[str, Any]) -> None:
        """On resume, refuse a different configuration (naming the keys that differ)."""
        path = self.dir / "config.json"
        if not path.is_file():
            return
        old = json.loads(path.read_text())
        config = json.loads(json.dumps(config, default=str))  # as stored: tuples become lists
        ignore = {"run_dir"}
        # a key that the old run's version did not have yet is no difference
        diff = sorted(k for k in set(old) | set(config)
                      if k not in ignore and old.get(k, config.get(k)) != config.get(k))
        if diff:
            raise ValueError(f"{self.dir} holds a run with a different configuration (differs in {diff}); "
                             "choose another --run-dir or delete that folder")

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Write ``RUN_DIR/name`` as indented JSON, atomically."""
        atomic_write_text(self.dir / name, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")

    def add_batch(self, result_rows: list[dict[str, Any]], param_rows: list[dict[str, Any]],
                  timing_row: dict[str, Any] | None, sample_rows: list[dict[str, Any]]) -> None:
        """Record one finished batch and flush every table it touched.

        Results are flushed first: they mark the batch as done, so a run killed between the flushes is
        not redone on resume and no row is duplicated (at worst that batch's timing or sample-index rows are
        missing). Parameters and sample rows are keyed, so a repeated row replaces the old one.
        """
        self.results.extend(result_rows)
        self.results.flush()
        self._done |= {(r["item"], r["method"], r["transform"]) for r in result_rows}
        new_params = [r for r in param_rows if (r["item"], r["transform"]) not in self._params_done]
        self._params_done |= {(r["item"], r["transform"]) for r in new_params}
        if new_params:
            self.transforms.extend(new_params)
            self.transforms.flush()
        if sample_rows:
            keys = {(r["item"], r["transform"], r["kind"]) for r in sample_rows}
            self.samples.rows = [r for r in self.samples.rows if (r["item"], r["transform"], r["kind"]) not in keys]
            self.samples.extend(sample_rows)
            self.samples.flush()
        if timing_row is not None:
            self.timing.extend([timing_row])
            self.timing.flush()

    def save_latents(self, method: str, transform_slug: str, item: str, latents: dict[str, torch.Tensor]) -> None:
        """Save one item's latent tensors (CPU) to ``latents/METHOD/TRANSFORM/ITEM.pt``."""
        path = self.dir / "latents" / method / transform_slug / f"{safe_name(item)}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({k: v.detach().cpu().clone() for k, v in latents.items()}, tmp)
        os.replace(tmp, path)


def git_commit() -> str:
    """The repository commit of the installed code (``+dirty`` if modified), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions(device: torch.device, **descriptions: str) -> dict[str, Any]:
    """Package versions, git commit, device and date, plus free-text descriptions of the run's parts."""
    from importlib import metadata

    packages = {}
    for name in ("torch", "kornia", "lpips", "numpy", "pandas", "scipy", "matplotlib", "click"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    dev = str(device)
    if device.type == "cuda":
        dev += f" ({torch.cuda.get_device_name(device)})"
    return {"packages": packages, "python": platform.python_version(), "git_commit": git_commit(),
            "device": dev, "host": platform.node(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **descriptions}
