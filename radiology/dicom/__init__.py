"""DICOM ingest: ``read(path_or_bytes)`` -> :class:`DicomImage`, typed :class:`DicomError` causes.

>>> from radiology.dicom import read, DicomError          # doctest: +SKIP
>>> image = read("study/instance.dcm")                      # doctest: +SKIP
>>> image.pixels.dtype, image.view                          # doctest: +SKIP
(dtype('float32'), 'PA')
"""

from radiology.dicom.errors import (
    ERROR_CODES,
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
from radiology.dicom.reader import (
    DEFAULT_POLICY,
    PROJECTION_MODALITIES,
    DicomImage,
    InstanceHeader,
    ReadPolicy,
    read,
    read_dataset,
    read_header,
    sanitize_preamble,
)

__all__ = [
    "ERROR_CODES",
    "DEFAULT_POLICY",
    "PROJECTION_MODALITIES",
    "CorruptPixelDataError",
    "DicomError",
    "DicomImage",
    "InstanceHeader",
    "InvalidHeaderError",
    "NoPixelDataError",
    "NotDicomError",
    "NotProjectionRadiographError",
    "PixelDataLengthError",
    "ReadPolicy",
    "TooLargeError",
    "TruncatedError",
    "UnsupportedImageError",
    "UnsupportedTransferSyntaxError",
    "read",
    "read_dataset",
    "read_header",
    "sanitize_preamble",
]
