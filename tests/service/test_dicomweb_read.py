"""QIDO-RS and WADO-RS under /dicomweb, on the project's synthetic chest radiographs
(radiology.synth: PA + lateral per study, assorted transfer syntaxes), stored by STOW-RS.

Search semantics run on SQLite and PostgreSQL; interoperability is checked with the other side's
own code: dicomweb-client (search, retrieve, metadata) and Orthanc's DICOMweb client pulling a
study from us.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.auth.api_keys import create_api_key
from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Role
from tests.helpers.live_api import LiveAPI
from tests.helpers.orthanc import Orthanc, orthanc_installed
from tests.helpers.service import api_settings, bearer, multipart_related


@dataclass
class Stored:
    """Two synthetic studies stored through STOW-RS, and a key per role."""

    client: TestClient
    settings: Settings
    tokens: dict[str, str]
    files: list[list[bytes]]  # per study: its Part 10 files

    def header(self, study: int, image: int = 0) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(self.files[study][image]), stop_before_pixels=True)

    def get(self, path: str, role: str = "viewer", **kwargs: object):  # noqa: ANN201
        extra = kwargs.pop("headers", {})
        headers = {**bearer(self.tokens[role]), **extra}  # type: ignore[dict-item]
        return self.client.get(path, headers=headers, **kwargs)


def synthetic_study(seed: int) -> list[bytes]:
    from radiology.synth.dataset import generate_study

    return [image.dicom for image in generate_study(seed, size=(128, 128), lateral=True).images]


def store_all(settings: Settings) -> Iterator[Stored]:
    from service.app import create_app

    with session_scope(settings.database_url) as session:
        tokens = {role.value: create_api_key(session, name=f"t-{role.value}", role=role)
                  for role in Role}
    files = [synthetic_study(seed) for seed in (11, 12)]
    with TestClient(create_app(settings, run_reconciler=False)) as client:
        for study in files:
            body, content_type = multipart_related(study)
            response = client.post("/dicomweb/studies", content=body, headers={
                "Content-Type": content_type, **bearer(tokens["uploader"])})
            assert response.status_code == 200, response.text
        yield Stored(client, settings, tokens, files)


@pytest.fixture
def stored(database_url: str, tmp_path: Path) -> Iterator[Stored]:
    """On SQLite and on PostgreSQL."""
    yield from store_all(api_settings(database_url, tmp_path))


@pytest.fixture
def stored_sqlite(settings: Settings) -> Iterator[Stored]:
    yield from store_all(settings)


def values(results: list[dict], tag: str) -> list:
    return [r[tag]["Value"][0] for r in results]


STUDY_UID, PATIENT_ID, ACCESSION, STUDY_DATE = "0020000D", "00100020", "00080050", "00080020"


def test_qido_finds_studies_by_patient_id_accession_and_date_range(stored):
    first, second = stored.header(0), stored.header(1)
    assert values(stored.get("/dicomweb/studies").json(), STUDY_UID) and len(
        stored.get("/dicomweb/studies").json()) == 2
    by_patient = stored.get("/dicomweb/studies", params={"PatientID": first.PatientID}).json()
    assert values(by_patient, STUDY_UID) == [first.StudyInstanceUID]
    by_tag = stored.get("/dicomweb/studies", params={"00080050": second.AccessionNumber}).json()
    assert values(by_tag, STUDY_UID) == [second.StudyInstanceUID]
    wildcard = stored.get("/dicomweb/studies",
                          params={"PatientID": first.PatientID[:3] + "*"}).json()
    assert first.StudyInstanceUID in values(wildcard, STUDY_UID)
    date = first.StudyDate
    for window, found in ((f"{date}-{date}", True), (f"-{date}", True), (f"{date}-", True),
                          ("19000101-19000102", False)):
        results = stored.get("/dicomweb/studies", params={"StudyDate": window,
                                                          "PatientID": first.PatientID}).json()
        assert (values(results, STUDY_UID) == [first.StudyInstanceUID]) is found, window
    study = by_patient[0]
    assert study["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances: PA + lateral
    assert study["00080061"]["Value"] == sorted({first.Modality, stored.header(0, 1).Modality})
    assert study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{first.StudyInstanceUID}")


def test_qido_modalities_in_study_limit_offset_and_includefield(stored_sqlite):
    stored = stored_sqlite
    modality = stored.header(0).Modality
    matched = stored.get("/dicomweb/studies", params={"ModalitiesInStudy": modality}).json()
    assert stored.header(0).StudyInstanceUID in values(matched, STUDY_UID)
    assert stored.get("/dicomweb/studies", params={"ModalitiesInStudy": "MR"}).json() == []
    everything = values(stored.get("/dicomweb/studies").json(), STUDY_UID)
    pages = [values(stored.get("/dicomweb/studies", params={"limit": 1, "offset": i}).json(),
                    STUDY_UID) for i in range(3)]
    assert pages == [everything[:1], everything[1:2], []]
    plain = stored.get("/dicomweb/studies", params={"limit": 1}).json()[0]
    assert "00080090" in plain and "00181030" not in plain
    included = stored.get("/dicomweb/studies", params={"includefield": "all"}).json()[0]
    assert "00280010" in included  # Rows, from the stored header
    named = stored.get("/dicomweb/studies", params={"includefield": "BodyPartExamined"}).json()
    assert "00180015" in named[0]


def test_qido_series_and_instances_of_a_study(stored_sqlite):
    stored = stored_sqlite
    study_uid = stored.header(0).StudyInstanceUID
    series = stored.get(f"/dicomweb/studies/{study_uid}/series").json()
    expected_series = {stored.header(0, i).SeriesInstanceUID for i in range(2)}
    assert set(values(series, "0020000E")) == expected_series
    instances = stored.get(f"/dicomweb/studies/{study_uid}/instances").json()
    assert set(values(instances, "00080018")) == {stored.header(0, i).SOPInstanceUID
                                                  for i in range(2)}
    one_series = stored.header(0, 1).SeriesInstanceUID
    in_series = stored.get(f"/dicomweb/studies/{study_uid}/series/{one_series}/instances").json()
    assert values(in_series, "00080018") == [stored.header(0, 1).SOPInstanceUID]
    all_instances = stored.get("/dicomweb/instances", params={"limit": 10}).json()
    assert len(all_instances) == 4


def test_a_parameter_that_is_no_dicom_attribute_is_400_and_an_unindexed_one_warns(stored_sqlite):
    stored = stored_sqlite
    bad = stored.get("/dicomweb/studies", params={"PatientShoeSize": "42"})
    assert bad.status_code == 400 and "PatientShoeSize" in bad.json()["detail"]
    warned = stored.get("/dicomweb/studies", params={"PatientWeight": "70"})
    assert warned.status_code == 200 and "PatientWeight" in warned.headers["Warning"]
    assert stored.get("/dicomweb/studies", params={"StudyDate": "2020"}).status_code == 400


def test_readers_are_radiologists_admins_and_viewers_not_uploaders(stored_sqlite):
    stored = stored_sqlite
    for role in ("viewer", "radiologist", "admin"):
        assert stored.get("/dicomweb/studies", role=role).status_code == 200
    assert stored.get("/dicomweb/studies", role="uploader").status_code == 403
    assert stored.client.get("/dicomweb/studies").status_code == 401


def test_rendered_is_jpeg_by_default_png_on_request_and_windows_differ(stored_sqlite):
    stored = stored_sqlite
    ds = stored.header(0)
    path = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/rendered")
    jpeg = stored.get(path)
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    png = stored.get(path, headers={"Accept": "image/png"})
    assert Image.open(io.BytesIO(png.content)).format == "PNG"
    lung = stored.get(path, headers={"Accept": "image/png"}, params={"window": "lung"})
    assert lung.status_code == 200 and lung.content != png.content
    explicit = stored.get(path, headers={"Accept": "image/png"}, params={"window": "2048,4096"})
    assert explicit.status_code == 200 and explicit.content not in (png.content, lung.content)
    narrow = stored.get(path, headers={"Accept": "image/png"},
                        params={"window": "2048,1,linear"})
    levels = set(Image.open(io.BytesIO(narrow.content)).getdata())
    assert levels <= {0, 255}  # a window of width 1 is a threshold (PS3.3 C.11.2.1.2.1)
    assert stored.get(path, params={"window": "400,0"}).status_code == 400
    assert stored.get(path, params={"window": "huge"}).status_code == 400
    assert stored.get(path, headers={"Accept": "image/gif"}).status_code == 406


def test_thumbnails_show_the_frontal_view_and_viewport_fits_keeping_aspect(stored_sqlite):
    stored = stored_sqlite
    headers = [stored.header(0, i) for i in range(2)]
    frontal = next(h for h in headers if h.ViewPosition in ("PA", "AP"))
    lateral = next(h for h in headers if h is not frontal)

    def instance(ds: pydicom.Dataset, what: str) -> str:
        return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
                f"instances/{ds.SOPInstanceUID}/{what}")

    study = stored.get(f"/dicomweb/studies/{frontal.StudyInstanceUID}/thumbnail")
    assert study.status_code == 200 and study.headers["content-type"] == "image/jpeg"
    assert study.content == stored.get(instance(frontal, "thumbnail")).content
    assert study.content != stored.get(instance(lateral, "thumbnail")).content
    assert max(Image.open(io.BytesIO(study.content)).size) <= 128
    series = stored.get(f"/dicomweb/studies/{lateral.StudyInstanceUID}/series/"
                        f"{lateral.SeriesInstanceUID}/thumbnail", headers={"Accept": "image/png"})
    assert Image.open(io.BytesIO(series.content)).format == "PNG"
    full = Image.open(io.BytesIO(stored.get(instance(frontal, "rendered")).content)).size
    fitted = stored.get(instance(frontal, "rendered"), params={"viewport": "64,20"})
    width, height = Image.open(io.BytesIO(fitted.content)).size
    assert height == 20 and abs(width / height - full[0] / full[1]) < 0.1
    larger = stored.get(instance(frontal, "rendered"), params={"viewport": "4000,4000"})
    assert Image.open(io.BytesIO(larger.content)).size == full  # never enlarged
    for bad in ("64", "0,10", "1,2,3,4,5,6", "a,b"):
        assert stored.get(instance(frontal, "rendered"),
                          params={"viewport": bad}).status_code == 400
    from sqlalchemy import select

    from service.core.models import AuditEvent

    with session_scope(stored.settings.database_url) as session:
        views = [e.details["view"] for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study.read"))]
    assert views.count("wado-rs thumbnail") == 4  # study, 2 instances, series


def test_every_dicomweb_read_is_audited_per_study_without_the_query(stored):
    from sqlalchemy import select

    from service.core.models import AuditEvent, IndexedInstance, Instance

    def reads() -> list[tuple[str, str, dict]]:
        with session_scope(stored.settings.database_url) as session:
            events = session.scalars(select(AuditEvent).where(
                AuditEvent.action == "study.read").order_by(AuditEvent.id)).all()
            return [(e.study_id, e.actor, e.details) for e in events]

    first = stored.header(0)
    with session_scope(stored.settings.database_url) as session:
        study_id = session.scalar(select(Instance.study_id).join(
            IndexedInstance, IndexedInstance.instance_id == Instance.id).where(
            IndexedInstance.study_uid == first.StudyInstanceUID).limit(1))
    assert reads() == []
    name = str(first.PatientName)
    response = stored.get("/dicomweb/studies", params={"PatientName": name})
    assert response.status_code == 200 and len(response.json()) == 1
    assert reads() == [(study_id, "t-viewer", {"view": "qido-rs study", "results": 1})]
    # A search that matches nothing reads nobody's data.
    assert stored.get("/dicomweb/studies", params={"PatientID": "nobody"}).json() == []
    assert len(reads()) == 1
    uid, series = first.StudyInstanceUID, first.SeriesInstanceUID
    base = f"/dicomweb/studies/{uid}"
    assert stored.get(base).status_code == 200
    assert stored.get(f"{base}/metadata", role="radiologist").status_code == 200
    rendered = f"{base}/series/{series}/instances/{first.SOPInstanceUID}/rendered"
    assert stored.get(rendered).status_code == 200
    views = [(e[0], e[1], e[2]["view"], e[2].get("instances")) for e in reads()[1:]]
    count = len(stored.files[0])
    assert views == [(study_id, "t-viewer", "wado-rs", count),
                     (study_id, "t-radiologist", "wado-rs metadata", count),
                     (study_id, "t-viewer", "wado-rs rendered", 1)]
    # The audit trail never copies the query (a patient's name or ID).
    assert name not in repr(reads()) and first.PatientID not in repr(reads())
    # A refused read (another transfer syntax) is not a read.
    refused = stored.get(base, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3'})
    assert refused.status_code == 406 and len(reads()) == 4


def test_retrieval_of_another_transfer_syntax_is_406_and_unknown_uids_404(stored_sqlite):
    stored = stored_sqlite
    ds = pydicom.dcmread(io.BytesIO(stored.files[0][0]))
    path = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}")
    stored_syntax = str(ds.file_meta.TransferSyntaxUID)
    jpeg_baseline, explicit_little = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"
    other = jpeg_baseline if stored_syntax != jpeg_baseline else explicit_little
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={other}'
    assert stored.get(path, headers={"Accept": accept}).status_code == 406
    same = f'multipart/related; type="application/dicom"; transfer-syntax={stored_syntax}'
    assert stored.get(path, headers={"Accept": same}).status_code == 200
    assert stored.get("/dicomweb/studies/1.2.3.4").status_code == 404


def test_dicomweb_client_stores_searches_retrieves_instances_and_metadata(stored_sqlite):
    from dicomweb_client.api import DICOMwebClient

    stored = stored_sqlite
    with LiveAPI(stored.settings) as api:
        uploader = DICOMwebClient(f"{api.url}/dicomweb",
                                  headers=bearer(stored.tokens["uploader"]))
        third = [pydicom.dcmread(io.BytesIO(f)) for f in synthetic_study(13)]
        answer = uploader.store_instances(third)
        assert len(answer.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in answer
        client = DICOMwebClient(f"{api.url}/dicomweb", headers=bearer(stored.tokens["viewer"]))
        found = client.search_for_instances(third[0].StudyInstanceUID)
        assert {pydicom.Dataset.from_json(i).SOPInstanceUID for i in found} == {
            ds.SOPInstanceUID for ds in third}
        first = stored.header(0)
        found = client.search_for_studies(search_filters={"PatientID": first.PatientID})
        assert [pydicom.Dataset.from_json(s).StudyInstanceUID for s in found] == [
            first.StudyInstanceUID]
        series = client.search_for_series(first.StudyInstanceUID)
        assert len(series) == 2
        instance = client.retrieve_instance(first.StudyInstanceUID, first.SeriesInstanceUID,
                                            first.SOPInstanceUID)
        original = pydicom.dcmread(io.BytesIO(stored.files[0][0]))
        assert instance.SOPInstanceUID == original.SOPInstanceUID
        assert instance.PixelData == original.PixelData
        assert instance.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        metadata = client.retrieve_instance_metadata(first.StudyInstanceUID,
                                                     first.SeriesInstanceUID,
                                                     first.SOPInstanceUID)
        parsed = pydicom.Dataset.from_json(metadata)
        assert (parsed.PatientID, parsed.Rows) == (original.PatientID, original.Rows)
        assert parsed.PixelData is None  # no pixels in metadata: a BulkDataURI to them
        assert metadata["7FE00010"]["BulkDataURI"].startswith(f"{api.url}/dicomweb/studies/")
        rendered = client.retrieve_instance_rendered(
            first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID,
            media_types=("image/png",), params={"viewport": "64,64"})
        assert Image.open(io.BytesIO(rendered)).size == (64, 64)  # 128 x 128 fitted
        study = client.retrieve_study(first.StudyInstanceUID)
        assert {ds.SOPInstanceUID for ds in study} == {stored.header(0, i).SOPInstanceUID
                                                       for i in range(2)}


@pytest.mark.skipif(not orthanc_installed(),
                    reason="Orthanc is not installed: scripts/ensure_pacs.sh")
def test_orthanc_pulls_a_study_from_us_over_dicomweb(stored_sqlite, tmp_path):
    stored = stored_sqlite
    first = stored.header(0)
    with LiveAPI(stored.settings) as api:
        servers = {"radreport": {"Url": f"{api.url}/dicomweb",
                                 "HttpHeaders": bearer(stored.tokens["viewer"])}}
        with Orthanc(tmp_path / "pacs", dicomweb_servers=servers) as pacs:
            studies = pacs.post("/dicom-web/servers/radreport/get", {"Uri": "/studies"})
            assert first.StudyInstanceUID in values(studies, STUDY_UID)
            pacs.post("/dicom-web/servers/radreport/retrieve",
                      {"Resources": [{"Study": first.StudyInstanceUID}], "Synchronous": True})
            pulled = pacs.study_instances(first.StudyInstanceUID)
            assert {i["MainDicomTags"]["SOPInstanceUID"] for i in pulled} == {
                stored.header(0, i).SOPInstanceUID for i in range(2)}
            copy = pydicom.dcmread(io.BytesIO(pacs.instance_file(pulled[0]["ID"])))
            assert copy.PatientID == first.PatientID


def test_reindex_adds_instances_stored_before_the_index_existed(stored_sqlite):
    from sqlalchemy import delete

    from service.core.models import IndexedInstance
    from service.core.storage import BlobStore
    from service.studies.index import reindex

    stored = stored_sqlite
    with session_scope(stored.settings.database_url) as session:
        session.execute(delete(IndexedInstance))
    assert stored.get("/dicomweb/studies").json() == []
    with session_scope(stored.settings.database_url) as session:
        assert reindex(session, BlobStore(stored.settings.storage_dir)) == 4
    assert len(stored.get("/dicomweb/studies").json()) == 2


def test_migration_0004_downgrades_and_upgrades_again(database_url):
    from alembic import command
    from sqlalchemy import inspect

    from service.core.db import alembic_config, get_engine

    config = alembic_config(database_url)
    command.downgrade(config, "0003_sr_outbox")
    assert "instance_index" not in inspect(get_engine(database_url)).get_table_names()
    command.upgrade(config, "head")
    assert "instance_index" in inspect(get_engine(database_url)).get_table_names()
