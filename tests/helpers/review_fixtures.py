"""Pytest plugin of the review tests (`pytest_plugins = ["tests.helpers.review_fixtures"]`): the
session-scoped `review_env`.

One migrated database per backend (SQLite, PostgreSQL) with its people signed in and an in-process
API, shared by the review, quality and account tests (argon2 hashing and migrations are slow on 2
cores). Tests stay independent by working on reports they create themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Role
from tests.helpers.review import PASSWORDS, api, create_people, login
from tests.helpers.service import POSTGRES_DSN, bearer


@dataclass
class ReviewEnv:
    """A migrated database, its settings, an API client and each person's Authorization header."""

    backend: str
    settings: Settings
    client: TestClient
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.settings.database_url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def review_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReviewEnv]:
    """A database per backend for the session, with people signed in (see the module docstring)."""
    from service.auth.api_keys import create_api_key
    from service.core.db import migrate
    from tests.helpers.service import POSTGRES_ADMIN, api_settings, postgres_available

    tmp = tmp_path_factory.mktemp(f"review-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'radreport.db'}"
    else:
        if not postgres_available():
            pytest.skip("PostgreSQL at 127.0.0.1:5432 (database test) is not available")
        import psycopg

        schema = f"rr_review_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')

        def drop() -> None:
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

        request.addfinalizer(drop)
        url = f"{POSTGRES_ADMIN}?options=-csearch_path%3D{schema}"
    migrate(url)
    settings = api_settings(url, tmp)
    create_people(settings)
    with session_scope(url) as session:
        machine = bearer(create_api_key(session, name="pacs-machine", role=Role.uploader))
    with api(settings) as client:
        env = ReviewEnv(request.param, settings, client, {"pacs-machine": machine})
        for name in PASSWORDS:
            env.headers[name] = login(client, name)
        yield env
