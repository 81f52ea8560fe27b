"""The run directory store: journal commits, recovery of the tables, the lock, stale files, legacy runs."""

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

from bench.results import RESULT_COLUMNS, BatchRecord, RunStore
from bench.runlock import RunDirBusy


def _rows(item, n=3, transform="identity"):
    return [{"item": item, "method": "im2s", "transform": transform, "seed": 1, "metric": f"m{i}",
             "value": float(i) + 0.25, "status": "ok"} for i in range(n)]


def _record(item, transform="identity"):
    return BatchRecord([(item, "im2s", transform)], _rows(item, transform=transform),
                       [{"item": item, "transform": transform, "params": "{}"}],
                       [{"method": "im2s", "transform": transform, "items": 1, "seconds": 0.5}],
                       [{"item": item, "transform": transform, "kind": "input", "path": f"{item}.png"}])


def _lines(path):
    return path.read_text().splitlines()


def test_results_are_appended_and_read_back(tmp_path):
    with RunStore(tmp_path / "r") as store:
        store.add_batch(_rows("a"), [], None, [])
        store.add_batch(_rows("b"), [], None, [])
    text = (tmp_path / "r" / "results.csv").read_text()
    assert text.count("item,method") == 1 and text.count("\n") == 1 + 6
    with RunStore(tmp_path / "r") as again:
        assert again.done("a", "im2s", "identity") and again.done("b", "im2s", "identity")
        assert len(again.results.rows) == 6
    assert (tmp_path / "r" / "results.csv").read_text() == text  # an intact table is not rewritten


def test_a_torn_append_is_repaired_from_the_journal(tmp_path):
    with RunStore(tmp_path / "r") as store:
        store.commit(_record("a"))
        store.commit(_record("b"))
    path = tmp_path / "r" / "results.csv"
    full = path.read_text()
    path.write_text(full[: len(full) - 20])  # the end of b's rows torn off
    with RunStore(tmp_path / "r") as again:
        assert again.done("b", "im2s", "identity")
    assert path.read_text() == full


def test_a_results_file_cut_at_any_byte_is_rebuilt(tmp_path):
    with RunStore(tmp_path / "r") as store:
        for item in "abcdef":
            store.commit(_record(item))
    tables = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*.csv")}
    for cut in (0, 1, 40, 100, 1000):  # as the issue's `head -c 1000 results.csv > t && mv t results.csv`
        for p, data in tables.items():
            p.write_bytes(data[:cut])
        RunStore(tmp_path / "r").close()
        assert {p: p.read_bytes() for p in tables} == tables


def test_deleted_side_tables_come_back(tmp_path):
    with RunStore(tmp_path / "r") as store:
        store.commit(_record("a"))
    for name in ("transforms.csv", "timing.csv", "samples/index.csv"):
        (tmp_path / "r" / name).unlink()
    RunStore(tmp_path / "r").close()
    assert len(_lines(tmp_path / "r" / "transforms.csv")) == 2
    assert len(_lines(tmp_path / "r" / "timing.csv")) == 2
    assert len(_lines(tmp_path / "r" / "samples" / "index.csv")) == 2


def test_a_unit_is_never_committed_twice(tmp_path):
    with RunStore(tmp_path / "r") as store:
        store.commit(_record("a"))
        with pytest.raises(ValueError, match="already committed"):
            store.commit(_record("a"))
    assert len(_lines(tmp_path / "r" / "results.csv")) == 1 + 3


def test_keyed_tables_keep_one_row_per_key(tmp_path):
    with RunStore(tmp_path / "r") as store:
        store.commit(_record("a"))
        other = _record("a")
        other.units = [("a", "w", "identity")]
        other.results = [r | {"method": "w"} for r in other.results]
        store.commit(other)  # same item and transform under another method: params and input once
    assert len(_lines(tmp_path / "r" / "transforms.csv")) == 2
    assert len(_lines(tmp_path / "r" / "samples" / "index.csv")) == 2
    assert len(_lines(tmp_path / "r" / "results.csv")) == 1 + 6


def test_a_failure_message_with_a_newline_stays_on_one_line(tmp_path):
    rows = _rows("a", 1)
    rows[0] |= {"status": "failed: out of memory\nsecond line", "value": float("nan")}
    with RunStore(tmp_path / "r") as store:
        store.add_batch(rows, [], None, [])
    assert (tmp_path / "r" / "results.csv").read_text().count("\n") == 2
    with RunStore(tmp_path / "r") as again:
        assert again.results.rows[0]["status"] == "failed: out of memory second line"


def test_disk_full_in_the_journal_commits_nothing(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "r")
    store.commit(_record("a"))
    real_open = type(tmp_path).open

    def full(self, mode="r", *args, **kwargs):
        if "journal" in str(self) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "open", full)
    with pytest.raises(OSError, match=r"no space left.*journal.*re-run the same command"):
        store.commit(_record("b"))
    monkeypatch.undo()
    store.close()
    with RunStore(tmp_path / "r") as again:
        assert again.done("a", "im2s", "identity") and not again.done("b", "im2s", "identity")
    assert not [p for p in (tmp_path / "r").rglob(".*tmp*")]


def test_disk_full_in_the_table_append_keeps_the_commit(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "r")
    store.commit(_record("a"))
    real_open = type(tmp_path).open

    def torn(self, mode="r", *args, **kwargs):
        fh = real_open(self, mode, *args, **kwargs)
        if self.name == "results.csv" and "a" in mode:
            def write(text):  # the append stops part-way, as at a full page boundary
                fh.__class__.write(fh, text[: len(text) // 2])
                fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = write
        return fh

    monkeypatch.setattr(type(tmp_path), "open", torn)
    with pytest.raises(OSError, match=r"no space left.*results\.csv"):
        store.commit(_record("b"))
    monkeypatch.undo()
    store.close()
    with RunStore(tmp_path / "r") as again:
        assert again.done("b", "im2s", "identity")
    assert len(_lines(tmp_path / "r" / "results.csv")) == 1 + 6


def test_stale_temporary_files_are_removed_at_start(tmp_path):
    run = tmp_path / "r"
    with RunStore(run) as store:
        store.commit(_record("a"))
    stale = [run / ".versions.json.tmp123", run / ".timing.csv.tmp99", run / "latents" / "im2s" / ".x.pt.tmp",
             run / "samples" / "identity" / ".a__input.png.77.tmp", run / "journal" / ".000002.json.tmp5"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    logs = []
    RunStore(run, log=logs.append).close()
    assert not any(p.exists() for p in stale) and len(logs) == len(stale)
    assert (run / "journal" / "000001.json").is_file()


def test_a_damaged_journal_entry_is_set_aside_and_its_units_redone(tmp_path):
    with RunStore(tmp_path / "r") as store:
        store.commit(_record("a"))
        store.commit(_record("b"))
    (tmp_path / "r" / "journal" / "000002.json").write_text('{"units": [["b", "im2s"')
    logs = []
    with RunStore(tmp_path / "r", log=logs.append) as again:
        assert again.done("a", "im2s", "identity") and not again.done("b", "im2s", "identity")
        again.commit(_record("b"))
    assert "damaged" in logs[0] and (tmp_path / "r" / "journal" / "000002.broken").is_file()
    assert len(_lines(tmp_path / "r" / "results.csv")) == 1 + 6


def test_a_run_directory_without_journal_keeps_only_complete_units(tmp_path):
    """Run directories written before the journal: complete units are imported once, others redone."""
    run = tmp_path / "r"
    run.mkdir()
    rows = _rows("a") + _rows("a") + _rows("b")[:2]  # a twice (two writers), b partial
    (run / "results.csv").write_text(",".join(RESULT_COLUMNS) + "\n" + "".join(
        ",".join(str(r[c]) for c in RESULT_COLUMNS) + "\n" for r in rows))
    logs = []
    with RunStore(run, log=logs.append) as store:
        assert store.done("a", "im2s", "identity") and not store.done("b", "im2s", "identity")
        store.commit(_record("b"))
    assert len(_lines(run / "results.csv")) == 1 + 6 and "1 incomplete" in logs[0]


def test_values_survive_the_journal_exactly(tmp_path):
    rows = _rows("a")
    rows[0]["value"] = 0.1 + 0.2
    rows[1]["value"] = float("nan")
    with RunStore(tmp_path / "r") as store:
        store.add_batch(rows, [], None, [])
    before = (tmp_path / "r" / "results.csv").read_text()
    (tmp_path / "r" / "results.csv").unlink()
    RunStore(tmp_path / "r").close()
    assert (tmp_path / "r" / "results.csv").read_text() == before and "0.30000000000000004" in before


# --- the lock --------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from bench.results import RunStore
    store = RunStore(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
""")


def _holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    proc = _holder(tmp_path / "r")
    try:
        with pytest.raises(RunDirBusy, match=rf"in use by another bench run \(PID {proc.pid} on"):
            RunStore(tmp_path / "r")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    RunStore(tmp_path / "r").close()  # released when the holder exits


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    proc = _holder(tmp_path / "r")
    proc.kill()
    proc.wait(timeout=30)
    assert (tmp_path / "r" / ".lock").is_file()
    with RunStore(tmp_path / "r") as store:
        assert store.lock.held
    assert json.dumps(os.getpid()) in (tmp_path / "r" / ".lock").read_text()
