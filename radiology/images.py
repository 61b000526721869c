"""Image files of a study as float32 grayscale in [0, 1]: DICOM through `radiology.dicom.read`,
PNG/JPEG (8- or 16-bit) through Pillow.

    >>> from radiology.images import read_image
    >>> read_image("study/view1.dcm").shape          # doctest: +SKIP
    (2544, 3056)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DICOM_MAGIC_OFFSET = 128  # Part 10: a 128-byte preamble, then b"DICM"


def is_dicom_file(path: str | Path) -> bool:
    """Whether `path` is a DICOM file: a `.dcm` name or the Part 10 magic after the preamble."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    with path.open("rb") as f:
        head = f.read(DICOM_MAGIC_OFFSET + 4)
    return head[DICOM_MAGIC_OFFSET:] == b"DICM"


def read_image(path: str | Path) -> np.ndarray:
    """The image of `path` as float32 [H, W] in [0, 1].

    DICOM goes through `radiology.dicom.read` (rescale, VOI LUT / window, MONOCHROME1 inverted;
    its errors are `radiology.dicom.DicomError`); other files through Pillow: 16-bit grayscale
    PNGs are scaled by 65535, everything else is converted to 8-bit grayscale and scaled by 255.
    """
    if is_dicom_file(path):
        from radiology.dicom import read

        return read(path).pixels
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
