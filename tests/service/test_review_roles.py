"""Review, quality, evaluation and account endpoints admit exactly their roles; every write is
audited with its user."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from service.core.db import session_scope
from service.core.models import AuditEvent, Report, User
from tests.helpers.review import PASSWORDS, store_draft

pytest_plugins = ["tests.helpers.review_fixtures"]

TAGS = {"review", "quality", "evaluations", "accounts"}
PEOPLE = {"radiologist": "dr-ada", "admin": "ops-admin", "uploader": "pacs-clerk"}
DRAFT = "FINDINGS: No focal consolidation. IMPRESSION: No acute process."


def operations(env) -> list[tuple[str, str, set[str]]]:
    """(method, path template, roles) of each review workflow endpoint; /v1/login is public."""
    found = []
    for path, item in env.client.app.openapi()["paths"].items():
        for method, operation in item.items():
            if set(operation.get("tags", [])) & TAGS and path != "/v1/login":
                found.append((method, path, set(operation["x-roles"])))
    return found


def concrete(path: str, report_id: str) -> str:
    return (path.replace("{report_id}", report_id)
            .replace("{evaluation_id}", "00000000-0000-0000-0000-000000000000"))


def test_every_review_endpoint_refuses_the_wrong_role_and_changes_nothing(review_env):
    _, report_id = store_draft(review_env.settings, DRAFT)
    checked = 0
    for method, path, roles in operations(review_env):
        for role, person in PEOPLE.items():
            if role in roles:
                continue
            response = review_env.client.request(method, concrete(path, report_id),
                                                 headers=review_env.headers[person],
                                                 json={} if method in ("post", "put") else None)
            assert response.status_code == 403, (
                f"{role} on {method.upper()} {path}: {response.status_code}"
            )
            checked += 1
    assert checked >= 20
    with session_scope(review_env.url) as session:
        report = session.get(Report, report_id)
        assert (report.status.value, report.current_version, report.claimed_by) == (
            "preliminary", 1, None
        )
        events = (select(func.count()).select_from(AuditEvent)
                  .where(AuditEvent.report_id == report_id))
        assert session.scalar(events) == 0


def test_writes_need_the_radiologist_role_and_reads_also_admit_admins(review_env):
    for method, path, roles in operations(review_env):
        if path.startswith("/v1/reports") or path == "/v1/worklist":
            writes = method in ("post", "put")
            assert roles == ({"radiologist"} if writes else {"radiologist", "admin"}), path
        elif path.startswith("/v1/evaluations"):
            assert roles == {"admin"}, path
        elif path.startswith("/v1/quality"):
            assert roles == {"radiologist", "admin"}, path


def test_every_write_appears_in_the_audit_trail_with_its_user(review_env, tmp_path):
    client = review_env.client
    ada, admin = review_env.headers["dr-ada"], review_env.headers["ops-admin"]
    _, first = store_draft(review_env.settings, DRAFT)
    _, second = store_draft(review_env.settings, DRAFT)
    inside = review_env.settings.storage_dir / tmp_path.name  # under EVALUATION_ROOTS' default
    bundle, data = inside / "bundle", inside / "data"
    bundle.mkdir(parents=True)
    data.mkdir()
    (bundle / "config.json").write_text(json.dumps({"format": "radreport-bundle"}))
    login_response = client.post("/v1/login",
                                 data={"username": "dr-bob", "password": PASSWORDS["dr-bob"]})
    bob = {"Authorization": f"Bearer {login_response.json()['access_token']}"}
    signing = {"password": PASSWORDS["dr-ada"], "meaning": "approval"}
    # (method, path template, report, headers, body, user, audit action); the login above is the
    # first write.
    writes = [
        ("post", "/v1/reports/{report_id}/claim", first, ada, None, "dr-ada", "report.claim"),
        ("post", "/v1/reports/{report_id}/priority", first, ada, {"priority": 10},
         "dr-ada", "report.priority"),
        ("put", "/v1/reports/{report_id}", first, ada, {"text": DRAFT + " Edited.", "version": 1},
         "dr-ada", "report.edit"),
        ("post", "/v1/reports/{report_id}/release", first, ada, None, "dr-ada", "report.release"),
        ("post", "/v1/reports/{report_id}/claim", first, ada, None, "dr-ada", "report.claim"),
        ("post", "/v1/reports/{report_id}/sign", first, ada, {**signing, "version": 2},
         "dr-ada", "report.sign"),
        ("post", "/v1/reports/{report_id}/amend", first, ada,
         {**signing, "version": 2, "text": DRAFT + " Amended.", "reason": "typo"},
         "dr-ada", "report.amend"),
        ("post", "/v1/reports/{report_id}/claim", second, ada, None, "dr-ada", "report.claim"),
        ("post", "/v1/reports/{report_id}/reject", second, ada, {"reason": "unusable"},
         "dr-ada", "report.reject"),
        ("post", "/v1/evaluations", None, admin,
         {"bundle_dir": str(bundle), "data_dir": str(data)}, "ops-admin", "evaluation.create"),
        ("post", "/v1/logout", None, bob, None, "dr-bob", "logout"),
    ]
    with session_scope(review_env.url) as session:
        users = {u.name: u.id for u in session.scalars(select(User))}
        bob_login = select(AuditEvent).where(AuditEvent.action == "login.success",
                                             AuditEvent.user_id == users["dr-bob"])
        assert session.scalars(bob_login).first() is not None
    done = {("post", "/v1/login")}
    for method, template, report_id, headers, body, user, action in writes:
        with session_scope(review_env.url) as session:
            before = session.scalar(select(func.max(AuditEvent.id))) or 0
        response = client.request(method, concrete(template, report_id or ""), headers=headers,
                                  json=body)
        assert response.status_code < 400 or template == "/v1/evaluations", (
            f"{template}: {response.text}"
        )
        with session_scope(review_env.url) as session:
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.id > before, AuditEvent.action == action)
            ).all()
        assert [(e.actor, e.user_id) for e in events] == [(user, users[user])], (
            f"{method.upper()} {template}"
        )
        if report_id:
            assert events[0].report_id == report_id
        done.add((method, template))
    writes_in_api = {(m, p) for m, p, _ in operations(review_env)
                     if m in ("post", "put", "delete", "patch")}
    assert writes_in_api | {("post", "/v1/login")} == done


def test_reads_of_a_report_are_audited_with_their_user_and_listed_on_request(review_env):
    client, admin = review_env.client, review_env.headers["ops-admin"]
    _, report_id = store_draft(review_env.settings, DRAFT)
    for path in ("", "/fhir", "/history"):
        assert client.get(f"/v1/reports/{report_id}{path}", headers=admin).status_code == 200
    default = client.get(f"/v1/reports/{report_id}/history", headers=admin).json()["events"]
    assert not [e for e in default if e["action"] == "report.read"]
    history = client.get(f"/v1/reports/{report_id}/history", params={"reads": True},
                         headers=admin).json()["events"]
    reads = [e for e in history if e["action"] == "report.read"]
    assert [(e["actor"], e["details"]["view"]) for e in reads] == [
        ("ops-admin", "report"), ("ops-admin", "fhir"), ("ops-admin", "history"),
        ("ops-admin", "history")]
