"""Image work for the service: decode instances through `radiology`, pick the frontal view, render PNGs."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

#: Display windows over the decoded [0, 1] image: (center, width).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "default": (0.5, 1.0),
    "lung": (0.40, 0.70),
    "mediastinum": (0.60, 0.50),
    "bone": (0.70, 0.45),
    "soft_tissue": (0.55, 0.35),
}

VIEW_PREFERENCE = {"PA": 0, "AP": 1}


class ImageDecodeError(Exception):
    """An instance that cannot become an image: machine code and a message a person can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class DecodedImage:
    """What ingest keeps of one instance: the image (float32 [0, 1], longest side capped) and its view."""

    pixels: np.ndarray
    view: str | None
    laterality: str | None
    modality: str | None
    rows: int
    columns: int


def decode(data: bytes, *, max_side: int) -> DecodedImage:
    """Decode one DICOM instance with `radiology.dicom.read`; DicomError becomes ImageDecodeError."""
    from radiology import dicom

    try:
        image = dicom.read(data)
    except dicom.DicomError as error:
        code = str(getattr(error, "code", "dicom_error"))
        raise ImageDecodeError(code, str(error)) from None
    pixels = np.asarray(image.pixels, dtype=np.float32)
    rows, columns = pixels.shape[:2]
    return DecodedImage(
        pixels=downscale(pixels, max_side),
        view=_text(getattr(image, "view", None)),
        laterality=_text(getattr(image, "laterality", None)),
        modality=_text(getattr(image, "modality", None)),
        rows=int(rows),
        columns=int(columns),
    )


def _text(value: object) -> str | None:
    if value is None:
        return None
    value = getattr(value, "value", value)
    return str(value)[:16] or None


def downscale(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longest side is at most `max_side` (anti-aliased); smaller images pass through."""
    rows, columns = pixels.shape[:2]
    scale = max_side / max(rows, columns)
    if scale >= 1.0:
        return pixels.astype(np.float32)
    from skimage.transform import resize

    shape = (max(1, round(rows * scale)), max(1, round(columns * scale)))
    return resize(pixels, shape, anti_aliasing=True, preserve_range=True).astype(np.float32)


def choose_frontal(views: list[str | None]) -> int | None:
    """Index of the image to report on: PA before AP before an unlabelled view; never a lateral."""
    ranked = [
        (VIEW_PREFERENCE.get((view or "").upper(), 2), index)
        for index, view in enumerate(views)
        if "LAT" not in (view or "").upper() and (view or "").upper() not in {"LL", "RL"}
    ]
    return min(ranked)[1] if ranked else None


def render_png(pixels: np.ndarray, window: str = "default") -> bytes:
    """An 8-bit grayscale PNG of a [0, 1] image through a window preset."""
    from PIL import Image

    center, width = WINDOW_PRESETS[window]
    low = center - width / 2
    shown = np.clip((pixels - low) / width, 0.0, 1.0)
    buffer = io.BytesIO()
    Image.fromarray((shown * 255.0 + 0.5).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
