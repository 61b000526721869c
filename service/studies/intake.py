"""DICOM upload intake: validate instances (and zips) cheaply, store them, register studies once.

Upload-time checks are every check `radiology.dicom.read` makes before decoding (Part 10, a
deflated data set inflated within MAX_INSTANCE_BYTES, nothing cut short, pixel data present and as
long as the header describes, size limits, a supported transfer syntax) plus UIDs and an image SOP
class; decoding happens in the ingest worker, so a file that passes but cannot be decoded ends as
a `failed` study with its reason instead of blocking the API.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radiology import dicom
from radiology.dicom import ReadPolicy, sanitize_preamble
from service.core.config import Settings
from service.core.errors import ServiceError
from service.core.models import AuditEvent, Instance, Study, StudyState, User
from service.core.spool import Spool, SpooledPart
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
    """An upload refused as a whole: HTTP status, a machine code and a message to act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, status=status, code=code)


class InstanceRejected(Exception):
    """One instance refused: machine code, DICOM failure reason (PS3.18 I.2.2) and a message."""

    def __init__(self, code: str, failure_reason: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.failure_reason = failure_reason
        self.message = message

    @property
    def http_status(self) -> int:
        """413 for an instance over a size limit, 422 for any other refusal."""
        return 413 if self.failure_reason == 0xA700 else 422


@dataclass(frozen=True)
class InstanceHeader:
    """What intake needs of one instance, and where its sanitized bytes (preamble zeroed) are:
    in `data`, or in the spooled file `path` (a streamed upload).

    With DEID_ON_INGEST, `data` and the UIDs are those of the de-identified copy (always in
    memory); `received_study_uid` is the StudyInstanceUID as sent, and `original` the identified
    bytes when DEID_KEEP_ORIGINAL.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    data: bytes | None = None
    path: Path | None = None
    sha256: str = ""
    size: int = 0
    received_study_uid: str = ""
    original: bytes | None = None


ZIP_MAGIC = b"PK\x03\x04"

#: DicomError codes and the (intake code, STOW FailureReason) they are refused with.
_REFUSALS: dict[str, tuple[str, int]] = {
    "too_large": ("too_large", 0xA700),
    "no_pixel_data": ("no_pixels", 0xA900),
    "not_dicom": ("corrupt", 0xC000),
    "invalid_header": ("corrupt", 0xC000),
}


def sanitize_head(head: bytes) -> bytes:
    """The first bytes of an uploaded file as stored: a DICOM preamble zeroed (see
    `radiology.dicom.sanitize_preamble`), a zip archive left as it is."""
    return head if head.startswith(ZIP_MAGIC) else sanitize_preamble(head)


def read_policy(settings: Settings) -> ReadPolicy:
    """What intake and the ingest worker accept: `radiology.dicom`'s default policy with the
    service's byte and pixel limits (MAX_INSTANCE_BYTES also bounds a deflated data set once
    inflated, so a decompression bomb is refused before it allocates more)."""
    return ReadPolicy(max_bytes=settings.max_instance_bytes, max_pixels=settings.max_image_pixels)


def _too_large(size: int, settings: Settings) -> InstanceRejected:
    return InstanceRejected("too_large", 0xA700, f"instance of {size} bytes exceeds the limit of "
                            f"{settings.max_instance_bytes} (MAX_INSTANCE_BYTES)")


def inspect_instance(data: bytes, settings: Settings) -> InstanceHeader:
    """Check one uploaded file held in memory; raises InstanceRejected with a reason."""
    if len(data) > settings.max_instance_bytes:
        raise _too_large(len(data), settings)
    data = sanitize_preamble(data)
    uids = _inspect(data, settings)
    if settings.deid_on_ingest:
        return _deidentified(data, settings, uids[0])
    return InstanceHeader(*uids, data=data, sha256=hashlib.sha256(data).hexdigest(),
                          size=len(data), received_study_uid=uids[0])


def inspect_file(part: SpooledPart, settings: Settings) -> InstanceHeader:
    """Check one spooled file (written with `sanitize_head`); raises InstanceRejected.

    Its bytes are read for the check and dropped: the request holds one instance at a time.
    """
    if part.too_large or part.size > settings.max_instance_bytes:
        raise _too_large(part.size, settings)
    if part.path is None:
        raise InstanceRejected("not_dicom", 0xC000, "the part is empty")
    data = part.path.read_bytes()
    uids = _inspect(data, settings)
    if settings.deid_on_ingest:
        return _deidentified(data, settings, uids[0])
    return InstanceHeader(*uids, path=part.path, sha256=part.sha256, size=part.size,
                          received_study_uid=uids[0])


def _inspect(data: bytes, settings: Settings) -> tuple[str, str, str, str]:
    """(study, series, SOP instance, SOP class UIDs) of an instance that passes every check
    `radiology.dicom.read` makes before decoding; InstanceRejected otherwise."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InstanceRejected("not_dicom", 0xC000,
                               "not a DICOM Part 10 file (no 'DICM' marker after the preamble)")
    policy = read_policy(settings)
    try:
        dataset, notes = dicom.read_dataset(data, defer_pixels=True, policy=policy)
        if "TransferSyntaxUID" not in dataset.file_meta:
            raise dicom.InvalidHeaderError("no File Meta Information with a Transfer Syntax")
        uids = tuple(str(dataset.get(name, "") or "") for name in
                     ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"))
        for name, uid in zip(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"), uids,
                             strict=False):
            if not uid or len(uid) > 64 or not UID_RE.match(uid):
                raise InstanceRejected("bad_uid", 0xA900,
                                       f"{name} is missing or not a valid DICOM UID")
        if uids[3] not in IMAGE_SOP_CLASSES:
            raise InstanceRejected(
                "unsupported_sop_class", 0x0122,
                "not a radiograph: the SOP Class is not an image storage class this service reads")
        geo = dicom.check_image(dataset, policy, notes)
    except dicom.DicomError as error:
        code, reason = _REFUSALS.get(error.code, (error.code, 0xC000))
        message = error.message
        if code == "too_large":  # name the service's settings, not the library's
            message += " This service's limits: MAX_INSTANCE_BYTES and MAX_IMAGE_PIXELS."
        raise InstanceRejected(code, reason, message) from None
    except InstanceRejected:
        raise
    except Exception as error:  # pydicom raises assorted errors on hostile input
        message = f"the DICOM file cannot be parsed ({type(error).__name__})"
        raise InstanceRejected("corrupt", 0xC000, message) from None
    if any("beyond the image" in note for note in notes):
        raise InstanceRejected("pixel_length_mismatch", 0xC000, "the pixel data is longer than "
                               "Rows x Columns x Frames x Samples x Bits Allocated describe; the "
                               "header and the pixels disagree. Re-export the image.")
    if geo.rows * geo.columns * max(geo.frames, 1) > settings.max_image_pixels:
        raise InstanceRejected(
            "too_many_pixels", 0xA700, f"image of {geo.rows}x{geo.columns}x{geo.frames} pixels "
            f"exceeds the limit of {settings.max_image_pixels} (MAX_IMAGE_PIXELS)")
    return uids  # type: ignore[return-value]


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
                          str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), data=copy,
                          sha256=hashlib.sha256(copy).hexdigest(), size=len(copy),
                          received_study_uid=received_study_uid,
                          original=data if settings.deid_keep_original else None)


def unpack_zip(archive_part: SpooledPart, spool: Spool, settings: Settings) -> list[SpooledPart]:
    """The member files of a spooled zip upload, each extracted into `spool` in chunks and
    refused (413, zip bomb) as soon as it expands beyond MAX_INSTANCE_BYTES, MAX_ZIP_RATIO or,
    all members together, MAX_UPLOAD_BYTES."""
    try:
        archive = zipfile.ZipFile(archive_part.path)  # type: ignore[arg-type]
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, TypeError) as error:
        raise UploadError(422, "bad_zip",
                          f"the zip archive cannot be read ({type(error).__name__})") from None
    with archive:
        if len(members) > settings.max_instances_per_upload:
            raise UploadError(413, "too_many_files", f"the archive holds {len(members)} files; "
                              f"the limit is {settings.max_instances_per_upload}")
        files: list[SpooledPart] = []
        total = [0]
        for member in members:
            declared_ratio = member.file_size / max(member.compress_size, 1)
            if (member.file_size > settings.max_instance_bytes
                    or declared_ratio > settings.max_zip_ratio):
                raise UploadError(413, "zip_bomb", _ZIP_BOMB)
            try:
                files.append(spool.add(_member_chunks(archive, member, settings, total),
                                       head=sanitize_head))
            except UploadError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError,
                    NotImplementedError) as error:
                raise UploadError(422, "bad_zip", "a zip member cannot be extracted "
                                  f"({type(error).__name__})") from None
    if not files:
        raise UploadError(422, "empty_upload", "the archive holds no files")
    return files


_ZIP_BOMB = ("a zip member expands beyond the size or compression-ratio limits "
             "(MAX_INSTANCE_BYTES, MAX_ZIP_RATIO, MAX_UPLOAD_BYTES)")


def _member_chunks(archive: zipfile.ZipFile, member: zipfile.ZipInfo, settings: Settings,
                   total: list[int]) -> Iterator[bytes]:
    """A member's bytes in chunks of 1 MiB, refused as soon as they pass a limit."""
    size = 0
    with archive.open(member) as handle:
        while chunk := handle.read(1 << 20):
            size += len(chunk)
            total[0] += len(chunk)
            if (size > settings.max_instance_bytes or total[0] > settings.max_upload_bytes
                    or size > settings.max_zip_ratio * max(member.compress_size, 1)):
                raise UploadError(413, "zip_bomb", _ZIP_BOMB)
            yield chunk


@dataclass
class StoredInstance:
    """The outcome of registering one instance."""

    header: InstanceHeader
    study: Study
    created: bool
    warning: str | None = None


@dataclass
class Conflict:
    """An instance refused because its SOP Instance UID is stored with other bytes."""

    header: InstanceHeader
    study_id: str

    message = ("an instance with this SOP Instance UID is already stored with different content; "
               "it was not replaced (a corrected image needs a new SOP Instance UID)")


@dataclass
class Registration:
    """The outcome of registering a set of instances: per instance, and the studies to enqueue."""

    stored: list[StoredInstance] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    studies_to_ingest: set[str] = field(default_factory=set)


def find_conflicts(session: Session, headers: list[InstanceHeader], user: User) -> list[Conflict]:
    """The instances whose SOP Instance UID is already stored with other bytes, each audited
    (`instance.conflict`) on the stored instance's study."""
    conflicts = []
    for header in headers:
        existing = session.scalar(select(Instance).where(Instance.sop_uid == header.sop_uid))
        if existing is not None and existing.sha256 != header.sha256:
            conflicts.append(_conflict(session, header, existing, user))
    return conflicts


def _conflict(session: Session, header: InstanceHeader, existing: Instance, user: User) -> Conflict:
    """Audit a refused conflicting instance (both SHA-256s, no identifiers) and describe it."""
    session.add(AuditEvent(
        actor=f"user:{user.name}", user_id=user.id, action="instance.conflict",
        study_id=existing.study_id,
        details={"sha256": header.sha256, "stored_sha256": existing.sha256}))
    return Conflict(header, existing.study_id)


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
        AuditEvent(actor=f"user:{user.name}", user_id=user.id, action="study.receive",
                   study_id=study.id, to_state=StudyState.received.value)
    )
    return study, True


def register_instances(session: Session, store: BlobStore, headers: list[InstanceHeader],
                       user: User) -> Registration:
    """Store instance bytes and rows; the same SOP instance again changes nothing (idempotent).

    A SOP Instance UID already stored with other bytes is never replaced nor silently dropped:
    it is returned in `conflicts` (and audited) for the sender to be told. Studies in `received`
    that gained instances are returned for ingest; instances arriving after a study's ingest are
    kept and audited but do not restart its pipeline.
    """
    result = Registration()
    for header in headers:
        existing = session.scalar(select(Instance).where(Instance.sop_uid == header.sop_uid))
        if existing is not None and existing.sha256 != header.sha256:
            result.conflicts.append(_conflict(session, header, existing, user))
            continue
        if existing is not None:
            result.stored.append(StoredInstance(header, existing.study, created=False))
            if existing.study.state == StudyState.received:
                result.studies_to_ingest.add(existing.study_id)
            continue
        study, _ = _get_or_create_study(session, header.study_uid, user)
        sha = _put(store, header)
        original_sha = store.put(header.original) if header.original is not None else None
        try:
            with session.begin_nested():
                instance = Instance(study_id=study.id, sop_uid=header.sop_uid,
                                    series_uid=header.series_uid,
                                    sop_class_uid=header.sop_class_uid, sha256=sha,
                                    size_bytes=header.size, original_sha256=original_sha)
                session.add(instance)
                session.flush()
                index_instance(session, instance,
                               header.data if header.data is not None else store.path(sha))
                session.flush()
        except IntegrityError:  # the same instance uploaded concurrently
            result.stored.append(StoredInstance(header, study, created=False))
            continue
        session.add(
            AuditEvent(actor=f"user:{user.name}", user_id=user.id, action="instance.store",
                       study_id=study.id,
                       details={"sha256": sha, "late": study.state != StudyState.received})
        )
        result.stored.append(StoredInstance(header, study, created=True))
        if study.state == StudyState.received:
            result.studies_to_ingest.add(study.id)
    return result


def _put(store: BlobStore, header: InstanceHeader) -> str:
    """Store the instance's bytes (moved from its spooled file, or written from memory)."""
    if header.path is not None:
        return store.put_file(header.path, header.sha256)
    assert header.data is not None
    return store.put(header.data)
