"""Radiologist review: worklist, claims, versioned edits, e-signatures, amendment, rejection, audit.

Domain logic as plain functions that take the session and commit nothing (the caller owns the
transaction). The rules, after 21 CFR 11 and HIPAA 164.312 (see docs/review.md):

- The AI `Draft` is never changed; a report's text lives in append-only `ReportVersion` rows
  (version 1 is the draft). An edit is a new version, accepted only against the current version
  (optimistic concurrency; a stale edit raises `VersionConflict` carrying the current version).
- Only the radiologist who claimed a preliminary report may edit, sign or reject it.
- Signing needs the password again (re-authentication), a meaning, and binds signer, meaning,
  server time and the SHA-256 of the signed text into a `Signature` sealed with HMAC-SHA256 under
  a key kept outside the database; each seal also covers the report's previous seal, so the
  signatures of a report form a hash chain. A signed report is immutable; a correction is an
  amendment: a new version signed the same way, referencing the signature it corrects.
- Every write is an `AuditEvent` naming its user; database triggers refuse UPDATE and DELETE of
  versions, signatures and audit events (migration 0002).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import enum
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from service.auth.accounts import REAUTH_FAILURE, Lockout, lock_after_failure, reauthenticate
from service.core.config import Settings
from service.core.errors import ServiceError
from service.core.models import (
    AuditEvent,
    Draft,
    IndexedInstance,
    Report,
    ReportStatus,
    ReportVersion,
    Signature,
    Study,
    StudyState,
    User,
    utcnow,
)
from service.studies import pipeline

OPEN = ReportStatus.preliminary
SIGNED = (ReportStatus.final, ReportStatus.amended)
STATUS_ORDER = (ReportStatus.preliminary, ReportStatus.final, ReportStatus.amended,
                ReportStatus.rejected)


class SignatureMeaning(enum.StrEnum):
    """What a signature means (21 CFR 11.50(a)(3)); shown with the signer's name and time."""

    authorship = "authorship"
    review = "review"
    approval = "approval"


MEANING_TEXT = {
    SignatureMeaning.authorship: "I am the author of this report.",
    SignatureMeaning.review: "I have reviewed this report.",
    SignatureMeaning.approval: "I have reviewed the images and approve this report as the final "
    "report.",
}


# --------------------------------------------------------------------------- errors


class ReviewError(ServiceError):
    """A review action that cannot be done; `status` is the HTTP status, `code` a machine code."""

    status = 409
    code = "review_error"


class ReportNotFound(ReviewError):
    """No report with this id."""

    status, code = 404, "report_not_found"


class NotClaimed(ReviewError):
    """The report is not claimed by this user (claim it first, or someone else holds it)."""

    status, code = 409, "not_claimed"


class ReportLocked(ReviewError):
    """The report is signed or rejected: its text can no longer change except by amendment."""

    status, code = 409, "report_locked"


class VersionConflict(ReviewError):
    """The edit was based on an older version; the answer carries the current version (`current`,
    the fields of `version_fields`) to merge with, and its number as the ETag."""

    status, code = 409, "version_conflict"

    def __init__(self, message: str, current: ReportVersion) -> None:
        super().__init__(message)
        self.current = version_fields(current)  # read now: the session is gone when it is answered

    def body(self) -> dict[str, Any]:
        return {**super().body(), "current": to_jsonable_python(self.current)}

    def headers(self) -> dict[str, str]:
        return {"ETag": f'"{self.current["version"]}"'}


class PreconditionRequired(ReviewError):
    """A write did not say which version it is based on (If-Match or `version`)."""

    status, code = 428, "version_required"


class ReauthenticationFailed(ReviewError):
    """The re-entered password at signing is wrong (the failure's audit event is kept)."""

    status, code = 401, "reauthentication_failed"
    keep_changes = True


#: The lockout of sign and amend when the caller names none (the settings' defaults).
DEFAULT_LOCKOUT = Lockout(10, 15 * 60)

# --------------------------------------------------------------------------- helpers


def content_sha256(text: str) -> str:
    """SHA-256 (hex) of a report text as UTF-8: what a signature binds."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sections_of(text: str) -> dict[str, Any]:
    """A report's sections as `radiology.reports.parse` finds them (as the generate worker does)."""
    from radiology.reports import parse

    parsed = parse(text)
    return {k: v for k, v in dataclasses.asdict(parsed).items()
            if isinstance(v, str | None | list | dict)}


def get_report(session: Session, report_id: str) -> Report:
    """The report or ReportNotFound."""
    report = session.get(Report, report_id)
    if report is None:
        raise ReportNotFound("no report with this id")
    return report


def version_fields(version: ReportVersion) -> dict[str, Any]:
    """What the API shows of a version: number, text, sections, author, time, the text's SHA-256."""
    return {"version": version.version, "text": version.text, "sections": version.sections or {},
            "author": version.author, "created_at": version.created_at,
            "content_sha256": version.content_sha256}


def current_version(session: Session, report: Report) -> ReportVersion:
    """The report's current version row."""
    return session.scalars(
        select(ReportVersion).where(ReportVersion.report_id == report.id,
                                    ReportVersion.version == report.current_version)
    ).one()


def _audit(session: Session, user: User, action: str, report: Report, **details: Any) -> None:
    session.add(AuditEvent(actor=user.name, user_id=user.id, action=action,
                           study_id=report.study_id, report_id=report.id, details=details))


def _study_to(session: Session, report: Report, state: StudyState, user: User,
              **details: Any) -> None:
    study = session.get(Study, report.study_id)
    if study is not None and study.state != state and state in pipeline.ALLOWED[study.state]:
        pipeline.transition(session, study, state, actor=user.name, user_id=user.id,
                            details={"report_id": report.id, **details})


def _check_base(report: Report, base_version: int | None, session: Session) -> None:
    if base_version is None:
        raise PreconditionRequired("say which version this change is based on: send "
                                   "If-Match: \"<version>\" or the field `version`")
    if base_version != report.current_version:
        raise VersionConflict(
            f"the report changed: you edited version {base_version}, the current version is "
            f"{report.current_version}; reload, merge your changes and send them again",
            current_version(session, report),
        )


def _require_open_claim(report: Report, user: User, action: str) -> None:
    if report.status != OPEN:
        hint = " (correct a signed report with an amendment)" if report.status in SIGNED else ""
        raise ReportLocked(f"the report is {report.status.value}; it cannot be {action}{hint}")
    if report.claimed_by != user.id:
        holder = "nobody" if report.claimed_by is None else "another radiologist"
        raise NotClaimed(
            f"claim the report before it can be {action} (it is claimed by {holder})")


# --------------------------------------------------------------------------- worklist


class WorklistSort(enum.StrEnum):
    """Orders of the worklist."""

    priority = "priority"  # highest priority first, then oldest
    age = "age"  # oldest draft first
    updated = "updated"  # most recently changed first
    status = "status"  # by status (preliminary, final, amended, rejected), then priority
    assignee = "assignee"  # unclaimed first, then by the holder's name, then oldest


@dataclass(frozen=True)
class WorklistItem:
    """One row of the worklist."""

    report: Report
    study: Study
    draft: Draft
    claimed_by: str | None


def worklist(
    session: Session,
    *,
    user: User,
    statuses: list[ReportStatus] | None = None,
    assignee: str | None = None,
    min_priority: int | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    bundle_id: str | None = None,
    sort: WorklistSort = WorklistSort.priority,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[WorklistItem], int]:
    """Reports filtered by status, assignee, priority, draft age and bundle: (page, total).

    `assignee` is "me", "none" or a user name.
    """
    claimer = aliased(User)
    query = (
        select(Report, Study, Draft, claimer.name)
        .join(Study, Study.id == Report.study_id)
        .join(Draft, Draft.id == Report.draft_id)
        .outerjoin(claimer, claimer.id == Report.claimed_by)
    )
    conditions = [Report.status.in_(statuses or [OPEN])]
    if assignee == "me":
        conditions.append(Report.claimed_by == user.id)
    elif assignee == "none":
        conditions.append(Report.claimed_by.is_(None))
    elif assignee:
        conditions.append(claimer.name == assignee)
    if min_priority is not None:
        conditions.append(Report.priority >= min_priority)
    if created_after is not None:
        conditions.append(Draft.created_at >= created_after)
    if created_before is not None:
        conditions.append(Draft.created_at < created_before)
    if bundle_id is not None:
        conditions.append(Draft.bundle_id == bundle_id)
    query = query.where(and_(*conditions))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = {
        WorklistSort.priority: (Report.priority.desc(), Draft.created_at.asc(), Report.id),
        WorklistSort.age: (Draft.created_at.asc(), Report.id),
        WorklistSort.updated: (func.coalesce(Report.updated_at, Report.created_at).desc(),
                               Report.id),
        WorklistSort.status: (case({s: i for i, s in enumerate(STATUS_ORDER)}, value=Report.status),
                              Report.priority.desc(), Draft.created_at.asc(), Report.id),
        WorklistSort.assignee: (claimer.name.is_not(None), claimer.name.asc(),
                                Draft.created_at.asc(), Report.id),
    }[sort]
    rows = session.execute(query.order_by(*order).limit(limit).offset(offset)).all()
    return [WorklistItem(r, s, d, name) for r, s, d, name in rows], int(total)


# ------------------------------------------------------------------- claim, release, priority


def claim(session: Session, report_id: str, user: User, *,
          claim_ttl_s: float | None = None) -> Report:
    """Take a preliminary report for review (idempotent for its holder); the study goes in_review.

    Another radiologist's claim older than `claim_ttl_s` is taken over (and the audit event says
    from whom).
    """
    report = get_report(session, report_id)
    if report.status != OPEN:
        raise ReportLocked(
            f"the report is {report.status.value}; only preliminary reports can be claimed")
    now = utcnow()
    previous = report.claimed_by if report.claimed_by != user.id else None
    free = [Report.claimed_by.is_(None), Report.claimed_by == user.id]
    if claim_ttl_s is not None:
        free.append(Report.claimed_at < now - dt.timedelta(seconds=claim_ttl_s))
    result = session.execute(
        update(Report)
        .where(Report.id == report_id, Report.status == OPEN, or_(*free))
        .values(claimed_by=user.id,
                claimed_at=case((Report.claimed_by == user.id,
                                 func.coalesce(Report.claimed_at, now)), else_=now),
                updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(report)
    if result.rowcount != 1:
        expiry = f" or after {claim_ttl_s / 3600:g} h" if claim_ttl_s is not None else ""
        raise NotClaimed("another radiologist has claimed this report; it can be claimed once they "
                         f"release it{expiry}", code="claimed_by_other")
    details = {"taken_over_from": session.get(User, previous).name} if previous is not None else {}
    _audit(session, user, "report.claim", report, **details)
    _study_to(session, report, StudyState.in_review, user)
    return report


def release(session: Session, report_id: str, user: User) -> Report:
    """Give a claimed report back to the worklist (edits stay); the study returns to draft_ready."""
    report = get_report(session, report_id)
    _require_open_claim(report, user, "released")
    report.claimed_by = None
    report.claimed_at = None
    report.updated_at = utcnow()
    _audit(session, user, "report.release", report)
    _study_to(session, report, StudyState.draft_ready, user)
    return report


def set_priority(session: Session, report_id: str, user: User, priority: int) -> Report:
    """Change a preliminary report's worklist priority (higher first)."""
    report = get_report(session, report_id)
    if report.status != OPEN:
        raise ReportLocked(
            f"the report is {report.status.value}; priorities only matter for open reports")
    _audit(session, user, "report.priority", report, **{"from": report.priority, "to": priority})
    report.priority = priority
    report.updated_at = utcnow()
    return report


# --------------------------------------------------------------------------- edits


def _new_version(session: Session, report: Report, user: User, text: str,
                 base_version: int) -> ReportVersion:
    """Append version base+1 if the report is still at `base_version` (a conditional UPDATE)."""
    result = session.execute(
        update(Report)
        .where(Report.id == report.id, Report.current_version == base_version)
        .values(current_version=base_version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(report)
    if result.rowcount != 1:
        raise VersionConflict(
            f"the report changed while you edited it (now version {report.current_version})",
            current_version(session, report),
        )
    version = ReportVersion(report_id=report.id, version=base_version + 1, text=text,
                            sections=sections_of(text), author_id=user.id, author=user.name,
                            content_sha256=content_sha256(text))
    session.add(version)
    session.flush()
    return version


def edit(session: Session, report_id: str, user: User, text: str,
         base_version: int | None) -> ReportVersion:
    """Save an edit as a new version, based on `base_version`; an unchanged text creates nothing."""
    report = get_report(session, report_id)
    _require_open_claim(report, user, "edited")
    _check_base(report, base_version, session)
    current = current_version(session, report)
    if text == current.text:
        return current
    version = _new_version(session, report, user, text, report.current_version)
    _audit(session, user, "report.edit", report, version=version.version, base_version=base_version,
           content_sha256=version.content_sha256, **_change_summary(current.text, text))
    return version


def _change_summary(before: str, after: str) -> dict[str, int]:
    words_before, words_after = before.split(), after.split()
    matcher = difflib.SequenceMatcher(a=words_before, b=words_after, autojunk=False)
    removed = added = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            removed += i2 - i1
            added += j2 - j1
    return {"words_removed": removed, "words_added": added}


# --------------------------------------------------------------------------- signatures


def signing_key(settings: Settings) -> bytes:
    """The HMAC key of signatures: SIGNATURE_KEY, else a random key in STORAGE_DIR/keys.

    The random key is created once, readable by its owner only (0600).
    """
    if settings.signature_key:
        return settings.signature_key.encode("utf-8")
    path = Path(settings.storage_dir) / "keys" / "signature.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


def _seal_payload(signature: Signature) -> bytes:
    fields = {
        "report_id": signature.report_id, "version": signature.version, "kind": signature.kind,
        "signer_id": signature.signer_id, "signer_name": signature.signer_name,
        "meaning": signature.meaning,
        "signed_at": signature.signed_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "content_sha256": signature.content_sha256,
        "amends_signature_id": signature.amends_signature_id,
        "reason": signature.reason, "previous_seal": signature.previous_seal,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def seal(signature: Signature, key: bytes) -> str:
    """HMAC-SHA256 over the signature's fields, content hash and previous seal (canonical JSON)."""
    return hmac.new(key, _seal_payload(signature), hashlib.sha256).hexdigest()


def signatures_of(session: Session, report_id: str) -> list[Signature]:
    """A report's signatures in order."""
    in_order = select(Signature).where(Signature.report_id == report_id).order_by(Signature.id)
    return list(session.scalars(in_order))


def _reauthenticate(session: Session, report: Report, user: User, password: str,
                    lockout: Lockout) -> None:
    """The signer's password again, under the sign-in lockout (wrong ones count toward it; the
    one that reaches it signs the account out everywhere)."""
    if not reauthenticate(session, user, password, lockout):
        _audit(session, user, REAUTH_FAILURE, report)
        locked = lock_after_failure(session, user, lockout)
        raise ReauthenticationFailed(
            "the password is not correct; a signature needs your own password again"
            + ("" if user.password_hash else " (this account has no password: ask an "
               "administrator to set one with `radreport admin create-user`)")
            + (". Too many wrong passwords: the account is locked and signed out everywhere; "
               "sign in again once the lockout has passed" if locked else ""))


def _sign_version(session: Session, report: Report, user: User, version: ReportVersion,
                  meaning: SignatureMeaning, key: bytes, *, kind: str,
                  amends: Signature | None = None, reason: str | None = None) -> Signature:
    previous = signatures_of(session, report.id)
    signature = Signature(
        report_id=report.id, version=version.version, kind=kind,
        signer_id=user.id, signer_name=user.name,
        meaning=meaning.value, signed_at=utcnow(), content_sha256=content_sha256(version.text),
        amends_signature_id=amends.id if amends else None, reason=reason,
        previous_seal=previous[-1].seal if previous else None,
    )
    signature.seal = seal(signature, key)
    session.add(signature)
    session.flush()
    return signature


def sign(session: Session, report_id: str, user: User, *, password: str, meaning: SignatureMeaning,
         base_version: int | None, key: bytes, lockout: Lockout = DEFAULT_LOCKOUT) -> Signature:
    """Sign the current version: re-authenticate, seal, report final and immutable, study signed."""
    report = get_report(session, report_id)
    _require_open_claim(report, user, "signed")
    _check_base(report, base_version, session)
    _reauthenticate(session, report, user, password, lockout)
    result = session.execute(
        update(Report)
        .where(Report.id == report.id, Report.status == OPEN,
               Report.current_version == base_version, Report.claimed_by == user.id)
        .values(status=ReportStatus.final, claimed_by=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(report)
    if result.rowcount != 1:
        raise VersionConflict("the report changed while you signed it; reload it",
                              current_version(session, report))
    version = current_version(session, report)
    signature = _sign_version(session, report, user, version, meaning, key, kind="sign")
    _audit(session, user, "report.sign", report, version=version.version,
           signature_id=signature.id, meaning=meaning.value,
           content_sha256=signature.content_sha256)
    _study_to(session, report, StudyState.signed, user)
    return signature


def amend(session: Session, report_id: str, user: User, *, text: str, reason: str, password: str,
          meaning: SignatureMeaning, base_version: int | None, key: bytes,
          lockout: Lockout = DEFAULT_LOCKOUT) -> Signature:
    """Correct a signed report: a new version, signed at once, naming the signature it corrects."""
    report = get_report(session, report_id)
    if report.status not in SIGNED:
        hint = " (edit it and sign it instead)" if report.status == OPEN else ""
        raise ReportLocked(
            f"only signed reports are amended; this one is {report.status.value}{hint}")
    if not reason.strip():
        raise ReviewError("an amendment needs a reason", code="reason_required")
    _check_base(report, base_version, session)
    current = current_version(session, report)
    if text == current.text:
        raise ReviewError("the amendment does not change the text", code="no_change")
    _reauthenticate(session, report, user, password, lockout)
    amended = signatures_of(session, report.id)[-1]
    version = _new_version(session, report, user, text, report.current_version)
    report.status = ReportStatus.amended
    signature = _sign_version(session, report, user, version, meaning, key, kind="amendment",
                              amends=amended, reason=reason)
    _audit(session, user, "report.amend", report, version=version.version,
           signature_id=signature.id, amends_signature_id=amended.id,
           amends_version=amended.version, reason=reason, meaning=meaning.value,
           content_sha256=signature.content_sha256, **_change_summary(current.text, text))
    return signature


def reject(session: Session, report_id: str, user: User, reason: str) -> Report:
    """Reject the AI draft as unusable, with a reason (IHE AIRAI "rejected"); the report closes."""
    report = get_report(session, report_id)
    _require_open_claim(report, user, "rejected")
    if not reason.strip():
        raise ReviewError("a rejection needs a reason", code="reason_required")
    report.status = ReportStatus.rejected
    report.rejected_reason = reason
    report.claimed_by = None
    report.updated_at = utcnow()
    _audit(session, user, "report.reject", report, reason=reason, version=report.current_version)
    _study_to(session, report, StudyState.rejected, user, reason=reason)
    return report


@dataclass(frozen=True)
class SignatureCheck:
    """Whether one signature still holds: its seal, the chain, and the stored text's hash."""

    signature: Signature
    valid: bool
    problems: list[str]


def verify(session: Session, report_id: str, key: bytes) -> list[SignatureCheck]:
    """Check each signature of a report against the key, the hash chain and the stored text."""
    report = get_report(session, report_id)
    checks = []
    previous_seal: str | None = None
    for signature in signatures_of(session, report.id):
        problems = []
        if not hmac.compare_digest(seal(signature, key), signature.seal):
            problems.append("the seal does not match the signature's fields "
                            "(the signature record was altered)")
        if signature.previous_seal != previous_seal:
            problems.append(
                "the hash chain is broken (a signature was removed, reordered or altered)")
        signed_version = select(ReportVersion).where(ReportVersion.report_id == report.id,
                                                     ReportVersion.version == signature.version)
        stored = session.scalars(signed_version).first()
        if stored is None:
            problems.append(f"version {signature.version} is missing")
        elif content_sha256(stored.text) != signature.content_sha256:
            problems.append(f"the stored text of version {signature.version} is not the text "
                            "that was signed")
        checks.append(SignatureCheck(signature, not problems, problems))
        previous_seal = signature.seal
    return checks


# --------------------------------------------------------------------------- history


def record_read(session: Session, report: Report, user: User, view: str) -> None:
    """Audit that `user` read the report (HIPAA 164.312(b): reads of patient data are recorded)."""
    _audit(session, user, "report.read", report, view=view)


MAX_PRIORS = 10


@dataclass(frozen=True)
class Prior:
    """An earlier study of the same patient that has a report here."""

    report: Report
    study_uid: str
    study_date: str | None  # YYYYMMDD from its DICOM header


ISSUER_OF_PATIENT_ID = "00100021"


def _issuer(header: dict[str, Any] | None) -> str | None:
    """The Issuer of Patient ID of an indexed header, or None."""
    values = ((header or {}).get(ISSUER_OF_PATIENT_ID) or {}).get("Value") or [""]
    return str(values[0]).strip() or None


def priors(session: Session, report: Report, limit: int = MAX_PRIORS) -> list[Prior]:
    """The patient's other studies with a report, up to this study's date, newest first.

    The patient is the Patient ID and Issuer of Patient ID of the study's instances (the index,
    `instance_index`): a study without a Patient ID, or whose instances disagree on it, has no
    priors, and a study of the same Patient ID from another issuer is not one. Later studies are
    left out (they are not priors of this one), and so are those without a date when this one
    has one."""
    mine = session.execute(select(IndexedInstance.patient_id, IndexedInstance.study_date,
                                  IndexedInstance.header)
                           .where(IndexedInstance.study_id == report.study_id)).all()
    patients = {(patient, _issuer(header)) for patient, _, header in mine}
    if len(patients) != 1 or next(iter(patients))[0] is None:
        return []
    [(patient, issuer)] = patients
    date = max((d for _, d, _ in mine if d), default=None)
    studies: dict[str, tuple[str, str | None, set[str | None]]] = {}
    for study_id, uid, study_date, header in session.execute(
            select(IndexedInstance.study_id, IndexedInstance.study_uid,
                   IndexedInstance.study_date, IndexedInstance.header)
            .where(IndexedInstance.patient_id == patient,
                   IndexedInstance.study_id != report.study_id)):
        _, known, issuers = studies.get(study_id, (uid, None, set()))
        studies[study_id] = (uid, max(filter(None, (known, study_date)), default=None),
                             issuers | {_issuer(header)})
    same = {study_id: (uid, study_date) for study_id, (uid, study_date, issuers) in studies.items()
            if issuers == {issuer}
            and (date is None or (study_date is not None and study_date <= date))}
    found = [Prior(prior, *same[prior.study_id]) for prior in session.scalars(
        select(Report).where(Report.study_id.in_(list(same))))]
    found.sort(key=lambda p: (p.study_date or "", p.report.created_at), reverse=True)
    return found[:limit]


def history(session: Session, report_id: str, *, include_reads: bool = False
            ) -> tuple[Report, list[ReportVersion], list[AuditEvent]]:
    """Every version (oldest first) and every audit event of the report and its study, in order.

    Reads of the report are left out unless `include_reads`.
    """
    report = get_report(session, report_id)
    versions = list(session.scalars(
        select(ReportVersion).where(ReportVersion.report_id == report.id)
        .order_by(ReportVersion.version)))
    query = select(AuditEvent).where(or_(AuditEvent.report_id == report.id,
                                         AuditEvent.study_id == report.study_id))
    if not include_reads:
        query = query.where(AuditEvent.action != "report.read")
    events = list(session.scalars(query.order_by(AuditEvent.at, AuditEvent.id)))
    return report, versions, events


def unified_diff(before: str, after: str, from_label: str, to_label: str) -> str:
    """A unified diff of two report texts, line by line."""
    lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                 fromfile=from_label, tofile=to_label)
    return "".join(lines)
