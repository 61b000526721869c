"""DICOMweb STOW-RS routes: POST /dicomweb/studies and /dicomweb/studies/{study}."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.auth.deps import ERRORS, require, roles_doc
from service.core.config import Settings
from service.core.db import session_scope
from service.core.deps import SettingsDep, StoreDep
from service.core.models import Role, User
from service.core.spool import Spool, SpooledPart, spool_multipart
from service.core.storage import BlobStore
from service.dicomweb import stow
from service.studies import intake
from service.studies.reconcile import enqueue_and_mark

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
DICOM_JSON = "application/dicom+json"
#: FailureReason of an instance whose SOP Instance UID is stored with other bytes (the A900 class,
#: "data set does not match": the stored instance is kept, the sender must use a new UID).
CONFLICT = 0xA900

STOW_DOC = {
    "requestBody": {
        "required": True,
        "content": {'multipart/related; type="application/dicom"': {
            "schema": {"type": "string", "format": "binary"}}},
    },
    **roles_doc(Role.uploader),
}
STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"description": "All instances stored", "content": {DICOM_JSON: {}}},
    202: {"description": "Some instances stored; see FailedSOPSequence / WarningReason",
          "content": {DICOM_JSON: {}}},
    400: {"description": "Malformed multipart body, or one cut before its closing boundary"},
    409: {"description": "No instance stored; see FailedSOPSequence", "content": {DICOM_JSON: {}}},
    413: {"description": "Body or instance count beyond the limits"},
    415: {"description": "Not multipart/related with type application/dicom"},
    429: {"description": "This API key has too many uploads in progress (Retry-After)"},
    503: {"description": "Too many uploads in progress (Retry-After)"},
}


async def _store(request: Request, settings: Settings, store: BlobStore, user: User,
                 study_uid: str | None) -> JSONResponse:
    boundary = stow.boundary_of(request.headers.get("content-type"))
    with request.app.state.upload_slots.hold(str(user.id)), Spool(settings.storage_dir) as files:
        parts = await spool_multipart(
            request.stream(), boundary, files, max_part_bytes=settings.max_instance_bytes,
            max_parts=settings.max_instances_per_upload, max_total_bytes=settings.max_upload_bytes,
            head=intake.sanitize_head)
        return await run_in_threadpool(_register, settings, store, user, parts, study_uid)


def _register(settings: Settings, store: BlobStore, user: User, parts: list[SpooledPart],
              study_uid: str | None) -> JSONResponse:
    failed: list[dict[str, Any]] = []
    headers: list[intake.InstanceHeader] = []
    for part in parts:
        if part.content_type not in ("", stow.DICOM_MEDIA_TYPE):
            failed.append({"reason": 0xC000})
            continue
        try:
            header = intake.inspect_file(part, settings)
        except intake.InstanceRejected as error:
            failed.append({"reason": error.failure_reason})
            continue
        if study_uid is not None and header.received_study_uid != study_uid:
            # PS3.18 10.5.3: an instance of another study than the target resource is not stored.
            failed.append({"sop_class_uid": header.sop_class_uid, "sop_uid": header.sop_uid,
                           "reason": 0xA900})
            continue
        headers.append(header)
    referenced: list[dict[str, Any]] = []
    study_ids: list[str] = []
    warnings = 0
    to_ingest: list[str] = []
    if headers:
        with session_scope(settings.database_url) as session:
            user = session.merge(user)
            registration = intake.register_instances(session, store, headers, user)
            for item in registration.stored:
                warning = 0xB000 if item.warning else None
                warnings += warning is not None
                referenced.append({"sop_class_uid": item.header.sop_class_uid,
                                   "sop_uid": item.header.sop_uid, "warning": warning})
                if item.study.id not in study_ids:
                    study_ids.append(item.study.id)
            for conflict in registration.conflicts:
                failed.append({"sop_class_uid": conflict.header.sop_class_uid,
                               "sop_uid": conflict.header.sop_uid, "reason": CONFLICT})
            to_ingest = list(registration.studies_to_ingest)
    for study_id in to_ingest:
        enqueue_and_mark(settings, "ingest", study_id)
    body = stow.store_response(referenced, failed, retrieve_url=None)
    code = stow.status_code_for(len(referenced), len(failed), warnings)
    status_urls = ", ".join(f"/v1/studies/{sid}" for sid in study_ids)
    response_headers = {"X-Study-Status": status_urls} if study_ids else {}
    return JSONResponse(body, status_code=code, media_type=DICOM_JSON, headers=response_headers)


@router.post(
    "/studies",
    summary="STOW-RS: store instances of any studies",
    description="Role: uploader. PS3.18 Store Instances: multipart/related; "
    "type=\"application/dicom\" (quoted or not). The response is the Store Instances Response in "
    "DICOM JSON. The `X-Study-Status` header lists the status URLs of the studies touched.",
    openapi_extra=STOW_DOC,
    responses=STOW_RESPONSES,
)
async def stow_any(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    user: Annotated[User, Depends(require(Role.uploader))],
) -> JSONResponse:
    return await _store(request, settings, store, user, None)


@router.post(
    "/studies/{study_uid}",
    summary="STOW-RS: store instances of one study",
    description="Role: uploader. As POST /dicomweb/studies, but instances of another "
    "StudyInstanceUID are refused (FailedSOPSequence, reason 0xA900).",
    openapi_extra=STOW_DOC,
    responses=STOW_RESPONSES,
)
async def stow_study(
    study_uid: str,
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    user: Annotated[User, Depends(require(Role.uploader))],
) -> JSONResponse:
    return await _store(request, settings, store, user, study_uid)
