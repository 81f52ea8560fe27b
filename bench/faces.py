"""Faces: dlib detection and landmarks, the FFHQ alignment recipe, and face-recognition embeddings.

Everything here needs the optional ``faces`` extra (``pip install '.[faces]'``: ``dlib-bin`` and
``face-recognition-models``, which ship dlib's HOG frontal-face detector, the 68-point landmark model and
the 128-D face-recognition ResNet). Nothing is downloaded; :func:`faces_unavailable_reason` says what is
missing. The models load lazily on first use and are shared (:func:`face_models`).

Conventions: images handed to dlib are (H, W, 3) uint8 RGB numpy arrays; points are (x, y) in pixels of
that image, x to the right, y down, pixel centres at integer coordinates (dlib's convention).

The alignment follows the recipe that made FFHQ (NVlabs/ffhq-dataset, ``download_ffhq.py``,
``recreate_aligned_images``), reimplemented here from its description:

1. eye centres = mean of landmarks 36-41 and 42-47; mouth corners = landmarks 48 and 54;
2. the crop is a square of side ``2 * max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``, centred
   ``0.1 * eye_to_mouth`` below the eye midpoint, its x axis along ``eye_to_eye - rot90(eye_to_mouth)``;
3. large sources are first shrunk by an integer factor, the quad is cropped with a 10 % border and,
   where it leaves the image, reflection-padded with the padding blurred and faded to the median colour;
4. the quad is resampled to ``transform_size`` (4096) with bilinear interpolation and resized to the
   output size with an antialiasing (Lanczos) filter.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MODEL_FILES = {
    "landmarks": "shape_predictor_68_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
INSTALL_HINT = "install the faces extra: pip install 'gan-inversion-bench[faces]' (dlib-bin, face-recognition-models)"
DETECT_MIN_SIDE = 400
"""Images are upsampled (dlib's pyramid, x2 per step) until their side reaches this before detection:
dlib's HOG detector finds faces of about 80 px and larger, so small benchmark images need it."""
DETECT_MIN_UPSAMPLE = 1
"""Pyramid steps at least: dlib's documented usage (``detector(img, 1)`` in its examples) and the FFHQ-style
alignment scripts of pSp, e4e and HyperStyle upsample once. The landmark fit depends on the face box it
starts from (up to 16 px apart on grace_hopper.jpg between 0 and 1 steps), so aligning like them means
detecting like them (scripts/ffhq_align_reference.py)."""
TRANSFORM_SIZE = 4096
"""The recipe's intermediate resampling size (``transform_size`` in ``recreate_aligned_images``)."""


def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    # The package's __init__ imports pkg_resources, gone from setuptools >= 81: locate it without importing.
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def faces_unavailable_reason() -> str:
    """Why the face models cannot be used here, or ``""`` when they can."""
    if importlib.util.find_spec("dlib") is None:
        return f"dlib is not installed; {INSTALL_HINT}"
    folder = _models_dir()
    if folder is None:
        return f"face_recognition_models is not installed; {INSTALL_HINT}"
    missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
    if missing:
        return f"face model file(s) missing in {folder}: {', '.join(missing)}; reinstall face-recognition-models"
    return ""


@dataclass(frozen=True)
class FaceModels:
    """dlib's HOG detector, 68-point landmark predictor and face-recognition ResNet (loaded once)."""

    detector: object
    predictor: object
    recognizer: object
    folder: Path

    def describe(self) -> str:
        return (f"dlib HOG frontal face detector, {MODEL_FILES['landmarks']}, {MODEL_FILES['recognition']} "
                f"(from {self.folder})")


@functools.lru_cache(maxsize=1)
def face_models() -> FaceModels:
    """Load the face models once.

    Raises:
        RuntimeError: If the ``faces`` extra is missing (the message says what to install).
    """
    reason = faces_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    import dlib

    folder = _models_dir()
    return FaceModels(dlib.get_frontal_face_detector(), dlib.shape_predictor(str(folder / MODEL_FILES["landmarks"])),
                      dlib.face_recognition_model_v1(str(folder / MODEL_FILES["recognition"])), folder)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Check an (H, W, 3) uint8 array and return it C-contiguous (what dlib needs)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {got}")
    return np.ascontiguousarray(image)


def upsample_steps(side: int, min_side: int = DETECT_MIN_SIDE) -> int:
    """Pyramid steps of dlib (x2 each): at least one, more until ``side`` px reach ``min_side`` (at most 4)."""
    steps = DETECT_MIN_UPSAMPLE
    while side * 2**steps < min_side and steps < 4:
        steps += 1
    return steps


@dataclass(frozen=True)
class Detection:
    """The face kept in an image: its box (left, top, right, bottom; dlib's inclusive pixels) and score.

    Attributes:
        box: Face box in image pixels.
        score: Detector confidence of this box.
        count: How many faces the detector found (the best-scoring one is kept).
        upsample: Pyramid steps the detector ran with.
    """

    box: tuple[int, int, int, int]
    score: float
    count: int
    upsample: int


def detect_face(image: np.ndarray, upsample: int | None = None) -> Detection | None:
    """Find the most confident frontal face in an image, or None.

    Args:
        image: (H, W, 3) uint8 RGB.
        upsample: Detector pyramid steps; default: :func:`upsample_steps` of the shorter side.

    Returns:
        The best-scoring detection, or None when no face is found.
    """
    image = as_rgb_uint8(image)
    steps = upsample_steps(min(image.shape[:2])) if upsample is None else upsample
    boxes, scores, _ = face_models().detector.run(image, steps, 0.0)
    if len(boxes) == 0:
        return None
    best = int(np.argmax(scores))
    r = boxes[best]
    return Detection((r.left(), r.top(), r.right(), r.bottom()), float(scores[best]), len(boxes), steps)


def _rect(box: tuple[int, int, int, int]):
    import dlib

    return dlib.rectangle(*(int(v) for v in box))


def _shape(image: np.ndarray, box: tuple[int, int, int, int]):
    return face_models().predictor(as_rgb_uint8(image), _rect(box))


def landmarks(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 68 landmarks (dlib / iBUG 300-W order) of the face in ``box``, as a (68, 2) float64 array of (x, y)."""
    shape = _shape(image, box)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def embedding(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 128-D dlib face descriptor of the face in ``box`` (landmarks fitted in this image, no jitter)."""
    image = as_rgb_uint8(image)
    return np.asarray(face_models().recognizer.compute_face_descriptor(image, _shape(image, box), 0),
                      dtype=np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (NaN if either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else float("nan")


# ---------------------------------------------------------------------------------------------------------
# FFHQ alignment


@dataclass(frozen=True)
class CropQuad:
    """The oriented square the FFHQ recipe crops, in source pixels.

    Attributes:
        center: (x, y) centre of the square.
        x_axis: Half of the square's horizontal side as a vector (points from the centre to the right edge).
        eye_left, eye_right, mouth_left, mouth_right: The (x, y) points it was built from.
    """

    center: tuple[float, float]
    x_axis: tuple[float, float]
    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    mouth_left: tuple[float, float]
    mouth_right: tuple[float, float]

    @property
    def size(self) -> float:
        """Side length of the square in source pixels."""
        return 2.0 * float(np.hypot(*self.x_axis))

    @property
    def angle(self) -> float:
        """Rotation of the square in degrees, counter-clockwise on screen (0 = upright face)."""
        return float(np.degrees(np.arctan2(-self.x_axis[1], self.x_axis[0])))

    def corners(self) -> np.ndarray:
        """(4, 2) corners: top-left, bottom-left, bottom-right, top-right (the order PIL's QUAD takes)."""
        c, x = np.asarray(self.center), np.asarray(self.x_axis)
        y = np.array([-x[1], x[0]])  # x turned by +90 deg in image coordinates: points down for an upright face
        return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])

    def record(self) -> dict[str, float]:
        """Flat numbers for the per-image CSV."""
        out = {"center_x": self.center[0], "center_y": self.center[1], "size": self.size, "angle_deg": self.angle}
        for name, value in asdict(self).items():
            if name not in ("center", "x_axis"):
                out[f"{name}_x"], out[f"{name}_y"] = value
        for k, (qx, qy) in enumerate(self.corners()):
            out[f"quad{k}_x"], out[f"quad{k}_y"] = float(qx), float(qy)
        return {k: round(float(v), 3) for k, v in out.items()}


def crop_quad(points: np.ndarray) -> CropQuad:
    """The FFHQ crop square of a face from its 68 landmarks.

    Args:
        points: (68, 2) landmarks (x, y) in dlib's order.

    Returns:
        The square: centre ``eye_mid + 0.1 * eye_to_mouth``; half side ``max(2.0 * |eye_to_eye|,
        1.8 * |eye_to_mouth|)`` along the unit vector of ``eye_to_eye - rot90(eye_to_mouth)`` (the mean of
        the eye line and the perpendicular of the eye-mouth line, so both tilt cues count).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    eye_l, eye_r = points[36:42].mean(0), points[42:48].mean(0)
    mouth_l, mouth_r = points[48], points[54]
    eye_mid, mouth_mid = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth_mid - eye_mid
    # rot90 such that a downward eye_to_mouth (0, d) turns into (d, 0), i.e. the eye line's direction
    perp = np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    axis = eye_to_eye + perp
    axis = axis / np.hypot(*axis) * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    center = eye_mid + 0.1 * eye_to_mouth

    def pt(v: np.ndarray) -> tuple[float, float]:
        return (float(v[0]), float(v[1]))

    return CropQuad(pt(center), pt(axis), pt(eye_l), pt(eye_r), pt(mouth_l), pt(mouth_r))


def _reflect_pad(img: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """Reflection padding (left, top, right, bottom; each > 0), blurred and faded to the median colour outwards."""
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = pad
    out = np.pad(img.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = out.shape[:2]
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]

    # signed distance to the image edge in units of the padding: 1 at the outer edge, 0 on the image's
    # edge, negative inside (so the blur fades out a third of a padding width into the image)
    fade_x = 1.0 - np.minimum(xs / left, (w - 1 - xs) / right)
    fade_y = 1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom)
    fade = np.maximum(fade_x, fade_y)[..., None]
    sigma = qsize * 0.02
    blurred = gaussian_filter(out, [sigma, sigma, 0])
    out = out + (blurred - out) * np.clip(fade * 3.0 + 1.0, 0.0, 1.0)
    out = out + (np.median(out, axis=(0, 1)) - out) * np.clip(fade, 0.0, 1.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class AlignSteps:
    """What the recipe did to one image besides the final resampling (recorded in the CSV)."""

    shrink: int
    crop: tuple[int, int, int, int]
    pad: tuple[int, int, int, int]


def align_face(image: np.ndarray, quad: CropQuad, output_size: int = 1024,
               transform_size: int = TRANSFORM_SIZE) -> tuple[np.ndarray, AlignSteps]:
    """Cut the FFHQ-aligned square out of a photo.

    Args:
        image: (H, W, 3) uint8 RGB source.
        quad: The crop square from :func:`crop_quad`, in the source's pixels.
        output_size: Side of the result.
        transform_size: Side of the intermediate resampling (the recipe's 4096); the result is resized
            from it with a Lanczos filter when larger than ``output_size``.

    Returns:
        The (output_size, output_size, 3) uint8 aligned image, and the shrink / crop / pad steps taken.
    """
    img = Image.fromarray(as_rgb_uint8(image))
    corners, qsize = quad.corners(), quad.size
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink))), Image.LANCZOS)
        corners, qsize = corners / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width),
            min(hi[1] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        corners = corners - crop[:2]
    lo, hi = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.width + border, 0),
           max(hi[1] - img.height + border, 0))
    if max(pad) > border - 4:
        pad = tuple(int(max(p, np.rint(qsize * 0.3))) for p in pad)
        img = Image.fromarray(_reflect_pad(np.asarray(img), pad, qsize))
        corners = corners + pad[:2]
    else:
        pad = (0, 0, 0, 0)
    out = img.transform((transform_size, transform_size), Image.QUAD, (corners + 0.5).flatten().tolist(),
                        Image.BILINEAR)
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.LANCZOS)
    return np.asarray(out), AlignSteps(shrink, tuple(int(v) for v in crop), tuple(int(v) for v in pad))


@dataclass(frozen=True)
class AlignResult:
    """One image through detection and alignment.

    Attributes:
        image: The aligned (S, S, 3) uint8 image, or None when no face was found.
        quad: The crop square, or None.
        detection: The detected face, or None.
        steps: Shrink / crop / pad, or None.
        reason: Why there is no image ("" on success).
    """

    image: np.ndarray | None
    quad: CropQuad | None
    detection: Detection | None
    steps: AlignSteps | None
    reason: str = ""


def align_photo(image: np.ndarray, output_size: int = 1024, transform_size: int = TRANSFORM_SIZE) -> AlignResult:
    """Detect the most confident face of a photo and FFHQ-align it.

    Args:
        image: (H, W, 3) uint8 RGB.
        output_size: Side of the aligned image.
        transform_size: Intermediate resampling size (see :func:`align_face`).

    Returns:
        The result; ``reason`` says "no face detected ..." when the detector finds none.
    """
    image = as_rgb_uint8(image)
    det = detect_face(image)
    if det is None:
        return AlignResult(None, None, None, None,
                           f"no face detected (dlib HOG, {image.shape[1]}x{image.shape[0]} px, "
                           f"upsampled x{2 ** upsample_steps(min(image.shape[:2]))})")
    quad = crop_quad(landmarks(image, det.box))
    out, steps = align_face(image, quad, output_size, transform_size)
    return AlignResult(out, quad, det, steps)
