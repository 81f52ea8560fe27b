"""Pixel helpers shared by the figure tests."""

from pathlib import Path

import numpy as np
from PIL import Image


def pixels(path: Path) -> np.ndarray:
    """A PNG as (H, W, 3) uint8."""
    return np.asarray(Image.open(path).convert("RGB"))


def mask(img: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Where ``img`` is exactly the colour ``rgb``."""
    return np.all(img == np.array(rgb, np.uint8), axis=-1)
