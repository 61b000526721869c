"""Celery tasks run in process (eager): bad input fails once, transient faults retry a bounded
number of times."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from service.auth.api_keys import create_api_key
from service.core.config import get_settings
from service.core.db import session_scope
from service.core.models import AuditEvent, Role, Study, StudyState
from service.core.storage import BlobStore
from service.studies.intake import InstanceHeader, inspect_instance, register_instances
from service.worker.app import task
from tests.helpers.service import DX_PRESENTATION, make_dicom


@pytest.fixture
def env_settings(settings, monkeypatch: pytest.MonkeyPatch):
    """The process settings (what tasks read) pointed at the test database and store."""
    for key, value in {"DATABASE_URL": settings.database_url,
                       "STORAGE_DIR": str(settings.storage_dir), "REDIS_URL": settings.redis_url,
                       "TRANSIENT_RETRIES": "2", "RETRY_BACKOFF_S": "0",
                       "BROKER_TIMEOUT_S": "0.2"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def unchecked(data: bytes) -> InstanceHeader:
    """A header as intake would make it, without intake's checks: a file stored before them."""
    return InstanceHeader(generate_uid(), generate_uid(), generate_uid(), DX_PRESENTATION,
                          data=data, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def stored_study(settings, data: bytes, *, header: InstanceHeader | None = None) -> str:
    with session_scope(settings.database_url) as session:
        create_api_key(session, name="task-test", role=Role.uploader)
    with session_scope(settings.database_url) as session:
        from service.core.models import User

        user = session.scalar(select(User).where(User.name == "task-test"))
        registration = register_instances(session, BlobStore(Path(settings.storage_dir)),
                                          [header or inspect_instance(data, settings)], user)
        return registration.stored[0].study.id


def test_a_good_study_is_ingested_with_its_frontal_image_chosen(env_settings):
    study_id = stored_study(env_settings, make_dicom(view="PA"))
    task("ingest").apply(args=[study_id])
    with session_scope(env_settings.database_url) as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.ingested and study.frontal_sha256
        assert study.instances[0].selected and study.instances[0].view == "PA"


def test_undecodable_input_fails_the_study_once_without_retry(env_settings):
    good = make_dicom(size=128)
    cut = good[: len(good) - 9000]  # pixel data cut short (intake refuses it; the worker too)
    study_id = stored_study(env_settings, cut, header=unchecked(cut))
    task("ingest").apply(args=[study_id])
    with session_scope(env_settings.database_url) as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.failed and study.failure_reason
        assert study.failure_code not in ("transient_fault_exhausted", "internal_error")
        assert study.ingest_attempts == 1


def test_a_transient_fault_is_retried_then_the_study_fails_with_its_cause(env_settings):
    study_id = stored_study(env_settings, make_dicom())
    with session_scope(env_settings.database_url) as session:
        sha = session.get(Study, study_id).instances[0].sha256
    BlobStore(Path(env_settings.storage_dir)).path(sha).unlink()  # the file store "is down"
    task("ingest").apply(args=[study_id])
    with session_scope(env_settings.database_url) as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.failed
        assert study.failure_code == "transient_fault_exhausted"
        assert "after 2 retries" in study.failure_reason
        assert study.ingest_attempts == 0  # a transient fault is not counted as a lost worker
        events = session.scalars(
            select(AuditEvent.action).where(AuditEvent.study_id == study_id)
        ).all()
    assert events.count("study.transition") == 1
