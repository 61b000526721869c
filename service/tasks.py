"""Celery app and tasks: ingest (CPU), generate (accelerator, batched), score (CPU).

The database is the truth: a task message carries only a study or draft id, every task first
claims its study in the database (a lease), so redelivered or duplicated messages change nothing
twice. Bad input fails the study once; transient faults (database, file store) retry with
backoff; a worker lost while holding a study is counted, and past the cap the study fails.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, signals
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from service import pipeline
from service.config import Settings, get_settings
from service.db import session_scope
from service.imaging import ImageDecodeError, choose_frontal, decode
from service.models import (
    AuditEvent,
    Draft,
    Instance,
    Report,
    ReportStatus,
    ReportVersion,
    Study,
    StudyState,
    WorkerHeartbeat,
    utcnow,
)
from service.storage import BlobStore

log = logging.getLogger("service.tasks")

QUEUES = ("ingest", "generate", "score")
TASK_NAMES = {"ingest": "radreport.ingest", "generate": "radreport.generate", "score": "radreport.score"}
TRANSIENT = (OperationalError, SAInterfaceError, OSError)


def make_celery(settings: Settings) -> Celery:
    """The Celery app: late acks, requeue on worker loss, prefetch 1, one queue per stage."""
    app = Celery("radreport", broker=settings.redis_url)
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "socket_timeout": max(settings.broker_timeout_s, 5.0),
        "socket_connect_timeout": settings.broker_timeout_s,
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue="ingest",
        task_routes={name: {"queue": stage} for stage, name in TASK_NAMES.items()},
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=settings.broker_timeout_s,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=True,
    )
    return app


celery_app = make_celery(get_settings())


# --------------------------------------------------------------------------- enqueueing


def enqueue(stage: str, study_or_draft_id: str) -> bool:
    """Publish one task; False (logged) when Redis is unreachable: the reconciler will re-send it."""
    try:
        celery_app.send_task(
            TASK_NAMES[stage], args=[study_or_draft_id], queue=stage,
            retry=True, retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2},
        )
        return True
    except Exception as error:  # kombu raises assorted connection errors
        log.warning("could not enqueue %s for %s (%s); the reconciler will retry", stage, study_or_draft_id,
                    type(error).__name__)
        return False


def enqueue_and_mark(settings: Settings, stage: str, study_id: str) -> bool:
    """Enqueue a study stage and record when, so the reconciler does not re-send it too soon."""
    sent = enqueue(stage, study_id)
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
        if enqueue("score", draft_id):
            counts["score"] += 1
    if any(counts.values()):
        log.info("reconciler re-enqueued %s", counts)
    return counts


# --------------------------------------------------------------------------- worker identity


def worker_name() -> str:
    """This process's name in leases and heartbeats."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------- ingest


def _run_stage(task: Any, stage: str, study_id: str, body: Callable[[Settings, str, str], None]) -> None:
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
            pipeline.fail(session, study, code=error.code, reason=error.message, actor=f"worker:{worker}")
        log.info("%s of study %s failed: %s", stage, study_id, error.code)
    except TRANSIENT as error:
        _release(settings, study_id, stage)
        log.warning("%s of study %s hit a transient fault (%s); retrying", stage, study_id, type(error).__name__)
        if task.request.retries >= settings.transient_retries:
            _fail(settings, study_id, "transient_fault_exhausted",
                  f"{stage} kept failing on a transient fault ({type(error).__name__}) after "
                  f"{settings.transient_retries} retries; check database and storage health", worker)
            return
        raise task.retry(countdown=settings.retry_backoff_s * 2 ** task.request.retries) from None
    except Exception as error:
        log.exception("%s of study %s failed unexpectedly", stage, study_id)
        _fail(settings, study_id, "internal_error",
              f"{stage} failed with an internal error ({type(error).__name__}); see the worker log", worker)


def _release(settings: Settings, study_id: str, stage: str) -> None:
    try:
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            if study is not None:
                pipeline.release(session, study, stage, undo_attempt=True)
    except TRANSIENT:
        pass  # the lease simply expires


def _fail(settings: Settings, study_id: str, code: str, reason: str, worker: str) -> None:
    with session_scope(settings.database_url) as session:
        study = session.get(Study, study_id)
        if study is not None:
            pipeline.fail(session, study, code=code, reason=reason, actor=f"worker:{worker}")


def _ingest(settings: Settings, study_id: str, worker: str) -> None:
    store = BlobStore(settings.storage_dir)
    with session_scope(settings.database_url) as session:
        instances = [(i.id, i.sha256) for i in session.scalars(select(Instance).where(Instance.study_id == study_id).order_by(Instance.id))]
    decoded: dict[int, Any] = {}
    errors: list[ImageDecodeError] = []
    for instance_id, sha in instances:
        try:
            decoded[instance_id] = decode(store.get(sha), max_side=settings.image_cache_size)
        except ImageDecodeError as error:
            errors.append(error)
    if not decoded:
        raise errors[0] if errors else ImageDecodeError("no_instances", "the study has no instances")
    ids = list(decoded)
    frontal = choose_frontal([decoded[i] for i in ids])
    if frontal is None:
        raise ImageDecodeError("no_frontal_view", "the study has no frontal (PA or AP) image to report on")
    image_shas = {i: store.put_array(decoded[i].pixels) for i in ids}
    with session_scope(settings.database_url) as session:
        study = session.get(Study, study_id)
        if study.state != StudyState.received or study.lease_owner != worker:
            return  # someone else finished or retook it
        for instance in study.instances:
            if instance.id in decoded:
                image = decoded[instance.id].image
                instance.view, instance.laterality = _short(image.view), _short(image.laterality)
                instance.modality = _short(image.modality)
                instance.rows, instance.columns = image.rows, image.columns
                instance.image_sha256 = image_shas[instance.id]
                instance.selected = instance.id == ids[frontal]
        study.frontal_sha256 = image_shas[ids[frontal]]
        pipeline.transition(session, study, StudyState.ingested, actor=f"worker:{worker}",
                            details={"images": len(decoded), "undecodable": len(errors)})
    enqueue_and_mark(settings, "generate", study_id)


def _short(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))[:16] or None


@celery_app.task(name=TASK_NAMES["ingest"], bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def ingest_study(self: Any, study_id: str) -> None:
    """Decode a study's instances, keep its images, choose the frontal view; then enqueue generate."""
    _run_stage(self, "ingest", study_id, _ingest)


# --------------------------------------------------------------------------- generate

_MODEL: Any = None
_MODEL_LOCK = threading.Lock()


def load_model(settings: Settings | None = None, *, warmup: bool = True) -> Any:
    """The process's DraftModel (loaded once; every shape bucket compiled before it is returned)."""
    global _MODEL
    settings = settings or get_settings()
    with _MODEL_LOCK:
        if _MODEL is None:
            from service.generation import DraftModel

            if settings.jax_cache_dir is not None:
                from modeling.runtime import enable_compilation_cache

                enable_compilation_cache(settings.jax_cache_dir)
            if settings.model_bundle is None:
                raise RuntimeError("MODEL_BUNDLE is not set: a generate worker needs a model bundle directory")
            model = DraftModel(settings.model_bundle, batch_size=settings.batch_size,
                               max_new_tokens=settings.max_new_tokens)
            if warmup:
                model.warmup()
            _MODEL = model
    return _MODEL


def _gather_batch(settings: Settings, first: str, worker: str) -> list[str]:
    """Claim more fresh studies waiting for generation, up to the batch size or the batch wait."""
    batch = [first]
    deadline = time.monotonic() + settings.batch_wait_ms / 1000.0
    while len(batch) < settings.batch_size:
        with session_scope(settings.database_url) as session:
            candidates = session.scalars(
                select(Study.id).where(Study.state == StudyState.ingested, Study.generate_attempts == 0,
                                       Study.id.not_in(batch))
                .order_by(Study.ingested_at).limit(settings.batch_size - len(batch))
            ).all()
            for candidate in candidates:
                claim = pipeline.claim(session, candidate, "generate", worker=worker, lease_s=settings.lease_s,
                                       max_attempts=settings.max_attempts)
                if claim.status == "claimed":
                    batch.append(candidate)
        if len(batch) >= settings.batch_size or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return batch


def _maybe_inject_fault(settings: Settings, store: BlobStore, study_ids: list[str]) -> None:
    """Test hooks: die hard like an OOM kill (FAULT_KILL_MARKER), or stall once (FAULT_PAUSE_MARKER)."""
    if not (settings.fault_kill_marker or settings.fault_pause_marker):
        return
    import io

    import pydicom

    with session_scope(settings.database_url) as session:
        shas = [session.scalars(select(Instance.sha256).where(Instance.study_id == sid)).first() for sid in study_ids]
    descriptions = [
        str(pydicom.dcmread(io.BytesIO(store.get(sha)), stop_before_pixels=True).get("StudyDescription", ""))
        for sha in shas if sha is not None
    ]
    if settings.fault_kill_marker and any(settings.fault_kill_marker in d for d in descriptions):
        log.warning("fault injection: killing this worker (FAULT_KILL_MARKER)")
        os.kill(os.getpid(), signal.SIGKILL)
    with session_scope(settings.database_url) as session:
        first_attempt = all(session.get(Study, sid).generate_attempts == 1 for sid in study_ids)
    if settings.fault_pause_marker and first_attempt and any(settings.fault_pause_marker in d for d in descriptions):
        log.warning("fault injection: pausing %.1f s (FAULT_PAUSE_MARKER)", settings.fault_pause_s)
        time.sleep(settings.fault_pause_s)


def _generate(settings: Settings, study_id: str, worker: str) -> None:
    model = load_model(settings)
    store = BlobStore(settings.storage_dir)
    with session_scope(settings.database_url) as session:
        retake = session.get(Study, study_id).generate_attempts > 1
    # A study retaken after a lost worker runs alone, so a poison study cannot take others down.
    batch = [study_id] if retake else _gather_batch(settings, study_id, worker)
    try:
        _generate_batch(settings, batch, worker, model, store)
    except BaseException:
        # The first study is settled by _run_stage; give the others back so another delivery takes them.
        _release_all(settings, batch[1:], worker)
        raise


def _release_all(settings: Settings, study_ids: list[str], worker: str) -> None:
    try:
        with session_scope(settings.database_url) as session:
            for sid in study_ids:
                study = session.get(Study, sid)
                if study is not None and study.state == StudyState.generating and study.lease_owner == worker:
                    pipeline.release(session, study, "generate", undo_attempt=True)
    except TRANSIENT as error:
        # Nothing is lost: their leases stop being renewed once this task ends, expire, and the
        # reconciler hands the studies out again.
        log.warning("could not release %d batched studies (%s); their leases will expire",
                    len(study_ids), type(error).__name__)


def _generate_batch(settings: Settings, batch: list[str], worker: str, model: Any, store: BlobStore) -> None:
    from radiology import reports as report_sections

    _maybe_inject_fault(settings, store, batch)
    with session_scope(settings.database_url) as session:
        shas = {sid: session.get(Study, sid).frontal_sha256 for sid in batch}
    images = [store.get_array(shas[sid]).astype("float32") for sid in batch]
    started = time.perf_counter()
    texts = model.generate(images)
    compute_s = time.perf_counter() - started
    drafts: list[str] = []
    for sid, text in zip(batch, texts, strict=True):
        draft_id = _store_draft(settings, sid, text, model, worker, compute_s, len(batch), report_sections)
        if draft_id:
            drafts.append(draft_id)
    log.info("generated %d drafts in one call (%.2f s)", len(batch), compute_s)
    for draft_id in drafts:
        enqueue("score", draft_id)


def _sections(text: str, report_sections: Any) -> dict[str, Any]:
    parsed = report_sections.parse(text)
    if isinstance(parsed, dict):
        return {str(k).lower(): v for k, v in parsed.items()}
    if hasattr(parsed, "_asdict"):
        return dict(parsed._asdict())
    if hasattr(parsed, "__dataclass_fields__"):
        import dataclasses

        return {k: v for k, v in dataclasses.asdict(parsed).items() if isinstance(v, str | None | list | dict)}
    return {"text": text}


def _store_draft(settings: Settings, study_id: str, text: str, model: Any, worker: str, compute_s: float,
                 batch_size: int, report_sections: Any) -> str | None:
    """Write the draft, its report (version 1) and the transition; a second draft is impossible."""
    sections = _sections(text, report_sections)
    import hashlib

    try:
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            if study.state != StudyState.generating:
                return None
            draft = Draft(study_id=study_id, bundle_id=model.bundle_id, text=text, sections=sections,
                          generation=model.generation_settings, worker=worker)
            session.add(draft)
            session.flush()
            report = Report(study_id=study_id, draft_id=draft.id, status=ReportStatus.preliminary)
            session.add(report)
            session.flush()
            session.add(ReportVersion(report_id=report.id, version=1, text=text, sections=sections, author="ai:" + model.bundle_id,
                                      content_sha256=hashlib.sha256(text.encode()).hexdigest()))
            study.generate_compute_s = compute_s
            study.generate_batch_size = batch_size
            pipeline.transition(session, study, StudyState.draft_ready, actor=f"worker:{worker}",
                                details={"draft_id": draft.id, "bundle_id": model.bundle_id, "batch": batch_size})
            return draft.id
    except IntegrityError:
        # A draft for this study and bundle exists already (a duplicate delivery won the race).
        with session_scope(settings.database_url) as session:
            study = session.get(Study, study_id)
            if study.state == StudyState.generating:
                pipeline.transition(session, study, StudyState.draft_ready, actor=f"worker:{worker}",
                                    details={"duplicate": True})
        return None


@celery_app.task(name=TASK_NAMES["generate"], bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_study(self: Any, study_id: str) -> None:
    """Generate the draft of a study, batched with other studies waiting for generation."""
    _run_stage(self, "generate", study_id, _generate)


# --------------------------------------------------------------------------- score


def extract_findings(text: str) -> dict[str, Any]:
    """The findings `evaluation` extracts from a report: CheXpert-style labels and the RadGraph graph."""
    from evaluation import chexpert, radgraph

    labels = chexpert.label(text)
    graph = radgraph.extract(text)
    return {"chexpert": _jsonable(labels), "radgraph": _jsonable(graph)}


def _jsonable(value: Any) -> Any:
    import dataclasses
    import enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str | int | float) else value.name
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@celery_app.task(name=TASK_NAMES["score"], bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
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
            session.add(AuditEvent(actor=f"worker:{worker_name()}", action="draft.score", study_id=draft.study_id,
                                   details={"draft_id": draft_id}))


# --------------------------------------------------------------------------- heartbeats


class Heartbeat(threading.Thread):
    """Writes this worker's liveness (and renews its leases) every few seconds."""

    def __init__(self, settings: Settings, queues: list[str], bundle_id: str | None = None) -> None:
        super().__init__(name="radreport-heartbeat", daemon=True)
        self.settings, self.queues, self.bundle_id = settings, queues, bundle_id
        self.stop_event = threading.Event()

    def beat(self) -> None:
        """One heartbeat: upsert the row, renew leases."""
        name = worker_name()
        with session_scope(self.settings.database_url) as session:
            row = session.get(WorkerHeartbeat, name)
            if row is None:
                row = WorkerHeartbeat(name=name, queues=",".join(self.queues), pid=os.getpid(), bundle_id=self.bundle_id)
                session.add(row)
            row.last_seen = utcnow()
            pipeline.renew_leases(session, name, self.settings.lease_s)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.beat()
            except Exception as error:  # a database blip must not kill the thread
                log.warning("heartbeat failed (%s)", type(error).__name__)
            self.stop_event.wait(self.settings.worker_heartbeat_s)

    def stop(self) -> None:
        """Stop beating and remove this worker's row."""
        self.stop_event.set()
        try:
            with session_scope(self.settings.database_url) as session:
                row = session.get(WorkerHeartbeat, worker_name())
                if row is not None:
                    session.delete(row)
        except Exception:
            pass


_HEARTBEAT: Heartbeat | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _HEARTBEAT
    if _HEARTBEAT is not None:
        return
    try:
        queues = sorted(sender.app.amqp.queues.consume_from.keys())
    except Exception:
        queues = list(QUEUES)
    bundle_id = _MODEL.bundle_id if _MODEL is not None else None
    _HEARTBEAT = Heartbeat(get_settings(), queues, bundle_id)
    _HEARTBEAT.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _HEARTBEAT is not None:
        _HEARTBEAT.stop()
