"""A report state as an HL7 v2.5.1 ORU^R01 message, for the RIS / EHR interfaces that take
radiology results over MLLP (`HL7_MLLP`, sent by the outbox like the SR and the FHIR resource).

One message per report state: MSH, PID (patient from the study's DICOM header), ORC / OBR (the
Accession Number as filler order number, StudyDescription as service, result status P for the
AI draft, F signed, C amended, X when a radiologist rejected the draft; the signer as principal
result interpreter) and one OBX of type TX per line of the text (LOINC 18782-3), the draft's
first line saying that a machine wrote it (a rejection's one line says it is withdrawn).
Values are escaped with python-hl7 (`hl7.util.escape`); the message control id is derived from
the document key, so a resent message is recognisably the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import hl7
from pydicom.dataset import Dataset

from service.core.config import Settings
from service.core.models import Report, ReportVersion, Signature

VERSION = "2.5.1"
STATUS = {"draft": "P", "signed": "F", "amended": "C", "rejected": "X"}
NARRATIVE = "18782-3^Radiology Study observation (narrative)^LN"
DRAFT_NOTICE = "PRELIMINARY: AI-generated draft, not reviewed by a radiologist."
_SEPARATORS = hl7.parse("MSH|^~\\&|\r")  # the standard separators, for escaping


def escape(value: object) -> str:
    """A value for one HL7 field component: separators and escape characters escaped, line
    breaks dropped (each line of a text is its own OBX)."""
    text = " ".join(str(value or "").splitlines())
    return hl7.util.escape(_SEPARATORS, text)


def timestamp(when: dt.datetime) -> str:
    """HL7 DTM in UTC (`YYYYMMDDHHMMSS+0000`)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S+0000")


def _person(name: object) -> str:
    """A DICOM PN (family^given^middle^prefix^suffix) as an HL7 XPN (family^given^middle^suffix^
    prefix)."""
    parts = (str(name or "").split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (escape(p) for p in parts)
    return "^".join([family, given, middle, suffix, prefix]).rstrip("^")


def _segment(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


def oru_r01(settings: Settings, report: Report, kind: str, version: ReportVersion,
            signatures: list[Signature], header: Dataset, document_key: str,
            now: dt.datetime) -> bytes:
    """The ORU^R01 (UTF-8, segments ended by CR) of the report state `kind` (draft, signed,
    amended) at `version`, the patient and study from `header` (a DICOM header of the study)."""
    status = STATUS[kind]
    control_id = hashlib.sha256(document_key.encode()).hexdigest()[:20]
    msh = _segment("MSH", "^~\\&", escape(settings.hl7_sending_application),
                   escape(settings.hl7_sending_facility),
                   escape(settings.hl7_receiving_application),
                   escape(settings.hl7_receiving_facility), timestamp(now), "",
                   "ORU^R01^ORU_R01", control_id, "P", VERSION, "", "", "AL", "NE", "", "",
                   "UNICODE UTF-8")
    issuer = escape(header.get("IssuerOfPatientID", ""))
    pid = _segment("PID", "1", "", f"{escape(header.get('PatientID', ''))}^^^{issuer}^MR", "",
                   _person(header.get("PatientName", "")), "",
                   escape(header.get("PatientBirthDate", "")), escape(header.get("PatientSex", "")))
    accession = escape(header.get("AccessionNumber", ""))
    filler = f"{accession}^{escape(settings.hl7_sending_application)}" if accession else ""
    service = f"CXR^{escape(header.get('StudyDescription', '') or 'Chest X-ray')}^L"
    observed = (str(header.get("StudyDate", "") or "") + str(header.get("StudyTime", "") or "")
                ).split(".")[0]
    signer = signatures[-1] if signatures else None
    changed = timestamp(signer.signed_at if signer else version.created_at)
    interpreter = f"&{escape(signer.signer_name)}" if signer else ""
    orc = _segment("ORC", "RE", "", filler, "", "CM")
    obr = _segment("OBR", "1", "", filler, service, "", "", escape(observed), *[""] * 14,
                   changed, "", "", status, *[""] * 6, interpreter)
    if kind == "rejected":  # the preliminary result is withdrawn, with who and why
        lines = [f"AI draft withdrawn: rejected by a radiologist ({report.rejected_reason or ''})"]
    else:
        lines = ([DRAFT_NOTICE] if kind == "draft" else []) + version.text.splitlines()
    obx = [_segment("OBX", str(i), "TX", NARRATIVE, "1", escape(line), "", "", "", "", "",
                    status) for i, line in enumerate(lines, start=1)]
    return "\r".join([msh, pid, orc, obr, *obx]).encode("utf-8") + b"\r"
