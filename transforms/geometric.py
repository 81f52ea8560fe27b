"""Per-item transform parameters and their application to image batches (over kornia).

Conventions (pixel coordinates): x to the right, y down, pixel centres at integers, so the image centre is
``((W-1)/2, (H-1)/2)``. A 3x3 matrix maps a *source* pixel ``(x, y, 1)`` to its *destination* pixel, which
is what ``kornia.geometry.transform.warp_affine`` expects with ``align_corners=True``. A positive angle
rotates counter-clockwise on screen (a point right of the centre moves up), as in kornia's ``rotate``;
note that kornia's ``get_affine_matrix2d`` uses the opposite sign, so it is not used here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from kornia.geometry.transform import warp_affine
from torch import nn

from transforms.spec import Op, TransformSpec, parse_transforms

FILL_MODES = ("reflection", "zeros", "border")
# How a warp samples its source: bilinear (what every peer does; a low-pass at sub-pixel offsets), bicubic,
# or a band-limited Lanczos-3 window (``transforms.resample``).
RESAMPLE_MODES = ("bilinear", "bicubic", "lanczos3")
# A bilinear sample of an all-ones image padded with zeros stays >= this only when all four neighbours
# are inside the source, i.e. the inverse-mapped location lies within [0, W-1] x [0, H-1] (to ~1e-3 px).
MASK_THRESHOLD = 0.999
RANGE_TOLERANCE = 1e-3
_PARAM_KEYS = ("label", "angle", "translation", "scale", "matrix", "fill", "resolution")


def check_fill(fill: str) -> str:
    """Return ``fill`` if it names a border fill in :data:`FILL_MODES`, else raise ``ValueError``."""
    if fill not in FILL_MODES:
        raise ValueError(f"unknown fill {fill!r}; valid fills are {', '.join(FILL_MODES)}")
    return fill


@dataclass(frozen=True)
class TransformParams:
    """The concrete transform of one item, with every random choice already drawn.

    Attributes:
        label: The spec's label (e.g. ``"R20"``, ``"rotate:10+scale:1.125"``).
        angle: Summary rotation in degrees, counter-clockwise on screen (sum over the ops).
        translation: Where the image centre moves, ``(dx right, dy down)`` in pixels.
        scale: Summary isotropic scale (product over the ops); > 1 zooms in.
        matrix: 3x3 row-major affine matrix mapping source pixel ``(x, y, 1)`` to destination pixel.
        fill: Border fill, one of :data:`FILL_MODES`.
        resolution: Image side in pixels that the matrix is meant for.
    """

    label: str
    angle: float
    translation: tuple[float, float]
    scale: float
    matrix: tuple[tuple[float, ...], ...]
    fill: str
    resolution: int

    def __post_init__(self) -> None:
        check_fill(self.fill)
        _check_resolution(self.resolution)
        object.__setattr__(self, "resolution", int(self.resolution))  # e.g. numpy.int64 from a table
        matrix = np.asarray(self.matrix, dtype=np.float64)
        if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
            raise ValueError(f"matrix must be a finite 3x3, got {self.matrix!r}")
        if not np.allclose(matrix[2], (0.0, 0.0, 1.0)) or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
            raise ValueError(f"matrix must be an invertible affine map (last row 0 0 1), got {self.matrix!r}")
        # Normalise containers (from_dict passes lists) so that equality and hashing behave.
        object.__setattr__(self, "matrix", tuple(tuple(float(v) for v in row) for row in matrix))
        object.__setattr__(self, "translation", tuple(float(v) for v in self.translation))
        object.__setattr__(self, "angle", float(self.angle))
        object.__setattr__(self, "scale", float(self.scale))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); inverse of :meth:`from_dict`."""
        out = asdict(self)
        out["translation"] = list(self.translation)
        out["matrix"] = [list(row) for row in self.matrix]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformParams:
        """Rebuild parameters from :meth:`to_dict` output; missing or unknown keys raise ``ValueError``."""
        missing = [k for k in _PARAM_KEYS if k not in data]
        unknown = sorted(set(data) - set(_PARAM_KEYS))
        if missing or unknown:
            raise ValueError(f"transform params: missing keys {missing}, unknown keys {unknown}")
        return cls(**{k: data[k] for k in _PARAM_KEYS})


@dataclass(frozen=True)
class TransformResult:
    """Output of :func:`apply_transform`.

    Attributes:
        image: (N, C, H, W) transformed images, float, in [-1, 1].
        mask: (N, 1, H, W) float32 in {0, 1}; 1 where the output pixel came from inside the source.
        matrix: (N, 3, 3) float32 source-to-destination pixel matrices.
    """

    image: torch.Tensor
    mask: torch.Tensor
    matrix: torch.Tensor


def _about_centre(linear: np.ndarray, centre: float) -> np.ndarray:
    """3x3 matrix applying the 2x2 ``linear`` map about the point (centre, centre)."""
    shift = np.eye(3)
    shift[:2, 2] = centre
    out = np.eye(3)
    out[:2, :2] = linear
    return shift @ out @ np.linalg.inv(shift)


def _op_matrix(op: Op, rng: np.random.Generator, centre: float) -> tuple[np.ndarray, float, float]:
    """Draw the random parts of ``op``; return its 3x3 matrix, angle (deg) and scale."""
    if op.kind == "rotate":
        sign = (1.0 if rng.random() < 0.5 else -1.0) if op.random_sign else 1.0
        angle = sign * op.value[0]
        rad = math.radians(angle)
        cos, sin = math.cos(rad), math.sin(rad)
        # y points down, so counter-clockwise on screen sends (1, 0) to (cos, -sin).
        return _about_centre(np.array([[cos, sin], [-sin, cos]]), centre), angle, 1.0
    if op.kind == "scale":
        return _about_centre(np.eye(2) * op.value[0], centre), 0.0, op.value[0]
    if op.random_direction:
        theta = rng.uniform(0.0, 2.0 * math.pi)
        shift = (op.value[0] * math.cos(theta), op.value[0] * math.sin(theta))
    else:
        shift = op.value
    out = np.eye(3)
    out[:2, 2] = shift
    return out, 0.0, 1.0


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def sample_params(
    spec: TransformSpec, *, seed: int, resolution: int, fill: str = "reflection"
) -> TransformParams:
    """Draw the concrete parameters of ``spec`` for one item.

    Op ``i`` draws from ``numpy.random.default_rng([seed, i])`` on the CPU, so the result depends only on
    (spec, seed, resolution), never on the batch or the order of items; and ``translate:50`` and
    ``translate:100`` with the same seed share their direction.

    Args:
        spec: The parsed transform.
        seed: Non-negative per-item seed.
        resolution: Working image side in pixels (translations are in pixels at this resolution).
        fill: Border fill, one of :data:`FILL_MODES`.

    Returns:
        The parameters, with the ops composed left to right into one matrix.
    """
    if not isinstance(spec, TransformSpec):
        raise TypeError(f"spec must be a TransformSpec, got {type(spec).__name__}")
    _check_seed(seed)
    check_fill(fill)
    _check_resolution(resolution)
    centre = (resolution - 1) / 2.0
    matrix, angle, scale = np.eye(3), 0.0, 1.0
    for index, op in enumerate(spec.ops):
        op_matrix, op_angle, op_scale = _op_matrix(op, np.random.default_rng([int(seed), index]), centre)
        matrix = op_matrix @ matrix
        angle += op_angle
        scale *= op_scale
    return _params_from_matrix(spec.label, matrix, angle, scale, fill, int(resolution))


def _params_from_matrix(
    label: str, matrix: np.ndarray, angle: float, scale: float, fill: str, resolution: int
) -> TransformParams:
    centre = np.array([(resolution - 1) / 2.0] * 2 + [1.0])
    moved = matrix @ centre - centre
    return TransformParams(label, angle, (moved[0], moved[1]), scale, matrix, fill, resolution)


def invert_params(params: TransformParams) -> TransformParams:
    """The inverse transform: its matrix is the inverse of ``params.matrix``.

    Args:
        params: Parameters of a forward transform.

    Returns:
        Parameters labelled ``"inverse(<label>)"`` with negated angle, reciprocal scale, the same fill and
        resolution; applying them to a transformed image maps it back onto the source frame.
    """
    inverse = np.linalg.inv(np.asarray(params.matrix, dtype=np.float64))
    inverse[2] = (0.0, 0.0, 1.0)  # exact affine row, free of round-off
    return _params_from_matrix(
        f"inverse({params.label})", inverse, -params.angle, 1.0 / params.scale, params.fill, params.resolution
    )


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    desc = f"shape {tuple(images.shape)}, dtype {images.dtype}"
    if images.ndim != 4 or images.shape[-1] != images.shape[-2] or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch with H == W; got {desc}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor in [-1, 1]; got {desc}")
    lo, hi = images.min().item(), images.max().item()
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(f"images must be finite and in [-1, 1]; got {desc}, range [{lo:.4g}, {hi:.4g}]")


def _check_params(params: Sequence[TransformParams], n: int | None, side: int | None) -> None:
    if n is not None and len(params) != n:
        raise ValueError(f"got {len(params)} transform params for a batch of {n} images")
    for i, p in enumerate(params):
        if not isinstance(p, TransformParams):
            raise TypeError(f"params[{i}] must be TransformParams, got {type(p).__name__}")
        if side is not None and p.resolution != side:
            raise ValueError(f"params[{i}] ({p.label!r}) is for resolution {p.resolution}, images are {side}")


def _warp(images: torch.Tensor, matrices: torch.Tensor, fill: str, resample: str = "bilinear") -> torch.Tensor:
    size = (images.shape[-2], images.shape[-1])
    if resample == "lanczos3":
        from transforms.resample import warp_lanczos

        return warp_lanczos(images, _full(matrices), fill, a=3)
    if fill == "zeros":
        # "zeros" means black: pad (x + 1) with 0, so the fill is -1 in [-1, 1] space (0 would be grey).
        return warp_affine(images + 1.0, matrices, size, mode=resample, padding_mode="zeros", align_corners=True) - 1.0
    return warp_affine(images, matrices, size, mode=resample, padding_mode=fill, align_corners=True)


def _full(affine: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) -> (N, 3, 3) with the row (0, 0, 1)."""
    last = torch.tensor([0.0, 0.0, 1.0], dtype=affine.dtype, device=affine.device).expand(affine.shape[0], 1, 3)
    return torch.cat([affine, last], dim=1)


def check_resample(resample: str) -> str:
    """Return ``resample`` if it names a mode in :data:`RESAMPLE_MODES`, else raise ``ValueError``."""
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"unknown resampling {resample!r}; valid modes are {', '.join(RESAMPLE_MODES)}")
    return resample


def apply_transform(images: torch.Tensor, params: Sequence[TransformParams],
                    resample: str = "bilinear") -> TransformResult:
    """Warp each image with its parameters, returning image, validity mask and matrix.

    Args:
        images: (N, C, H, W) float images in [-1, 1] (tolerance 1e-3), H == W.
        params: N parameters with ``resolution == H``, e.g. from :func:`sample_params`. Border fill per item:
            ``"reflection"`` mirrors the image about the edge pixels, ``"border"`` repeats the edge pixels,
            ``"zeros"`` fills with black (-1, not 0, which would be mid grey in [-1, 1]).
        resample: one of :data:`RESAMPLE_MODES`: ``"bilinear"`` (default), ``"bicubic"``, or
            ``"lanczos3"`` (band-limited: keeps most of the fine detail a bilinear warp blurs away; the
            window widens under minification). The mask does not depend on it.

    Returns:
        :class:`TransformResult` with ``image`` (N, C, H, W) clamped to [-1, 1] in the input dtype,
        ``mask`` (N, 1, H, W) float32 in {0, 1}: 1 where a zero-padded warp of an all-ones image is
        >= :data:`MASK_THRESHOLD` (the source location lies inside the pixel-centre square), and
        ``matrix`` (N, 3, 3) float32.
    """
    _check_images(images)
    _check_params(params, images.shape[0], images.shape[-1])
    check_resample(resample)
    matrices = torch.tensor([p.matrix for p in params], dtype=torch.float64)
    affine = matrices[:, :2, :].to(device=images.device, dtype=images.dtype)
    fills = sorted({p.fill for p in params})
    if len(fills) == 1:
        out = _warp(images, affine, fills[0], resample)
    else:  # kornia takes one padding mode per call
        out = torch.empty_like(images)
        for fill in fills:
            idx = torch.tensor([i for i, p in enumerate(params) if p.fill == fill], device=images.device)
            out[idx] = _warp(images[idx], affine[idx], fill, resample)
    ones = torch.ones_like(images[:, :1])
    coverage = warp_affine(ones, affine, tuple(images.shape[-2:]), padding_mode="zeros", align_corners=True)
    mask = (coverage >= MASK_THRESHOLD).to(torch.float32)
    return TransformResult(out.clamp(-1.0, 1.0), mask, matrices.to(device=images.device, dtype=torch.float32))


class GeometricTransform(nn.Module):
    """Module twin of :func:`apply_transform` for a fixed list of per-item parameters.

    Args:
        spec: One spec for every item (a :class:`TransformSpec` or spec text giving exactly one spec), or
            one :class:`TransformSpec` per seed.
        seeds: One non-negative seed per batch item.
        resolution: Image side in pixels.
        fill: Border fill, one of :data:`FILL_MODES`.
        resample: Sampling, one of :data:`RESAMPLE_MODES` (see :func:`apply_transform`).

    Example:
        >>> t = GeometricTransform("rotate:+-20", seeds=[0, 1], resolution=8)
        >>> t(torch.zeros(2, 3, 8, 8)).mask.shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        spec: TransformSpec | str | Sequence[TransformSpec],
        seeds: Sequence[int],
        *,
        resolution: int,
        fill: str = "reflection",
        resample: str = "bilinear",
    ) -> None:
        super().__init__()
        self.resample = check_resample(resample)
        if isinstance(spec, str):
            parsed = parse_transforms(spec)
            if len(parsed) != 1:
                raise ValueError(f"spec {spec!r} gives {len(parsed)} transforms; the module takes one")
            spec = parsed[0]
        specs = [spec] * len(seeds) if isinstance(spec, TransformSpec) else list(spec)
        if len(specs) != len(seeds):
            raise ValueError(f"got {len(specs)} specs for {len(seeds)} seeds")
        self.params = tuple(
            sample_params(s, seed=seed, resolution=resolution, fill=fill)
            for s, seed in zip(specs, seeds, strict=True)
        )

    @classmethod
    def from_params(cls, params: Sequence[TransformParams], resample: str = "bilinear") -> GeometricTransform:
        """Build the module from already drawn parameters (e.g. read back from a results table)."""
        _check_params(params, None, None)
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.params = tuple(params)
        module.resample = check_resample(resample)
        return module

    def inverse(self) -> GeometricTransform:
        """The module applying :func:`invert_params` of every item."""
        return GeometricTransform.from_params([invert_params(p) for p in self.params], self.resample)

    def forward(self, images: torch.Tensor) -> TransformResult:
        """Apply the stored parameters; see :func:`apply_transform` for shapes and ranges."""
        return apply_transform(images, self.params, self.resample)

    def extra_repr(self) -> str:
        """Labels of the stored items."""
        return f"items={len(self.params)}, labels={[p.label for p in self.params]}, resample={self.resample!r}"
