"""DICOMweb for viewers (PS3.18): QIDO-RS search and WADO-RS retrieval under /dicomweb.

Roles: radiologist, admin, and `viewer` (a machine role for image viewers and PACS that pull from
us; `radreport admin create-key --role viewer`). Logic lives in `qido` and `wado`. Every answer
that carries a study's data is audited as a `study.read` of each study in it
(`service.studies.access`; view "qido-rs <level>", "wado-rs", "wado-rs metadata",
"wado-rs frames", "wado-rs bulkdata", "wado-rs rendered" or "wado-rs thumbnail").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from service.auth.deps import ERRORS, require, roles_doc
from service.core.deps import SessionDep, SettingsDep, StoreDep
from service.core.models import Role, User
from service.dicomweb import frames, qido, wado
from service.studies import access
from service.studies.imaging import WINDOW_PRESETS

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
READERS = (Role.radiologist, Role.admin, Role.viewer)
Reader = Annotated[User, Depends(require(*READERS))]
DICOM_JSON = "application/dicom+json"
STUDY_INSTANCE_UID = "0020000D"
JSON_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS, 200: {"description": "Matches as DICOM JSON", "content": {DICOM_JSON: {}}},
    400: {"description": "A parameter that is not a DICOM attribute, or a malformed value"},
    406: {"description": "Only application/dicom+json is offered"},
}
MULTIPART_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS, 200: {"description": "The instances as stored",
                    "content": {'multipart/related; type="application/dicom"': {}}},
    404: {"description": "Nothing stored under these UIDs"},
    406: {"description": "A transfer syntax other than the stored one or Explicit VR Little "
                 "Endian was asked for"},
    409: {"description": "An instance cannot be decompressed"},
}
QIDO_DESCRIPTION = (
    "Roles: radiologist, admin, viewer. Matching keys by keyword or tag: StudyInstanceUID, "
    "SeriesInstanceUID, SOPInstanceUID, SOPClassUID (UID lists), PatientID, PatientName, "
    "AccessionNumber, StudyDescription, Modality (`*`/`?` wildcards), StudyDate (YYYYMMDD or a "
    "range A-B, -B, A-), ModalitiesInStudy, SeriesNumber, InstanceNumber; `limit` (at most 1000), "
    "`offset`, `includefield` (keywords, tags or `all`). Other DICOM attributes are ignored and "
    "named in a `Warning: 299` header.")


def _base_url(request: Request) -> str:
    """The /dicomweb root that absolute URLs in answers start with (DICOMWEB_PUBLIC_URL)."""
    public = request.app.state.settings.dicomweb_public_url
    return public.rstrip("/") if public else str(request.base_url).rstrip("/") + "/dicomweb"


def _check_json_accept(accept: str | None) -> None:
    media = {media for media, _params in wado.media_ranges(accept)}
    if not {"application/dicom+json", "application/json", "*/*", "application/*"} & media:
        raise wado.RetrieveError(406, "QIDO-RS and metadata here answer application/dicom+json")


def _search(request: Request, session: SessionDep, user: User, level: str, accept: str | None,
            study_uid: str | None = None, series_uid: str | None = None) -> JSONResponse:
    _check_json_accept(accept)
    query = qido.parse(level, list(request.query_params.multi_items()), study_uid=study_uid,
                       series_uid=series_uid)
    results = qido.search(session, query, _base_url(request))
    study_uids = [uid for result in results
                  for uid in result.get(STUDY_INSTANCE_UID, {}).get("Value", [])]
    access.record_reads_by_uid(session, user, study_uids, view=f"qido-rs {level}",
                               results=len(results))
    headers = {}
    if query.ignored:
        headers["Warning"] = (f'299 radreport "not matching keys, ignored: '
                              f'{", ".join(sorted(set(query.ignored)))}"')
    return JSONResponse(results, media_type=DICOM_JSON, headers=headers)


AcceptHeader = Annotated[str | None, Header()]


@router.get("/studies", summary="QIDO-RS: search studies", description=QIDO_DESCRIPTION,
            openapi_extra=roles_doc(*READERS), responses=JSON_RESPONSES)
def search_studies(request: Request, session: SessionDep, user: Reader,
                   accept: AcceptHeader = None) -> JSONResponse:
    return _search(request, session, user, "study", accept)


@router.get("/series", summary="QIDO-RS: search series of all studies",
            description=QIDO_DESCRIPTION, openapi_extra=roles_doc(*READERS),
            responses=JSON_RESPONSES)
def search_series(request: Request, session: SessionDep, user: Reader,
                  accept: AcceptHeader = None) -> JSONResponse:
    return _search(request, session, user, "series", accept)


@router.get("/studies/{study_uid}/series", summary="QIDO-RS: search the series of a study",
            description=QIDO_DESCRIPTION, openapi_extra=roles_doc(*READERS),
            responses=JSON_RESPONSES)
def search_study_series(study_uid: str, request: Request, session: SessionDep, user: Reader,
                        accept: AcceptHeader = None) -> JSONResponse:
    return _search(request, session, user, "series", accept, study_uid)


@router.get("/instances", summary="QIDO-RS: search instances of all studies",
            description=QIDO_DESCRIPTION, openapi_extra=roles_doc(*READERS),
            responses=JSON_RESPONSES)
def search_instances(request: Request, session: SessionDep, user: Reader,
                     accept: AcceptHeader = None) -> JSONResponse:
    return _search(request, session, user, "instance", accept)


@router.get("/studies/{study_uid}/instances", summary="QIDO-RS: search the instances of a study",
            description=QIDO_DESCRIPTION, openapi_extra=roles_doc(*READERS),
            responses=JSON_RESPONSES)
def search_study_instances(study_uid: str, request: Request, session: SessionDep, user: Reader,
                           accept: AcceptHeader = None) -> JSONResponse:
    return _search(request, session, user, "instance", accept, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/instances",
            summary="QIDO-RS: search the instances of a series", description=QIDO_DESCRIPTION,
            openapi_extra=roles_doc(*READERS), responses=JSON_RESPONSES)
def search_series_instances(study_uid: str, series_uid: str, request: Request,
                            session: SessionDep, user: Reader,
                            accept: AcceptHeader = None) -> JSONResponse:
    return _search(request, session, user, "instance", accept, study_uid, series_uid)


# ---------------------------------------------------------------------------- WADO-RS

RETRIEVE_DESCRIPTION = (
    "Roles: radiologist, admin, viewer. The instances as multipart/related; "
    'type="application/dicom", each part naming its transfer syntax: as stored, or decompressed '
    "when transfer-syntax=1.2.840.10008.1.2.1 is asked for; any other is answered 406.")


def _record(session: SessionDep, user: User, rows: list, view: str) -> None:
    """A `study.read` of each study the answer's instances belong to."""
    for study_id in sorted({instance.study_id for _, instance in rows}):
        access.record_read(session, user, study_id, view=view,
                           instances=sum(instance.study_id == study_id for _, instance in rows))


def _retrieve(session: SessionDep, store: StoreDep, user: User, accept: str | None,
              study_uid: str, series_uid: str | None = None,
              sop_uid: str | None = None) -> StreamingResponse:
    rows = wado.find(session, study_uid, series_uid, sop_uid)
    syntax = wado.check_accept_dicom(accept, {row.transfer_syntax_uid for row, _ in rows})
    body, content_type = wado.multipart(store, rows, syntax)
    _record(session, user, rows, "wado-rs")
    return StreamingResponse(body, media_type=content_type)


def _metadata(request: Request, session: SessionDep, user: User, accept: str | None,
              study_uid: str, series_uid: str | None = None,
              sop_uid: str | None = None) -> JSONResponse:
    _check_json_accept(accept)
    rows = wado.find(session, study_uid, series_uid, sop_uid)
    _record(session, user, rows, "wado-rs metadata")
    return JSONResponse(wado.metadata(rows, _base_url(request)), media_type=DICOM_JSON)


@router.get("/studies/{study_uid}", summary="WADO-RS: retrieve a study",
            description=RETRIEVE_DESCRIPTION, openapi_extra=roles_doc(*READERS),
            response_class=Response, responses=MULTIPART_RESPONSES)
def retrieve_study(study_uid: str, session: SessionDep, store: StoreDep, user: Reader,
                   accept: AcceptHeader = None) -> StreamingResponse:
    return _retrieve(session, store, user, accept, study_uid)


@router.get("/studies/{study_uid}/metadata", summary="WADO-RS: metadata of a study",
            description="Roles: radiologist, admin, viewer. DICOM JSON of every instance, "
            "without pixel data.", openapi_extra=roles_doc(*READERS), responses=JSON_RESPONSES)
def study_metadata(study_uid: str, request: Request, session: SessionDep, user: Reader,
                   accept: AcceptHeader = None) -> JSONResponse:
    return _metadata(request, session, user, accept, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}", summary="WADO-RS: retrieve a series",
            description=RETRIEVE_DESCRIPTION, openapi_extra=roles_doc(*READERS),
            response_class=Response, responses=MULTIPART_RESPONSES)
def retrieve_series(study_uid: str, series_uid: str, session: SessionDep, store: StoreDep,
                    user: Reader, accept: AcceptHeader = None) -> StreamingResponse:
    return _retrieve(session, store, user, accept, study_uid, series_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata",
            summary="WADO-RS: metadata of a series", description="Roles: radiologist, admin, "
            "viewer.", openapi_extra=roles_doc(*READERS), responses=JSON_RESPONSES)
def series_metadata(study_uid: str, series_uid: str, request: Request, session: SessionDep,
                    user: Reader, accept: AcceptHeader = None) -> JSONResponse:
    return _metadata(request, session, user, accept, study_uid, series_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
            summary="WADO-RS: retrieve an instance", description=RETRIEVE_DESCRIPTION,
            openapi_extra=roles_doc(*READERS), response_class=Response,
            responses=MULTIPART_RESPONSES)
def retrieve_instance(study_uid: str, series_uid: str, sop_uid: str, session: SessionDep,
                      store: StoreDep, user: Reader,
                      accept: AcceptHeader = None) -> StreamingResponse:
    return _retrieve(session, store, user, accept, study_uid, series_uid, sop_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
            summary="WADO-RS: metadata of an instance", description="Roles: radiologist, admin, "
            "viewer.", openapi_extra=roles_doc(*READERS), responses=JSON_RESPONSES)
def instance_metadata(study_uid: str, series_uid: str, sop_uid: str, request: Request,
                      session: SessionDep, user: Reader,
                      accept: AcceptHeader = None) -> JSONResponse:
    return _metadata(request, session, user, accept, study_uid, series_uid, sop_uid)


RENDERED_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}}},
    400: {"description": "A malformed window or viewport"},
    404: {"description": "Nothing stored under these UIDs"},
    406: {"description": "Neither image/jpeg nor image/png accepted"}}
Viewport = Annotated[str | None, Query(
    description="vw,vh: scale the image to fit this many pixels, aspect ratio kept")]


async def _rendered(session: SessionDep, store: StoreDep, settings: SettingsDep, user: User,
                    accept: str | None, rows: list, window: str, viewport: str | None,
                    view: str) -> Response:
    media_type = wado.rendered_type(accept)
    fit = wado.parse_viewport(viewport)
    shown = wado.representative(rows)
    image = await run_in_threadpool(wado.render, store, shown[1], window, media_type,
                                    settings.image_cache_size, fit)
    _record(session, user, [shown], view)
    return Response(image, media_type=media_type,
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
            summary="WADO-RS: an instance rendered as JPEG or PNG",
            description="Roles: radiologist, admin, viewer. image/jpeg unless the Accept header "
            "asks for image/png first; `window` is a preset of the review UI (default, lung, "
            "mediastinum, bone, soft_tissue) or PS3.18's `center,width[,function]` in the "
            "image's modality values (function linear, linear_exact or sigmoid); `viewport` "
            "scales it to fit vw,vh.",
            openapi_extra=roles_doc(*READERS), response_class=Response,
            responses=RENDERED_RESPONSES)
async def rendered_instance(
    study_uid: str, series_uid: str, sop_uid: str, session: SessionDep, store: StoreDep,
    settings: SettingsDep, user: Reader, accept: AcceptHeader = None,
    window: Annotated[str, Query(description="Window preset (" + ", ".join(WINDOW_PRESETS)
                                 + ") or center,width[,function]")] = "default",
    viewport: Viewport = None,
) -> Response:
    rows = wado.find(session, study_uid, series_uid, sop_uid)
    return await _rendered(session, store, settings, user, accept, rows, window, viewport,
                           "wado-rs rendered")


THUMBNAIL_DESCRIPTION = (
    "Roles: radiologist, admin, viewer. A small JPEG (PNG when asked first) of the instance, or "
    "of a study's or series' frontal view (the one the model reads), default window; "
    "`viewport` vw,vh (default 128,128).")


@router.get("/studies/{study_uid}/thumbnail", summary="WADO-RS: thumbnail of a study",
            description=THUMBNAIL_DESCRIPTION, openapi_extra=roles_doc(*READERS),
            response_class=Response, responses=RENDERED_RESPONSES)
async def study_thumbnail(study_uid: str, session: SessionDep, store: StoreDep,
                          settings: SettingsDep, user: Reader, accept: AcceptHeader = None,
                          viewport: Viewport = "128,128") -> Response:
    rows = wado.find(session, study_uid)
    return await _rendered(session, store, settings, user, accept, rows, "default", viewport,
                           "wado-rs thumbnail")


@router.get("/studies/{study_uid}/series/{series_uid}/thumbnail",
            summary="WADO-RS: thumbnail of a series", description=THUMBNAIL_DESCRIPTION,
            openapi_extra=roles_doc(*READERS), response_class=Response,
            responses=RENDERED_RESPONSES)
async def series_thumbnail(study_uid: str, series_uid: str, session: SessionDep,
                           store: StoreDep, settings: SettingsDep, user: Reader,
                           accept: AcceptHeader = None,
                           viewport: Viewport = "128,128") -> Response:
    rows = wado.find(session, study_uid, series_uid)
    return await _rendered(session, store, settings, user, accept, rows, "default", viewport,
                           "wado-rs thumbnail")


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/thumbnail",
            summary="WADO-RS: thumbnail of an instance", description=THUMBNAIL_DESCRIPTION,
            openapi_extra=roles_doc(*READERS), response_class=Response,
            responses=RENDERED_RESPONSES)
async def instance_thumbnail(study_uid: str, series_uid: str, sop_uid: str,
                             session: SessionDep, store: StoreDep, settings: SettingsDep,
                             user: Reader, accept: AcceptHeader = None,
                             viewport: Viewport = "128,128") -> Response:
    rows = wado.find(session, study_uid, series_uid, sop_uid)
    return await _rendered(session, store, settings, user, accept, rows, "default", viewport,
                           "wado-rs thumbnail")


FRAME_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS, 200: {"description": "The frames, one part each",
                    "content": {'multipart/related; type="application/octet-stream"': {},
                                'multipart/related; type="image/jls"': {}}},
    400: {"description": "A malformed frame list or tag"},
    404: {"description": "Nothing stored under these UIDs, or no such frame or value"},
    406: {"description": "A media type or transfer syntax these frames are not offered in"},
    409: {"description": "The stored pixel data cannot be read or decoded"},
}
FRAMES_DESCRIPTION = (
    "Roles: radiologist, admin, viewer. Each frame as a part of multipart/related: as stored "
    "for `transfer-syntax=*` (compressed frames as image/jpeg, image/jls, image/jp2, image/jphc "
    'or image/dicom-rle); for type="application/octet-stream" without a transfer syntax, '
    "uncompressed little endian (compressed grayscale frames are decoded). A bare media type "
    "(application/octet-stream, image/jls, ...) instead of multipart/related asks for one part.")


async def _pixel_parts(session: SessionDep, store: StoreDep, user: User, accept: str | None,
                       ids: tuple[str, str, str], view: str,
                       read: Callable[[bytes, str | None], frames.Answer]) -> Response:
    rows = wado.find(session, *ids)
    [(_row, instance)] = rows
    answer = await run_in_threadpool(read, store.get(instance.sha256), accept)
    body, content_type = answer.encode()
    _record(session, user, rows, view)
    # A stored instance never changes: the viewer's own cache may keep it (as /rendered).
    return Response(body, media_type=content_type,
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}",
            summary="WADO-RS: frames of an instance", description=FRAMES_DESCRIPTION,
            openapi_extra=roles_doc(*READERS), response_class=Response,
            responses=FRAME_RESPONSES)
async def instance_frames(study_uid: str, series_uid: str, sop_uid: str, frame_list: str,
                          session: SessionDep, store: StoreDep, user: Reader,
                          accept: AcceptHeader = None) -> Response:
    numbers = frames.parse_frame_list(frame_list)
    return await _pixel_parts(session, store, user, accept, (study_uid, series_uid, sop_uid),
                              "wado-rs frames",
                              lambda data, accept: frames.frames(data, numbers, accept))


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{tag}",
            summary="WADO-RS: a bulk data value of an instance (its metadata's BulkDataURI)",
            description="Roles: radiologist, admin, viewer. Pixel Data (7FE00010) as all its "
            "frames, by the rules of /frames; any other large binary value the metadata leaves "
            "out as one application/octet-stream part.", openapi_extra=roles_doc(*READERS),
            response_class=Response, responses=FRAME_RESPONSES)
async def instance_bulkdata(study_uid: str, series_uid: str, sop_uid: str, tag: str,
                            session: SessionDep, store: StoreDep, user: Reader,
                            accept: AcceptHeader = None) -> Response:
    return await _pixel_parts(session, store, user, accept, (study_uid, series_uid, sop_uid),
                              "wado-rs bulkdata",
                              lambda data, accept: frames.bulkdata(data, tag, accept))
