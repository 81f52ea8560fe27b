"""Run-directory integrity under faults: kills at every write point, torn appends, a full disk, two writers.

Each case is compared with an uninterrupted run of the same configuration: after a resume the tables hold
every row exactly once, with the same values. Runs use a 32 px random generator, 2 steps, 2 items, two
transforms, batches of one (so that every unit is a batch of its own and every write point is met).
"""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import bench.results
from bench.config import RunConfig
from bench.runlock import RunDirBusy
from bench.runner import run

KEY = ["item", "method", "transform", "metric"]


class SimulatedKill(BaseException):
    """Raised in place of a write: the process 'dies' before the write happens."""


@pytest.fixture(autouse=True)
def _no_lpips_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def config(gen, run_dir, **kw) -> RunConfig:
    base = dict(methods="im2s", transforms=("rotate:20",), generator=str(gen), data="synthetic:2", n=2, steps=2,
                perceptual="none", device="cpu", batch_size=1, max_samples=1, run_dir=str(run_dir))
    return RunConfig(**(base | kw))


def tables(run_dir) -> dict[str, object]:
    """Everything a report reads, in a comparable form (rows sorted; timings summed, not timed)."""
    res = pd.read_csv(run_dir / "results.csv").sort_values(KEY).reset_index(drop=True)
    tf = pd.read_csv(run_dir / "transforms.csv").sort_values(["item", "transform"]).reset_index(drop=True)
    timing = pd.read_csv(run_dir / "timing.csv").groupby(["method", "transform"])["items"].sum().to_dict()
    samples = pd.read_csv(run_dir / "samples" / "index.csv").sort_values(["item", "transform", "kind"])
    assert all((run_dir / "samples" / p).is_file() for p in samples["path"])
    latents = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "latents").rglob("*.pt"))
    return {"results": res.to_dict("list"), "transforms": tf.to_dict("list"), "timing": timing,
            "samples": samples.reset_index(drop=True).to_dict("list"), "latents": latents}


def leftovers(run_dir) -> list[str]:
    return [str(p) for p in run_dir.rglob(".*") if p.name != ".lock"]


@pytest.fixture(scope="module")
def reference(tiny_generator_path, tmp_path_factory):
    """An uninterrupted run, and how many renames and table appends it makes."""
    counts = {"replace": 0, "append": 0}
    real_replace, real_append = os.replace, bench.results._View.append
    mp = pytest.MonkeyPatch()

    def counting_replace(src, dst):
        counts["replace"] += 1
        real_replace(src, dst)

    def counting_append(self, rows):
        counts["append"] += 1
        real_append(self, rows)

    run_dir = tmp_path_factory.mktemp("ref") / "run"
    mp.setenv("TORCH_HOME", str(run_dir.parent / "torch-home"))
    mp.setattr(os, "replace", counting_replace)
    mp.setattr(bench.results._View, "append", counting_append)
    try:
        run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
    finally:
        mp.undo()
    return run_dir, tables(run_dir), counts


def test_the_reference_run_meets_write_points(reference):
    _, ref, counts = reference
    assert len(ref["results"]["item"]) == 2 * 2 * 6 and counts["replace"] >= 12 and counts["append"] >= 4


def test_a_kill_before_any_rename_loses_nothing_finished(reference, tiny_generator_path, tmp_path, monkeypatch):
    """Killed just before each rename in turn (config, journal, latents, sample PNGs, tables); then resumed."""
    _, ref, counts = reference
    real_replace = os.replace
    for k in range(1, counts["replace"] + 1):
        calls = [0]

        def replace(src, dst, k=k, calls=calls):
            calls[0] += 1
            if calls[0] == k:
                raise SimulatedKill(f"killed before rename {k}: {dst}")
            real_replace(src, dst)

        run_dir = tmp_path / f"k{k}"
        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(SimulatedKill):
            run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
        monkeypatch.setattr(os, "replace", real_replace)
        run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
        assert tables(run_dir) == ref, f"kill before rename {k}"
        assert not leftovers(run_dir)


def test_a_torn_append_at_each_table_loses_nothing(reference, tiny_generator_path, tmp_path, monkeypatch):
    """An append cut part-way (half its text written, then the process dies), at every append in turn."""
    _, ref, counts = reference
    real_append = bench.results._View.append
    torn_tables = set()
    for k in range(1, counts["append"] + 1):
        calls = [0]

        def torn(self, rows, k=k, calls=calls):
            rows = list(rows)
            fresh = [r for r in rows if self.key is None or not self.has(*(str(r[c]) for c in self.key))]
            if not (self.path.is_file() and fresh):  # an append that writes nothing cannot be torn
                return real_append(self, rows)
            calls[0] += 1
            if calls[0] != k:
                return real_append(self, rows)
            text = bench.results._csv_text(self.columns, fresh, header=False)
            with self.path.open("a") as fh:
                fh.write(text[: len(text) // 2])
            torn_tables.add(self.path.name)
            raise SimulatedKill(f"killed inside append {k} to {self.path.name}")

        run_dir = tmp_path / f"a{k}"
        monkeypatch.setattr(bench.results._View, "append", torn)
        try:
            run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
            break  # fewer tearable appends than k: every one has been torn
        except SimulatedKill:
            pass
        finally:
            monkeypatch.setattr(bench.results._View, "append", real_append)
        run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
        assert tables(run_dir) == ref, f"torn append {k}"
    assert torn_tables == {"results.csv", "transforms.csv", "timing.csv", "index.csv"}


def test_the_issues_truncated_results_file_is_repaired(reference, tiny_generator_path, tmp_path):
    """`head -c 1000 results.csv > t && mv t results.csv`, then the same command: every row, once."""
    _, ref, _ = reference
    run_dir = tmp_path / "r"
    run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
    data = (run_dir / "results.csv").read_bytes()
    (run_dir / "results.csv").write_bytes(data[:1000])
    run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
    assert tables(run_dir) == ref


def test_a_full_disk_is_a_message_and_the_resume_completes(reference, tiny_generator_path, tmp_path, monkeypatch):
    """ENOSPC through a patched write at the journal, a latent file and a table append."""
    _, ref, _ = reference
    real_open = type(tmp_path).open
    for target in ("journal", "latents", "results.csv"):
        calls = [0]

        def full(self, mode="r", *args, target=target, calls=calls, **kwargs):
            if target in str(self) and ("w" in mode or "a" in mode):
                calls[0] += 1
                if calls[0] == 2:  # the second write there: something is committed already
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real_open(self, mode, *args, **kwargs)

        run_dir = tmp_path / target.replace(".", "_")
        monkeypatch.setattr(type(tmp_path), "open", full)
        with pytest.raises(OSError, match=r"no space left on the device while writing .*re-run the same command"):
            run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
        monkeypatch.setattr(type(tmp_path), "open", real_open)
        run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
        assert tables(run_dir) == ref, target


KILLER = textwrap.dedent("""
    import os, signal, sys
    from bench.config import RunConfig
    from bench.runner import run
    k, cfg = int(sys.argv[1]), RunConfig(**__import__("json").loads(sys.argv[2]))
    real, calls = os.replace, [0]
    def replace(src, dst):
        calls[0] += 1
        if calls[0] == k:  # the temporary file is written; the rename never happens
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
    os.replace = replace
    run(cfg, progress=False, log=lambda m: None)
""")


@pytest.mark.slow
def test_sigkill_in_a_child_process_then_resume(reference, tiny_generator_path, tmp_path):
    """A real SIGKILL at three renames (the lock dies with the process; its temporary file stays behind)."""
    _, ref, counts = reference
    for k in (4, counts["replace"] // 2, counts["replace"] - 1):
        run_dir = tmp_path / f"s{k}"
        cfg = config(tiny_generator_path, run_dir)
        env = os.environ | {"TORCH_HOME": str(tmp_path / "torch-home")}
        proc = subprocess.run([sys.executable, "-c", KILLER, str(k), json.dumps(cfg.to_dict())], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert leftovers(run_dir), "the killed rename left its temporary file"
        logs = []
        run(cfg, progress=False, log=logs.append)
        assert tables(run_dir) == ref and not leftovers(run_dir)
        assert any("removed a temporary file" in m for m in logs)


HOLDER = textwrap.dedent("""
    import sys
    from bench.results import RunStore
    store = RunStore(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_a_second_run_on_a_busy_directory_is_refused_at_once(tiny_generator_path, tmp_path):
    run_dir = tmp_path / "busy"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        with pytest.raises(RunDirBusy, match=f"PID {proc.pid}"):
            run(config(tiny_generator_path, run_dir), progress=False, log=lambda m: None)
        assert time.perf_counter() - start < 1.0  # before any model or data loads
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_an_empty_valid_region_is_a_failed_unit(tiny_generator_path, tmp_path):
    out = run(config(tiny_generator_path, tmp_path / "far", transforms=("translate:1e9",)), progress=False,
              log=lambda m: None)
    df = pd.read_csv(out / "results.csv")
    far = df[df["transform"] != "identity"]
    assert len(far) == 2 * 6 and far["value"].isna().all()
    assert (far["status"] == "failed: the transform leaves no valid pixel (the valid region is empty)").all()
    assert (df[df["transform"] == "identity"]["status"] == "ok").all()


def test_a_run_grows_to_more_items_without_running_the_first_again(tiny_generator_path, tmp_path):
    """--n 2 then --n 4 in one run directory equals a fresh --n 4 run; only the 2 new items run."""
    kw = dict(data="synthetic:4")
    fresh = tmp_path / "fresh"
    run(config(tiny_generator_path, fresh, n=4, **kw), progress=False, log=lambda m: None)
    grown, lines = tmp_path / "grown", []
    run(config(tiny_generator_path, grown, n=2, **kw), progress=False, log=lambda m: None)
    first = set(pd.read_csv(grown / "results.csv")["item"])
    run(config(tiny_generator_path, grown, n=4, **kw), progress=False, log=lines.append)
    assert any("from 2 to 4 items" in line and "finished units: 2, all among them, not run again" in line
               for line in lines)
    batches = [line for line in lines if "units done (batch of" in line]
    assert len(batches) == 2 * 2  # 2 new items x 2 transforms (identity, rotate:20), batches of one
    mine, ref = tables(grown), tables(fresh)
    assert len(first) == 2 and len(set(ref["results"]["item"])) == 4
    # the synthetic targets are rendered in one batch of n, so a value may differ in its last float32 bit
    values = mine["results"].pop("value"), ref["results"].pop("value")
    assert np.allclose(*values, rtol=1e-5, atol=1e-7)
    assert {k: mine[k] for k in ("results", "transforms", "timing", "latents")} == \
        {k: ref[k] for k in ("results", "transforms", "timing", "latents")}
    assert json.loads((grown / "config.json").read_text())["n"] == 4


def test_a_smaller_n_that_drops_finished_items_is_refused(tiny_generator_path, tmp_path):
    kw = dict(data="synthetic:4")
    run(config(tiny_generator_path, tmp_path / "r", n=2, **kw), progress=False, log=lambda m: None)
    with pytest.raises(ValueError) as err:
        run(config(tiny_generator_path, tmp_path / "r", n=1, **kw), progress=False, log=lambda m: None)
    text = str(err.value)
    assert str(tmp_path / "r") in text and "not among the 1 now chosen" in text and "--run-dir" in text
