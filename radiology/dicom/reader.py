"""Read one DICOM object into a float32 image in [0, 1] with the metadata later stages need.

``read(path_or_bytes, policy=...)`` is the only way images enter training and serving, so an image
is decoded the same way in both. It composes the stages, in order, each with its own typed error:

1. `radiology.dicom.parse`: the byte limit (:class:`TooLargeError`) before anything is parsed, a
   deflated data set inflated within that limit, pydicom's parse (:class:`NotDicomError`,
   :class:`TruncatedError`); a Part-10 file without its file meta is accepted and its transfer
   syntax inferred (from the data set encoding, or from the codec's stream signature);
2. `radiology.dicom.checks` on the header (`check_image`): pixel data present
   (:class:`NoPixelDataError`), modality (:class:`NotProjectionRadiographError`), decoded-pixel
   limit (:class:`TooLargeError`), a compressed stream declaring another size than the header
   (:class:`CorruptPixelDataError`, before a decoder allocates it), multi-frame
   rule (:class:`UnsupportedImageError`), a decoder for the transfer syntax
   (:class:`UnsupportedTransferSyntaxError`), native pixel data length
   (:class:`PixelDataLengthError`);
3. `radiology.dicom.decode`: one frame (:class:`CorruptPixelDataError` / :class:`TruncatedError`
   when the codec fails);
4. `radiology.dicom.pixels`: Modality LUT, VOI LUT or window (or a robust percentile window),
   polarity.

``read_header`` runs stage 1 without reading the pixel data (and stage 2 with ``check=True``).

Multi-frame rule: a projection radiograph is one frame. With ``policy.multiframe == "first"``
(the default) the first frame is used and a note is recorded; with ``"reject"`` the object is
refused. Colour images (RGB / YBR / PALETTE COLOR, e.g. digitised films) become luminance.
Warnings raised while reading are captured, never printed; pydicom's log messages are redacted
(`radiology.dicom.parse`).

Nothing is half-written: the function either returns a complete :class:`DicomImage` or raises a
:class:`DicomError`; any unexpected exception from a decoder is wrapped, never leaked.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from pydicom import uid as _uid
from pydicom.dataset import Dataset

from radiology.dicom import meta
from radiology.dicom.checks import (
    ENCAPSULATED_NATIVE,
    Geometry,
    check_codestream_size,
    check_frames,
    check_modality,
    check_native_length,
    check_pixels_present,
    check_size,
    check_transfer_syntax,
    geometry,
    int_attr,
)
from radiology.dicom.decode import decode_frame
from radiology.dicom.errors import CorruptPixelDataError, DicomError, TooLargeError
from radiology.dicom.parse import Source, load_bytes, read_dataset
from radiology.dicom.pixels import to_unit_range
from radiology.dicom.policy import DEFAULT_POLICY, ReadPolicy

__all__ = ["DicomImage", "InstanceHeader", "check_image", "decode", "read", "read_header"]

_LOG = logging.getLogger(__name__)
_FOR_PROCESSING = {  # DX / MG / IO "For Processing" SOP classes
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.1.3.1",
}


@dataclass(frozen=True)
class DicomImage:
    """A decoded image and its metadata.

    ``pixels`` is float32 (rows, columns) in [0, 1], 1 = bright (bone)."""

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


def read(
    source: Source,
    *,
    policy: ReadPolicy | None = None,
) -> DicomImage:
    """Decode one DICOM instance (a path or its bytes) into a :class:`DicomImage`.

    Raises a :class:`~radiology.dicom.errors.DicomError` subclass for every input that cannot
    become a projection radiograph; see the module docstring for the order of checks.
    """
    policy = policy or DEFAULT_POLICY
    ds, notes = read_dataset(load_bytes(source, policy), policy=policy)
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            return decode(ds, policy, notes)
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
        _LOG.error(
            "unexpected %s while decoding; reported as corrupt_pixel_data", type(exc).__name__
        )
        raise CorruptPixelDataError(
            f"The image could not be decoded ({type(exc).__name__}). The pixel data is damaged or "
            "uses an encoding variant the decoders refuse; re-export it from the source system."
        ) from exc


def check_image(ds: Dataset, policy: ReadPolicy, notes: list[str]) -> Geometry:
    """Every check of `radiology.dicom.checks` in order, on a parsed data set (pixels read or
    deferred): the image's geometry, or the first check's typed error."""
    check_pixels_present(ds)
    check_modality(meta.modality(ds), policy)
    geo = geometry(ds, notes)
    check_size(geo, policy)
    check_frames(geo, policy, notes)
    ts = _uid.UID(str(ds.file_meta.TransferSyntaxUID))
    check_transfer_syntax(ts)
    if ts.is_compressed and ts != ENCAPSULATED_NATIVE:
        check_codestream_size(ds, geo)
    elif not ts.is_compressed:
        check_native_length(ds, geo, notes)
    return geo


def decode(ds: Dataset, policy: ReadPolicy, notes: list[str]) -> DicomImage:
    """A parsed data set checked (`check_image`), one frame decoded and mapped to [0, 1]."""
    geo = check_image(ds, policy, notes)
    modality = meta.modality(ds)
    ts = _uid.UID(str(ds.file_meta.TransferSyntaxUID))
    if str(ds.get("SOPClassUID", "")) in _FOR_PROCESSING:
        notes.append("'For Processing' image (raw detector data, no vendor processing)")
    frame, decoder = decode_frame(ds, ts, geo)
    image, window_source = to_unit_range(frame, ds, geo.photometric, policy, notes)
    return DicomImage(
        pixels=image,
        study_uid=meta.text(ds, "StudyInstanceUID"),
        series_uid=meta.text(ds, "SeriesInstanceUID"),
        sop_uid=meta.text(ds, "SOPInstanceUID"),
        sop_class_uid=meta.text(ds, "SOPClassUID"),
        view=meta.view(ds),
        laterality=meta.laterality(ds),
        pixel_spacing=meta.pixel_spacing(ds, notes),
        modality=modality,
        manufacturer=meta.text(ds, "Manufacturer"),
        body_part=meta.text(ds, "BodyPartExamined"),
        transfer_syntax=str(ts),
        bits_stored=geo.bits_stored,
        photometric=geo.photometric,
        number_of_frames=geo.frames,
        window_source=window_source,
        decoder=decoder,
        notes=tuple(notes),
        instance_number=int_attr(ds, "InstanceNumber"),
        series_number=int_attr(ds, "SeriesNumber"),
        acquisition_datetime=meta.acquisition_datetime(ds),
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
    source: Source,
    *,
    policy: ReadPolicy | None = None,
    check: bool = False,
) -> InstanceHeader:
    """Header facts of one instance without decoding its pixels (for choosing views first).

    Raises the errors of the byte and parse stages (too large, not DICOM, truncated: the pixel
    data is not read but its declared end must lie within the bytes). With `check=True`, also
    every check `read` makes before decoding (`check_image`: pixels present, modality, size,
    transfer syntax, native pixel data length), so an upload can be refused as `read` would
    refuse it, without decoding it.
    """
    policy = policy or DEFAULT_POLICY
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return _header(source, policy, check)


def _header(source: Source, policy: ReadPolicy, check: bool) -> InstanceHeader:
    ds, notes = read_dataset(load_bytes(source, policy), defer_pixels=True, policy=policy)
    if check:
        check_image(ds, policy, notes)
    return InstanceHeader(
        study_uid=meta.text(ds, "StudyInstanceUID"),
        series_uid=meta.text(ds, "SeriesInstanceUID"),
        sop_uid=meta.text(ds, "SOPInstanceUID"),
        view=meta.view(ds),
        laterality=meta.laterality(ds),
        modality=meta.modality(ds),
        rows=int_attr(ds, "Rows") or 0,
        columns=int_attr(ds, "Columns") or 0,
        has_pixels=bool(int_attr(ds, "Rows")),
        instance_number=int_attr(ds, "InstanceNumber"),
        series_number=int_attr(ds, "SeriesNumber"),
        acquisition_datetime=meta.acquisition_datetime(ds),
    )
