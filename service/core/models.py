"""The database schema: users and API keys, studies and instances, drafts, reports, versions, audit.

The database, not Redis, is the truth about every study. Review and sign-off (issue 7) build on
`Report` / `ReportVersion`: the AI `Draft` is immutable, a report's text lives in append-only
versions, and every state change of a study or report is an `AuditEvent` with time and actor.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    """Timezone-aware now (UTC); every stored time is UTC."""
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    """A random public identifier (UUID4 text)."""
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as naive UTC, read back timezone-aware (SQLite and PostgreSQL alike)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime()}


class Role(enum.StrEnum):
    """What a user may do: push studies, read and review drafts, administer, or (a machine: an
    image viewer, a PACS pulling from us) search and read images over QIDO-RS / WADO-RS."""

    uploader = "uploader"
    radiologist = "radiologist"
    admin = "admin"
    viewer = "viewer"


class StudyState(enum.StrEnum):
    """The study state machine; `draft_ready` and `failed` end the automatic pipeline."""

    received = "received"
    ingested = "ingested"
    generating = "generating"
    draft_ready = "draft_ready"
    in_review = "in_review"
    signed = "signed"
    rejected = "rejected"  # a radiologist rejected the AI draft (review, issue 7)
    failed = "failed"


TERMINAL_PIPELINE_STATES = frozenset({StudyState.draft_ready, StudyState.failed})


class User(Base):
    """A person or a machine; machines authenticate with API keys, people also with passwords."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[Role] = mapped_column(Enum(Role, name="role", native_enum=False, length=20))
    password_hash: Mapped[str | None] = mapped_column(String(300), default=None)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="user")


class ApiKey(Base):
    """A bearer token, stored only as its SHA-256 (256 random bits need no slow hash)."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    #: None: the key never expires (`radreport admin create-key --expires-days`).
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    #: When the key last authenticated a request (updated at most once a minute).
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    user: Mapped[User] = relationship(back_populates="api_keys")


class Study(Base):
    """One StudyInstanceUID: its pipeline state, timings, attempts, lease and failure reason."""

    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[StudyState] = mapped_column(
        Enum(StudyState, name="study_state", native_enum=False, length=20), index=True
    )
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ingest_started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ingested_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    generate_started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    draft_ready_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    failed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ingest_attempts: Mapped[int] = mapped_column(default=0)
    generate_attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    failure_code: Mapped[str | None] = mapped_column(String(64), default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    frontal_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    generate_compute_s: Mapped[float | None] = mapped_column(Float, default=None)
    generate_batch_size: Mapped[int | None] = mapped_column(default=None)
    instances: Mapped[list[Instance]] = relationship(
        back_populates="study", order_by="Instance.id"
    )


class Instance(Base):
    """One SOP instance (a DICOM file) of a study, stored by content hash."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Filled by ingest.
    view: Mapped[str | None] = mapped_column(String(16), default=None)
    laterality: Mapped[str | None] = mapped_column(String(8), default=None)
    modality: Mapped[str | None] = mapped_column(String(8), default=None)
    rows: Mapped[int | None] = mapped_column(default=None)
    columns: Mapped[int | None] = mapped_column(default=None)
    image_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    selected: Mapped[bool] = mapped_column(default=False)
    # DEID_ON_INGEST with DEID_KEEP_ORIGINAL (migration 0004): the blob of the identified original.
    original_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    study: Mapped[Study] = relationship(back_populates="instances")


class IndexedInstance(Base):
    """The search index of QIDO-RS (issue 18, migration 0004): one row per stored instance.

    The matching keys of PS3.18 as columns (patient, study, series and instance attributes), and
    the instance's header as DICOM JSON without bulk data (`header`: WADO-RS metadata and QIDO-RS
    `includefield`). Written at intake from the bytes that are stored, so with DEID_ON_INGEST it
    indexes the de-identified copy.
    """

    __tablename__ = "instance_index"
    __table_args__ = (
        Index("ix_instance_index_study", "study_uid", "series_uid"),
        Index("ix_instance_index_patient", "patient_id"),
        Index("ix_instance_index_date", "study_date"),
        Index("ix_instance_index_accession", "accession_number"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), unique=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(64), default=None)
    patient_name: Mapped[str | None] = mapped_column(String(200), default=None)
    study_date: Mapped[str | None] = mapped_column(String(8), default=None)
    study_time: Mapped[str | None] = mapped_column(String(16), default=None)
    accession_number: Mapped[str | None] = mapped_column(String(16), default=None)
    study_description: Mapped[str | None] = mapped_column(String(64), default=None)
    modality: Mapped[str | None] = mapped_column(String(16), default=None)
    series_number: Mapped[int | None] = mapped_column(default=None)
    instance_number: Mapped[int | None] = mapped_column(default=None)
    header: Mapped[dict[str, Any]] = mapped_column(JSON)
    indexed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Draft(Base):
    """The AI draft of a study by one model bundle: immutable, at most one per (study, bundle)."""

    __tablename__ = "drafts"
    __table_args__ = (UniqueConstraint("study_id", "bundle_id", name="uq_draft_study_bundle"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    bundle_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    sections: Mapped[dict[str, Any]] = mapped_column(JSON)
    generation: Mapped[dict[str, Any]] = mapped_column(JSON)
    findings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    worker: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    scored_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ReportStatus(enum.StrEnum):
    """FHIR DiagnosticReport-aligned status of the human-facing report."""

    preliminary = "preliminary"
    final = "final"
    amended = "amended"
    rejected = "rejected"


class Report(Base):
    """The radiologist-facing report of a study, seeded from its draft; text lives in versions."""

    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), unique=True)
    draft_id: Mapped[str] = mapped_column(ForeignKey("drafts.id"))
    status: Mapped[ReportStatus] = mapped_column(
        Enum(ReportStatus, name="report_status", native_enum=False, length=20)
    )
    current_version: Mapped[int] = mapped_column(default=1)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    priority: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    versions: Mapped[list[ReportVersion]] = relationship(order_by="ReportVersion.version")
    # Review (issue 7, migration 0002): when the claim was taken, last change, why it was rejected.
    claimed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    rejected_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Triage (migration 0006): the findings of the AI draft that raised the priority.
    triage: Mapped[list[str] | None] = mapped_column(JSON, default=None)


class ReportVersion(Base):
    """One append-only version of a report's text; version 1 is the AI draft."""

    __tablename__ = "report_versions"
    __table_args__ = (UniqueConstraint("report_id", "version", name="uq_report_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"), index=True)
    version: Mapped[int] = mapped_column()
    text: Mapped[str] = mapped_column(Text)
    sections: Mapped[dict[str, Any]] = mapped_column(JSON)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    author: Mapped[str] = mapped_column(String(200))
    content_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """An append-only record of who did what, when: state transitions and every write."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_study_at", "study_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    action: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id"), default=None)
    report_id: Mapped[str | None] = mapped_column(ForeignKey("reports.id"), default=None)
    from_state: Mapped[str | None] = mapped_column(String(20), default=None)
    to_state: Mapped[str | None] = mapped_column(String(20), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WorkerHeartbeat(Base):
    """Liveness of worker processes, per queue set; readiness needs one live worker per queue."""

    __tablename__ = "worker_heartbeats"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column()
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    bundle_id: Mapped[str | None] = mapped_column(String(200), default=None)


# --------------------------------------------------------------------------- the outbox (issue 18)


class OutboxState(enum.StrEnum):
    """Where an outgoing message is: waiting (or retrying), being sent, delivered, given up."""

    pending = "pending"
    sending = "sending"
    delivered = "delivered"
    failed = "failed"


class OutboxMessage(Base):
    """One document (a report's DICOM SR, or its FHIR DiagnosticReport) for one destination.

    Written in the transaction of the change that causes it (draft stored, signed, amended), so a
    crash loses nothing; `service.dicomweb.outbox` delivers the messages of a study and destination
    in id order with retries. The payload lives in the file store (`payload_sha256`), like the
    images it reports on; `last_error` never holds patient data.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        UniqueConstraint("destination", "document_key", name="uq_outbox_destination_document"),
        Index("ix_outbox_lane", "study_id", "destination", "state"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    report_id: Mapped[str | None] = mapped_column(ForeignKey("reports.id"), default=None)
    kind: Mapped[str] = mapped_column(String(16))  # "draft" | "signed" | "amended" | "rejected"
    report_version: Mapped[int] = mapped_column()
    destination: Mapped[str] = mapped_column(String(16))  # "stow" | "cstore" | "fhir" | "hl7"
    document_key: Mapped[str] = mapped_column(String(128))  # the SR's SOP Instance UID, ...
    media_type: Mapped[str] = mapped_column(String(64))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[OutboxState] = mapped_column(
        Enum(OutboxState, name="outbox_state", native_enum=False, length=20),
        default=OutboxState.pending)
    attempts: Mapped[int] = mapped_column(default=0)
    rejections: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)


# --------------------------------------------------------------------------- review (issue 7)


class LoginToken(Base):
    """A person's sign-in token (POST /v1/login): short-lived, idle-limited, revocable, hashed."""

    __tablename__ = "login_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    idle_s: Mapped[int] = mapped_column()
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    user: Mapped[User] = relationship()


class Signature(Base):
    """An electronic signature: signer, meaning, server time and content hash of a version, sealed.

    `seal` is HMAC-SHA256 (key outside the database) over those fields and the previous seal of the
    same report, so the signatures of a report form a hash chain (see service.review).
    """

    __tablename__ = "signatures"
    __table_args__ = (UniqueConstraint("report_id", "version", name="uq_signature_report_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"), index=True)
    version: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))  # "sign" | "amendment"
    signer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    signer_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(32))
    signed_at: Mapped[dt.datetime] = mapped_column()
    content_sha256: Mapped[str] = mapped_column(String(64))
    amends_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"),
                                                            default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    previous_seal: Mapped[str | None] = mapped_column(String(64), default=None)
    seal: Mapped[str] = mapped_column(String(64))


class DraftScore(Base):
    """How far an AI draft was from the signed report: each metric, edit distance, timing."""

    __tablename__ = "draft_scores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"), unique=True)
    draft_id: Mapped[str] = mapped_column(ForeignKey("drafts.id"))
    bundle_id: Mapped[str] = mapped_column(String(200), index=True)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"))
    signed_version: Mapped[int] = mapped_column()
    draft_created_at: Mapped[dt.datetime] = mapped_column()
    signed_at: Mapped[dt.datetime] = mapped_column(index=True)
    draft_to_sign_s: Mapped[float] = mapped_column(Float)
    unchanged: Mapped[bool] = mapped_column()
    edit_distance: Mapped[int] = mapped_column()
    edit_distance_words: Mapped[int] = mapped_column()
    normalized_edit_distance: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    draft_labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    signed_labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    scored_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EvaluationState(enum.StrEnum):
    """An offline evaluation run's life: queued, running, then succeeded or failed."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class Evaluation(Base):
    """An offline evaluation (bundle + dataset split) run by a worker; results, report on disk."""

    __tablename__ = "evaluations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    state: Mapped[EvaluationState] = mapped_column(
        Enum(EvaluationState, name="evaluation_state", native_enum=False, length=20), index=True
    )
    bundle_dir: Mapped[str] = mapped_column(Text)
    data_dir: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    phase: Mapped[str | None] = mapped_column(String(32), default=None)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int | None] = mapped_column(default=None)
    out_dir: Mapped[str | None] = mapped_column(Text, default=None)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
