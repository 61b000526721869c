"""Bodies of the `/v1/studies` routes (pydantic models, so the OpenAPI schema is complete)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class UploadAccepted(BaseModel):
    """A study accepted for processing."""

    study_id: str
    state: str
    status_url: str
    instances_received: int = Field(description="Instances in this upload.")
    instances_new: int = Field(
        description="Instances not stored before (0 when the upload repeats one).")


class StageTimings(BaseModel):
    """Seconds spent waiting for and inside each stage (null until the stage ran)."""

    ingest_wait_s: float | None = None
    ingest_s: float | None = None
    generate_wait_s: float | None = None
    generate_s: float | None = None
    generate_compute_s: float | None = None
    generate_batch_size: int | None = None
    total_s: float | None = None


class StudyStatus(BaseModel):
    """Where a study is in the pipeline."""

    study_id: str
    state: str
    received_at: dt.datetime
    updated_at: dt.datetime
    instances: int
    images: int
    timings: StageTimings
    attempts: dict[str, int]
    failure_code: str | None = None
    failure_reason: str | None = None
    report_url: str | None = None


class DraftReport(BaseModel):
    """The AI draft of a study, by section, with how it was made and what findings it states."""

    study_id: str
    draft_id: str
    report_id: str | None
    bundle_id: str
    text: str
    sections: dict[str, Any]
    generation: dict[str, Any]
    findings: dict[str, Any] | None = Field(
        None, description="Null until the score worker has extracted them.")
    created_at: dt.datetime


class AuditEntry(BaseModel):
    """One audit event."""

    at: dt.datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    details: dict[str, Any]
