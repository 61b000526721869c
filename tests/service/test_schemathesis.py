"""schemathesis against the OpenAPI schema, in process: no generated request gets a 5xx."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import hypothesis
import schemathesis
from schemathesis.checks import not_a_server_error

from service.app import create_app
from service.auth.api_keys import create_api_key
from service.core.config import Settings
from service.core.db import migrate, session_scope
from service.core.models import Role

# The schema must exist when the module is collected, so the app is built here, on a scratch SQLite.
WORKDIR = Path(tempfile.mkdtemp(prefix="radreport-schemathesis-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
URL = f"sqlite:///{WORKDIR / 'db.sqlite'}"
migrate(URL)
with session_scope(URL) as _session:
    TOKENS = {role.value: create_api_key(_session, name=f"fuzz-{role.value}", role=role)
              for role in Role}
APP = create_app(
    Settings(database_url=URL, redis_url="redis://127.0.0.1:9/0", storage_dir=WORKDIR / "store",
             broker_timeout_s=0.2, reconcile_interval_s=0),
    run_reconciler=False,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schemathesis.serializer("multipart/related")
def _raw_multipart_related(ctx, value):  # noqa: ANN001, ANN202 - schemathesis' serializer protocol
    """STOW-RS bodies are opaque bytes to the schema: send what was generated as-is."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


@schema.parametrize()
@hypothesis.settings(max_examples=15, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck), derandomize=True)
def test_no_generated_request_gets_a_server_error(case):
    roles = case.operation.definition.raw.get("x-roles") or []
    headers = {"Authorization": f"Bearer {TOKENS[roles[0]]}"} if roles else {}
    if case.path == "/readyz":
        # 503 is /readyz's documented answer while Redis and workers are absent, not a crash.
        response = case.call(headers=headers)
        assert response.status_code < 500 or (
            response.status_code == 503 and "ready" in response.json()
        )
        return
    case.call_and_validate(headers=headers, checks=[not_a_server_error])
