"""Service test fixtures: databases (SQLite file, fresh PostgreSQL schema), an in-process API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.auth.api_keys import create_api_key
from service.core.config import Settings
from service.core.db import migrate, session_scope
from service.core.models import Role
from tests.helpers.service import POSTGRES_ADMIN, POSTGRES_DSN, api_settings, postgres_available


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    if not postgres_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 (database test) is not available")
    import psycopg

    schema = f"rr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{POSTGRES_ADMIN}?options=-csearch_path%3D{schema}"
    from service.core.db import get_engine

    get_engine.cache_clear()
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temp dir."""
    return f"sqlite:///{tmp_path / 'radreport.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL, migrated to head."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    migrate(url)
    return url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; tests copy it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "radreport.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings(migrated_sqlite_template: Path, tmp_path: Path) -> Settings:
    """Settings on a fresh migrated SQLite database, small limits."""
    import shutil

    shutil.copyfile(migrated_sqlite_template, tmp_path / "radreport.db")
    return api_settings(f"sqlite:///{tmp_path / 'radreport.db'}", tmp_path,
                        max_instance_bytes=2_000_000, max_upload_bytes=4_000_000,
                        max_instances_per_upload=8)


@pytest.fixture
def tokens(settings: Settings) -> dict[str, str]:
    """One API key per role."""
    with session_scope(settings.database_url) as session:
        return {role.value: create_api_key(session, name=f"test-{role.value}", role=role)
                for role in Role}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """An in-process API client."""
    from service.app import create_app

    with TestClient(create_app(settings, run_reconciler=False)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def postgres_module_url() -> Iterator[str]:
    """Like `postgres_url`, for module-scoped systems."""
    if not postgres_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 (database test) is not available")
    import psycopg

    schema = f"rr_sys_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{POSTGRES_ADMIN}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
