"""Image work for the service: decode instances with `radiology`, pick the frontal view, render."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Display windows over the decoded [0, 1] image: (center, width).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "default": (0.5, 1.0),
    "lung": (0.40, 0.70),
    "mediastinum": (0.60, 0.50),
    "bone": (0.70, 0.45),
    "soft_tissue": (0.55, 0.35),
}



class ImageDecodeError(Exception):
    """An instance that cannot become an image: machine code and a message a person can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class DecodedImage:
    """What ingest keeps of an instance: the decoded image, and a copy with its long side capped."""

    image: Any  # radiology.dicom.DicomImage
    pixels: np.ndarray

    @property
    def view(self) -> str | None:
        return _text(self.image.view)


def decode(data: bytes, *, max_side: int, policy: Any = None) -> DecodedImage:
    """Decode one DICOM instance with `radiology.dicom.read` under `policy` (a ReadPolicy; the
    default policy when None); DicomError becomes ImageDecodeError."""
    from radiology import dicom

    try:
        image = dicom.read(data, policy=policy)
    except dicom.DicomError as error:
        code = str(getattr(error, "code", "dicom_error"))
        raise ImageDecodeError(code, str(error)) from None
    pixels = downscale(np.asarray(image.pixels, dtype=np.float32), max_side)
    return DecodedImage(image=image, pixels=pixels)


def _text(value: object) -> str | None:
    if value is None:
        return None
    value = getattr(value, "value", value)
    return str(value)[:16] or None


def downscale(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longest side is at most `max_side` (anti-aliased); smaller ones pass as is."""
    rows, columns = pixels.shape[:2]
    scale = max_side / max(rows, columns)
    if scale >= 1.0:
        return pixels.astype(np.float32)
    from skimage.transform import resize

    shape = (max(1, round(rows * scale)), max(1, round(columns * scale)))
    return resize(pixels, shape, anti_aliasing=True, preserve_range=True).astype(np.float32)


def choose_frontal(images: list[DecodedImage]) -> int | None:
    """Index of the image to report on, by `radiology.studies.choose_views` (PA, AP, no lateral)."""
    from radiology.studies import choose_views

    frontal, _, _ = choose_views([d.image for d in images])
    if frontal is None:
        return None
    return next(i for i, d in enumerate(images) if d.image is frontal)


def render_png(pixels: np.ndarray, window: str = "default", image_format: str = "PNG") -> bytes:
    """An 8-bit grayscale PNG (or `image_format="JPEG"`) of a [0, 1] image through a window."""
    from PIL import Image

    center, width = WINDOW_PRESETS[window]
    low = center - width / 2
    shown = np.clip((pixels - low) / width, 0.0, 1.0)
    buffer = io.BytesIO()
    gray = (shown * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(buffer, format=image_format)
    return buffer.getvalue()
