"""A hostile run against `radreport serve` in its own process: decompression bombs, a 300 MB
upload, wrong passwords at signing, invalid text, a large STOW-RS body without a token. The API's
peak RSS is read from /proc (VmHWM, reset before each scenario through clear_refs), and the logs of
the whole run are searched for the passwords, tokens and patient data that went in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from service.auth.accounts import create_user
from service.auth.api_keys import create_api_key
from service.core.db import session_scope
from service.core.models import Role
from service.dev.system import LocalSystem
from tests.helpers.dicom_factory import deflated_bomb
from tests.helpers.review import store_draft
from tests.helpers.service import bearer, make_dicom, multipart_related

pytestmark = pytest.mark.slow

MB = 1024 * 1024
PATIENT = ("Hostile^Harriet", "MRN-HOSTILE-7731")
#: Everything secret or personal that the run sends; none of it may appear in a log.
SECRETS: set[str] = {PATIENT[0], PATIENT[0].replace("^", " "), PATIENT[1]}


class Api:
    """The API process of a LocalSystem: its URL, its memory, its tokens."""

    def __init__(self, system: LocalSystem) -> None:
        self.system = system
        self.url = system.api_url
        self.pid = next(p for p in system.processes if p.name == "api").pid
        with session_scope(system.database_url) as session:
            self.tokens = {
                role.value: create_api_key(session, name=f"hostile-{role.value}", role=role)
                for role in Role}
        SECRETS.update(self.tokens.values())

    def client(self, token: str | None = None, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout,
                            headers=bearer(token) if token else {})

    def reset_peak(self) -> int:
        """Reset VmHWM to the current RSS; returns the current RSS in bytes."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return self._status_kb("VmRSS") * 1024

    def peak_growth_mb(self, rss_before: int) -> float:
        return (self._status_kb("VmHWM") * 1024 - rss_before) / MB

    def _status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    system = LocalSystem(tmp_path_factory.mktemp("hostile"), redis_url="redis://127.0.0.1:9/0",
                         env={"RECONCILE_INTERVAL_S": "0", "BROKER_TIMEOUT_S": "0.3"})
    system.start()
    try:
        yield Api(system)
    finally:
        system.stop()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return deflated_bomb(1 << 30)  # ~1 MB that inflates to 1 GiB


def test_a_deflate_bomb_is_refused_over_stow_and_upload_with_peak_rss_growth_under_300_mb(
        api, bomb):
    assert len(bomb) < 2 * MB
    before = api.reset_peak()
    body, content_type = multipart_related([bomb])
    with api.client(api.tokens["uploader"]) as client:
        stow = client.post("/dicomweb/studies", content=body,
                           headers={"Content-Type": content_type})
        upload = client.post("/v1/studies",
                             files=[("files", ("bomb.dcm", bomb, "application/dicom"))])
    growth = api.peak_growth_mb(before)
    assert stow.status_code == 409
    assert stow.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
    assert upload.status_code == 413 and "MAX_INSTANCE_BYTES" in upload.json()["detail"]
    assert growth < 300, f"peak RSS grew {growth:.0f} MB"


def _big_parts(data: bytes, uids: list[str], boundary: str) -> Iterator[bytes]:
    """A multipart/form-data body of copies of `data`, each with its own SOP Instance UID."""
    template = uids[0].encode()
    for index, uid in enumerate(uids):
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
               f"filename=\"big{index}.dcm\"\r\nContent-Type: application/dicom\r\n\r\n").encode()
        yield data.replace(template, uid.encode()) if index else data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def test_a_300_mb_upload_is_stored_with_peak_rss_growth_under_200_mb(api):
    study_uid = generate_uid()
    uids = [f"1.2.826.0.1.3680043.10.999.{n}" for n in (101, 102, 103)]
    data = make_dicom(size=7300, study_uid=study_uid, sop_uid=uids[0], patient_name=PATIENT[0],
                      patient_id=PATIENT[1])  # 7300 x 7300 x 2 bytes: 102 MiB a file
    assert len(data) > 100 * MB
    before = api.reset_peak()
    with api.client(api.tokens["uploader"], timeout=300) as client:
        response = client.post("/v1/studies", content=_big_parts(data, uids, "big7"),
                               headers={"Content-Type": "multipart/form-data; boundary=big7"})
    growth = api.peak_growth_mb(before)
    assert response.status_code == 202, response.text
    assert response.json()["instances_new"] == 3
    assert growth < 200, f"peak RSS grew {growth:.0f} MB"
    assert not list((api.system.storage_dir / "tmp").glob("*/*"))  # nothing left spooled


def test_a_single_file_over_the_instance_limit_is_413_with_bounded_memory(api):
    before = api.reset_peak()
    chunk = bytes(4 * MB)

    def body() -> Iterator[bytes]:
        yield (b'--one\r\nContent-Disposition: form-data; name="files"; filename="x.dcm"\r\n'
               b"Content-Type: application/dicom\r\n\r\n")
        for _ in range(75):  # 300 MB
            yield chunk
        yield b"\r\n--one--\r\n"

    with api.client(api.tokens["uploader"], timeout=300) as client:
        response = client.post("/v1/studies", content=body(),
                               headers={"Content-Type": "multipart/form-data; boundary=one"})
    assert response.status_code == 413 and "MAX_INSTANCE_BYTES" in response.json()["detail"]
    assert api.peak_growth_mb(before) < 200


def test_a_stow_body_cut_short_is_400_and_the_whole_instance_sent_afterwards_is_stored(api):
    data = make_dicom(size=256, patient_name=PATIENT[0], patient_id=PATIENT[1])
    body, content_type = multipart_related([data])
    with api.client(api.tokens["uploader"]) as client:
        cut = client.post("/dicomweb/studies", content=body[: len(body) * 2 // 3],
                          headers={"Content-Type": content_type})
        whole = client.post("/dicomweb/studies", content=body,
                            headers={"Content-Type": content_type})
    assert cut.status_code == 400 and cut.json()["code"] == "cut_short"
    assert whole.status_code == 200
    assert "00081198" not in whole.json() and len(whole.json()["00081199"]["Value"]) == 1


def test_lone_surrogates_are_refused_with_422(api):
    with api.client(api.tokens["radiologist"]) as client:
        for path, body in (("/v1/reports/x/sign", b'{"password": "pw\\ud800", "version": 1}'),
                           ("/v1/reports/x", b'{"text": "Effusion \\udfff", "version": 1}')):
            method = "PUT" if path == "/v1/reports/x" else "POST"
            response = client.request(method, path, content=body,
                                      headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (path, response.text)


def test_wrong_passwords_at_signing_lock_the_account_like_wrong_sign_ins(api):
    settings = api.system.settings()
    password, wrong = "hostile-correct-pass-5", [f"Guess-{n}-oracle" for n in range(10)]
    SECRETS.update([password, *wrong])
    with session_scope(settings.database_url) as session:
        create_user(session, name="dr-hostile", role=Role.radiologist, password=password)
    _, report_id = store_draft(settings, "FINDINGS: Clear. IMPRESSION: Normal.")
    with api.client() as client:
        token = client.post("/v1/login", data={"username": "dr-hostile", "password": password}
                            ).json()["access_token"]
        SECRETS.add(token)
        headers = bearer(token)
        assert client.post(f"/v1/reports/{report_id}/claim", headers=headers).status_code == 200
        answers = [client.post(f"/v1/reports/{report_id}/sign", headers=headers,
                               json={"password": guess, "version": 1}) for guess in wrong]
        assert {a.status_code for a in answers} == {401}
        assert "locked" in answers[-1].json()["detail"]
        assert client.get("/v1/me", headers=headers).status_code == 401
        again = client.post("/v1/login", data={"username": "dr-hostile", "password": password})
        assert again.status_code == 429


def test_a_large_stow_body_without_a_token_gets_its_401(api):
    body, content_type = multipart_related([bytes(16 * MB)])
    with api.client() as client:
        response = client.post("/dicomweb/studies", content=body,
                               headers={"Content-Type": content_type})
    assert response.status_code == 401  # read, not a reset connection


def test_security_headers_on_json_and_html(api):
    with api.client(api.tokens["admin"]) as client:
        login = client.post("/v1/login", data={"username": "nobody", "password": "x" * 12})
        page = client.get("/v1/quality/html")
    assert login.headers["Cache-Control"] == "no-store"
    assert page.status_code == 200 and "default-src" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_the_logs_of_the_hostile_run_hold_no_secret_token_or_patient_data(api):
    logs = api.system.logs_text()
    assert len(logs) > 0
    leaked = sorted(s for s in SECRETS if s in logs)
    assert leaked == [], f"found in the logs: {[s[:6] + '...' for s in leaked]}"
    assert "\\ud800" not in logs and "Traceback" not in logs
