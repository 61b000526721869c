"""Review test helpers: drafts written by the worker's own code, people with passwords, an API."""

from __future__ import annotations

import types

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from service.auth.accounts import create_user
from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Role, Study, StudyState
from tests.helpers.service import bearer

PASSWORDS = {"dr-ada": "ada-correct-horse-1", "dr-bob": "bob-battery-staple-2",
             "ops-admin": "admin-long-pass-3", "pacs-clerk": "uploader-pass-4444"}
ROLES = {"dr-ada": Role.radiologist, "dr-bob": Role.radiologist, "ops-admin": Role.admin,
         "pacs-clerk": Role.uploader}


def store_draft(settings: Settings, text: str, *, bundle_id: str = "bundle-a@000000000001",
                study_id: str | None = None) -> tuple[str, str]:
    """Write a draft with the generate worker's own function (`store_draft`); (study id, report id).

    Without `study_id` a new study is created in state `generating`; the text is the test's choice,
    so the tests know exactly what the AI "wrote".
    """
    from service.core.models import Report
    from service.worker.generate import store_draft as store_worker_draft

    if study_id is None:
        with session_scope(settings.database_url) as session:
            study = Study(study_uid=generate_uid(), state=StudyState.generating)
            session.add(study)
            session.flush()
            study_id = study.id
    model = types.SimpleNamespace(bundle_id=bundle_id,
                                  generation_settings={"strategy": "greedy", "max_new_tokens": 64})
    draft_id = store_worker_draft(settings, study_id, text, model, "test-worker", 0.1, 1)
    if draft_id is None:
        raise RuntimeError(
            "the worker code stored no draft (the study was not in state generating)"
        )
    with session_scope(settings.database_url) as session:
        report_id = session.query(Report.id).filter(Report.draft_id == draft_id).scalar()
    return study_id, report_id


def upload_and_draft(settings: Settings, client: TestClient, uploader: dict[str, str],
                     text: str, image: bytes) -> tuple[str, str]:
    """Upload `image` as a study, ingest it with the ingest worker's code and store `text` as its
    draft with the generate worker's; (study id, report id)."""
    from service.studies import pipeline
    from service.worker.ingest import ingest_claimed

    response = client.post("/v1/studies", files=[("files", ("a.dcm", image))], headers=uploader)
    if response.status_code != 202:
        raise RuntimeError(f"the upload was refused: {response.text}")
    study_id = response.json()["study_id"]
    for stage in ("ingest", "generate"):
        with session_scope(settings.database_url) as session:
            claim = pipeline.claim(session, study_id, stage, worker="test-worker", lease_s=60,
                                   max_attempts=3)
            if claim.status != "claimed":
                raise RuntimeError(f"the {stage} claim was {claim.status}")
        if stage == "ingest":
            ingest_claimed(settings, study_id, "test-worker")
    return store_draft(settings, text, study_id=study_id)


def create_people(settings: Settings) -> None:
    """The people of the tests, each with a password."""
    with session_scope(settings.database_url) as session:
        for name, password in PASSWORDS.items():
            create_user(session, name=name, role=ROLES[name], password=password)


def login(client: TestClient, name: str) -> dict[str, str]:
    """Sign `name` in through POST /v1/login; the Authorization header of the token."""
    response = client.post("/v1/login", data={"username": name, "password": PASSWORDS[name]})
    if response.status_code != 200:
        raise RuntimeError(f"sign-in of {name} failed: {response.text}")
    return bearer(response.json()["access_token"])


def api(settings: Settings) -> TestClient:
    """An in-process API on `settings` (the caller enters it as a context manager)."""
    from service.app import create_app

    return TestClient(create_app(settings, run_reconciler=False))
