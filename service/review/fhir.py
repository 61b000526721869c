"""A report as a FHIR R4 `DiagnosticReport`: preliminary (AI draft or edits), final (signed),
amended.

Status mapping (hl7.org/fhir/R4/valueset-diagnostic-report-status.html): an unsigned report is
`preliminary`, a signed one `final`, a signed report with a signed amendment `amended`, and a
report whose AI draft was rejected `cancelled`. The text is the current version, given both as
`presentedForm` (text/plain, with its SHA-1 as FHIR asks) and, for the impression, `conclusion`.
Signatures appear as `resultsInterpreter` (the signer's display name) and as extensions with the
meaning, server time and SHA-256 of the signed text. No patient identifiers are included: the
study is referenced by its StudyInstanceUID, which the receiving system resolves.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from service.core.models import Draft, Report, ReportStatus, ReportVersion, Signature, Study

FHIR_STATUS = {
    ReportStatus.preliminary: "preliminary",
    ReportStatus.final: "final",
    ReportStatus.amended: "amended",
    ReportStatus.rejected: "cancelled",
}
# A placeholder canonical base for the extensions (documented as such).
EXT_BASE = "https://radreport.example/fhir/StructureDefinition"


def diagnostic_report(report: Report, study: Study, draft: Draft, version: ReportVersion,
                      signatures: list[Signature]) -> dict[str, Any]:
    """The FHIR R4 DiagnosticReport JSON of a report at its current version."""
    text = version.text
    data = text.encode("utf-8")
    impression = (version.sections or {}).get("impression")
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report.id,
        "meta": {"versionId": str(version.version), "lastUpdated": version.created_at.isoformat()},
        "identifier": [{"system": "urn:radreport:report", "value": report.id}],
        "status": FHIR_STATUS[report.status],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4",
                             "display": "Diagnostic imaging study"}],
                 "text": "Chest X-ray report"},
        "effectiveDateTime": study.received_at.isoformat(),
        "issued": (signatures[-1].signed_at if signatures else version.created_at).isoformat(),
        "imagingStudy": [{"identifier": {"system": "urn:dicom:uid",
                                         "value": f"urn:oid:{study.study_uid}"},
                          "display": "Imaging study of this report"}],
        "presentedForm": [{
            "contentType": "text/plain; charset=utf-8",
            "language": "en",
            "data": base64.b64encode(data).decode("ascii"),
            "size": len(data),
            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),  # noqa: S324 - FHIR's Attachment.hash
            "title": f"Report version {version.version}",
        }],
        "extension": [{"url": f"{EXT_BASE}/ai-draft",
                       "extension": [{"url": "bundle", "valueString": draft.bundle_id},
                                     {"url": "draftId", "valueString": draft.id},
                                     {"url": "draftCreated",
                                      "valueDateTime": draft.created_at.isoformat()}]}],
    }
    if impression:
        resource["conclusion"] = impression
    if signatures:
        signers = dict.fromkeys(s.signer_name for s in signatures)
        resource["resultsInterpreter"] = [{"display": name} for name in signers]
        resource["extension"] += [
            {"url": f"{EXT_BASE}/signature",
             "extension": [{"url": "signer", "valueString": s.signer_name},
                           {"url": "meaning", "valueCode": s.meaning},
                           {"url": "when", "valueInstant": s.signed_at.isoformat()},
                           {"url": "version", "valueInteger": s.version},
                           {"url": "kind", "valueCode": s.kind},
                           {"url": "contentSha256", "valueString": s.content_sha256}]}
            for s in signatures
        ]
    if report.status == ReportStatus.rejected and report.rejected_reason:
        resource["extension"].append({"url": f"{EXT_BASE}/rejection-reason",
                                      "valueString": report.rejected_reason})
    return resource
