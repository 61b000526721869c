"""People sign in (argon2 passwords) for short-lived, revocable tokens; machines keep API keys."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from sqlalchemy import select, update

from service.auth import accounts
from service.core.db import session_scope
from service.core.models import AuditEvent, LoginToken, Role, User
from tests.helpers.review import PASSWORDS
from tests.helpers.service import bearer

pytest_plugins = ["tests.helpers.review_fixtures"]


def sign_in(env, name: str, password: str | None = None):
    return env.client.post("/v1/login",
                           data={"username": name, "password": password or PASSWORDS[name]})


def test_passwords_are_stored_as_argon2id_hashes_only(review_env):
    with session_scope(review_env.url) as session:
        stored = session.scalar(select(User.password_hash).where(User.name == "dr-ada"))
    assert stored.startswith("$argon2id$") and PASSWORDS["dr-ada"] not in stored


def test_a_sign_in_token_identifies_its_person_until_sign_out(review_env):
    response = sign_in(review_env, "dr-bob")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["role"] == "radiologist"
    assert body["access_token"].startswith("rrs_")
    headers = bearer(body["access_token"])
    me = review_env.client.get("/v1/me", headers=headers).json()
    assert (me["user"], me["token"], me["has_password"]) == ("dr-bob", "sign-in", True)
    assert review_env.client.post("/v1/logout", headers=headers).status_code == 204
    refused = review_env.client.get("/v1/me", headers=headers)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_a_wrong_password_or_unknown_user_is_refused_alike_and_audited(review_env):
    wrong = sign_in(review_env, "dr-ada", "not-her-password")
    unknown = sign_in(review_env, "nobody-here", "whatever-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    with session_scope(review_env.url) as session:
        failures = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "login.failure")
        ).all()
    assert {"user:dr-ada", "user:nobody-here"} <= {e.actor for e in failures}


def test_a_sign_in_expires_after_its_lifetime_and_after_idling(review_env):
    with session_scope(review_env.url) as session:
        password = PASSWORDS["dr-ada"]
        lifetime_token, _ = accounts.login(session, "dr-ada", password, ttl_s=0, idle_s=600)
        idle_token, idle_row = accounts.login(session, "dr-ada", password, ttl_s=3600, idle_s=60)
    assert review_env.client.get("/v1/me", headers=bearer(lifetime_token)).status_code == 401
    assert review_env.client.get("/v1/me", headers=bearer(idle_token)).status_code == 200
    with session_scope(review_env.url) as session:
        session.execute(update(LoginToken).where(LoginToken.id == idle_row.id)
                        .values(last_seen=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)))
    expired = review_env.client.get("/v1/me", headers=bearer(idle_token))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_machines_keep_api_keys_which_sign_out_cannot_revoke(review_env):
    machine = review_env.headers["pacs-machine"]
    assert review_env.client.get("/v1/me", headers=machine).json()["token"] == "api-key"
    assert review_env.client.post("/v1/logout", headers=machine).status_code == 409
    assert review_env.client.get("/v1/me", headers=machine).status_code == 200


def test_a_disabled_account_loses_its_sign_ins_at_once(review_env):
    with session_scope(review_env.url) as session:
        accounts.create_user(session, name="dr-temp", role=Role.radiologist,
                             password="temporary-pass-55")
    headers = bearer(sign_in(review_env, "dr-temp", "temporary-pass-55").json()["access_token"])
    with session_scope(review_env.url) as session:
        accounts.set_active(session, name="dr-temp", active=False)
    assert review_env.client.get("/v1/me", headers=headers).status_code == 401
    assert sign_in(review_env, "dr-temp", "temporary-pass-55").status_code == 401


def test_short_passwords_are_refused():
    with pytest.raises(accounts.AccountError, match="at least 12"):
        accounts.check_password_strength("short-pw")


def test_the_cli_creates_a_person_who_can_sign_in(review_env, tmp_path):
    if review_env.backend != "sqlite":
        pytest.skip("the command is the same on both backends; one run is enough")
    env = {**os.environ, "DATABASE_URL": review_env.url, "STORAGE_DIR": str(tmp_path / "store")}
    result = subprocess.run([sys.executable, "-m", "radreport", "admin", "create-user",
                             "--role", "radiologist", "--name", "dr-cli", "--password-stdin"],
                            input="cli-password-123\n", env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert sign_in(review_env, "dr-cli", "cli-password-123").status_code == 200


def test_repeated_failures_lock_the_name_out_for_the_window(review_env):
    with session_scope(review_env.url) as session:
        accounts.create_user(session, name="dr-guessed", role=Role.radiologist,
                             password="guessed-pass-777")
    limits = {"ttl_s": 60, "idle_s": 60, "max_failures": 3}
    for _ in range(3):
        with pytest.raises(accounts.CredentialError), session_scope(review_env.url) as session:
            try:
                accounts.login(session, "dr-guessed", "wrong-guess-000", **limits)
            finally:
                session.commit()  # the failure's audit event counts, as the API commits it
    with pytest.raises(accounts.TooManyFailures), session_scope(review_env.url) as session:
        accounts.login(session, "dr-guessed", "guessed-pass-777", **limits)
    with session_scope(review_env.url) as session:
        token, _ = accounts.login(session, "dr-guessed", "guessed-pass-777", **limits, lockout_s=0)
    assert review_env.client.get("/v1/me", headers=bearer(token)).json()["user"] == "dr-guessed"
