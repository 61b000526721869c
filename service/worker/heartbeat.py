"""Worker liveness: this process's name, and a thread writing its heartbeat and renewing leases."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import signals

from service.core.config import Settings, get_settings
from service.core.db import session_scope
from service.core.models import WorkerHeartbeat, utcnow
from service.core.queues import QUEUES
from service.studies import pipeline
from service.worker import model

log = logging.getLogger(__name__)


def worker_name() -> str:
    """This process's name in leases and heartbeats."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
                row = WorkerHeartbeat(name=name, queues=",".join(self.queues), pid=os.getpid(),
                                      bundle_id=self.bundle_id)
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


def start(sender: Any = None, **_: Any) -> None:
    """Start this process's heartbeat once the worker consumes (Celery's `worker_ready`)."""
    global _HEARTBEAT
    if _HEARTBEAT is not None:
        return
    try:
        queues = sorted(sender.app.amqp.queues.consume_from.keys())
    except Exception:
        queues = list(QUEUES)
    loaded = model.loaded_model()
    _HEARTBEAT = Heartbeat(get_settings(), queues, loaded.bundle_id if loaded is not None else None)
    _HEARTBEAT.start()


def stop(**_: Any) -> None:
    """Stop the heartbeat and remove its row (Celery's `worker_shutdown`)."""
    if _HEARTBEAT is not None:
        _HEARTBEAT.stop()


def connect() -> None:
    """Beat while a worker of this process runs (Celery's worker signals)."""
    signals.worker_ready.connect(start, dispatch_uid="radreport-heartbeat-start")
    signals.worker_shutdown.connect(stop, dispatch_uid="radreport-heartbeat-stop")
