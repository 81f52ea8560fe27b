"""Edits inside a run (``--edit smile:-2,2``) and two of the editing metrics of DESIGN.md.

For every inverted batch and every (direction, strength) the method's ``edit`` is rendered, then scored:

1. **Ground truth**, for items that carry their generator latent (``synthetic:N``): the target edit is
   ``T(G(w + strength * n))`` with the item's own transform T (n on every ws row, as InterFaceGAN and
   BDInvert apply it), scored with the run's reconstruction metrics, whole image and valid region, under
   ``edit[LABEL]/METRIC``.
2. **Attribute change and preservation**, for the embedded world's attributes: the attribute net's
   predicted change of the edited attribute between the reconstruction and its edit, signed by the
   strength so that higher is better (``edit[LABEL]/attr-gain``), and the mean absolute change of the other
   attributes (``edit[LABEL]/attr-drift``, lower is better).

3. **Identity preservation** (face runs with the identity metric): the face-recognition similarity of the
   edit to its source image, the method's input (``edit[LABEL]/source-identity``), as pSp, e4e and
   HyperStyle report it; an image without a detected face is a failed row with the reason, never dropped.

Consistency between the edit of T(x) and T(edit of x) is scored by :func:`consistency_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.edits import parse_edit_spec, resolve_direction
from bench.metrics import MASKED_SUFFIX, Metric
from methods import EditDirection, Inversion, Method
from transforms import TransformParams, apply_transform

SOURCE_IDENTITY = "source-identity"


@dataclass(frozen=True)
class EditJob:
    """One direction at one strength; ``label`` is e.g. ``smile:+2``."""

    label: str
    direction: EditDirection
    strength: float


def edit_jobs(specs: Sequence[str], generator) -> list[EditJob]:
    """Parse ``--edit`` values into jobs (strength 0 is the reconstruction itself and is skipped)."""
    jobs = []
    for text in specs:
        spec = parse_edit_spec(text)
        direction = resolve_direction(spec, num_ws=generator.num_ws, w_dim=generator.w_dim)
        for s in spec.strengths:
            if s != 0:
                jobs.append(EditJob(f"{direction.name}:{s:+g}", direction, float(s)))
    return jobs


def metric_name(job: EditJob, metric: str) -> str:
    """Results-table name of an editing metric."""
    return f"edit[{job.label}]/{metric}"


def metric_entries(jobs: Sequence[EditJob], metrics: Sequence[Metric], with_attributes: bool) -> dict[str, dict]:
    """metrics.json entries for every editing metric a run with these jobs can write."""
    out = {}
    for job in jobs:
        for m in metrics:
            entry = {"higher_is_better": m.info.higher_is_better, "range": list(m.info.value_range),
                     "available": m.available, "reason": m.reason}
            for suffix, where in (("", ""), (MASKED_SUFFIX, "; valid region only")):
                out[metric_name(job, m.info.name + suffix)] = {
                    **entry, "description": f"edit {job.label} vs the ground-truth edit T(G(w + a n)) "
                                            f"(synthetic sources only): {m.info.description}{where}"}
        for m in metrics:
            if m.info.name == "identity":
                out[metric_name(job, SOURCE_IDENTITY)] = {
                    "higher_is_better": True, "range": list(m.info.value_range), "available": m.available,
                    "reason": m.reason, "description": f"edit {job.label} vs its source image (the method's input): "
                                                       f"{m.info.description}"}
        if with_attributes:
            out[metric_name(job, "attr-gain")] = {
                "higher_is_better": True, "range": [-1.0, 1.0], "available": True, "reason": "",
                "description": f"attribute net: change of {job.direction.name} from the reconstruction to its edit, "
                               "signed by the strength"}
            out[metric_name(job, "attr-drift")] = {
                "higher_is_better": False, "range": [0.0, 1.0], "available": True, "reason": "",
                "description": "attribute net: mean |change| of the other attributes under the edit"}
    return out


def _ground_truth(job: EditJob, latents: torch.Tensor, generator, params: list[TransformParams]) -> torch.Tensor:
    ws = latents[:, None].expand(-1, generator.num_ws, -1)
    offset = job.direction.offset(generator.num_ws, job.strength).to(ws)
    with torch.no_grad():
        target = generator.synthesis(ws + offset).clamp(-1, 1)
    return apply_transform(target, params).image


def edit_scores(method: Method, inv: Inversion, generator, jobs: Sequence[EditJob], metrics: Sequence[Metric],
                latents: torch.Tensor | None, params: list[TransformParams] | None, mask: torch.Tensor,
                ok: torch.Tensor, attribute_net=None, attributes: Sequence[str] = (),
                failures: dict[str, list[str | None]] | None = None,
                sources: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Editing metrics name -> (N,) on the CPU, and the edited images per job label (for samples).

    ``ok`` (N,) marks the images whose inversion succeeded; failed ones are scored on a stand-in (their
    values are recorded as NaN by the runner), so that they cannot make a metric reject the batch.
    ``failures``, when given, receives per editing-metric name the per-image reasons of a metric that failed
    on single images (``Metric.item_failures``: identity with no face in the ground-truth edit), so that the
    runner records those rows as failed with the reason, as it does for reconstruction rows.
    ``sources``, when given, are the method's inputs: with an identity metric each edit is also scored
    against its source (``edit[LABEL]/source-identity``).
    """
    identity = next((m for m in metrics if m.info.name == "identity" and m.available), None)
    scores: dict[str, torch.Tensor] = {}
    images = {}
    with torch.no_grad():
        recon_attr = torch.sigmoid(attribute_net(inv.images))[:, : len(attributes)] if attribute_net else None
        for job in jobs:
            edited = method.edit(inv, generator, job.direction, job.strength).clamp(-1, 1)
            images[job.label] = edited
            if latents is not None and params is not None:
                gt = _ground_truth(job, latents.to(edited.device), generator, params)
                edited_ok = torch.where(ok[:, None, None, None], edited, gt)
                _score_pair(metrics, metric_name(job, ""), edited_ok, gt, mask, scores, failures)
            if identity is not None and sources is not None:
                src = sources.to(edited.device)
                name = metric_name(job, SOURCE_IDENTITY)
                scores[name] = identity(torch.where(ok[:, None, None, None], edited, src), src).float().cpu()
                if failures is not None and any(reasons := identity.item_failures()):
                    failures[name] = reasons
            if recon_attr is not None and job.direction.name in attributes:
                a = list(attributes).index(job.direction.name)
                delta = torch.sigmoid(attribute_net(edited))[:, : len(attributes)] - recon_attr
                others = torch.cat([delta[:, :a], delta[:, a + 1 :]], dim=1)
                scores[metric_name(job, "attr-gain")] = (delta[:, a] * (1 if job.strength > 0 else -1)).cpu()
                scores[metric_name(job, "attr-drift")] = others.abs().mean(dim=1).cpu()
    return scores, images


def consistency_entries(jobs: Sequence[EditJob], metrics: Sequence[Metric]) -> dict[str, dict]:
    """metrics.json entries of the consistency metric (edit of T(x) vs T(edit of x))."""
    out = {}
    for job in jobs:
        for m in metrics:
            for suffix, where in (("", ""), (MASKED_SUFFIX, "; valid region only")):
                out[metric_name(job, "consistency-" + m.info.name + suffix)] = {
                    "higher_is_better": m.info.higher_is_better, "range": list(m.info.value_range),
                    "available": m.available, "reason": m.reason,
                    "description": f"edit {job.label} of the transformed image vs the transformed edit of the "
                                   f"aligned image (same method): {m.info.description}{where}"}
    return out


def consistency_scores(method: Method, generator, jobs: Sequence[EditJob], metrics: Sequence[Metric],
                       aligned: Inversion, params: list[TransformParams], edited: dict[str, torch.Tensor],
                       mask: torch.Tensor, ok: torch.Tensor,
                       failures: dict[str, list[str | None]] | None = None) -> dict[str, torch.Tensor]:
    """Consistency per job: the method's edit of T(x) against T(the method's edit of the aligned x).

    ``aligned`` holds the same method's latents for the aligned images (from the run's identity pass);
    ``edited`` the edits of the transformed images from :func:`edit_scores`. ``failures`` as in
    :func:`edit_scores` (identity: no face in the transformed edit of the aligned image, the target here).
    """
    scores = {}
    with torch.no_grad():
        for job in jobs:
            reference = apply_transform(method.edit(aligned, generator, job.direction, job.strength).clamp(-1, 1),
                                        params).image
            ours = torch.where(ok[:, None, None, None], edited[job.label], reference)
            _score_pair(metrics, metric_name(job, "consistency-"), ours, reference, mask, scores, failures)
    return scores


def _score_pair(metrics: Sequence[Metric], prefix: str, pred: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor, scores: dict[str, torch.Tensor],
                failures: dict[str, list[str | None]] | None) -> None:
    """Score ``pred`` vs ``target`` with every available metric, whole image and valid region.

    Values go into ``scores`` under ``prefix + name``, per-image failures (``Metric.item_failures``) into
    ``failures``.
    """
    for m in (m for m in metrics if m.available):
        for name, kwargs in ((prefix + m.info.name, {}), (prefix + m.info.name + MASKED_SUFFIX, {"mask": mask})):
            scores[name] = m(pred, target, **kwargs).float().cpu()
            reasons = m.item_failures()
            if failures is not None and any(reasons):
                failures[name] = reasons
