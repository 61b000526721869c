"""Triage: a draft that names a critical finding (TRIAGE_FINDINGS, read by the CheXpert-style
labeler) raises its report's priority and is flagged in the worklist; SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import AuditEvent
from tests.helpers.review import store_draft

pytest_plugins = ["tests.helpers.review_fixtures"]

CRITICAL = "FINDINGS: Large right pneumothorax with leftward shift. IMPRESSION: Pneumothorax."
NEGATED = "FINDINGS: No pneumothorax or pleural effusion. IMPRESSION: Normal chest."
UNCERTAIN = "FINDINGS: Possible small apical pneumothorax. IMPRESSION: Cannot exclude pneumothorax."


def test_a_critical_draft_is_raised_and_flagged_and_others_are_not(review_env):
    env = review_env
    triaging = env.settings.model_copy(update={"triage_findings": "Pneumothorax,Pleural Effusion",
                                               "triage_priority": 20})
    critical, negated, uncertain = (store_draft(triaging, text)[1]
                                    for text in (CRITICAL, NEGATED, UNCERTAIN))
    off = store_draft(env.settings, CRITICAL)[1]  # TRIAGE_FINDINGS empty: no triage
    ada = env.headers["dr-ada"]
    views = {r: env.client.get(f"/v1/reports/{r}", headers=ada).json()
             for r in (critical, negated, uncertain, off)}
    assert (views[critical]["priority"], views[critical]["triage"]) == (20, ["Pneumothorax"])
    for quiet in (negated, uncertain, off):
        assert (views[quiet]["priority"], views[quiet]["triage"]) == (0, [])
    rows = {row["report_id"]: row for row in env.client.get(
        "/v1/worklist", headers=ada, params={"limit": 200}).json()["items"]}
    assert rows[critical]["triage"] == ["Pneumothorax"] and rows[negated]["triage"] == []
    with session_scope(env.url) as session:
        [event] = session.scalars(select(AuditEvent).where(
            AuditEvent.report_id == critical, AuditEvent.action == "report.triage")).all()
        assert event.details == {"findings": ["Pneumothorax"], "priority": 20,
                                 "previous_priority": 0}
        assert event.actor.startswith("worker:")
    with_uncertain = triaging.model_copy(update={"triage_uncertain": True})
    flagged = store_draft(with_uncertain, UNCERTAIN)[1]
    assert env.client.get(f"/v1/reports/{flagged}", headers=ada).json()["triage"] == [
        "Pneumothorax"]


def test_an_unknown_triage_finding_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(ValidationError, match="Pneumothrax not among the CheXpert findings.*"
                                              "Pneumothorax"):
        Settings(storage_dir=tmp_path, triage_findings="Pneumothrax")


def test_migration_0006_downgrades_and_upgrades_again(database_url):
    from alembic import command
    from sqlalchemy import inspect

    from service.core.db import alembic_config, get_engine

    def columns() -> set[str]:
        return {c["name"] for c in inspect(get_engine(database_url)).get_columns("reports")}

    config = alembic_config(database_url)
    command.downgrade(config, "0005_api_key_expiry")
    assert "triage" not in columns()
    command.upgrade(config, "head")
    assert "triage" in columns()


def test_a_labeler_failure_costs_no_draft_only_its_triage(review_env, monkeypatch):
    import evaluation.chexpert

    def broken(text: str) -> dict:
        raise RuntimeError("labeler bug")

    monkeypatch.setattr(evaluation.chexpert, "label", broken)
    triaging = review_env.settings.model_copy(update={"triage_findings": "Pneumothorax"})
    report_id = store_draft(triaging, CRITICAL)[1]
    view = review_env.client.get(f"/v1/reports/{report_id}",
                                 headers=review_env.headers["dr-ada"]).json()
    assert (view["current"]["text"], view["priority"], view["triage"]) == (CRITICAL, 0, [])
