"""What readiness checks: Redis answers, and which workers are alive (from their heartbeats)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.models import WorkerHeartbeat, utcnow
from service.core.queues import QUEUES


def redis_ok(url: str, timeout: float) -> bool:
    """Whether Redis answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def live_workers(session: Session, alive_s: float) -> dict[str, int]:
    """Live workers per queue of the study pipeline, from their heartbeats."""
    cutoff = utcnow() - dt.timedelta(seconds=alive_s)
    counts = dict.fromkeys(QUEUES, 0)
    alive = select(WorkerHeartbeat.queues).where(WorkerHeartbeat.last_seen >= cutoff)
    for queues in session.scalars(alive):
        for queue in queues.split(","):
            if queue in counts:
                counts[queue] += 1
    return counts
