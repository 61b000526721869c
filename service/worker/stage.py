"""What every study stage does around its work: claim the study, run, and classify failures.

The database is the truth: a task message carries only a study id, and a stage first claims its
study in the database (a lease), so redelivered or duplicated messages change nothing twice. Bad
input fails the study once; transient faults (database, file store) retry with backoff; a worker
lost while holding a study is counted, and past the cap the study fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError

from service.core.config import Settings, get_settings
from service.core.db import session_scope
from service.core.models import Study
from service.studies import pipeline
from service.studies.imaging import ImageDecodeError
from service.worker.heartbeat import worker_name

log = logging.getLogger(__name__)

#: Faults that pass: the stage retries with backoff instead of failing the study.
TRANSIENT = (OperationalError, SAInterfaceError, OSError)

#: The work of a stage on a study this worker has claimed: (settings, study id, worker name).
StageBody = Callable[[Settings, str, str], None]


def run_stage(task: Any, stage: str, study_id: str, body: StageBody) -> None:
    """Claim, run the body, and classify failures (bad input: fail once; transient: retry)."""
    settings = get_settings()
    worker = worker_name()
    with session_scope(settings.database_url) as session:
        claim = pipeline.claim(session, study_id, stage, worker=worker, lease_s=settings.lease_s,
                               max_attempts=settings.max_attempts)
    if claim.status != "claimed":
        log.info("%s of study %s skipped: %s", stage, study_id, claim.status)
        return
    try:
        body(settings, study_id, worker)
    except ImageDecodeError as error:
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            pipeline.fail(session, study, code=error.code, reason=error.message,
                          actor=f"worker:{worker}")
        log.info("%s of study %s failed: %s", stage, study_id, error.code)
    except TRANSIENT as error:
        release(settings, study_id, stage)
        log.warning("%s of study %s hit a transient fault (%s); retrying", stage, study_id,
                    type(error).__name__)
        if task.request.retries >= settings.transient_retries:
            fail(settings, study_id, "transient_fault_exhausted",
                 f"{stage} kept failing on a transient fault ({type(error).__name__}) after "
                 f"{settings.transient_retries} retries; check database and storage health", worker)
            return
        raise task.retry(countdown=settings.retry_backoff_s * 2 ** task.request.retries) from None
    except Exception as error:
        log.exception("%s of study %s failed unexpectedly", stage, study_id)
        fail(settings, study_id, "internal_error",
             f"{stage} failed with an internal error ({type(error).__name__}); see the worker log",
             worker)


def release(settings: Settings, study_id: str, stage: str) -> None:
    """Give the study back after a transient fault (if the database is down, the lease expires)."""
    try:
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            if study is not None:
                pipeline.release(session, study, stage, undo_attempt=True)
    except TRANSIENT:
        pass  # the lease simply expires


def fail(settings: Settings, study_id: str, code: str, reason: str, worker: str) -> None:
    """End the study as failed with a machine code and a reason a person can act on."""
    with session_scope(settings.database_url) as session:
        study = session.get(Study, study_id)
        if study is not None:
            pipeline.fail(session, study, code=code, reason=reason, actor=f"worker:{worker}")
