"""WADO-RS frames and bulk data (PS3.18 10.4.1.1.3-4, 8.7.3): the pixel data of a stored instance,
frame by frame, for viewers (OHIF / Cornerstone ask `.../frames/1` with
`multipart/related; type="application/octet-stream"; transfer-syntax=*`).

What is sent, by the Accept header:
- as stored (`transfer-syntax=*`, `*/*`, or the stored syntax's own media type): each encapsulated
  frame with its compressed media type (image/jpeg, image/jls, image/jp2, image/jpx, image/jphc,
  image/dicom-rle) and `transfer-syntax=<stored UID>`; native frames as application/octet-stream;
- uncompressed (`type="application/octet-stream"` without `transfer-syntax=*`, i.e. Explicit VR
  Little Endian): native frames as they are (byte-swapped from big endian), compressed grayscale
  frames decoded with pydicom's codecs. Colour frames are not transcoded, nor is anything else: 406.

A bare media type instead of multipart/related (OHIF's `singlepart`) gets a single-part answer.

Bulk data: the metadata names a `BulkDataURI` for Pixel Data and for every large binary value it
leaves out (`service.studies.index.header_json`, `wado.with_bulkdata_uris`); `bulkdata(...)`
answers them (Pixel Data as all
its frames, by the same rules; other values as one application/octet-stream part).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom import uid
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_expected_length

from radiology.dicom.checks import codestream_size
from service.dicomweb.wado import PIXEL_DATA, RetrieveError, encapsulated, media_ranges, related

OCTET = "application/octet-stream"
#: PS3.18 Table 8.7.3-2: the media type of a compressed frame, by transfer syntax.
FRAME_MEDIA = {
    uid.JPEGBaseline8Bit: "image/jpeg", uid.JPEGExtended12Bit: "image/jpeg",
    uid.JPEGLossless: "image/jpeg", uid.JPEGLosslessSV1: "image/jpeg",
    uid.JPEGLSLossless: "image/jls", uid.JPEGLSNearLossless: "image/jls",
    uid.JPEG2000Lossless: "image/jp2", uid.JPEG2000: "image/jp2",
    uid.JPEG2000MCLossless: "image/jpx", uid.JPEG2000MC: "image/jpx",
    uid.HTJ2KLossless: "image/jphc", uid.HTJ2KLosslessRPCL: "image/jphc",
    uid.HTJ2K: "image/jphc", uid.RLELossless: "image/dicom-rle",
}
MAX_FRAMES_LISTED = 1000


@dataclass(frozen=True)
class Part:
    """One part of a multipart/related answer."""

    media_type: str  # with its transfer-syntax parameter where it has one
    data: bytes


@dataclass(frozen=True)
class Answer:
    """The parts of an answer, and whether the client asked for a single-part one (a bare media
    type such as `application/octet-stream`, not multipart/related)."""

    parts: list[Part]
    single: bool

    def encode(self) -> tuple[bytes, str]:
        """The body and its Content-Type. Single part: the one part, or native frames joined
        (they are the pixel data value); several compressed frames only come multipart (406)."""
        if not self.single:
            body, content_type = related(((p.media_type, p.data) for p in self.parts),
                                         self.parts[0].media_type.split(";")[0])
            return b"".join(body), content_type
        if len(self.parts) == 1 or all(p.media_type.startswith(OCTET) for p in self.parts):
            return b"".join(part.data for part in self.parts), self.parts[0].media_type
        raise RetrieveError(406, "several compressed frames come only as multipart/related; "
                            "ask one frame at a time for single parts")


def parse_frame_list(text: str) -> list[int]:
    """`1,3,4` → [1, 3, 4]: 1-based frame numbers, in the order asked (400 when malformed).

    >>> parse_frame_list("2, 1")
    [2, 1]
    """
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1 or len(numbers) > MAX_FRAMES_LISTED:
        raise RetrieveError(400, "frames are a comma-separated list of frame numbers from 1 "
                            f"(at most {MAX_FRAMES_LISTED}), e.g. /frames/1 or /frames/1,2")
    return numbers


def _media_ranges(accept: str | None) -> list[tuple[str, dict[str, str], bool]]:
    """(media type, parameters, single part?) of each range (`wado.media_ranges`);
    multipart/related stands for its `type`."""
    ranges = []
    for media, params in media_ranges(accept):
        single = media not in ("multipart/related", "*/*", "*")
        if media == "multipart/related":
            media = params.get("type", OCTET).lower()
        ranges.append((media, params, single))
    return ranges


def negotiate(accept: str | None, stored: str, *, grayscale: bool) -> tuple[bool, bool]:
    """(as stored?, single part?): frames go out as stored or decoded to Explicit VR Little
    Endian, multipart/related or as one bare part; 406 when the Accept header admits neither."""
    media_type = FRAME_MEDIA.get(stored, OCTET)
    for media, params, single in _media_ranges(accept):
        syntax = params.get("transfer-syntax")
        if media in ("*/*", "*") or (syntax == "*" and media in (OCTET, media_type, "image/*")):
            return True, single
        if media == OCTET and syntax in (None, uid.ExplicitVRLittleEndian):
            if not encapsulated(stored):
                return True, single
            if grayscale:
                return False, single
        if media == media_type != OCTET and syntax in (None, stored):
            return True, single
    offered = [f'multipart/related; type="{media_type}"; transfer-syntax={stored}']
    if encapsulated(stored) and grayscale:
        offered.append(f'multipart/related; type="{OCTET}"; '
                       f"transfer-syntax={uid.ExplicitVRLittleEndian}")
    raise RetrieveError(406, "these frames are offered as " + " or ".join(offered)
                        + " (transfer-syntax=* takes them as stored)")


def _read(data: bytes) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.PixelData  # noqa: B018 - the value must be readable
    except AttributeError:
        raise RetrieveError(404, "this instance has no pixel data") from None
    except Exception as error:  # a stored file pydicom cannot parse any more
        raise RetrieveError(409, f"the instance's pixel data cannot be read "
                            f"({type(error).__name__})") from None
    return ds


def _native_frame(ds: pydicom.Dataset, index: int, count: int) -> bytes:
    bits = int(ds.BitsAllocated)
    if bits == 1 and count > 1:
        raise RetrieveError(406, "single-bit frames are not byte aligned; retrieve the instance")
    length = get_expected_length(ds, "bytes") // count
    frame = bytes(ds.PixelData[index * length:(index + 1) * length])
    if ds.file_meta.TransferSyntaxUID == uid.ExplicitVRBigEndian and bits > 8:
        frame = np.frombuffer(frame, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return frame


def _decoded_frame(ds: pydicom.Dataset, index: int, count: int) -> bytes:
    # A decoder allocates what the stream declares: refuse one that disagrees with the header
    # (intake checked the first frame only).
    declared = codestream_size(get_frame(ds.PixelData, index, number_of_frames=count))
    if declared not in (None, (int(ds.Rows), int(ds.Columns))):
        raise RetrieveError(409, f"frame {index + 1} declares a size other than the header's; "
                            "it is not decoded (ask transfer-syntax=* for it as stored)")
    try:
        values = pixel_array(ds, index=index)
    except Exception as error:  # no codec for it, or a damaged frame
        raise RetrieveError(409, f"frame {index + 1} cannot be decoded "
                            f"({type(error).__name__}); ask transfer-syntax=* for it as stored"
                            ) from None
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()


def frames(data: bytes, numbers: list[int] | None, accept: str | None) -> Answer:
    """Frames `numbers` (1-based; None: all) of the Part 10 file `data`, as the Accept header
    asks (see the module docstring)."""
    ds = _read(data)
    stored = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames") or 1)
    numbers = numbers or list(range(1, count + 1))
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise RetrieveError(404, f"frame {beyond[0]} does not exist: the instance has "
                            f"{count} frame{'s' * (count != 1)}")
    as_stored, single = negotiate(accept, stored,
                                  grayscale=int(ds.get("SamplesPerPixel", 1)) == 1)
    octet = f"{OCTET}; transfer-syntax={uid.ExplicitVRLittleEndian}"
    media = f"{FRAME_MEDIA.get(stored, OCTET)}; transfer-syntax={stored}"
    try:
        if not encapsulated(stored):
            parts = [Part(octet, _native_frame(ds, n - 1, count)) for n in numbers]
        elif not as_stored:
            parts = [Part(octet, _decoded_frame(ds, n - 1, count)) for n in numbers]
        else:
            parts = [Part(media, get_frame(ds.PixelData, n - 1, number_of_frames=count))
                     for n in numbers]
        return Answer(parts, single)
    except RetrieveError:
        raise
    except Exception as error:  # e.g. fragments that do not split into the frames declared
        raise RetrieveError(409, "the instance's pixel data cannot be split into frames "
                            f"({type(error).__name__})") from None


def bulkdata(data: bytes, tag: str, accept: str | None) -> Answer:
    """The bulk data value of top-level attribute `tag` (8 hex digits) of `data`: Pixel Data as
    all its frames, any other value as one application/octet-stream part."""
    tag = tag.upper()
    if tag == PIXEL_DATA:
        return frames(data, None, accept)
    try:
        number = int(tag, 16)
    except ValueError:
        number = -1
    if len(tag) != 8 or number < 0:
        raise RetrieveError(400, "bulk data is named by its tag, 8 hexadecimal digits")
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    element = ds.get(number)
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise RetrieveError(404, f"this instance has no bulk data value ({tag})")
    for media, _params, single in _media_ranges(accept):
        if media in (OCTET, "*/*", "*", "application/*"):
            return Answer([Part(OCTET, bytes(element.value))], single)
    raise RetrieveError(406, f"bulk data values are {OCTET}")
