"""The run directory: configuration, versions, the long results table, timings, latents and samples.

Layout (read by ``reports``, which never touches the models)::

    RUN_DIR/config.json        resolved RunConfig
    RUN_DIR/versions.json      packages, git commit, device, date, generator/perceptual/data descriptions
    RUN_DIR/metrics.json       per metric: higher_is_better, range, description, available, reason
    RUN_DIR/results.csv        item, method, transform, seed, metric, value, status  (one row per metric)
    RUN_DIR/transforms.csv     item, transform, params (JSON: angle, translation, scale, matrix, fill),
                               target (how it was made: render, bilinear, lanczos3, ...), hf_ratio
    RUN_DIR/timing.csv         method, transform, items, seconds
    RUN_DIR/latents/METHOD/TRANSFORM/ITEM.pt   (ITEM made file-name safe)
    RUN_DIR/samples/index.csv  item, transform, kind, path   (+ the PNGs)
    RUN_DIR/journal/NNNNNN.json  one committed batch each (the source of truth for the four tables)
    RUN_DIR/.lock              held by the one writer (``bench.runlock``)

**Integrity.** The unit of work is one (item, method, transform). A batch of units is committed by one
atomic rename of its journal entry, which holds every row of every table for those units; only then are
the four CSV tables appended. A unit is done if and only if a journal entry holds it, so a kill, a full disk
or a torn append at any point loses nothing that was committed and never leaves a partial unit: when a run
starts, the tables are rebuilt from the journal (atomically, only if they differ), stale temporary files are
removed, and the resumed run redoes exactly the uncommitted units. One writer at a time holds the lock.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import io
import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import SPEED_ONLY_KEYS
from bench.data.sets import safe_name
from bench.runlock import RunLock, remove_stale_temporaries

RESULT_COLUMNS = ("item", "method", "transform", "seed", "metric", "value", "status")
TRANSFORM_COLUMNS = ("item", "transform", "params", "target", "hf_ratio")
TIMING_COLUMNS = ("method", "transform", "items", "seconds")
SAMPLE_COLUMNS = ("item", "transform", "kind", "path")
JOURNAL = "journal"

Unit = tuple[str, str, str]  # (item, method, transform)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Re-raise an OSError while writing ``path`` with a message that names it (and says what to do)."""
    try:
        yield
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device while writing {path}; every unit "
                                        "committed so far is kept: free some space and re-run the same command "
                                        "to resume") from err
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can sync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename (synced first if ``sync``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with writing(path):
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if sync:
        _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    atomic_write_bytes(path, text.encode())


def _one_line(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose text values hold no newline (one CSV line per row, so a torn append is one partial line)."""
    return [{k: v.replace("\n", " ") if isinstance(v, str) else v for k, v in r.items()} for r in rows]


def _csv_text(columns: tuple[str, ...], rows: Iterable[dict[str, Any]], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(_one_line(list(rows)))
    return buf.getvalue()


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", errors="replace") as fh:
        return list(csv.DictReader(fh))


@dataclass
class BatchRecord:
    """Everything one batch adds to the run directory, committed in one step.

    Attributes:
        units: the (item, method, transform) units the batch completes (done or failed with a reason).
        results: their ``results.csv`` rows (every metric of every unit).
        transforms: ``transforms.csv`` rows (item, transform, params).
        timing: ``timing.csv`` rows.
        samples: ``samples/index.csv`` rows of the PNGs written for these units.
    """

    units: list[Unit]
    results: list[dict[str, Any]] = field(default_factory=list)
    transforms: list[dict[str, Any]] = field(default_factory=list)
    timing: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"units": [list(u) for u in self.units], "results": self.results, "transforms": self.transforms,
                "timing": self.timing, "samples": self.samples}

    @classmethod
    def from_json(cls, data: Any) -> BatchRecord:
        if not isinstance(data, dict) or not isinstance(data.get("units"), list):
            raise ValueError("not a journal entry (no 'units' list)")
        return cls([tuple(u) for u in data["units"]], *(list(data.get(k, [])) for k in
                                                           ("results", "transforms", "timing", "samples")))


class _View:
    """One CSV table derived from the journal: appended during a run, rebuilt when a run starts.

    ``key`` names the columns that identify a row; a keyed table keeps one row per key (the last one).
    """

    def __init__(self, path: Path, columns: tuple[str, ...], key: tuple[str, ...] | None = None) -> None:
        self.path, self.columns, self.key = path, columns, key
        self.rows: list[dict[str, Any]] = []
        self._keys: set[tuple] = set()

    def _new(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.key is None:
            return list(rows)
        fresh = {}
        for r in rows:
            k = tuple(str(r[c]) for c in self.key)
            if k not in self._keys:
                fresh[k] = r
        self._keys |= set(fresh)
        return list(fresh.values())

    def has(self, *key: str) -> bool:
        return tuple(key) in self._keys

    def rebuild(self, rows: Iterable[dict[str, Any]]) -> None:
        """Set the table to ``rows`` and rewrite the file atomically if its content differs."""
        self.rows, self._keys = [], set()
        self.rows = self._new(rows)
        text = _csv_text(self.columns, self.rows)
        if not self.path.is_file() or self.path.read_bytes() != text.encode():
            atomic_write_text(self.path, text)

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append the rows (keyed tables: only new keys) and sync the file."""
        new = self._new(rows)
        if not new:
            return
        self.rows.extend(new)
        if not self.path.is_file():
            atomic_write_text(self.path, _csv_text(self.columns, self.rows))
            return
        with writing(self.path), self.path.open("a", newline="") as fh:
            fh.write(_csv_text(self.columns, new, header=False))
            fh.flush()
            os.fsync(fh.fileno())


class RunStore:
    """The one writer of a run directory: lock, recovery, and atomic commits of finished batches.

    Use as a context manager (or call :meth:`close`), so that the lock is dropped when the run ends.
    """

    def __init__(self, run_dir: str | Path, log: Callable[[str], None] = lambda m: None) -> None:
        self.dir = Path(run_dir)
        self.log = log
        self.lock = RunLock(self.dir)
        self.lock.acquire()
        try:
            self._recover()
        except BaseException:
            self.lock.release()
            raise

    def _recover(self) -> None:
        for path in remove_stale_temporaries(self.dir):
            self.log(f"removed a temporary file left by an interrupted run: {path}")
        self.journal = self.dir / JOURNAL
        self.results = _View(self.dir / "results.csv", RESULT_COLUMNS)
        self.transforms = _View(self.dir / "transforms.csv", TRANSFORM_COLUMNS, key=("item", "transform"))
        self.timing = _View(self.dir / "timing.csv", TIMING_COLUMNS)
        self.samples = _View(self.dir / "samples" / "index.csv", SAMPLE_COLUMNS, key=("item", "transform", "kind"))
        if not self.journal.is_dir() and (self.dir / "results.csv").is_file():
            self._import_legacy()
        records = self._read_journal()
        self._done: set[Unit] = {u for r in records for u in r.units}
        self._seq = max((int(p.stem) for p in self._entries()), default=0)
        if records or self.results.path.is_file():
            for view, name in ((self.results, "results"), (self.transforms, "transforms"),
                               (self.timing, "timing"), (self.samples, "samples")):
                view.rebuild(row for r in records for row in getattr(r, name))

    def _entries(self) -> list[Path]:
        if not self.journal.is_dir():
            return []
        return sorted(p for p in self.journal.glob("*.json") if p.stem.isdigit())

    def _read_journal(self) -> list[BatchRecord]:
        """Every committed batch in commit order; a damaged entry is set aside (its units are redone)."""
        records, seen = [], set()
        for path in self._entries():
            try:
                record = BatchRecord.from_json(json.loads(path.read_text()))
            except (OSError, UnicodeDecodeError, ValueError) as err:
                path.replace(path.with_suffix(".broken"))
                self.log(f"warning: {path} is damaged ({err}); set aside as {path.with_suffix('.broken').name}, "
                         "its units will be redone")
                continue
            repeated = seen & set(record.units)
            if repeated:  # cannot happen under the lock; kept so that a unit is never counted twice
                self.log(f"warning: {path} repeats {len(repeated)} committed units; its copy is ignored")
                continue
            seen |= set(record.units)
            records.append(record)
        return records

    def _import_legacy(self) -> None:
        """Turn a run directory written before the journal existed into one journal entry.

        A unit counts as complete when it has every metric that its (method, transform) has anywhere in the
        file; incomplete units are dropped (and redone), duplicated rows are kept once.
        """
        rows = _read_csv(self.results.path)
        by_unit: dict[Unit, dict[str, dict]] = {}
        expected: dict[tuple[str, str], set[str]] = {}
        for r in rows:
            if not all(r.get(c) is not None for c in RESULT_COLUMNS):
                continue  # a torn last line
            unit = (r["item"], r["method"], r["transform"])
            by_unit.setdefault(unit, {}).setdefault(r["metric"], r)
            expected.setdefault(unit[1:], set()).add(r["metric"])
        units = [u for u, m in by_unit.items() if set(m) == expected[u[1:]]]
        keep = set(units)
        pairs = {(u[0], u[2]) for u in units}
        record = BatchRecord(
            units, [r for u in units for r in by_unit[u].values()],
            [r for r in _read_csv(self.transforms.path) if (r.get("item"), r.get("transform")) in pairs],
            _read_csv(self.timing.path),
            [r for r in _read_csv(self.samples.path) if (r.get("item"), r.get("transform")) in pairs])
        self._write_entry(0, record)
        self.log(f"{self.dir}: imported {len(keep)} complete units from a results.csv written without a journal"
                 f" ({len(by_unit) - len(keep)} incomplete units will be redone)")

    def _write_entry(self, seq: int, record: BatchRecord) -> None:
        data = json.dumps(record.to_json(), separators=(",", ":")).encode()
        atomic_write_bytes(self.journal / f"{seq:06d}.json", data, sync=True)

    def _next_seq(self) -> int:
        """The number of the next journal entry (each rank of a torchrun job numbers its own: bench.distributed)."""
        return self._seq + 1

    # --- the writer's API -------------------------------------------------------------------------------

    def done(self, item: str, method: str, transform: str) -> bool:
        """True if this (item, method, transform) unit is committed (finished, or failed with its reason)."""
        return (item, method, transform) in self._done

    @property
    def done_units(self) -> frozenset[Unit]:
        """Every committed unit."""
        return frozenset(self._done)

    def has_sample(self, item: str, transform: str, kind: str) -> bool:
        """Whether the sample index already lists this image."""
        return self.samples.has(item, transform, kind)

    def commit(self, record: BatchRecord) -> None:
        """Commit one finished batch: the journal entry (atomic), then the four tables (appended).

        Raises:
            ValueError: if a unit of the batch is already committed (it would be counted twice).
            OSError: the device is full or not writable (the message names the file); what was committed
                before stays committed, and the tables are repaired from the journal when the run resumes.
        """
        again = self._done & set(record.units)
        if again:
            raise ValueError(f"{self.dir}: units already committed, e.g. {sorted(again)[:3]}")
        record = BatchRecord(record.units, *(_one_line(getattr(record, k))
                                             for k in ("results", "transforms", "timing", "samples")))
        seq = self._next_seq()
        self._write_entry(seq, record)
        self._seq = seq
        self._done |= set(record.units)
        self.results.append(record.results)
        self.transforms.append(record.transforms)
        self.timing.append(record.timing)
        self.samples.append(record.samples)

    def add_batch(self, result_rows: list[dict[str, Any]], param_rows: list[dict[str, Any]],
                  timing_row: dict[str, Any] | None, sample_rows: list[dict[str, Any]]) -> None:
        """Commit a batch given as rows; its units are those of ``result_rows``."""
        units = list(dict.fromkeys((r["item"], r["method"], r["transform"]) for r in result_rows))
        self.commit(BatchRecord(units, result_rows, param_rows, [timing_row] if timing_row else [], sample_rows))

    def check_config(self, config: dict[str, Any], item_ids: Sequence[str] | None = None) -> str | None:
        """On resume, refuse a different configuration (naming the keys that differ).

        The number of items (``n``) may change when ``item_ids``, the items the new configuration chooses,
        hold every item with a committed unit: a 25-face run grows to 50 faces without running the 25
        again. Returns a line that says so, or None. (Seeded subsets of a folder are not nested: a larger
        ``n`` may choose other files, and is refused then, naming them.)
        """
        path = self.dir / "config.json"
        if not path.is_file():
            return None
        try:
            old = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot be read ({err}); choose another --run-dir") from err
        config = json.loads(json.dumps(config, default=str))  # as stored: tuples become lists
        # settings and left-out methods follow from the rest (the batch size may be re-probed); each method's
        # settings say whether it ran compiled
        ignore = {"run_dir", "method_settings", "skipped_methods", *SPEED_ONLY_KEYS}
        # a key that the old run's version did not have yet is no difference
        diff = sorted(k for k in set(old) | set(config)
                      if k not in ignore and old.get(k, config.get(k)) != config.get(k))
        if diff == ["n"] and item_ids is not None:
            done = {unit[0] for unit in self._done}
            lost = sorted(done - set(item_ids))
            if not lost:
                return (f"{self.dir}: the run goes from {old.get('n')} to {config.get('n')} items; items with "
                        f"finished units: {len(done)}, all among them, not run again")
            shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
            raise ValueError(f"{self.dir} holds a run of {old.get('n')} items, and {len(lost)} of those with "
                             f"finished units ({shown}) are not among the {config.get('n')} now chosen (a "
                             "folder's seeded subsets are not nested); choose another --run-dir or keep --n "
                             f"{old.get('n')}")
        if diff:
            hint = (" (protocol runs use the 256 px world since 2026-12-07; resume a 64 px world run with "
                    "--generator world64)" if "generator" in diff and old.get("generator") is None
                    and config.get("generator") == "world256" and config.get("protocol") else "")
            raise ValueError(f"{self.dir} holds a run with a different configuration (differs in {diff}){hint}; "
                             "choose another --run-dir or delete that folder")

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Write ``RUN_DIR/name`` as indented JSON, atomically."""
        atomic_write_text(self.dir / name, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")

    def save_latents(self, method: str, transform_slug: str, item: str, latents: dict[str, Any]) -> None:
        """Save one item's latent tensors (CPU) to ``latents/METHOD/TRANSFORM/ITEM.pt``, atomically."""
        import torch

        path = self.dir / "latents" / method / transform_slug / f"{safe_name(item)}.pt"
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().clone() for k, v in latents.items()}, buf)
        atomic_write_bytes(path, buf.getvalue())

    def reload(self) -> None:
        """Re-read the journal and rebuild the tables (after other processes committed into it, under this lock)."""
        self._recover()

    def close(self) -> None:
        """Release the run directory's lock."""
        self.lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_tables(run_dir: str | Path) -> bool:
    """Rebuild a run directory's tables from its journal, unless a run holds it now; True if done.

    ``bench report`` and ``bench check`` call this first, so that a run killed mid-append reads whole.
    """
    from bench.runlock import RunDirBusy

    if not (Path(run_dir) / JOURNAL).is_dir():
        return False
    try:
        RunStore(run_dir).close()
    except RunDirBusy:
        return False
    return True


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


def versions(device: Any, **descriptions: str) -> dict[str, Any]:
    """Package versions, git commit, device and date, plus free-text descriptions of the run's parts."""
    from importlib import metadata

    import torch

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
