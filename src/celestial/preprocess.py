"""THE preprocessing: the one function that turns any PIL image into model input.

`prepare.py` (training data), `evaluate.py` and the service all go through
`image_to_array` + `array_to_features`, so training and serving cannot drift apart.
Only numpy and Pillow are imported here: this module ships in the service image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# Resampling filter used everywhere (deterministic, and the same in training and serving).
RESAMPLE = Image.Resampling.BILINEAR


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    - palette (P) and 1-bit images: expanded through their palette;
    - transparency (RGBA, LA, P with tRNS): composited on black, the colour of space,
      so transparent pixels look like sky rather than like white or garbage;
    - 16/32-bit integer and float grayscale (I;16, I, F): scaled to 0..255 from the
      full range of the type (Pillow's own conversion would clip at 255 instead).
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" or img.mode == "1":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def image_to_array(img: Image.Image, image_size: Sequence[int], grayscale: bool) -> np.ndarray:
    """Resize to `image_size` (width, height) and return uint8 HxWxC (C = 1 or 3).

    This is what `prepare` stores: compact uint8 arrays instead of floats.
    """
    width, height = int(image_size[0]), int(image_size[1])
    img = to_rgb(img)
    if grayscale:
        img = img.convert("L")
    img = img.resize((width, height), RESAMPLE)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def array_to_features(arrays: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, C) or one image (H, W, C) -> float32 rows (N, H*W*C) in [0, 1]."""
    arrays = np.asarray(arrays)
    if arrays.ndim == 3:
        arrays = arrays[None]
    return (arrays.reshape(len(arrays), -1).astype(np.float32)) / np.float32(255.0)


def preprocess(img: Image.Image, image_size: Sequence[int], grayscale: bool) -> np.ndarray:
    """PIL image -> model input, shape (1, n_features), float32. Used by the service."""
    return array_to_features(image_to_array(img, image_size, grayscale))
