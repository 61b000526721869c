"""Quality monitoring routes: GET /v1/quality (plot-ready JSON), its HTML page, a report's score."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from service.auth.deps import ERRORS, require, roles_doc
from service.core.deps import ReportId, SessionDep
from service.core.errors import Problem
from service.core.models import DraftScore, Report, Role, User
from service.quality import scores

router = APIRouter(prefix="/v1/quality", tags=["quality"])

READERS = (Role.radiologist, Role.admin)
#: The signed-in user of a route open to radiologists and admins.
Clinician = Annotated[User, Depends(require(*READERS))]


class QualitySummary(BaseModel):
    """Agreement of AI drafts with signed reports: overall, per bundle, over time, per finding,
    plus x/y series."""

    window: dict[str, Any]
    conventions: dict[str, Any]
    open_reports: int
    rejected: int
    overall: dict[str, Any] | None = Field(
        description="Null when no report was signed in the window."
    )
    per_bundle: dict[str, dict[str, Any]]
    over_time: list[dict[str, Any]]
    per_finding: dict[str, dict[str, float]]
    assessment: dict[str, int] = Field(description="IHE AI result assessment counts: drafts "
                                       "accepted unchanged, modified before signing, rejected.")
    series: dict[str, Any] | None = None


class ReportQuality(BaseModel):
    """The stored score of one signed report's draft."""

    report_id: str
    bundle_id: str
    signed_version: int
    signed_at: dt.datetime
    draft_to_sign_s: float
    unchanged: bool
    edit_distance: int
    edit_distance_words: int
    normalized_edit_distance: float
    metrics: dict[str, Any]
    draft_labels: dict[str, Any]
    signed_labels: dict[str, Any]


Since = Annotated[dt.datetime | None, Query(description="Signed at or after (ISO 8601).")]
Until = Annotated[dt.datetime | None, Query(description="Signed before (ISO 8601).")]
Bundle = Annotated[
    str | None, Query(max_length=200, pattern=r"^[^\x00]*$", description="Only this model bundle.")
]
Period = Annotated[str, Query(pattern="^(day|week)$", description="Bucket of the time series.")]


def _summary(session, since, until, bundle_id, period) -> dict[str, Any]:
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise HTTPException(422, detail="`since` must be before `until`")
    scores.backfill(session)
    return scores.summarize(session, since=since, until=until, bundle_id=bundle_id, period=period)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@router.get("", response_model=QualitySummary,
            summary="Draft quality against signed reports (plot-ready JSON)",
            description="Roles: admin, radiologist. Corpus metrics are `evaluation.score` over "
            "each group's (draft, signed) pairs; also accepted-unchanged rate, edit distance, "
            "draft-to-sign time, per finding.",
            openapi_extra=roles_doc(*READERS), responses={**ERRORS, 422: {"model": Problem}})
def get_quality(session: SessionDep, _: Clinician, since: Since = None, until: Until = None,
                bundle_id: Bundle = None, period: Period = "day") -> QualitySummary:
    return QualitySummary(**_summary(session, since, until, bundle_id, period))


@router.get("/html", response_class=HTMLResponse,
            summary="Draft quality as a small HTML page with plots",
            description="Roles: admin, radiologist. Same numbers as GET /v1/quality.",
            openapi_extra=roles_doc(*READERS),
            responses={**ERRORS, 200: {"content": {"text/html": {}}}})
def get_quality_html(session: SessionDep, _: Clinician, since: Since = None, until: Until = None,
                     bundle_id: Bundle = None, period: Period = "day") -> HTMLResponse:
    return HTMLResponse(scores.render_html(_summary(session, since, until, bundle_id, period)))


@router.get("/reports/{report_id}", response_model=ReportQuality,
            summary="The stored score of one signed report's draft",
            description="Roles: admin, radiologist. 404 until the report is signed.",
            openapi_extra=roles_doc(*READERS), responses={**ERRORS, 404: {"model": Problem}})
def get_report_quality(report_id: ReportId, session: SessionDep, _: Clinician) -> ReportQuality:
    row = session.scalar(select(DraftScore).where(DraftScore.report_id == report_id))
    if row is None:
        row = scores.score_report(session, report_id) if _exists(session, report_id) else None
    if row is None:
        raise HTTPException(404, detail="no score: the report does not exist or is not signed yet")
    return ReportQuality(report_id=row.report_id, bundle_id=row.bundle_id,
                         signed_version=row.signed_version, signed_at=row.signed_at,
                         draft_to_sign_s=row.draft_to_sign_s, unchanged=row.unchanged,
                         edit_distance=row.edit_distance,
                         edit_distance_words=row.edit_distance_words,
                         normalized_edit_distance=row.normalized_edit_distance, metrics=row.metrics,
                         draft_labels=row.draft_labels, signed_labels=row.signed_labels)


def _exists(session, report_id: str) -> bool:
    return session.get(Report, report_id) is not None
