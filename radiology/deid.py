"""De-identification: a PS3.15 Basic Profile copy of a DICOM header; hashed identifiers for logs.

The attribute table (which action applies to which tag) is the DICOM standard's Table E.1-1 as
packaged by ``dicom-anonymizer`` (edition 2026c); the actions are applied here so that UIDs map
*consistently* across instances, processes and machines: every UID (Study, Series, SOP Instance,
Frame of Reference, referenced UIDs inside sequences, the file meta's Media Storage SOP Instance
UID) becomes ``2.25.<HMAC-SHA256(secret, uid) as a 128-bit integer>``. The same secret always
gives the same mapping; without the secret it cannot be reversed.

Actions: D -> a dummy value of the attribute's VR; Z -> empty value; X -> removed; U -> remapped
UID; combined codes take the least destructive action that keeps the header valid (X/Z -> Z,
X/D, Z/D and X/Z/D -> D, X/Z/U* -> U for UIDs else Z). Also removed: all private attributes,
overlay and curve groups (50xx, 60xx). Sequences are processed recursively. The result carries
Patient Identity Removed = YES and the Deidentification Method (Code 113100, "Basic Application
Confidentiality Profile"). Options: Retain Patient Characteristics (113108) and Retain UIDs
(113110: UIDs are kept as they are, for a research copy that must stay linkable to the PACS).
Patient ID becomes a keyed pseudonym (``anon-<12 hex>``) so that one
patient's studies stay linkable inside the service; set ``pseudonymize_patient_id=False`` for the
profile's own value (the table's dummy).

Not covered (declare it where the data leave): burned-in text in pixels (check
``has_burned_in_annotation``), free text in private or unknown attributes beyond the table.

Identifiers for logs and metrics: :meth:`Deidentifier.safe_ids` returns short keyed hashes of the
study / series / instance / patient identifiers; nothing else about an instance may be logged.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import os
from dataclasses import dataclass
from functools import lru_cache

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

__all__ = ["Deidentifier", "SafeIds", "has_burned_in_annotation", "profile_actions", "SECRET_ENV"]

SECRET_ENV = "RADREPORT_DEID_SECRET"
_TABLE_EDITION = "dicomfields_2026c"
_ACTION_PRIORITY = ("X_Z_U_STAR_TAGS", "U_TAGS", "X_Z_D_TAGS", "X_D_TAGS", "Z_D_TAGS", "D_TAGS",
                    "X_Z_TAGS", "Z_TAGS", "X_TAGS")
_ACTION_OF = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "D",
    "X_Z_TAGS": "Z",
    "X_D_TAGS": "D",
    "X_Z_D_TAGS": "D",
    "X_Z_U_STAR_TAGS": "U",
}
_PATIENT_ID = 0x00100020
_PATIENT_CHARACTERISTICS = {0x00101010, 0x00100040, 0x00101020, 0x00101030, 0x00102160,
                            0x001021C0, 0x001021A0}
_DUMMY = {
    "PN": "ANONYMOUS",
    "LO": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "CS": "ANONYMIZED",
    "AE": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000.00",
    "DT": "19000101000000.00",
    "AS": "000D",
    "IS": "0",
    "DS": "0",
}


@lru_cache(maxsize=1)
def profile_actions() -> dict[int, str]:
    """Tag (as int) -> one of D / Z / X / U, from PS3.15 Table E.1-1 (Basic Profile column)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(_TABLE_EDITION)
    actions: dict[int, str] = {}
    for name in reversed(_ACTION_PRIORITY):  # earlier names in the priority list win
        for entry in table[name]:
            if len(entry) != 2:  # masked ranges (50xx, 60xx overlays): handled in Deidentifier
                continue
            group, element = entry
            actions[(group << 16) | element] = _ACTION_OF[name]
    return actions


def has_burned_in_annotation(ds: Dataset) -> bool:
    """True when the header says the pixels carry burned-in text (route such images to review)."""
    return str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"


@dataclass(frozen=True)
class SafeIds:
    """Keyed hashes that may appear in logs, traces and metric labels (never the raw values)."""

    study: str | None
    series: str | None
    instance: str | None
    patient: str | None

    def as_dict(self) -> dict[str, str | None]:
        """Plain dict, e.g. for structured logging."""
        return {"study": self.study, "series": self.series, "instance": self.instance,
                "patient": self.patient}


class Deidentifier:
    """Applies the Basic Profile with a keyed, consistent UID mapping.

    >>> d = Deidentifier(b"0123456789abcdef-test-secret")
    >>> d.map_uid("1.2.3") == d.map_uid("1.2.3") != d.map_uid("1.2.4")
    True
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        pseudonymize_patient_id: bool = True,
        retain_patient_characteristics: bool = False,
        retain_uids: bool = False,
    ) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ValueError(
                f"The de-identification secret must be at least 16 bytes; set {SECRET_ENV} to a "
                "long random value (the same on every worker, kept out of the repository)."
            )
        self._key = key
        self.pseudonymize_patient_id = pseudonymize_patient_id
        self.retain_patient_characteristics = retain_patient_characteristics
        self.retain_uids = retain_uids

    @classmethod
    def from_env(cls, **kwargs: bool) -> Deidentifier:
        """Build from the secret in ``RADREPORT_DEID_SECRET``."""
        secret = os.environ.get(SECRET_ENV, "")
        if not secret:
            raise ValueError(
                f"{SECRET_ENV} is not set: de-identification needs a secret key shared by all "
                "workers so that UIDs map consistently. Generate one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`."
            )
        return cls(secret, **kwargs)

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def map_uid(self, value: str) -> str:
        """Consistent replacement UID in the 2.25 (UUID-derived) root, at most 44 characters
        (the UID itself with the Retain UIDs Option)."""
        value = str(value).strip().rstrip("\x00")
        if not value or self.retain_uids:
            return value
        return "2.25." + str(int.from_bytes(self._digest("uid", value)[:16], "big"))

    def hash_id(self, kind: str, value: str | None) -> str | None:
        """A 16-hex-character keyed hash of one identifier, domain-separated by ``kind``."""
        if value is None or str(value).strip() == "":
            return None
        return self._digest(kind, str(value).strip()).hex()[:16]

    def safe_ids(self, source: Dataset | object) -> SafeIds:
        """Hashed identifiers of a Dataset or a decoded image (``radiology.dicom.DicomImage``)."""
        if isinstance(source, Dataset):
            study = source.get("StudyInstanceUID")
            series = source.get("SeriesInstanceUID")
            instance = source.get("SOPInstanceUID")
            patient = source.get("PatientID")
        else:
            study = getattr(source, "study_uid", None)
            series = getattr(source, "series_uid", None)
            instance = getattr(source, "sop_uid", None)
            patient = None
        return SafeIds(
            study=self.hash_id("study", study),
            series=self.hash_id("series", series),
            instance=self.hash_id("instance", instance),
            patient=self.hash_id("patient", patient),
        )

    def deidentify(self, ds: Dataset, *, keep_pixels: bool = False) -> Dataset:
        """A de-identified copy of ``ds`` (``ds`` is unchanged); pixel data dropped by default."""
        source = ds
        if not keep_pixels:  # drop pixels from a shallow copy first: never deep-copy megabytes
            pixel_tags = (0x7FE00010, 0x7FE00008, 0x7FE00009)
            source = Dataset({tag: ds[tag] for tag in ds.keys() if tag not in pixel_tags})
            if hasattr(ds, "file_meta"):
                source.file_meta = ds.file_meta
        out = copy.deepcopy(source)
        patient_id = str(ds.get("PatientID", "") or "")
        self._apply(out, profile_actions())
        if self.pseudonymize_patient_id and patient_id:
            out.PatientID = "anon-" + (self.hash_id("patient", patient_id) or "")[:12]
        meta = getattr(out, "file_meta", None)
        if meta is not None:
            if "MediaStorageSOPInstanceUID" in meta:
                meta.MediaStorageSOPInstanceUID = self.map_uid(meta.MediaStorageSOPInstanceUID)
            for tag in (0x00020016, 0x00020017, 0x00020018):  # sending/receiving/source AE titles
                if tag in meta:
                    del meta[tag]
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = "DICOM PS3.15 Basic Application Level Confidentiality Profile"
        code = Dataset()
        code.CodeValue = "113100"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        codes = [code]
        options = (("113108", "Retain Patient Characteristics Option",
                    self.retain_patient_characteristics),
                   ("113110", "Retain UIDs Option", self.retain_uids))
        for value, meaning, chosen in options:
            if chosen:
                option = Dataset()
                option.CodeValue = value
                option.CodingSchemeDesignator = "DCM"
                option.CodeMeaning = meaning
                codes.append(option)
        out.DeidentificationMethodCodeSequence = Sequence(codes)
        return out

    def deidentify_file(self, data: bytes) -> bytes:
        """A de-identified Part 10 file of a Part 10 file: the same transfer syntax and pixels,
        the header through the Basic Profile (and the chosen options)."""
        ds = dcmread(io.BytesIO(data))
        out = self.deidentify(ds, keep_pixels=True)
        buffer = io.BytesIO()
        out.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    def _apply(self, ds: Dataset, actions: dict[int, str]) -> None:
        for tag in list(ds.keys()):
            tag = BaseTag(tag)
            group = tag.group
            curve = 0x5000 <= group <= 0x50FF
            overlay_data_or_comment = 0x6000 <= group <= 0x60FF and tag.element in (0x3000, 0x4000)
            if tag.is_private or curve or overlay_data_or_comment:
                del ds[tag]
                continue
            action = actions.get(int(tag))
            if action is None and tag.element == 0x0000 and group != 0x0002:
                del ds[tag]  # group lengths become wrong after changes; they are optional
                continue
            if self.retain_patient_characteristics and int(tag) in _PATIENT_CHARACTERISTICS:
                action = None
            if self.pseudonymize_patient_id and int(tag) == _PATIENT_ID:
                action = "Z"  # the pseudonym is set afterwards
            elem = ds[tag]
            if action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = Sequence() if elem.VR == "SQ" else None
            elif action == "D":
                self._dummy(ds, tag)
            elif action == "U":
                self._remap(ds, tag)
            elif elem.VR == "SQ":
                for item in elem.value or []:
                    self._apply(item, actions)
            elif elem.VR == "UI" and _is_instance_uid_tag(int(tag)):
                self._remap(ds, tag)

    def _remap(self, ds: Dataset, tag: BaseTag) -> None:
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or []:
                self._apply(item, profile_actions())
            return
        if elem.VR != "UI":
            elem.value = None
            return
        if elem.VM > 1:
            elem.value = [self.map_uid(v) for v in elem.value]
        elif elem.value:
            elem.value = self.map_uid(elem.value)

    def _dummy(self, ds: Dataset, tag: BaseTag) -> None:
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            elem.value = Sequence()
        elif vr == "UI":
            self._remap(ds, tag)
        elif vr in _DUMMY:
            elem.value = _DUMMY[vr]
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            elem.value = 0
        else:
            elem.value = b"" if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") else None


_KNOWN_INSTANCE_UIDS = {
    0x00081155,  # Referenced SOP Instance UID
    0x0020000D,  # Study Instance UID
    0x0020000E,  # Series Instance UID
    0x00080018,  # SOP Instance UID
}


def _is_instance_uid_tag(tag: int) -> bool:
    """UIDs that identify instances (remapped even when the table does not list them)."""
    return tag in _KNOWN_INSTANCE_UIDS
