"""Operational routes: /healthz, /readyz, /metrics and POST /v1/score."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from service.auth.deps import ERRORS, require, roles_doc
from service.core.db import session_scope
from service.core.deps import SessionDep, SettingsDep
from service.core.jsonable import jsonable
from service.core.models import Role, User
from service.core.queues import QUEUES
from service.ops.health import live_workers, redis_ok

router = APIRouter(tags=["operations"])


class ScorePair(BaseModel):
    """A generated report and the reference it is compared with."""

    hypothesis: str = Field(max_length=20000)
    reference: str = Field(max_length=20000)


class ScoreRequest(BaseModel):
    """Pairs of texts to score."""

    pairs: list[ScorePair] = Field(min_length=1, max_length=256)


class ScoreResponse(BaseModel):
    """Every metric of `evaluation.score` over the pairs."""

    count: int
    metrics: dict[str, Any]


class Readiness(BaseModel):
    """Whether the database, Redis and a worker per queue are available."""

    ready: bool
    database: bool
    redis: bool
    workers: dict[str, int]


@router.get(
    "/healthz", summary="Liveness: the API process answers", description="No authentication."
)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database, Redis and at least one worker per queue",
    description="No authentication. 503 when any dependency is missing.",
    responses={503: {"model": Readiness}},
)
def readyz(request: Request, response: Response, settings: SettingsDep) -> Readiness:
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
    description=(
        "Role: admin (configure the scraper with a bearer token). Labels carry no patient data."
    ),
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

    hypotheses = [pair.hypothesis for pair in body.pairs]
    references = [pair.reference for pair in body.pairs]
    try:
        result = evaluation.score(hypotheses, references)
    except ValueError as error:
        raise HTTPException(422, detail=f"these texts cannot be scored: {error}") from None
    return ScoreResponse(count=len(body.pairs), metrics=jsonable(result))
