"""The workers' Celery app: made from the settings on first use (never at import), every task
registered under its stable name (`service.core.queues.TASK_NAMES`).

`radreport worker` runs it; the `celery` command finds it as `service.worker.app` (its `app`
attribute), e.g. `celery -A service.worker.app inspect ping`. Tests run a task in process with
`task("ingest").apply(args=[study_id])`.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery, Task

from service.core.config import get_settings
from service.core.queues import TASK_NAMES, make_celery
from service.worker import deliver, evaluate, generate, heartbeat, ingest, score

#: The function of each queue's task; each takes the bound task and one id.
TASKS = {"ingest": ingest.ingest_study, "generate": generate.generate_study,
         "score": score.score_draft, "evaluate": evaluate.evaluate_task,
         "outbox": deliver.deliver_message}


@functools.cache
def celery_app() -> Celery:
    """The process's worker app: the settings' broker, every task, the heartbeat, and fault
    injection when a FAULT_* setting asks for it (chaos tests only)."""
    settings = get_settings()
    app = make_celery(settings)
    for queue, function in TASKS.items():
        app.task(name=TASK_NAMES[queue], bind=True, acks_late=True, reject_on_worker_lost=True,
                 max_retries=None)(function)
    heartbeat.connect()
    if settings.fault_kill_marker or settings.fault_pause_marker:
        from service.worker import faults  # test-only: never imported in production

        faults.install()
    return app


def task(queue: str) -> Task:
    """The registered task of `queue`."""
    return celery_app().tasks[TASK_NAMES[queue]]


def __getattr__(name: str) -> Any:
    """`app`: the Celery app, made on first access (what `celery -A service.worker.app` finds)."""
    if name == "app":
        return celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
