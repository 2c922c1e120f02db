"""THE preprocessing: the one function that turns any PIL image into model input.

`prepare.py` (training data), `evaluate.py` and the service all go through
`image_to_array` + `array_to_features`, so training and serving cannot drift apart.
Only numpy and Pillow are imported here: this module ships in the service image.

The model does not see pixels but 19 numbers that describe the body in the picture: its
colour (mean, spread and hue of the pixels brighter than the sky), how much of the frame
it covers, and how textured it is (mean brightness steps across and along the image, and
of the Laplacian: bands, craters, clouds). They ignore where the body sits, how it is
turned and lit, which is what varies between pictures of one class. On the 300 held-out
renders the same MLP goes from 0.733 (3,072 raw pixels) to 0.99 (docs/model.md).
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


# A pixel whose brightest channel is above this (0..1) belongs to the body; the sky of the
# renders stays below 0.07 and the stars shrink to faint dots at 32x32. For other data,
# anything brighter than its background counts.
BODY_THRESHOLD = 0.15


def n_features(channels: int) -> int:
    """How many features `array_to_features` gives for images of `channels` (1 or 3)."""
    return 6 * channels + 1


def array_to_features(arrays: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, C) or one image (H, W, C) -> float32 rows (N, 6*C + 1) in [0, 1].

    Per channel: mean, standard deviation and share of the summed means (the hue) of the
    body's pixels, then the mean absolute step across the image, along it and of the
    Laplacian (/4) over the body's inner pixels; last, the share of the frame the body
    covers. Each row depends on its own image only (a batch gives the bits one image gives),
    computed in float64 so the float32 result does not depend on summation order.
    """
    arrays = np.asarray(arrays)
    if arrays.ndim == 3:
        arrays = arrays[None]
    # Channels first, so that every sum below runs over one contiguous image plane: numpy
    # is several times slower reducing a trailing axis of 3.
    x = np.ascontiguousarray(arrays.transpose(0, 3, 1, 2), dtype=np.float64) / 255.0
    body = x.max(axis=1, keepdims=True) > BODY_THRESHOLD  # (N, 1, H, W)
    mean = _masked_mean(x, body)
    std = np.sqrt(_masked_mean((x - mean[:, :, None, None]) ** 2, body))
    hue = mean / np.maximum(mean.sum(axis=1, keepdims=True), 1e-6)
    # Steps between neighbours, centred on the inner pixels (H-2, W-2).
    left, right = x[:, :, 1:-1, :-2], x[:, :, 1:-1, 2:]
    up, down = x[:, :, :-2, 1:-1], x[:, :, 2:, 1:-1]
    steps = np.concatenate(
        [
            np.abs(right - left) / 2,
            np.abs(down - up) / 2,
            np.abs(4 * x[:, :, 1:-1, 1:-1] - left - right - up - down) / 4,
        ],
        axis=1,
    )  # (N, 3C, H-2, W-2): across, along, Laplacian
    texture = _masked_mean(steps, body[:, :, 1:-1, 1:-1])
    coverage = body.mean(axis=(1, 2, 3))[:, None]
    return np.concatenate([mean, std, hue, texture, coverage], axis=1).astype(np.float32)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image and channel, the mean of `values` (N, C, H, W) where `mask` (N, 1, H, W)
    is true: (N, C); zeros for an image with no such pixel."""
    count = np.maximum(mask.sum(axis=(2, 3)), 1)  # (N, 1)
    return (values * mask).sum(axis=(2, 3)) / count


def preprocess(img: Image.Image, image_size: Sequence[int], grayscale: bool) -> np.ndarray:
    """PIL image -> model input, shape (1, n_features), float32. Used by the service."""
    return array_to_features(image_to_array(img, image_size, grayscale))
