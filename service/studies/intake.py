"""DICOM upload intake: validate instances (and zips) cheaply, store them, register studies idempotently.

Upload-time checks are structural only (Part 10, UIDs, image SOP class, pixel data present, size
limits); decoding happens in the ingest worker, so a file that parses but cannot be decoded ends as
a `failed` study with its reason instead of blocking the API.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass, field

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radiology.dicom import sanitize_preamble
from service.core.config import Settings
from service.core.errors import ServiceError
from service.core.models import AuditEvent, Instance, Study, StudyState, User
from service.core.storage import BlobStore
from service.studies.index import index_instance

log = logging.getLogger(__name__)

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

#: Image storage SOP classes a chest radiograph arrives in.
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
}


class UploadError(ServiceError):
    """An upload refused as a whole: HTTP status, a machine code and a message an operator can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, status=status, code=code)


class InstanceRejected(Exception):
    """One instance refused: machine code, DICOM failure reason (PS3.18 I.2.2) and a message."""

    def __init__(self, code: str, failure_reason: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.failure_reason = failure_reason
        self.message = message


@dataclass(frozen=True)
class InstanceHeader:
    """What intake needs of one instance, plus its sanitized bytes (preamble zeroed).

    With DEID_ON_INGEST, `data` and the UIDs are those of the de-identified copy;
    `received_study_uid` is the StudyInstanceUID as sent, and `original` the identified bytes when
    DEID_KEEP_ORIGINAL.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    data: bytes
    received_study_uid: str = ""
    original: bytes | None = None


def inspect_instance(data: bytes, settings: Settings) -> InstanceHeader:
    """Check one uploaded file structurally; raises InstanceRejected with a reason."""
    if len(data) > settings.max_instance_bytes:
        raise InstanceRejected(
            "too_large", 0xA700, f"instance of {len(data)} bytes exceeds the limit of {settings.max_instance_bytes}"
        )
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InstanceRejected("not_dicom", 0xC000, "not a DICOM Part 10 file (no 'DICM' marker after the preamble)")
    data = sanitize_preamble(data)
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), defer_size=1024)
        if not getattr(dataset, "file_meta", None) or "TransferSyntaxUID" not in dataset.file_meta:
            raise ValueError("no File Meta Information with a Transfer Syntax")
        study_uid = str(dataset.get("StudyInstanceUID", "") or "")
        series_uid = str(dataset.get("SeriesInstanceUID", "") or "")
        sop_uid = str(dataset.get("SOPInstanceUID", "") or "")
        sop_class_uid = str(dataset.get("SOPClassUID", "") or "")
        has_pixels = "PixelData" in dataset or "FloatPixelData" in dataset
        rows = int(dataset.get("Rows", 0) or 0)
        columns = int(dataset.get("Columns", 0) or 0)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (InvalidDicomError, ValueError, TypeError, KeyError, EOFError, OSError, OverflowError) as error:
        raise InstanceRejected("corrupt", 0xC000, f"the DICOM file cannot be parsed ({type(error).__name__})") from None
    except Exception as error:  # pydicom raises assorted errors on hostile input
        raise InstanceRejected("corrupt", 0xC000, f"the DICOM file cannot be parsed ({type(error).__name__})") from None
    for name, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid), ("SOPInstanceUID", sop_uid)):
        if not uid or len(uid) > 64 or not UID_RE.match(uid):
            raise InstanceRejected("bad_uid", 0xA900, f"{name} is missing or not a valid DICOM UID")
    if sop_class_uid not in IMAGE_SOP_CLASSES:
        raise InstanceRejected(
            "unsupported_sop_class", 0x0122, "not a radiograph: the SOP Class is not an image storage class this service reads"
        )
    if not has_pixels or rows <= 0 or columns <= 0:
        raise InstanceRejected("no_pixels", 0xA900, "the instance has no pixel data (Rows/Columns/PixelData)")
    if rows * columns * max(frames, 1) > settings.max_image_pixels:
        raise InstanceRejected(
            "too_many_pixels", 0xA700, f"image of {rows}x{columns}x{frames} pixels exceeds the limit of {settings.max_image_pixels}"
        )
    if settings.deid_on_ingest:
        return _deidentified(data, settings, study_uid)
    return InstanceHeader(study_uid, series_uid, sop_uid, sop_class_uid, data, study_uid)


def _deidentified(data: bytes, settings: Settings, received_study_uid: str) -> InstanceHeader:
    """The de-identified copy of a checked instance (radiology.deid, PS3.15 Basic Profile)."""
    from radiology.deid import Deidentifier

    deidentifier = Deidentifier(settings.radreport_deid_secret or "",
                                retain_uids=settings.deid_retain_uids)
    try:
        copy = deidentifier.deidentify_file(data)
        dataset = pydicom.dcmread(io.BytesIO(copy), stop_before_pixels=True)
    except Exception as error:  # an instance pydicom parsed but cannot write back
        raise InstanceRejected("deid_failed", 0xC000, "the instance cannot be de-identified "
                               f"({type(error).__name__})") from None
    return InstanceHeader(str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID),
                          str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), copy,
                          received_study_uid, data if settings.deid_keep_original else None)


def unpack_zip(data: bytes, settings: Settings) -> list[bytes]:
    """The member files of a zip upload, refusing archives that expand beyond the limits (zip bombs)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise UploadError(422, "bad_zip", f"the zip archive cannot be read ({type(error).__name__})") from None
    if len(members) > settings.max_instances_per_upload:
        raise UploadError(413, "too_many_files", f"the archive holds {len(members)} files; the limit is {settings.max_instances_per_upload}")
    files: list[bytes] = []
    total = 0
    for member in members:
        declared_ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > settings.max_instance_bytes or declared_ratio > settings.max_zip_ratio:
            raise UploadError(413, "zip_bomb", "a zip member expands beyond the size or compression-ratio limits")
        chunks: list[bytes] = []
        size = 0
        try:
            with archive.open(member) as handle:
                while chunk := handle.read(1 << 20):
                    size += len(chunk)
                    total += len(chunk)
                    if size > settings.max_instance_bytes or size > settings.max_zip_ratio * max(member.compress_size, 1) or total > settings.max_upload_bytes:
                        raise UploadError(413, "zip_bomb", "a zip member expands beyond the size or compression-ratio limits")
                    chunks.append(chunk)
        except UploadError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as error:
            raise UploadError(422, "bad_zip", f"a zip member cannot be extracted ({type(error).__name__})") from None
        files.append(b"".join(chunks))
    if not files:
        raise UploadError(422, "empty_upload", "the archive holds no files")
    return files


@dataclass
class StoredInstance:
    """The outcome of registering one instance."""

    header: InstanceHeader
    study: Study
    created: bool
    warning: str | None = None


@dataclass
class Registration:
    """The outcome of registering a set of instances: per instance, and the studies to enqueue."""

    stored: list[StoredInstance] = field(default_factory=list)
    studies_to_ingest: set[str] = field(default_factory=set)


def _get_or_create_study(session: Session, study_uid: str, user: User) -> tuple[Study, bool]:
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is not None:
        return study, False
    try:
        with session.begin_nested():
            study = Study(study_uid=study_uid, state=StudyState.received, created_by=user.id)
            session.add(study)
            session.flush()
    except IntegrityError:  # created concurrently by another upload
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        assert study is not None
        return study, False
    session.add(
        AuditEvent(actor=f"user:{user.name}", user_id=user.id, action="study.receive", study_id=study.id,
                   to_state=StudyState.received.value)
    )
    return study, True


def register_instances(session: Session, store: BlobStore, headers: list[InstanceHeader], user: User) -> Registration:
    """Store instance bytes and rows; the same SOP instance again changes nothing (idempotent).

    Studies in `received` that gained instances are returned for ingest; instances arriving after
    a study's ingest are kept and audited but do not restart its pipeline.
    """
    result = Registration()
    for header in headers:
        study, _ = _get_or_create_study(session, header.study_uid, user)
        existing = session.scalar(select(Instance).where(Instance.sop_uid == header.sop_uid))
        if existing is not None:
            warning = None
            if existing.study_id != study.id:
                warning = "this SOPInstanceUID is already stored in another study; kept the first"
            result.stored.append(StoredInstance(header, existing.study, created=False, warning=warning))
            if existing.study.state == StudyState.received:
                result.studies_to_ingest.add(existing.study_id)
            continue
        sha = store.put(header.data)
        original_sha = store.put(header.original) if header.original is not None else None
        try:
            with session.begin_nested():
                instance = Instance(study_id=study.id, sop_uid=header.sop_uid,
                                    series_uid=header.series_uid,
                                    sop_class_uid=header.sop_class_uid, sha256=sha,
                                    size_bytes=len(header.data), original_sha256=original_sha)
                session.add(instance)
                session.flush()
                index_instance(session, instance, header.data)
                session.flush()
        except IntegrityError:  # the same instance uploaded concurrently
            result.stored.append(StoredInstance(header, study, created=False))
            continue
        session.add(
            AuditEvent(actor=f"user:{user.name}", user_id=user.id, action="instance.store", study_id=study.id,
                       details={"sha256": sha, "late": study.state != StudyState.received})
        )
        result.stored.append(StoredInstance(header, study, created=True))
        if study.state == StudyState.received:
            result.studies_to_ingest.add(study.id)
    return result
