"""The evaluate stage (queue `evaluate`): one offline evaluation run of a model bundle, to its end.

A worker started with `radreport worker --queues evaluate` (solo pool: the run loads a model
bundle with JAX) claims the `Evaluation` row, runs `evaluation.run.evaluate_bundle` exactly as
`radreport evaluate --bundle` does, writes progress (studies generated / total) to the row while it
runs, and stores the results and the output folder (results.json, per_report.csv, report.html,
predictions.jsonl). The row, not Redis, is the truth: a redelivered message for a finished run
does nothing, and a run whose worker died is retaken until the attempt cap, then fails with a
reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from sqlalchemy import or_, update

from service.core.config import Settings, get_settings
from service.core.db import session_scope
from service.core.models import Evaluation, EvaluationState, WorkerHeartbeat, utcnow
from service.quality.evaluations import evaluation_dir
from service.worker.heartbeat import worker_name

log = logging.getLogger(__name__)


def _claim(settings: Settings, evaluation_id: str, worker: str) -> bool:
    """Take a queued run, or a running one whose worker stopped beating; False if done or held."""
    alive_after = utcnow() - dt.timedelta(seconds=settings.worker_alive_s)
    with session_scope(settings.database_url) as session:
        row = session.get(Evaluation, evaluation_id)
        if row is None or row.state in (EvaluationState.succeeded, EvaluationState.failed):
            return False
        if row.state == EvaluationState.running:
            beat = session.get(WorkerHeartbeat, row.worker) if row.worker else None
            if beat is not None and beat.last_seen >= alive_after and row.worker != worker:
                return False  # its worker is alive: a duplicate delivery
        result = session.execute(
            update(Evaluation)
            .where(Evaluation.id == evaluation_id, Evaluation.attempts == row.attempts,
                   or_(Evaluation.state == EvaluationState.queued,
                       Evaluation.state == EvaluationState.running))
            .values(state=EvaluationState.running, worker=worker, attempts=row.attempts + 1,
                    started_at=utcnow(), phase="loading", done=0)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        if row.attempts + 1 > settings.max_attempts:
            _finish(session, evaluation_id,
                    error=f"the evaluation worker was lost {row.attempts} times during this run; "
                    "it was not retried again (check the worker log for crashes or out-of-memory "
                    "kills)")
            return False
    return True


def _finish(
    session: Any, evaluation_id: str, *, results: dict | None = None, error: str | None = None
) -> None:
    row = session.get(Evaluation, evaluation_id, populate_existing=True)
    row.state = EvaluationState.failed if error else EvaluationState.succeeded
    row.error = error
    row.results = results
    row.phase = "done" if results is not None else "failed"
    row.finished_at = utcnow()


class ProgressWatcher(threading.Thread):
    """Copies the run's tqdm bar (`generating reports`) into its Evaluation row every second."""

    def __init__(self, settings: Settings, evaluation_id: str) -> None:
        super().__init__(name="radreport-evaluation-progress", daemon=True)
        self.settings, self.evaluation_id = settings, evaluation_id
        self.stop_event = threading.Event()
        self.last: tuple[str, int, int | None] | None = None

    def poll(self) -> None:
        """Write the current phase and counts when they changed."""
        from tqdm import tqdm

        bars = [b for b in list(getattr(tqdm, "_instances", []))
                if getattr(b, "desc", "") == "generating reports"]
        if bars:
            bar = bars[0]
            state = ("generating", int(bar.n), int(bar.total) if bar.total is not None else None)
        elif self.last is not None and self.last[0] == "generating":
            state = ("scoring", self.last[2] or self.last[1], self.last[2])
        else:
            return
        if state != self.last:
            with session_scope(self.settings.database_url) as session:
                session.execute(
                    update(Evaluation)
                    .where(Evaluation.id == self.evaluation_id,
                           Evaluation.state == EvaluationState.running)
                    .values(phase=state[0], done=state[1], total=state[2])
                    .execution_options(synchronize_session=False)
                )
            self.last = state

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            try:
                self.poll()
            except Exception as error:  # a database blip must not end the run
                log.warning("evaluation progress update failed (%s)", type(error).__name__)


def run_evaluation(settings: Settings, evaluation_id: str, worker: str | None = None) -> bool:
    """Claim and run one evaluation to its end (succeeded or failed); False if nothing to do."""
    from evaluation.run import evaluate_bundle

    worker = worker or worker_name()
    if not _claim(settings, evaluation_id, worker):
        log.info("evaluation %s skipped (finished or held by a live worker)", evaluation_id)
        return False
    with session_scope(settings.database_url) as session:
        row = session.get(Evaluation, evaluation_id)
        bundle, data, split, options = row.bundle_dir, row.data_dir, row.split, dict(row.options)
    out = evaluation_dir(settings) / evaluation_id
    with session_scope(settings.database_url) as session:
        session.get(Evaluation, evaluation_id).out_dir = str(out)
    watcher = ProgressWatcher(settings, evaluation_id)
    watcher.start()
    try:
        batch_size = int(options.pop("batch_size", 8))
        results = evaluate_bundle(bundle, data, split, out, batch_size, progress=True, **options)
    except Exception as error:
        watcher.stop_event.set()
        log.warning("evaluation %s failed (%s)", evaluation_id, type(error).__name__)
        with session_scope(settings.database_url) as session:
            message = f"the evaluation failed: {type(error).__name__}: {error}"
            _finish(session, evaluation_id, error=message[:2000])
        return True
    watcher.stop_event.set()
    watcher.join(timeout=5)
    with session_scope(settings.database_url) as session:
        row = session.get(Evaluation, evaluation_id)
        row.done = row.total = int(results.get("reports", 0))
        _finish(session, evaluation_id, results=results)
    return True


def evaluate_task(self: Any, evaluation_id: str) -> None:
    """Run one offline evaluation (idempotent: a finished run is left alone)."""
    run_evaluation(get_settings(), evaluation_id)

