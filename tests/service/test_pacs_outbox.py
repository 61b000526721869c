"""Reports back to the PACS as DICOM SR through the outbox, against a real Orthanc (STOW-RS and
C-STORE), on SQLite and PostgreSQL.

Studies are uploaded through the API and drafted with the workers' own code; signatures and
amendments go through the API; deliveries run the outbox task's function in process (the worker
system with Celery is tests/service/test_pacs_system.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydicom.dataset import Dataset
from sqlalchemy import select

from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import OutboxMessage, OutboxState, Study
from service.core.storage import BlobStore
from service.dev.system import wait_for
from service.dicomweb import outbox
from tests.helpers.orthanc import Orthanc, orthanc_installed
from tests.helpers.review import api, upload_and_draft
from tests.helpers.service import make_dicom
from tests.helpers.sr import dsrdump, sr_sections, srs_in

pytest_plugins = ["tests.helpers.review_fixtures"]

needs_pacs = pytest.mark.skipif(not orthanc_installed(),
                                reason="Orthanc is not installed: run scripts/ensure_pacs.sh")

DRAFT = ("FINDINGS: The heart is normal in size. The lungs are clear. "
         "IMPRESSION: No acute cardiopulmonary process.")
EDITED = ("FINDINGS: The heart is normal in size. Small left pleural effusion. "
          "IMPRESSION: Small left pleural effusion.")
AMENDED = EDITED + " No pneumothorax."
PASSWORDS = {"dr-ada": "ada-correct-horse-1", "dr-bob": "bob-battery-staple-2"}
FAST_RETRIES = {"outbox_backoff_s": 0.05, "outbox_backoff_max_s": 0.2, "outbox_timeout_s": 5.0}


# --------------------------------------------------------------------------- helpers


class Hospital:
    """The service (an in-process API on the review database, with the test's destinations)."""

    def __init__(self, env, settings: Settings, client: TestClient) -> None:
        self.env, self.settings, self.client = env, settings, client

    def drafted_study(self, pacs: Orthanc | None = None, patient_id: str = "MRN-OUTBOX-1"
                      ) -> tuple[str, str, str]:
        """A study the PACS holds (when given) sent to us, ingested and drafted (DRAFT) with the
        workers' code; (study id, report id, StudyInstanceUID)."""
        image = make_dicom(view="PA", seed=3, patient_id=patient_id, patient_name="Secret^Patient")
        if pacs is not None:
            pacs.upload(image)
        study_id, report_id = upload_and_draft(self.settings, self.client,
                                               self.env.headers["pacs-machine"], DRAFT, image)
        with session_scope(self.settings.database_url) as session:
            study_uid = session.get(Study, study_id).study_uid
        return study_id, report_id, study_uid

    def sign(self, report_id: str, name: str = "dr-ada", text: str | None = None) -> None:
        """Claim, optionally edit, and sign a report through the API."""
        headers = self.env.headers[name]
        base = f"/v1/reports/{report_id}"
        assert self.client.post(f"{base}/claim", headers=headers).status_code == 200
        version = 1
        if text is not None:
            edited = self.client.put(base, json={"text": text, "version": 1}, headers=headers)
            assert edited.status_code == 200, edited.text
            version = 2
        signed = self.client.post(f"{base}/sign", headers=headers, json={
            "password": PASSWORDS[name], "meaning": "approval", "version": version})
        assert signed.status_code == 200, signed.text

    def amend(self, report_id: str, text: str, version: int, name: str = "dr-bob") -> None:
        """Amend a signed report through the API."""
        amended = self.client.post(f"/v1/reports/{report_id}/amend", headers=self.env.headers[name],
                                   json={"text": text, "reason": "question from the ward",
                                         "password": PASSWORDS[name], "meaning": "approval",
                                         "version": version})
        assert amended.status_code == 200, amended.text

    def messages(self, study_id: str) -> list[OutboxMessage]:
        """The study's outbox messages, oldest first."""
        with session_scope(self.settings.database_url) as session:
            return list(session.scalars(select(OutboxMessage)
                                        .where(OutboxMessage.study_id == study_id)
                                        .order_by(OutboxMessage.id)))

    def deliver(self, study_id: str) -> int:
        """What the outbox workers do for each open message of the study (the task's function);
        the number delivered."""
        return sum(outbox.deliver(self.settings, m.id, worker="test-outbox")
                   for m in self.messages(study_id) if m.state in outbox.OPEN)

    def deliver_all(self, study_id: str, timeout: float = 30) -> None:
        """Deliver again and again (retries after the short backoff) until no message is open."""
        def done() -> bool:
            self.deliver(study_id)
            return not any(m.state in outbox.OPEN for m in self.messages(study_id))

        wait_for(done, timeout, interval=0.05, what="the outbox to be empty")

    def audit(self, study_id: str) -> list[dict]:
        """The study's audit trail from the API (admin)."""
        response = self.client.get(f"/v1/studies/{study_id}/audit",
                                   headers=self.env.headers["ops-admin"])
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.contextmanager
def hospital_with(review_env, **settings: object) -> Iterator[Hospital]:
    """An in-process API on the review database (its people signed in) with these settings."""
    changed = review_env.settings.model_copy(update=settings)
    with api(changed) as client:
        yield Hospital(review_env, changed, client)


def predecessor_of(ds: Dataset) -> str:
    """The SOP Instance UID an SR names as its predecessor."""
    return (ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def metric(text: str, name: str) -> float:
    """The value of one sample of a Prometheus text exposition."""
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[-1])


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc for the tests that keep it running (each works on its own studies)."""
    if not orthanc_installed():
        pytest.skip("Orthanc is not installed: run scripts/ensure_pacs.sh")
    with Orthanc(tmp_path_factory.mktemp("pacs")) as server:
        yield server


class Recorder(BaseHTTPRequestHandler):
    """A FHIR server or DICOMweb endpoint that records each request and answers the next of
    the server's `statuses` (200 once they are used up)."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append((self.command, self.path, body))  # type: ignore[attr-defined]
        statuses = self.server.statuses  # type: ignore[attr-defined]
        self.send_response(statuses.pop(0) if statuses else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    """A recording HTTP server on a free port (see `Recorder`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests, server.statuses = [], []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- tests


def test_without_a_destination_drafts_and_signatures_queue_nothing(review_env):
    with hospital_with(review_env) as hospital:
        study_id, report_id, _ = hospital.drafted_study()
        hospital.sign(report_id)
        assert hospital.messages(study_id) == []
        assert not [e for e in hospital.audit(study_id) if e["action"].startswith("outbox.")]


@needs_pacs
def test_a_draft_appears_in_the_pacs_as_a_preliminary_sr_of_its_study_with_the_draft_text(
        review_env, pacs, tmp_path):
    with hospital_with(review_env, pacs_stow_url=pacs.dicomweb_url) as hospital:
        study_id, _, study_uid = hospital.drafted_study(pacs)
        [message] = hospital.messages(study_id)
        assert (message.kind, message.destination, message.state) == ("draft", "stow", "pending")
        assert hospital.deliver(study_id) == 1
    [image] = [i for i in pacs.study_instances(study_uid)
               if i["MainDicomTags"]["SOPInstanceUID"] != message.document_key]
    image_series = pacs.get(f"/instances/{image['ID']}/series")["MainDicomTags"]
    [sr] = srs_in(pacs, study_uid)
    assert sr.StudyInstanceUID == study_uid and sr.SOPInstanceUID == message.document_key
    assert sr.SeriesInstanceUID != image_series["SeriesInstanceUID"]  # its own series
    assert sr.PatientID == "MRN-OUTBOX-1"
    assert (sr.CompletionFlag, sr.PreliminaryFlag, sr.VerificationFlag) == (
        "PARTIAL", "PRELIMINARY", "UNVERIFIED")
    text = sr_sections(sr)
    assert (text["findings"], text["impression"]) == (
        "The heart is normal in size. The lungs are clear.", "No acute cardiopulmonary process.")
    assert "AI-generated draft" in text["comment"]
    assert '"bundle-a"' in dsrdump(sr, tmp_path)  # the model bundle as observer device


@needs_pacs
def test_signing_then_amending_sends_verified_srs_each_naming_the_one_before_as_predecessor(
        review_env, pacs, tmp_path):
    with hospital_with(review_env, pacs_stow_url=pacs.dicomweb_url,
                       sr_organization="General Hospital") as hospital:
        study_id, report_id, study_uid = hospital.drafted_study(pacs)
        hospital.sign(report_id, text=EDITED)
        hospital.amend(report_id, AMENDED, version=2)
        assert [m.kind for m in hospital.messages(study_id)] == ["draft", "signed", "amended"]
        assert hospital.deliver(study_id) == 3
    draft, signed, amended = srs_in(pacs, study_uid)
    for ds in (draft, signed, amended):
        dsrdump(ds, tmp_path)
    assert (signed.CompletionFlag, signed.PreliminaryFlag, signed.VerificationFlag) == (
        "COMPLETE", "FINAL", "VERIFIED")
    observer = signed.VerifyingObserverSequence[0]
    assert (observer.VerifyingObserverName.family_name, observer.VerifyingOrganization) == (
        "dr-ada", "General Hospital")
    assert sr_sections(signed) == {"findings": "The heart is normal in size. Small left pleural "
                                   "effusion.", "impression": "Small left pleural effusion."}
    assert predecessor_of(signed) == draft.SOPInstanceUID
    assert amended.VerificationFlag == "VERIFIED"
    assert amended.VerifyingObserverSequence[0].VerifyingObserverName.family_name == "dr-bob"
    assert sr_sections(amended)["impression"] == "Small left pleural effusion. No pneumothorax."
    assert predecessor_of(amended) == signed.SOPInstanceUID
    assert len({draft.SeriesInstanceUID, signed.SeriesInstanceUID, amended.SeriesInstanceUID}) == 1


@needs_pacs
def test_c_store_delivers_the_srs_to_the_pacs_dicom_port(review_env, pacs, tmp_path):
    address = f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}"
    with hospital_with(review_env, pacs_cstore=address) as hospital:
        study_id, report_id, study_uid = hospital.drafted_study(pacs)
        hospital.sign(report_id)
        assert [(m.kind, m.destination) for m in hospital.messages(study_id)] == [
            ("draft", "cstore"), ("signed", "cstore")]
        assert hospital.deliver(study_id) == 2
    draft, signed = srs_in(pacs, study_uid)
    assert (draft.VerificationFlag, signed.VerificationFlag) == ("UNVERIFIED", "VERIFIED")
    assert sr_sections(signed) == {k: v for k, v in sr_sections(draft).items() if k != "comment"}
    dsrdump(signed, tmp_path)


@needs_pacs
def test_with_the_pacs_down_during_drafting_and_signing_every_sr_arrives_once_in_order(
        review_env, tmp_path):
    if review_env.backend == "postgres":
        pytest.skip("retries and lanes run on PostgreSQL in the other tests; one run is enough")
    pacs = Orthanc(tmp_path / "pacs")  # configured, not started yet: the PACS is down
    with contextlib.ExitStack() as cleanup, hospital_with(
            review_env, pacs_stow_url=pacs.dicomweb_url,
            pacs_cstore=f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}", **FAST_RETRIES) as hospital:
        cleanup.callback(pacs.stop)
        study_id, report_id, study_uid = hospital.drafted_study()
        assert hospital.deliver(study_id) == 0
        hospital.sign(report_id, text=EDITED)
        assert hospital.deliver(study_id) == 0
        waiting = hospital.messages(study_id)
        assert [(m.kind, m.destination, m.state) for m in waiting] == [
            ("draft", "stow", "pending"), ("draft", "cstore", "pending"),
            ("signed", "stow", "pending"), ("signed", "cstore", "pending")]
        assert [m.attempts > 0 for m in waiting] == [True, True, False, False]  # behind the drafts
        assert "cannot be reached" in waiting[0].last_error
        assert "association" in waiting[1].last_error

        pacs.start()
        hospital.deliver_all(study_id)
        delivered = hospital.messages(study_id)
        srs = srs_in(pacs, study_uid)
        changes = pacs.get("/changes", params={"limit": 1000})["Changes"]
        numbers = {i["ID"]: i["MainDicomTags"].get("InstanceNumber")
                   for i in pacs.study_instances(study_uid)}
    assert {m.state for m in delivered} == {OutboxState.delivered}
    assert [ds.VerificationFlag for ds in srs] == ["UNVERIFIED", "VERIFIED"]  # each once
    assert predecessor_of(srs[1]) == srs[0].SOPInstanceUID
    for lane in ("stow", "cstore"):
        draft, signed = [m for m in delivered if m.destination == lane]
        assert draft.delivered_at <= signed.delivered_at and signed.attempts == 1
    arrivals = [numbers[c["ID"]] for c in changes if c["ChangeType"] == "NewInstance"]
    assert arrivals == ["1", "2"]  # the draft reached the PACS before the signed report


@needs_pacs
def test_a_redelivered_task_sends_nothing_twice_and_a_pacs_holding_the_sr_counts_as_delivered(
        review_env, pacs):
    with hospital_with(review_env, pacs_stow_url=pacs.dicomweb_url) as hospital:
        study_id, _, study_uid = hospital.drafted_study()
        [message] = hospital.messages(study_id)
        pacs.upload(BlobStore(hospital.settings.storage_dir).get(message.payload_sha256))
        assert hospital.deliver(study_id) == 1  # the PACS had it already: delivered
        assert outbox.deliver(hospital.settings, message.id, worker="again") == 0
        [message] = hospital.messages(study_id)
        attempts = [e for e in hospital.audit(study_id) if e["action"] == "outbox.attempt"]
    assert (message.state, message.attempts, len(attempts)) == ("delivered", 1, 1)
    assert len(srs_in(pacs, study_uid)) == 1


def test_every_attempt_and_delivery_is_audited_and_metrics_show_the_outbox_without_phi(
        review_env, http_server):
    http_server.statuses = [503, 503]  # type: ignore[attr-defined]  # the PACS is overloaded
    url = f"http://127.0.0.1:{http_server.server_port}/dicom-web"
    admin = review_env.headers["ops-admin"]
    with hospital_with(review_env, pacs_stow_url=url, **FAST_RETRIES) as hospital:
        study_id, _, _ = hospital.drafted_study(patient_id="MRN-SECRET-77")
        hospital.deliver(study_id)
        waiting = hospital.client.get("/metrics", headers=admin).text
        hospital.deliver_all(study_id)
        metrics = hospital.client.get("/metrics", headers=admin).text
        events = [e for e in hospital.audit(study_id) if e["action"].startswith("outbox.")]
    assert [e["action"] for e in events] == ["outbox.queue"] + [
        "outbox.attempt", "outbox.retry"] * 2 + ["outbox.attempt", "outbox.delivered"]
    retry = events[2]["details"]
    assert (retry["destination"], retry["kind"], retry["attempt"]) == ("stow", "draft", 1)
    assert retry["error"] == "STOW-RS: HTTP 503" and retry["retry_in_s"] > 0
    assert metric(waiting, 'radreport_outbox_messages{destination="stow",state="pending"}') >= 1
    assert metric(waiting, 'radreport_outbox_oldest_waiting_seconds{destination="stow"}') > 0
    assert metric(metrics, 'radreport_outbox_deliveries_total{destination="stow"}') >= 1
    assert metric(metrics, 'radreport_outbox_failed_attempts_total{destination="stow"}') >= 2
    assert "MRN-SECRET-77" not in waiting + metrics and "Secret" not in waiting + metrics


def test_the_fhir_push_puts_the_diagnostic_report_of_each_state_in_order(review_env, http_server):
    url = f"http://127.0.0.1:{http_server.server_port}/fhir"
    with hospital_with(review_env, fhir_url=url) as hospital:
        study_id, report_id, _ = hospital.drafted_study()
        hospital.sign(report_id, text=EDITED)
        assert [(m.kind, m.destination) for m in hospital.messages(study_id)] == [
            ("draft", "fhir"), ("signed", "fhir")]
        assert hospital.deliver(study_id) == 2
    puts = http_server.requests  # type: ignore[attr-defined]
    assert [(method, path) for method, path, _ in puts] == [
        ("PUT", f"/fhir/DiagnosticReport/{report_id}")] * 2
    first, second = (DiagnosticReport.model_validate(json.loads(body)) for _, _, body in puts)
    assert (first.status, second.status) == ("preliminary", "final")
    assert second.conclusion == "Small left pleural effusion."


def test_a_document_the_destination_refuses_fails_after_the_cap_and_its_lane_moves_on(
        review_env, http_server):
    http_server.statuses = [400, 400]  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{http_server.server_port}/dicom-web"
    with hospital_with(review_env, pacs_stow_url=url, outbox_max_rejections=2,
                       **FAST_RETRIES) as hospital:
        study_id, report_id, _ = hospital.drafted_study()
        hospital.deliver(study_id)
        hospital.sign(report_id)  # queued behind the refused draft
        hospital.deliver_all(study_id)
        draft, signed = hospital.messages(study_id)
        actions = [e["action"] for e in hospital.audit(study_id)]
    assert (draft.state, draft.rejections, draft.last_error) == ("failed", 2, "STOW-RS: HTTP 400")
    assert signed.state == "delivered" and "outbox.failed" in actions
    posted = [path for _, path, _ in http_server.requests]  # type: ignore[attr-defined]
    assert posted == ["/dicom-web/studies"] * 3


def test_failed_messages_sent_again_on_request_are_delivered(review_env, http_server):
    http_server.statuses = [422]  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{http_server.server_port}/dicom-web"
    with hospital_with(review_env, pacs_stow_url=url, outbox_max_rejections=1) as hospital:
        study_id, _, _ = hospital.drafted_study()
        hospital.deliver(study_id)
        assert [m.state for m in hospital.messages(study_id)] == ["failed"]
        with session_scope(hospital.settings.database_url) as session:
            assert outbox.retry_failed(session, actor="it-admin", study_id=study_id) == 1
        assert hospital.deliver(study_id) == 1
        requeued = [e for e in hospital.audit(study_id) if e["action"] == "outbox.requeue"]
    assert requeued[0]["actor"] == "it-admin"
    assert requeued[0]["details"]["last_error"] == "STOW-RS: HTTP 422"


def test_a_refused_signature_queues_nothing(review_env):
    with hospital_with(review_env, pacs_stow_url="http://127.0.0.1:9/dicom-web") as hospital:
        study_id, report_id, _ = hospital.drafted_study()
        ada = review_env.headers["dr-ada"]
        claimed = hospital.client.post(f"/v1/reports/{report_id}/claim", headers=ada)
        assert claimed.status_code == 200
        refused = hospital.client.post(f"/v1/reports/{report_id}/sign", headers=ada, json={
            "password": "wrong", "meaning": "approval", "version": 1})
        assert refused.status_code == 401
        assert [m.kind for m in hospital.messages(study_id)] == ["draft"]


# --------------------------------------------------------------------------- HL7 v2 (MLLP)


class MllpReceiver:
    """An HL7 v2 receiver (python-hl7's asyncio MLLP server) in a thread: it keeps each message
    and answers with python-hl7's own ACK, of the next code in `acks` (AA once they are used)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.acks: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0

    async def _handle(self, reader, writer) -> None:  # noqa: ANN001 - hl7 streams
        try:
            while True:
                message = await reader.readmessage()
                self.messages.append(str(message))
                writer.writemessage(message.create_ack(self.acks.pop(0) if self.acks else "AA"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> MllpReceiver:
        from hl7.mllp import start_hl7_server

        server = self.loop.run_until_complete(start_hl7_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def strict(er7: str):  # noqa: ANN201 - an hl7apy Message
    """The message parsed by hl7apy with strict HL7 2.5.1 validation (its structure, its
    segments' fields and data types)."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    message = parse_message(er7.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    return message


def test_hl7_results_of_each_state_reach_the_ris_as_valid_oru_r01_in_order(review_env):
    import hl7

    with MllpReceiver() as ris, hospital_with(
            review_env, hl7_mllp=f"127.0.0.1:{ris.port}", hl7_sending_facility="GENERAL",
            hl7_receiving_application="RIS") as hospital:
        study_id, report_id, _ = hospital.drafted_study(patient_id="MRN-HL7|^1")
        hospital.sign(report_id, text=EDITED)
        assert [(m.kind, m.destination) for m in hospital.messages(study_id)] == [
            ("draft", "hl7"), ("signed", "hl7")]
        assert hospital.deliver(study_id) == 2
        states = {m.state for m in hospital.messages(study_id)}
    assert states == {OutboxState.delivered}
    draft, signed = ris.messages
    for er7 in (draft, signed):
        parsed = strict(er7)
        assert parsed.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
        assert parsed.msh.msh_4.to_er7() == "GENERAL" and parsed.msh.msh_5.to_er7() == "RIS"
    first, second = hl7.parse(draft.replace("\n", "\r")), hl7.parse(signed.replace("\n", "\r"))
    # separators in the Patient ID come through escaped and back unescaped
    assert first.unescape(str(first.segment("PID")[3][0][0])) == "MRN-HL7|^1"
    assert str(first.segment("PID")[5]) == "Secret^Patient"
    assert (str(first.segment("OBR")[25]), str(second.segment("OBR")[25])) == ("P", "F")
    assert str(second.segment("OBR")[32]) == "&dr-ada"

    def text(message) -> list[str]:  # noqa: ANN001
        return [message.unescape(str(obx[5])) for obx in message.segments("OBX")]

    assert text(first) == ["PRELIMINARY: AI-generated draft, not reviewed by a radiologist.",
                           DRAFT]
    assert text(second) == [EDITED]
    assert all(str(obx[11]) == "F" for obx in second.segments("OBX"))


def test_hl7_acks_decide_delivered_retried_or_refused(review_env):
    with MllpReceiver() as ris, hospital_with(review_env, hl7_mllp=f"127.0.0.1:{ris.port}",
                                              outbox_max_rejections=1, **FAST_RETRIES
                                              ) as hospital:
        ris.acks = ["AR", "AE"]  # not now (retried), then an error in the message (refused)
        study_id, _, _ = hospital.drafted_study()
        hospital.deliver(study_id)
        [message] = hospital.messages(study_id)
        assert (message.state, message.last_error) == (OutboxState.pending, "HL7: ACK AR")
        hospital.deliver_all(study_id)
        [message] = hospital.messages(study_id)
        assert (message.state, message.last_error) == (OutboxState.failed, "HL7: ACK AE")
    assert len(ris.messages) == 2
    with hospital_with(review_env, hl7_mllp="127.0.0.1:9", **FAST_RETRIES) as hospital:
        study_id, _, _ = hospital.drafted_study()
        hospital.deliver(study_id)
        [message] = hospital.messages(study_id)
    assert message.state == OutboxState.pending
    assert message.last_error.startswith("HL7: the receiver cannot be reached")


def test_a_rejected_draft_is_withdrawn_from_the_ris_and_the_fhir_server_not_the_pacs(
        review_env, http_server):
    import hl7

    fhir_url = f"http://127.0.0.1:{http_server.server_port}/fhir"
    with MllpReceiver() as ris, hospital_with(
            review_env, hl7_mllp=f"127.0.0.1:{ris.port}", fhir_url=fhir_url,
            pacs_stow_url=f"http://127.0.0.1:{http_server.server_port}/dicom-web") as hospital:
        study_id, report_id, _ = hospital.drafted_study()
        ada = review_env.headers["dr-ada"]
        claimed = hospital.client.post(f"/v1/reports/{report_id}/claim", headers=ada)
        assert claimed.status_code == 200
        rejected = hospital.client.post(f"/v1/reports/{report_id}/reject", headers=ada,
                                        json={"reason": "wrong side described"})
        assert rejected.status_code == 200, rejected.text
        assert [(m.kind, m.destination) for m in hospital.messages(study_id)] == [
            ("draft", "stow"), ("draft", "fhir"), ("draft", "hl7"),
            ("rejected", "fhir"), ("rejected", "hl7")]  # no SR for a rejection
        hospital.deliver_all(study_id)
    withdrawn = hl7.parse(ris.messages[-1].replace("\n", "\r"))
    strict(ris.messages[-1])
    assert str(withdrawn.segment("OBR")[25]) == "X"
    assert "rejected by a radiologist (wrong side described)" in withdrawn.unescape(
        str(withdrawn.segment("OBX")[5]))
    puts = [body for method, path, body in http_server.requests  # type: ignore[attr-defined]
            if method == "PUT"]
    last = DiagnosticReport.model_validate(json.loads(puts[-1]))
    assert last.status == "cancelled"
