"""The study state machine: transitions with audit events, worker leases and claims, the reconciler.

Every function takes the session explicitly and commits nothing; callers own the transaction.
Claims are conditional UPDATEs, so two workers can never both own a study, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.core.models import AuditEvent, Study, StudyState, utcnow

log = logging.getLogger(__name__)

S = StudyState
ALLOWED: dict[StudyState, frozenset[StudyState]] = {
    S.received: frozenset({S.ingested, S.failed}),
    S.ingested: frozenset({S.generating, S.failed}),
    S.generating: frozenset({S.draft_ready, S.failed}),
    S.draft_ready: frozenset({S.in_review}),
    S.in_review: frozenset({S.draft_ready, S.signed, S.rejected}),
    S.signed: frozenset(),
    S.rejected: frozenset(),
    S.failed: frozenset(),
}

#: Which attempts column and timestamp belong to each worker stage.
STAGES = {
    "ingest": (S.received, "ingest_attempts", "ingest_started_at"),
    "generate": (S.ingested, "generate_attempts", "generate_started_at"),
}


class TransitionError(Exception):
    """A state change the study state machine does not allow."""


def transition(
    session: Session,
    study: Study,
    to_state: StudyState,
    *,
    actor: str,
    user_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Move a study to `to_state`, stamp its time and write the audit event."""
    if to_state not in ALLOWED[study.state]:
        raise TransitionError(f"a study cannot go from {study.state.value} to {to_state.value}")
    now = utcnow()
    session.add(
        AuditEvent(actor=actor, user_id=user_id, action="study.transition", study_id=study.id,
                   from_state=study.state.value, to_state=to_state.value, details=details or {})
    )
    study.state = to_state
    study.updated_at = now
    stamps = {S.ingested: "ingested_at", S.draft_ready: "draft_ready_at", S.failed: "failed_at"}
    stamp = stamps.get(to_state)
    if stamp:
        setattr(study, stamp, now)
    if to_state in (S.ingested, S.draft_ready, S.failed):
        study.lease_owner = None
        study.lease_until = None


def fail(session: Session, study: Study, *, code: str, reason: str, actor: str) -> None:
    """End a study as `failed` with a machine code and an actionable reason (no-op if terminal)."""
    if S.failed not in ALLOWED[study.state]:
        return
    study.failure_code = code
    study.failure_reason = reason
    transition(session, study, S.failed, actor=actor, details={"code": code})


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to claim a study for a stage."""

    status: str  # "claimed" | "busy" | "done" | "exhausted"
    attempt: int = 0


def claim(session: Session, study_id: str, stage: str, *, worker: str, lease_s: float,
          max_attempts: int) -> Claim:
    """Take a study for `stage` under a lease; retakes a study whose previous owner's lease expired.

    Each claim counts an attempt; past `max_attempts` (workers lost while holding it) the study
    fails. Generate claims move `ingested` to `generating`.
    """
    from_state, attempts_col, started_col = STAGES[stage]
    now = utcnow()
    held_states = [from_state] + ([S.generating] if stage == "generate" else [])
    free = or_(Study.lease_until.is_(None), Study.lease_until < now)
    values: dict[str, Any] = {
        "lease_owner": worker,
        "lease_until": now + dt.timedelta(seconds=lease_s),
        attempts_col: getattr(Study, attempts_col) + 1,
        "updated_at": now,
    }
    result = session.execute(
        update(Study)
        .where(and_(Study.id == study_id, Study.state.in_(held_states), free))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    study = session.get(Study, study_id, populate_existing=True)
    if study is None:
        return Claim("done")
    if result.rowcount != 1:
        return Claim("busy" if study.state in held_states else "done")
    attempt = getattr(study, attempts_col)
    if attempt > max_attempts:
        fail(session, study, code=f"{stage}_worker_lost",
             reason=f"the {stage} worker was lost {attempt - 1} times while processing this "
                    "study; it was not retried again (check the worker logs for crashes or "
                    "out-of-memory kills)",
             actor=f"worker:{worker}")
        return Claim("exhausted", attempt)
    if getattr(study, started_col) is None or attempt == 1:
        setattr(study, started_col, now)
    if stage == "generate" and study.state == S.ingested:
        transition(session, study, S.generating, actor=f"worker:{worker}",
                   details={"attempt": attempt})
    elif attempt > 1:
        session.add(AuditEvent(actor=f"worker:{worker}", action=f"{stage}.retake",
                               study_id=study.id, details={"attempt": attempt}))
    return Claim("claimed", attempt)


def release(session: Session, study: Study, stage: str, *, undo_attempt: bool) -> None:
    """Give a claimed study back (a transient fault: another delivery may take it at once)."""
    _, attempts_col, _ = STAGES[stage]
    study.lease_owner = None
    study.lease_until = None
    if undo_attempt:
        setattr(study, attempts_col, max(getattr(study, attempts_col) - 1, 0))


def renew_leases(session: Session, worker: str, lease_s: float) -> int:
    """Extend every lease `worker` holds (called from its heartbeat); returns how many."""
    result = session.execute(
        update(Study)
        .where(Study.lease_owner == worker, Study.state.in_([S.received, S.generating]))
        .values(lease_until=utcnow() + dt.timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def stale_work(session: Session, *, older_than_s: float, limit: int = 500) -> list[tuple[str, str]]:
    """(stage, study id) pairs whose work Redis may have lost: unfinished, unleased, not re-sent."""
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=older_than_s)
    free = or_(Study.lease_until.is_(None), Study.lease_until < now)
    not_recent = or_(Study.enqueued_at.is_(None), Study.enqueued_at < cutoff)
    rows = session.execute(
        select(Study.id, Study.state)
        .where(Study.state.in_([S.received, S.ingested, S.generating]), free, not_recent)
        .order_by(Study.received_at)
        .limit(limit)
    ).all()
    return [("ingest" if state == S.received else "generate", study_id) for study_id, state in rows]
