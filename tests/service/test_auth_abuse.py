"""Password guessing through every door: wrong passwords at signing lock the account like wrong
sign-ins and sign it out; each client address and token has a rate of attempts; argon2 checks run
through a bounded gate."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.auth import accounts
from service.core.db import session_scope
from service.core.limits import Gate
from service.core.models import AuditEvent, Role
from tests.helpers.review import store_draft
from tests.helpers.service import bearer

PASSWORD = "correct-horse-battery-9"


@pytest.fixture
def locking_client(settings) -> Iterator[TestClient]:
    """An API that locks an account after 3 failed password checks."""
    from service.app import create_app

    settings = settings.model_copy(update={"login_max_failures": 3})
    with session_scope(settings.database_url) as session:
        accounts.create_user(session, name="dr-guess", role=Role.radiologist, password=PASSWORD)
    with TestClient(create_app(settings, run_reconciler=False)) as client:
        yield client


def sign_in(client: TestClient, password: str = PASSWORD):
    return client.post("/v1/login", data={"username": "dr-guess", "password": password})


def test_wrong_passwords_at_signing_lock_the_account_and_sign_it_out(locking_client, settings):
    client = locking_client
    headers = bearer(sign_in(client).json()["access_token"])
    _, report_id = store_draft(settings, "FINDINGS: Clear lungs. IMPRESSION: Normal.")
    assert client.post(f"/v1/reports/{report_id}/claim", headers=headers).status_code == 200
    answers = [client.post(f"/v1/reports/{report_id}/sign",
                           json={"password": f"guess-{n}", "version": 1}, headers=headers)
               for n in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert "locked and signed out everywhere" in answers[-1].json()["detail"]
    assert client.get("/v1/me", headers=headers).status_code == 401  # the session is revoked
    locked = sign_in(client)  # even the right password: the account is locked like after sign-ins
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    with session_scope(settings.database_url) as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions.count(accounts.REAUTH_FAILURE) == 3 and "login.revoke_all" in actions


def test_failed_sign_ins_and_failed_signatures_count_together(locking_client, settings):
    client = locking_client
    assert sign_in(client, "wrong-1").status_code == 401
    headers = bearer(sign_in(client).json()["access_token"])
    _, report_id = store_draft(settings, "FINDINGS: Clear lungs. IMPRESSION: Normal.")
    client.post(f"/v1/reports/{report_id}/claim", headers=headers)
    wrong = client.post(f"/v1/reports/{report_id}/sign", json={"password": "wrong-2", "version": 1},
                        headers=headers)
    assert wrong.status_code == 401
    assert sign_in(client, "wrong-3").status_code == 401
    refused = client.post(f"/v1/reports/{report_id}/sign",
                          json={"password": PASSWORD, "version": 1}, headers=headers)
    assert refused.status_code in (401, 429)  # signed out, or locked: never signed
    assert sign_in(client).status_code == 429


def test_password_attempts_per_client_are_rate_limited(settings):
    from service.app import create_app

    strict = settings.model_copy(update={"auth_attempts_per_minute": 3})
    app = create_app(strict, run_reconciler=False)
    with TestClient(app) as client:
        answers = [client.post("/v1/login", data={"username": f"nobody-{n}", "password": "x" * 12})
                   for n in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert answers[-1].json()["code"] == "too_many_requests"


def test_the_password_gate_lets_no_more_than_its_size_inside():
    gate = Gate(2, wait_s=30, what="checks")
    inside = threading.Barrier(2)

    def check() -> None:
        with gate.enter():
            try:
                inside.wait(timeout=0.2)  # two may meet inside; a third never joins them
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=check) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= gate.peak <= 2 and gate.inside == 0


def test_argon2_checks_go_through_the_gate(settings):
    with session_scope(settings.database_url) as session:
        user = accounts.create_user(session, name="dr-gate", role=Role.radiologist,
                                    password=PASSWORD)
        results: list[bool] = []
        threads = [threading.Thread(target=lambda: results.append(
            accounts.verify_password(session, user, PASSWORD))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    gate = accounts.password_gate()
    assert results == [True] * 6
    assert 1 <= gate.peak <= gate.size and gate.inside == 0
