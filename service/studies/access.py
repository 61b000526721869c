"""Reads of patient data, audited (HIPAA 164.312(b)): one `study.read` event per study read, with
who, when and which view, through the review API and DICOMweb alike.

The details name the view and counts, never the request's query: a QIDO-RS search may carry a
patient's name or ID, which the audit trail must not copy.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.models import AuditEvent, IndexedInstance, Instance, User


def record_read(session: Session, user: User, study_id: str, **details: object) -> None:
    """Audit that `user` read study `study_id` (`study.read`; commits nothing)."""
    session.add(AuditEvent(actor=user.name, user_id=user.id, action="study.read",
                           study_id=study_id, details=details))


def record_reads_by_uid(session: Session, user: User, study_uids: Iterable[str],
                        **details: object) -> int:
    """Audit a read of every stored study among the Study Instance UIDs `study_uids` (one event
    per study of ours); returns how many were recorded. Commits nothing."""
    uids = sorted(set(study_uids))
    if not uids:
        return 0
    statement = (select(Instance.study_id).distinct()
                 .join(IndexedInstance, IndexedInstance.instance_id == Instance.id)
                 .where(IndexedInstance.study_uid.in_(uids)))
    study_ids = sorted(session.scalars(statement))
    for study_id in study_ids:
        record_read(session, user, study_id, **details)
    return len(study_ids)
