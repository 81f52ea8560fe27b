"""``bench run`` under torchrun: each process (rank) runs a shard of the work units into one run directory.

``torchrun --nproc-per-node N -m bench run ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several nodes) starts
N processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their
environment; :func:`bench.runner.run` sees them and calls :func:`run_sharded`. The job:

1. Rank 0 takes the run directory's lock (held for the whole job), recovers the directory (stale temporary
   files, damaged journal entries, tables rebuilt) and broadcasts what is committed: the done units and the
   journal's last entry number. Every other rank then takes the shared ``.lock.ranks`` (``bench.runlock``), so
   that no second job starts on the folder while any rank of this one is alive.
2. Every rank prepares the run itself (generator, data, encoders, loaded once per rank, on ``cuda:LOCAL_RANK``
   on GPUs); a set-up error on any rank stops every rank with that rank's message.
3. Per method, every rank computes the same pending units (the broadcast done set) and keeps its shard
   (:func:`shard`): whole items, so that an item's transformed units run on the rank that holds its aligned
   latents (the consistency metric), balanced by unit count. A resume with any rank count therefore redoes
   exactly the units that no rank committed.
4. Each rank sizes its own batches and commits each batch as its own journal entry: rank ``r`` of ``W`` numbers
   its entries ``base + r + 1``, ``base + r + 1 + W``, ... (``base``: the last number at the start), so commits
   never collide and every entry is an ordinary ``journal/NNNNNN.json`` that any later run or ``bench report``
   reads. Only rank 0 writes config.json, versions.json and metrics.json; no rank appends to the tables while
   the job runs.
5. Progress goes through the job's key-value store, not collectives, so ranks with different numbers of
   batches never wait on each other: each rank logs its own batches, rank 0 shows the aggregate. A rank that
   fails records why; the others stop before their next batch. Rank 0 waits until every rank has ended (or
   stopped sending its heartbeat for ``BENCH_DIST_TIMEOUT`` seconds), rebuilds the tables from the whole
   journal (the merge), and only then drops the lock.

Results equal a one-process run of the same command: seeds are per unit and batches are invariant.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.batch import Unit
from bench.results import RunStore
from bench.runlock import RankLock, check_no_ranks

TIMEOUT_ENV = "BENCH_DIST_TIMEOUT"
BACKEND_ENV = "BENCH_DIST_BACKEND"
DEFAULT_TIMEOUT_S = 1800.0  # set-up collectives, and how long a silent rank is waited for
HEARTBEAT_S = 5.0
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class RankFailed(ValueError):
    """Another rank of the job failed (or stopped answering); committed units are kept."""


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job."""

    rank: int
    size: int
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"


def world_from_env(environ: dict[str, str] | None = None) -> World | None:
    """The job this process belongs to, from torchrun's environment; None for a plain process.

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are not whole numbers in range.
    """
    env = os.environ if environ is None else environ
    if not all(env.get(k) for k in _ENV):
        return None
    try:
        world = World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    except ValueError:
        raise ValueError(f"torchrun environment: RANK={env['RANK']!r}, WORLD_SIZE={env['WORLD_SIZE']!r}, "
                         f"LOCAL_RANK={env.get('LOCAL_RANK')!r} are not whole numbers") from None
    if not 0 <= world.rank < world.size or world.local_rank < 0:
        raise ValueError(f"torchrun environment: RANK={world.rank} is not in [0, WORLD_SIZE={world.size})")
    return world


def shard(units: Sequence[Unit], rank: int, size: int) -> list[Unit]:
    """Rank ``rank``'s part of a method's pending units, in their order.

    Whole items (every pending transform of an item on one rank), largest first to the least loaded rank
    (ties: the earlier item, the lower rank); the same ``units`` give the same parts on every rank.
    """
    groups: dict[str, int] = {}
    for u in units:
        groups[u.item.id] = groups.get(u.item.id, 0) + 1
    load, owner = [0] * size, {}
    for item_id in sorted(groups, key=lambda i: -groups[i]):  # a stable sort: ties keep the units' order
        r = min(range(size), key=lambda k: (load[k], k))
        owner[item_id] = r
        load[r] += groups[item_id]
    return [u for u in units if owner[u.item.id] == rank]


def rank_gpu(local_rank: int, local_ranks: int, gpus: int, backend: str | None = None) -> tuple[int, str]:
    """The GPU a rank runs on and the collectives' backend.

    ``local_ranks``: the ranks on this node (torchrun's ``LOCAL_WORLD_SIZE``). One rank per GPU:
    ``cuda:LOCAL_RANK`` and NCCL. More ranks than the node has GPUs (for example two ranks on
    one card, to check a sharded run against a plain one on a one-GPU machine): rank ``LOCAL_RANK`` shares
    ``cuda:(LOCAL_RANK mod GPUs)`` and the collectives go over gloo, since NCCL refuses two ranks on one
    device. The job's collectives carry only small Python objects, so gloo costs nothing measurable.
    ``BENCH_DIST_BACKEND`` (``nccl`` or ``gloo``) overrides the choice.

    Raises:
        ValueError: no GPU, an unknown backend, or NCCL asked for ranks that share a GPU.
    """
    if gpus < 1:
        raise ValueError("--device cuda under torchrun: this node has no CUDA device")
    shared = local_ranks > gpus  # the same answer on every rank of the node
    if backend is None:
        backend = "gloo" if shared else "nccl"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"{BACKEND_ENV}={backend!r}: expected nccl or gloo")
    if backend == "nccl" and shared:
        raise ValueError(f"{BACKEND_ENV}=nccl: {local_ranks} ranks on this node share its {gpus} GPU(s), which "
                         "NCCL refuses; use gloo or at most one rank per GPU")
    return local_rank % gpus, backend


def timeout_s() -> float:
    """Seconds from ``BENCH_DIST_TIMEOUT`` (default 1800)."""
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None


@dataclass(frozen=True)
class Start:
    """What rank 0 broadcasts once it holds the run directory: or ``error``, why it could not."""

    run_dir: str = ""
    base: int = 0
    done: frozenset = frozenset()
    token: str = ""
    error: str = ""


class ShardStore(RunStore):
    """A rank's writer into the shared run directory: journal entries and files, never the tables.

    It takes no lock and recovers nothing (rank 0 did both before ``start`` was broadcast); its entries are
    numbered ``start.base + rank + 1 + k * size`` (module docstring, step 4).
    """

    def __init__(self, start: Start, world: World, log: Callable[[str], None]) -> None:  # noqa: D107
        self.dir, self.log, self.world = Path(start.run_dir), log, world
        self.journal = self.dir / "journal"
        self._done = set(start.done)
        self._seq = start.base + world.rank + 1 - world.size
        self.results, self.transforms, self.timing = _Keys(None), _Keys(None), _Keys(None)
        self.samples = _Keys(self.dir / "samples" / "index.csv", ("item", "transform", "kind"))

    def _next_seq(self) -> int:
        return self._seq + self.world.size

    def reload(self) -> None:  # the merge is rank 0's, under its lock
        raise NotImplementedError("a rank's store does not rebuild the tables")

    def close(self) -> None:
        pass


class _Keys:
    """Stands in for a table of :class:`RunStore` during a job: remembers keys, writes nothing."""

    def __init__(self, path: Path | None, key: tuple[str, ...] = ()) -> None:
        self.key, self._keys = key, set()
        if path is not None and path.is_file():  # rank 0 rebuilt it before the job; nobody appends meanwhile
            with path.open(newline="", errors="replace") as fh:
                self._keys = {tuple(r.get(c, "") for c in key) for r in csv.DictReader(fh)}

    def append(self, rows) -> None:
        if self.key:
            self._keys |= {tuple(str(r[c]) for c in self.key) for r in rows}

    def has(self, *key: str) -> bool:
        return tuple(key) in self._keys


class _Board:
    """The job's shared counters in torchrun's key-value store (progress, ends, failures, heartbeats)."""

    def __init__(self, token: str, world: World) -> None:
        import torch.distributed as dist

        self.world = world
        self._store = dist.PrefixStore(f"bench-run/{token}/", _client())
        beat = dist.PrefixStore(f"bench-run/{token}/", _client())  # a client of its own for the thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(beat,), daemon=True, name="bench-heartbeat")
        self._thread.start()

    def _beat(self, store) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # the store went away: the job is ending
                store.add(f"beat/{self.world.rank}", 1)

    def add(self, key: str, n: int = 1) -> int:
        return int(self._store.add(key, n))

    def failure(self) -> str | None:
        """The first recorded failure as 'rank r: message', or None."""
        if self.add("failed", 0) == 0:
            return None
        for r in range(self.world.size):
            if self._store.check([f"why/{r}"]):
                return f"rank {r}: {self._store.get(f'why/{r}').decode(errors='replace')}"
        return "a rank failed"

    def fail(self, why: str) -> None:
        self._store.set(f"why/{self.world.rank}", why)
        self.add("failed")

    def beats(self) -> list[int]:
        return [self.add(f"beat/{r}", 0) for r in range(self.world.size)]

    def close(self) -> None:
        self._stop.set()


def _client():
    import torch.distributed as dist

    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=_dt.timedelta(seconds=timeout_s()))


class RankProgress:
    """:class:`bench.runner.BarProgress` for a rank: its own lines; on rank 0 the bar counts every rank's units."""

    def __init__(self, board: _Board, world: World, total: int, done: int, progress: bool,
                 log: Callable[[str], None]) -> None:
        from bench.runner import BarProgress

        self.board, self.world, self.done0, self.mine = board, world, done, 0
        self.inner = BarProgress(total, progress and world.leader, log)
        self.inner.skip(done if world.leader else 0)

    def skip(self, n: int) -> None:
        pass  # counted once, at the start, from the broadcast done set

    def batch(self, name: str, batch: Sequence[Unit], seconds: float) -> None:
        from bench.runner import _what

        self.mine += len(batch)
        everyone = self.done0 + self.board.add("units", len(batch))
        self._show(everyone)
        if not self.world.leader or not self.inner.progress:
            who = f"{self.world}: " if self.world.leader else ""  # the other ranks' log says who they are
            self.inner.log(f"{who}{name}: {self.mine} units done by this rank, {everyone}/{self.inner.total} by all "
                           f"({_what(batch, seconds)})")

    def _show(self, everyone: int) -> None:
        if self.world.leader and everyone > self.inner.bar.n:
            self.inner.bar.update(everyone - self.inner.bar.n)

    def refresh(self) -> None:
        """Rank 0: bring the bar up to every rank's count."""
        self._show(self.done0 + self.board.add("units", 0))

    def check(self) -> None:
        why = self.board.failure()
        if why is not None:
            raise RankFailed(f"{self.world} stops: {why}")

    def steps(self, what: str) -> Callable[[int, int], None]:
        return self.inner.steps(what)

    def close(self) -> None:
        self.inner.__exit__()


def run_sharded(config, world: World, *, progress: bool = True, log: Callable[[str], None] = print,
                _stop_after_batches: int | None = None) -> Path:
    """:func:`bench.runner.run` as one rank of a torchrun job (module docstring); returns the run directory.

    Raises:
        ValueError: as :func:`bench.runner.run`; :class:`RankFailed` (on every rank) when another rank failed.
    """
    import torch.distributed as dist

    from bench.prepare import resolve_device

    device = resolve_device(config.device)
    backend = "gloo"
    if device.type == "cuda":
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        gpu, backend = rank_gpu(world.local_rank, local_ranks, torch.cuda.device_count(), os.environ.get(BACKEND_ENV))
        torch.cuda.set_device(gpu)  # "cuda" and "auto" then mean cuda:LOCAL_RANK (mod the node's GPUs)
        if local_ranks > torch.cuda.device_count():
            log(f"{world}: shares cuda:{gpu} with other ranks ({torch.cuda.device_count()} GPU(s) on this node); "
                f"collectives over {backend}")
    dist.init_process_group(backend, rank=world.rank, world_size=world.size,
                            timeout=_dt.timedelta(seconds=timeout_s()))
    try:
        return _job(config, world, backend, progress, log, _stop_after_batches)
    finally:
        dist.destroy_process_group()


def _job(config, world: World, backend: str, progress: bool, log, stop_after) -> Path:
    import torch.distributed as dist

    from bench import runner

    lead, start, fresh = None, Start(), False
    if world.leader:
        run_dir = Path(config.run_dir) if config.run_dir else runner.default_run_dir()
        fresh = not run_dir.exists()
        try:
            lead = RunStore(run_dir, log)  # the lock and the recovery, before the others start
            lead.lock.describe(f"rank 0 of {world.size}, torchrun")
            start = Start(str(run_dir), _last_entry(lead.journal), lead.done_units, secrets.token_hex(8))
        except Exception as err:
            start = Start(error=str(err))
            box = [start]
            dist.broadcast_object_list(box, src=0)
            raise
    box = [start]
    dist.broadcast_object_list(box, src=0)
    start = box[0]
    if start.error:
        raise RankFailed(f"{world} stops: rank 0 could not open the run directory: {start.error}")
    board = _Board(start.token, world)
    ranks_lock = RankLock(start.run_dir) if not world.leader else None
    rank_log = log if world.leader else (lambda m: log(f"{world}: {m}"))
    err: BaseException | None = None
    try:
        if ranks_lock is not None:
            ranks_lock.acquire()
        _work(config, world, backend, start, board, progress, rank_log, stop_after)
    except BaseException as e:
        err = e
        with contextlib.suppress(Exception):
            board.fail(f"{type(e).__name__}: {e}")
        raise
    finally:
        if ranks_lock is not None:
            ranks_lock.release()
        with contextlib.suppress(Exception):
            board.add("ended")
        if lead is not None:
            _finish(lead, board, world, fresh, log, own_error=err)
        board.close()
    return Path(start.run_dir)


def _last_entry(journal: Path) -> int:
    """The highest journal entry number (0 if none)."""
    return max((int(p.stem) for p in journal.glob("*.json") if p.stem.isdigit()), default=0)


def _work(config, world, backend, start: Start, board: _Board, progress, log, stop_after) -> None:
    from bench import runner

    store = ShardStore(start, world, log)
    session = _agree(world, lambda: runner.setup(config, store, log, writer=world.leader,
                                                 processes=f"{world.size} ranks (torchrun, {backend})"))
    units = runner.work_units(session.prep)
    done = sum(store.done(*u.key(name)) for name in session.methods for u in units)
    bar = RankProgress(board, world, len(units) * len(session.methods), done, progress, log)
    try:
        runner.run_units(session, store, units, bar, stop_after,
                         shard=lambda pending: shard(pending, world.rank, world.size))
        if world.leader:
            _wait_for_ranks(board, world, bar.refresh)
    finally:
        bar.close()


def _agree(world: World, step: Callable[[], object]):
    """Run ``step`` on every rank; if it raised anywhere, raise on every rank (naming the first that failed)."""
    import torch.distributed as dist

    result, why = None, None
    try:
        result = step()
    except Exception as e:  # noqa: BLE001 - every rank must reach the gather below
        why, own = f"{type(e).__name__}: {e}", e
    whys: list = [None] * world.size
    dist.all_gather_object(whys, why)
    if why is not None:
        raise own
    failed = next(((r, w) for r, w in enumerate(whys) if w is not None), None)
    if failed is not None:
        raise RankFailed(f"{world} stops: rank {failed[0]} failed in set-up: {failed[1]}")
    return result


def _wait_for_ranks(board: _Board, world: World, refresh: Callable[[], None]) -> None:
    """Rank 0, its own shard done: wait for every other rank, showing the aggregate progress.

    Raises:
        RankFailed: a rank recorded a failure, or its heartbeat stopped for ``BENCH_DIST_TIMEOUT`` seconds.
    """
    limit, seen, since = timeout_s(), board.beats(), [time.monotonic()] * world.size
    while board.add("ended", 0) < world.size - 1:  # everyone but rank 0 itself
        why = board.failure()
        if why is not None:
            raise RankFailed(f"{why}; every unit committed so far is kept: re-run the same command to resume")
        refresh()
        now, beats = time.monotonic(), board.beats()
        for r in range(1, world.size):
            if beats[r] != seen[r]:
                seen[r], since[r] = beats[r], now
            elif now - since[r] > limit:
                raise RankFailed(f"rank {r} sent no heartbeat for {limit:.0f} s ({TIMEOUT_ENV}); every unit committed "
                                 "so far is kept: re-run the same command to resume")
        time.sleep(0.5)


def _finish(lead: RunStore, board: _Board, world: World, fresh: bool, log, own_error) -> None:
    """Rank 0, last: merge every rank's journal entries into the tables, drop the job's locks."""
    from bench import runner

    try:
        ended = _ended(board, world)
        if ended:  # no rank can still be writing: the tables are rebuilt from the whole journal
            lead.reload()
            check_no_ranks(lead.dir)
        elif own_error is None:
            log(f"warning: not every rank has ended; the tables of {lead.dir} are rebuilt by the next run")
    finally:
        lead.close()
        if fresh:
            runner.remove_if_unused(lead.dir)


def _ended(board: _Board, world: World, wait_s: float = 30.0) -> bool:
    """Whether every rank has ended, waiting up to ``wait_s`` for those still ending (e.g. after a failure)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if board.add("ended", 0) >= world.size:
                return True
        except Exception:  # noqa: BLE001 - the store is gone
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
