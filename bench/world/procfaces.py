"""Procedural aligned faces: the embedded world's stand-in for CelebA-HQ.

Each face is a stack of analytic shapes (ellipses, segments and curves given by approximate signed
distances) painted back to front on a pixel grid, vectorised over the batch. Edges are anti-aliased twice:
coverage ramps over one render sample (analytic), and the frame is rendered at ``supersample`` times the
resolution and average-pooled.

Geometry lives in a 64-unit frame: continuous coordinates in which the image spans [0, 64] whatever its
resolution, so pixel i of a 64-px image covers [i, i+1). The layout is fixed, as in FFHQ alignment: eye
centres at (x, y) = (22, 28) and (42, 28), mouth centre at (32, 45); each face shifts the whole face by at
most 0.5 units per axis (alignment noise). ``landmarks(resolution)`` gives these in pixel indices.

Seeds: a face depends only on its seed (``sample_params(1, seed)``); ``sample_params(n, seed)`` draws the
rows in order, so its first k faces equal ``sample_params(k, seed)``. Training uses seeds in
``TRAIN_SEED_RANGE`` = [0, 2**30); the ``procfaces:N`` benchmark source uses the held-out seeds
``HELDOUT_SEED_OFFSET + index`` >= 2**30, so the generator never trains on a benchmark face.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ATTRIBUTES: tuple[str, ...] = (
    "smile", "age", "hair_dark", "glasses", "skin_tone", "face_width", "background_hue",
)
BINARY: frozenset[str] = frozenset({"glasses"})
HAIR_STYLES: tuple[str, ...] = ("short", "long", "fringe")
UNITS = 64.0
EYE_CENTERS: tuple[tuple[float, float], ...] = ((22.0, 28.0), (42.0, 28.0))
MOUTH_CENTER: tuple[float, float] = (32.0, 45.0)
TRAIN_SEED_RANGE: tuple[int, int] = (0, 2**30)
HELDOUT_SEED_OFFSET: int = 2**30
DEFAULT_SUPERSAMPLE = 2
GLASSES_RATE = 0.35
_FIELD = 256
# render samples per vectorised pass (images x (R x supersample)^2): the working set stays in cache. A fixed 64
# images per pass had made a 50-face protocol's 500 transformed 256 px targets take 194 s instead of 39 s on a
# 2-core CPU (scripts/render_timing.py); the images differ by float rounding (at most 3.6e-7) between layouts
_CHUNK_SAMPLES = 2**19


def _chunk(resolution: int, supersample: int) -> int:
    """Images per vectorised pass at this resolution: 32 at 64 px, 2 at 256 px (supersample 2)."""
    return max(1, _CHUNK_SAMPLES // (resolution * supersample) ** 2)


_EYE_PALETTE = torch.tensor(
    [[0.30, 0.18, 0.10], [0.16, 0.09, 0.05], [0.45, 0.35, 0.15], [0.25, 0.45, 0.70], [0.25, 0.50, 0.30]]
)
_NUISANCE_COLS = {"hair_style": 1, "hair_warmth": 1, "eye_color": 2, "shirt_color": 3,
                  "background_tone": 2, "light": 2, "jitter": 2, "texture_seed": 1}


@dataclass(frozen=True)
class FaceParams:
    """Parameters of N faces: CPU tensors whose first dimension is N.

    Labelled attributes (see ``ATTRIBUTES``), each (N,) float32 in [0, 1]: ``smile`` (0 neutral, slight
    frown; 1 broad open smile with teeth), ``age`` (grey hair, forehead/eye/cheek lines, paler skin),
    ``hair_dark`` (0 blond, 1 black), ``glasses`` (0 or 1), ``skin_tone`` (0 light, 1 dark),
    ``face_width`` (face half-width 14 to 18.5 units), ``background_hue`` (hue 0 red to 0.75 violet; no
    wrap-around, so the label is monotone).

    Nuisance parameters, all in [0, 1] except ``hair_style`` (N,) int64 index into ``HAIR_STYLES`` and
    ``texture_seed`` (N,) int64 in [0, 2**31): ``hair_warmth`` (N,) auburn tint, ``eye_color`` (N, 3) iris
    RGB, ``shirt_color`` (N, 3) RGB, ``background_tone`` (N, 2) saturation and brightness, ``light``
    (N, 2) light direction x, y (0.5 = frontal), ``jitter`` (N, 2) alignment shift (0.5 = none, 0/1 =
    -/+0.5 units).
    """

    smile: Tensor
    age: Tensor
    hair_dark: Tensor
    glasses: Tensor
    skin_tone: Tensor
    face_width: Tensor
    background_hue: Tensor
    hair_style: Tensor
    hair_warmth: Tensor
    eye_color: Tensor
    shirt_color: Tensor
    background_tone: Tensor
    light: Tensor
    jitter: Tensor
    texture_seed: Tensor

    def __len__(self) -> int:
        return int(self.smile.shape[0])

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> FaceParams:
        """Select faces; an int keeps the batch dimension (a FaceParams of one face)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return FaceParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def replace(self, **changes: float | Tensor) -> FaceParams:
        """Copy with some fields changed; a Python number is broadcast to every face (unchecked until render)."""
        return dataclasses.replace(self, **{k: torch.full_like(getattr(self, k), v) if isinstance(v, (int, float))
                                            else v for k, v in changes.items()})

    @staticmethod
    def cat(parts: list[FaceParams]) -> FaceParams:
        """Concatenate several FaceParams along the batch dimension."""
        if not parts:
            raise ValueError("FaceParams.cat: need at least one FaceParams")
        return FaceParams(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                             for f in dataclasses.fields(FaceParams)})


def face_seed(base_seed: int, index: int) -> int:
    """Seed of face ``index`` of the stream that starts at ``base_seed`` (``base_seed + index``).

    Consecutive integers are independent seeds for torch's Mersenne Twister, and the plain sum keeps
    streams collision-free and the ranges obvious: training streams must stay below 2**30, held-out
    streams start at ``HELDOUT_SEED_OFFSET``.

    Raises:
        ValueError: on negative inputs, or a training stream (base < 2**30) that would reach held-out seeds.
    """
    if base_seed < 0 or index < 0:
        raise ValueError(f"face_seed: base_seed and index must be >= 0, got {base_seed}, {index}")
    seed = base_seed + index
    if base_seed < HELDOUT_SEED_OFFSET <= seed:
        raise ValueError(f"face_seed: training stream {base_seed} + {index} reaches the held-out seeds "
                         f">= {HELDOUT_SEED_OFFSET}")
    return seed


def landmarks(resolution: int) -> dict[str, tuple[float, float]]:
    """Fixed (x, y) positions of the eyes and mouth in pixel indices (pixel centres) at ``resolution``."""
    k = resolution / UNITS
    pts = {"left_eye": EYE_CENTERS[0], "right_eye": EYE_CENTERS[1], "mouth": MOUTH_CENTER}
    return {name: (x * k - 0.5, y * k - 0.5) for name, (x, y) in pts.items()}


def sample_params(n: int, seed: int | torch.Generator) -> FaceParams:
    """Draw the parameters of ``n`` faces, in row order, from a seed or a CPU ``torch.Generator``.

    Continuous attributes are uniform on [0, 1]; glasses appear with probability ``GLASSES_RATE``.
    """
    if n < 0:
        raise ValueError(f"sample_params: n must be >= 0, got {n}")
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    width = len(ATTRIBUTES) + sum(_NUISANCE_COLS.values())
    # One draw, row-major, so that the first k rows do not depend on n (CPU Mersenne Twister is sequential).
    r = torch.rand(n, width, generator=gen, dtype=torch.float64)
    cols = dict(zip(ATTRIBUTES, r[:, : len(ATTRIBUTES)].float().T, strict=True))
    cols["glasses"] = (cols["glasses"] < GLASSES_RATE).float()
    rest, at = {}, len(ATTRIBUTES)
    for name, k in _NUISANCE_COLS.items():
        rest[name], at = r[:, at : at + k], at + k
    palette = _EYE_PALETTE[(rest["eye_color"][:, 0] * len(_EYE_PALETTE)).long()]
    shirt = rest["shirt_color"].float()
    return FaceParams(
        **cols,
        hair_style=(rest["hair_style"][:, 0] * len(HAIR_STYLES)).long(),
        hair_warmth=rest["hair_warmth"][:, 0].float(),
        eye_color=(palette * (0.8 + 0.4 * rest["eye_color"][:, 1:].float())).clamp(0, 1),
        shirt_color=_hsv_to_rgb(shirt[:, 0], 0.2 + 0.6 * shirt[:, 1], 0.25 + 0.6 * shirt[:, 2]),
        background_tone=rest["background_tone"].float(),
        light=rest["light"].float(),
        jitter=rest["jitter"].float(),
        texture_seed=(rest["texture_seed"][:, 0] * 2**31).long(),
    )


def labels(params: FaceParams) -> Tensor:
    """Attribute labels, (N, len(ATTRIBUTES)) float32 in [0, 1], columns in ``ATTRIBUTES`` order."""
    return torch.stack([getattr(params, a).float() for a in ATTRIBUTES], dim=1)


def render(params: FaceParams, resolution: int = 64, supersample: int = DEFAULT_SUPERSAMPLE) -> Tensor:
    """Render faces.

    Args:
        params: N faces (see ``FaceParams``).
        resolution: output side R in pixels (>= 16).
        supersample: render at ``supersample * R`` and average-pool (>= 1).

    Returns:
        (N, 3, R, R) float32 RGB in [-1, 1]. Each image depends only on its own parameters.
    """
    _check_params(params)
    if not isinstance(resolution, int) or resolution < 16:
        raise ValueError(f"render: resolution must be an int >= 16, got {resolution!r}")
    if not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"render: supersample must be an int >= 1, got {supersample!r}")
    out = torch.empty(len(params), 3, resolution, resolution)
    with torch.no_grad():
        chunk = _chunk(resolution, supersample)
        for start in range(0, len(params), chunk):
            out[start : start + chunk] = _render_chunk(params[start : start + chunk], resolution, supersample)
    return out


def render_transformed(params: FaceParams, matrices: Tensor, resolution: int = 64, fill: str = "reflection",
                       supersample: int = DEFAULT_SUPERSAMPLE) -> Tensor:
    """Render faces under affine transforms directly in the renderer's coordinates: no resampling blur.

    Each render sample is mapped back through its image's inverse transform into the aligned face frame and
    the face is evaluated there, so edges stay as sharp as in an aligned render (anti-aliased over one
    sample at the output resolution) instead of being low-passed by a bilinear warp. With the identity
    matrix the result equals :func:`render` up to float rounding.

    Args:
        params: N faces.
        matrices: (N, 3, 3) affine maps from aligned (source) pixel to transformed (destination) pixel, pixel
            centres at integers: the ``TransformParams.matrix`` convention of ``transforms``.
        resolution: output side R in pixels (>= 16); the matrices are for this resolution.
        fill: what lies outside the aligned frame, as in ``transforms.apply_transform``: ``"reflection"``
            (mirrored about the frame edges), ``"border"`` (the edge extended), ``"zeros"`` (black).
        supersample: samples per pixel side (>= 1), box-filtered.

    Returns:
        (N, 3, R, R) float32 RGB in [-1, 1].
    """
    _check_params(params)
    if not isinstance(resolution, int) or resolution < 16:
        raise ValueError(f"render_transformed: resolution must be an int >= 16, got {resolution!r}")
    matrices = torch.as_tensor(matrices, dtype=torch.float64)
    if matrices.shape != (len(params), 3, 3):
        raise ValueError(f"render_transformed: matrices must be ({len(params)}, 3, 3), got {tuple(matrices.shape)}")
    inverse = torch.linalg.inv(matrices)
    out = torch.empty(len(params), 3, resolution, resolution)
    with torch.no_grad():
        chunk = _chunk(resolution, supersample)
        for start in range(0, len(params), chunk):
            stop = start + chunk
            out[start:stop] = _render_chunk(params[start:stop], resolution, supersample, inverse[start:stop], fill)
    return out


def render_faces(n: int, seed: int | torch.Generator, resolution: int = 64) -> tuple[Tensor, Tensor]:
    """Sample and render ``n`` faces: images (n, 3, R, R) in [-1, 1] and labels (n, len(ATTRIBUTES))."""
    params = sample_params(n, seed)
    return render(params, resolution), labels(params)


# ----------------------------------------------------------------------------------------------------------
# Rendering internals. Painters composite in place into windows of the canvas (colours in [0, 1]); a
# window covers only the fixed region where its features can be, which is what alignment buys.


@dataclass(frozen=True)
class _Grid:
    """Face coordinates of the render samples.

    Aligned renders use a separable grid (``u`` (N, 1, W), ``v`` (N, H, 1), ``px`` a float) and paint each
    feature only in its window. Transformed renders (:func:`render_transformed`) give every sample its own
    face coordinates (``u``, ``v`` (N, H, W)), ``px`` (N, 1, 1) in units per sample, and windows are the
    whole canvas, because a rotated feature's region is not a rectangle of the canvas.
    """

    u: Tensor  # x of sample centres in face units (jitter applied)
    v: Tensor  # y of sample centres
    px: float | Tensor  # sample spacing in units: coverage ramps over one sample
    sy: slice  # window position in the canvas
    sx: slice
    tex: tuple[Tensor, Tensor] | None = None  # transformed renders: (rows, cols) output-pixel index per sample
    ss: int = 1

    def window(self, x0: float, x1: float, y0: float, y1: float) -> _Grid:
        if self.tex is not None:
            return self
        size = self.u.shape[-1]
        sx = slice(max(0, int(x0 / self.px)), min(size, math.ceil(x1 / self.px)))
        sy = slice(max(0, int(y0 / self.px)), min(size, math.ceil(y1 / self.px)))
        return _Grid(self.u[:, :, sx], self.v[:, sy, :], self.px, sy, sx, None, self.ss)

    def texture_index(self) -> tuple[Tensor, Tensor]:
        """Output-pixel (row, col) of each sample in the aligned frame: the fine skin texture's lattice."""
        if self.tex is not None:
            return self.tex
        rows, cols = torch.arange(self.sy.start, self.sy.stop), torch.arange(self.sx.start, self.sx.stop)
        return rows // self.ss, cols // self.ss


def _paint(canvas: Tensor, g: _Grid, color: Tensor, alpha: Tensor) -> None:
    """Composite ``color`` ((N, 3, 1, 1) or (N, 3, h, w)) with coverage ``alpha`` (N, h, w) in g's window."""
    canvas[:, :, g.sy, g.sx].lerp_(color, alpha.unsqueeze(1))


def _cov(d: Tensor, width: float) -> Tensor:
    """Coverage of a signed distance (negative inside), ramping over ``width`` units around the edge."""
    return (0.5 - d / width).clamp_(0.0, 1.0)


def _ellipse(u: Tensor, v: Tensor, cx: float | Tensor, cy: float, rx: float | Tensor, ry: float) -> Tensor:
    x, y = (u - cx) / rx, (v - cy) / ry
    k0 = torch.sqrt(x * x + y * y)
    k1 = torch.sqrt((x / rx) ** 2 + (y / ry) ** 2).clamp_(min=1e-4)
    return k0 * (k0 - 1.0) / k1  # first-order distance to the ellipse, good enough for a 1-px ramp


def _segment(u: Tensor, v: Tensor, ax: float, ay: float, bx: float, by: float) -> Tensor:
    pu, pv, du, dv = u - ax, v - ay, bx - ax, by - ay
    h = ((pu * du + pv * dv) / (du * du + dv * dv)).clamp_(0.0, 1.0)
    return torch.sqrt((pu - du * h) ** 2 + (pv - dv * h) ** 2)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(N,) hue, saturation, value in [0, 1] -> (N, 3) RGB in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _c(t: Tensor) -> Tensor:
    """Per-image value (N,) -> (N, 1, 1); colour (N, 3) -> (N, 3, 1, 1)."""
    return t.view(-1, 1, 1) if t.dim() == 1 else t.view(-1, 3, 1, 1)


def _rgb(*values: float) -> Tensor:
    return torch.tensor(values).view(1, 3, 1, 1)


def _skin(p: FaceParams) -> Tensor:
    light, dark = torch.tensor([0.97, 0.80, 0.68]), torch.tensor([0.40, 0.26, 0.18])
    skin = torch.lerp(light, dark, p.skin_tone[:, None])
    grey = skin.mean(1, keepdim=True).expand_as(skin)
    return _c(torch.lerp(skin, grey, 0.3 * p.age[:, None]))  # older skin is paler


def _hair(p: FaceParams) -> Tensor:
    blond, black = torch.tensor([0.84, 0.68, 0.42]), torch.tensor([0.07, 0.05, 0.045])
    hair = torch.lerp(blond, black, p.hair_dark[:, None] ** 0.7)
    hair = hair + torch.tensor([0.22, 0.04, -0.04]) * (p.hair_warmth * (1 - 0.6 * p.hair_dark))[:, None]
    grey = (((p.age - 0.35) / 0.55).clamp(0, 1) * 0.9)[:, None]
    return _c(torch.lerp(hair.clamp(0, 1), torch.tensor([0.80, 0.80, 0.82]), grey))


@functools.lru_cache(maxsize=1)
def _noise_field() -> Tensor:
    """A fixed 256x256 uniform noise field; each image reads it at its own offset (from texture_seed)."""
    return torch.rand(_FIELD, _FIELD, generator=torch.Generator().manual_seed(20211011))


@functools.lru_cache(maxsize=8)
def _smooth_basis(size: int, cells: int) -> Tensor:
    """(size, cells) row-normalised Gaussian weights: A @ L @ A.T turns a lattice into smooth noise."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * (cells - 1)
    a = torch.exp(-(((t[:, None] - torch.arange(cells)) / 0.6) ** 2))
    return a / a.sum(1, keepdim=True)


def _field_at(seed: Tensor, rows: Tensor, cols: Tensor, salt: int) -> Tensor:
    """Noise-field values at integer coordinates, offset per image by its seed.

    1-D ``rows``, ``cols``: the (N, len(rows), len(cols)) lattice; (N, H, W) ``rows``, ``cols``: one value per entry.
    """
    if rows.dim() == 3:
        off = (seed // _FIELD**salt).view(-1, 1, 1)
        oy, ox = (off // _FIELD) % _FIELD, off % _FIELD
        return _noise_field()[(rows + oy) % _FIELD, (cols + ox) % _FIELD]
    off = (seed // _FIELD**salt).view(-1, 1)
    oy, ox = (off // _FIELD) % _FIELD, off % _FIELD
    return _noise_field()[((rows + oy) % _FIELD)[:, :, None], ((cols + ox) % _FIELD)[:, None, :]]


def _render_chunk(p: FaceParams, res: int, ss: int, inverse: Tensor | None = None, fill: str = "reflection") -> Tensor:
    size, n = res * ss, len(p)
    px = UNITS / size
    shift = (p.jitter - 0.5).view(n, 2, 1, 1)
    full = slice(None)
    if inverse is None:
        axis = (torch.arange(size, dtype=torch.float32) + 0.5) * px
        g = _Grid(axis.view(1, 1, size) - shift[:, 0], axis.view(1, size, 1) - shift[:, 1], px, full, full, None, ss)
        canvas = _background(p, axis.view(1, 1, size, 1), size)
        outside = None
    else:
        x, y, spacing, outside = _source_units(inverse, res, ss, fill)
        tex = ((y * (res / UNITS)).long().clamp_(0, res - 1), (x * (res / UNITS)).long().clamp_(0, res - 1))
        g = _Grid(x - shift[:, 0], y - shift[:, 1], spacing, full, full, tex, ss)
        canvas = _background_at(p, x, y)
    _paint_body(canvas, p, g)
    _paint_age(canvas, p, g)  # before the hair, which may cover the forehead
    _paint_hair(canvas, p, g.window(8, 56, 9, 46))
    _paint_eyes(canvas, p, g.window(14, 50, 20, 32))
    _paint_mouth(canvas, p, g.window(22, 42, 33, 51))
    _paint_glasses(canvas, p, g.window(9, 55, 22, 34))
    if outside is not None:  # "zeros": black where the sample's source lies outside the frame
        canvas.masked_fill_(outside.unsqueeze(1), 0.0)
    if ss > 1:
        canvas = F.avg_pool2d(canvas, ss)
    return canvas.mul_(2.0).sub_(1.0).clamp_(-1.0, 1.0)


def _source_units(inverse: Tensor, res: int, ss: int, fill: str) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Face-frame units (x, y) (N, S, S) of each render sample of a transformed image, S = res * ss.

    ``inverse`` (N, 3, 3) maps destination pixels to source pixels (pixel centres at integers). Samples whose
    source lies outside the frame [0, 64]^2 are mirrored at its edges ("reflection"), clamped to them
    ("border"), or returned in ``outside`` to be painted black ("zeros"). Also returns the source sample
    spacing in units, (N, 1, 1): the anti-aliasing ramp follows the transform's scale.
    """
    size = res * ss
    dest = (torch.arange(size, dtype=torch.float64) + 0.5) / ss - 0.5
    a = inverse.to(torch.float64)
    col, row = dest.view(1, 1, size), dest.view(1, size, 1)
    xs = a[:, 0, 0, None, None] * col + a[:, 0, 1, None, None] * row + a[:, 0, 2, None, None]
    ys = a[:, 1, 0, None, None] * col + a[:, 1, 1, None, None] * row + a[:, 1, 2, None, None]
    x, y = ((xs + 0.5) * (UNITS / res)).float(), ((ys + 0.5) * (UNITS / res)).float()
    outside = None
    if fill == "reflection":
        x, y = _mirror(x), _mirror(y)
    elif fill == "border":
        x, y = x.clamp(0.0, UNITS), y.clamp(0.0, UNITS)
    elif fill == "zeros":
        outside = (x < 0) | (x > UNITS) | (y < 0) | (y > UNITS)
    else:
        raise ValueError(f"render_transformed: unknown fill {fill!r}; use reflection, border or zeros")
    det = (a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]).abs().sqrt().float()
    return x, y, (UNITS / size) * det.view(-1, 1, 1), outside


def _mirror(t: Tensor) -> Tensor:
    """Reflect coordinates into [0, UNITS] about the frame edges (period 2 * UNITS)."""
    t = torch.remainder(t, 2 * UNITS)
    return torch.where(t > UNITS, 2 * UNITS - t, t)


def _background_at(p: FaceParams, x: Tensor, y: Tensor) -> Tensor:
    """The background of :func:`_background` evaluated at per-sample frame units x, y (N, S, S)."""
    tone = p.background_tone
    base = _hsv_to_rgb(0.75 * p.background_hue, 0.2 + 0.4 * tone[:, 0], 0.45 + 0.45 * tone[:, 1])
    lattice = _field_at(p.texture_seed, torch.arange(6) * 37, torch.arange(6) * 53, salt=2)
    ay, ax = _smooth_weights(y / UNITS, 6), _smooth_weights(x / UNITS, 6)
    noise = torch.einsum("nhwi,nij,nhwj->nhw", ay, lattice, ax).unsqueeze(1)
    return _c(base) * (1.12 - 0.3 * y.unsqueeze(1) / UNITS + 0.3 * (noise - 0.5))


def _smooth_weights(t: Tensor, cells: int) -> Tensor:
    """Row-normalised Gaussian lattice weights at positions ``t`` in [0, 1]: (..., cells); see ``_smooth_basis``."""
    a = torch.exp(-(((t.unsqueeze(-1) * (cells - 1) - torch.arange(cells)) / 0.6) ** 2))
    return a / a.sum(-1, keepdim=True)


def _background(p: FaceParams, v: Tensor, size: int) -> Tensor:
    tone = p.background_tone
    base = _hsv_to_rgb(0.75 * p.background_hue, 0.2 + 0.4 * tone[:, 0], 0.45 + 0.45 * tone[:, 1])
    lattice = _field_at(p.texture_seed, torch.arange(6) * 37, torch.arange(6) * 53, salt=2)
    basis = _smooth_basis(size, 6)
    noise = (basis @ lattice @ basis.T).unsqueeze(1)
    return _c(base) * (1.12 - 0.3 * v / UNITS + 0.3 * (noise - 0.5))


def _paint_body(canvas: Tensor, p: FaceParams, g: _Grid) -> None:
    """Back hair, shoulders, neck, ears and the shaded, textured face ellipse."""
    rx, skin, style = _c(14.0 + 4.5 * p.face_width), _skin(p), _c(p.hair_style)
    w = g.window(4, 60, 9, 60)
    bottom = torch.where(style == 1, 58.0, 20.0)  # long hair: a box down to the shoulders; else empty
    box_d = torch.maximum((w.u - 32).abs() - rx - 4.0, torch.maximum(w.v - bottom, 31 - w.v))
    back_d = torch.minimum(_ellipse(w.u, w.v, 32, 32, rx + 4.3, 21.3), box_d)
    _paint(canvas, w, _hair(p) * 0.8, _cov(back_d, w.px) * (style != 0))
    w = g.window(0, 64, 38, 64)
    neck_d = torch.maximum((w.u - 32).abs() - 0.36 * rx, 40 - w.v)
    _paint(canvas, w, skin * 0.72, _cov(neck_d, w.px))
    shirt_d = _ellipse(w.u, w.v, 32, 77, 31, 19)
    _paint(canvas, w, _c(p.shirt_color) * (1.05 - 0.25 * (w.v - 58) / 6).unsqueeze(1), _cov(shirt_d, w.px))
    w = g.window(10, 54, 27, 38)
    for side in (-1, 1):
        ear_d = _ellipse(w.u, w.v, 32 + side * (rx - 0.5), 32.5, 2.4, 4.3)
        _paint(canvas, w, skin * 0.85, _cov(ear_d, w.px) * (style != 1))  # long hair covers the ears
    w = g.window(12, 52, 11, 54)
    taper = 1 - 0.2 * ((w.v - 32.5) / 20.5).clamp(0, 1) ** 2  # narrower jaw
    nx, ny = (w.u - 32) / (rx * taper), (w.v - 32.5) / 20.5
    face_d = _ellipse(w.u, w.v, 32, 32.5, rx * taper, 20.5)
    nz = (1 - nx * nx - ny * ny).clamp_(0.05, 1).sqrt_()
    lx, ly = _c(1.2 - 2.4 * p.light[:, 0]), _c(1.2 - 2.4 * p.light[:, 1])
    rows, cols = w.texture_index()
    tex = _field_at(p.texture_seed, rows, cols, salt=0)  # one value per output pixel: fine skin texture
    shade = 0.68 + 0.32 * nz - 0.22 * (lx * nx + ly * ny) + 0.07 * (tex - 0.5)
    _paint(canvas, w, skin * shade.unsqueeze(1), _cov(face_d, w.px))


def _paint_hair(canvas: Tensor, p: FaceParams, w: _Grid) -> None:
    """Hair cap over the forehead, with strands; the hairline depends on the style (a fringe hangs low)."""
    rx, style = _c(14.0 + 4.5 * p.face_width), _c(p.hair_style)
    x2 = (w.u - 32) ** 2
    line_short, line_long = 17.0 + 0.05 * x2, 16.0 + 0.075 * x2
    line_fringe = 21.3 + 0.025 * x2 + 0.5 * torch.sin(1.9 * w.u)
    line = torch.where(style == 0, line_short, torch.where(style == 1, line_long, line_fringe))
    d = torch.maximum(_ellipse(w.u, w.v, 32, 31, rx + 2.0, 20.3), w.v - line)
    phase = _c((p.texture_seed % 1000).float() * 0.01)
    strands = 1 + 0.2 * torch.sin(2.6 * w.u + 1.3 * torch.sin(0.25 * w.v + phase))
    _paint(canvas, w, _hair(p) * strands.unsqueeze(1), _cov(d, w.px))


def _paint_eyes(canvas: Tensor, p: FaceParams, w: _Grid) -> None:
    """Eyes (sclera, iris, pupil, lash line) and eyebrows at the fixed eye centres."""
    brow = _hair(p) * 0.55
    for cx, cy in EYE_CENTERS:
        sclera_d = _ellipse(w.u, w.v, cx, cy, 3.4, 1.8)
        _paint(canvas, w, _rgb(0.94, 0.93, 0.90), _cov(sclera_d, w.px))
        r = torch.sqrt((w.u - cx) ** 2 + (w.v - cy) ** 2)
        _paint(canvas, w, _c(p.eye_color), _cov(torch.maximum(r - 1.5, sclera_d), w.px))
        _paint(canvas, w, _rgb(0.03, 0.02, 0.02), _cov(r - 0.7, w.px))
        lash_d = torch.maximum(sclera_d.abs() - 0.3, w.v - cy - 0.3)
        _paint(canvas, w, _rgb(0.10, 0.07, 0.06), _cov(lash_d, w.px))
        t = ((w.u - cx) / 4.3).clamp(-1, 1)
        outer = t * (cx - 32) / 10  # +1 at the outer end: the brow thins outwards
        brow_d = torch.maximum((w.v - cy + 4.2 + 1.0 * (1 - t * t)).abs() - 0.85 + 0.3 * outer, (w.u - cx).abs() - 4.3)
        _paint(canvas, w, brow, _cov(brow_d, w.px))


def _paint_mouth(canvas: Tensor, p: FaceParams, w: _Grid) -> None:
    """Nose hint and the mouth: smile bends the lip line up, opens it and shows teeth."""
    skin, sm = _skin(p), _c(p.smile)
    side = torch.where(_c(p.light[:, 0]) < 0.5, 1.8, -1.8)  # the ridge shadow falls away from the light
    ridge_d = _segment(w.u - side, w.v, 32.0, 36.0, 32.3, 39.5)
    _paint(canvas, w, skin * 0.6, _cov(ridge_d - 0.4, 1.5) * 0.5)
    nose_d = torch.maximum((w.v - 40.8 - 0.08 * (w.u - 32) ** 2).abs() - 0.45, (w.u - 32).abs() - 2.6)
    _paint(canvas, w, skin * 0.55, _cov(nose_d, w.px) * 0.6)
    for side in (-1, 1):
        nostril_d = _ellipse(w.u, w.v, 32 + side * 1.6, 40.4, 0.9, 0.55)
        _paint(canvas, w, skin * 0.35, _cov(nostril_d, w.px))
    hw = 5.0 + 2.2 * sm
    t = ((w.u - 32) / hw).clamp(-1, 1)
    bend, gap = 0.9 - 3.6 * sm, 3.2 * ((sm - 0.45) / 0.55).clamp(0, 1)
    mid = 45.0 + bend * (t * t - 0.35) - 0.3 * gap
    h = gap * (1 - t * t)
    top, bot = mid - 0.35 * h, mid + 0.65 * h
    inside_u = (w.u - 32).abs() - hw
    thick = 1 - 0.6 * t * t
    lip_d = torch.maximum(torch.maximum(top - 1.0 * thick - w.v, w.v - bot - 1.4 * thick), inside_u)
    _paint(canvas, w, torch.lerp(skin, _rgb(0.75, 0.22, 0.25), 0.5), _cov(lip_d, w.px))
    gap_d = torch.maximum(torch.maximum(top - w.v, w.v - bot) - 0.2, inside_u + 0.4)
    _paint(canvas, w, _rgb(0.25, 0.05, 0.06), _cov(gap_d, w.px))
    teeth_d = torch.maximum(torch.maximum(top - w.v, w.v - top - 0.5 * h), (w.u - 32).abs() - 0.75 * hw)
    _paint(canvas, w, _rgb(0.95, 0.94, 0.90), _cov(teeth_d, w.px) * ((sm - 0.55) / 0.3).clamp(0, 1))


def _paint_age(canvas: Tensor, p: FaceParams, g: _Grid) -> None:
    """Forehead lines, lines under and beside the eyes, nasolabial folds, fading in with age."""
    dark = _skin(p) * 0.55
    strength = _c(((p.age - 0.3) / 0.7).clamp(0, 1))
    w = g.window(24, 40, 18, 23)
    d = torch.full((1, 1, 1), 1e3)
    for y0, half in ((19.6, 6.5), (21.4, 5.0)):
        line = torch.maximum((w.v - y0 - 0.35 * torch.sin(0.6 * w.u)).abs() - 0.3, (w.u - 32).abs() - half)
        d = torch.minimum(d, line)
    _paint(canvas, w, dark, _cov(d, w.px) * strength)
    w = g.window(14, 50, 26, 33)
    d = torch.full((1, 1, 1), 1e3)
    for (cx, cy), out in zip(EYE_CENTERS, (-1, 1), strict=True):
        t = (w.u - cx) / 3.0
        d = torch.minimum(d, torch.maximum((w.v - cy - 3.0 + 0.6 * (1 - t * t)).abs() - 0.25, t.abs() - 1))
        for dy in (-1.2, 0.6):
            d = torch.minimum(d, _segment(w.u, w.v, cx + out * 4.3, cy, cx + out * 6.0, cy + dy) - 0.25)
    _paint(canvas, w, dark, _cov(d, w.px) * strength)
    w = g.window(24, 40, 38, 48)
    d = torch.minimum(_segment(w.u, w.v, 28.4, 39.0, 25.8, 46.5), _segment(w.u, w.v, 35.6, 39.0, 38.2, 46.5))
    _paint(canvas, w, dark, _cov(d - 0.3, w.px) * strength)


def _paint_glasses(canvas: Tensor, p: FaceParams, w: _Grid) -> None:
    """Two rims with a faint lens tint, the bridge and the temple arms."""
    on = _c(p.glasses)
    d = _segment(w.u, w.v, EYE_CENTERS[0][0] + 5.0, 27.4, EYE_CENTERS[1][0] - 5.0, 27.4) - 0.5
    for (cx, cy), out in zip(EYE_CENTERS, (-1, 1), strict=True):
        rim = _ellipse(w.u, w.v, cx, cy + 0.4, 5.2, 4.0)
        _paint(canvas, w, _rgb(0.75, 0.85, 0.95), _cov(rim, w.px) * (0.15 * on))
        d = torch.minimum(d, rim.abs() - 0.5)
        d = torch.minimum(d, _segment(w.u, w.v, cx + out * 5.2, cy - 0.5, cx + out * 9.0, cy - 1.0) - 0.45)
    _paint(canvas, w, _rgb(0.06, 0.05, 0.05), _cov(d, w.px) * on)


def _check_params(p: FaceParams) -> None:
    """Raise ValueError unless every field has batch size N and lies in its documented range."""
    n = len(p)
    for f in dataclasses.fields(p):
        t = getattr(p, f.name)
        if not isinstance(t, Tensor) or t.shape[:1] != (n,):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"FaceParams.{f.name}: expected a tensor with batch size {n}, got {shape}")
        lo, hi = {"hair_style": (0, len(HAIR_STYLES) - 1), "texture_seed": (0, 2**31 - 1)}.get(f.name, (0.0, 1.0))
        if t.numel() and (not torch.isfinite(t.double()).all() or t.min() < lo or t.max() > hi):
            raise ValueError(f"FaceParams.{f.name}: values must be in [{lo}, {hi}], got shape "
                             f"{tuple(t.shape)}, dtype {t.dtype}, range [{t.min().item()}, {t.max().item()}]")


def __getattr__(name: str) -> object:
    # The benchmark source moved to ``procfaces_source``; resolved on use because that module imports this one.
    if name in ("procfaces_source", "ProcFacesSource"):
        return getattr(importlib.import_module("bench.world.procfaces_source"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
