"""The score stage (queue `score`, CPU): extract and store the findings a draft states."""

from __future__ import annotations

import logging
from typing import Any

from service.core.config import get_settings
from service.core.db import session_scope
from service.core.jsonable import jsonable
from service.core.models import AuditEvent, Draft, utcnow
from service.worker.heartbeat import worker_name
from service.worker.stage import TRANSIENT

log = logging.getLogger(__name__)


def extract_findings(text: str) -> dict[str, Any]:
    """What `evaluation` extracts from a report: CheXpert-style labels and the RadGraph graph."""
    from evaluation import chexpert, radgraph

    labels = chexpert.label(text)
    graph = radgraph.extract(text)
    return {"chexpert": jsonable(labels), "radgraph": jsonable(graph)}


def score_draft(self: Any, draft_id: str) -> None:
    """Extract and store the findings of a draft (idempotent: a scored draft is left alone)."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        draft = session.get(Draft, draft_id)
        if draft is None or draft.scored_at is not None:
            return
        text = draft.text
    try:
        findings = extract_findings(text)
    except TRANSIENT as error:
        raise self.retry(countdown=settings.retry_backoff_s * 2 ** self.request.retries,
                         max_retries=settings.transient_retries) from error
    except Exception as error:
        log.exception("scoring draft %s failed", draft_id)
        findings = {"error": f"findings could not be extracted ({type(error).__name__})"}
    with session_scope(settings.database_url) as session:
        draft = session.get(Draft, draft_id)
        if draft.scored_at is None:
            draft.findings = findings
            draft.scored_at = utcnow()
            session.add(AuditEvent(actor=f"worker:{worker_name()}", action="draft.score",
                                   study_id=draft.study_id, details={"draft_id": draft_id}))
