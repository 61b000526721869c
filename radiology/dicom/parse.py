"""Parse stage of `radiology.dicom`: bytes -> pydicom Dataset, or a typed error.

Steps: the byte limit (`load_bytes`), a deflated data set inflated in bounded chunks
(`inflate_deflated`), pydicom's parse (`read_dataset`: not DICOM, truncated), the completeness of
the last element (`check_complete`), and a transfer syntax inferred for a Part-10 file without its
file meta (from the data set encoding, or for encapsulated pixel data from the codec signature of
its first fragment, `sniff_encapsulated`).

pydicom logs invalid header values verbatim (e.g. "Invalid value for VR PN: 'Doe^Jane'"); importing
this module installs a filter on pydicom's loggers that replaces every quoted value with
``'<redacted>'``, so no patient identifier reaches a log through pydicom.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
import zlib
from pathlib import Path

import pydicom
from pydicom import uid as _uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import write_file_meta_info

from radiology.dicom.errors import (
    InvalidHeaderError,
    NotDicomError,
    TooLargeError,
    TruncatedError,
    UnsupportedTransferSyntaxError,
    truncated_message,
)
from radiology.dicom.policy import DEFAULT_POLICY, MIB, ReadPolicy

__all__ = [
    "PIXEL_TAG",
    "RedactQuotedValues",
    "Source",
    "check_complete",
    "first_fragment",
    "inflate_deflated",
    "load_bytes",
    "read_dataset",
    "sanitize_preamble",
    "sniff_encapsulated",
    "too_large_bytes",
]

Source = str | os.PathLike[str] | bytes | bytearray | memoryview
PIXEL_TAG = 0x7FE00010
DEFERRED_BYTES = 4096  # values larger than this stay unread with `defer_pixels`
_UNDEFINED = 0xFFFFFFFF
_INFLATE_CHUNK = 1 << 20
_TRANSCODE = (
    "Ask the sender to transcode to Explicit VR Little Endian, JPEG 2000 or JPEG lossless "
    "(e.g. DCMTK 'dcmconv +te', or 'gdcmconv --raw')."
)


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


_LOG = logging.getLogger(__name__)
_REDACT = RedactQuotedValues()
for _name in ("pydicom", "pydicom.pixels.utils", "pydicom.pixels.decoders.base"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactQuotedValues) for f in _logger.filters):
        _logger.addFilter(_REDACT)


def load_bytes(source: Source, policy: ReadPolicy = DEFAULT_POLICY) -> bytes:
    """The bytes of a path or buffer, refused (`TooLargeError`) over `policy.max_bytes` before
    a file is read."""
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
            raise too_large_bytes(size, policy)
        data = path.read_bytes()
    if len(data) > policy.max_bytes:
        raise too_large_bytes(len(data), policy)
    return data


def too_large_bytes(size: int, policy: ReadPolicy) -> TooLargeError:
    """The error for an instance of `size` bytes over the policy's byte limit."""
    return TooLargeError(
        f"The object is {size / MIB:.1f} MiB, over the {policy.max_bytes / MIB:.0f} MiB limit "
        "for one instance. Send a single-frame projection image, or raise the byte limit "
        "(ReadPolicy.max_bytes) if such objects are expected."
    )


def _looks_like_dataset_start(data: bytes) -> bool:
    """A raw data set (no preamble) starts with a group 0002 or 0008 tag, either endianness."""
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _file_meta_end(data: bytes) -> int | None:
    """Offset where the group 0002 file meta elements of a Part-10 file end (always explicit VR
    little endian), or None when there is no 'DICM' marker."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = int.from_bytes(data[pos + 8:pos + 12], "little")
            pos += 12 + length
        else:
            length = int.from_bytes(data[pos + 6:pos + 8], "little")
            pos += 8 + length
    return pos


def inflate_deflated(data: bytes, policy: ReadPolicy = DEFAULT_POLICY) -> bytes:
    """A Deflated Explicit VR Little Endian Part-10 file as the same file in Explicit VR Little
    Endian, inflated in chunks of at most 1 MiB and refused (`TooLargeError`) as soon as the
    inflated bytes pass `policy.max_bytes`: a deflate bomb never allocates more than the limit.
    Any other file is returned as it is.

    pydicom inflates the whole stream in one call, so a 1 MB file that inflates to 1 GiB would
    take 1 GiB (and more) before any limit could be checked.
    """
    end = _file_meta_end(data)
    if end is None:
        return data
    try:
        meta = pydicom.dcmread(io.BytesIO(data[:end]), force=True).file_meta
    except Exception:  # a damaged file meta: pydicom's own parse reports it
        return data
    if str(meta.get("TransferSyntaxUID", "")).strip() != _uid.DeflatedExplicitVRLittleEndian:
        return data
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks: list[bytes] = []
    total = 0
    pending = memoryview(data)[end:]
    try:
        while pending or inflater.unconsumed_tail:
            source = inflater.unconsumed_tail or bytes(pending[:_INFLATE_CHUNK])
            if not inflater.unconsumed_tail:
                pending = pending[_INFLATE_CHUNK:]
            chunk = inflater.decompress(source, _INFLATE_CHUNK)
            total += len(chunk)
            if total > policy.max_bytes:
                raise TooLargeError(
                    f"The deflated data set inflates to more than {policy.max_bytes / MIB:.0f} "
                    f"MiB (it is {len(data) / MIB:.1f} MiB compressed), over the limit for one "
                    "instance (ReadPolicy.max_bytes): a decompression bomb or a far too large "
                    "object. It was refused before being inflated further."
                )
            chunks.append(chunk)
            if inflater.eof:
                break
        chunks.append(inflater.flush())
    except zlib.error as exc:
        raise NotDicomError(
            "The deflated data set is damaged and cannot be inflated; re-export it from the "
            "source system."
        ) from exc
    if not inflater.eof:
        raise TruncatedError(truncated_message("inside its deflated data set"))
    meta.TransferSyntaxUID = _uid.ExplicitVRLittleEndian
    header = io.BytesIO()
    write_file_meta_info(header, meta, enforce_standard=False)
    return b"".join([bytes(data[:132]), header.getvalue(), *chunks])


def read_dataset(data: bytes, *, stop_before_pixels: bool = False, defer_pixels: bool = False,
                 policy: ReadPolicy = DEFAULT_POLICY) -> tuple[Dataset, list[str]]:
    """Parse bytes into a pydicom Dataset, or raise NotDicomError / TruncatedError /
    TooLargeError (a deflated data set inflating beyond `policy.max_bytes`).

    Returns the dataset and the notes of what was inferred (e.g. a missing file meta).
    `defer_pixels` leaves the Pixel Data value unread (its declared length and position are
    kept, so `check_complete` can still tell a cut file); `stop_before_pixels` drops it.
    """
    has_marker = len(data) >= 132 and data[128:132] == b"DICM"
    if not has_marker and not _looks_like_dataset_start(data):
        raise NotDicomError(
            "This file is not DICOM: it has no 'DICM' marker at byte 128 and does not start "
            "with a DICOM data element. Check that a DICOM instance (not a JPEG/PNG export, PDF "
            "or archive) was sent."
        )
    if has_marker and len(data) == 132:
        raise TruncatedError(truncated_message("right after the DICOM preamble"))
    received, data = data, inflate_deflated(data, policy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(
                io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels,
                defer_size=DEFERRED_BYTES if defer_pixels else None,
            )
        except InvalidDicomError as exc:
            raise NotDicomError(
                "The file has a DICOM marker but its header could not be parsed; it is damaged "
                "or not DICOM. Re-export it from the source system."
            ) from exc
        except (EOFError, OSError) as exc:
            raise TruncatedError(truncated_message("inside the header")) from exc
        except zlib.error as exc:  # Deflated Explicit VR Little Endian whose stream stops short
            if "incomplete" in str(exc) or "truncated" in str(exc):
                raise TruncatedError(truncated_message("inside its deflated data set")) from exc
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
        raise TruncatedError(truncated_message("before the end of its data (an element or the "
                                            "pixel data stops short)"))
    if len(ds) == 0:
        if has_marker:
            raise TruncatedError(
                truncated_message("after the file meta header: no data set follows")
            )
        raise NotDicomError("The file holds no DICOM data elements; it is empty or not DICOM.")
    check_complete(ds, len(data))
    convert_elements(ds)
    notes: list[str] = []
    if received is not data:  # report the syntax it came in, as pydicom's own inflation does
        ds.file_meta.TransferSyntaxUID = _uid.DeflatedExplicitVRLittleEndian
    _ensure_transfer_syntax(ds, notes)
    if not has_marker and not any(tag.group == 0x0008 for tag in ds.keys()):
        raise NotDicomError(
            "The file has no DICOM marker and no identifying attributes (group 0008); it is not "
            "a DICOM instance."
        )
    return ds, notes


_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def convert_elements(ds: Dataset, where: str = "") -> None:
    """Convert every element of the header (pixel data excepted) once, now, recursing into
    sequences, and raise InvalidHeaderError naming the first one that cannot be read.

    pydicom converts raw elements lazily, on first access, so a damaged element (an unknown VR,
    a value that cannot be decoded) would otherwise raise an arbitrary pydicom error later, in
    whichever stage happened to read it first.
    """
    for tag in list(ds.keys()):
        if tag in _PIXEL_TAGS:
            continue
        try:
            element = ds[tag]
        except Exception as exc:  # pydicom raises assorted errors on damaged elements
            raise InvalidHeaderError(
                f"The header element ({tag.group:04X},{tag.element:04X}){where} cannot be read "
                f"({type(exc).__name__}); the file is damaged. Re-export it from the source "
                "system."
            ) from exc
        if element.VR == "SQ" and element.value is not None:
            for index, item in enumerate(element.value):
                convert_elements(item, f"{where} in item {index + 1} of "
                                       f"({tag.group:04X},{tag.element:04X})")


def check_complete(ds: Dataset, size: int) -> None:
    """Raise TruncatedError when the last element of a data set parsed from `size` bytes is
    shorter than its declared length: pydicom silently accepts a short value at the end of a
    file, and a deferred value (`defer_pixels`) is not read at all, so its declared end is
    compared with the end of the bytes."""
    last = max(ds.keys())
    raw = ds.get_item(last, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.length in (_UNDEFINED, None):
        return
    present = len(raw.value) if raw.value is not None else max(size - (raw.value_tell or 0), 0)
    if present < raw.length:
        raise TruncatedError(
            truncated_message(
                f"inside element ({last.group:04X},{last.element:04X}): "
                f"{present} of {raw.length} declared bytes present"
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
    raw = ds.get_item(PIXEL_TAG, keep_deferred=True) if PIXEL_TAG in ds else None
    encapsulated = isinstance(raw, RawDataElement) and raw.length == _UNDEFINED
    if encapsulated:
        ts = sniff_encapsulated(bytes(raw.value or b""))
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


def first_fragment(encapsulated: bytes) -> bytes:
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


_SOF_MARKERS = (0xC0, 0xC1, 0xC2, 0xC3, 0xF7)  # baseline, extended, progressive, lossless, LS


def jpeg_start_of_frame(frag: bytes) -> tuple[int, int] | None:
    """(marker, offset) of the first start-of-frame segment (SOF0-3, JPEG-LS SOF55) of a JPEG
    stream that begins with SOI, walking its segments; None when there is none."""
    if frag[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(frag):
        if frag[i] != 0xFF:
            i += 1
            continue
        marker = frag[i + 1]
        if marker in _SOF_MARKERS:
            return marker, i
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 2 if marker != 0xFF else 1
            continue
        i += 2 + int.from_bytes(frag[i + 2 : i + 4], "big")
    return None


_SOF_SYNTAX = {0xC0: _uid.JPEGBaseline8Bit, 0xC1: _uid.JPEGExtended12Bit,
               0xC2: _uid.JPEGExtended12Bit, 0xC3: _uid.JPEGLossless}


def sniff_encapsulated(encapsulated: bytes) -> _uid.UID | None:
    """Transfer syntax from the codec signature of the first fragment (JPEG SOF, J2K, RLE), or
    None when it is none of them."""
    frag = first_fragment(encapsulated)
    if frag[:2] == b"\xff\xd8":
        found = jpeg_start_of_frame(frag)
        if found is None:
            return None
        marker, at = found
        return _SOF_SYNTAX.get(marker) or _jpeg_ls_kind(frag, at)
    if frag[:4] == b"\xff\x4f\xff\x51" or frag[4:12] == b"jP  \r\n\x87\n":
        return _uid.JPEG2000
    if len(frag) >= 64 and 1 <= int.from_bytes(frag[:4], "little") <= 15 and int.from_bytes(
        frag[4:8], "little"
    ) == 64:
        return _uid.RLELossless
    return None
