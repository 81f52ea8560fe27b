"""Image file I/O and the image contract shared by every stage.

Between stages an image batch is a float32 tensor of shape (N, 3, R, R), RGB, values in [-1, 1]
(see ``check_images``). This module is the one place that converts between that convention and files:

* Decoding (``load_image`` / ``decode_image``): EXIF orientation applied; palette, grayscale, CMYK and
  other modes converted to RGB (grayscale replicated to 3 channels); transparency composited onto a
  **white** background (the usual backdrop of product and web images, and what image viewers show);
  16-bit grayscale scaled by 1/65535 (16-bit RGB is reduced to 8 bits per channel by Pillow itself);
  centre-cropped to a square on the shorter side; resized to R x R with ``torch.nn.functional.interpolate``
  (bicubic, ``antialias=True``, i.e. a PIL-style bicubic filter widened by the downscale factor, so that
  fine detail is averaged rather than aliased) on float values, then clamped to the valid range.
* Encoding (``save_image``): 8-bit PNG, values rounded, written atomically (temporary file, then rename).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_SIDE",
    "ImageLoadError",
    "check_images",
    "decode_image",
    "describe_tensor",
    "from_uint8",
    "list_image_files",
    "load_image",
    "save_image",
    "to_uint8",
]

# Pillow registers these but cannot decode them by itself (stub plugins, or Ghostscript / Windows needed)
_NOT_DECODED = {".bufr", ".grib", ".h5", ".hdf", ".mpeg", ".mpg", ".emf", ".wmf", ".eps", ".ps"}


def _readable_extensions() -> tuple[str, ...]:
    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and ext not in _NOT_DECODED))


IMAGE_EXTENSIONS = _readable_extensions()
"""File extensions (lower case) that folder sources pick up: every format this Pillow can open (png, jpg,
gif, webp, tiff, bmp, ...)."""

MIN_SIDE = 8
"""Smallest accepted image side in pixels; anything smaller carries no usable content."""

_RANGE_TOL = 1e-3
_BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image file could not be used; the message names the file and the reason."""


def describe_tensor(x: torch.Tensor) -> str:
    """Summarise a tensor for error messages: shape, dtype and value range.

    Args:
        x: Any tensor.

    Returns:
        Text like ``"shape (2, 3, 64, 64), dtype torch.float32, range [-1, 0.98]"``.
    """
    if x.numel() == 0:
        value_range = "empty"
    elif x.is_complex():
        value_range = "range n/a (complex)"
    else:
        xf = x.detach().float()
        value_range = f"range [{xf.min().item():.4g}, {xf.max().item():.4g}]"
    return f"shape {tuple(x.shape)}, dtype {x.dtype}, {value_range}"


def _image_problem(x: torch.Tensor, lo: float, hi: float) -> str | None:
    """Return why ``x`` violates the image contract, or None when it complies."""
    if x.dim() != 4:
        return "expected 4-D NCHW"
    if x.dtype != torch.float32:
        return "expected dtype float32"
    if x.shape[1] != 3:
        return "expected 3 (RGB) channels"
    if x.shape[2] != x.shape[3]:
        return "expected square images (H == W)"
    if x.numel() == 0:
        return None
    if not bool(torch.isfinite(x).all()):
        return "found NaN or Inf values"
    if x.min().item() < lo - _RANGE_TOL or x.max().item() > hi + _RANGE_TOL:
        return f"values outside [{lo:g}, {hi:g}]"
    return None


def check_images(x: object, name: str = "images") -> None:
    """Validate the image contract: float32 NCHW RGB, square, finite, values in [-1, 1].

    Values may exceed the range by 1e-3 (rounding in upstream arithmetic).

    Args:
        x: The candidate tensor, expected shape (N, 3, R, R), dtype float32, values in [-1, 1].
        name: What ``x`` is, used in the error message (e.g. ``"targets"``).

    Raises:
        ValueError: If ``x`` is not a tensor or breaks the contract; the message gives the shape, dtype
            and min/max of ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (N, 3, R, R), got {type(x).__name__}")
    problem = _image_problem(x, -1.0, 1.0)
    if problem is not None:
        raise ValueError(
            f"{name}: {problem}; images must be float32 (N, 3, R, R) RGB in [-1, 1], got {describe_tensor(x)}"
        )


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Convert images in [-1, 1] to uint8 in [0, 255], rounding to the nearest level.

    Args:
        x: Float tensor of any shape (e.g. (3, R, R) or (N, 3, R, R)), values in [-1, 1]; values outside
            are clipped.

    Returns:
        uint8 tensor of the same shape and device, ``round((x + 1) * 127.5)``.
    """
    if not x.is_floating_point():
        raise ValueError(f"to_uint8: expected a floating-point tensor in [-1, 1], got {describe_tensor(x)}")
    return ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Convert uint8 values in [0, 255] to float32 in [-1, 1] (the inverse of ``to_uint8``).

    Args:
        x: uint8 tensor or array of any shape.

    Returns:
        float32 tensor of the same shape, ``x / 127.5 - 1``.
    """
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype != torch.uint8:
        raise ValueError(f"from_uint8: expected dtype uint8, got {describe_tensor(t)}")
    return t.float() / 127.5 - 1.0


def _to_rgb_float(img: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to an (H, W, 3) float32 array in [0, 1]."""
    if img.mode.startswith("I;16"):
        gray = np.asarray(img).astype(np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "I":
        values = np.asarray(img)
        # Pillow uses mode "I" for 16-bit grayscale from some formats; larger values are not 16-bit data.
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError("32-bit integer images are not supported (values outside the 16-bit range)")
        gray = values.astype(np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        raise ValueError("floating-point images (mode F) are not supported; convert to 8 or 16 bit")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif img.mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, _BACKGROUND + (255,))
        img = Image.alpha_composite(background, img)
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return rgb.astype(np.float32) / 255.0


def _crop_resize(rgb: np.ndarray, resolution: int) -> torch.Tensor:
    """Centre-crop an (H, W, 3) [0, 1] array to a square and resize it to (3, R, R) in [-1, 1]."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(rgb[top : top + side, left : left + side]))
    x = square.permute(2, 0, 1).unsqueeze(0)
    if side != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False, antialias=True)
    # Bicubic overshoots a little at edges; clamping keeps the [-1, 1] contract exact.
    return (x[0].clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


def _prepare(img: Image.Image, resolution: int) -> torch.Tensor:
    """Decode, orient, convert and resize an opened PIL image; raises ValueError/OSError on bad data."""
    img.load()
    img = ImageOps.exif_transpose(img)
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ValueError(f"image is {w}x{h} pixels; at least {MIN_SIDE} px per side is needed")
    return _crop_resize(_to_rgb_float(img), resolution)


def _check_resolution(resolution: object) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_SIDE:
        raise ValueError(f"resolution must be an integer >= {MIN_SIDE}, got {resolution!r}")
    return resolution


def decode_image(data: bytes, resolution: int, name: str = "<bytes>") -> torch.Tensor:
    """Decode encoded image bytes (PNG, JPEG, WebP, ...) into the image convention.

    Args:
        data: The encoded file content.
        resolution: Output side R in pixels (>= 8).
        name: What the bytes are (a path or a database key), used in error messages.

    Returns:
        float32 tensor (3, R, R), RGB, values in [-1, 1], on CPU.

    Raises:
        ImageLoadError: If the bytes cannot be decoded or the image is too small; the message starts with
            ``name``.
    """
    resolution = _check_resolution(resolution)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _prepare(img, resolution)
    # Pillow signals corrupt data with many exception types (OSError, SyntaxError, struct.error, ...).
    except Exception as exc:
        raise ImageLoadError(f"{name}: {_reason(exc)}") from exc


def load_image(path: str | os.PathLike, resolution: int) -> torch.Tensor:
    """Load an image file into the image convention (see the module docstring for the conversions).

    Args:
        path: Image file (PNG, JPEG, BMP, WebP, TIFF, ...).
        resolution: Output side R in pixels (>= 8).

    Returns:
        float32 tensor (3, R, R), RGB, values in [-1, 1], on CPU.

    Raises:
        ImageLoadError: If the file is missing, unreadable, truncated, not an image, or smaller than
            8 px on a side; the message is ``"{path}: {reason}"``.
    """
    resolution = _check_resolution(resolution)
    try:
        with Image.open(path) as img:
            return _prepare(img, resolution)
    except Exception as exc:  # see decode_image
        raise ImageLoadError(f"{path}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def save_image(x: torch.Tensor, path: str | os.PathLike, *, is_mask: bool = False) -> Path:
    """Save one image or mask as an 8-bit PNG, atomically (temporary file, then rename).

    Args:
        x: Image (3, R, R) or (1, R, R) with values in [-1, 1]; or, with ``is_mask``, a mask (1, R, R)
            with values in [0, 1]. Float dtype, any device. Values are rounded to 256 levels.
        path: Output file; parent folders are created. Written as PNG whatever the extension.
        is_mask: Interpret ``x`` as a [0, 1] mask (1 -> 255) instead of a [-1, 1] image.

    Returns:
        The path written.

    Raises:
        ValueError: If ``x`` has the wrong shape, dtype or range (message gives shape, dtype and range).
    """
    lo, channels = (0.0, (1,)) if is_mask else (-1.0, (1, 3))
    bad = (
        not isinstance(x, torch.Tensor)
        or x.dim() != 3
        or x.shape[0] not in channels
        or not x.is_floating_point()
        or x.numel() == 0
        or not bool(torch.isfinite(x).all())
        or x.min().item() < lo - _RANGE_TOL
        or x.max().item() > 1.0 + _RANGE_TOL
    )
    if bad:
        want = "mask (1, H, W) float in [0, 1]" if is_mask else "image (3, H, W) or (1, H, W) float in [-1, 1]"
        got = describe_tensor(x) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"save_image({path}): expected a {want}, got {got}")
    u8 = (x.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8) if is_mask else to_uint8(x)
    array = u8.cpu().permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _natural_key(text: str) -> list[tuple[int, int, str]]:
    # Numeric runs compare as numbers so that 2.jpg sorts before 10.jpg (CelebA-HQ names are 0..29999).
    return [(0, int(tok), tok) if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", text) if tok]


def list_image_files(root: str | Path, what: str = "folder") -> dict[str, Path]:
    """Find image files under a folder, recursively, and give each a stable id.

    Extensions are matched case-insensitively against ``IMAGE_EXTENSIONS``; hidden files and folders
    (names starting with ``.``) are skipped. The id is the path relative to ``root`` without extension
    (``/`` separated, so the file stem for a flat folder); files that would share an id keep their
    extension in it. Order is natural (numbers compare by value) on the relative path.

    Args:
        root: Folder to search.
        what: Names the spec kind in errors.

    Returns:
        Mapping id -> file path, in order.

    Raises:
        ValueError: If ``root`` is missing, not a folder, or holds no image files.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise ValueError(f"{what}: path {str(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"{what}: path {str(root)!r} is not a folder")
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in rel.parts):
            if path.is_file():
                files.append((rel.as_posix(), path))
    if not files:
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise ValueError(f"{what}: no image files ({exts}) found under {str(root)!r}")
    files.sort(key=lambda rp: _natural_key(rp[0]))
    stems = [rel.rsplit(".", 1)[0] for rel, _ in files]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return {(stem if counts[stem] == 1 else rel): path for stem, (rel, path) in zip(stems, files, strict=True)}
