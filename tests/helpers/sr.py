"""Reading DICOM SR in the tests: dcmtk's `dsrdump` (the PACS side's own parser), the report text
of our SR content tree (`radiology.sr`), and the SRs a PACS (Orthanc) holds."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.helpers.orthanc import Orthanc

#: Code meaning of each heading container of `radiology.sr` -> the section it holds.
HEADINGS = {"Findings": "findings", "Impressions": "impression"}
#: What dcmtk (3.6.7) says of every UTF-8 document: its value checker skips UTF-8 values. It
#: reads the document all the same, so this line alone is not a failure.
UTF8_NOT_CHECKED = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"


def dsrdump(ds: Dataset, tmp_path: Path) -> str:
    """dsrdump's rendering of `ds` (as UTF-8); fails on any error or warning it prints (but
    UTF8_NOT_CHECKED), skips without dcmtk."""
    if shutil.which("dsrdump") is None:
        pytest.skip("dcmtk's dsrdump is not installed (scripts/ensure_pacs.sh installs it)")
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    done = subprocess.run(["dsrdump", "+Pl", "+U8", str(path)], capture_output=True, text=True,
                          timeout=60)
    complaints = [line for line in done.stderr.splitlines() if line != UTF8_NOT_CHECKED]
    assert done.returncode == 0 and not complaints, done.stderr
    return done.stdout


def sr_sections(ds: Dataset) -> dict[str, str]:
    """The text under each heading of an SR (`findings`, `impression`) and its `comment`."""
    found: dict[str, str] = {}
    for item in ds.ContentSequence:
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CONTAINER" and meaning in HEADINGS:
            found[HEADINGS[meaning]] = " ".join(child.TextValue for child in item.ContentSequence)
        elif item.ValueType == "TEXT" and meaning == "Comment":
            found["comment"] = item.TextValue
    return found


def srs_in(pacs: Orthanc, study_uid: str) -> list[Dataset]:
    """Every SR the PACS holds in a study, by InstanceNumber."""
    found = [pydicom.dcmread(io.BytesIO(pacs.instance_file(i["ID"])))
             for i in pacs.study_instances(study_uid)]
    return sorted((ds for ds in found if ds.Modality == "SR"),
                  key=lambda ds: int(ds.InstanceNumber))
