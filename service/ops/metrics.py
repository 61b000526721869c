"""Prometheus metrics: computed from the database and Redis at scrape time, plus HTTP latencies.

The database is the truth, so several API replicas report the same numbers and workers need no
metrics endpoint. No label ever carries a patient identifier: labels are states, stages, queues,
failure codes and route templates.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import OutboxState, Study, StudyState, WorkerHeartbeat, utcnow
from service.core.queues import OUTBOX, QUEUES
from service.dicomweb import outbox

log = logging.getLogger(__name__)
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
RECENT = 2000


def _histogram(name: str, doc: str, samples: dict[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["stage"])
    for stage, values in samples.items():
        buckets, total = [], 0.0
        for bound in STAGE_BUCKETS:
            buckets.append((str(bound), sum(1 for v in values if v <= bound)))
        buckets.append(("+Inf", len(values)))
        total = sum(values)
        family.add_metric([stage], buckets, total)
    return family


class PipelineCollector(Collector):
    """Study counts by state, failures by cause, stage latencies, queue depths, live workers, the
    outbox of reports to the PACS."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[object]:
        try:
            with session_scope(self.settings.database_url) as session:
                by_state = select(Study.state, func.count()).group_by(Study.state)
                states = dict(session.execute(by_state).all())
                failures = session.execute(
                    select(Study.failure_code, func.count()).where(Study.state == StudyState.failed)
                    .group_by(Study.failure_code)
                ).all()
                rows = session.execute(
                    select(Study.received_at, Study.ingest_started_at, Study.ingested_at,
                           Study.generate_started_at, Study.draft_ready_at,
                           Study.generate_compute_s)
                    .where(Study.draft_ready_at.is_not(None))
                    .order_by(Study.draft_ready_at.desc()).limit(RECENT)
                ).all()
                cutoff = utcnow() - dt.timedelta(seconds=self.settings.worker_alive_s)
                alive = select(WorkerHeartbeat.queues).where(WorkerHeartbeat.last_seen >= cutoff)
                heartbeats = session.scalars(alive).all()
                deliveries = outbox.statistics(session)
        except Exception as error:
            log.warning("metrics: database unavailable (%s)", type(error).__name__)
            return
        gauge = GaugeMetricFamily(
            "radreport_studies", "Studies by pipeline state", labels=["state"]
        )
        for state in StudyState:
            gauge.add_metric([state.value], states.get(state, 0))
        yield gauge
        failed = CounterMetricFamily(
            "radreport_study_failures", "Failed studies by cause", labels=["cause"]
        )
        for code, count in failures:
            failed.add_metric([code or "unknown"], count)
        yield failed
        samples: dict[str, list[float]] = {
            stage: [] for stage in ("ingest_wait", "ingest", "generate_wait", "generate",
                                    "generate_compute", "total")
        }
        for received, ingest_start, ingested, gen_start, ready, compute in rows:
            pairs = {"ingest_wait": (received, ingest_start), "ingest": (ingest_start, ingested),
                     "generate_wait": (ingested, gen_start), "generate": (gen_start, ready),
                     "total": (received, ready)}
            for stage, (a, b) in pairs.items():
                if a is not None and b is not None:
                    samples[stage].append((b - a).total_seconds())
            if compute is not None:
                samples["generate_compute"].append(compute)
        yield _histogram("radreport_stage_seconds",
                         f"Stage latencies of the last {RECENT} drafted studies", samples)
        workers = GaugeMetricFamily("radreport_workers_alive",
                                    "Workers with a recent heartbeat, per queue", labels=["queue"])
        for queue in (*QUEUES, OUTBOX):
            workers.add_metric([queue], sum(1 for q in heartbeats if queue in q.split(",")))
        yield workers
        yield from outbox_families(deliveries)
        depth = GaugeMetricFamily("radreport_queue_depth", "Messages waiting in each Redis queue",
                                  labels=["queue"])
        try:
            import redis

            timeout = self.settings.broker_timeout_s
            client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=timeout,
                                          socket_connect_timeout=timeout)
            try:
                for queue in (*QUEUES, OUTBOX):
                    depth.add_metric([queue], client.llen(queue))
            finally:
                client.close()
            yield depth
        except Exception as error:
            log.warning("metrics: Redis unavailable (%s)", type(error).__name__)


def outbox_families(stats: list[outbox.LaneStats]) -> Iterator[object]:
    """The outbox (reports to the PACS / FHIR) by destination: messages per state (waiting =
    pending + sending is the depth), deliveries, failed attempts, age of the oldest waiting one."""
    names = outbox.DICOM_DESTINATIONS + (outbox.FHIR, outbox.HL7)
    messages = GaugeMetricFamily("radreport_outbox_messages",
                                 "Outbox messages by destination and state",
                                 labels=["destination", "state"])
    delivered = CounterMetricFamily("radreport_outbox_deliveries",
                                    "Messages delivered, by destination", labels=["destination"])
    failed = CounterMetricFamily("radreport_outbox_failed_attempts",
                                 "Delivery attempts that did not deliver (PACS down, refused)",
                                 labels=["destination"])
    oldest = GaugeMetricFamily("radreport_outbox_oldest_waiting_seconds",
                               "Age of the oldest message not yet delivered (0: none)",
                               labels=["destination"])
    now = utcnow()
    for name in names:
        rows = {row.state: row for row in stats if row.destination == name}
        for state in OutboxState:
            messages.add_metric([name, state.value], rows[state].count if state in rows else 0)
        done = rows[OutboxState.delivered].count if OutboxState.delivered in rows else 0
        sending = rows[OutboxState.sending].count if OutboxState.sending in rows else 0
        delivered.add_metric([name], done)
        failed.add_metric([name], sum(row.attempts for row in rows.values()) - done - sending)
        waiting = [row.oldest for state, row in rows.items() if state in outbox.OPEN and row.oldest]
        oldest.add_metric([name], (now - min(waiting)).total_seconds() if waiting else 0.0)
    yield from (messages, delivered, failed, oldest)


def build_registry(settings: Settings) -> tuple[CollectorRegistry, Histogram]:
    """A registry with the pipeline collector and the HTTP request-latency histogram."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(settings))
    requests = Histogram(
        "radreport_http_request_seconds", "HTTP request latency by route template and status",
        ["method", "route", "status"], registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
    return registry, requests
