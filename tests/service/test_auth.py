"""Every endpoint admits exactly its roles and refuses an absent or wrong token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.core.models import Role
from tests.helpers.service import bearer

ALL_ROLES = {r.value for r in Role}
UNAUTHENTICATED = {"/healthz", "/readyz", "/v1/login"}  # login takes a password, not a token


def protected_operations(settings: Settings) -> list[tuple[str, str, set[str]]]:
    """(method, path, roles) of every endpoint in the OpenAPI schema, from its `x-roles`."""
    schema = create_app(settings, run_reconciler=False).openapi()
    operations = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path in UNAUTHENTICATED:
                continue
            assert "x-roles" in operation, f"{method.upper()} {path} does not declare its roles"
            concrete = path.replace("{study_id}", "00000000-0000-0000-0000-000000000000").replace(
                "{study_uid}", "1.2.3").replace("{index}", "0")
            operations.append((method, concrete, set(operation["x-roles"])))
    return operations


def call(client: TestClient, method: str, path: str, headers: dict[str, str]):
    return client.request(method, path, headers=headers, json={} if method == "post" else None)


def test_every_endpoint_but_health_declares_roles(settings):
    operations = protected_operations(settings)
    assert len(operations) >= 9
    assert all(roles <= ALL_ROLES and roles for _, _, roles in operations)


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("rr_not-a-real-token"), {"Authorization": "Basic dXNlcjpwdw=="}],
    ids=["absent", "unknown", "not-bearer"],
)
def test_every_endpoint_refuses_an_absent_or_wrong_token(client, settings, headers):
    for method, path, _ in protected_operations(settings):
        response = call(client, method, path, headers)
        assert response.status_code == 401, (
            f"{method.upper()} {path} answered {response.status_code}"
        )
        assert response.headers.get("www-authenticate") == "Bearer"


def test_every_endpoint_refuses_the_wrong_roles(client, settings, tokens):
    for method, path, roles in protected_operations(settings):
        for role in ALL_ROLES - roles:
            response = call(client, method, path, bearer(tokens[role]))
            assert response.status_code == 403, (
                f"{role} on {method.upper()} {path}: {response.status_code}"
            )


def test_every_endpoint_admits_its_roles(client, settings, tokens):
    for method, path, roles in protected_operations(settings):
        for role in roles:
            response = call(client, method, path, bearer(tokens[role]))
            assert response.status_code not in (401, 403), f"{role} on {method.upper()} {path}"


def test_a_revoked_key_is_refused(client, settings, tokens):
    from service.auth.api_keys import revoke_api_keys
    from service.core.db import session_scope

    assert client.get("/metrics", headers=bearer(tokens["admin"])).status_code == 200
    with session_scope(settings.database_url) as session:
        revoke_api_keys(session, name="test-admin")
    assert client.get("/metrics", headers=bearer(tokens["admin"])).status_code == 401


def test_health_endpoints_need_no_token(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503  # no Redis, no workers in this test
