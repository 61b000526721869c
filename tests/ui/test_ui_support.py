"""The review page's server side without a browser: its static files and the /v1/ui helper
routes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.ui.support import findings_of, section_spans

REPORT = ("FINDINGS: Small left pleural effusion. No pneumothorax. "
          "Possible right lower lobe pneumonia.\n\n"
          "IMPRESSION: Left effusion.")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    from service.app import create_app
    from service.auth.api_keys import create_api_key
    from service.core.config import Settings
    from service.core.db import migrate, session_scope
    from service.core.models import Role

    tmp = tmp_path_factory.mktemp("ui-support")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    migrate(url)
    with session_scope(url) as session:
        tokens = {role: create_api_key(session, name=f"ui-{role.value}", role=role)
                  for role in Role}
    settings = Settings(database_url=url, redis_url="redis://127.0.0.1:9/0",
                        storage_dir=tmp / "store", broker_timeout_s=0.2, reconcile_interval_s=0)
    with TestClient(create_app(settings, run_reconciler=False)) as test_client:
        test_client.tokens = {role.value: {"Authorization": f"Bearer {t}"}
                              for role, t in tokens.items()}
        yield test_client


def test_every_entity_span_points_at_its_own_characters():
    view = findings_of(REPORT)
    assert view.entities
    for entity in view.entities:
        assert REPORT[entity.start:entity.end] == entity.text


def test_findings_carry_certainty_and_the_anatomy_they_are_located_at():
    found: dict[tuple[str, str], list[str]] = {}
    for e in findings_of(REPORT).entities:
        found.setdefault((e.text, e.certainty), e.anatomy)  # the first mention
    assert found[("effusion", "present")] == ["left pleural"]
    assert ("pneumothorax", "absent") in found
    assert found[("pneumonia", "uncertain")] == ["right lower lobe"]


def test_section_headers_are_sections_not_findings():
    view = findings_of(REPORT)
    assert [s.name for s in view.sections] == ["findings", "impression"]
    assert not any(e.text.upper() in ("FINDINGS", "IMPRESSION") for e in view.entities)
    joined = "".join(REPORT[s.header_start:s.end] for s in section_spans(REPORT))
    assert joined == REPORT  # header + body of every section give the text back exactly


def test_the_page_is_served_with_a_content_security_policy(client):
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/ui/main.js").headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("name", ["..%2Fapp.py", "routes.py", "__init__.py", "missing.js"])
def test_only_the_page_s_own_files_are_served(client, name):
    assert client.get(f"/ui/{name}").status_code == 404


def test_the_helper_routes_refuse_uploaders_and_anonymous_callers(client):
    assert client.post("/v1/ui/findings", json={"text": REPORT}).status_code == 401
    refused = client.post("/v1/ui/findings", json={"text": REPORT},
                          headers=client.tokens["uploader"])
    assert refused.status_code == 403
    answer = client.post("/v1/ui/findings", json={"text": REPORT},
                         headers=client.tokens["radiologist"])
    assert answer.status_code == 200 and answer.json()["chexpert"]["Pleural Effusion"] == 1.0


def test_the_config_names_the_server_s_window_presets(client):
    from service.studies.imaging import WINDOW_PRESETS

    presets = client.get("/v1/ui/config", headers=client.tokens["radiologist"]).json()["presets"]
    assert {p["name"]: (p["center"], p["width"]) for p in presets} == WINDOW_PRESETS
