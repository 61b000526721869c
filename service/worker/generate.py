"""The generate stage (queue `generate`, accelerator): draft reports for studies, batched.

A generate worker gathers fresh `ingested` studies waiting in the database (up to BATCH_SIZE, at
most BATCH_WAIT_MS) into one model call, writes each draft with its report (version 1) and its
DICOM SR for the PACS (`service.review.publish`, the outbox), then enqueues the score stage of each
draft and the delivery of its SR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.core import queues
from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Draft, Report, ReportStatus, ReportVersion, Study, StudyState
from service.core.storage import BlobStore
from service.dicomweb import outbox
from service.review import triage
from service.review.publish import publish
from service.review.workflow import content_sha256, sections_of
from service.studies import pipeline
from service.worker.model import load_model
from service.worker.stage import TRANSIENT, run_stage

log = logging.getLogger(__name__)

#: Called with (settings, store, study ids) just before each model call. Empty in production; the
#: chaos tests' fault injection (`service.worker.faults`) adds itself here when FAULT_* is set.
BEFORE_GENERATE: list[Callable[[Settings, BlobStore, list[str]], None]] = []


def gather_batch(
    settings: Settings, first: str, worker: str, limit: int | None = None
) -> list[str]:
    """Claim more fresh studies waiting for generation, up to `limit` (default BATCH_SIZE) or
    the batch wait."""
    batch = [first]
    limit = limit or settings.batch_size
    deadline = time.monotonic() + settings.batch_wait_ms / 1000.0
    while len(batch) < limit:
        with session_scope(settings.database_url) as session:
            candidates = session.scalars(
                select(Study.id)
                .where(Study.state == StudyState.ingested, Study.generate_attempts == 0,
                       Study.id.not_in(batch))
                .order_by(Study.ingested_at).limit(limit - len(batch))
            ).all()
            for candidate in candidates:
                claim = pipeline.claim(session, candidate, "generate", worker=worker,
                                       lease_s=settings.lease_s, max_attempts=settings.max_attempts)
                if claim.status == "claimed":
                    batch.append(candidate)
        if len(batch) >= limit or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return batch


def generate_claimed(settings: Settings, study_id: str, worker: str) -> None:
    """Generate the draft of a study this worker claimed, with others gathered into its batch."""
    model = load_model(settings)
    store = BlobStore(settings.storage_dir)
    with session_scope(settings.database_url) as session:
        retake = session.get(Study, study_id).generate_attempts > 1
    # A study retaken after a lost worker runs alone, so a poison study cannot take others down.
    batch = [study_id] if retake else gather_batch(settings, study_id, worker, model.batch_size)
    try:
        generate_batch(settings, batch, worker, model, store)
    except BaseException:
        # The first study is settled by run_stage; give the others back so another delivery
        # takes them.
        release_all(settings, batch[1:], worker)
        raise


def release_all(settings: Settings, study_ids: list[str], worker: str) -> None:
    """Give back batched studies this worker still holds (after the batch failed)."""
    try:
        with session_scope(settings.database_url) as session:
            for sid in study_ids:
                study = session.get(Study, sid)
                if (study is not None and study.state == StudyState.generating
                        and study.lease_owner == worker):
                    pipeline.release(session, study, "generate", undo_attempt=True)
    except TRANSIENT as error:
        # Nothing is lost: their leases stop being renewed once this task ends, expire, and the
        # reconciler hands the studies out again.
        log.warning("could not release %d batched studies (%s); their leases will expire",
                    len(study_ids), type(error).__name__)


def generate_batch(settings: Settings, batch: list[str], worker: str, model: Any,
                   store: BlobStore) -> None:
    """One model call for the batch's frontal images; store each draft; enqueue their scoring."""
    for hook in BEFORE_GENERATE:
        hook(settings, store, batch)
    with session_scope(settings.database_url) as session:
        shas = {sid: session.get(Study, sid).frontal_sha256 for sid in batch}
    images = [store.get_array(shas[sid]).astype("float32") for sid in batch]
    started = time.perf_counter()
    texts = model.generate(images)
    compute_s = time.perf_counter() - started
    drafts: dict[str, str] = {}
    for sid, text in zip(batch, texts, strict=True):
        draft_id = store_draft(settings, sid, text, model, worker, compute_s, len(batch))
        if draft_id:
            drafts[sid] = draft_id
    log.info("generated %d drafts in one call (%.2f s)", len(batch), compute_s)
    for sid, draft_id in drafts.items():
        queues.send(settings, "score", draft_id)
        outbox.kick(settings, sid)  # the draft SR to the PACS (a no-op when none is configured)


def store_draft(settings: Settings, study_id: str, text: str, model: Any, worker: str,
                compute_s: float, batch_size: int) -> str | None:
    """Write the draft, its report (version 1) and the transition; a second draft is impossible.

    `model` needs `bundle_id` and `generation_settings`. Returns the draft id, or None when the
    study is no longer generating or its draft exists already.
    """
    sections = sections_of(text)
    try:
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            if study.state != StudyState.generating:
                return None
            draft = Draft(study_id=study_id, bundle_id=model.bundle_id, text=text,
                          sections=sections, generation=model.generation_settings, worker=worker)
            session.add(draft)
            session.flush()
            report = Report(study_id=study_id, draft_id=draft.id, status=ReportStatus.preliminary)
            session.add(report)
            session.flush()
            session.add(ReportVersion(report_id=report.id, version=1, text=text, sections=sections,
                                      author="ai:" + model.bundle_id,
                                      content_sha256=content_sha256(text)))
            triage.apply(session, settings, report, text, actor=f"worker:{worker}")
            study.generate_compute_s = compute_s
            study.generate_batch_size = batch_size
            pipeline.transition(session, study, StudyState.draft_ready, actor=f"worker:{worker}",
                                details={"draft_id": draft.id, "bundle_id": model.bundle_id,
                                         "batch": batch_size})
            publish(session, settings, report, actor=f"worker:{worker}")  # the draft SR, same tx
            return draft.id
    except IntegrityError:
        # A draft for this study and bundle exists already (a duplicate delivery won the race).
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            if study.state == StudyState.generating:
                pipeline.transition(session, study, StudyState.draft_ready,
                                    actor=f"worker:{worker}", details={"duplicate": True})
        return None


def generate_study(self: Any, study_id: str) -> None:
    """Generate the draft of a study, batched with other studies waiting for generation."""
    run_stage(self, "generate", study_id, generate_claimed)
