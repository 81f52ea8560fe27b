"""Identity similarity: cosine of dlib face-recognition embeddings of reconstruction and target.

Which image the detector runs on, the same for every method: **the target** (the transformed input the
method was given). Its most confident face box is reused for the reconstruction; the 68 landmarks are
fitted in each image inside that box (the embedding network needs its own image's landmarks to cut its
150x150 aligned chip) and each image is embedded from its own landmarks. A method is therefore never
excused by a detector failing on its output (a reconstruction with no face in that box just scores
low), and the items that fail, those whose target has no detectable face, are the same for every method
of a (transform, item): the failure count per (method, transform) is comparable across methods.

A failed item is not dropped: its value is NaN and :meth:`IdentityMetric.item_failures` says why; the
runner records it as a failed row of this metric (``failed: identity: no face detected in the target ...``),
counted in the tables' ``n_failed``.

Masked variant (``identity@valid``): pixels outside the transform's valid region are set to mid-grey (0)
in both images before detection and embedding, so the border fill cannot supply face evidence.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.data.images import to_uint8
from bench.metrics.base import Metric, MetricInfo, MetricOptions, register_metric

IDENTITY_INFO = MetricInfo(
    name="identity", higher_is_better=True, value_range=(-1.0, 1.0),
    description=("identity similarity: cosine of dlib's 128-D face-recognition ResNet embeddings "
                 "(dlib_face_recognition_resnet_model_v1, no jitter) of reconstruction and target; the face is "
                 "detected (dlib HOG, the most confident box) on the target only and that box is reused for "
                 "the reconstruction, landmarks fitted in each; items whose target has no detected face are "
                 "recorded as failed, never dropped"),
)


class IdentityMetric(Metric):
    """Cosine similarity of face embeddings (higher is better, 1 = the same face embedding).

    Unavailable, with the reason, when the ``faces`` extra is not installed.
    """

    info = IDENTITY_INFO

    def __init__(self) -> None:
        from bench.faces import faces_unavailable_reason

        self.reason = faces_unavailable_reason()
        self.available = not self.reason
        self._failures: list[str | None] = []

    def item_failures(self) -> list[str | None]:
        """Per image of the last call: why it has no value (NaN), or None where it was scored."""
        return list(self._failures)

    def _compute(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None:
            pred, target = pred * mask, target * mask
        values, self._failures = identity_scores(_to_numpy(pred), _to_numpy(target))
        return torch.tensor(values, dtype=torch.float32)


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()


def identity_scores(preds: np.ndarray, targets: np.ndarray) -> tuple[list[float], list[str | None]]:
    """Identity similarity per image pair (detection on the target, its box reused for the prediction).

    Args:
        preds: (N, H, W, 3) uint8 RGB reconstructions.
        targets: (N, H, W, 3) uint8 RGB targets.

    Returns:
        Values (NaN where no face was found in the target) and per image the failure reason or None.
    """
    from bench.faces import cosine, detect_face, embedding

    values, reasons = [], []
    for pred, target in zip(preds, targets, strict=True):
        det = detect_face(target)
        if det is None:
            values.append(float("nan"))
            reasons.append(f"no face detected in the target ({target.shape[1]}x{target.shape[0]} px, "
                           f"dlib HOG upsampled x{2 ** _steps(target)})")
            continue
        values.append(cosine(embedding(pred, det.box), embedding(target, det.box)))
        reasons.append(None)
    return values, reasons


def _steps(image: np.ndarray) -> int:
    from bench.faces import upsample_steps

    return upsample_steps(min(image.shape[:2]))


@register_metric("identity", info=IDENTITY_INFO)
def _identity_factory(options: MetricOptions) -> Metric:
    return IdentityMetric()
