"""Next to a real PACS with the whole system running: Orthanc sends a study to the service by
STOW-RS and another by C-STORE (to `radreport scp`), the workers draft them, and the draft and the
signed report come back as DICOM SR, to one Orthanc by STOW-RS and to another by C-STORE; with
both PACS down during drafting and signing, every SR arrives once, in order, after they restart.

Real processes: private Redis, the API (its reconciler re-sends due deliveries), the C-STORE
listener, Celery workers (`ingest,score,outbox` and `generate` with a tiny random bundle), SQLite.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from service.auth.accounts import create_user
from service.auth.api_keys import create_api_key
from service.core.db import session_scope
from service.core.models import OutboxMessage, Role, Study
from service.dev.system import LocalSystem, free_port, wait_for
from tests.helpers.orthanc import Orthanc, orthanc_installed
from tests.helpers.service import bearer, build_tiny_bundle, make_dicom
from tests.helpers.sr import dsrdump, sr_sections, srs_in

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not orthanc_installed(),
                                 reason="Orthanc is not installed: run scripts/ensure_pacs.sh")]

PASSWORD = "ada-correct-horse-1"
SIGNED = "FINDINGS: Small left pleural effusion. IMPRESSION: Small left pleural effusion."


class Site:
    """The running system, the two PACS it reports to, and its users' clients."""

    def __init__(self, system: LocalSystem, stow_pacs: Orthanc, cstore_pacs: Orthanc,
                 uploader: str) -> None:
        self.system, self.stow_pacs, self.cstore_pacs = system, stow_pacs, cstore_pacs
        self.uploader = uploader
        with session_scope(system.database_url) as session:
            self.admin = create_api_key(session, name="site-admin", role=Role.admin)
            create_user(session, name="dr-ada", role=Role.radiologist, password=PASSWORD)
        with self.client() as client:
            login = client.post("/v1/login", data={"username": "dr-ada", "password": PASSWORD})
            assert login.status_code == 200, login.text
            self.radiologist = login.json()["access_token"]
        self.seed = 0

    def client(self, token: str | None = None) -> httpx.Client:
        headers = bearer(token) if token else {}
        return httpx.Client(base_url=self.system.api_url, headers=headers, timeout=30)

    def image(self) -> bytes:
        self.seed += 1
        return make_dicom(view="PA", seed=self.seed, size=96, patient_id=f"MRN-SITE-{self.seed}")

    def study(self, study_uid: str) -> str:
        """Our study id of a StudyInstanceUID, once it arrived."""
        def find() -> str | None:
            with session_scope(self.system.database_url) as session:
                return session.scalar(select(Study.id).where(Study.study_uid == study_uid))

        wait_for(lambda: find() is not None, 60, what="the study to arrive")
        return str(find())

    def upload(self, image: bytes) -> str:
        with self.client(self.uploader) as client:
            response = client.post("/v1/studies", files=[("files", ("a.dcm", image))])
            assert response.status_code == 202, response.text
            return response.json()["study_id"]

    def draft(self, study_id: str) -> dict:
        """The draft once the study is draft_ready (fails the test if the study failed)."""
        with self.client(self.admin) as client:
            wait_for(lambda: client.get(f"/v1/studies/{study_id}").json()["state"]
                     in ("draft_ready", "failed"), 180, interval=0.3, what="the draft")
            assert client.get(f"/v1/studies/{study_id}").json()["state"] == "draft_ready"
            return client.get(f"/v1/studies/{study_id}/report").json()

    def sign(self, report_id: str, text: str) -> None:
        base = f"/v1/reports/{report_id}"
        with self.client(self.radiologist) as client:
            assert client.post(f"{base}/claim").status_code == 200
            assert client.put(base, json={"text": text, "version": 1}).status_code == 200
            signed = client.post(f"{base}/sign", json={"password": PASSWORD, "version": 2})
            assert signed.status_code == 200, signed.text

    def messages(self, study_id: str) -> list[OutboxMessage]:
        with session_scope(self.system.database_url) as session:
            return list(session.scalars(select(OutboxMessage)
                                        .where(OutboxMessage.study_id == study_id)
                                        .order_by(OutboxMessage.id)))


def wait_srs(pacs: Orthanc, study_uid: str, count: int, timeout: float = 90) -> list[Dataset]:
    wait_for(lambda: len(srs_in(pacs, study_uid)) >= count, timeout, interval=0.3,
             what=f"{count} SRs in the PACS")
    return srs_in(pacs, study_uid)


def draft_text(draft: dict) -> dict[str, str]:
    """What the SR must say of a draft: its FINDINGS and IMPRESSION, or all its text as FINDINGS."""
    sections = {k: draft["sections"][k] for k in ("findings", "impression")
                if (draft["sections"].get(k) or "").strip()}
    return sections or {"findings": draft["text"].strip()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The system with STOW-RS to one Orthanc and C-STORE to another, fast retries."""
    root = tmp_path_factory.mktemp("pacs-site")
    bundle = build_tiny_bundle(root / "bundle")
    stow_pacs, cstore_pacs = Orthanc(root / "pacs-stow"), Orthanc(root / "pacs-cstore")
    scp_port = free_port()
    # The C-STORE PACS may also send studies to our listener (as to any modality).
    cstore_pacs.modalities = {"radreport": ("RADREPORT", "127.0.0.1", scp_port)}
    env = {
        "SCP_CALLING_AETS": cstore_pacs.aet, "SCP_STUDY_IDLE_S": "5",
        "PACS_STOW_URL": stow_pacs.dicomweb_url,
        "PACS_CSTORE": f"{cstore_pacs.aet}@127.0.0.1:{cstore_pacs.dicom_port}",
        "SR_ORGANIZATION": "General Hospital",
        "OUTBOX_BACKOFF_S": "0.5", "OUTBOX_BACKOFF_MAX_S": "1", "OUTBOX_TIMEOUT_S": "5",
        "RECONCILE_INTERVAL_S": "0.5", "RECONCILE_AFTER_S": "5", "WORKER_HEARTBEAT_S": "1",
        "BATCH_SIZE": "1", "BATCH_WAIT_MS": "0", "MAX_NEW_TOKENS": "8", "WORKER_CONCURRENCY": "1",
        "JAX_CACHE_DIR": str(Path(__file__).resolve().parents[2] / "var" / "test-jax-cache"),
    }
    system = LocalSystem(root / "system", model_bundle=bundle, env=env, redis_url="")
    try:
        system.start(workers=["ingest,score,outbox", "generate"])
        system.start_scp(scp_port)
        with session_scope(system.database_url) as session:
            uploader = create_api_key(session, name="orthanc", role=Role.uploader)
        # The PACS's DICOMweb client may STOW-RS to the service (as a PACS router would).
        stow_pacs.dicomweb_servers = {"radreport": {
            "Url": f"{system.api_url}/dicomweb", "HttpHeaders": bearer(uploader)}}
        with stow_pacs, cstore_pacs:
            system.wait_workers_ready(timeout=240)  # ingest,score,outbox is one worker
            yield Site(system, stow_pacs, cstore_pacs, uploader)
    finally:
        system.stop()


def test_a_study_from_the_pacs_gets_its_draft_then_its_signed_report_back_as_sr(site, tmp_path):
    image = site.image()
    study_uid = str(pydicom.dcmread(io.BytesIO(image)).StudyInstanceUID)
    stored = site.stow_pacs.upload(image)
    site.stow_pacs.stow_to_server("radreport", [stored["ParentStudy"]])  # Orthanc -> us
    reports_come_back(site, study_uid, tmp_path)


def test_a_study_sent_over_c_store_gets_its_draft_then_its_signed_report_back_as_sr(
        site, tmp_path):
    image = site.image()
    study_uid = str(pydicom.dcmread(io.BytesIO(image)).StudyInstanceUID)
    stored = site.cstore_pacs.upload(image)
    site.cstore_pacs.send_to_modality("radreport", [stored["ParentStudy"]])  # Orthanc -> our SCP
    reports_come_back(site, study_uid, tmp_path)


def reports_come_back(site: Site, study_uid: str, tmp_path: Path) -> None:
    """The draft comes back to both PACS as a preliminary SR with the draft's text; signing adds
    a VERIFIED SR with the signed text and the signer; dsrdump reads every SR."""
    study_id = site.study(study_uid)
    draft = site.draft(study_id)
    expected = draft_text(draft)
    for pacs in (site.stow_pacs, site.cstore_pacs):
        [preliminary] = wait_srs(pacs, study_uid, 1)
        assert (preliminary.CompletionFlag, preliminary.VerificationFlag) == ("PARTIAL",
                                                                              "UNVERIFIED")
        assert {k: v for k, v in sr_sections(preliminary).items() if k != "comment"} == expected

    site.sign(draft["report_id"], SIGNED)
    for pacs in (site.stow_pacs, site.cstore_pacs):
        preliminary, final = wait_srs(pacs, study_uid, 2)
        assert (final.CompletionFlag, final.VerificationFlag) == ("COMPLETE", "VERIFIED")
        assert sr_sections(final) == {"findings": "Small left pleural effusion.",
                                      "impression": "Small left pleural effusion."}
        observer = final.VerifyingObserverSequence[0]
        assert (observer.VerifyingObserverName.family_name, observer.VerifyingOrganization) == (
            "dr-ada", "General Hospital")
        for ds in (preliminary, final):
            dsrdump(ds, tmp_path)
    assert [m.state for m in site.messages(study_id)] == ["delivered"] * 4


def test_with_both_pacs_down_during_drafting_and_signing_every_sr_arrives_once_in_order(
        site, tmp_path):
    site.stow_pacs.stop()
    site.cstore_pacs.stop()
    image = site.image()
    study_uid = str(pydicom.dcmread(io.BytesIO(image)).StudyInstanceUID)
    study_id = site.upload(image)
    draft = site.draft(study_id)
    wait_for(lambda: all(m.attempts >= 2 for m in site.messages(study_id)), 60,
             what="the draft's deliveries to be retried")
    site.sign(draft["report_id"], SIGNED)
    waiting = site.messages(study_id)
    assert [(m.kind, m.state) for m in waiting] == [("draft", "pending")] * 2 + [
        ("signed", "pending")] * 2
    assert [m.attempts for m in waiting][2:] == [0, 0]  # queued behind the drafts

    site.stow_pacs.start()
    site.cstore_pacs.start()
    wait_for(lambda: {m.state for m in site.messages(study_id)} == {"delivered"}, 90,
             interval=0.3, what="every delivery after the restart")
    for pacs in (site.stow_pacs, site.cstore_pacs):
        srs = srs_in(pacs, study_uid)
        assert [ds.VerificationFlag for ds in srs] == ["UNVERIFIED", "VERIFIED"]  # each once
        changes = pacs.get("/changes", params={"limit": 1000})["Changes"]
        numbers = {i["ID"]: i["MainDicomTags"]["InstanceNumber"]
                   for i in pacs.study_instances(study_uid)}
        arrivals = [numbers[c["ID"]] for c in changes
                    if c["ChangeType"] == "NewInstance" and c["ID"] in numbers]
        assert arrivals == ["1", "2"]  # the draft first
        for ds in srs:
            dsrdump(ds, tmp_path)
    assert [m.attempts for m in site.messages(study_id)][2:] == [1, 1]
