"""Reads of patient data are audited and cached nowhere; HTML pages carry a CSP; API keys may
expire and record their last use."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from service.auth.api_keys import create_api_key
from service.core.db import session_scope
from service.core.models import ApiKey, AuditEvent, Role, Study, StudyState
from tests.helpers.review import store_draft
from tests.helpers.service import bearer


def test_reading_a_draft_is_audited_and_not_cacheable(client, tokens, settings):
    study_id, report_id = store_draft(settings, "FINDINGS: Clear lungs. IMPRESSION: Normal.")
    response = client.get(f"/v1/studies/{study_id}/report", headers=bearer(tokens["radiologist"]))
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    with session_scope(settings.database_url) as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "study.read",
                                                           AuditEvent.study_id == study_id))
    assert event.actor == "test-radiologist"
    assert event.details == {"view": "draft", "report_id": report_id}


def test_reading_an_image_is_audited_and_not_cacheable(client, tokens, settings):
    import numpy as np

    from service.core.storage import BlobStore
    from tests.helpers.service import make_dicom

    upload = client.post("/v1/studies", files=[("files", ("a.dcm", make_dicom()))],
                         headers=bearer(tokens["uploader"])).json()
    assert "study_id" in upload, upload
    with session_scope(settings.database_url) as session:  # what ingest would have kept
        study = session.get(Study, upload["study_id"])
        study.instances[0].image_sha256 = BlobStore(settings.storage_dir).put_array(
            np.zeros((8, 8), np.float32))
        study.state = StudyState.ingested
    response = client.get(f"/v1/studies/{upload['study_id']}/images/0.png",
                          headers=bearer(tokens["admin"]))
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    with session_scope(settings.database_url) as session:
        details = session.scalars(select(AuditEvent.details).where(
            AuditEvent.action == "study.read")).all()
    assert details == [{"view": "image", "index": 0, "window": "default"}]


def test_every_answer_is_no_store_and_nosniff_and_html_has_a_csp(client, tokens):
    for response in (client.get("/healthz"),
                     client.post("/v1/login", data={"username": "x", "password": "y" * 12}),
                     client.get("/v1/quality/html", headers=bearer(tokens["admin"]))):
        assert response.headers["Cache-Control"] == "no-store", response.url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src" not in response.headers["Content-Security-Policy"]  # no scripts at all
    page = client.get("/ui/")  # the review page keeps its own policy
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_an_expired_api_key_is_refused_with_a_reason(client, settings):
    with session_scope(settings.database_url) as session:
        token = create_api_key(session, name="short-lived", role=Role.admin, expires_days=1)
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    with session_scope(settings.database_url) as session:
        session.execute(update(ApiKey).values(expires_at=dt.datetime(2000, 1, 1)))
    response = client.get("/v1/me", headers=bearer(token))
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_an_api_key_records_when_it_was_last_used(client, settings):
    with session_scope(settings.database_url) as session:
        token = create_api_key(session, name="machine", role=Role.uploader)
        assert session.scalar(select(ApiKey.last_used_at)) is None
    client.get("/v1/me", headers=bearer(token))
    with session_scope(settings.database_url) as session:
        key = session.scalar(select(ApiKey))
        assert key.last_used_at is not None and key.expires_at is None
