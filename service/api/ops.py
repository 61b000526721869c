"""Operational routes: /healthz, /readyz, /metrics and POST /v1/score."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy import select, text

from service.api.deps import ERRORS, SessionDep, SettingsDep, require, roles_doc
from service.api.schemas import Readiness, ScoreRequest, ScoreResponse
from service.models import Role, User, WorkerHeartbeat, utcnow
from service.tasks import QUEUES

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the API process answers", description="No authentication.")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


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


def live_workers(session, alive_s: float) -> dict[str, int]:
    """Live workers per queue, from their heartbeats."""
    cutoff = utcnow() - dt.timedelta(seconds=alive_s)
    counts = dict.fromkeys(QUEUES, 0)
    for queues in session.scalars(select(WorkerHeartbeat.queues).where(WorkerHeartbeat.last_seen >= cutoff)):
        for queue in queues.split(","):
            if queue in counts:
                counts[queue] += 1
    return counts


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database, Redis and at least one worker per queue",
    description="No authentication. 503 when any dependency is missing.",
    responses={503: {"model": Readiness}},
)
def readyz(request: Request, response: Response, settings: SettingsDep) -> Readiness:
    from service.db import session_scope

    database = False
    workers = dict.fromkeys(QUEUES, 0)
    try:
        with session_scope(settings.database_url) as session:
            session.execute(text("SELECT 1"))
            database = True
            workers = live_workers(session, settings.worker_alive_s)
    except Exception:
        database = False
    redis_up = redis_ok(settings.redis_url, settings.broker_timeout_s)
    ready = database and redis_up and all(workers.values())
    if not ready:
        response.status_code = 503
    return Readiness(ready=ready, database=database, redis=redis_up, workers=workers)


@router.get(
    "/metrics",
    summary="Prometheus metrics (queue depth, stage latencies, failures by cause)",
    description="Role: admin (configure the scraper with a bearer token). Labels carry no patient data.",
    openapi_extra=roles_doc(Role.admin),
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request, _: Annotated[User, Depends(require(Role.admin))]) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    summary="Score generated reports against references with every metric of `evaluation`",
    description="Roles: radiologist, admin.",
    openapi_extra=roles_doc(Role.radiologist, Role.admin),
    responses={**ERRORS, 422: {"description": "Invalid body"}},
    tags=["scoring"],
)
def score(
    body: ScoreRequest,
    session: SessionDep,
    user: Annotated[User, Depends(require(Role.radiologist, Role.admin))],
) -> ScoreResponse:
    import evaluation
    from service.tasks import _jsonable

    hypotheses = [pair.hypothesis for pair in body.pairs]
    references = [pair.reference for pair in body.pairs]
    try:
        result = evaluation.score(hypotheses, references)
    except ValueError as error:
        raise HTTPException(422, detail=f"these texts cannot be scored: {error}") from None
    return ScoreResponse(count=len(body.pairs), metrics=_jsonable(result))
