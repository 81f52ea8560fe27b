"""The runner: source -> transform -> method.invert -> metrics -> run directory.

``run(config)`` is the Python API behind ``bench run``. It resolves the device once, loads the generator
and data, expands the transforms, and for every (transform, method) inverts the pending items in batches,
scoring each reconstruction against the transformed target (whole image and valid region) and appending
the rows to the run directory as soon as a batch finishes. Re-running with the same run directory skips
finished items.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bench.accel import describe_accels
from bench.config import RunConfig, method_overrides
from bench.data import Item
from bench.data.images import save_image
from bench.data.sets import safe_name
from bench.editing import consistency_entries, consistency_scores, edit_scores, metric_entries
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
from methods import Inversion, Method, build_method, get_preset
from transforms import (
    TransformParams,
    apply_transform,
)
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


def score(metrics: Sequence[Metric], pred: torch.Tensor, target: torch.Tensor,
          mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every available metric, whole image and valid region: name -> (N,) on the CPU."""
    out = {}
    with torch.no_grad():
        for m in metrics:
            if m.available:
                out[m.info.name] = m(pred, target).float().cpu()
                out[m.info.name + MASKED_SUFFIX] = m(pred, target, mask=mask).float().cpu()
    return out


def _invert_adaptive(method: Method, targets: torch.Tensor, prep: Prepared, seeds: list[int]):
    """Invert, halving the batch and retrying on CUDA out-of-memory (results are batch-invariant).

    The size that fitted is kept for the method's later batches, so one out-of-memory is not paid again.
    """
    fits = prep.batch_sizes.get(method.name)
    if fits is not None and targets.shape[0] > fits:
        return [part for k in range(0, targets.shape[0], fits)
                for part in _invert_adaptive(method, targets[k : k + fits], prep, seeds[k : k + fits])]
    try:
        with prep.accels[method.name].context(prep.device):
            return [method.invert(targets, prep.generator, seeds=seeds, perceptual=prep.perceptual)]
    except torch.cuda.OutOfMemoryError:
        if targets.shape[0] == 1:
            raise
        torch.cuda.empty_cache()
        half = targets.shape[0] // 2
        prep.batch_sizes[method.name] = half
        return (_invert_adaptive(method, targets[:half], prep, seeds[:half])
                + _invert_adaptive(method, targets[half:], prep, seeds[half:]))


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return type(first)(first.method, {k: torch.cat([p.latents[k] for p in parts]) for k in first.latents},
                       torch.cat([p.images for p in parts]), torch.cat([p.loss for p in parts]),
                       tuple(f for p in parts for f in p.failed), first.info)


def warp_batch(batch: list[Item], params: list[TransformParams] | None, device: torch.device):
    """Targets, masks and parameter dicts of a batch: transform it, or use a made set's stored warp."""
    images = torch.stack([it.image for it in batch]).to(device)
    if params is None:  # items of a made set arrive already transformed, with their masks
        masks = torch.stack([it.mask for it in batch]).to(device)
        return images, masks, [dict(it.transform or {}) for it in batch]
    warped = apply_transform(images, params)
    return warped.image, warped.mask, [p.to_dict() for p in params]


def run_batch(prep: Prepared, store: RunStore, method: Method, spec_label: str, batch: list[Item],
              params: list[TransformParams] | None, sample_ids: set[str]) -> None:
    """Transform, invert, score and record one batch of items for one method and transform."""
    dev = prep.device
    targets, masks, param_dicts = warp_batch(batch, params, dev)
    seeds = [stable_seed(it.seed, method.name, spec_label) for it in batch]
    start = time.perf_counter()
    inv = _concat(_invert_adaptive(method, targets, prep, seeds))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    failed = _failures(inv)
    ok = torch.tensor([f is None for f in failed], device=targets.device)
    # failed items are scored on a finite stand-in (their values are then recorded as NaN), so that a
    # NaN reconstruction cannot make the metrics reject the whole batch
    scores = score(prep.metrics, torch.where(ok[:, None, None, None], inv.images, targets), targets, masks)
    edited = {}
    if prep.edits:
        latents = torch.stack([it.latent for it in batch]) if all(it.latent is not None for it in batch) else None
        edit_sc, edited = edit_scores(method, inv, prep.generator, prep.edits, prep.metrics, latents, params, masks,
                                      ok, prep.attribute_net, prep.attributes)
        scores.update(edit_sc)
        aligned = _aligned_inversion(prep, store, method, batch) if params is not None else None
        if aligned is not None and spec_label != prep.specs[0].label:
            scores.update(consistency_scores(method, prep.generator, prep.edits, prep.metrics, aligned, params,
                                             edited, masks, ok))
    rows, samples = [], []
    for i, (it, seed) in enumerate(zip(batch, seeds, strict=True)):
        status = "ok" if failed[i] is None else f"failed: {failed[i]}"
        for name, values in scores.items():
            value = float(values[i]) if status == "ok" else float("nan")
            rows.append({"item": it.id, "method": method.name, "transform": spec_label, "seed": seed,
                         "metric": name, "value": value, "status": status})
        if prep.config.save_latents:
            store.save_latents(method.name, safe_name(spec_label), it.id, {k: v[i] for k, v in inv.latents.items()})
        if prep.edits and spec_label == prep.specs[0].label and prep.specs[0].is_identity:
            prep.aligned_latents.setdefault(method.name, {})[it.id] = {
                k: v[i].detach().cpu() for k, v in inv.latents.items()}
        if it.id in sample_ids and status == "ok":
            extra = [(f"{method.name} {label}", img[i]) for label, img in edited.items()]
            samples += _save_samples(store, it.id, spec_label, method.name, targets[i], inv.images[i], extra)
    param_rows = [{"item": it.id, "transform": spec_label, "params": json.dumps(p)}
                  for it, p in zip(batch, param_dicts, strict=True)]
    timing = {"method": method.name, "transform": spec_label, "items": len(batch), "seconds": round(seconds, 4)}
    store.add_batch(rows, param_rows, timing, samples)


def _failures(inv) -> list[str | None]:
    """Per item, the method's failure reason, or a note if it returned a non-finite image while 'ok'."""
    finite = torch.isfinite(inv.images).flatten(1).all(1).tolist()
    return [f if f is not None or fin else "non-finite reconstruction"
            for f, fin in zip(inv.failed, finite, strict=True)]


def _aligned_inversion(prep: Prepared, store: RunStore, method: Method, batch: list[Item]):
    """The method's latents for the aligned items from the run's identity pass (or None).

    They are kept in memory during the run; a resumed run reads them back from the saved latents, so it
    scores consistency exactly as an uninterrupted one.
    """
    first = prep.specs[0] if prep.specs else None
    if first is None or not first.is_identity:
        return None
    kept = prep.aligned_latents.get(method.name, {})
    if all(it.id in kept for it in batch):
        loaded = [{k: v.to(prep.device) for k, v in kept[it.id].items()} for it in batch]
    else:
        folder = store.dir / "latents" / method.name / safe_name(first.label)
        paths = [folder / f"{safe_name(it.id)}.pt" for it in batch]
        if not prep.config.save_latents or not all(p.is_file() for p in paths):
            return None
        loaded = [torch.load(p, map_location=prep.device, weights_only=True) for p in paths]
    latents = {k: torch.stack([d[k] for d in loaded]) for k in loaded[0]}
    return Inversion(method.name, latents, torch.empty(0), torch.zeros(len(batch)), (None,) * len(batch))


def _save_samples(store: RunStore, item: str, label: str, method: str, target: torch.Tensor,
                  recon: torch.Tensor, extra: list[tuple[str, torch.Tensor]] = ()) -> list[dict[str, str]]:
    folder = safe_name(label)
    rows = []
    for kind, img in (("input", target), (method, recon), *extra):
        rel = f"{folder}/{safe_name(item)}__{safe_name(kind)}.png"
        path = store.dir / "samples" / rel
        if kind == "input" and path.exists():
            continue
        save_image(img.detach().cpu(), path)
        rows.append({"item": item, "transform": label, "kind": kind, "path": rel})
    return rows


def default_run_dir() -> Path:
    """``runs/YYYYmmdd-HHMMSS`` in the current directory."""
    return Path("runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run(config: RunConfig, *, progress: bool = True, log: Callable[[str], None] = print,
        _stop_after_batches: int | None = None) -> Path:
    """Run the benchmark described by ``config``; returns the run directory.

    Args:
        config: the run configuration (see :class:`bench.config.RunConfig`).
        progress: show a progress bar on stderr.
        log: where messages go (skipped files, notes).
        _stop_after_batches: testing hook that simulates a killed run by raising after that many batches.
    """
    from tqdm.auto import tqdm

    prep = prepare(config, log)
    # build every method (and load its encoder) before anything runs, so a missing encoder fails fast
    methods = {name: build_method(name, method_overrides(prep.config, name, get_preset(name).default_steps),
                                  **method_resources(get_preset(name), prep)) for name in prep.methods}
    run_dir = Path(prep.config.run_dir) if prep.config.run_dir else default_run_dir()
    store = RunStore(run_dir)
    cfg = prep.config.to_dict() | {"run_dir": str(run_dir)}
    store.check_config(cfg)
    store.write_json("config.json", cfg)
    store.write_json("versions.json", versions(prep.device, **prep.descriptions,
                                                fast_path=describe_accels(prep.accels)))
    store.write_json("metrics.json", metric_table(prep.metrics)
                     | metric_entries(prep.edits, prep.metrics, prep.attribute_net is not None)
                     | consistency_entries(prep.edits, prep.metrics))
    for note in _notes(prep):
        log(note)
    sample_ids = {it.id for it in prep.items[: prep.config.max_samples]}
    groups = 1 if all(it.transform is not None for it in prep.items) else len(prep.specs)
    total = len(prep.items) * groups * len(prep.methods)
    done_batches = 0
    with tqdm(total=total, disable=not progress, desc="bench run", unit="item") as bar:
        for label, items, params in _work_groups(prep):
            for name, method in methods.items():
                pending = [it for it in items if not store.done(it.id, name, label)]
                bar.update(len(items) - len(pending))
                size = batch_size_for(prep, name, pending, log) if pending else 1
                for k in range(0, len(pending), size):
                    batch = pending[k : k + size]
                    bar.set_postfix_str(f"{label} / {name}")
                    batch_params = None if params is None else [params[it.id] for it in batch]
                    run_batch(prep, store, method, label, batch, batch_params, sample_ids)
                    bar.update(len(batch))
                    done_batches += 1
                    if _stop_after_batches is not None and done_batches >= _stop_after_batches:
                        raise KeyboardInterrupt(f"stopped after {done_batches} batches (test hook)")
    return run_dir


def _work_groups(prep: Prepared):
    """(transform label, items, per-item params or None) in run order.

    Items of a made set (``set:PATH``) carry their stored transform: they are grouped by its label and
    not transformed again. Otherwise every item gets every transform, with parameters from its seed.
    """
    if all(it.transform is not None and it.mask is not None for it in prep.items):
        labels = list(dict.fromkeys(str(it.transform.get("label", "stored")) for it in prep.items))
        for label in labels:
            yield label, [it for it in prep.items if str(it.transform.get("label", "stored")) == label], None
        return
    res, fill = prep.generator.resolution, prep.config.fill
    for spec in prep.specs:
        yield spec.label, prep.items, {it.id: sample_transform(spec, seed=it.seed, resolution=res, fill=fill)
                                       for it in prep.items}


def _notes(prep: Prepared) -> list[str]:
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
        [f"edits: {', '.join(j.label for j in prep.edits)}"] if prep.edits else [])
