"""The C-STORE listener (`radreport scp`) against the other side's own code: dcmtk's storescu and
echoscu, and Orthanc sending a study to it as to any modality.

The listener runs in-process on a free port, with a SQLite database and a private Redis, so "the
study is complete" is observable as the study being enqueued for ingest (Study.enqueued_at).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select

from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import AuditEvent, Instance, Study
from service.dev.system import PrivateRedis, wait_for
from service.dicomweb.scp import StoreSCP
from tests.helpers.orthanc import Orthanc, orthanc_installed
from tests.helpers.service import DX_PRESENTATION, make_dicom

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None,
                                reason="dcmtk is not installed: run scripts/ensure_pacs.sh")

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis, so that enqueueing a study for ingest succeeds and is recorded."""
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis.url
    redis.stop()


def listen(settings: Settings, redis_url: str, **overrides: object) -> StoreSCP:
    """A running SCP on a free port with the given settings overrides."""
    values = {"redis_url": redis_url, "scp_calling_aets": "STORESCU,ORTHANC",
              "scp_study_idle_s": 3600.0, **overrides}
    return StoreSCP(settings.model_copy(update=values)).start("127.0.0.1", 0)


@pytest.fixture
def scp(settings: Settings, redis_url: str) -> Iterator[StoreSCP]:
    listener = listen(settings, redis_url)
    yield listener
    listener.stop()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def storescu(scp: StoreSCP, *files: Path, aet: str = "STORESCU") -> subprocess.CompletedProcess:
    """dcmtk storescu with verbose output (it prints each C-STORE response status)."""
    return subprocess.run(["storescu", "-v", "-aet", aet, "-aec", "RADREPORT", "127.0.0.1",
                           str(scp.port), *map(str, files)],
                          capture_output=True, text=True, timeout=60)


def study_row(settings: Settings, study_uid: str) -> Study | None:
    with session_scope(settings.database_url) as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is not None:
            session.expunge(study)
        return study


def instance_count(settings: Settings, study_uid: str) -> int:
    with session_scope(settings.database_url) as session:
        return len(session.scalars(select(Instance).join(Study)
                                   .where(Study.study_uid == study_uid)).all())


def test_storescu_sends_a_study_it_is_stored_grouped_and_sent_to_ingest(scp, settings, tmp_path):
    study_uid = generate_uid()
    files = [write(tmp_path, f"{view}.dcm", make_dicom(study_uid=study_uid, view=view, seed=i))
             for i, view in enumerate(("PA", "LATERAL"))]
    result = storescu(scp, *files)
    assert result.returncode == 0, result.stderr
    assert instance_count(settings, study_uid) == 2
    study = study_row(settings, study_uid)
    assert study is not None and study.state.value == "received"
    wait_for(lambda: study_row(settings, study_uid).enqueued_at is not None, 10,
             what="the study to be sent to ingest when the association ended")
    with session_scope(settings.database_url) as session:
        actors = set(session.scalars(select(AuditEvent.actor)
                                     .where(AuditEvent.study_id == study.id)))
    assert actors == {"user:aet:STORESCU"}


def test_the_same_instance_sent_again_succeeds_and_is_stored_once(scp, settings, tmp_path):
    study_uid = generate_uid()
    path = write(tmp_path, "a.dcm", make_dicom(study_uid=study_uid))
    assert storescu(scp, path).returncode == 0
    again = storescu(scp, path)
    assert again.returncode == 0 and "Success" in again.stderr + again.stdout
    assert instance_count(settings, study_uid) == 1


def test_a_calling_ae_title_not_allowed_is_refused_and_nothing_is_stored(scp, settings, tmp_path):
    study_uid = generate_uid()
    path = write(tmp_path, "a.dcm", make_dicom(study_uid=study_uid))
    result = storescu(scp, path, aet="INTRUDER")
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr + result.stdout
    assert study_row(settings, study_uid) is None


def test_an_empty_allow_list_refuses_every_calling_ae_title(settings, redis_url):
    listener = listen(settings, redis_url, scp_calling_aets="")
    try:
        result = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "RADREPORT", "127.0.0.1",
                                 str(listener.port)], capture_output=True, text=True, timeout=30)
    finally:
        listener.stop()
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr + result.stdout


def test_c_echo_is_answered_for_an_allowed_peer(scp):
    result = subprocess.run(["echoscu", "-v", "-aet", "STORESCU", "-aec", "RADREPORT", "127.0.0.1",
                             str(scp.port)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Received Echo Response (Success)" in result.stderr + result.stdout


def test_an_instance_without_pixels_is_answered_with_status_a900_and_not_stored(
        scp, settings, tmp_path):
    study_uid = generate_uid()
    result = storescu(scp, write(tmp_path, "a.dcm", make_dicom(study_uid=study_uid,
                                                               with_pixels=False)))
    # dcmtk names the status: 0xA900 is "DataSetDoesNotMatchSOPClass".
    assert "Store Response (Error: DataSetDoesNotMatchSOPClass)" in result.stderr + result.stdout
    assert study_row(settings, study_uid) is None


def test_an_image_too_large_is_answered_with_status_a700(settings, redis_url, tmp_path):
    listener = listen(settings, redis_url, max_image_pixels=100)
    try:
        result = storescu(listener, write(tmp_path, "a.dcm", make_dicom(size=64)))
    finally:
        listener.stop()
    assert "Store Response (Refused: OutOfResources)" in result.stderr + result.stdout


def test_a_ct_image_is_refused_at_negotiation_never_silently_dropped(scp, settings, tmp_path):
    study_uid = generate_uid()
    ct = make_dicom(study_uid=study_uid, sop_class=CT_IMAGE)
    result = storescu(scp, write(tmp_path, "ct.dcm", ct))
    assert result.returncode != 0
    assert "no presentation context" in (result.stderr + result.stdout).lower()
    assert study_row(settings, study_uid) is None


def test_a_study_is_complete_after_the_idle_time_while_the_association_stays_open(
        settings, redis_url):
    listener = listen(settings, redis_url, scp_study_idle_s=0.5)
    study_uid = generate_uid()
    sender = AE(ae_title="STORESCU")
    sender.add_requested_context(DX_PRESENTATION)
    association = sender.associate("127.0.0.1", listener.port, ae_title="RADREPORT")
    try:
        assert association.is_established
        dataset = pydicom.dcmread(io.BytesIO(make_dicom(study_uid=study_uid)))
        assert association.send_c_store(dataset).Status == 0x0000
        wait_for(lambda: study_row(settings, study_uid).enqueued_at is not None, 15,
                 what="the idle study to be sent to ingest")
        assert association.is_established  # completed by idle time, not by the association end
    finally:
        association.release()
        listener.stop()


@pytest.mark.skipif(not orthanc_installed(),
                    reason="Orthanc is not installed: scripts/ensure_pacs.sh")
def test_orthanc_sends_a_study_over_c_store_and_it_enters_intake(scp, settings, tmp_path):
    study_uid = generate_uid()
    modality = {"radreport": ("RADREPORT", "127.0.0.1", scp.port)}
    with Orthanc(tmp_path / "pacs", modalities=modality) as pacs:
        stored = [pacs.upload(make_dicom(study_uid=study_uid, view=view, seed=i))
                  for i, view in enumerate(("PA", "LATERAL"))]
        pacs.send_to_modality("radreport", [stored[0]["ParentStudy"]])
    assert instance_count(settings, study_uid) == 2
    wait_for(lambda: study_row(settings, study_uid).enqueued_at is not None, 10,
             what="the study to be sent to ingest")
    with session_scope(settings.database_url) as session:
        study_id = study_row(settings, study_uid).id
        actors = set(session.scalars(select(AuditEvent.actor)
                                     .where(AuditEvent.study_id == study_id)))
    assert actors == {"user:aet:ORTHANC"}
