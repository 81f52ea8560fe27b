"""The runner: source -> transform -> method.invert -> metrics -> run directory.

``run(config)`` is the Python API behind ``bench run``. It takes the run directory's lock, resolves the
device once, loads the generator and data, expands the transforms into work units (item x transform), and
for every method cuts its pending units, across transforms, into memory-sized batches
(``bench.batch.run_batch``), committing each finished batch to the run directory in one step
(``bench.results.RunStore.commit``). Re-running with the same run directory redoes exactly the units that
were not committed.

Under ``torchrun`` (its environment: ``RANK``, ``WORLD_SIZE``, ...) the same call runs one shard of the work
per process (``bench.distributed``); everything below is shared by both.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from bench.accel import compile_pays, describe_accels
from bench.batch import Unit, run_batch, score  # noqa: F401  (score: re-exported)
from bench.compiling import Compilable, compile_failure, set_compiled
from bench.config import RunConfig, method_overrides
from bench.editing import consistency_entries, metric_entries
from bench.metrics import MASKED_SUFFIX, Metric
from bench.prepare import (  # noqa: F401  (re-exported: the runner's public API)
    Prepared,
    attach_pnorm_stats,
    batch_size_for,
    check_names,
    method_resources,
    prepare,
    resolve_device,
    stable_seed,
    transform_specs,
)
from bench.results import RunStore, versions
from bench.runlock import LOCK_NAME
from methods import Method, build_method, get_preset
from methods.optim import observe_steps
from transforms import sample_params as sample_transform


def metric_table(metrics: Sequence[Metric]) -> dict[str, dict]:
    """metrics.json content: every metric and its masked variant, with availability and reason."""
    out = {}
    for m in metrics:
        info = m.info
        entry = {"higher_is_better": info.higher_is_better, "range": list(info.value_range),
                 "description": info.description, "available": m.available, "reason": m.reason}
        out[info.name] = entry
        out[info.name + MASKED_SUFFIX] = {**entry, "description": info.description + "; valid region only"}
    return out


def default_run_dir() -> Path:
    """``runs/YYYYmmdd-HHMMSS`` in the current directory."""
    return Path("runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run(config: RunConfig, *, progress: bool = True, log: Callable[[str], None] = print,
        _stop_after_batches: int | None = None) -> Path:
    """Run the benchmark described by ``config``; returns the run directory.

    Args:
        config: the run configuration (see :class:`bench.config.RunConfig`).
        progress: show a progress bar on stderr (units done / total, ETA, the batch's optimisation step);
            without it, one line per finished batch goes to ``log``.
        log: where messages go (skipped files, notes).
        _stop_after_batches: testing hook that simulates a killed run by raising after that many batches.

    Raises:
        ValueError: a bad option or input (the message names it), or the run directory is in use.
        OSError: the run directory cannot be written (e.g. the disk is full); committed units are kept.
    """
    from bench.distributed import run_sharded, world_from_env

    world = world_from_env()
    if world is not None:
        return run_sharded(config, world, progress=progress, log=log, _stop_after_batches=_stop_after_batches)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir()
    fresh = not run_dir.exists()
    store = RunStore(run_dir, log)  # the lock first: a second writer is refused before any model loads
    try:
        session = setup(config, store, log)
        units = work_units(session.prep)
        with BarProgress(len(units) * len(session.methods), progress, log) as bar:
            run_units(session, store, units, bar, _stop_after_batches)
    finally:
        store.close()
        if fresh:
            remove_if_unused(run_dir)
    return run_dir


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run directory that this run created but wrote nothing into (it failed in set-up)."""
    with contextlib.suppress(OSError):
        if [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            (run_dir / LOCK_NAME).unlink()
            run_dir.rmdir()


@dataclass
class Session:
    """A prepared run: the resolved inputs, the built methods and the configuration as stored."""

    prep: Prepared
    methods: dict[str, Method]
    cfg: dict
    log: Callable[[str], None] = print
    writer: bool = True  # writes config.json (a torchrun job's rank 0 only)


def setup(config: RunConfig, store: RunStore, log: Callable[[str], None], *, writer: bool = True,
          **about: str) -> Session:
    """Prepare the run and build every method (loading its encoder) before anything runs.

    The ``writer`` checks the configuration against the run directory's, writes config.json, versions.json
    (with ``about``: free-text descriptions, e.g. the processes) and metrics.json, and logs the run's notes.
    """
    prep = prepare(config, log)
    # build every method (and load its encoder) before anything runs, so a missing encoder fails fast
    methods = {name: build_method(name, method_overrides(prep.config, name, get_preset(name).default_steps),
                                  **method_resources(get_preset(name), prep)) for name in prep.methods}
    session = Session(prep, methods, prep.config.to_dict() | {"run_dir": str(store.dir)}, log, writer)
    if not writer:
        return session
    grown = store.check_config(session.cfg, [it.id for it in prep.items])
    _write_config(store, session)
    store.write_json("versions.json", versions(prep.device, **prep.descriptions,
                                                fast_path=describe_accels(prep.accels), **about))
    store.write_json("metrics.json", metric_table(prep.metrics)
                     | metric_entries(prep.edits, prep.metrics, prep.attribute_net is not None)
                     | consistency_entries(prep.edits, prep.metrics))
    for note in [f"run directory: {store.dir}", *([grown] if grown else []), *_notes(prep, methods)]:
        log(note)
    return session


class BarProgress:
    """The loop's progress: a bar on stderr (units done / total, ETA, the optimisation step), or one line per batch.

    ``bench.distributed`` subclasses it for the ranks of a torchrun job (rank 0 shows the aggregate).
    """

    def __init__(self, total: int, progress: bool, log: Callable[[str], None]) -> None:
        from tqdm.auto import tqdm

        self.total, self.progress, self.log, self.finished = total, progress, log, 0
        self.bar = tqdm(total=total, disable=not progress, desc="bench run", unit="unit", dynamic_ncols=True)

    def skip(self, n: int) -> None:
        """``n`` units of a method were committed before this run started."""
        self.bar.update(n)
        self.finished += n

    def batch(self, name: str, batch: Sequence[Unit], seconds: float) -> None:
        """A batch of ``name`` is committed."""
        self.bar.update(len(batch))
        self.finished += len(batch)
        if not self.progress:
            self.log(f"{name}: {self.finished}/{self.total} units done ({_what(batch, seconds)})")

    def check(self) -> None:
        """Raise to stop the loop before the next batch (a torchrun job whose other rank failed)."""

    def steps(self, what: str) -> Callable[[int, int], None]:
        """An optimisation-step observer for the batch described by ``what``."""
        return _step_display(self.bar, what)

    def __enter__(self) -> BarProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _what(batch: Sequence[Unit], seconds: float) -> str:
    return f"batch of {len(batch)}: {', '.join(sorted({u.label for u in batch}))}; {seconds:.1f} s"


def run_units(session: Session, store: RunStore, units: Sequence[Unit], progress: BarProgress,
              stop_after: int | None = None,
              shard: Callable[[list[Unit]], list[Unit]] | None = None) -> None:
    """Run every method over its pending units, batch by batch, committing each batch to ``store``.

    ``shard`` picks this process's part of a method's pending units (a torchrun rank's); default: all.
    """
    prep = session.prep
    sample_ids = {it.id for it in prep.items[: prep.config.max_samples]}
    batches = 0
    for name, method in session.methods.items():
        pending = [u for u in units if not store.done(*u.key(name))]
        progress.skip(len(units) - len(pending))
        mine = shard(pending) if shard is not None else pending
        if not mine:
            continue
        choose_compile(prep, name, method, len(mine), session.log)
        size = batch_size_for(prep, name, mine, session.log)
        compile_failed(prep, name, session.log)
        if session.writer:
            _write_config(store, session)  # now with the batch size the probe chose
        for k in range(0, len(mine), size):
            progress.check()
            batch = mine[k : k + size]
            start = time.perf_counter()
            with observe_steps(progress.steps(f"{name} batch of {len(batch)}")):
                record = run_batch(prep, store, method, batch, sample_ids)
            store.commit(record)
            progress.batch(name, batch, time.perf_counter() - start)
            batches += 1
            if stop_after is not None and batches >= stop_after:
                raise KeyboardInterrupt(f"stopped after {batches} batches (test hook)")
        if compile_failed(prep, name, session.log) and session.writer:
            _write_config(store, session)
        _release_memory(prep.device)


def choose_compile(prep: Prepared, name: str, method: Method, units: int, log: Callable[[str], None]) -> None:
    """Compile the generator and the perceptual distance for ``name`` or not.

    ``--compile auto`` decides by :func:`bench.accel.compile_pays`.

    Set before the method's batch probe, so that the probe measures what runs; recorded in its settings. A
    generator that cannot compile (the StyleGAN v1 one) or a compilation that failed before runs eager.
    """
    accel = prep.accels[name]
    can = isinstance(prep.generator, Compilable) and not compile_failure(prep.generator, prep.perceptual)
    wanted = can and (compile_pays(prep.device, units, method.params.steps, prep.generator.resolution)
                      if prep.config.compile == "auto" else accel.compile)
    if wanted != accel.compile:
        accel = prep.accels[name] = replace(accel, compile=wanted)
        if wanted:
            log(f"{name}: compiled (--compile auto: {units} images x {method.params.steps} steps at "
                f"{prep.generator.resolution} px repay compiling; a new graph takes about a minute, in the batch "
                "probe)")
    set_compiled(accel.compile, prep.generator, prep.perceptual)


def compile_failed(prep: Prepared, name: str, log: Callable[[str], None]) -> bool:
    """Whether ``name`` was to run compiled but a compilation failed (the networks fell back to eager).

    Records it in the method's settings and says so once.
    """
    failure = compile_failure(prep.generator, prep.perceptual)
    if not prep.accels[name].compile or failure is None:
        return False
    prep.accels[name] = replace(prep.accels[name], compile=False)
    set_compiled(False, prep.generator, prep.perceptual)
    log(f"{name}: runs eager, torch.compile failed: {failure}")
    return True


def _step_display(bar, what: str) -> Callable[[int, int], None]:
    """An optimisation-step observer that shows ``what: step k/N`` in the progress bar (at most twice a second)."""
    last = [0.0]

    def show(done: int, steps: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done == steps:
            last[0] = now
            bar.set_postfix_str(f"{what}: step {done}/{steps}", refresh=True)

    return show


def _release_memory(device: torch.device) -> None:
    """Hand cached GPU memory back between methods, so that the next method's batch probe sees the card."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def method_settings(prep: Prepared, methods: dict[str, Method]) -> dict[str, dict]:
    """Per method, what it actually runs with: every hyper-parameter, precision, batch size, perceptual loss."""
    from methods.fwplus import describe_base_code

    return {name: {"params": asdict(m.params), "precision": prep.accels[name].label,
                   "batch_size": prep.batch_sizes.get(name, prep.config.batch_size),
                   "perceptual": prep.descriptions["perceptual"]}
            | ({"base_code": describe_base_code(prep.generator, m.params.base_res)}
               if hasattr(m.params, "base_res") else {})
            | ({"encoder": m.encoder.source} if getattr(getattr(m, "encoder", None), "source", None) else {})
            for name, m in methods.items()}


def _write_config(store: RunStore, session: Session) -> None:
    store.write_json("config.json", session.cfg | {"method_settings": method_settings(session.prep, session.methods)}
                     | ({"skipped_methods": session.prep.skipped} if session.prep.skipped else {}))


def work_units(prep: Prepared) -> list[Unit]:
    """Every (item, transform) of the run, transform by transform (the aligned pass first).

    Items of a made set (``set:PATH``) carry their stored transform: each is one unit under its stored
    label and is not transformed again. Otherwise every item gets every transform, with parameters drawn
    from its seed.
    """
    if all(it.transform is not None and it.mask is not None for it in prep.items):
        return [Unit(it, str(it.transform.get("label", "stored")), None) for it in prep.items]
    res, fill = prep.generator.resolution, prep.config.fill
    return [Unit(it, spec.label, sample_transform(spec, seed=it.seed, resolution=res, fill=fill))
            for spec in prep.specs for it in prep.items]


def _notes(prep: Prepared, methods: dict[str, Method]) -> list[str]:
    c = prep.config
    stored = all(it.transform is not None for it in prep.items)
    labels = "as stored in the set" if stored else ", ".join(s.label for s in prep.specs)
    return [f"device: {prep.device}  profile: {c.profile}  items: {len(prep.items)}  "
            f"transforms: {labels}  methods: {', '.join(prep.methods)}",
            f"generator: {prep.descriptions['generator']}",
            f"data: {prep.descriptions['data']}",
            f"perceptual loss: {prep.descriptions['perceptual']}",
            f"precision{' (' + c.precision + ')' if c.precision == 'auto' else ''}: "
            f"{describe_accels(prep.accels)}  batch size: {c.batch_size}"] + (
        [f"edits: {', '.join(j.label for j in prep.edits)}"] if prep.edits else []) + [
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in asdict(m.params).items()) for name, m in methods.items()] + [
        f"{name}: not run: {why}" for name, why in prep.skipped.items()]
