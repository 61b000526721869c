"""Reports back to the hospital: each report state as DICOM SR for the PACS (and as FHIR
DiagnosticReport, and as HL7 v2 ORU^R01 for the RIS), queued in the outbox in the transaction of
the change.

`publish` is called where a report changes: the generate worker storing the AI draft, and the
sign and amend routes. It builds the document of the report's current state and queues it for
every configured destination (`service.dicomweb.outbox`); nothing is built when none is set.

The SRs of a report (`report_srs`, `radiology.sr`, one Comprehensive SR each, in the study of the
images, in one SR series):
- the AI draft: PARTIAL / PRELIMINARY / UNVERIFIED, the model bundle as device observer, the
  draft notice; SOP Instance UID from the draft's id;
- each signature (the first, then each amendment): COMPLETE / FINAL / VERIFIED, the signer's name,
  SR_ORGANIZATION and the server time of the signature as verifying observer, the signed
  version's text, and the SR before it (the draft, or the previous signed version) as
  predecessor; SOP Instance UID from the signature's id.
The evidence is the headers of the study's stored images (patient and study attributes are
copied from them). Building the same document again gives the same UIDs, so a resend is the same
instance in the PACS.
"""

from __future__ import annotations

import io
import json
import re

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from radiology.sr import AlgorithmDevice, ReportSections, Signature, SRError, draft_sr, signed_sr
from service.core.config import Settings
from service.core.models import (
    AuditEvent,
    Draft,
    Instance,
    OutboxMessage,
    Report,
    ReportStatus,
    ReportVersion,
    Study,
    utcnow,
)
from service.core.storage import BlobStore
from service.dicomweb import outbox
from service.review import fhir, hl7v2, workflow


def evidence(session: Session, store: BlobStore, study_id: str,
             limit: int | None = None) -> list[Dataset]:
    """The headers of a study's stored instances (the first `limit`), in the order they arrived
    (the pixel data is not read)."""
    shas = session.scalars(select(Instance.sha256).where(Instance.study_id == study_id)
                           .order_by(Instance.id).limit(limit))
    return [pydicom.dcmread(store.path(sha), stop_before_pixels=True) for sha in shas]


def sr_sections(sections: dict | None, text: str) -> ReportSections:
    """FINDINGS and IMPRESSION of a stored text; a text without either is given as FINDINGS."""
    sections = sections or {}
    findings, impression = sections.get("findings") or "", sections.get("impression") or ""
    if not (findings.strip() or impression.strip()):
        findings = text
    return ReportSections(findings=findings, impression=impression)


def device_of(bundle_id: str) -> AlgorithmDevice:
    """The model bundle as SR device: `name@hash` gives name and version (the hash)."""
    name, _, version = bundle_id.partition("@")
    return AlgorithmDevice.for_bundle(name[:64] or bundle_id[:64], (version or bundle_id)[:64])


def person_name(name: str) -> str:
    """A user name as a DICOM PN value: no backslash or control characters, at most 64, and a
    name without components ("dr-ada") as the family name alone ("dr-ada^")."""
    value = re.sub(r"[\\\x00-\x1f]", " ", name).strip()[:63] or "unknown"
    return value if "^" in value else value + "^"


def report_srs(session: Session, store: BlobStore, settings: Settings, report: Report
               ) -> list[Dataset]:
    """Every SR of a report so far, oldest first (the draft, then one per signature); SRError
    when the report cannot be written as SR (no images, no text)."""
    draft = session.get(Draft, report.draft_id)
    try:
        images = evidence(session, store, report.study_id)
    except (OSError, InvalidDicomError) as error:
        raise SRError(f"the study's images cannot be read ({type(error).__name__})") from error
    device = device_of(draft.bundle_id)
    documents = [draft_sr(images, sr_sections(draft.sections, draft.text), device,
                          uid_key=f"draft:{draft.id}", created_at=draft.created_at)]
    for number, signature in enumerate(workflow.signatures_of(session, report.id), start=2):
        version = session.scalars(select(ReportVersion).where(
            ReportVersion.report_id == report.id, ReportVersion.version == signature.version)).one()
        signer = Signature(printed_name=person_name(signature.signer_name),
                           organization=settings.sr_organization[:64],
                           signed_at=signature.signed_at)
        documents.append(signed_sr(images, sr_sections(version.sections, version.text), device,
                                   signer, documents[-1], uid_key=f"signature:{signature.id}",
                                   instance_number=number))
    return documents


def part10(ds: Dataset) -> bytes:
    """A data set as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def publish(session: Session, settings: Settings, report: Report, *, actor: str,
            user_id: int | None = None) -> list[OutboxMessage]:
    """Queue the document of the report's current state (draft, signed, amended or rejected) for
    every configured destination, in the caller's transaction; after commit, `outbox.kick` sends
    them.

    A rejected AI draft withdraws what was sent of it: FHIR gets the DiagnosticReport `cancelled`
    (with the reason), HL7 an ORU with result status X; no SR is written (the draft SR stays in
    the PACS: an IHE IOCM rejection note is not built). A report that cannot be written as SR
    gets the audit event `outbox.sr_unavailable` with the reason instead (the change goes on).
    """
    targets = outbox.destinations(settings)
    if not targets:
        return []
    store = BlobStore(settings.storage_dir)
    signatures = workflow.signatures_of(session, report.id)
    kind = ("rejected" if report.status == ReportStatus.rejected else
            "draft" if not signatures else
            "amended" if signatures[-1].kind == "amendment" else "signed")
    version = workflow.current_version(session, report)
    common = {"study_id": report.study_id, "report_id": report.id, "kind": kind,
              "report_version": version.version, "actor": actor, "user_id": user_id}
    queued: list[OutboxMessage] = []
    dicom = [t for t in targets if t in outbox.DICOM_DESTINATIONS and kind != "rejected"]
    if dicom:
        try:
            sr = report_srs(session, store, settings, report)[-1]
        except SRError as error:
            session.add(AuditEvent(actor=actor, user_id=user_id, action="outbox.sr_unavailable",
                                   study_id=report.study_id, report_id=report.id,
                                   details={"kind": kind, "reason": str(error)[:500]}))
        else:
            queued += outbox.queue(session, document_key=str(sr.SOPInstanceUID),
                                   media_type=outbox.DICOM_MEDIA_TYPE,
                                   payload_sha256=store.put(part10(sr)), to=dicom, **common)
    if outbox.FHIR in targets:
        resource = fhir.diagnostic_report(report, session.get(Study, report.study_id),
                                          session.get(Draft, report.draft_id), version, signatures)
        payload = json.dumps(resource, separators=(",", ":")).encode("utf-8")
        queued += outbox.queue(session, document_key=f"DiagnosticReport/{report.id}/{kind}/"
                               f"{version.version}", media_type=outbox.FHIR_MEDIA_TYPE,
                               payload_sha256=store.put(payload), to=[outbox.FHIR], **common)
    if outbox.HL7 in targets:
        queued += _queue_hl7(session, settings, store, report, kind, version, signatures, common)
    return queued


def _queue_hl7(session: Session, settings: Settings, store: BlobStore, report: Report, kind: str,
               version: ReportVersion, signatures: list, common: dict) -> list[OutboxMessage]:
    """The ORU^R01 of this state, queued for HL7_MLLP (`outbox.hl7_unavailable` when the study
    has no readable DICOM header to take the patient from)."""
    try:
        header = evidence(session, store, report.study_id, limit=1)[0]
    except (OSError, InvalidDicomError, IndexError) as error:
        session.add(AuditEvent(actor=common["actor"], user_id=common["user_id"],
                               action="outbox.hl7_unavailable", study_id=report.study_id,
                               report_id=report.id,
                               details={"kind": kind, "reason": type(error).__name__}))
        return []
    key = f"ORU/{report.id}/{kind}/{version.version}"
    payload = hl7v2.oru_r01(settings, report, kind, version, signatures, header, key, utcnow())
    return outbox.queue(session, document_key=key, media_type=outbox.HL7_MEDIA_TYPE,
                        payload_sha256=store.put(payload), to=[outbox.HL7], **common)
