"""Fault injection for the chaos tests, installed only when a FAULT_* setting is set: a generate
worker dies like an out-of-memory kill, or stalls once, while generating a marked study.

A study is marked by its StudyDescription containing FAULT_KILL_MARKER or FAULT_PAUSE_MARKER. The
worker's Celery app imports this module and calls `install` only when a marker is set; production
leaves every FAULT_* unset, so this code never runs there.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import time

import pydicom
from sqlalchemy import select

from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Instance, Study
from service.core.storage import BlobStore
from service.worker import generate

log = logging.getLogger(__name__)


def install() -> None:
    """Run `inject` before every model call of the generate stage (once, however often called)."""
    if inject not in generate.BEFORE_GENERATE:
        generate.BEFORE_GENERATE.append(inject)


def inject(settings: Settings, store: BlobStore, study_ids: list[str]) -> None:
    """SIGKILL this worker when a study of the batch carries FAULT_KILL_MARKER; sleep FAULT_PAUSE_S
    when one carries FAULT_PAUSE_MARKER on its first generate attempt."""
    if not (settings.fault_kill_marker or settings.fault_pause_marker):
        return
    with session_scope(settings.database_url) as session:
        shas = [session.scalars(select(Instance.sha256).where(Instance.study_id == sid)).first()
                for sid in study_ids]
    descriptions = [
        str(pydicom.dcmread(io.BytesIO(store.get(sha)), stop_before_pixels=True)
            .get("StudyDescription", ""))
        for sha in shas if sha is not None
    ]
    if settings.fault_kill_marker and any(settings.fault_kill_marker in d for d in descriptions):
        log.warning("fault injection: killing this worker (FAULT_KILL_MARKER)")
        os.kill(os.getpid(), signal.SIGKILL)
    with session_scope(settings.database_url) as session:
        first_attempt = all(session.get(Study, sid).generate_attempts == 1 for sid in study_ids)
    if (settings.fault_pause_marker and first_attempt
            and any(settings.fault_pause_marker in d for d in descriptions)):
        log.warning("fault injection: pausing %.1f s (FAULT_PAUSE_MARKER)", settings.fault_pause_s)
        time.sleep(settings.fault_pause_s)
