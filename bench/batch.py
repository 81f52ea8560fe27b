"""One batch of work units: transform, invert, score, and the record that commits it.

A unit is one (item, transform) for one method. A batch holds units of one method, possibly of several
transforms (the runner cuts a method's whole work list into memory-sized batches). :func:`run_batch`
inverts them together and returns a :class:`bench.results.BatchRecord` holding every row of every unit; the
runner commits it in one step. Per-unit seeds, per-image losses and the batch-of-one padding make each
unit's numbers independent of the batch it ran in.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.compiling import compilable, stop_compiling
from bench.data import Item
from bench.data.images import save_image
from bench.data.sets import safe_name
from bench.editing import consistency_scores, edit_scores
from bench.features import write_batch_features
from bench.metrics import MASKED_SUFFIX, Metric
from bench.prepare import Prepared, stable_seed
from bench.results import BatchRecord, RunStore
from bench.targets import make_targets
from methods import Inversion, Method
from transforms import TransformParams

EMPTY_REGION = "the transform leaves no valid pixel (the valid region is empty)"


@dataclass(frozen=True, eq=False)
class Unit:
    """One item under one transform (``params`` None: a made set's item, already transformed)."""

    item: Item
    label: str
    params: TransformParams | None

    def key(self, method: str) -> tuple[str, str, str]:
        return (self.item.id, method, self.label)

    def seed(self, method: str) -> int:
        return stable_seed(self.item.seed, method, self.label)


def score(metrics: Sequence[Metric], pred: torch.Tensor, target: torch.Tensor,
          mask: torch.Tensor, failures: dict[str, list[str | None]] | None = None) -> dict[str, torch.Tensor]:
    """Every available metric, whole image and valid region: name -> (N,) on the CPU.

    ``failures``, when given, receives per metric name the per-image reasons of metrics that can fail on
    single images (``Metric.item_failures``, e.g. no face detected for ``identity``).
    """
    out = {}
    with torch.no_grad():
        for m in metrics:
            if m.available:
                for name, kwargs in ((m.info.name, {}), (m.info.name + MASKED_SUFFIX, {"mask": mask})):
                    out[name] = m(pred, target, **kwargs).float().cpu()
                    if failures is not None and any(m.item_failures()):
                        failures[name] = m.item_failures()
    return out


def invert_adaptive(method: Method, targets: torch.Tensor, prep: Prepared, seeds: list[int]) -> list[Inversion]:
    """Invert, halving the batch and retrying on CUDA out-of-memory (results are batch-invariant).

    A compilation that fails while the batch runs (``--compile``; the backward graph compiles at the first
    backward pass) makes the generator and the perceptual distance run eager, and the batch is run again.

    A single image is inverted as a batch of two (itself twice) and the copy dropped, so that it runs the
    same kernels as every larger batch: on some back-ends a batch of one takes other convolution and matrix
    algorithms, whose rounding moved results by up to 0.01 dB. The size that fitted is kept for the
    method's later batches, so one out-of-memory is not paid again.
    """
    fits = prep.batch_sizes.get(method.name)
    if fits is not None and targets.shape[0] > fits:
        return [part for k in range(0, targets.shape[0], fits)
                for part in invert_adaptive(method, targets[k : k + fits], prep, seeds[k : k + fits])]
    single = targets.shape[0] == 1
    batch, batch_seeds = (targets.expand(2, -1, -1, -1).contiguous(), seeds * 2) if single else (targets, seeds)
    try:
        with prep.accels[method.name].context(prep.device):
            inv = method.invert(batch, prep.generator, seeds=batch_seeds, perceptual=prep.perceptual)
        return [take(inv, [0]) if single else inv]
    except torch._dynamo.exc.BackendCompilerFailed as err:  # a compilation that failed in backward: run eager
        if not any(net.compiled for net in compilable(prep.generator, prep.perceptual)):
            raise
        stop_compiling(err, prep.generator, prep.perceptual)
        return invert_adaptive(method, targets, prep, seeds)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        if single:
            with prep.accels[method.name].context(prep.device):
                return [method.invert(targets, prep.generator, seeds=seeds, perceptual=prep.perceptual)]
        half = targets.shape[0] // 2
        prep.batch_sizes[method.name] = half
        return (invert_adaptive(method, targets[:half], prep, seeds[:half])
                + invert_adaptive(method, targets[half:], prep, seeds[half:]))


def take(inv: Inversion, index: list[int]) -> Inversion:
    """The inversion of the images at ``index`` only."""
    idx = torch.tensor(index, device=inv.images.device)
    return Inversion(inv.method, {k: v[idx.to(v.device)] for k, v in inv.latents.items()}, inv.images[idx],
                     inv.loss[idx.to(inv.loss.device)], tuple(inv.failed[i] for i in index), inv.info)


def concat(parts: list[Inversion]) -> Inversion:
    """One inversion from the inversions of consecutive parts of a batch."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return Inversion(first.method, {k: torch.cat([p.latents[k] for p in parts]) for k in first.latents},
                     torch.cat([p.images for p in parts]), torch.cat([p.loss for p in parts]),
                     tuple(f for p in parts for f in p.failed), first.info)


def warp_batch(units: Sequence[Unit], device: torch.device, resample: str = "bilinear"):
    """Targets, masks and their records of a batch: made by ``bench.targets``, or a made set's stored warp.

    Returns (targets, masks, per unit ``{"target": how it was made, "hf_ratio": ...}`` or None for a made set).
    """
    if units[0].params is None:  # items of a made set arrive already transformed, with their masks
        images = torch.stack([u.item.image for u in units]).to(device)
        return images, torch.stack([u.item.mask for u in units]).to(device), None
    made = make_targets([u.item for u in units], [u.params for u in units], device, resample)
    ratios = made.hf_ratio.tolist()
    notes = [{"target": how, "hf_ratio": round(float(r), 4)} for how, r in zip(made.made, ratios, strict=True)]
    return made.image, made.mask, notes


def failures(inv: Inversion, masks: torch.Tensor) -> list[str | None]:
    """Per unit: the method's failure reason, a non-finite image, or an empty valid region; None if ok."""
    finite = torch.isfinite(inv.images).flatten(1).all(1).tolist()
    empty = (masks.flatten(1).sum(1) == 0).tolist()
    return [f if f is not None else "non-finite reconstruction" if not fin else EMPTY_REGION if emp else None
            for f, fin, emp in zip(inv.failed, finite, empty, strict=True)]


def run_batch(prep: Prepared, store: RunStore, method: Method, units: Sequence[Unit],
              sample_ids: set[str]) -> BatchRecord:
    """Transform, invert, score and save one batch of one method's units; returns the record to commit."""
    dev = prep.device
    targets, masks, notes = warp_batch(units, dev, prep.config.resample)
    seeds = [u.seed(method.name) for u in units]
    start = time.perf_counter()
    inv = concat(invert_adaptive(method, targets, prep, seeds))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    failed = failures(inv, masks)
    ok = torch.tensor([f is None for f in failed], device=targets.device)
    # failed items are scored on a finite stand-in (their values are then recorded as NaN), so that a
    # NaN reconstruction cannot make the metrics reject the whole batch
    metric_failed: dict[str, list[str | None]] = {}
    scores = score(prep.metrics, torch.where(ok[:, None, None, None], inv.images, targets), targets, masks,
                   metric_failed)
    edited, consistency = _edit_scores(prep, store, method, units, inv, masks, ok, scores, metric_failed, targets)
    per_unit = [{name: values[i] for name, values in scores.items()} | consistency.get(i, {})
                for i in range(len(units))]
    # the distribution metrics' features, written before the runner commits this batch's journal entry
    write_batch_features(prep, store, method.name, units, torch.where(ok[:, None, None, None], inv.images, targets),
                         targets, ok)
    return _record(prep, store, method, units, inv, targets, failed, per_unit, edited, seeds, seconds, sample_ids,
                   metric_failed, notes)


def _edit_scores(prep, store, method, units, inv, masks, ok, scores, metric_failed,
                 targets=None) -> tuple[dict, dict[int, dict]]:
    """Editing metrics into ``scores`` (all units); per-image metric failures into ``metric_failed``.

    Returns the edited images and, per index of a transformed unit, its consistency scores.
    """
    if not prep.edits:
        return {}, {}
    params = None if units[0].params is None else [u.params for u in units]
    items = [u.item for u in units]
    latents = torch.stack([it.latent for it in items]) if all(it.latent is not None for it in items) else None
    edit_sc, edited = edit_scores(method, inv, prep.generator, prep.edits, prep.metrics, latents, params, masks,
                                  ok, prep.attribute_net, prep.attributes, failures=metric_failed, sources=targets)
    scores.update(edit_sc)
    first = prep.specs[0] if prep.specs else None
    if params is None or first is None or not first.is_identity:
        return edited, {}
    for i, u in enumerate(units):  # this batch's aligned codes first: its transformed units may need them
        if u.label == first.label:
            prep.aligned_latents.setdefault(method.name, {})[u.item.id] = {
                k: v[i].detach().cpu() for k, v in inv.latents.items()}
    index = [i for i, u in enumerate(units) if u.label != first.label]
    aligned = aligned_inversion(prep, store, method, [units[i].item for i in index]) if index else None
    if aligned is None:
        return edited, {}
    pick = torch.tensor(index, device=masks.device)
    cons_failed: dict[str, list[str | None]] = {}
    cons = consistency_scores(method, prep.generator, prep.edits, prep.metrics, aligned,
                              [units[i].params for i in index], {k: v[pick] for k, v in edited.items()},
                              masks[pick], ok[pick], failures=cons_failed)
    for name, reasons in cons_failed.items():  # from the transformed units' positions to the batch's
        metric_failed[name] = [None] * len(units)
        for j, i in enumerate(index):
            metric_failed[name][i] = reasons[j]
    return edited, {i: {name: values[j] for name, values in cons.items()} for j, i in enumerate(index)}


def aligned_inversion(prep: Prepared, store: RunStore, method: Method, items: list[Item]) -> Inversion | None:
    """The method's latents for the aligned items from the run's identity pass (or None).

    They are kept in memory during the run; a resumed run reads the committed ones back from the saved
    latents, so it scores consistency exactly as an uninterrupted one.
    """
    first = prep.specs[0]
    kept = prep.aligned_latents.get(method.name, {})
    if all(it.id in kept for it in items):
        loaded = [{k: v.to(prep.device) for k, v in kept[it.id].items()} for it in items]
    else:
        folder = store.dir / "latents" / method.name / safe_name(first.label)
        paths = [folder / f"{safe_name(it.id)}.pt" for it in items]
        committed = all(store.done(it.id, method.name, first.label) for it in items)
        if not prep.config.save_latents or not committed or not all(p.is_file() for p in paths):
            return None
        loaded = [torch.load(p, map_location=prep.device, weights_only=True) for p in paths]
    latents = {k: torch.stack([d[k] for d in loaded]) for k in loaded[0]}
    return Inversion(method.name, latents, torch.empty(0), torch.zeros(len(items)), (None,) * len(items))


def _record(prep, store, method, units, inv, targets, failed, per_unit, edited, seeds, seconds,
            sample_ids, metric_failed=None, notes=None) -> BatchRecord:
    """Save latents and samples of the batch and gather its rows (nothing is committed here).

    ``metric_failed``: per metric, per unit, why that metric has no value for an otherwise ok unit (a row of
    that metric alone is then failed with the reason, e.g. ``failed: identity: no face detected ...``).
    """
    record = BatchRecord([u.key(method.name) for u in units])
    for i, (u, seed) in enumerate(zip(units, seeds, strict=True)):
        status = "ok" if failed[i] is None else f"failed: {failed[i]}"
        for name, value in per_unit[i].items():
            why = (metric_failed or {}).get(name, [None] * len(units))[i] if status == "ok" else None
            row_status = status if why is None else f"failed: {name}: {why}"
            record.results.append({"item": u.item.id, "method": method.name, "transform": u.label, "seed": seed,
                                   "metric": name, "value": float(value) if row_status == "ok" else float("nan"),
                                   "status": row_status})
        if prep.config.save_latents:
            store.save_latents(method.name, safe_name(u.label), u.item.id, {k: v[i] for k, v in inv.latents.items()})
        if u.item.id in sample_ids and status == "ok":
            extra = [(f"{method.name} {label}", img[i]) for label, img in edited.items()]
            record.samples += save_samples(store, u.item.id, u.label, method.name, targets[i], inv.images[i], extra)
        params = dict(u.item.transform or {}) if u.params is None else u.params.to_dict()
        record.transforms.append({"item": u.item.id, "transform": u.label, "params": json.dumps(params)}
                                 | (notes[i] if notes else {}))
    counts = Counter(u.label for u in units)
    record.timing = [{"method": method.name, "transform": label, "items": k,
                      "seconds": round(seconds * k / len(units), 4)} for label, k in counts.items()]
    return record


def save_samples(store: RunStore, item: str, label: str, method: str, target: torch.Tensor,
                 recon: torch.Tensor, extra: Sequence[tuple[str, torch.Tensor]] = ()) -> list[dict[str, str]]:
    """Write the sample PNGs of one unit; returns their index rows (the input once per item and transform)."""
    folder = safe_name(label)
    rows = []
    for kind, img in (("input", target), (method, recon), *extra):
        if kind == "input" and store.has_sample(item, label, kind):
            continue
        rel = f"{folder}/{safe_name(item)}__{safe_name(kind)}.png"
        save_image(img.detach().cpu(), store.dir / "samples" / rel)
        rows.append({"item": item, "transform": label, "kind": kind, "path": rel})
    return rows
