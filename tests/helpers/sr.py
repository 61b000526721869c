"""Reading DICOM SR in the tests: dcmtk's `dsrdump` (the PACS side's own parser) and the report text
of our SR content tree (`radiology.sr`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

#: Code meaning of each heading container of `radiology.sr` -> the section it holds.
HEADINGS = {"Findings": "findings", "Impressions": "impression"}


def dsrdump(ds: Dataset, tmp_path: Path) -> str:
    """dsrdump's rendering of `ds`; fails on any error or warning it prints, skips without dcmtk."""
    if shutil.which("dsrdump") is None:
        pytest.skip("dcmtk's dsrdump is not installed (scripts/ensure_pacs.sh installs it)")
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    done = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
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
