"""DEID_ON_INGEST: what is stored, indexed and served is a PS3.15 Basic Profile de-identified copy
with consistently remapped UIDs; the identified original is kept only with DEID_KEEP_ORIGINAL.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from collections.abc import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from radiology.deid import Deidentifier
from radiology.dicom import sanitize_preamble
from service.auth.api_keys import create_api_key
from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Instance, Role, Study
from service.core.storage import BlobStore
from tests.helpers.service import bearer, make_dicom, multipart_related

SECRET = "deid-test-secret-0123456789abcdef"


def client_for(settings: Settings, **deid: object) -> Iterator[tuple[TestClient, dict[str, str]]]:
    from service.app import create_app

    configured = settings.model_copy(update={"deid_on_ingest": True,
                                             "radreport_deid_secret": SECRET, **deid})
    with session_scope(settings.database_url) as session:
        tokens = {r.value: create_api_key(session, name=f"d-{r.value}", role=r) for r in Role}
    with TestClient(create_app(configured, run_reconciler=False)) as client:
        yield client, tokens


@pytest.fixture
def deid_client(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    yield from client_for(settings)


def stow(client: TestClient, token: str, files: list[bytes],  # noqa: ANN201
         path: str = "/dicomweb/studies"):
    body, content_type = multipart_related(files)
    return client.post(path, content=body, headers={"Content-Type": content_type,
                                                    **bearer(token)})


def study_of(files: list[bytes]) -> tuple[str, list[bytes]]:
    return str(pydicom.dcmread(io.BytesIO(files[0])).StudyInstanceUID), files


def two_images(patient_id: str = "MRN-4711") -> tuple[str, list[bytes]]:
    study_uid = generate_uid()
    return study_of([make_dicom(study_uid=study_uid, view=v, seed=i, patient_id=patient_id,
                                patient_name="Smith^Anna") for i, v in enumerate(("PA", "AP"))])


def test_the_stored_and_served_copy_is_deidentified_with_consistent_uids(deid_client, settings):
    client, tokens = deid_client
    study_uid, files = two_images()
    assert stow(client, tokens["uploader"], files).status_code == 200
    mapped = Deidentifier(SECRET).map_uid(study_uid)
    with session_scope(settings.database_url) as session:
        study = session.scalar(select(Study).where(Study.study_uid == mapped))
        assert study is not None and len(study.instances) == 2  # grouped by the mapped UID
        assert session.scalar(select(Study).where(Study.study_uid == study_uid)) is None
        shas = [i.sha256 for i in study.instances]
        assert all(i.original_sha256 is None for i in study.instances)
    store = BlobStore(settings.storage_dir)
    for data in files:  # the identified original is not written to disk
        assert not store.exists(hashlib.sha256(sanitize_preamble(data)).hexdigest())
    stored = [pydicom.dcmread(io.BytesIO(store.get(sha))) for sha in shas]
    for ds in stored:
        assert ds.StudyInstanceUID == mapped and ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID.startswith("anon-") and "Smith" not in str(ds.PatientName)
    originals = {pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID: f for f in files}
    assert {ds.SOPInstanceUID for ds in stored} == {Deidentifier(SECRET).map_uid(u)
                                                    for u in originals}
    viewer = bearer(tokens["viewer"])
    assert client.get("/dicomweb/studies", params={"PatientID": "MRN-4711"},
                      headers=viewer).json() == []
    found = client.get("/dicomweb/studies", params={"PatientID": stored[0].PatientID},
                       headers=viewer).json()
    assert [r["0020000D"]["Value"][0] for r in found] == [mapped]


def test_stow_to_the_original_study_resource_is_accepted(deid_client, settings):
    client, tokens = deid_client
    study_uid, files = two_images()
    response = stow(client, tokens["uploader"], files, f"/dicomweb/studies/{study_uid}")
    assert response.status_code == 200, response.text


def test_the_original_is_kept_when_configured(settings):
    for client, tokens in client_for(settings, deid_keep_original=True):
        _, files = two_images("MRN-0815")
        assert stow(client, tokens["uploader"], files).status_code == 200
    with session_scope(settings.database_url) as session:
        originals = [i.original_sha256 for i in session.scalars(select(Instance))]
    store = BlobStore(settings.storage_dir)
    kept = {pydicom.dcmread(io.BytesIO(store.get(sha))).PatientID for sha in originals}
    assert kept == {"MRN-0815"}


def test_the_retain_uids_option_keeps_the_uids(settings):
    for client, tokens in client_for(settings, deid_retain_uids=True):
        study_uid, files = two_images()
        assert stow(client, tokens["uploader"], files).status_code == 200
    with session_scope(settings.database_url) as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        assert study is not None
        ds = pydicom.dcmread(io.BytesIO(BlobStore(settings.storage_dir)
                                        .get(study.instances[0].sha256)))
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID != "MRN-4711"


def test_deid_on_ingest_without_a_secret_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="RADREPORT_DEID_SECRET"):
        Settings(deid_on_ingest=True, storage_dir=tmp_path)


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")
def test_an_instance_received_over_c_store_is_deidentified_too(settings, tmp_path):
    from service.dicomweb.scp import StoreSCP

    configured = settings.model_copy(update={
        "deid_on_ingest": True, "radreport_deid_secret": SECRET, "scp_calling_aets": "STORESCU"})
    study_uid, files = two_images("MRN-C-STORE")
    paths = []
    for i, data in enumerate(files):
        paths.append(tmp_path / f"{i}.dcm")
        paths[-1].write_bytes(data)
    listener = StoreSCP(configured).start("127.0.0.1", 0)
    try:
        result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "RADREPORT", "127.0.0.1",
                                 str(listener.port), *map(str, paths)],
                                capture_output=True, text=True, timeout=60)
    finally:
        listener.stop()
    assert result.returncode == 0, result.stderr
    with session_scope(settings.database_url) as session:
        study = session.scalar(select(Study).where(
            Study.study_uid == Deidentifier(SECRET).map_uid(study_uid)))
        assert study is not None and len(study.instances) == 2
        ds = pydicom.dcmread(io.BytesIO(BlobStore(settings.storage_dir)
                                        .get(study.instances[0].sha256)))
    assert ds.PatientID.startswith("anon-") and ds.PatientIdentityRemoved == "YES"
