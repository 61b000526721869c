"""Hostile request bodies in process: validation errors never echo their input, text that is not
valid Unicode is a 422 (not a 500 whose trace holds it), and an unexpected error is answered and
logged without its message."""

from __future__ import annotations

import logging

from service.core.middleware import has_lone_surrogate
from tests.helpers.service import bearer

SECRET = "Hunter2-" + "s" * 993  # 1001 characters: over the sign password's limit


def test_a_validation_error_never_echoes_the_input(client, tokens):
    response = client.post("/v1/reports/abc/sign", json={"password": SECRET, "version": 1},
                           headers=bearer(tokens["radiologist"]))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request" and "Hunter2" not in response.text
    assert all(set(item) == {"loc", "msg", "type"} for item in body["detail"])
    assert ["body", "password"] in [item["loc"] for item in body["detail"]]


def test_a_lone_surrogate_in_report_text_is_422_not_500(client, tokens):
    headers = {**bearer(tokens["radiologist"]), "Content-Type": "application/json"}
    response = client.put("/v1/reports/abc", headers=headers,
                          content=b'{"text": "Mild \\ud800 effusion", "version": 1}')
    assert response.status_code == 422 and response.json()["code"] == "invalid_text"


def test_a_lone_surrogate_in_a_sign_password_is_422(client, tokens):
    headers = {**bearer(tokens["radiologist"]), "Content-Type": "application/json"}
    response = client.post("/v1/reports/abc/sign", headers=headers,
                           content=b'{"password": "pw\\udfff", "version": 1}')
    assert response.status_code == 422 and response.json()["code"] == "invalid_text"


def test_a_surrogate_pair_is_valid_text_and_passes(client, tokens):
    body = b'{"pairs": [{"hypothesis": "ok \\ud83d\\ude00", "reference": "ok"}]}'
    response = client.post("/v1/score", content=body,
                           headers={**bearer(tokens["admin"]), "Content-Type": "application/json"})
    assert response.status_code != 422, response.text


def test_lone_surrogates_are_found_anywhere_in_a_json_value():
    assert has_lone_surrogate({"a": [1, {"b": "x\udc00"}]})
    assert has_lone_surrogate({"\ud800": 1})
    assert not has_lone_surrogate({"a": ["\U0001F600", 2.5, None]})


def test_a_json_body_over_its_limit_is_413(settings, tokens):
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(settings.model_copy(update={"max_json_bytes": 1000}), run_reconciler=False)
    big = b'{"text": "' + b"a" * 1000 + b'", "version": 1}'
    with TestClient(app) as client:
        response = client.put("/v1/reports/abc", content=big, headers={
            **bearer(tokens["radiologist"]), "Content-Type": "application/json"})
    assert response.status_code == 413 and "MAX_JSON_BYTES" in response.json()["detail"]


def test_an_unexpected_error_is_500_without_its_message_in_the_answer_or_the_log(client, caplog):
    def boom() -> None:
        raise RuntimeError("Doe^Jane said the password is Hunter2")

    client.app.add_api_route("/boom", boom)
    with caplog.at_level(logging.INFO):
        response = client.get("/boom")
    assert response.status_code == 500 and response.json()["code"] == "internal"
    assert "Hunter2" not in response.text and "Hunter2" not in caplog.text
    assert "unexpected RuntimeError in GET /boom" in caplog.text
