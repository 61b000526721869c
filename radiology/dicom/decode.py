"""Decode stage of `radiology.dicom`: one frame of checked pixel data -> a numpy array.

Decoder plugins are tried in a fixed order per transfer syntax (`PLUGIN_ORDER`), so an image
decodes to the same values on every machine; a codec's failure becomes TruncatedError or
CorruptPixelDataError, and a frame whose shape differs from the header is refused.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
from pydicom import uid as _uid
from pydicom.dataset import Dataset

from radiology.dicom.checks import ENCAPSULATED_NATIVE, Geometry, length_message
from radiology.dicom.errors import (
    CorruptPixelDataError,
    InvalidHeaderError,
    PixelDataLengthError,
    TruncatedError,
    truncated_message,
)

__all__ = ["PLUGIN_ORDER", "decode_frame", "encapsulated_native", "plugins"]


#: Decoder plugins tried, in this order, per transfer syntax. Fixed so that an image decodes to the
#: same values on every machine (pydicom's own order depends on which packages are installed, and
#: lossy JPEG decoders differ by a grey level), and fastest first (measured with bench/ingest.py;
#: bench/README.md has the ratios).
PLUGIN_ORDER: dict[str, tuple[str, ...]] = {
    _uid.JPEGBaseline8Bit: ("pillow", "pylibjpeg", "gdcm"),
    _uid.JPEGExtended12Bit: ("pylibjpeg", "pillow", "gdcm"),
    _uid.JPEGLossless: ("pylibjpeg", "gdcm"),
    _uid.JPEGLosslessSV1: ("pylibjpeg", "gdcm"),
    _uid.JPEGLSLossless: ("pyjpegls", "pylibjpeg", "gdcm"),
    _uid.JPEGLSNearLossless: ("pyjpegls", "pylibjpeg", "gdcm"),
    _uid.JPEG2000Lossless: ("pylibjpeg", "gdcm", "pillow"),
    _uid.JPEG2000: ("pylibjpeg", "gdcm", "pillow"),
    _uid.HTJ2KLossless: ("pylibjpeg",),
    _uid.HTJ2KLosslessRPCL: ("pylibjpeg",),
    _uid.HTJ2K: ("pylibjpeg",),
    _uid.RLELossless: ("pylibjpeg", "pydicom"),
}


def plugins(ts: _uid.UID) -> list[str | None]:
    """Plugins to try for ``ts`` ([None] = pydicom's choice, for native data)."""
    if not ts.is_compressed:
        return [None]
    available = set(pydicom.pixels.get_decoder(ts).available_plugins)
    ordered = [p for p in PLUGIN_ORDER.get(ts, ()) if p in available]
    ordered += sorted(available - set(ordered))
    return list(ordered) or [None]


def encapsulated_native(ds: Dataset, geo: Geometry) -> np.ndarray:
    """Frame 0 of Encapsulated Uncompressed Explicit VR Little Endian (no pydicom 3.0 decoder)."""
    if geo.bits_allocated not in (8, 16, 32):
        raise InvalidHeaderError(
            f"Bits Allocated {geo.bits_allocated} cannot be encapsulated uncompressed; "
            "re-export it."
        )
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=geo.frames))
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{geo.bits_allocated // 8}")
    count = geo.rows * geo.columns * geo.samples
    if len(frame) < count * dtype.itemsize:
        raise PixelDataLengthError(length_message(len(frame), count * dtype.itemsize, geo))
    arr = np.frombuffer(frame, dtype=dtype, count=count)
    if geo.samples == 1:
        arr = arr.reshape(geo.rows, geo.columns)
    elif int(ds.get("PlanarConfiguration", 0) or 0) == 1:
        arr = arr.reshape(geo.samples, geo.rows, geo.columns).transpose(1, 2, 0)
    else:
        arr = arr.reshape(geo.rows, geo.columns, geo.samples)
    if geo.bits_stored < geo.bits_allocated:  # keep the stored bits only, sign-extended if signed
        shift = geo.bits_allocated - geo.bits_stored
        arr = (arr << shift) >> shift if signed else arr & ((1 << geo.bits_stored) - 1)
    return np.ascontiguousarray(arr)


def decode_frame(ds: Dataset, ts: _uid.UID, geo: Geometry) -> tuple[np.ndarray, str]:
    """Decode one frame with the first plugin of the fixed order that succeeds."""
    if ts == ENCAPSULATED_NATIVE:
        return encapsulated_native(ds, geo), "native"
    index = 0 if geo.frames > 1 else None
    failure: BaseException | None = None
    arr = None
    used = "native"
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for plugin in plugins(ts):
            try:
                if plugin is None:
                    arr = pydicom.pixels.pixel_array(ds, index=index)
                else:
                    arr = pydicom.pixels.pixel_array(ds, index=index, decoding_plugin=plugin)
                    used = plugin
                break
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - try the next plugin, classify at the end
                failure = exc
    if arr is None:
        text = str(failure).lower()
        if ts.is_compressed and any(
            k in text for k in ("end of", "insufficient", "truncat", "fewer", "less than")
        ):
            message = truncated_message("inside the compressed pixel stream")
            raise TruncatedError(message) from failure
        raise CorruptPixelDataError(
            f"The '{ts.name}' pixel data could not be decoded: the stream is damaged or does "
            "not match the header. Re-export the image from the source system."
        ) from failure
    expected = (geo.rows, geo.columns) if geo.samples == 1 else (geo.rows, geo.columns, geo.samples)
    if arr.shape != expected:
        raise CorruptPixelDataError(
            f"The decoder returned an image of shape {arr.shape}, the header says {expected}. "
            "The pixel data does not match its header; re-export the image."
        )
    return arr, used
