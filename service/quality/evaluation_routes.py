"""Routes of offline evaluations: start a run (bundle + dataset split) on a worker, follow it,
read its report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from service.auth.deps import ERRORS, require, roles_doc
from service.core.deps import SessionDep, SettingsDep
from service.core.errors import Problem
from service.core.models import AuditEvent, Evaluation, EvaluationState, Role, User
from service.quality import evaluations

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])

ADMINS = (Role.admin,)
#: The signed-in user of an admin-only route.
Admin = Annotated[User, Depends(require(*ADMINS))]
EvaluationId = Annotated[str, PathParam(min_length=1, max_length=36, pattern=r"^[0-9A-Za-z-]+$")]


class EvaluationRequest(BaseModel):
    """What to evaluate: a bundle on a MIMIC-CXR-layout dataset split (as `radreport evaluate`)."""

    bundle_dir: str = Field(min_length=1, max_length=1000,
                            description="Model bundle folder, as the workers see it.")
    data_dir: str = Field(min_length=1, max_length=1000,
                          description="MIMIC-CXR-layout dataset folder.")
    split: str = Field("test", pattern="^(train|validate|test)$")
    batch_size: int = Field(8, ge=1, le=256)
    max_studies: int | None = Field(None, ge=1, le=1_000_000,
                                    description="Only the first N studies.")
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    resamples: int = Field(500, ge=1, le=10_000,
                           description="Bootstrap resamples of the confidence intervals.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    tokenizer: str = Field("ptb", pattern="^(ptb|whitespace|ptb-java)$")
    uncertain: str = Field("negative", pattern="^(negative|positive)$")
    lowercase: bool = True


class EvaluationView(BaseModel):
    """A run: state, progress, results when done, links to its HTML report."""

    id: str
    state: str = Field(description="queued, running, succeeded or failed.")
    phase: str | None = Field(description="loading, generating, scoring, done or failed.")
    done: int = Field(description="Studies generated so far.")
    total: int | None = Field(description="Studies in the split (known once generation starts).")
    progress: float | None = Field(description="done / total.")
    request: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempts: int
    error: str | None
    results: dict[str, Any] | None = Field(
        description="results.json of the run (metrics with CIs, per finding, ...)."
    )
    report_url: str | None
    status_url: str


class EvaluationList(BaseModel):
    """A page of runs, newest first."""

    total: int
    items: list[EvaluationView]


def _view(session, row: Evaluation, *, with_results: bool = True) -> EvaluationView:
    creator = session.get(User, row.created_by)
    progress = (row.done / row.total) if row.total else None
    return EvaluationView(
        id=row.id, state=row.state.value, phase=row.phase, done=row.done, total=row.total,
        progress=progress,
        request={"bundle_dir": row.bundle_dir, "data_dir": row.data_dir, "split": row.split,
                 **(row.options or {})},
        created_by=creator.name if creator else "?", created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at, attempts=row.attempts,
        error=row.error, results=row.results if with_results else None,
        report_url=(f"/v1/evaluations/{row.id}/report.html"
                    if row.state == EvaluationState.succeeded else None),
        status_url=f"/v1/evaluations/{row.id}",
    )


def _get(session, evaluation_id: str) -> Evaluation:
    row = session.get(Evaluation, evaluation_id)
    if row is None:
        raise HTTPException(404, detail="no evaluation with this id")
    return row


@router.post("", status_code=202, response_model=EvaluationView,
             summary="Start an offline evaluation of a model bundle on a dataset split "
             "(runs on a worker)",
             description="Role: admin. A worker consuming queue `evaluate` generates the split's "
             "reports and scores them with every metric and bootstrap CIs, as `radreport evaluate "
             "--bundle ... --data ...`. 422 when a folder is missing or not allowed; 503 when the "
             "queue (Redis) cannot be reached.",
             openapi_extra=roles_doc(*ADMINS),
             responses={**ERRORS, 422: {"model": Problem}, 503: {"model": Problem}})
def start_evaluation(body: EvaluationRequest, session: SessionDep, settings: SettingsDep,
                     response: Response, user: Admin) -> EvaluationView:
    bundle, data = evaluations.check_paths(settings, body.bundle_dir, body.data_dir)
    options = body.model_dump(exclude={"bundle_dir", "data_dir", "split"}, exclude_none=True)
    row = Evaluation(state=EvaluationState.queued, bundle_dir=str(bundle), data_dir=str(data),
                     split=body.split, options=options, created_by=user.id)
    session.add(row)
    session.flush()
    session.add(AuditEvent(actor=user.name, user_id=user.id, action="evaluation.create",
                           details={"evaluation_id": row.id, "bundle": Path(bundle).name,
                                    "split": body.split}))
    session.commit()
    if not evaluations.enqueue_evaluation(settings, row.id):
        row.state, row.phase = EvaluationState.failed, "failed"
        row.finished_at = dt.datetime.now(dt.UTC)
        row.error = ("the work queue (Redis) could not be reached; start the evaluation again "
                     "when it is back")
        session.add(AuditEvent(actor=user.name, user_id=user.id, action="evaluation.enqueue_failed",
                               details={"evaluation_id": row.id}))
        session.commit()
        raise HTTPException(503, detail=row.error)
    response.headers["Location"] = f"/v1/evaluations/{row.id}"
    return _view(session, row)


@router.get("", response_model=EvaluationList,
            summary="Evaluation runs, newest first (without results)",
            description="Role: admin.", openapi_extra=roles_doc(*ADMINS), responses=ERRORS)
def list_evaluations(session: SessionDep, _: Admin,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50,
                     offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> EvaluationList:
    total = session.scalar(select(func.count()).select_from(Evaluation)) or 0
    rows = session.scalars(select(Evaluation).order_by(Evaluation.created_at.desc(), Evaluation.id)
                           .limit(limit).offset(offset))
    items = [_view(session, r, with_results=False) for r in rows]
    return EvaluationList(total=int(total), items=items)


@router.get("/{evaluation_id}", response_model=EvaluationView,
            summary="An evaluation's state, progress and results",
            description="Role: admin.", openapi_extra=roles_doc(*ADMINS),
            responses={**ERRORS, 404: {"model": Problem}})
def get_evaluation(evaluation_id: EvaluationId, session: SessionDep, _: Admin) -> EvaluationView:
    return _view(session, _get(session, evaluation_id))


@router.get("/{evaluation_id}/report.html", response_class=HTMLResponse,
            summary="The HTML report of a finished evaluation (plots and per-example rows)",
            description="Role: admin. 409 until the run has succeeded.",
            openapi_extra=roles_doc(*ADMINS),
            responses={**ERRORS, 200: {"content": {"text/html": {}}}, 404: {"model": Problem},
                       409: {"model": Problem}})
def get_evaluation_report(evaluation_id: EvaluationId, session: SessionDep,
                          _: Admin) -> HTMLResponse:
    row = _get(session, evaluation_id)
    if row.state != EvaluationState.succeeded or not row.out_dir:
        raise HTTPException(409, detail=f"the evaluation is {row.state.value}; its report exists "
                                        "once it has succeeded")
    path = Path(row.out_dir) / "report.html"
    if not path.is_file():
        raise HTTPException(404, detail="the report file is missing from the evaluation folder "
                                        "(STORAGE_DIR volume)")
    return HTMLResponse(path.read_text(encoding="utf-8"))
