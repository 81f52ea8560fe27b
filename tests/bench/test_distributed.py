"""``bench run`` under torchrun (``bench.distributed``): 2 CPU processes with gloo against one process.

The torchrun cases start ``python -m torch.distributed.run --standalone`` in a subprocess (a free port each) on a
32 px random generator: two methods, three items, identity + rotate:20, 2 steps, batches of one, and an edit, so
that the consistency metric needs each item's aligned latents from its identity unit. A batch of one runs as a
padded batch of two in every process, so the sharded tables must equal the one-process tables exactly (values
included, tolerance 0), and so must every saved latent tensor. Faults are injected by a worker script that wraps
``RunStore.commit`` on one rank (SIGKILL or an exception after its first commit).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import bench.distributed as distributed
from bench.config import RunConfig
from bench.distributed import RankFailed, World, shard, world_from_env
from bench.results import RunStore, repair_tables
from bench.runlock import RANKS_LOCK_NAME, RunDirBusy
from bench.runner import run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why
KEY = ["item", "method", "transform", "metric"]
UNITS = 2 * 3 * 2  # methods x items x transforms


@pytest.fixture(autouse=True)
def _no_lpips_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture(scope="module")
def direction(tmp_path_factory):
    path = tmp_path_factory.mktemp("edit") / "d.npy"
    np.save(path, np.random.default_rng(0).standard_normal(32).astype(np.float32))
    return path


def config(gen, direction, run_dir, **kw) -> RunConfig:
    base = dict(methods="im2s,w", transforms=("rotate:20",), generator=str(gen), data="synthetic:3", n=3, steps=2,
                perceptual="none", device="cpu", batch_size=1, max_samples=2, edits=(f"{direction}:2",),
                metrics=("mse", "psnr"), run_dir=str(run_dir))
    return RunConfig(**(base | kw))


def tables(run_dir) -> dict[str, object]:
    """What a report reads, comparable across runs: rows sorted, timing as units per column, latent tensors."""
    res = pd.read_csv(run_dir / "results.csv").sort_values(KEY).reset_index(drop=True)
    tf = pd.read_csv(run_dir / "transforms.csv").sort_values(["item", "transform"]).reset_index(drop=True)
    timing = pd.read_csv(run_dir / "timing.csv").groupby(["method", "transform"])["items"].sum().to_dict()
    samples = pd.read_csv(run_dir / "samples" / "index.csv").sort_values(["item", "transform", "kind"])
    assert all((run_dir / "samples" / p).is_file() for p in samples["path"])
    latents = {str(p.relative_to(run_dir)): {k: v.tolist() for k, v in torch.load(p, weights_only=True).items()}
               for p in sorted((run_dir / "latents").rglob("*.pt"))}
    return {"results": res.to_dict("list"), "transforms": tf.to_dict("list"), "timing": timing,
            "samples": samples.reset_index(drop=True).to_dict("list"), "latents": latents}


def same(a: dict, b: dict) -> None:
    """Exact equality (NaN == NaN in the values column)."""
    ra, rb = pd.DataFrame(a["results"]), pd.DataFrame(b["results"])
    assert ra.drop(columns="value").equals(rb.drop(columns="value"))
    np.testing.assert_array_equal(ra["value"].to_numpy(float), rb["value"].to_numpy(float))
    for k in ("transforms", "timing", "samples", "latents"):
        assert a[k] == b[k], k


def leftovers(run_dir) -> list[str]:
    return [str(p) for p in run_dir.rglob(".*") if p.name != ".lock"]


WORKER = textwrap.dedent("""
    import json, os, signal, sys
    import bench.results
    from bench.config import RunConfig
    from bench.runner import run

    cfg = RunConfig(**json.loads(sys.argv[1]))
    kind, _, rest = os.environ.get("TEST_FAULT", "").partition(":")  # kill:RANK or raise:RANK
    if kind and os.environ["RANK"] == rest:
        real = bench.results.RunStore.commit

        def commit(self, record):  # after this rank's first commit
            real(self, record)
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected fault")

        bench.results.RunStore.commit = commit
    run(cfg, progress=False, log=lambda m: print(m, file=sys.stderr, flush=True))
""")


def torchrun(cfg: RunConfig, tmp_path, nproc: int = 2, fault: str = "") -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = os.environ | {"TORCH_HOME": str(tmp_path / "torch-home"), "OMP_NUM_THREADS": "1", "TEST_FAULT": fault,
                        "BENCH_DIST_TIMEOUT": "120"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(script),
           json.dumps(cfg.to_dict())]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tiny_generator_path, direction, tmp_path_factory):
    """The one-process run."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(run_dir.parent / "torch-home"))
    try:
        run(config(tiny_generator_path, direction, run_dir), progress=False, log=lambda m: None)
    finally:
        mp.undo()
    ref = tables(run_dir)
    assert len(ref["results"]["item"]) > UNITS * 4 and sum(ref["timing"].values()) == UNITS
    assert any("consistency" in m for m in ref["results"]["metric"])
    return ref


# --- sharding, environment, locks (no processes) -----------------------------------------------------------


def units_of(spec: str) -> list:
    """'a:2 b:1 c:3' -> units of items a, b, c with that many transforms each, transform by transform."""
    counts = {name: int(k) for name, k in (p.split(":") for p in spec.split())}
    return [SimpleNamespace(item=SimpleNamespace(id=name), label=f"t{t}") for t in range(max(counts.values()))
            for name, k in counts.items() if t < k]


@pytest.mark.parametrize("spec", ["a:2 b:2 c:2", "a:1 b:3 c:2 d:2 e:1", "a:4", "a:2 b:1 c:2 d:2 e:2 f:2 g:1"])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shards_cover_the_units_once_by_whole_items_in_order(spec, size):
    units = units_of(spec)
    parts = [shard(units, r, size) for r in range(size)]
    assert sorted(map(id, (u for p in parts for u in p))) == sorted(map(id, units))  # each unit exactly once
    for p in parts:
        assert p == [u for u in units if u in p]  # the work list's order (aligned units first) is kept
    owners = [{u.item.id for u in p} for p in parts]
    assert sum(map(len, owners)) == len({u.item.id for u in units})  # an item's units stay on one rank
    loads = [len(p) for p in parts]
    assert max(loads) - min(loads) <= max(int(p.split(":")[1]) for p in spec.split())
    assert parts == [shard(units, r, size) for r in range(size)]  # deterministic


def test_shards_balance_a_resume_whose_done_units_sit_on_one_rank():
    """Rank 1 of 2 died: its items' units are pending; two ranks now split them, not one."""
    units = units_of("a:2 b:2 c:2 d:2 e:2 f:2")
    pending = [u for u in units if u.item.id in "bdf"]  # round-robin had put b, d, f on rank 1
    assert [len(shard(pending, r, 2)) for r in range(2)] == [4, 2]


def test_world_from_env():
    base = {"MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}
    assert world_from_env({}) is None
    assert world_from_env({"RANK": "0", "WORLD_SIZE": "2"}) is None  # no rendezvous: a plain process
    assert world_from_env(base | {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == World(1, 2, 1)
    with pytest.raises(ValueError, match="RANK=2 is not in"):
        world_from_env(base | {"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="not whole numbers"):
        world_from_env(base | {"RANK": "x", "WORLD_SIZE": "2"})


def test_ranks_get_one_gpu_each_over_nccl_or_share_over_gloo():
    assert [distributed.rank_gpu(r, 4, 4) for r in range(4)] == [(0, "nccl"), (1, "nccl"), (2, "nccl"), (3, "nccl")]
    # two ranks on a one-GPU machine: both on cuda:0, every rank of the node over gloo (NCCL refuses this)
    assert [distributed.rank_gpu(r, 2, 1) for r in range(2)] == [(0, "gloo"), (0, "gloo")]
    assert [distributed.rank_gpu(r, 4, 2)[0] for r in range(4)] == [0, 1, 0, 1]
    assert distributed.rank_gpu(1, 2, 2, "gloo") == (1, "gloo")
    with pytest.raises(ValueError, match="NCCL refuses"):
        distributed.rank_gpu(0, 2, 1, "nccl")
    with pytest.raises(ValueError, match="BENCH_DIST_BACKEND='mpi'"):
        distributed.rank_gpu(0, 1, 1, "mpi")
    with pytest.raises(ValueError, match="no CUDA device"):
        distributed.rank_gpu(0, 1, 0)


RANK_HOLDER = textwrap.dedent("""
    import sys
    from bench.runlock import RankLock
    RankLock(sys.argv[1]).acquire()
    print("held", flush=True)
    sys.stdin.read()
""")


def test_a_live_rank_whose_rank_0_died_keeps_a_second_run_out(tiny_generator_path, direction, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", RANK_HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match="in use by ranks of a torchrun bench run"):
            run(config(tiny_generator_path, direction, run_dir), progress=False, log=lambda m: None)
        with pytest.raises(RunDirBusy):
            RunStore(run_dir)
        assert not repair_tables(run_dir)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    RunStore(run_dir).close()  # the rank has ended: the folder is free, and its lock file is removed
    assert not (run_dir / RANKS_LOCK_NAME).exists()


class FakeBoard:
    def __init__(self, world, failed=None, ended=0):
        self.world, self.failed, self.ended, self.beat = world, failed, ended, 0

    def failure(self):
        return self.failed

    def add(self, key, n=1):
        return {"ended": self.ended, "units": 0}[key]

    def beats(self):
        return [self.beat] * self.world.size


def test_a_failed_rank_stops_the_others_before_their_next_batch():
    world = World(1, 2)
    progress = distributed.RankProgress(FakeBoard(world), world, 10, 0, False, lambda m: None)
    progress.check()  # nobody failed
    progress.board.failed = "rank 0: RuntimeError: boom"
    with pytest.raises(RankFailed, match="rank 1 of 2 stops: rank 0: RuntimeError: boom"):
        progress.check()


def test_rank_0_does_not_wait_forever_for_a_silent_rank(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "0.3")
    start = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 sent no heartbeat for 0 s"):
        distributed._wait_for_ranks(FakeBoard(World(0, 2)), World(0, 2), lambda: None)
    assert time.monotonic() - start < 5
    with pytest.raises(RankFailed, match="rank 1: ValueError: x; every unit committed so far is kept"):
        distributed._wait_for_ranks(FakeBoard(World(0, 2), failed="rank 1: ValueError: x"), World(0, 2), lambda: None)
    distributed._wait_for_ranks(FakeBoard(World(0, 2), ended=1), World(0, 2), lambda: None)  # everyone ended


# --- torchrun, 2 processes, gloo -------------------------------------------------------------------------


@pytest.mark.slow
def test_two_ranks_give_the_one_process_tables(reference, tiny_generator_path, direction, tmp_path):
    run_dir = tmp_path / "run"
    proc = torchrun(config(tiny_generator_path, direction, run_dir), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    same(tables(run_dir), reference)
    entries = sorted(p.name for p in (run_dir / "journal").iterdir())
    # one entry per batch; rank r numbers its own r+1, r+3, ...: rank 0 has two items (8 units), rank 1 one (4)
    assert entries == sorted(f"{k:06d}.json" for k in [*range(1, 16, 2), *range(2, 9, 2)])
    assert "rank 1 of 2: " in proc.stderr and "by all" in proc.stderr  # each rank reports; rank 0 the total
    assert json.loads((run_dir / "versions.json").read_text())["processes"] == "2 ranks (torchrun, gloo)"
    assert not leftovers(run_dir)  # no temporary file, no .lock.ranks
    before = (run_dir / "results.csv").read_bytes()
    assert repair_tables(run_dir) and (run_dir / "results.csv").read_bytes() == before  # merged = rebuilt


@pytest.fixture(scope="module")
def killed(tiny_generator_path, direction, tmp_path_factory):
    """A 2-rank run whose rank 1 was SIGKILLed right after its first commit."""
    tmp = tmp_path_factory.mktemp("killed")
    run_dir = tmp / "run"
    proc = torchrun(config(tiny_generator_path, direction, run_dir), tmp, fault="kill:1")
    assert proc.returncode != 0 and ("SIGKILL" in proc.stderr or "-9" in proc.stderr), proc.stderr[-3000:]
    committed = [u for p in (run_dir / "journal").glob("*.json") for u in json.loads(p.read_text())["units"]]
    assert 1 <= len(committed) < UNITS
    return run_dir


@pytest.mark.slow
def test_a_killed_rank_resumed_with_two_ranks(reference, killed, tiny_generator_path, direction, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(killed, run_dir)
    proc = torchrun(config(tiny_generator_path, direction, run_dir), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    same(tables(run_dir), reference)  # timing counts each unit once: nothing committed was redone
    assert not leftovers(run_dir)


@pytest.mark.slow
def test_a_killed_rank_resumed_with_one_process(reference, killed, tiny_generator_path, direction, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(killed, run_dir)
    run(config(tiny_generator_path, direction, run_dir), progress=False, log=lambda m: None)
    same(tables(run_dir), reference)
    assert not leftovers(run_dir)


@pytest.mark.slow
def test_a_cut_one_process_run_resumed_with_two_ranks(reference, tiny_generator_path, direction, tmp_path):
    run_dir = tmp_path / "run"
    cfg = config(tiny_generator_path, direction, run_dir)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False, log=lambda m: None, _stop_after_batches=5)  # 5 of 6 im2s units
    proc = torchrun(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    same(tables(run_dir), reference)
    assert len(list((run_dir / "journal").glob("*.json"))) == UNITS


HOLDER = textwrap.dedent("""
    import sys
    from bench.results import RunStore
    store = RunStore(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
""")


@pytest.mark.slow
def test_a_busy_run_directory_or_a_failing_rank_ends_every_rank_with_a_message(tiny_generator_path, direction,
                                                                               tmp_path):
    busy = tmp_path / "busy"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(busy)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        out = torchrun(config(tiny_generator_path, direction, busy), tmp_path)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert out.returncode != 0
    assert f"in use by another bench run (PID {proc.pid}" in out.stderr
    assert "rank 1 of 2 stops: rank 0 could not open the run directory" in out.stderr
    failing = torchrun(config(tiny_generator_path, direction, tmp_path / "fails"), tmp_path, fault="raise:1")
    assert failing.returncode != 0 and "RuntimeError: injected fault" in failing.stderr
