"""Header facts of an image: modality, view position, laterality, pixel spacing, identifiers.

View rule (``view``), first source that gives an answer wins:

1. View Position (0018,5101): ``PA*`` -> PA, ``AP*`` -> AP (decubitus and axial variants
   included), ``LL`` -> LL, ``RL`` / ``LATERAL`` / ``LAT`` / ``XTABLE LATERAL`` -> LATERAL;
   obliques and anything else -> no answer from this source;
2. View Code Sequence (0054,0220): SNOMED / DICOM codes and meanings for postero-anterior,
   antero-posterior, left lateral, right lateral, lateral;
3. free text of Series Description, Protocol Name, Acquisition Device Processing Description,
   Performed Procedure Step Description, Image Comments, Study Description: a source is used only
   when it names exactly one of PA / AP / LATERAL (``"CHEST PA AND LAT"`` names two and is
   skipped); ``PORTABLE`` / ``SUPINE`` / ``BEDSIDE`` count as AP.

Pixel spacing: Pixel Spacing, then Imager Pixel Spacing (detector plane, what CR/DX usually carry),
then Nominal Scanned Pixel Spacing, then the Pixel Measures functional group; a value that is not
two positive finite numbers (e.g. ``0\\0``) is skipped with a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataset import Dataset

__all__ = ["modality", "view", "laterality", "pixel_spacing", "text", "acquisition_datetime"]

# SOP Class UID -> modality, for objects whose Modality is missing.
_SOP_MODALITY = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG",
    "1.2.840.10008.5.1.4.1.1.1.3": "IO",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "IO",
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.7": "OT",
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.2": "RF",
}

_VIEW_POSITION = [
    (re.compile(r"^(PA|POSTERO.?ANTERIOR)\b"), "PA"),
    (re.compile(r"^(AP|ANTERO.?POSTERIOR)\b"), "AP"),
    (re.compile(r"^LL$|^LEFT LAT"), "LL"),
    (
        re.compile(
            r"^(RL|LAT|LATERAL|RIGHT LAT\w*|XTABLE LAT\w*|CROSS.?TABLE LAT\w*|LATERAL \w+)$"
        ),
        "LATERAL",
    ),
]

_CODE_VIEW = {
    "R-10214": "PA", "399348003": "PA", "POSTERO-ANTERIOR": "PA",
    "R-10206": "AP", "272479001": "AP", "ANTERO-POSTERIOR": "AP",
    "R-10232": "LL", "399198007": "LL", "LEFT LATERAL": "LL",
    "R-10236": "LATERAL", "260454004": "LATERAL", "RIGHT LATERAL": "LATERAL",
    "R-102CD": "LATERAL", "LATERAL": "LATERAL",
}

_TEXT_VIEWS = [
    ("PA", re.compile(r"\bP\s?[-.]?\s?A\b|POSTERO.?ANTERIOR|\bPOST.?ANT\b")),
    ("AP", re.compile(r"\bA\s?[-.]?\s?P\b|ANTERO.?POSTERIOR|\bPORTABLE\b|\bSUPINE\b|\bBEDSIDE\b")),
    ("LATERAL", re.compile(r"\bLAT(ERAL)?\b|\bLL\b|\bRL\b")),
]
_TEXT_SOURCES = (
    "SeriesDescription",
    "ProtocolName",
    "AcquisitionDeviceProcessingDescription",
    "PerformedProcedureStepDescription",
    "ImageComments",
    "StudyDescription",
)


def text(ds: Dataset, name: str) -> str | None:
    """A string attribute, stripped, or None when absent or empty."""
    value = ds.get(name)
    if value is None:
        return None
    out = str(value).strip()
    return out or None


def modality(ds: Dataset) -> str | None:
    """Modality, upper-cased; from the SOP Class when the attribute is missing."""
    value = text(ds, "Modality")
    if value:
        return value.upper()
    return _SOP_MODALITY.get(str(ds.get("SOPClassUID", "") or ""))


def _from_view_position(value: str | None) -> str | None:
    if not value:
        return None
    value = re.sub(r"\s+", " ", value.upper().strip())
    for rx, name in _VIEW_POSITION:
        if rx.search(value):
            return name
    return None


def _from_codes(items: Iterable[Dataset]) -> str | None:
    for item in items:
        for key in ("CodeValue", "CodeMeaning"):
            value = str(item.get(key, "") or "").strip().upper()
            if value in _CODE_VIEW:
                return _CODE_VIEW[value]
    return None


def _from_text(value: str | None) -> str | None:
    if not value:
        return None
    upper = value.upper()
    hits = {name for name, rx in _TEXT_VIEWS if rx.search(upper)}
    if len(hits) != 1:
        return None
    hit = hits.pop()
    if hit == "LATERAL" and re.search(r"\bLL\b|LEFT LAT", upper):
        return "LL"
    return hit


def view(ds: Dataset) -> str | None:
    """PA, AP, LATERAL, LL or None (see the module docstring for the rule)."""
    found = _from_view_position(text(ds, "ViewPosition"))
    if found:
        return found
    found = _from_codes(ds.get("ViewCodeSequence") or [])
    if found:
        return found
    for name in _TEXT_SOURCES:
        found = _from_text(text(ds, name))
        if found:
            return found
    return None


def laterality(ds: Dataset) -> str | None:
    """Image Laterality, else (Series) Laterality: 'R', 'L', 'B' or 'U'; None when absent."""
    for name in ("ImageLaterality", "Laterality", "FrameLaterality"):
        value = (text(ds, name) or "").upper()
        if value in ("R", "L", "B", "U"):
            return value
    return None


def _spacing(value: object) -> tuple[float, float] | None:
    try:
        values = [float(v) for v in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(v > 0 and v < 1e3 for v in values):
        return None
    return values[0], values[1]


def pixel_spacing(ds: Dataset, notes: list[str]) -> tuple[float, float] | None:
    """(row, column) spacing in mm, or None (see the module docstring for the sources)."""
    candidates: list[tuple[str, object]] = [
        (name, ds.get(name))
        for name in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
    ]
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if seq and seq[0].get("PixelMeasuresSequence"):
            measures = seq[0].PixelMeasuresSequence[0]
            candidates.append(("PixelMeasures", measures.get("PixelSpacing")))
    for name, value in candidates:
        if value is None or value == "":
            continue
        parsed = _spacing(value)
        if parsed is not None:
            return parsed
        notes.append(f"{name} is not two positive numbers; ignored")
    return None


def acquisition_datetime(ds: Dataset) -> str | None:
    """Acquisition (or content, or study) date and time as 'YYYYMMDDHHMMSS...' for ordering."""
    for date_name, time_name in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("SeriesDate", "SeriesTime"),
        ("StudyDate", "StudyTime"),
    ):
        date = text(ds, date_name)
        if date:
            return date + (text(ds, time_name) or "")
    value = text(ds, "AcquisitionDateTime")
    return value
