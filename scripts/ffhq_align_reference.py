"""An independent FFHQ alignment, written from the published recipe, compared with ``bench.faces``.

Reference: NVlabs/ffhq-dataset, ``download_ffhq.py``, ``recreate_aligned_images`` (commit 4826aa6, read, not
copied), with its defaults ``enable_padding=True, rotate_level=True, random_shift=0``; and dlib's own example
usage for the landmarks (``python_examples/face_landmark_detection.py``: ``get_frontal_face_detector()``,
``detector(img, 1)``, ``shape_predictor(PATH)(img, det)``). The functions above the line marked
"comparison" import nothing from this repository; the comparison below it calls ``bench.faces`` and
reports, per photo, how far our crop quad and aligned image are from the reference:

    python scripts/ffhq_align_reference.py            # grace_hopper, astronaut and geometric variants
    python scripts/ffhq_align_reference.py --full     # also 1024 px output from a 4096 px intermediate

Needs the ``faces`` extra (dlib-bin, face-recognition-models), matplotlib (grace_hopper.jpg) and
scikit-image (astronaut). ``tests/bench/test_faces.py`` runs the same comparison with the tolerances of
``TOLERANCES``; the numbers are in docs/VERIFICATION.md.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

TOLERANCES = {
    "landmarks_px": 0.0,  # our landmark wrapper vs dlib's example usage, same image and face box: identical
    "quad_same_landmarks_px": 1e-9,  # crop quad from the same landmarks
    "image_same_quad_max": 1,  # aligned image from the same quad: grey levels of 255 (rounding only)
    "quad_pipeline_px": 1e-9,  # whole pipeline (our detection, landmarks, quad) vs reference
    "image_pipeline_max": 1,  # whole pipeline, grey levels of 255
}


# ---------------------------------------------------------------------------------------------------------
# The reference: dlib's example usage and the FFHQ recipe (nothing from this repository)


def _dlib_model(name: str) -> str:
    # face_recognition_models' __init__ needs pkg_resources (gone from setuptools >= 81): find its folder only
    spec = importlib.util.find_spec("face_recognition_models")
    return str(Path(next(iter(spec.submodule_search_locations))) / "models" / name)


def dlib_example_landmarks(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Landmarks the way dlib's example finds them: HOG detector upsampling once, then the 68-point predictor.

    Returns the (68, 2) points (x, y) of the first detection and its box (left, top, right, bottom), or None.
    """
    import dlib

    faces = dlib.get_frontal_face_detector()(rgb, 1)
    if len(faces) == 0:
        return None
    predictor = dlib.shape_predictor(_dlib_model("shape_predictor_68_face_landmarks.dat"))
    shape = predictor(rgb, faces[0])
    points = np.array([[shape.part(k).x, shape.part(k).y] for k in range(shape.num_parts)], dtype=np.float64)
    f = faces[0]
    return points, (f.left(), f.top(), f.right(), f.bottom())


def ffhq_quad(lm: np.ndarray) -> np.ndarray:
    """The recipe's oriented crop rectangle: (4, 2) corners c-x-y, c-x+y, c+x+y, c+x-y."""
    eye_l = lm[36:42].mean(axis=0)
    eye_r = lm[42:48].mean(axis=0)
    mouth = (lm[48] + lm[54]) / 2.0  # outer-mouth points 0 and 6
    eyes = (eye_l + eye_r) / 2.0
    e2e, e2m = eye_r - eye_l, mouth - eyes
    # the recipe subtracts the eye-to-mouth vector turned by a quarter (flip x/y, negate the new x)
    x = e2e - np.array([-e2m[1], e2m[0]])
    x = x / np.linalg.norm(x) * max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    y = np.array([-x[1], x[0]])
    c = eyes + 0.1 * e2m
    return np.array([c - x - y, c - x + y, c + x + y, c + x - y])


def _box(quad: np.ndarray) -> np.ndarray:
    """Integer bounds (x0, y0, x1, y1) of the quad: floor of the minima, ceil of the maxima."""
    return np.concatenate([np.floor(quad.min(axis=0)), np.ceil(quad.max(axis=0))]).astype(int)


def _faded_padding(arr: np.ndarray, pad: np.ndarray, qsize: float) -> np.ndarray:
    """Reflect-pad by (left, top, right, bottom), blur towards the outside and fade to the median colour."""
    left, top, right, bottom = (int(p) for p in pad)
    a = np.pad(arr.astype(np.float32), [(top, bottom), (left, right), (0, 0)], mode="reflect")
    h, w = a.shape[:2]
    col = np.arange(w, dtype=np.float32).reshape(1, w, 1)
    row = np.arange(h, dtype=np.float32).reshape(h, 1, 1)
    near_x = np.minimum(col / left, (w - 1 - col) / right)
    near_y = np.minimum(row / top, (h - 1 - row) / bottom)
    weight = np.maximum(1.0 - near_x, 1.0 - near_y)
    a = a + (ndimage.gaussian_filter(a, [qsize * 0.02, qsize * 0.02, 0]) - a) * np.clip(3.0 * weight + 1.0, 0, 1)
    a = a + (np.median(a, axis=(0, 1)) - a) * np.clip(weight, 0, 1)
    return np.uint8(np.clip(np.rint(a), 0, 255))


def ffhq_align(rgb: np.ndarray, quad: np.ndarray, output_size: int = 1024,
               transform_size: int = 4096) -> tuple[np.ndarray, dict]:
    """The recipe's shrink, crop, pad and transform steps for one photo and crop rectangle.

    Returns the aligned (output_size, output_size, 3) uint8 image and what each step did.
    """
    img = Image.fromarray(rgb)
    quad = quad.astype(np.float64).copy()
    qsize = float(np.linalg.norm(quad[3] - quad[0]))  # the side of the square (= 2 |x|)
    steps = {"shrink": 1, "crop": None, "pad": None}

    factor = int(np.floor(qsize / output_size * 0.5))
    if factor > 1:  # shrink big photos first (Lanczos, the filter PIL called ANTIALIAS)
        img = img.resize((int(np.rint(img.width / factor)), int(np.rint(img.height / factor))),
                         Image.Resampling.LANCZOS)
        quad, qsize = quad / factor, qsize / factor
        steps["shrink"] = factor

    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0, x1, y1 = _box(quad)
    crop = (max(x0 - border, 0), max(y0 - border, 0), min(x1 + border, img.width), min(y1 + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad = quad - np.array(crop[:2], dtype=np.float64)
        steps["crop"] = crop

    x0, y0, x1, y1 = _box(quad)
    pad = np.array([max(border - x0, 0), max(border - y0, 0), max(x1 - img.width + border, 0),
                    max(y1 - img.height + border, 0)])
    if pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = Image.fromarray(_faded_padding(np.asarray(img), pad, qsize), "RGB")
        quad = quad + pad[:2]
        steps["pad"] = tuple(int(p) for p in pad)

    out = img.transform((transform_size, transform_size), Image.Transform.QUAD, tuple((quad + 0.5).ravel()),
                        Image.Resampling.BILINEAR)
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return np.asarray(out), steps


# ---------------------------------------------------------------------------------------------------------
# comparison with bench.faces


def photos() -> dict[str, np.ndarray]:
    """The real photos shipped with matplotlib and scikit-image, and geometric variants of them.

    ``grace_rot20`` (rotated 20 degrees on a larger grey canvas), ``grace_edge`` (face near the top-left
    corner: the padding step runs), ``grace_x4`` (upscaled four times: the shrink step runs at 256 px output).
    """
    import matplotlib
    from skimage import data

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    grace = np.asarray(Image.open(path).convert("RGB"))
    g = Image.fromarray(grace)
    canvas = Image.new("RGB", (800, 800), (128, 128, 128))
    canvas.paste(g, (144, 100))
    rot20 = np.asarray(canvas.rotate(20, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)))
    edge = np.ascontiguousarray(grace[120:, 140:])
    x4 = np.asarray(g.resize((g.width * 4, g.height * 4), Image.Resampling.BICUBIC))
    return {"grace_hopper": grace, "astronaut": data.astronaut(), "grace_rot20": rot20, "grace_edge": edge,
            "grace_x4": x4}


def compare(rgb: np.ndarray, output_size: int = 256, transform_size: int = 1024) -> dict[str, float]:
    """Our landmarks, quad and aligned image against the reference on one photo (numbers for the log)."""
    from bench.faces import CropQuad, align_face, align_photo, crop_quad, landmarks

    ref = dlib_example_landmarks(rgb)
    if ref is None:
        raise ValueError("dlib's example usage finds no face in this photo")
    ref_lm, ref_box = ref
    ref_quad = ffhq_quad(ref_lm)
    ref_img, ref_steps = ffhq_align(rgb, ref_quad, output_size, transform_size)

    ours_lm = landmarks(rgb, ref_box)  # same image, same face box
    same_quad: CropQuad = crop_quad(ref_lm)  # same landmarks
    same_img, _ = align_face(rgb, same_quad, output_size, transform_size)  # same quad
    pipe = align_photo(rgb, output_size, transform_size)  # our detection, landmarks, quad and resampling
    qsize = float(np.linalg.norm(ref_quad[3] - ref_quad[0]))
    diff = np.abs(same_img.astype(int) - ref_img.astype(int))
    pipe_diff = np.abs(pipe.image.astype(int) - ref_img.astype(int))
    return {
        "landmarks_px": float(np.abs(ours_lm - ref_lm).max()),
        "quad_same_landmarks_px": float(np.abs(same_quad.corners() - ref_quad).max()),
        "image_same_quad_max": int(diff.max()),
        "image_same_quad_mean": float(diff.mean()),
        "quad_pipeline_px": float(np.abs(pipe.quad.corners() - ref_quad).max()),
        "image_pipeline_max": int(pipe_diff.max()),
        "image_pipeline_mean": float(pipe_diff.mean()),
        "qsize": qsize,
        "shrink": ref_steps["shrink"],
        "padded": ref_steps["pad"] is not None,
    }


def within_tolerance(result: dict[str, float]) -> list[str]:
    """Names of the numbers of :func:`compare` that exceed ``TOLERANCES`` (empty when all hold)."""
    return [k for k, tol in TOLERANCES.items() if result[k] > tol]


def main() -> None:
    """Print the comparison for every photo (and size); a line ends in OK when all tolerances hold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also compare at 1024 px from 4096 px")
    args = parser.parse_args()
    sizes = [(64, 256), (256, 1024)] + ([(1024, 4096)] if args.full else [])
    for name, rgb in photos().items():
        for out, tsize in sizes:
            r = compare(rgb, out, tsize)
            bad = within_tolerance(r)
            print(f"{name:13s} {rgb.shape[1]}x{rgb.shape[0]} -> {out} (via {tsize}): "
                  + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
                  + ("  OK" if not bad else f"  OUT OF TOLERANCE: {bad}"))


if __name__ == "__main__":
    main()
