"""Priors: the patient's earlier studies with their reports, beside the one being read, as a
radiologist compares them. Matched on the Patient ID of the DICOM headers; SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from service.core.db import session_scope
from service.core.models import AuditEvent
from tests.helpers.review import upload_and_draft
from tests.helpers.service import make_dicom

pytest_plugins = ["tests.helpers.review_fixtures"]


def drafted(env, patient_id: str, study_date: str | None, text: str,
            issuer: str | None = None) -> str:
    """A study of `patient_id` on `study_date`, uploaded, ingested and drafted; its report id."""
    image = make_dicom(patient_id=patient_id, study_date=study_date, issuer_of_patient_id=issuer)
    return upload_and_draft(env.settings, env.client, env.headers["pacs-machine"], text,
                            image)[1]


def test_priors_are_the_patients_earlier_reports_newest_first_and_audited(review_env):
    env = review_env
    ada, bob = env.headers["dr-ada"], env.headers["dr-bob"]
    patient = f"PRIOR-{uuid.uuid4().hex[:8]}"
    oldest = drafted(env, patient, "20240105", "FINDINGS: Clear lungs. IMPRESSION: Normal.")
    older = drafted(env, patient, "20250310", "FINDINGS: Small left effusion.")
    current = drafted(env, patient, "20250601", "FINDINGS: Left effusion, larger.")
    later = drafted(env, patient, "20251201", "FINDINGS: Effusion resolved.")
    drafted(env, f"{patient}-OTHER", "20250301", "FINDINGS: Another patient.")
    drafted(env, patient, "20250302", "FINDINGS: Same number, another hospital's patient.",
            issuer="OTHER-HOSPITAL")
    # the older report is signed: its signer and time come with it
    assert env.client.post(f"/v1/reports/{older}/claim", headers=bob).status_code == 200
    signed = env.client.post(f"/v1/reports/{older}/sign", headers=bob, json={
        "version": 1, "password": "bob-battery-staple-2", "meaning": "approval"})
    assert signed.status_code == 200, signed.text

    answer = env.client.get(f"/v1/reports/{current}/priors", headers=ada)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["report_id"] for i in items] == [older, oldest]  # not later, not the other patient
    assert [i["study_date"] for i in items] == ["20250310", "20240105"]
    assert items[0]["text"] == "FINDINGS: Small left effusion."
    assert (items[0]["status"], items[0]["signed_by"]) == ("final", "dr-bob")
    assert items[1]["signed_by"] is None and items[1]["status"] == "preliminary"
    with session_scope(env.url) as session:
        reads = session.scalars(select(AuditEvent.report_id).where(
            AuditEvent.action == "report.read", AuditEvent.actor == "dr-ada",
            AuditEvent.report_id.in_([older, oldest]))).all()
    assert sorted(reads) == sorted([older, oldest])
    # the later study sees all three earlier ones; the oldest has none
    later_priors = env.client.get(f"/v1/reports/{later}/priors", headers=ada).json()["items"]
    assert [i["report_id"] for i in later_priors] == [current, older, oldest]
    assert env.client.get(f"/v1/reports/{oldest}/priors", headers=ada).json()["items"] == []
    assert env.client.get(f"/v1/reports/{current}/priors",
                          headers=env.headers["pacs-machine"]).status_code == 403
