"""Image preprocessing as PaliGemma expects it: 3 channels, square resize, values in [-1, 1].

Input is float32 in [0, 1] (a decoded radiograph: HxW, HxWx1 or HxWx3). The resize is bilinear
with antialiasing (big_vision's `resize(res, antialias=True)` in its PaliGemma 2 transfer config),
done in float32 without the uint8 round-trip, so 12-16 bit radiographs keep their precision.
Training and serving both call this one function.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


class ImageError(ValueError):
    """An image cannot be turned into model input (wrong shape, empty, not finite)."""


def preprocess_image(image: np.ndarray, size: int) -> np.ndarray:
    """float32 [H, W] / [H, W, 1] / [H, W, 3] in [0, 1] -> float32 [size, size, 3] in [-1, 1]."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        channels = [arr]
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        channels = [arr[..., c] for c in range(3)]  # alpha, if any, is dropped
    else:
        raise ImageError(f"expected a grayscale or RGB image, got an array of shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError("the image is empty")
    if not np.all(np.isfinite(arr)):
        raise ImageError("the image contains NaN or infinite values")
    resized = [
        np.asarray(Image.fromarray(np.ascontiguousarray(c), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        for c in channels
    ]
    out = np.stack(resized * 3 if len(resized) == 1 else resized, axis=-1)
    return np.clip(out, 0.0, 1.0) * 2.0 - 1.0


def preprocess_batch(images: list[np.ndarray], size: int) -> np.ndarray:
    """Several images -> [N, size, size, 3]."""
    return np.stack([preprocess_image(im, size) for im in images]).astype(np.float32)
