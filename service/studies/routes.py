"""Routes under /v1/studies: upload, status, rendered images, the draft report, the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from service.auth.deps import ERRORS, require, roles_doc
from service.core.config import Settings
from service.core.db import session_scope
from service.core.deps import SessionDep, SettingsDep, StoreDep
from service.core.errors import Problem
from service.core.models import AuditEvent, Draft, Report, Role, Study, User
from service.core.spool import Spool, SpooledPart, media_type, spool_multipart
from service.core.storage import BlobStore
from service.studies import access, intake
from service.studies.imaging import WINDOW_PRESETS, render_png
from service.studies.reconcile import enqueue_and_mark
from service.studies.schemas import (
    AuditEntry,
    DraftReport,
    StageTimings,
    StudyStatus,
    UploadAccepted,
)

router = APIRouter(prefix="/v1/studies", tags=["studies"])

UPLOADERS = (Role.uploader,)
READERS = (Role.uploader, Role.radiologist, Role.admin)
CLINICAL = (Role.radiologist, Role.admin)
#: The `window` query parameter: one of the preset names.
WINDOW_PATTERN = "^(" + "|".join(WINDOW_PRESETS) + ")$"

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "DICOM Part 10 files of one study, or one .zip of them",
                    }},
                    "required": ["files"],
                }
            }
        },
    }
}


def _status_url(study_id: str) -> str:
    return f"/v1/studies/{study_id}"


@router.post(
    "",
    status_code=202,
    response_model=UploadAccepted,
    summary="Upload one study (DICOM files or one zip)",
    description="Role: uploader. Multipart form field `files`: DICOM Part 10 instances of one "
    "study, or a single zip of them. Returns 202 with the study id and its status URL; uploading "
    "the same SOP instances again returns the same study and creates nothing new; a SOP Instance "
    "UID already stored with other bytes is refused (409 `instance_conflict`, audited). The body "
    "is streamed to disk; limits in service/README (Threat model and limits).",
    openapi_extra={**UPLOAD_BODY, **roles_doc(*UPLOADERS)},
    responses={**ERRORS, 400: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem},
               415: {"model": Problem}, 422: {"model": Problem}, 429: {"model": Problem},
               503: {"model": Problem}},
)
async def upload_study(
    request: Request,
    response: Response,
    settings: SettingsDep,
    store: StoreDep,
    user: Annotated[User, Depends(require(*UPLOADERS))],
) -> UploadAccepted:
    media, options = media_type(request.headers.get("content-type", ""))
    if media != "multipart/form-data":
        raise intake.UploadError(415, "unsupported_media_type",
                                 "send multipart/form-data with DICOM files in field 'files'")
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise intake.UploadError(400, "bad_multipart",
                                 "the multipart/form-data Content-Type has no usable boundary")
    with request.app.state.upload_slots.hold(str(user.id)), Spool(settings.storage_dir) as spool:
        parts = await spool_multipart(
            request.stream(), boundary, spool, max_part_bytes=settings.max_instance_bytes,
            max_parts=settings.max_instances_per_upload + MAX_FORM_FIELDS,
            max_total_bytes=settings.max_upload_bytes, head=intake.sanitize_head)
        files = [p for p in parts
                 if p.disposition.get("name") == "files" and "filename" in p.disposition]
        if not files:
            raise intake.UploadError(422, "no_files", "the form has no files in field 'files'")
        return await run_in_threadpool(_register_upload, response, settings, store, user, files,
                                       spool)


def _is_zip(part: SpooledPart) -> bool:
    if part.path is None:
        return False
    with part.path.open("rb") as handle:
        return handle.read(4) == intake.ZIP_MAGIC


#: Form fields besides the files an upload may carry (they are ignored).
MAX_FORM_FIELDS = 16


def _register_upload(response: Response, settings: Settings, store: BlobStore, user: User,
                     files: list[SpooledPart], spool: Spool) -> UploadAccepted:
    if any(f.too_large for f in files):
        raise intake.UploadError(413, "too_large", "a file exceeds the limit of "
                                 f"{settings.max_instance_bytes} bytes (MAX_INSTANCE_BYTES)")
    if _is_zip(files[0]):
        if len(files) != 1:
            raise intake.UploadError(422, "mixed_upload",
                                     "send either DICOM files or one zip, not both")
        files = intake.unpack_zip(files[0], spool, settings)
    if len(files) > settings.max_instances_per_upload:
        raise intake.UploadError(413, "too_many_files", f"at most "
                                 f"{settings.max_instances_per_upload} instances per upload")
    headers = []
    for index, part in enumerate(files):
        try:
            headers.append(intake.inspect_file(part, settings))
        except intake.InstanceRejected as error:
            raise intake.UploadError(error.http_status, error.code,
                                     f"file {index + 1}: {error.message}") from None
    study_uids = {h.study_uid for h in headers}
    if len(study_uids) != 1:
        raise intake.UploadError(422, "several_studies", "the files belong to several studies; "
                                 "upload one study per request")
    with session_scope(settings.database_url) as session:
        user = session.merge(user)
        conflicts = intake.find_conflicts(session, headers, user)
    if conflicts:
        index = headers.index(conflicts[0].header)
        raise intake.UploadError(409, "instance_conflict", f"file {index + 1}: "
                                 f"{intake.Conflict.message}; nothing of this upload was stored")
    with session_scope(settings.database_url) as session:
        user = session.merge(user)
        registration = intake.register_instances(session, store, headers, user)
        if registration.conflicts:  # stored concurrently with other bytes since the check above
            raise intake.UploadError(409, "instance_conflict", f"{intake.Conflict.message}; "
                                     "nothing of this upload was stored")
        study = registration.stored[0].study
        result = UploadAccepted(study_id=study.id, state=study.state.value,
                                status_url=_status_url(study.id), instances_received=len(headers),
                                instances_new=sum(1 for s in registration.stored if s.created))
        to_ingest = list(registration.studies_to_ingest)
    for study_id in to_ingest:
        enqueue_and_mark(settings, "ingest", study_id)
    response.headers["Location"] = result.status_url
    return result


def _get_study(session, study_id: str) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise HTTPException(404, detail="no study with this id")
    return study


def _seconds(start, end) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 4)


@router.get(
    "/{study_id}",
    response_model=StudyStatus,
    summary="A study's state, per-stage timings and failure reason",
    description="Roles: uploader, radiologist, admin.",
    openapi_extra=roles_doc(*READERS),
    responses={**ERRORS, 404: {"model": Problem}},
)
def get_study(study_id: str, session: SessionDep,
              _: Annotated[User, Depends(require(*READERS))]) -> StudyStatus:
    study = _get_study(session, study_id)
    draft = session.scalar(select(Draft.id).where(Draft.study_id == study.id))
    end = study.draft_ready_at or study.failed_at
    timings = StageTimings(
        ingest_wait_s=_seconds(study.received_at, study.ingest_started_at),
        ingest_s=_seconds(study.ingest_started_at, study.ingested_at),
        generate_wait_s=_seconds(study.ingested_at, study.generate_started_at),
        generate_s=_seconds(study.generate_started_at, study.draft_ready_at),
        generate_compute_s=study.generate_compute_s,
        generate_batch_size=study.generate_batch_size,
        total_s=_seconds(study.received_at, end),
    )
    return StudyStatus(
        study_id=study.id, state=study.state.value,
        received_at=study.received_at, updated_at=study.updated_at,
        instances=len(study.instances), images=sum(1 for i in study.instances if i.image_sha256),
        timings=timings,
        attempts={"ingest": study.ingest_attempts, "generate": study.generate_attempts},
        failure_code=study.failure_code, failure_reason=study.failure_reason,
        report_url=f"/v1/studies/{study.id}/report" if draft else None,
    )


@router.get(
    "/{study_id}/images/{index}.png",
    summary="One image of a study as PNG, through a window preset",
    description="Roles: radiologist, admin. `index` counts the study's decoded images from 0 in "
    "upload order. Each read is audited (`study.read`).",
    openapi_extra=roles_doc(*CLINICAL),
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"image/png": {}}},
               404: {"model": Problem}, 409: {"model": Problem}},
)
def get_image(
    study_id: str,
    index: int,
    session: SessionDep,
    store: StoreDep,
    user: Annotated[User, Depends(require(*CLINICAL))],
    window: Annotated[str, Query(pattern=WINDOW_PATTERN, description="Window preset")] = "default",
) -> Response:
    study = _get_study(session, study_id)
    images = [i for i in study.instances if i.image_sha256]
    if not images:
        raise HTTPException(
            409, detail=f"the study has no decoded images (state {study.state.value})")
    if not 0 <= index < len(images):
        raise HTTPException(
            404, detail=f"image index out of range: the study has {len(images)} images")
    pixels = store.get_array(images[index].image_sha256)
    access.record_read(session, user, study.id, view="image", index=index, window=window)
    return Response(render_png(pixels.astype("float32"), window), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@router.get(
    "/{study_id}/report",
    response_model=DraftReport,
    summary="The AI draft by section, with bundle id, generation settings and extracted findings",
    description="Roles: radiologist, admin. 409 while the draft does not exist yet. Each read is "
    "audited (`study.read`).",
    openapi_extra=roles_doc(*CLINICAL),
    responses={**ERRORS, 404: {"model": Problem}, 409: {"model": Problem}},
)
def get_report(study_id: str, session: SessionDep,
               user: Annotated[User, Depends(require(*CLINICAL))]) -> DraftReport:
    study = _get_study(session, study_id)
    first_draft = select(Draft).where(Draft.study_id == study.id).order_by(Draft.created_at)
    draft = session.scalar(first_draft)
    if draft is None:
        raise HTTPException(409, detail=f"no draft yet (state {study.state.value})")
    report_id = session.scalar(select(Report.id).where(Report.draft_id == draft.id))
    access.record_read(session, user, study.id, view="draft", report_id=report_id)
    return DraftReport(study_id=study.id, draft_id=draft.id, report_id=report_id,
                       bundle_id=draft.bundle_id, text=draft.text, sections=draft.sections,
                       generation=draft.generation, findings=draft.findings,
                       created_at=draft.created_at)


@router.get(
    "/{study_id}/audit",
    response_model=list[AuditEntry],
    summary="The audit trail of a study (every transition and write, with actor and time)",
    description="Role: admin.",
    openapi_extra=roles_doc(Role.admin),
    responses={**ERRORS, 404: {"model": Problem}},
)
def get_audit(study_id: str, session: SessionDep,
              _: Annotated[User, Depends(require(Role.admin))]) -> list[AuditEntry]:
    _get_study(session, study_id)
    trail = select(AuditEvent).where(AuditEvent.study_id == study_id).order_by(AuditEvent.id)
    return [AuditEntry(at=e.at, actor=e.actor, action=e.action, from_state=e.from_state,
                       to_state=e.to_state, details=e.details or {})
            for e in session.scalars(trail)]

