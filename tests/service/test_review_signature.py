"""E-signatures hold only for the signed text; versions, signatures, audit events: append-only."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.core.db import get_engine, session_scope
from service.review import workflow
from tests.helpers.review import store_draft

pytest_plugins = ["tests.helpers.review_fixtures"]

DRAFT = "FINDINGS: Mild cardiomegaly. No pleural effusion. IMPRESSION: Mild cardiomegaly."
SIGNED = ("FINDINGS: Mild cardiomegaly. Small left pleural effusion. "
          "IMPRESSION: Mild cardiomegaly, small effusion.")
#: An UPDATE of the signed version's text, as someone with direct database access would run it.
REWRITE_SIGNED = "UPDATE report_versions SET text = :t WHERE report_id = :r AND version = 2"


def signed_report(env) -> str:
    """A report edited to SIGNED (version 2) and signed by dr-ada."""
    _, report_id = store_draft(env.settings, DRAFT)
    ada = env.headers["dr-ada"]
    env.client.post(f"/v1/reports/{report_id}/claim", headers=ada)
    env.client.put(f"/v1/reports/{report_id}", json={"text": SIGNED, "version": 1}, headers=ada)
    response = env.client.post(f"/v1/reports/{report_id}/sign",
                               json={"password": "ada-correct-horse-1", "version": 2}, headers=ada)
    assert response.status_code == 200, response.text
    return report_id


def tamper(env, table: str, statement: str, **params: object) -> None:
    """Run `statement` as someone with direct database access, append-only trigger disabled."""
    engine = get_engine(env.url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"))
            conn.execute(text(statement), params)
            conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only"))
        else:
            name = f"{table}_append_only_update"
            trigger_sql = text("SELECT sql FROM sqlite_master WHERE type='trigger' AND name=:n")
            ddl = conn.execute(trigger_sql, {"n": name}).scalar()
            conn.execute(text(f"DROP TRIGGER {name}"))
            conn.execute(text(statement), params)
            conn.execute(text(ddl))


def verification(env, report_id: str) -> dict:
    response = env.client.get(f"/v1/reports/{report_id}/verify", headers=env.headers["ops-admin"])
    assert response.status_code == 200
    return response.json()


def test_a_signature_verifies_against_the_hash_of_the_signed_text(review_env):
    report_id = signed_report(review_env)
    result = verification(review_env, report_id)
    assert result["valid"] and result["signatures"][0]["problems"] == []
    report = review_env.client.get(f"/v1/reports/{report_id}",
                                   headers=review_env.headers["dr-ada"]).json()
    signature = report["signatures"][0]
    assert signature["content_sha256"] == workflow.content_sha256(SIGNED)


def test_the_signature_fails_when_the_stored_text_is_altered_behind_the_api(review_env):
    report_id = signed_report(review_env)
    tamper(review_env, "report_versions", REWRITE_SIGNED, t=SIGNED.replace("Small left", "No"),
           r=report_id)
    result = verification(review_env, report_id)
    assert not result["valid"]
    assert result["signatures"][0]["problems"] == [
        "the stored text of version 2 is not the text that was signed"
    ]


def test_the_seal_fails_when_text_and_recorded_hash_are_both_altered(review_env):
    report_id = signed_report(review_env)
    forged = SIGNED.replace("Small left", "No")
    tamper(review_env, "report_versions", REWRITE_SIGNED, t=forged, r=report_id)
    tamper(review_env, "signatures",
           "UPDATE signatures SET content_sha256 = :h WHERE report_id = :r",
           h=workflow.content_sha256(forged), r=report_id)
    problems = verification(review_env, report_id)["signatures"][0]["problems"]
    assert problems == [
        "the seal does not match the signature's fields (the signature record was altered)"
    ]


def test_signatures_do_not_verify_under_another_key(review_env):
    report_id = signed_report(review_env)
    with session_scope(review_env.url) as session:
        checks = workflow.verify(session, report_id, b"some-other-key")
    assert [c.valid for c in checks] == [False]


HISTORY_CHANGES = [
    "UPDATE report_versions SET text = 'changed' WHERE report_id = :r",
    "DELETE FROM report_versions WHERE report_id = :r",
    "UPDATE signatures SET meaning = 'review' WHERE report_id = :r",
    "DELETE FROM audit_events WHERE report_id = :r",
    "UPDATE audit_events SET actor = 'someone-else' WHERE report_id = :r",
    "UPDATE drafts SET text = 'changed' WHERE id = (SELECT draft_id FROM reports WHERE id = :r)",
    "DELETE FROM signatures WHERE report_id = :r",
]


def test_the_database_refuses_to_change_or_delete_history(review_env):
    report_id = signed_report(review_env)
    for statement in HISTORY_CHANGES:
        with (
            pytest.raises(DBAPIError, match="append-only"),
            get_engine(review_env.url).begin() as conn,
        ):
            conn.execute(text(statement), {"r": report_id})
    assert verification(review_env, report_id)["valid"]
