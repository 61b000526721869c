"""Checks stage of `radiology.dicom`: is a parsed header an image this policy reads?

Each check raises its own typed error before any pixel is decoded: pixel data present
(NoPixelDataError), modality (NotProjectionRadiographError), image attributes (InvalidHeaderError),
decoded size (TooLargeError, from the header), a compressed stream declaring another size than the
header (CorruptPixelDataError, before a decoder allocates it),
multi-frame rule (UnsupportedImageError), a decoder for the transfer syntax
(UnsupportedTransferSyntaxError), native pixel data length (PixelDataLengthError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pydicom
from pydicom import uid as _uid
from pydicom.dataset import Dataset

from radiology.dicom.errors import (
    CorruptPixelDataError,
    InvalidHeaderError,
    NoPixelDataError,
    NotProjectionRadiographError,
    PixelDataLengthError,
    TooLargeError,
    TruncatedError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
    truncated_message,
)
from radiology.dicom.parse import PIXEL_TAG, first_fragment, jpeg_start_of_frame
from radiology.dicom.policy import ReadPolicy

__all__ = [
    "ENCAPSULATED_NATIVE",
    "Geometry",
    "check_codestream_size",
    "check_frames",
    "check_modality",
    "check_native_length",
    "check_pixels_present",
    "check_size",
    "check_transfer_syntax",
    "codestream_size",
    "geometry",
    "int_attr",
    "length_message",
    "safe_code",
]

ENCAPSULATED_NATIVE = _uid.UID("1.2.840.10008.1.2.1.98")  # Encapsulated Uncompressed Explicit VR LE
_TRANSCODE = (
    "Ask the sender to transcode to Explicit VR Little Endian, JPEG 2000 or JPEG lossless "
    "(e.g. DCMTK 'dcmconv +te', or 'gdcmconv --raw')."
)

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


def check_pixels_present(ds: Dataset) -> None:
    """Raise unless the object carries image pixel data (SR, presentation states, JPIP and an
    image header cut before its pixels each get their own reason)."""
    if PIXEL_TAG in ds:
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
        raise TruncatedError(truncated_message("after the image header, before its pixel data"))
    sop = str(ds.get("SOPClassUID", "") or "")
    kind = _uid.UID(sop).name if sop else ""
    modality = str(ds.get("Modality", "") or "")
    what = f"a '{kind}' object" if kind and kind != sop else "an object"
    if modality:
        what += f" (modality {safe_code(modality.strip().upper())})"
    float_data = " (it carries float pixel data, which is not a radiograph)" if (
        0x7FE00008 in ds or 0x7FE00009 in ds
    ) else ""
    raise NoPixelDataError(
        f"This DICOM file is {what} with no image pixel data{float_data}. Structured reports, "
        "presentation states and key-object notes cannot be read as images; send the CR/DX "
        "image instances of the study."
    )


CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")


def safe_code(value: str) -> str:
    """A Code String fit for a message; anything else (a header that lies) is not echoed."""
    return value if CODE_STRING.match(value) else "(unrecognised value)"


def check_modality(modality: str | None, policy: ReadPolicy) -> None:
    """Raise NotProjectionRadiographError for a modality outside the policy."""
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
            f"Modality {safe_code(modality)} is not a projection radiograph; this service reads "
            f"chest X-rays ({', '.join(sorted(policy.modalities))}). Send the CR or DX series of "
            "the study, "
            "or change the modality policy (ReadPolicy.modalities) to accept it."
        )


def int_attr(ds: Dataset, name: str) -> int | None:
    """An integer attribute, or None when absent, empty or not a number."""
    value = ds.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Geometry:
    """The image attributes decoding needs, validated (see `geometry`)."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    frames: int
    photometric: str


def geometry(ds: Dataset, notes: list[str]) -> Geometry:
    """Rows, columns, samples, bits and frames of an image header; InvalidHeaderError when they
    cannot describe an image. Fills in a missing Photometric Interpretation (noted)."""
    rows, cols = int_attr(ds, "Rows"), int_attr(ds, "Columns")
    bits_alloc = int_attr(ds, "BitsAllocated")
    samples = int_attr(ds, "SamplesPerPixel") or 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    required = (("Rows", rows), ("Columns", cols), ("Bits Allocated", bits_alloc))
    missing = [name for name, value in required if not value]
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
    bits_stored = int_attr(ds, "BitsStored") or bits_alloc
    if bits_stored > bits_alloc:
        notes.append(f"Bits Stored {bits_stored} > Bits Allocated {bits_alloc}; using {bits_alloc}")
        bits_stored = bits_alloc
        ds.BitsStored = bits_alloc
    if not photometric:
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
        ds.PhotometricInterpretation = photometric
        notes.append(f"Photometric Interpretation missing; assumed {photometric}")
    frames = int_attr(ds, "NumberOfFrames") or 1
    if frames < 1:
        frames = 1
    return Geometry(rows, cols, samples, bits_alloc, bits_stored, frames, photometric)


def check_size(geo: Geometry, policy: ReadPolicy) -> None:
    """Raise TooLargeError when one decoded frame would exceed `policy.max_pixels`."""
    pixels = geo.rows * geo.columns * geo.samples
    if pixels > policy.max_pixels:
        raise TooLargeError(
            f"The image is {geo.columns} x {geo.rows} x {geo.samples} samples "
            f"({pixels / 1e6:.1f} M values), over the {policy.max_pixels / 1e6:.1f} M "
            "decoded-value limit (ReadPolicy.max_pixels). Chest radiographs are below 25 M; check "
            "the header or raise the limit."
        )


def check_frames(geo: Geometry, policy: ReadPolicy, notes: list[str]) -> None:
    """Apply the multi-frame rule (`policy.multiframe`)."""
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


def check_transfer_syntax(ts: _uid.UID) -> None:
    """Raise UnsupportedTransferSyntaxError unless a decoder of this installation reads `ts`."""
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
    if not ts.is_compressed or ts == ENCAPSULATED_NATIVE:
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


def check_native_length(ds: Dataset, geo: Geometry, notes: list[str]) -> None:
    """Raise PixelDataLengthError when native Pixel Data is shorter than the header describes
    (a byte beyond it is the standard even-length padding; more is noted and ignored). Works on
    a data set read with `defer_pixels`, from the element's declared length."""
    raw = ds.get_item(PIXEL_TAG, keep_deferred=True)
    value = getattr(raw, "value", None)
    actual = len(value) if value is not None else int(getattr(raw, "length", 0) or 0)
    per_frame_bits = geo.rows * geo.columns * geo.samples * geo.bits_allocated
    if geo.photometric == "YBR_FULL_422":
        per_frame_bits = per_frame_bits * 2 // 3
    expected = (per_frame_bits * geo.frames + 7) // 8
    if actual < expected:
        raise PixelDataLengthError(length_message(actual, expected, geo))
    if actual > expected + 1:
        notes.append(f"pixel data has {actual - expected} bytes beyond the image; ignored")


def length_message(actual: int, expected: int, geo: Geometry) -> str:
    """The message of a PixelDataLengthError."""
    return (
        f"The pixel data holds {actual} bytes but the header describes {geo.frames} frame(s) of "
        f"{geo.columns} x {geo.rows} x {geo.samples} samples at {geo.bits_allocated} bits "
        f"({expected} bytes). The header and the pixels disagree; re-export the image from the "
        "source system."
    )


_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def codestream_size(fragment: bytes) -> tuple[int, int] | None:
    """(rows, columns) that a compressed frame declares in its own stream (JPEG / JPEG-LS SOF,
    JPEG 2000 SIZ), or None when it declares none this reader knows (RLE, damaged).

    A stream is recognised only by how it starts (JPEG SOI, J2K SOC + SIZ, or the JP2 signature
    box whose `jp2c` box holds the codestream): RLE and other data can hold the same bytes
    anywhere by chance."""
    if fragment[:2] == b"\xff\xd8":
        return _jpeg_size(fragment)
    if fragment.startswith(_JP2_SIGNATURE):
        box = fragment.find(b"jp2c")
        if box < 0 or fragment[box + 4:box + 8] != _J2K_SOC_SIZ:
            return None
        fragment = fragment[box + 4:]
    if fragment.startswith(_J2K_SOC_SIZ) and len(fragment) >= 24:
        siz = 4  # SIZ: Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4)
        x, y = (int.from_bytes(fragment[siz + 4:siz + 8], "big"),
                int.from_bytes(fragment[siz + 8:siz + 12], "big"))
        x0, y0 = (int.from_bytes(fragment[siz + 12:siz + 16], "big"),
                  int.from_bytes(fragment[siz + 16:siz + 20], "big"))
        return y - y0, x - x0
    return None


def _jpeg_size(fragment: bytes) -> tuple[int, int] | None:
    found = jpeg_start_of_frame(fragment)
    if found is None or found[1] + 9 > len(fragment):
        return None
    at = found[1]  # SOF: marker, length, precision, Y, X
    return (int.from_bytes(fragment[at + 5:at + 7], "big"),
            int.from_bytes(fragment[at + 7:at + 9], "big"))


def check_codestream_size(ds: Dataset, geo: Geometry) -> None:
    """Raise CorruptPixelDataError, before decoding, when the first compressed frame declares a
    size other than the header's: a decoder allocates what its stream declares, so a 64 x 64
    header over a stream claiming 60000 x 60000 would otherwise allocate gigabytes first."""
    raw = ds.get_item(PIXEL_TAG, keep_deferred=True)
    value = getattr(raw, "value", None)
    if not value:
        return
    declared = codestream_size(first_fragment(bytes(value[:1 << 16])))
    if declared is None or declared == (geo.rows, geo.columns):
        return
    rows, columns = declared
    raise CorruptPixelDataError(
        f"The compressed pixel stream declares a {columns} x {rows} image but the header says "
        f"{geo.columns} x {geo.rows}; it was refused before decoding. The pixel data is damaged "
        "or does not match its header; re-export the image from the source system."
    )
