"""DICOM ingest: ``read(path_or_bytes)`` -> :class:`DicomImage`, typed :class:`DicomError` causes.

Stages, each a module with a public API: ``parse`` (bytes -> Dataset), ``checks`` (is it an image
this policy reads), ``decode`` (one frame), ``pixels`` (grey levels -> [0, 1]); ``reader``
composes them; ``policy`` holds the limits, ``meta`` the header facts, ``errors`` the causes.

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
from radiology.dicom.parse import inflate_deflated, read_dataset, sanitize_preamble
from radiology.dicom.policy import DEFAULT_POLICY, PROJECTION_MODALITIES, ReadPolicy
from radiology.dicom.reader import DicomImage, InstanceHeader, check_image, read, read_header

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
    "check_image",
    "inflate_deflated",
    "read",
    "read_dataset",
    "read_header",
    "sanitize_preamble",
]
