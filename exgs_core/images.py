"""8-bit PNG output of rendered frames (colours are display-referred sRGB already, as 3DGS trains them)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from exgs_core.fileio import atomic_write


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) RGB or (H, W) grey float image in [0, 1] as an 8-bit PNG, atomically."""
    pixels = to_uint8(image)
    with atomic_write(path) as handle:
        Image.fromarray(pixels).save(handle, format="PNG")


def read_png(path: str | os.PathLike) -> np.ndarray:
    """A PNG as float32 in [0, 1], (H, W, 3) or (H, W)."""
    with Image.open(path) as image:
        mode = "L" if image.mode in ("L", "I", "I;16") else "RGB"
        return np.asarray(image.convert(mode), dtype=np.float32) / 255.0
