"""WADO-RS (PS3.18 10.4): the instances of a study, series or instance as multipart/related
application/dicom, their metadata as DICOM JSON (with BulkDataURIs), and one instance rendered
as PNG or JPEG. Frames and bulk data: `service.dicomweb.frames`.

Instances are sent as stored, in the transfer syntax they arrived in (each part names it:
`Content-Type: application/dicom; transfer-syntax=<UID>`), or decompressed to Explicit VR Little
Endian when that is asked for by name; a request for any other transfer syntax is answered 406
(this service compresses nothing).
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pydicom
from pydicom import uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import ServiceError
from service.core.models import IndexedInstance, Instance
from service.core.storage import BlobStore
from service.studies.imaging import (
    WINDOW_PRESETS,
    ImageDecodeError,
    decode,
    downscale,
    render_png,
)

DICOM = "application/dicom"
PIXEL_DATA = "7FE00010"
RENDERED_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}


class RetrieveError(ServiceError):
    """A WADO-RS request that cannot be answered: not found (404), not acceptable (406), ..."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status, code="retrieve_failed")


def find(session: Session, study_uid: str, series_uid: str | None = None,
         sop_uid: str | None = None) -> list[tuple[IndexedInstance, Instance]]:
    """The indexed instances of a study / series / instance (404 when there is none)."""
    statement = (select(IndexedInstance, Instance)
                 .join(Instance, Instance.id == IndexedInstance.instance_id)
                 .where(IndexedInstance.study_uid == study_uid))
    if series_uid is not None:
        statement = statement.where(IndexedInstance.series_uid == series_uid)
    if sop_uid is not None:
        statement = statement.where(IndexedInstance.sop_uid == sop_uid)
    statement = statement.order_by(IndexedInstance.series_uid, IndexedInstance.instance_number,
                                   IndexedInstance.id)
    rows = [(row, instance) for row, instance in session.execute(statement)]
    if not rows:
        what = "instance" if sop_uid else "series" if series_uid else "study"
        raise RetrieveError(404, f"no such {what} is stored here")
    return rows


def encapsulated(syntax: str) -> bool:
    """Whether pixel data in transfer syntax `syntax` is encapsulated (compressed, or PS3.5's
    encapsulated uncompressed) rather than native."""
    return uid.UID(syntax).is_encapsulated


def media_ranges(accept: str | None) -> list[tuple[str, dict[str, str]]]:
    """(media type, parameters) of each range of an Accept header (absent: `*/*`), types and
    parameter names lower-cased, quotes stripped."""
    ranges = []
    for media_range in (accept or "*/*").split(","):
        parts = [p.strip() for p in media_range.split(";")]
        params = {k.strip().lower(): v.strip().strip('"') for k, _, v in
                  (p.partition("=") for p in parts[1:])}
        ranges.append((parts[0].lower(), params))
    return ranges


def check_accept_dicom(accept: str | None, transfer_syntaxes: set[str]) -> str | None:
    """The transfer syntax to send instances in: None for as stored (`transfer-syntax=*`, none
    named, or the stored one), Explicit VR Little Endian when asked for it (`transcoded`); 406
    for anything else."""
    for media, params in media_ranges(accept):
        if media == "*/*":
            return None
        if media == DICOM or (media == "multipart/related" and
                              params.get("type", DICOM).lower() == DICOM):
            wanted = params.get("transfer-syntax", "*")
            if wanted == "*" or {wanted} >= transfer_syntaxes:
                return None
            if wanted == uid.ExplicitVRLittleEndian:
                return wanted
    raise RetrieveError(406, 'WADO-RS here answers multipart/related; type="application/dicom" '
                        f"as stored ({', '.join(sorted(transfer_syntaxes))}; transfer-syntax=*) "
                        f"or decompressed (transfer-syntax={uid.ExplicitVRLittleEndian})")


def transcoded(data: bytes) -> bytes:
    """Part 10 `data` in Explicit VR Little Endian (PS3.18's default for application/dicom):
    compressed pixel data decoded by pydicom's codecs (YCbCr JPEG becomes RGB), big endian
    swapped; 409 when its pixel data cannot be decoded."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax == uid.ExplicitVRLittleEndian:
            return data
        if "PixelData" in ds and syntax.is_compressed:
            ds.decompress(generate_instance_uid=False)  # the same instance, decoded
        elif not syntax.is_little_endian:
            ds = _little_endian(ds)
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as error:  # no codec, damaged pixel data: it cannot be sent decompressed
        raise RetrieveError(409, f"an instance cannot be decompressed ({type(error).__name__}); "
                            "ask transfer-syntax=* for it as stored") from None
    return buffer.getvalue()


_WORDS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _little_endian(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A big-endian dataset's top-level elements in a fresh dataset, its word-valued binary
    values (pixel data included) byte-swapped, so pydicom writes it little endian."""
    out = pydicom.Dataset()
    out.file_meta = ds.file_meta
    for element in ds:
        size = _WORDS.get(element.VR)
        if size and element.value:
            element.value = np.frombuffer(element.value, f">u{size}").astype(f"<u{size}").tobytes()
        out.add(element)
    return out


def related(parts: Iterable[tuple[str, bytes]], root: str) -> tuple[Iterator[bytes], str]:
    """A multipart/related body, streamed part by part as `parts` yields (Content-Type, bytes),
    and its Content-Type (`type` = `root`)."""
    boundary = secrets.token_hex(16)

    def body() -> Iterator[bytes]:
        for media, data in parts:
            yield f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return body(), f'multipart/related; type="{root}"; boundary={boundary}'


def multipart(store: BlobStore, rows: list[tuple[IndexedInstance, Instance]],
              syntax: str | None = None) -> tuple[Iterator[bytes], str]:
    """The body (streamed, one stored file at a time) and the Content-Type of a retrieval; in
    `syntax` (Explicit VR Little Endian, converted up front) when not None, else as stored."""
    converted = {} if syntax is None else {
        instance.id: transcoded(store.get(instance.sha256)) for row, instance in rows
        if row.transfer_syntax_uid != syntax}

    def parts() -> Iterator[tuple[str, bytes]]:
        for row, instance in rows:
            data = converted.get(instance.id)
            if data is None:
                yield (f"{DICOM}; transfer-syntax={row.transfer_syntax_uid}",
                       store.get(instance.sha256))
            else:
                yield f"{DICOM}; transfer-syntax={syntax}", data

    return related(parts(), DICOM)


def instance_url(base_url: str, row: IndexedInstance) -> str:
    """The WADO-RS address of an indexed instance."""
    return (f"{base_url}/studies/{row.study_uid}/series/{row.series_uid}/instances/"
            f"{row.sop_uid}")


def with_bulkdata_uris(header: dict[str, Any], instance_url: str, stored: str) -> dict[str, Any]:
    """The indexed header with absolute BulkDataURIs: for Pixel Data when the instance has an
    image, and for each value the index left out (stored as `bulkdata/<tag>`)."""
    out = {tag: ({**value, "BulkDataURI": f"{instance_url}/{value['BulkDataURI']}"}
                 if isinstance(value, dict) and str(value.get("BulkDataURI", "")).startswith(
                     "bulkdata/") else value)
           for tag, value in header.items()}
    if "00280010" in header and PIXEL_DATA not in out:  # Rows: an image
        out[PIXEL_DATA] = {"vr": "OB" if encapsulated(stored) else "OW",
                           "BulkDataURI": f"{instance_url}/bulkdata/{PIXEL_DATA}"}
    return out


def metadata(rows: list[tuple[IndexedInstance, Instance]], base_url: str) -> list[dict[str, Any]]:
    """The DICOM JSON header of each instance, with its Transfer Syntax UID (0002,0010) and the
    BulkDataURIs of its pixel data and other large binary values."""
    return [{**with_bulkdata_uris(row.header, instance_url(base_url, row),
                                  row.transfer_syntax_uid),
             "00020010": {"vr": "UI", "Value": [row.transfer_syntax_uid]}}
            for row, _ in rows]


def rendered_type(accept: str | None) -> str:
    """The image type of a /rendered request: JPEG unless PNG is asked for first (PS3.18 8.7.4)."""
    for media, _params in media_ranges(accept):
        if media in RENDERED_TYPES:
            return media
        if media in ("*/*", "image/*", ""):
            return "image/jpeg"
    raise RetrieveError(406, "rendered images are image/jpeg or image/png")


WINDOW_FUNCTIONS = ("linear", "linear_exact", "sigmoid")


def parse_window(window: str) -> str | tuple[float, float, str]:
    """A preset name, or PS3.18's `center,width[,function]` in the image's modality values."""
    if window in WINDOW_PRESETS:
        return window
    parts = [p.strip() for p in window.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
        function = (parts[2] if len(parts) > 2 else "linear").lower()
    except (ValueError, IndexError):
        raise RetrieveError(400, "window is a preset (" + ", ".join(WINDOW_PRESETS) + ") or "
                            "center,width[,function] (PS3.18 8.3.5.1.3)") from None
    if len(parts) > 3 or width <= 0 or function not in WINDOW_FUNCTIONS:
        raise RetrieveError(400, "window center,width,function: width > 0, function one of "
                            + ", ".join(WINDOW_FUNCTIONS))
    return center, width, function


def apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 VOI functions onto [0, 1]."""
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "linear_exact":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # linear with width 1 is a threshold
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _windowed(data: bytes, center: float, width: float, function: str) -> np.ndarray:
    """The first frame in modality values (Modality LUT applied) through an explicit window."""
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        frame = ds.pixel_array[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
        if frame.ndim != 2:
            raise ValueError("not a grayscale image")
        values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float32)
    except Exception as error:  # any decoder failure: the instance cannot be rendered this way
        raise RetrieveError(409, "the instance cannot be rendered with an explicit window "
                            f"({type(error).__name__})") from None
    shown = apply_window(values, center, width, function).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        shown = 1.0 - shown
    return shown


MAX_VIEWPORT = 4096


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    """PS3.18's `viewport=vw,vh` (the image is scaled to fit, aspect kept; never enlarged)."""
    if text is None:
        return None
    try:
        width, height = (int(part) for part in text.split(","))
    except ValueError:
        width = height = 0
    if not (0 < width <= MAX_VIEWPORT and 0 < height <= MAX_VIEWPORT):
        raise RetrieveError(400, f"viewport is vw,vh in pixels, each 1 to {MAX_VIEWPORT} "
                            "(cropping parameters are not offered)")
    return width, height


def fit(pixels: np.ndarray, viewport: tuple[int, int]) -> np.ndarray:
    """`pixels` scaled down to fit inside viewport (width, height), aspect ratio kept."""
    rows, columns = pixels.shape[:2]
    scale = min(viewport[0] / columns, viewport[1] / rows)
    return downscale(pixels, int(max(rows, columns) * scale)) if scale < 1 else pixels


def representative(rows: list[tuple[IndexedInstance, Instance]]
                   ) -> tuple[IndexedInstance, Instance]:
    """The instance a study's or series' thumbnail shows: the frontal view the model reads (chosen
    at ingest), else a PA or AP view by its header, else the first."""
    def rank(pair: tuple[IndexedInstance, Instance]) -> int:
        row, instance = pair
        view = str((row.header.get("00185101") or {}).get("Value", [""])[0]).upper()
        return 0 if instance.selected else 1 if view in ("PA", "AP") else 2

    return min(rows, key=rank)


def render(store: BlobStore, instance: Instance, window: str, media_type: str,
           max_side: int, viewport: tuple[int, int] | None = None) -> bytes:
    """One instance rendered through a window preset (`default`, `lung`, ...) of the decoded
    image, or through an explicit PS3.18 window `center,width[,function]`; scaled to fit
    `viewport` (width, height) when given."""
    chosen = parse_window(window)
    if isinstance(chosen, tuple):
        pixels = downscale(_windowed(store.get(instance.sha256), *chosen), max_side)
        preset = "default"  # identity: the window is applied already
    else:
        preset = chosen
        if instance.image_sha256:  # decoded at ingest, longest side IMAGE_CACHE_SIZE
            pixels = store.get_array(instance.image_sha256).astype(np.float32)
        else:
            try:
                pixels = decode(store.get(instance.sha256), max_side=max_side).pixels
            except ImageDecodeError as error:
                raise RetrieveError(409, "the instance cannot be rendered: "
                                    f"{error.message}") from None
    if viewport is not None:
        pixels = fit(pixels, viewport)
    return render_png(pixels, preset, RENDERED_TYPES[media_type])
