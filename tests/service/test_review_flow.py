"""The review workflow end to end on SQLite and PostgreSQL: upload, draft, claim, edit, conflict,
sign, amend, history."""

from __future__ import annotations

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from service.core.db import session_scope
from service.core.models import Draft, Study
from tests.helpers.review import store_draft, upload_and_draft
from tests.helpers.service import make_dicom

pytest_plugins = ["tests.helpers.review_fixtures"]

DRAFT = ("FINDINGS: The heart is normal in size. The lungs are clear. "
         "IMPRESSION: No acute cardiopulmonary process.")
EDITED = ("FINDINGS: The heart is normal in size. Small left pleural effusion. "
          "IMPRESSION: Small left pleural effusion.")
AMENDED = EDITED + " No pneumothorax."


def test_upload_to_amendment_keeps_a_complete_ordered_history(review_env):
    settings, client, ada = review_env.settings, review_env.client, review_env.headers["dr-ada"]
    study_id, report_id = upload_and_draft(settings, client, review_env.headers["pacs-machine"],
                                           DRAFT, make_dicom(view="PA", seed=1))
    base = f"/v1/reports/{report_id}"

    listed = client.get("/v1/worklist", headers=ada, params={"limit": 200}).json()
    assert report_id in [row["report_id"] for row in listed["items"]]
    assert client.get(f"{base}/fhir", headers=ada).json()["status"] == "preliminary"

    claimed = client.post(f"{base}/claim", headers=ada)
    assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "dr-ada"
    assert claimed.headers["etag"] == '"1"' and claimed.json()["study_state"] == "in_review"

    edited = client.put(base, json={"text": EDITED}, headers={**ada, "If-Match": '"1"'})
    assert edited.status_code == 200, edited.text
    assert edited.headers["etag"] == '"2"' and edited.json()["current"]["text"] == EDITED

    stale = client.put(base, json={"text": DRAFT + " Stale.", "version": 1}, headers=ada)
    assert stale.status_code == 409
    assert stale.json()["code"] == "version_conflict"
    assert stale.json()["current"]["version"] == 2 and stale.json()["current"]["text"] == EDITED

    signed = client.post(f"{base}/sign",
                         json={"password": "ada-correct-horse-1", "meaning": "approval"},
                         headers={**ada, "If-Match": '"2"'})
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "final" and signed.json()["study_state"] == "signed"
    signature = signed.json()["signatures"][0]
    assert (signature["signer"], signature["meaning"], signature["version"]) == (
        "dr-ada", "approval", 2
    )
    assert client.get(f"{base}/fhir", headers=ada).json()["status"] == "final"

    bob = review_env.headers["dr-bob"]
    amended = client.post(f"{base}/amend", headers=bob, json={
        "text": AMENDED, "reason": "pneumothorax question from the ward",
        "password": "bob-battery-staple-2", "meaning": "approval", "version": 2})
    assert amended.status_code == 200, amended.text
    body = amended.json()
    assert body["status"] == "amended" and body["current"]["version"] == 3
    assert body["signatures"][1]["amends_signature_id"] == body["signatures"][0]["id"]
    assert client.get(f"{base}/fhir", headers=ada).json()["status"] == "amended"

    history = client.get(f"{base}/history", headers=ada).json()
    assert [v["version"] for v in history["versions"]] == [1, 2, 3]
    assert [v["text"] for v in history["versions"]] == [DRAFT, EDITED, AMENDED]
    assert [v["signed"] for v in history["versions"]] == [False, True, True]
    added = "+FINDINGS: The heart is normal in size. Small left pleural effusion."
    assert added in history["versions"][1]["diff"]
    review_events = [(e["actor"], e["action"]) for e in history["events"]
                     if e["action"].startswith("report.")]
    assert review_events == [("dr-ada", "report.claim"), ("dr-ada", "report.edit"),
                             ("dr-ada", "report.sign"), ("dr-bob", "report.amend")]
    states = [e["to_state"] for e in history["events"] if e["action"] == "study.transition"]
    assert states == ["ingested", "generating", "draft_ready", "in_review", "signed"]
    times = [e["at"] for e in history["events"]]
    assert times == sorted(times)
    with session_scope(settings.database_url) as session:
        # The AI draft never changes.
        assert session.get(Draft, body["draft"]["draft_id"]).text == DRAFT
        assert session.get(Study, study_id).state.value == "signed"


def test_a_signed_report_refuses_edits_release_and_a_second_signature(review_env):
    client, ada = review_env.client, review_env.headers["dr-ada"]
    _, report_id = store_draft(review_env.settings, DRAFT)
    base = f"/v1/reports/{report_id}"
    client.post(f"{base}/claim", headers=ada)
    signing = {"password": "ada-correct-horse-1", "version": 1}
    assert client.post(f"{base}/sign", json=signing, headers=ada).status_code == 200
    for response in (client.put(base, json={"text": EDITED, "version": 1}, headers=ada),
                     client.post(f"{base}/claim", headers=ada),
                     client.post(f"{base}/release", headers=ada),
                     client.post(f"{base}/reject", json={"reason": "late"}, headers=ada),
                     client.post(f"{base}/sign", json=signing, headers=ada)):
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "report_locked", response.text
    assert client.get(base, headers=ada).json()["current"]["text"] == DRAFT


def test_an_edit_needs_the_claim_and_a_named_version(review_env):
    client, ada, bob = review_env.client, review_env.headers["dr-ada"], review_env.headers["dr-bob"]
    _, report_id = store_draft(review_env.settings, DRAFT)
    base = f"/v1/reports/{report_id}"
    edit = {"text": EDITED, "version": 1}
    assert client.put(base, json=edit, headers=ada).json()["code"] == "not_claimed"
    client.post(f"{base}/claim", headers=ada)
    assert client.post(f"{base}/claim", headers=bob).json()["code"] == "claimed_by_other"
    assert client.put(base, json=edit, headers=bob).json()["code"] == "not_claimed"
    missing = client.put(base, json={"text": EDITED}, headers=ada)
    assert missing.status_code == 428 and missing.json()["code"] == "version_required"
    client.post(f"{base}/release", headers=ada)
    assert client.post(f"{base}/claim", headers=bob).status_code == 200


def test_signing_needs_the_signers_own_password_and_audits_a_wrong_one(review_env):
    client, ada = review_env.client, review_env.headers["dr-ada"]
    _, report_id = store_draft(review_env.settings, DRAFT)
    base = f"/v1/reports/{report_id}"
    client.post(f"{base}/claim", headers=ada)
    wrong = client.post(f"{base}/sign", json={"password": "bob-battery-staple-2", "version": 1},
                        headers=ada)
    assert wrong.status_code == 401 and wrong.json()["code"] == "reauthentication_failed"
    assert client.get(base, headers=ada).json()["status"] == "preliminary"
    actions = [e["action"] for e in client.get(f"{base}/history", headers=ada).json()["events"]]
    assert "report.sign_reauth_failure" in actions


def test_a_rejected_draft_leaves_the_worklist_with_its_reason(review_env):
    client, ada = review_env.client, review_env.headers["dr-ada"]
    _, report_id = store_draft(review_env.settings, DRAFT)
    base = f"/v1/reports/{report_id}"
    client.post(f"{base}/claim", headers=ada)
    rejected = client.post(f"{base}/reject", json={"reason": "wrong side described"}, headers=ada)
    assert rejected.status_code == 200
    assert (rejected.json()["status"], rejected.json()["study_state"]) == ("rejected", "rejected")
    assert rejected.json()["rejected_reason"] == "wrong side described"
    worklist = client.get("/v1/worklist", headers=ada, params={"limit": 200}).json()["items"]
    open_ids = [row["report_id"] for row in worklist]
    assert report_id not in open_ids
    cancelled = client.get(f"{base}/fhir", headers=ada).json()
    assert DiagnosticReport.model_validate(cancelled).status == "cancelled"


def test_the_fhir_report_carries_the_signed_text_its_hash_and_the_signature(review_env):
    import base64
    import hashlib

    client, ada = review_env.client, review_env.headers["dr-ada"]
    _, report_id = store_draft(review_env.settings, DRAFT, bundle_id="fhir-bundle@1")
    base = f"/v1/reports/{report_id}"
    client.post(f"{base}/claim", headers=ada)
    client.post(f"{base}/sign", headers=ada,
                json={"password": "ada-correct-horse-1", "meaning": "review", "version": 1})
    response = client.get(f"{base}/fhir", headers=review_env.headers["ops-admin"])
    assert response.headers["content-type"].startswith("application/fhir+json")
    resource = response.json()
    DiagnosticReport.model_validate(resource)  # a valid FHIR R4 (R4B) DiagnosticReport
    assert (resource["resourceType"], resource["id"], resource["status"]) == (
        "DiagnosticReport", report_id, "final"
    )
    form = resource["presentedForm"][0]
    text = base64.b64decode(form["data"]).decode()
    assert text == DRAFT and base64.b64decode(form["hash"]) == hashlib.sha1(DRAFT.encode()).digest()
    assert resource["conclusion"] == "No acute cardiopulmonary process."
    assert resource["resultsInterpreter"] == [{"display": "dr-ada"}]
    signature = next(e for e in resource["extension"] if e["url"].endswith("/signature"))
    fields = {f["url"]: next(v for k, v in f.items() if k.startswith("value"))
              for f in signature["extension"]}
    assert (fields["signer"], fields["meaning"], fields["version"]) == ("dr-ada", "review", 1)
    assert fields["contentSha256"] == hashlib.sha256(DRAFT.encode()).hexdigest()


def test_a_claim_older_than_the_claim_lifetime_is_taken_over_and_audited(review_env):
    import datetime as dt

    from sqlalchemy import update

    from service.core.models import Report

    client, ada, bob = review_env.client, review_env.headers["dr-ada"], review_env.headers["dr-bob"]
    _, report_id = store_draft(review_env.settings, DRAFT)
    base = f"/v1/reports/{report_id}"
    client.post(f"{base}/claim", headers=ada)
    assert client.post(f"{base}/claim", headers=bob).json()["code"] == "claimed_by_other"
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=review_env.settings.claim_ttl_s + 60)
    with session_scope(review_env.url) as session:
        session.execute(update(Report).where(Report.id == report_id).values(claimed_at=stale))
    taken = client.post(f"{base}/claim", headers=bob)
    assert taken.status_code == 200 and taken.json()["claimed_by"] == "dr-bob"
    events = client.get(f"{base}/history", headers=bob).json()["events"]
    claims = [e for e in events if e["action"] == "report.claim"]
    assert [(e["actor"], e["details"].get("taken_over_from")) for e in claims] == [
        ("dr-ada", None), ("dr-bob", "dr-ada")
    ]
