"""The work queues: their names, each task's registered name, and sending a task (producer side).

The API, the reconciler and the workers send work through `send`; the consuming side (the workers'
Celery app and the tasks themselves) is `service.worker`. A message carries only an id: the
database is the truth, so a lost message is re-sent by the reconciler and a duplicate does nothing.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from service.core.config import Settings

log = logging.getLogger(__name__)

#: The queues of the study pipeline, in order (each needs a live worker for /readyz).
QUEUES = ("ingest", "generate", "score")
#: The queue of offline evaluation runs (`POST /v1/evaluations`).
EVALUATE = "evaluate"
#: The queue of deliveries to the PACS / FHIR server (`service.dicomweb.outbox`): network-bound
#: work kept apart from scoring, so a PACS that is down never delays the pipeline.
OUTBOX = "outbox"
#: The registered Celery name of each queue's task; senders and workers agree through this table.
TASK_NAMES = {"ingest": "radreport.ingest", "generate": "radreport.generate",
              "score": "radreport.score", EVALUATE: "radreport.evaluate",
              OUTBOX: "radreport.outbox"}


def make_celery(settings: Settings) -> Celery:
    """A Celery app on `settings.redis_url`: late acks, requeue on worker loss, prefetch 1, one
    queue per task."""
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
        task_routes={name: {"queue": queue} for queue, name in TASK_NAMES.items()},
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


_PRODUCERS: dict[str, Celery] = {}
_PRODUCERS_LOCK = threading.Lock()


def producer(settings: Settings) -> Celery:
    """The app publishing to `settings.redis_url` (one per broker URL and process, made lazily)."""
    with _PRODUCERS_LOCK:
        if settings.redis_url not in _PRODUCERS:
            _PRODUCERS[settings.redis_url] = make_celery(settings)
        return _PRODUCERS[settings.redis_url]


def send(settings: Settings, queue: str, object_id: str) -> bool:
    """Publish the task of `queue` for one study, draft, evaluation or outbox message id; False
    (logged) when Redis cannot be reached."""
    try:
        producer(settings).send_task(
            TASK_NAMES[queue], args=[object_id], queue=queue, retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2},
        )
        return True
    except Exception as error:  # kombu raises assorted connection errors
        log.warning("could not enqueue %s for %s (%s)", queue, object_id, type(error).__name__)
        return False
