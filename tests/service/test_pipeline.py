"""Study state machine on SQLite and PostgreSQL: claims, leases, poison cap, one draft a bundle."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.core.db import session_scope
from service.core.models import AuditEvent, Draft, Study, StudyState, utcnow
from service.studies import pipeline


def new_study(url: str, state: StudyState = StudyState.ingested, uid: str = "1.2.3") -> str:
    with session_scope(url) as session:
        study = Study(study_uid=uid, state=state)
        session.add(study)
        session.flush()
        return study.id


def claim(url: str, study_id: str, worker: str, stage: str = "generate", lease_s: float = 60,
          max_attempts: int = 3):
    with session_scope(url) as session:
        return pipeline.claim(session, study_id, stage, worker=worker, lease_s=lease_s,
                              max_attempts=max_attempts)


def test_a_claimed_study_is_busy_for_other_workers(database_url):
    study_id = new_study(database_url)
    assert claim(database_url, study_id, "w1").status == "claimed"
    assert claim(database_url, study_id, "w2").status == "busy"
    with session_scope(database_url) as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.generating and study.lease_owner == "w1"


def test_an_expired_lease_is_retaken_and_counted(database_url):
    study_id = new_study(database_url)
    assert claim(database_url, study_id, "w1", lease_s=-1).status == "claimed"
    retake = claim(database_url, study_id, "w2")
    assert retake.status == "claimed" and retake.attempt == 2
    with session_scope(database_url) as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.study_id == study_id)
        ).all()
    assert "generate.retake" in actions


def test_a_study_that_loses_its_worker_past_the_cap_fails_with_a_reason(database_url):
    study_id = new_study(database_url)
    for _ in range(2):
        assert claim(database_url, study_id, "w", lease_s=-1, max_attempts=2).status == "claimed"
    assert claim(database_url, study_id, "w", max_attempts=2).status == "exhausted"
    with session_scope(database_url) as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.failed and study.failure_code == "generate_worker_lost"
        assert "lost 2 times" in study.failure_reason


def test_a_finished_study_is_not_claimed_again(database_url):
    study_id = new_study(database_url, StudyState.draft_ready)
    assert claim(database_url, study_id, "w1").status == "done"


def test_transitions_are_audited_with_actor_and_refuse_skipping_states(database_url):
    study_id = new_study(database_url, StudyState.received)
    with session_scope(database_url) as session:
        study = session.get(Study, study_id)
        pipeline.transition(session, study, StudyState.ingested, actor="worker:x")
        with pytest.raises(pipeline.TransitionError):
            pipeline.transition(session, study, StudyState.signed, actor="worker:x")
    with session_scope(database_url) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.study_id == study_id)).one()
        assert (event.actor, event.from_state, event.to_state) == (
            "worker:x", "received", "ingested"
        )
        assert session.get(Study, study_id).ingested_at is not None


def test_a_second_draft_for_the_same_study_and_bundle_is_impossible(database_url):
    study_id = new_study(database_url)
    draft = dict(study_id=study_id, bundle_id="b@1", text="t", sections={}, generation={},
                 worker="w")
    with session_scope(database_url) as session:
        session.add(Draft(**draft))
    with pytest.raises(IntegrityError), session_scope(database_url) as session:
        session.add(Draft(**draft))
    with session_scope(database_url) as session:
        # Another bundle may draft the same study.
        session.add(Draft(**{**draft, "bundle_id": "b@2"}))


def test_the_reconciler_finds_unleased_unfinished_work_only(database_url):
    received = new_study(database_url, StudyState.received, "1.1")
    ingested = new_study(database_url, StudyState.ingested, "1.2")
    leased = new_study(database_url, StudyState.ingested, "1.3")
    new_study(database_url, StudyState.draft_ready, "1.4")
    recent = new_study(database_url, StudyState.ingested, "1.5")
    claim(database_url, leased, "w1")
    with session_scope(database_url) as session:
        session.get(Study, recent).enqueued_at = utcnow()
        session.get(Study, ingested).enqueued_at = utcnow() - dt.timedelta(seconds=60)
    with session_scope(database_url) as session:
        work = set(pipeline.stale_work(session, older_than_s=30))
    assert work == {("ingest", received), ("generate", ingested)}
