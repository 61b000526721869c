"""Typed DICOM ingest errors: one class per cause, each with a stable machine ``code``.

Messages say what is wrong and what to do about it, and never contain patient identifiers
(no names, IDs, dates or UIDs): they are written to logs, API responses and metric labels.
"""

from __future__ import annotations

__all__ = [
    "DicomError",
    "NotDicomError",
    "TruncatedError",
    "NoPixelDataError",
    "UnsupportedTransferSyntaxError",
    "NotProjectionRadiographError",
    "TooLargeError",
    "PixelDataLengthError",
    "InvalidHeaderError",
    "UnsupportedImageError",
    "CorruptPixelDataError",
    "ERROR_CODES",
    "truncated_message",
]


class DicomError(ValueError):
    """Base class: a DICOM object that cannot become an image. ``code`` is stable for machines."""

    code: str = "dicom_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class NotDicomError(DicomError):
    """The bytes are not a DICOM object (no 'DICM' marker and no recognisable data set)."""

    code = "not_dicom"


class TruncatedError(DicomError):
    """The object ends before its declared content: an interrupted transfer or a cut file."""

    code = "truncated"


class NoPixelDataError(DicomError):
    """A valid DICOM object without an image: structured report, presentation state, ..."""

    code = "no_pixel_data"


class UnsupportedTransferSyntaxError(DicomError):
    """The pixel encoding has no decoder in this installation."""

    code = "unsupported_transfer_syntax"


class NotProjectionRadiographError(DicomError):
    """The modality is outside the policy (CT, MR, ... by default)."""

    code = "not_projection_radiograph"


class TooLargeError(DicomError):
    """The object exceeds the configured byte or decoded-pixel limits."""

    code = "too_large"


class PixelDataLengthError(DicomError):
    """The Pixel Data length does not match Rows x Columns x Frames x Samples x Bits Allocated."""

    code = "pixel_length_mismatch"


class InvalidHeaderError(DicomError):
    """Image attributes needed to decode are missing or impossible (Rows 0, Bits Allocated 7...)."""

    code = "invalid_header"


class UnsupportedImageError(DicomError):
    """A decodable image that the policy excludes (e.g. multi-frame when the policy rejects it)."""

    code = "unsupported_image"


class CorruptPixelDataError(DicomError):
    """The compressed pixel stream is damaged: the codec refused it."""

    code = "corrupt_pixel_data"


ERROR_CODES: dict[str, type[DicomError]] = {
    cls.code: cls
    for cls in (
        NotDicomError,
        TruncatedError,
        NoPixelDataError,
        UnsupportedTransferSyntaxError,
        NotProjectionRadiographError,
        TooLargeError,
        PixelDataLengthError,
        InvalidHeaderError,
        UnsupportedImageError,
        CorruptPixelDataError,
    )
}


def truncated_message(where: str) -> str:
    """The message of a TruncatedError: where the object ends, and what to do."""
    return (
        f"The DICOM file ends {where}: it was cut during transfer or storage. "
        "Re-send the complete file from the modality or PACS."
    )
