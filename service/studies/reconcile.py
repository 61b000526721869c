"""Sending study work to the queues, and the reconciler that re-sends what Redis may have lost."""

from __future__ import annotations

import logging

from sqlalchemy import select

from service.core import queues
from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Draft, Study, utcnow
from service.studies import pipeline

log = logging.getLogger(__name__)


def enqueue_and_mark(settings: Settings, stage: str, study_id: str) -> bool:
    """Enqueue a study stage and record when, so the reconciler does not re-send it too soon."""
    sent = queues.send(settings, stage, study_id)
    if sent:
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            if study is not None:
                study.enqueued_at = utcnow()
    return sent


def reconcile(settings: Settings) -> dict[str, int]:
    """Re-enqueue work Redis may have lost: stale unfinished studies and unscored drafts."""
    counts = {"ingest": 0, "generate": 0, "score": 0}
    with session_scope(settings.database_url) as session:
        work = pipeline.stale_work(session, older_than_s=settings.reconcile_after_s)
        cutoff = utcnow().timestamp() - settings.reconcile_after_s
        drafts = [
            d.id for d in session.scalars(select(Draft).where(Draft.scored_at.is_(None)).limit(500))
            if d.created_at.timestamp() < cutoff
        ]
    for stage, study_id in work:
        if enqueue_and_mark(settings, stage, study_id):
            counts[stage] += 1
    for draft_id in drafts:
        if queues.send(settings, "score", draft_id):
            counts["score"] += 1
    if any(counts.values()):
        log.info("reconciler re-enqueued %s", counts)
    return counts
