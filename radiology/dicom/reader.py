"""Read one DICOM object into a float32 image in [0, 1] with the metadata later stages need.

``read(path_or_bytes, policy=...)`` is the only way images enter training and serving, so an image
is decoded the same way in both. The steps, in order, each with its own typed error:

1. size check on the raw bytes (:class:`TooLargeError`), before anything is parsed;
2. parse with pydicom (:class:`NotDicomError`, :class:`TruncatedError`); a Part-10 file without its
   file meta is accepted and its transfer syntax inferred (from the data set encoding, or for
   encapsulated pixel data from the codec's stream signature);
3. policy on the header: pixel data present (:class:`NoPixelDataError`), modality
   (:class:`NotProjectionRadiographError`), decoded-pixel limit (:class:`TooLargeError`),
   multi-frame rule (:class:`UnsupportedImageError`), transfer syntax has a decoder
   (:class:`UnsupportedTransferSyntaxError`), native pixel data length matches the header
   (:class:`PixelDataLengthError`);
4. decode one frame (:class:`CorruptPixelDataError` / :class:`TruncatedError` when the codec fails);
5. grey-level pipeline (:mod:`radiology.dicom.pixels`): Modality LUT, VOI LUT or window (or a
   robust percentile window), polarity.

Multi-frame rule: a projection radiograph is one frame. With ``policy.multiframe == "first"``
(the default) the first frame is used and a note is recorded; with ``"reject"`` the object is
refused. Colour images (RGB / YBR / PALETTE COLOR, e.g. digitised films) become luminance.

pydicom logs invalid header values verbatim (e.g. "Invalid value for VR PN: 'Doe^Jane'"); importing
this module installs a filter on pydicom's loggers that replaces every quoted value with
``'<redacted>'``, so no patient identifier reaches a log through pydicom. Warnings raised while
reading are captured, never printed.

Nothing is half-written: the function either returns a complete :class:`DicomImage` or raises a
:class:`DicomError`; any unexpected exception from a decoder is wrapped, never leaked.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom import uid as _uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError

from radiology.dicom import meta as _meta
from radiology.dicom import pixels as _pixels
from radiology.dicom.errors import (
    CorruptPixelDataError,
    DicomError,
    InvalidHeaderError,
    NoPixelDataError,
    NotDicomError,
    NotProjectionRadiographError,
    PixelDataLengthError,
    TooLargeError,
    TruncatedError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)

__all__ = [
    "DicomImage",
    "ReadPolicy",
    "PROJECTION_MODALITIES",
    "read",
    "read_dataset",
    "read_header",
    "InstanceHeader",
    "sanitize_preamble",
]

#: Modalities accepted by default: projection X-ray (plain film, digital, mammography, dental,
#: fluoroscopy, angiography) and OT, which secondary captures of digitised films carry.
PROJECTION_MODALITIES: frozenset[str] = frozenset(
    {"CR", "DX", "DR", "RG", "MG", "IO", "PX", "RF", "XA", "OT"}
)

_PIXEL_TAG = 0x7FE00010
_ENCAPSULATED_NATIVE = _uid.UID("1.2.840.10008.1.2.1.98")  # Encapsulated Uncompressed Explicit VR LE
_FOR_PROCESSING = {  # DX / MG / IO "For Processing" SOP classes
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.1.3.1",
}
_UNDEFINED = 0xFFFFFFFF
_MIB = 1024 * 1024

# What would decode a transfer syntax this installation cannot (shown in the error message).
_DECODER_HINTS: dict[str, str] = {
    _uid.JPEGBaseline8Bit: "pylibjpeg-libjpeg or Pillow",
    _uid.JPEGExtended12Bit: "pylibjpeg-libjpeg",
    _uid.JPEGLossless: "pylibjpeg-libjpeg or python-gdcm",
    _uid.JPEGLosslessSV1: "pylibjpeg-libjpeg or python-gdcm",
    _uid.JPEGLSLossless: "pylibjpeg-libjpeg or pyjpegls",
    _uid.JPEGLSNearLossless: "pylibjpeg-libjpeg or pyjpegls",
    _uid.JPEG2000Lossless: "pylibjpeg-openjpeg or Pillow",
    _uid.JPEG2000: "pylibjpeg-openjpeg or Pillow",
    _uid.HTJ2KLossless: "pylibjpeg-openjpeg >= 2.4",
    _uid.HTJ2KLosslessRPCL: "pylibjpeg-openjpeg >= 2.4",
    _uid.HTJ2K: "pylibjpeg-openjpeg >= 2.4",
    _uid.RLELossless: "pylibjpeg-rle (or pydicom's own RLE decoder)",
}
_TRANSCODE = (
    "Ask the sender to transcode to Explicit VR Little Endian, JPEG 2000 or JPEG lossless "
    "(e.g. DCMTK 'dcmconv +te', or 'gdcmconv --raw')."
)


@dataclass(frozen=True)
class ReadPolicy:
    """What :func:`read` accepts and how it resolves ambiguous headers.

    ``modalities=None`` accepts every modality. ``max_pixels`` bounds the decoded frame
    (rows x columns x samples), checked from the header before decoding, so a small compressed
    file claiming a huge image is refused without allocating it.
    """

    modalities: frozenset[str] | None = PROJECTION_MODALITIES
    accept_missing_modality: bool = True
    max_bytes: int = 256 * _MIB
    max_pixels: int = 64 * 1024 * 1024
    multiframe: Literal["first", "reject"] = "first"
    #: "photometric": polarity comes from Photometric Interpretation alone, a contradicting
    #: Presentation LUT Shape is noted and ignored; "honor": INVERSE always inverts the output.
    presentation_lut: Literal["photometric", "honor"] = "photometric"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.multiframe not in ("first", "reject"):
            raise ValueError(f"ReadPolicy.multiframe must be 'first' or 'reject', not {self.multiframe!r}")
        if self.presentation_lut not in ("photometric", "honor"):
            raise ValueError(
                f"ReadPolicy.presentation_lut must be 'photometric' or 'honor', not {self.presentation_lut!r}"
            )
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"ReadPolicy.percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("ReadPolicy limits must be positive")


DEFAULT_POLICY = ReadPolicy()


@dataclass(frozen=True)
class DicomImage:
    """A decoded image: ``pixels`` float32 (rows, columns) in [0, 1], 1 = bright (bone), + metadata."""

    pixels: np.ndarray
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    sop_class_uid: str | None
    view: str | None
    laterality: str | None
    pixel_spacing: tuple[float, float] | None
    modality: str | None
    manufacturer: str | None
    body_part: str | None
    transfer_syntax: str
    bits_stored: int
    photometric: str
    number_of_frames: int
    window_source: str
    #: Decoder plugin that produced the pixels ("native" for uncompressed data).
    decoder: str
    #: Deliberate corrections applied to a header that lied, in plain words (no identifiers).
    notes: tuple[str, ...] = field(default_factory=tuple)
    instance_number: int | None = None
    series_number: int | None = None
    acquisition_datetime: str | None = None

    @property
    def rows(self) -> int:
        """Height of ``pixels``."""
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        """Width of ``pixels``."""
        return int(self.pixels.shape[1])


def sanitize_preamble(data: bytes) -> bytes:
    """Bytes to store: the 128-byte Part-10 preamble zeroed (it can hide an executable header,
    CVE-2019-11687). Objects without a preamble are returned unchanged.

    >>> sanitize_preamble(b"MZ" + bytes(126) + b"DICM" + b"rest")[:4]
    b'\\x00\\x00\\x00\\x00'
    """
    if len(data) >= 132 and data[128:132] == b"DICM":
        return bytes(128) + bytes(data[128:])
    return bytes(data)


class RedactQuotedValues(logging.Filter):
    """Replace quoted values in log messages (pydicom quotes the offending header value)."""

    _QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: drop its arguments, keep the template
            message = str(record.msg)
        record.msg = self._QUOTED.sub("'<redacted>'", message)
        record.args = None
        return True


_LOG = logging.getLogger(__name__)
_REDACT = RedactQuotedValues()
for _name in ("pydicom", "pydicom.pixels.utils", "pydicom.pixels.decoders.base"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactQuotedValues) for f in _logger.filters):
        _logger.addFilter(_REDACT)


# --------------------------------------------------------------------------------------------
# bytes -> Dataset


def _load_bytes(source: str | os.PathLike[str] | bytes | bytearray | memoryview, policy: ReadPolicy) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            # the path itself may carry identifiers (file names made of patient names): not echoed
            raise FileNotFoundError("No DICOM file at the given path") from None
        if size > policy.max_bytes:
            raise _too_large_bytes(size, policy)
        data = path.read_bytes()
    if len(data) > policy.max_bytes:
        raise _too_large_bytes(len(data), policy)
    return data


def _too_large_bytes(size: int, policy: ReadPolicy) -> TooLargeError:
    return TooLargeError(
        f"The object is {size / _MIB:.1f} MiB, over the {policy.max_bytes / _MIB:.0f} MiB limit "
        "for one instance. Send a single-frame projection image, or raise the byte limit "
        "(ReadPolicy.max_bytes) if such objects are expected."
    )


def _looks_like_dataset_start(data: bytes) -> bool:
    """A raw data set (no preamble) starts with a group 0002 or 0008 tag, either endianness."""
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def read_dataset(data: bytes, *, stop_before_pixels: bool = False) -> tuple[Dataset, list[str]]:
    """Parse bytes into a pydicom Dataset, or raise NotDicomError / TruncatedError.

    Returns the dataset and the notes of what was inferred (e.g. a missing file meta).
    """
    has_marker = len(data) >= 132 and data[128:132] == b"DICM"
    if not has_marker and not _looks_like_dataset_start(data):
        raise NotDicomError(
            "This file is not DICOM: it has no 'DICM' marker at byte 128 and does not start "
            "with a DICOM data element. Check that a DICOM instance (not a JPEG/PNG export, PDF "
            "or archive) was sent."
        )
    if has_marker and len(data) == 132:
        raise TruncatedError(_truncated_msg("right after the DICOM preamble"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(
                io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels
            )
        except InvalidDicomError as exc:
            raise NotDicomError(
                "The file has a DICOM marker but its header could not be parsed; it is damaged "
                "or not DICOM. Re-export it from the source system."
            ) from exc
        except (EOFError, OSError) as exc:
            raise TruncatedError(_truncated_msg("inside the header")) from exc
        except zlib.error as exc:  # Deflated Explicit VR Little Endian whose stream stops short
            if "incomplete" in str(exc) or "truncated" in str(exc):
                raise TruncatedError(_truncated_msg("inside its deflated data set")) from exc
            raise NotDicomError(
                "The deflated data set is damaged and cannot be inflated; re-export it from the "
                "source system."
            ) from exc
        except Exception as exc:  # pydicom raises assorted errors on garbage
            raise NotDicomError(
                f"The header could not be parsed ({type(exc).__name__}). The file is damaged or "
                "not DICOM; re-export it from the source system."
            ) from exc
    messages = [str(w.message) for w in caught]
    if any("End of file" in m or "EOF" in m for m in messages):
        raise TruncatedError(_truncated_msg("before the end of its data (an element or the "
                                            "pixel data stops short)"))
    if len(ds) == 0:
        if has_marker:
            raise TruncatedError(_truncated_msg("after the file meta header: no data set follows"))
        raise NotDicomError("The file holds no DICOM data elements; it is empty or not DICOM.")
    _check_last_element_complete(ds)
    notes: list[str] = []
    _ensure_transfer_syntax(ds, notes)
    if not has_marker and not any(tag.group == 0x0008 for tag in ds.keys()):
        raise NotDicomError(
            "The file has no DICOM marker and no identifying attributes (group 0008); it is not "
            "a DICOM instance."
        )
    return ds, notes


def _truncated_msg(where: str) -> str:
    return (
        f"The DICOM file ends {where}: it was cut during transfer or storage. "
        "Re-send the complete file from the modality or PACS."
    )


def _check_last_element_complete(ds: Dataset) -> None:
    """pydicom silently accepts a value shorter than its declared length at end of file."""
    last = max(ds.keys())
    raw = ds.get_item(last, keep_deferred=True)
    if (
        isinstance(raw, RawDataElement)
        and raw.length not in (_UNDEFINED, None)
        and raw.value is not None
        and len(raw.value) < raw.length
    ):
        raise TruncatedError(
            _truncated_msg(
                f"inside element ({last.group:04X},{last.element:04X}): "
                f"{len(raw.value)} of {raw.length} declared bytes present"
            )
        )


def _ensure_transfer_syntax(ds: Dataset, notes: list[str]) -> None:
    """A Part-10 file without its file meta: infer the transfer syntax and record it."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    raw = ds.get_item(_PIXEL_TAG, keep_deferred=True) if _PIXEL_TAG in ds else None
    encapsulated = isinstance(raw, RawDataElement) and raw.length == _UNDEFINED
    if encapsulated:
        ts = _sniff_encapsulated(bytes(raw.value or b""))
        if ts is None:
            raise UnsupportedTransferSyntaxError(
                "The file has no file meta information (so no transfer syntax) and its "
                "compressed pixel data is not a JPEG, JPEG-LS, JPEG 2000 or RLE stream this "
                f"service recognises. {_TRANSCODE}"
            )
    elif implicit:
        ts = _uid.ImplicitVRLittleEndian
    else:
        ts = _uid.ExplicitVRLittleEndian if little else _uid.ExplicitVRBigEndian
    meta.TransferSyntaxUID = ts
    notes.append(f"file meta information missing; transfer syntax inferred as {ts.name}")


def _first_fragment(encapsulated: bytes) -> bytes:
    """First pixel data fragment of an encapsulated value (little endian items)."""
    pos = 0
    fragments = 0
    while pos + 8 <= len(encapsulated):
        tag = encapsulated[pos : pos + 4]
        length = int.from_bytes(encapsulated[pos + 4 : pos + 8], "little")
        if tag != b"\xfe\xff\x00\xe0":
            return b""
        body = encapsulated[pos + 8 : pos + 8 + length]
        pos += 8 + length
        if fragments == 0:  # basic offset table
            fragments += 1
            continue
        return body
    return b""


def _jpeg_ls_kind(frag: bytes, start: int) -> _uid.UID:
    """JPEG-LS lossless when the first scan's NEAR parameter is 0, else near-lossless."""
    sos = frag.find(b"\xff\xda", start)
    if sos >= 0 and sos + 5 <= len(frag):
        components = frag[sos + 4]
        near_at = sos + 5 + 2 * components
        if near_at < len(frag) and frag[near_at] == 0:
            return _uid.JPEGLSLossless
    return _uid.JPEGLSNearLossless


def _sniff_encapsulated(encapsulated: bytes) -> _uid.UID | None:
    """Transfer syntax from the codec signature of the first fragment (JPEG SOF, J2K, RLE)."""
    frag = _first_fragment(encapsulated)
    if frag[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(frag):
            if frag[i] != 0xFF:
                i += 1
                continue
            marker = frag[i + 1]
            if marker in (0xC0,):
                return _uid.JPEGBaseline8Bit
            if marker in (0xC1, 0xC2):
                return _uid.JPEGExtended12Bit
            if marker == 0xC3:
                return _uid.JPEGLossless
            if marker == 0xF7:
                return _jpeg_ls_kind(frag, i)
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 2 if marker != 0xFF else 1
                continue
            seg = int.from_bytes(frag[i + 2 : i + 4], "big")
            i += 2 + seg
        return None
    if frag[:4] == b"\xff\x4f\xff\x51" or frag[4:12] == b"jP  \r\n\x87\n":
        return _uid.JPEG2000
    if len(frag) >= 64 and 1 <= int.from_bytes(frag[:4], "little") <= 15 and int.from_bytes(
        frag[4:8], "little"
    ) == 64:
        return _uid.RLELossless
    return None


# --------------------------------------------------------------------------------------------
# header policy


def _check_pixels_present(ds: Dataset) -> None:
    if _PIXEL_TAG in ds:
        return
    if 0x00287FE0 in ds:  # Pixel Data Provider URL: JPIP referenced, the pixels live on a server
        raise UnsupportedTransferSyntaxError(
            "The file references its pixels on a JPIP server instead of carrying them (JPIP "
            "Referenced transfer syntax). Ask the sender for a full transfer with the pixel data "
            "included (any non-JPIP transfer syntax)."
        )
    if all(name in ds for name in ("Rows", "Columns", "BitsAllocated")) and not (
        0x7FE00008 in ds or 0x7FE00009 in ds
    ):
        # An image header without its pixels: the file stopped right before Pixel Data.
        raise TruncatedError(_truncated_msg("after the image header, before its pixel data"))
    sop = str(ds.get("SOPClassUID", "") or "")
    kind = _uid.UID(sop).name if sop else ""
    modality = str(ds.get("Modality", "") or "")
    what = f"a '{kind}' object" if kind and kind != sop else "an object"
    if modality:
        what += f" (modality {_safe_code(modality.strip().upper())})"
    float_data = " (it carries float pixel data, which is not a radiograph)" if (
        0x7FE00008 in ds or 0x7FE00009 in ds
    ) else ""
    raise NoPixelDataError(
        f"This DICOM file is {what} with no image pixel data{float_data}. Structured reports, "
        "presentation states and key-object notes cannot be read as images; send the CR/DX "
        "image instances of the study."
    )


_CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")


def _safe_code(value: str) -> str:
    """A Code String fit for a message; anything else (a header that lies) is not echoed."""
    return value if _CODE_STRING.match(value) else "(unrecognised value)"


def _check_modality(modality: str | None, policy: ReadPolicy) -> None:
    if policy.modalities is None:
        return
    if modality is None:
        if policy.accept_missing_modality:
            return
        raise NotProjectionRadiographError(
            "The file has no Modality, and the policy requires a projection radiograph modality "
            f"({', '.join(sorted(policy.modalities))}). Fix the sending device's configuration."
        )
    if modality not in policy.modalities:
        raise NotProjectionRadiographError(
            f"Modality {_safe_code(modality)} is not a projection radiograph; this service reads chest X-rays "
            f"({', '.join(sorted(policy.modalities))}). Send the CR or DX series of the study, "
            "or change the modality policy (ReadPolicy.modalities) to accept it."
        )


def _int_attr(ds: Dataset, name: str) -> int | None:
    value = ds.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Geometry:
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    frames: int
    photometric: str


def _geometry(ds: Dataset, notes: list[str]) -> _Geometry:
    rows, cols = _int_attr(ds, "Rows"), _int_attr(ds, "Columns")
    bits_alloc = _int_attr(ds, "BitsAllocated")
    samples = _int_attr(ds, "SamplesPerPixel") or 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    missing = [n for n, v in (("Rows", rows), ("Columns", cols), ("Bits Allocated", bits_alloc)) if not v]
    if missing:
        raise InvalidHeaderError(
            f"The image header lacks {', '.join(missing)} (or they are 0), so the pixel data "
            "cannot be interpreted. The sending device wrote an invalid image; re-export it."
        )
    assert rows and cols and bits_alloc
    if bits_alloc not in (1, 8, 16, 32) or samples not in (1, 3):
        raise InvalidHeaderError(
            f"Bits Allocated {bits_alloc} with Samples per Pixel {samples} is not a valid image "
            "encoding; re-export the image from the source system."
        )
    bits_stored = _int_attr(ds, "BitsStored") or bits_alloc
    if bits_stored > bits_alloc:
        notes.append(f"Bits Stored {bits_stored} > Bits Allocated {bits_alloc}; using {bits_alloc}")
        bits_stored = bits_alloc
        ds.BitsStored = bits_alloc
    if not photometric:
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
        ds.PhotometricInterpretation = photometric
        notes.append(f"Photometric Interpretation missing; assumed {photometric}")
    frames = _int_attr(ds, "NumberOfFrames") or 1
    if frames < 1:
        frames = 1
    return _Geometry(rows, cols, samples, bits_alloc, bits_stored, frames, photometric)


def _check_size(geo: _Geometry, policy: ReadPolicy) -> None:
    pixels = geo.rows * geo.columns * geo.samples
    if pixels > policy.max_pixels:
        raise TooLargeError(
            f"The image is {geo.columns} x {geo.rows} x {geo.samples} samples "
            f"({pixels / 1e6:.1f} M values), over the {policy.max_pixels / 1e6:.1f} M decoded-value "
            "limit (ReadPolicy.max_pixels). Chest radiographs are below 25 M; check the header or "
            "raise the limit."
        )


def _check_frames(geo: _Geometry, policy: ReadPolicy, notes: list[str]) -> None:
    if geo.frames <= 1:
        return
    if policy.multiframe == "reject":
        raise UnsupportedImageError(
            f"The object holds {geo.frames} frames; the policy accepts single-frame radiographs "
            "only. Send the single-frame image, or set ReadPolicy.multiframe='first'."
        )
    notes.append(f"multi-frame object ({geo.frames} frames): first frame used")


_OTHER_SYNTAXES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}
_VIDEO = "Video transfer syntaxes hold cine loops, not radiographs; send the still image."


def _check_transfer_syntax(ts: _uid.UID) -> None:
    if not ts.is_transfer_syntax:
        known = _OTHER_SYNTAXES.get(str(ts))
        if known:
            raise UnsupportedTransferSyntaxError(
                f"The pixel data is encoded as '{known}' ({ts}), which pydicom 3.0 cannot decode "
                f"(no decoder plugin exists for it yet). {_TRANSCODE}"
            )
        raise UnsupportedTransferSyntaxError(
            f"Unknown transfer syntax {ts}: it is not a DICOM standard encoding (perhaps a "
            f"private one). {_TRANSCODE}"
        )
    if not ts.is_compressed or ts == _ENCAPSULATED_NATIVE:
        return  # native, or encapsulated native frames (decoded here, see _encapsulated_native)
    try:
        decoder = pydicom.pixels.get_decoder(ts)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        hint = _DECODER_HINTS.get(ts)
        if hint:
            would = f"Installing {hint} would decode it. "
        elif "MPEG" in ts.name or "HEVC" in ts.name:
            would = f"{_VIDEO} "
        else:
            would = "No Python decoder is known for it. "
        raise UnsupportedTransferSyntaxError(
            f"The pixel data is encoded as '{ts.name}' ({ts}), which this installation cannot "
            f"decode. {would}{_TRANSCODE}"
        )


def _check_native_length(ds: Dataset, geo: _Geometry, notes: list[str]) -> None:
    value = ds.get_item(_PIXEL_TAG).value
    actual = len(value or b"")
    per_frame_bits = geo.rows * geo.columns * geo.samples * geo.bits_allocated
    if geo.photometric == "YBR_FULL_422":
        per_frame_bits = per_frame_bits * 2 // 3
    expected = (per_frame_bits * geo.frames + 7) // 8
    if actual < expected:
        raise PixelDataLengthError(_length_msg(actual, expected, geo))
    if actual > expected + 1:
        notes.append(f"pixel data has {actual - expected} bytes beyond the image; ignored")


def _length_msg(actual: int, expected: int, geo: _Geometry) -> str:
    return (
        f"The pixel data holds {actual} bytes but the header describes {geo.frames} frame(s) of "
        f"{geo.columns} x {geo.rows} x {geo.samples} samples at {geo.bits_allocated} bits "
        f"({expected} bytes). The header and the pixels disagree; re-export the image from the "
        "source system."
    )


# --------------------------------------------------------------------------------------------
# public entry point


def read(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    policy: ReadPolicy | None = None,
) -> DicomImage:
    """Decode one DICOM instance (a path or its bytes) into a :class:`DicomImage`.

    Raises a :class:`~radiology.dicom.errors.DicomError` subclass for every input that cannot
    become a projection radiograph; see the module docstring for the order of checks.
    """
    policy = policy or DEFAULT_POLICY
    data = _load_bytes(source, policy)
    ds, notes = read_dataset(data)
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            return _decode(ds, policy, notes)
    except DicomError:
        raise
    except MemoryError as exc:
        raise TooLargeError(
            "Decoding the image ran out of memory; lower the concurrency of this worker or the "
            "decoded-pixel limit (ReadPolicy.max_pixels)."
        ) from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # never leak a decoder's error as a crash (Rust codecs panic
        # with pyo3's PanicException, which is a BaseException, not an Exception)
        _LOG.error("unexpected %s while decoding; reported as corrupt_pixel_data", type(exc).__name__)
        raise CorruptPixelDataError(
            f"The image could not be decoded ({type(exc).__name__}). The pixel data is damaged or "
            "uses an encoding variant the decoders refuse; re-export it from the source system."
        ) from exc


def _decode(ds: Dataset, policy: ReadPolicy, notes: list[str]) -> DicomImage:
    _check_pixels_present(ds)
    modality = _meta.modality(ds)
    _check_modality(modality, policy)
    geo = _geometry(ds, notes)
    _check_size(geo, policy)
    _check_frames(geo, policy, notes)
    ts = _uid.UID(str(ds.file_meta.TransferSyntaxUID))
    _check_transfer_syntax(ts)
    if not ts.is_compressed:
        _check_native_length(ds, geo, notes)
    if str(ds.get("SOPClassUID", "")) in _FOR_PROCESSING:
        notes.append("'For Processing' image (raw detector data, no vendor processing)")
    frame, decoder = _decode_frame(ds, ts, geo)
    image, window_source = _pixels.to_unit_range(frame, ds, geo.photometric, policy, notes)
    return DicomImage(
        pixels=image,
        study_uid=_meta.text(ds, "StudyInstanceUID"),
        series_uid=_meta.text(ds, "SeriesInstanceUID"),
        sop_uid=_meta.text(ds, "SOPInstanceUID"),
        sop_class_uid=_meta.text(ds, "SOPClassUID"),
        view=_meta.view(ds),
        laterality=_meta.laterality(ds),
        pixel_spacing=_meta.pixel_spacing(ds, notes),
        modality=modality,
        manufacturer=_meta.text(ds, "Manufacturer"),
        body_part=_meta.text(ds, "BodyPartExamined"),
        transfer_syntax=str(ts),
        bits_stored=geo.bits_stored,
        photometric=geo.photometric,
        number_of_frames=geo.frames,
        window_source=window_source,
        decoder=decoder,
        notes=tuple(notes),
        instance_number=_int_attr(ds, "InstanceNumber"),
        series_number=_int_attr(ds, "SeriesNumber"),
        acquisition_datetime=_meta.acquisition_datetime(ds),
    )


@dataclass(frozen=True)
class InstanceHeader:
    """What study grouping and view selection need, read without decoding pixels."""

    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    view: str | None
    laterality: str | None
    modality: str | None
    rows: int
    columns: int
    has_pixels: bool
    instance_number: int | None = None
    series_number: int | None = None
    acquisition_datetime: str | None = None


def read_header(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    policy: ReadPolicy | None = None,
) -> InstanceHeader:
    """Header facts of one instance without decoding its pixels (for choosing views first).

    Raises only the errors of the byte and parse stages (too large, not DICOM, truncated).
    """
    policy = policy or DEFAULT_POLICY
    ds, _ = read_dataset(_load_bytes(source, policy), stop_before_pixels=True)
    return InstanceHeader(
        study_uid=_meta.text(ds, "StudyInstanceUID"),
        series_uid=_meta.text(ds, "SeriesInstanceUID"),
        sop_uid=_meta.text(ds, "SOPInstanceUID"),
        view=_meta.view(ds),
        laterality=_meta.laterality(ds),
        modality=_meta.modality(ds),
        rows=_int_attr(ds, "Rows") or 0,
        columns=_int_attr(ds, "Columns") or 0,
        has_pixels=bool(_int_attr(ds, "Rows")),
        instance_number=_int_attr(ds, "InstanceNumber"),
        series_number=_int_attr(ds, "SeriesNumber"),
        acquisition_datetime=_meta.acquisition_datetime(ds),
    )


#: Decoder plugins tried, in this order, per transfer syntax. Fixed so that an image decodes to the
#: same values on every machine (pydicom's own order depends on which packages are installed, and
#: lossy JPEG decoders differ by a grey level), and fastest first (measured by bench/ingest.py:
#: CharLS 4x libjpeg on JPEG-LS, pylibjpeg-rle 12x pydicom's RLE, Pillow 3x libjpeg on baseline).
_PLUGIN_ORDER: dict[str, tuple[str, ...]] = {
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


def _plugins(ts: _uid.UID) -> list[str | None]:
    """Plugins to try for ``ts`` ([None] = pydicom's choice, for native data)."""
    if not ts.is_compressed:
        return [None]
    available = set(pydicom.pixels.get_decoder(ts).available_plugins)
    ordered = [p for p in _PLUGIN_ORDER.get(ts, ()) if p in available]
    ordered += sorted(available - set(ordered))
    return list(ordered) or [None]


def _encapsulated_native(ds: Dataset, geo: _Geometry) -> np.ndarray:
    """Frame 0 of Encapsulated Uncompressed Explicit VR Little Endian (no pydicom 3.0 decoder)."""
    if geo.bits_allocated not in (8, 16, 32):
        raise InvalidHeaderError(
            f"Bits Allocated {geo.bits_allocated} cannot be encapsulated uncompressed; re-export it."
        )
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=geo.frames))
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{geo.bits_allocated // 8}")
    count = geo.rows * geo.columns * geo.samples
    if len(frame) < count * dtype.itemsize:
        raise PixelDataLengthError(_length_msg(len(frame), count * dtype.itemsize, geo))
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


def _decode_frame(ds: Dataset, ts: _uid.UID, geo: _Geometry) -> tuple[np.ndarray, str]:
    """Decode one frame with the first plugin of the fixed order that succeeds."""
    if ts == _ENCAPSULATED_NATIVE:
        return _encapsulated_native(ds, geo), "native"
    index = 0 if geo.frames > 1 else None
    failure: BaseException | None = None
    arr = None
    used = "native"
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for plugin in _plugins(ts):
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
            raise TruncatedError(_truncated_msg("inside the compressed pixel stream")) from failure
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
