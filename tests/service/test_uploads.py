"""Upload routes in process: POST /v1/studies and STOW-RS take good DICOM, refuse hostile input."""

from __future__ import annotations

import hashlib
import zipfile

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from service.core.db import session_scope
from service.core.models import AuditEvent, Instance, Study, StudyState
from service.core.storage import BlobStore
from tests.helpers.service import BASIC_TEXT_SR, bearer, make_dicom, multipart_related, zip_of


def upload(client: TestClient, token: str, *files: bytes, content_type: str | None = None):
    if content_type is not None:
        headers = {**bearer(token), "Content-Type": content_type}
        return client.post("/v1/studies", content=files[0], headers=headers)
    parts = [("files", (f"f{i}.dcm", f, "application/dicom")) for i, f in enumerate(files)]
    return client.post("/v1/studies", files=parts, headers=bearer(token))


def test_upload_returns_202_with_study_id_and_status_url(client, tokens, settings):
    study_uid = generate_uid()
    frontal, lateral = make_dicom(study_uid=study_uid), make_dicom(study_uid=study_uid, view="LL")
    response = upload(client, tokens["uploader"], frontal, lateral)
    assert response.status_code == 202
    body = response.json()
    assert body["status_url"] == f"/v1/studies/{body['study_id']}"
    assert body["instances_new"] == 2
    with session_scope(settings.database_url) as session:
        study = session.get(Study, body["study_id"])
        assert study.study_uid == study_uid and study.state == StudyState.received
        assert len(study.instances) == 2


def test_same_instances_again_give_the_same_study_and_nothing_new(client, tokens, settings):
    files = [make_dicom(study_uid="1.2.3.4", sop_uid="1.2.3.4.1"),
             make_dicom(study_uid="1.2.3.4", sop_uid="1.2.3.4.2")]
    first = upload(client, tokens["uploader"], *files).json()
    again = upload(client, tokens["uploader"], *files).json()
    assert again["study_id"] == first["study_id"]
    assert again["instances_new"] == 0
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 1
        assert session.scalar(select(func.count()).select_from(Instance)) == 2


def test_a_zip_of_instances_is_one_upload(client, tokens):
    study_uid = generate_uid()
    archive = zip_of({"a/1.dcm": make_dicom(study_uid=study_uid),
                      "a/2.dcm": make_dicom(study_uid=study_uid, seed=1)})
    response = upload(client, tokens["uploader"], archive)
    assert response.status_code == 202
    assert response.json()["instances_new"] == 2


def test_stored_files_have_a_zeroed_preamble_and_are_content_addressed(client, tokens, settings):
    planted = b"MZ\x90\x00 polyglot executable header"
    study_id = upload(client, tokens["uploader"], make_dicom(preamble=planted)).json()["study_id"]
    with session_scope(settings.database_url) as session:
        instance = session.get(Study, study_id).instances[0]
        stored = BlobStore(settings.storage_dir).get(instance.sha256)
    assert stored[:128] == bytes(128) and stored[128:132] == b"DICM"
    assert hashlib.sha256(stored).hexdigest() == instance.sha256


def test_upload_writes_name_the_user_in_the_audit_trail(client, tokens, settings):
    study_id = upload(client, tokens["uploader"], make_dicom()).json()["study_id"]
    with session_scope(settings.database_url) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.study_id == study_id)).all()
    assert {e.action for e in events} == {"study.receive", "instance.store"}
    assert all(e.actor == "user:test-uploader" and e.user_id is not None for e in events)


def test_corrupt_file_is_refused_with_422(client, tokens):
    response = upload(client, tokens["uploader"], b"\0" * 128 + b"DICM" + b"\xff" * 300)
    assert response.status_code == 422
    assert response.json()["code"] == "truncated"  # its garbage "element" runs past the end


def test_non_dicom_file_is_refused_with_422(client, tokens):
    response = upload(client, tokens["uploader"], b"%PDF-1.4 not an image at all" * 10)
    assert response.status_code == 422
    assert response.json()["code"] == "not_dicom"


def test_non_image_sop_class_is_refused_with_422(client, tokens):
    text_report = make_dicom(sop_class=BASIC_TEXT_SR, with_pixels=False)
    response = upload(client, tokens["uploader"], text_report)
    assert response.status_code == 422
    assert response.json()["code"] == "unsupported_sop_class"


def test_image_without_pixel_data_is_refused_with_422(client, tokens):
    response = upload(client, tokens["uploader"], make_dicom(with_pixels=False))
    assert response.status_code == 422
    assert response.json()["code"] == "no_pixels"


def test_oversized_instance_is_refused_with_413(client, tokens):
    response = upload(client, tokens["uploader"], make_dicom(size=1100))  # 2.4 MB > 2 MB limit
    assert response.status_code == 413


def test_oversized_body_is_refused_with_413_before_parsing(client, tokens):
    response = upload(client, tokens["uploader"], b"x" * 5_000_000)
    assert response.status_code == 413


def test_wrong_content_type_is_refused_with_415(client, tokens):
    response = upload(client, tokens["uploader"], make_dicom(), content_type="application/dicom")
    assert response.status_code == 415


def test_zip_bomb_is_refused_with_413(client, tokens):
    bomb = zip_of({"bomb.dcm": b"\0" * 3_000_000}, compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 10_000
    response = upload(client, tokens["uploader"], bomb)
    assert response.status_code == 413
    assert response.json()["code"] == "zip_bomb"


def test_files_of_several_studies_in_one_upload_are_refused(client, tokens):
    response = upload(client, tokens["uploader"], make_dicom(), make_dicom())
    assert response.status_code == 422
    assert response.json()["code"] == "several_studies"


# ------------------------------------------------------------------------------------ STOW-RS

REFERENCED, FAILED, REASON, SOP_UID = "00081199", "00081198", "00081197", "00081155"


def stow(client: TestClient, token: str, parts: list[bytes], path: str = "/dicomweb/studies",
         **kwargs):
    body, content_type = multipart_related(parts, **kwargs)
    return client.post(path, content=body, headers={**bearer(token), "Content-Type": content_type})


def test_stow_stores_all_instances_with_200_and_referenced_sequence(client, tokens):
    study_uid = generate_uid()
    parts = [make_dicom(study_uid=study_uid), make_dicom(study_uid=study_uid, seed=2)]
    response = stow(client, tokens["uploader"], parts)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    body = response.json()
    assert len(body[REFERENCED]["Value"]) == 2 and FAILED not in body
    assert response.headers["X-Study-Status"].startswith("/v1/studies/")


def test_stow_accepts_an_unquoted_type_parameter(client, tokens):
    response = stow(client, tokens["uploader"], [make_dicom()], quoted=False)
    assert response.status_code == 200


def test_stow_with_some_failures_answers_202_with_reasons(client, tokens):
    response = stow(client, tokens["uploader"], [make_dicom(), b"garbage" * 40])
    assert response.status_code == 202
    body = response.json()
    assert len(body[REFERENCED]["Value"]) == 1
    assert body[FAILED]["Value"][0][REASON]["Value"] == [0xC000]


def test_stow_storing_nothing_answers_409(client, tokens):
    text_report = make_dicom(sop_class=BASIC_TEXT_SR, with_pixels=False)
    response = stow(client, tokens["uploader"], [text_report])
    assert response.status_code == 409
    assert response.json()[FAILED]["Value"][0][REASON]["Value"] == [0x0122]


def test_stow_to_a_study_refuses_instances_of_another_study(client, tokens):
    target = generate_uid()
    other = make_dicom(study_uid=generate_uid(), sop_uid="1.2.826.0.1.99")
    response = stow(client, tokens["uploader"], [make_dicom(study_uid=target), other],
                    path=f"/dicomweb/studies/{target}")
    assert response.status_code == 202
    failed = response.json()[FAILED]["Value"]
    assert failed[0][SOP_UID]["Value"] == ["1.2.826.0.1.99"]
    assert failed[0][REASON]["Value"] == [0xA900]


def test_stow_with_another_media_type_answers_415(client, tokens):
    response = stow(client, tokens["uploader"], [make_dicom()], part_type="application/dicom+json")
    body, _ = multipart_related([make_dicom()])
    headers = {**bearer(tokens["uploader"]), "Content-Type": "multipart/form-data; boundary=x"}
    form = client.post("/dicomweb/studies", content=body, headers=headers)
    assert form.status_code == 415
    assert response.status_code in (409, 415)


def test_stow_part_over_the_size_limit_fails_with_a7xx(client, tokens):
    response = stow(client, tokens["uploader"], [make_dicom(), make_dicom(size=1100)])
    assert response.status_code == 202
    assert response.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA700]


def test_stow_malformed_multipart_answers_400(client, tokens):
    content_type = 'multipart/related; type="application/dicom"; boundary=abc'
    response = client.post("/dicomweb/studies", content=b"no boundary anywhere",
                           headers={**bearer(tokens["uploader"]), "Content-Type": content_type})
    assert response.status_code == 400


def test_stow_same_instances_again_is_idempotent(client, tokens, settings):
    parts = [make_dicom(study_uid="1.2.3.9", sop_uid="1.2.3.9.1")]
    assert stow(client, tokens["uploader"], parts).status_code == 200
    assert stow(client, tokens["uploader"], parts).status_code == 200
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1
