"""Hostile uploads in process: decompression bombs, bodies cut short, pixel data of the wrong
length, a SOP Instance UID sent again with other bytes, bodies over the limits, too many uploads
at once. Each is refused with a status and a code the sender can act on, and nothing is stored."""

from __future__ import annotations

import hashlib

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from service.core.db import session_scope
from service.core.limits import Busy, Slots
from service.core.models import AuditEvent, Instance
from service.studies.intake import InstanceHeader, register_instances
from service.worker.app import task
from tests.helpers.dicom_factory import deflated_bomb
from tests.helpers.service import DX_PRESENTATION, bearer, make_dicom, multipart_related, zip_of

FAILED, REFERENCED, REASON, SOP_UID = "00081198", "00081199", "00081197", "00081155"
BOMB = deflated_bomb(64 << 20)  # ~64 kB that would inflate to 64 MiB; the test limit is 2 MB


def stow(client, token, body: bytes, content_type: str):
    return client.post("/dicomweb/studies", content=body,
                       headers={**bearer(token), "Content-Type": content_type})


def form(files: list[bytes], *, boundary: str = "formBoundary7", closed: bool = True):
    """A multipart/form-data body of `files` in field `files`, optionally without its end."""
    body = b""
    for index, data in enumerate(files):
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                 f"filename=\"f{index}.dcm\"\r\nContent-Type: application/dicom\r\n\r\n").encode()
        body += data + b"\r\n"
    if closed:
        body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_form(client, token, body: bytes, content_type: str):
    return client.post("/v1/studies", content=body,
                       headers={**bearer(token), "Content-Type": content_type})


def instances(settings) -> list[Instance]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Instance)))


# ---------------------------------------------------------------- decompression bombs


def test_a_deflate_bomb_over_stow_fails_with_a700_and_nothing_is_stored(client, tokens, settings):
    assert len(BOMB) < 200_000
    response = stow(client, tokens["uploader"], *multipart_related([BOMB]))
    assert response.status_code == 409
    assert response.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA700]
    assert instances(settings) == []


def test_a_deflate_bomb_over_http_upload_is_413_naming_the_limit(client, tokens, settings):
    response = post_form(client, tokens["uploader"], *form([BOMB]))
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "too_large" and "inflates to more than" in body["detail"]
    assert instances(settings) == []


def test_a_deflate_bomb_inside_a_zip_is_refused_like_one_sent_alone(client, tokens, settings):
    response = post_form(client, tokens["uploader"], *form([zip_of({"bomb.dcm": BOMB})]))
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert instances(settings) == []


def test_the_ingest_worker_refuses_a_stored_bomb_with_the_service_limits(settings, monkeypatch):
    from service.core.config import get_settings
    from service.core.models import Role, Study, StudyState, User
    from service.core.storage import BlobStore

    environment = {"DATABASE_URL": settings.database_url, "STORAGE_DIR": str(settings.storage_dir),
                   "REDIS_URL": settings.redis_url, "MAX_INSTANCE_BYTES": "2000000",
                   "BROKER_TIMEOUT_S": "0.2"}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    header = InstanceHeader(generate_uid(), generate_uid(), generate_uid(), DX_PRESENTATION,
                            data=BOMB, sha256=hashlib.sha256(BOMB).hexdigest(), size=len(BOMB))
    with session_scope(settings.database_url) as session:
        user = User(name="bomb-test", role=Role.uploader)
        session.add(user)
        session.flush()
        study_id = register_instances(session, BlobStore(settings.storage_dir), [header], user
                                      ).stored[0].study.id
    try:
        task("ingest").apply(args=[study_id])
    finally:
        get_settings.cache_clear()
    with session_scope(settings.database_url) as session:
        study = session.get(Study, study_id)
        assert study.state == StudyState.failed and study.failure_code == "too_large"
        assert "inflates to more than" in study.failure_reason


# ---------------------------------------------------------------- completeness


def test_a_stow_body_without_its_closing_boundary_is_400_and_the_whole_one_is_stored(
        client, tokens, settings):
    data = make_dicom(size=200)
    body, content_type = multipart_related([data])
    cut = body[: len(body) // 2]
    response = stow(client, tokens["uploader"], cut, content_type)
    assert response.status_code == 400 and response.json()["code"] == "cut_short"
    assert instances(settings) == []
    assert stow(client, tokens["uploader"], body, content_type).status_code == 200
    [stored] = instances(settings)
    assert stored.size_bytes == len(data)


def test_a_stow_body_whose_last_part_lacks_only_the_final_boundary_is_400(client, tokens, settings):
    body, content_type = multipart_related([make_dicom()])
    response = stow(client, tokens["uploader"], body[: body.rindex(b"--dicomBoundary42--")],
                    content_type)
    assert response.status_code == 400
    assert instances(settings) == []


def test_an_upload_without_its_closing_boundary_is_400(client, tokens, settings):
    response = post_form(client, tokens["uploader"], *form([make_dicom()], closed=False))
    assert response.status_code == 400 and response.json()["code"] == "cut_short"
    assert instances(settings) == []


def test_an_instance_cut_inside_its_pixel_data_is_refused_as_truncated(client, tokens, settings):
    data = make_dicom(size=128)
    body, content_type = multipart_related([data[: len(data) - 5000]])
    response = stow(client, tokens["uploader"], body, content_type)
    assert response.status_code == 409
    assert response.json()[FAILED]["Value"][0][REASON]["Value"] == [0xC000]
    response = post_form(client, tokens["uploader"], *form([data[: len(data) - 5000]]))
    assert response.status_code == 422 and response.json()["code"] == "truncated"


def _with_pixel_bytes(size: int, delta: int) -> bytes:
    """A native image whose Pixel Data holds `delta` bytes more (or fewer) than its header says."""
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(size=size)))
    pixels = ds.PixelData
    ds.PixelData = pixels[:delta] if delta < 0 else pixels + bytes(delta)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("delta", [-2000, 2000], ids=["shorter", "longer"])
def test_native_pixel_data_of_another_length_than_the_header_is_corrupt(client, tokens, delta):
    data = _with_pixel_bytes(64, delta)
    response = post_form(client, tokens["uploader"], *form([data]))
    assert response.status_code == 422 and response.json()["code"] == "pixel_length_mismatch"
    response = stow(client, tokens["uploader"], *multipart_related([data]))
    assert response.json()[FAILED]["Value"][0][REASON]["Value"] == [0xC000]


def test_a_sop_instance_sent_again_with_other_bytes_is_a_conflict_over_stow(
        client, tokens, settings):
    study_uid, sop_uid = generate_uid(), generate_uid()
    first = make_dicom(study_uid=study_uid, sop_uid=sop_uid, seed=1)
    other = make_dicom(study_uid=study_uid, sop_uid=sop_uid, seed=2)
    assert stow(client, tokens["uploader"], *multipart_related([first])).status_code == 200
    response = stow(client, tokens["uploader"], *multipart_related([other]))
    assert response.status_code == 409
    [failure] = response.json()[FAILED]["Value"]
    assert failure[SOP_UID]["Value"] == [sop_uid] and failure[REASON]["Value"] == [0xA900]
    [stored] = instances(settings)
    assert stored.sha256 == hashlib.sha256(first).hexdigest()  # the first kept, and said so
    with session_scope(settings.database_url) as session:
        conflicts = select(AuditEvent).where(AuditEvent.action == "instance.conflict")
        [event] = session.scalars(conflicts)
        assert event.details == {"sha256": hashlib.sha256(other).hexdigest(),
                                 "stored_sha256": stored.sha256}


def test_a_sop_instance_sent_again_with_other_bytes_is_409_over_http_upload(
        client, tokens, settings):
    study_uid, sop_uid = generate_uid(), generate_uid()
    assert post_form(client, tokens["uploader"],
                     *form([make_dicom(study_uid=study_uid, sop_uid=sop_uid)])).status_code == 202
    new = make_dicom(study_uid=study_uid, seed=3)
    response = post_form(client, tokens["uploader"],
                         *form([new, make_dicom(study_uid=study_uid, sop_uid=sop_uid, seed=4)]))
    assert response.status_code == 409 and response.json()["code"] == "instance_conflict"
    assert "file 2" in response.json()["detail"]
    assert len(instances(settings)) == 1  # nothing of the refused upload was stored
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "instance.conflict")) == 1


def test_two_parts_of_one_stow_body_with_one_uid_and_other_bytes_conflict(client, tokens):
    sop_uid = generate_uid()
    parts = [make_dicom(sop_uid=sop_uid, seed=5), make_dicom(sop_uid=sop_uid, seed=6)]
    response = stow(client, tokens["uploader"], *multipart_related(parts))
    assert response.status_code == 202
    assert response.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA900]


# ---------------------------------------------------------------- size and concurrency


def _chunks(total: int, size: int = 1 << 16):
    """A chunked body: a part's headers, then `total` bytes of it that never end."""
    yield (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n'
           b"Content-Type: application/dicom\r\n\r\n")
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("path", ["/v1/studies", "/dicomweb/studies"])
def test_an_oversize_chunked_body_is_413_not_400(client, tokens, path):
    content_type = ("multipart/form-data; boundary=b" if path == "/v1/studies"
                    else 'multipart/related; type="application/dicom"; boundary=b')
    response = client.post(path, content=_chunks(5_000_000),
                           headers={**bearer(tokens["uploader"]), "Content-Type": content_type})
    assert response.status_code == 413
    assert "MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_an_upload_file_over_the_instance_limit_is_413_naming_it(client, tokens, settings):
    response = post_form(client, tokens["uploader"], *form([make_dicom(size=1100)]))
    assert response.status_code == 413 and "MAX_INSTANCE_BYTES" in response.json()["detail"]
    assert not list((settings.storage_dir / "tmp").iterdir())  # the spooled file is gone


def test_spool_folders_left_by_a_crash_are_swept_at_start(settings):
    import os

    from service.app import create_app

    stale, fresh = settings.storage_dir / "tmp" / "stale", settings.storage_dir / "tmp" / "fresh"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "00001").write_bytes(b"part")
    os.utime(stale, (0, 0))
    create_app(settings, run_reconciler=False)
    assert not stale.exists() and (fresh / "00001").exists()


def test_slots_refuse_a_key_over_its_share_with_429_and_the_service_when_full_with_503():
    slots = Slots(total=2, per_key=1, what="uploads", retry_after_s=7)
    with slots.hold("a"):
        with pytest.raises(Busy) as per_key:
            with slots.hold("a"):
                pass
        with slots.hold("b"):
            with pytest.raises(Busy) as full:
                with slots.hold("c"):
                    pass
    assert (per_key.value.status, full.value.status) == (429, 503)
    assert full.value.headers() == {"Retry-After": "7"}
    with slots.hold("a"), slots.hold("b"):  # every slot was given back
        pass


def test_uploads_beyond_the_concurrency_limit_are_answered_503_with_retry_after(client, tokens):
    client.app.state.upload_slots = Slots(total=0, per_key=1, what="uploads", retry_after_s=5)
    response = post_form(client, tokens["uploader"], *form([make_dicom()]))
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    response = stow(client, tokens["uploader"], *multipart_related([make_dicom()]))
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
