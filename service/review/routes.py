"""Routes of radiologist review: worklist, report, claim, edit, sign, amend, reject, history, FHIR.

Writes need role radiologist; reads (worklist, report, history, FHIR, signature check) radiologist
or admin (auditors). Edits, signatures and amendments say which version they are based on, by
`If-Match: "<version>"` or the body field `version`; a stale one gets 409 with the current version.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.auth.accounts import Lockout
from service.auth.deps import ERRORS, PasswordAttempt, require, roles_doc
from service.core.db import session_scope
from service.core.deps import ReportId, SessionDep, SettingsDep
from service.core.errors import Problem
from service.core.models import (
    Draft,
    Report,
    ReportStatus,
    ReportVersion,
    Role,
    Signature,
    Study,
    User,
)
from service.dicomweb import outbox
from service.quality import scores
from service.review import fhir, publish, workflow

router = APIRouter(prefix="/v1", tags=["review"])

WRITERS = (Role.radiologist,)
READERS = (Role.radiologist, Role.admin)
TEXT_LIMIT = 20000
NO_NUL = r"^[^\x00]*$"


# --------------------------------------------------------------------------- bodies


class VersionView(BaseModel):
    """One version of a report's text."""

    version: int
    text: str
    sections: dict[str, Any]
    author: str
    created_at: dt.datetime
    content_sha256: str


class SignatureView(BaseModel):
    """An electronic signature as shown with the report (21 CFR 11.50: name, time, meaning)."""

    id: int
    version: int
    kind: str = Field(description="`sign` or `amendment`.")
    signer: str
    meaning: str
    meaning_text: str
    signed_at: dt.datetime
    content_sha256: str
    amends_signature_id: int | None
    reason: str | None
    seal: str


class DraftSummary(BaseModel):
    """The AI draft a report started from (never changed)."""

    draft_id: str
    bundle_id: str
    created_at: dt.datetime
    text: str


class ReportView(BaseModel):
    """A report at its current version, with its claim, draft and signatures."""

    report_id: str
    study_id: str
    study_uid: str
    status: str = Field(description="preliminary, final, amended or rejected.")
    study_state: str
    priority: int
    claimed_by: str | None
    claimed_at: dt.datetime | None
    current: VersionView
    draft: DraftSummary
    signatures: list[SignatureView]
    rejected_reason: str | None
    triage: list[str] = Field(description="Findings of the AI draft that raised the priority "
                              "(TRIAGE_FINDINGS); empty when none did.")
    created_at: dt.datetime
    updated_at: dt.datetime | None


class PriorView(BaseModel):
    """An earlier study of the same patient, with its report as it stands."""

    report_id: str
    study_id: str
    study_uid: str
    study_date: str | None = Field(description="YYYYMMDD, from the study's DICOM header.")
    status: str
    text: str = Field(description="The report's current text.")
    version: int
    signed_by: str | None
    signed_at: dt.datetime | None


class Priors(BaseModel):
    """The patient's earlier studies that have a report here, newest first."""

    report_id: str
    items: list[PriorView]


class WorklistRow(BaseModel):
    """One row of the worklist."""

    report_id: str
    study_id: str
    study_uid: str
    status: str
    study_state: str
    priority: int
    claimed_by: str | None
    claimed_at: dt.datetime | None
    version: int
    bundle_id: str
    draft_created_at: dt.datetime
    age_s: float = Field(description="Seconds since the draft was made.")
    updated_at: dt.datetime | None
    triage: list[str] = Field(description="Findings of the AI draft that raised the priority.")


class Worklist(BaseModel):
    """A page of the worklist and the total matching."""

    total: int
    limit: int
    offset: int
    items: list[WorklistRow]


class EditRequest(BaseModel):
    """A new text for the report, based on a version."""

    text: str = Field(min_length=1, max_length=TEXT_LIMIT, pattern=NO_NUL)
    version: int | None = Field(
        None, description="The version this edit is based on (or send If-Match).")


class SignRequest(BaseModel):
    """A signature: the signer's password again and what the signature means."""

    password: str = Field(min_length=1, max_length=1000,
                          description="The signer's own password (re-authentication).")
    meaning: workflow.SignatureMeaning = workflow.SignatureMeaning.approval
    version: int | None = Field(None, description="The version being signed (or send If-Match).")


class AmendRequest(SignRequest):
    """A correction of a signed report, signed at once."""

    text: str = Field(min_length=1, max_length=TEXT_LIMIT, pattern=NO_NUL)
    reason: str = Field(min_length=1, max_length=2000, pattern=NO_NUL,
                        description="Why the signed report is corrected.")


class RejectRequest(BaseModel):
    """Why the AI draft is rejected."""

    reason: str = Field(min_length=1, max_length=2000, pattern=NO_NUL)


class PriorityRequest(BaseModel):
    """A worklist priority (higher first; e.g. 0 routine, 10 urgent, 20 STAT)."""

    priority: int = Field(ge=-100, le=100)


class Conflict(BaseModel):
    """409 on a stale version: the message and the current version to merge with."""

    detail: str
    code: str
    current: VersionView | None = None


class HistoryEvent(BaseModel):
    """One audit event of the report or its study."""

    at: dt.datetime
    actor: str
    action: str
    version: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    details: dict[str, Any]


class HistoryVersion(VersionView):
    """A version with what changed from the one before (unified diff)."""

    diff: str | None = Field(
        description="Unified diff from the previous version (null for version 1).")
    signed: bool


class History(BaseModel):
    """Every version and every event, oldest first (append-only)."""

    report_id: str
    status: str
    versions: list[HistoryVersion]
    events: list[HistoryEvent]


class SignatureCheckView(BaseModel):
    """Whether a signature still holds."""

    signature_id: int
    version: int
    signer: str
    valid: bool
    problems: list[str]


class Verification(BaseModel):
    """The signatures of a report checked against the key, the hash chain and the stored text."""

    report_id: str
    valid: bool
    signatures: list[SignatureCheckView]


# --------------------------------------------------------------------------- helpers


def _version_view(version: ReportVersion) -> VersionView:
    return VersionView(**workflow.version_fields(version))


def _signature_view(signature: Signature) -> SignatureView:
    return SignatureView(id=signature.id, version=signature.version, kind=signature.kind,
                         signer=signature.signer_name, meaning=signature.meaning,
                         meaning_text=workflow.MEANING_TEXT[workflow.SignatureMeaning(signature.meaning)],
                         signed_at=signature.signed_at, content_sha256=signature.content_sha256,
                         amends_signature_id=signature.amends_signature_id, reason=signature.reason,
                         seal=signature.seal)


def _user_name(session, user_id: int | None) -> str | None:
    return None if user_id is None else session.get(User, user_id).name


def report_view(session, report: Report) -> ReportView:
    """The API view of a report at its current version."""
    study = session.get(Study, report.study_id)
    draft = session.get(Draft, report.draft_id)
    return ReportView(
        report_id=report.id, study_id=study.id, study_uid=study.study_uid,
        status=report.status.value, study_state=study.state.value, priority=report.priority,
        claimed_by=_user_name(session, report.claimed_by), claimed_at=report.claimed_at,
        current=_version_view(workflow.current_version(session, report)),
        draft=DraftSummary(draft_id=draft.id, bundle_id=draft.bundle_id,
                           created_at=draft.created_at, text=draft.text),
        signatures=[_signature_view(s) for s in workflow.signatures_of(session, report.id)],
        rejected_reason=report.rejected_reason, triage=report.triage or [],
        created_at=report.created_at, updated_at=report.updated_at,
    )


def _respond(session, report: Report, response: Response) -> ReportView:
    response.headers["ETag"] = f'"{report.current_version}"'
    return report_view(session, report)


def parse_if_match(value: str | None) -> int | None:
    """The version named by an If-Match header (`"3"`, `W/"3"` or `3`); None when absent."""
    if value is None or not value.strip():
        return None
    token = value.split(",")[0].strip().removeprefix("W/").strip('"')
    try:
        return int(token)
    except ValueError:
        message = f"If-Match must name a report version such as \"3\", not {value!r}"
        raise HTTPException(400, detail=message) from None


def _base_version(body_version: int | None, if_match: str | None) -> int | None:
    header = parse_if_match(if_match)
    if header is not None and body_version is not None and header != body_version:
        raise HTTPException(
            400, detail=f"If-Match names version {header} but the body names {body_version}")
    return header if header is not None else body_version


REPORT_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 404: {"model": Problem}}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **REPORT_ERRORS,
    409: {"model": Conflict,
          "description": "Stale version (with the current one), not claimed, or signed/rejected"},
    428: {"model": Problem, "description": "No If-Match header and no `version` field"},
}
IfMatch = Annotated[
    str | None, Header(description='The version the change is based on, e.g. "3" (the ETag).')]
#: The signed-in user of a route open to radiologists and admins (auditors).
Reader = Annotated[User, Depends(require(*READERS))]
#: The signed-in radiologist of a route that changes a report.
Writer = Annotated[User, Depends(require(*WRITERS))]


# --------------------------------------------------------------------------- routes


@router.get(
    "/worklist",
    response_model=Worklist,
    summary="The worklist: reports filtered by status, assignee, priority and age; sorted; paged",
    description="Roles: radiologist, admin. Default: open (preliminary) reports, highest priority "
    "then oldest first. Sorts: priority, age (oldest first), updated (newest first), status, "
    "assignee (unclaimed first).",
    openapi_extra=roles_doc(*READERS),
    responses=ERRORS,
)
def get_worklist(
    session: SessionDep,
    user: Reader,
    status: Annotated[list[ReportStatus] | None, Query(
        description="Report statuses (repeat); default preliminary.")] = None,
    assignee: Annotated[str | None, Query(
        max_length=200, pattern=NO_NUL, description="`me`, `none` or a user name.")] = None,
    min_priority: Annotated[int | None, Query(ge=-100, le=100)] = None,
    min_age_s: Annotated[float | None, Query(
        ge=0, le=1e9, description="Drafts at least this old.")] = None,
    max_age_s: Annotated[float | None, Query(
        ge=0, le=1e9, description="Drafts at most this old.")] = None,
    bundle_id: Annotated[str | None, Query(
        max_length=200, pattern=NO_NUL, description="Drafts of this model bundle.")] = None,
    sort: workflow.WorklistSort = workflow.WorklistSort.priority,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Worklist:
    now = dt.datetime.now(dt.UTC)
    items, total = workflow.worklist(
        session, user=user, statuses=status, assignee=assignee, min_priority=min_priority,
        created_before=now - dt.timedelta(seconds=min_age_s) if min_age_s is not None else None,
        created_after=now - dt.timedelta(seconds=max_age_s) if max_age_s is not None else None,
        bundle_id=bundle_id, sort=sort, limit=limit, offset=offset,
    )
    rows = [WorklistRow(report_id=i.report.id, study_id=i.study.id, study_uid=i.study.study_uid,
                        status=i.report.status.value, study_state=i.study.state.value,
                        priority=i.report.priority, claimed_by=i.claimed_by,
                        claimed_at=i.report.claimed_at, version=i.report.current_version,
                        bundle_id=i.draft.bundle_id, draft_created_at=i.draft.created_at,
                        age_s=round((now - i.draft.created_at).total_seconds(), 3),
                        updated_at=i.report.updated_at, triage=i.report.triage or [])
            for i in items]
    return Worklist(total=total, limit=limit, offset=offset, items=rows)


@router.get(
    "/reports/{report_id}",
    response_model=ReportView,
    summary="A report at its current version (ETag = version)",
    description="Roles: radiologist, admin.",
    openapi_extra=roles_doc(*READERS),
    responses=REPORT_ERRORS,
)
def get_report(report_id: ReportId, session: SessionDep, response: Response,
               user: Reader) -> ReportView:
    report = workflow.get_report(session, report_id)
    workflow.record_read(session, report, user, "report")
    return _respond(session, report, response)


@router.post(
    "/reports/{report_id}/claim",
    response_model=ReportView,
    summary="Claim a preliminary report for review",
    description="Role: radiologist. Idempotent for the holder; 409 when another radiologist holds "
    "it, unless their claim is older than CLAIM_TTL_S (then it is taken over, and the audit says "
    "from whom).",
    openapi_extra=roles_doc(*WRITERS),
    responses=WRITE_ERRORS,
)
def claim_report(report_id: ReportId, session: SessionDep, settings: SettingsDep,
                 response: Response, user: Writer) -> ReportView:
    report = workflow.claim(session, report_id, user, claim_ttl_s=settings.claim_ttl_s)
    return _respond(session, report, response)


@router.post(
    "/reports/{report_id}/release",
    response_model=ReportView,
    summary="Release a claimed report",
    description="Role: radiologist (the holder). Edits stay; the report returns to the worklist.",
    openapi_extra=roles_doc(*WRITERS),
    responses=WRITE_ERRORS,
)
def release_report(report_id: ReportId, session: SessionDep, response: Response,
                   user: Writer) -> ReportView:
    return _respond(session, workflow.release(session, report_id, user), response)


@router.put(
    "/reports/{report_id}",
    response_model=ReportView,
    summary="Edit a claimed report: a new version",
    description="Role: radiologist (the holder). Send If-Match: \"<version>\" or `version`; 409 "
    "with the current version when it is stale, 428 without either. A signed report refuses edits "
    "(409 report_locked).",
    openapi_extra=roles_doc(*WRITERS),
    responses=WRITE_ERRORS,
)
def edit_report(report_id: ReportId, body: EditRequest, session: SessionDep, response: Response,
                user: Writer, if_match: IfMatch = None) -> ReportView:
    base = _base_version(body.version, if_match)
    workflow.edit(session, report_id, user, body.text, base)
    return _respond(session, workflow.get_report(session, report_id), response)


#: Answers of the routes that re-ask the password.
REAUTH_ERRORS: dict[int | str, dict] = {
    401: {"model": Problem, "description": "Bad token or wrong password"},
    429: {"model": Problem, "description": "Account locked after LOGIN_MAX_FAILURES wrong "
          "passwords, or too many attempts from this client (AUTH_ATTEMPTS_PER_MINUTE)"},
    503: {"model": Problem, "description": "Too many password checks at once"},
}


@router.post(
    "/reports/{report_id}/sign",
    response_model=ReportView,
    summary="Sign the current version (e-signature)",
    description="Role: radiologist (the holder). Re-enter your password; choose the meaning. Binds "
    "signer, meaning, server time and the SHA-256 of the text in a sealed signature; the report "
    "becomes final and immutable, and its AI draft is scored against the signed text. "
    "The signed report goes to the PACS as a VERIFIED DICOM SR (and to FHIR) through the "
    "outbox when one is configured. 401 code reauthentication_failed on a wrong password "
    "(audited).",
    openapi_extra=roles_doc(*WRITERS),
    responses={**WRITE_ERRORS, **REAUTH_ERRORS},
)
def sign_report(report_id: ReportId, body: SignRequest, session: SessionDep,
                settings: SettingsDep, response: Response, user: Writer, _: PasswordAttempt,
                if_match: IfMatch = None) -> ReportView:
    base = _base_version(body.version, if_match)
    workflow.sign(session, report_id, user, password=body.password, meaning=body.meaning,
                  base_version=base, key=workflow.signing_key(settings),
                  lockout=Lockout.of(settings))
    _publish(session, settings, report_id, user)
    _score_after_signing(settings, report_id)
    return _respond(session, workflow.get_report(session, report_id), response)


def _publish(session, settings, report_id: str, user: User) -> None:
    """Queue the report's new state (SR, FHIR, HL7) in the change's transaction, commit, send."""
    report = workflow.get_report(session, report_id)
    publish.publish(session, settings, report, actor=user.name, user_id=user.id)
    session.commit()
    outbox.kick(settings, report.study_id)


def _score_after_signing(settings, report_id: str) -> None:
    """Score the draft in its own transaction, so a scoring fault never undoes a signature.

    A draft left unscored here is scored later by GET /v1/quality.
    """
    try:
        with session_scope(settings.database_url) as scoring:
            scores.score_report(scoring, report_id)
    except Exception as error:
        scores.log.warning("scoring the draft of a signed report failed (%s); it will be "
                           "backfilled", type(error).__name__)


@router.post(
    "/reports/{report_id}/amend",
    response_model=ReportView,
    summary="Amend a signed report: a corrected version, signed, "
    "referencing the signature it corrects",
    description="Role: radiologist. Needs the reason, your password and the version it corrects "
    "(If-Match or `version`). The report's status becomes amended; earlier versions and signatures "
    "stay. The amendment goes to the PACS as a new VERIFIED DICOM SR whose predecessor is "
    "the previous signed one.",
    openapi_extra=roles_doc(*WRITERS),
    responses={**WRITE_ERRORS, **REAUTH_ERRORS},
)
def amend_report(report_id: ReportId, body: AmendRequest, session: SessionDep,
                 settings: SettingsDep, response: Response, user: Writer, _: PasswordAttempt,
                 if_match: IfMatch = None) -> ReportView:
    base = _base_version(body.version, if_match)
    workflow.amend(session, report_id, user, text=body.text, reason=body.reason,
                   password=body.password, meaning=body.meaning, base_version=base,
                   key=workflow.signing_key(settings), lockout=Lockout.of(settings))
    _publish(session, settings, report_id, user)
    return _respond(session, workflow.get_report(session, report_id), response)


@router.post(
    "/reports/{report_id}/reject",
    response_model=ReportView,
    summary="Reject the AI draft with a reason",
    description="Role: radiologist (the holder). The report is closed as rejected (FHIR "
    "cancelled).",
    openapi_extra=roles_doc(*WRITERS),
    responses=WRITE_ERRORS,
)
def reject_report(report_id: ReportId, body: RejectRequest, session: SessionDep,
                  settings: SettingsDep, response: Response, user: Writer) -> ReportView:
    workflow.reject(session, report_id, user, body.reason)
    _publish(session, settings, report_id, user)  # withdraws the draft sent (FHIR, HL7)
    return _respond(session, workflow.get_report(session, report_id), response)


@router.post(
    "/reports/{report_id}/priority",
    response_model=ReportView,
    summary="Set an open report's worklist priority",
    description="Role: radiologist.",
    openapi_extra=roles_doc(*WRITERS),
    responses=WRITE_ERRORS,
)
def prioritize_report(report_id: ReportId, body: PriorityRequest, session: SessionDep,
                      response: Response, user: Writer) -> ReportView:
    report = workflow.set_priority(session, report_id, user, body.priority)
    return _respond(session, report, response)


@router.get(
    "/reports/{report_id}/history",
    response_model=History,
    summary="Every version (with diffs) and every event (who, when, what), oldest first",
    description="Roles: radiologist, admin. Append-only: versions and events are never changed or "
    "deleted. Reads of the report (GET report, history, FHIR) are audited too and listed with "
    "`reads=true`.",
    openapi_extra=roles_doc(*READERS),
    responses=REPORT_ERRORS,
)
def get_history(
    report_id: ReportId,
    session: SessionDep,
    user: Reader,
    reads: Annotated[bool, Query(
        description="Also list who read the report (report.read events).")] = False,
) -> History:
    report, versions, events = workflow.history(session, report_id, include_reads=reads)
    workflow.record_read(session, report, user, "history")
    signed = {s.version for s in workflow.signatures_of(session, report.id)}
    out_versions = []
    for i, version in enumerate(versions):
        diff = None if i == 0 else workflow.unified_diff(
            versions[i - 1].text, version.text, f"version {versions[i - 1].version}",
            f"version {version.version}")
        out_versions.append(HistoryVersion(**_version_view(version).model_dump(), diff=diff,
                                           signed=version.version in signed))
    out_events = [HistoryEvent(at=e.at, actor=e.actor, action=e.action,
                               version=(e.details or {}).get("version"), from_state=e.from_state,
                               to_state=e.to_state, details=e.details or {})
                  for e in events]
    return History(report_id=report.id, status=report.status.value, versions=out_versions,
                   events=out_events)


@router.get(
    "/reports/{report_id}/priors",
    response_model=Priors,
    summary="The patient's earlier studies with their reports, for comparison",
    description="Roles: radiologist, admin. Matched on the Patient ID and Issuer of Patient ID "
    f"of the study's DICOM headers, up to this study's date, newest first, at most "
    f"{workflow.MAX_PRIORS}. Each prior report listed is audited as read (view `prior`).",
    openapi_extra=roles_doc(*READERS),
    responses=REPORT_ERRORS,
)
def get_priors(report_id: ReportId, session: SessionDep, user: Reader) -> Priors:
    report = workflow.get_report(session, report_id)
    items = []
    for prior in workflow.priors(session, report):
        version = workflow.current_version(session, prior.report)
        signatures = workflow.signatures_of(session, prior.report.id)
        last = signatures[-1] if signatures else None
        items.append(PriorView(
            report_id=prior.report.id, study_id=prior.report.study_id, study_uid=prior.study_uid,
            study_date=prior.study_date, status=prior.report.status.value, text=version.text,
            version=version.version, signed_by=last.signer_name if last else None,
            signed_at=last.signed_at if last else None))
        workflow.record_read(session, prior.report, user, "prior")
    return Priors(report_id=report.id, items=items)


@router.get(
    "/reports/{report_id}/verify",
    response_model=Verification,
    summary="Check the report's signatures against their seals, the hash chain and the stored text",
    description="Roles: radiologist, admin.",
    openapi_extra=roles_doc(*READERS),
    responses=REPORT_ERRORS,
)
def verify_report(report_id: ReportId, session: SessionDep, settings: SettingsDep,
                  _: Reader) -> Verification:
    checks = workflow.verify(session, report_id, workflow.signing_key(settings))
    views = [SignatureCheckView(signature_id=c.signature.id, version=c.signature.version,
                                signer=c.signature.signer_name, valid=c.valid,
                                problems=c.problems)
             for c in checks]
    valid = bool(checks) and all(c.valid for c in checks)
    return Verification(report_id=report_id, valid=valid, signatures=views)


@router.get(
    "/reports/{report_id}/fhir",
    summary="The report as a FHIR R4 DiagnosticReport",
    description="Roles: radiologist, admin. Status preliminary (unsigned), final (signed), "
    "amended, or cancelled (draft rejected). Media type application/fhir+json.",
    openapi_extra=roles_doc(*READERS),
    response_class=JSONResponse,
    responses={**REPORT_ERRORS, 200: {"content": {"application/fhir+json": {}}}},
)
def get_fhir(report_id: ReportId, session: SessionDep, user: Reader) -> JSONResponse:
    report = workflow.get_report(session, report_id)
    workflow.record_read(session, report, user, "fhir")
    resource = fhir.diagnostic_report(report, session.get(Study, report.study_id),
                                      session.get(Draft, report.draft_id),
                                      workflow.current_version(session, report),
                                      workflow.signatures_of(session, report.id))
    return JSONResponse(resource, media_type="application/fhir+json",
                        headers={"ETag": f'W/"{report.current_version}"'})
