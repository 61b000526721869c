"""radiology.sr: the AI draft and the signed versions of a report as DICOM SR, read back by dcmtk's
dsrdump (the PACS side's own parser) and by pydicom."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest
from pydicom.dataset import Dataset

from radiology.sr import (
    AlgorithmDevice,
    ReportSections,
    Signature,
    SRError,
    draft_sr,
    signed_sr,
    sr_series_uid,
)
from tests.helpers.service import make_dicom
from tests.helpers.sr import dsrdump

DEVICE = AlgorithmDevice.for_bundle("cxr-bundle", "2026-12-04.1")
DRAFT_TEXT = ReportSections("Small left pleural effusion. No pneumothorax.", "Left effusion.")
SIGNED_TEXT = ReportSections("Small left pleural effusion. No pneumothorax.",
                             "Small left effusion, no pneumonia.")
CREATED = dt.datetime(2026, 12, 4, 9, 30, tzinfo=dt.UTC)
ADA = Signature("Lovelace^Ada", "General Hospital", dt.datetime(2026, 12, 4, 10, 15, 7,
                                                                 tzinfo=dt.UTC))


def image(**kwargs) -> Dataset:
    return pydicom.dcmread(io.BytesIO(make_dicom(**kwargs)))


def test_a_draft_is_a_partial_unverified_sr_in_the_images_study_that_dsrdump_reads(tmp_path):
    source = image(study_uid="1.2.3.4.5")
    sr = draft_sr([source], DRAFT_TEXT, DEVICE, uid_key="draft-7", created_at=CREATED)
    text = dsrdump(sr, tmp_path)
    assert (sr.CompletionFlag, sr.PreliminaryFlag, sr.VerificationFlag) == (
        "PARTIAL", "PRELIMINARY", "UNVERIFIED")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and sr.Modality == "SR"
    assert sr.StudyInstanceUID == "1.2.3.4.5" and sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID == sr_series_uid("1.2.3.4.5") != source.SeriesInstanceUID
    assert '"Small left pleural effusion. No pneumothorax."' in text
    assert '"Left effusion."' in text
    assert "AI-generated draft (cxr-bundle)" in text and "not for diagnosis" in text
    assert f'"{DEVICE.uid}"' in text and '"2026-12-04.1"' in text  # the model as observer
    assert "Verifying Observers" not in text


def test_signing_makes_a_new_verified_sr_naming_the_signer_with_the_draft_as_predecessor(tmp_path):
    source = image()
    draft = draft_sr([source], DRAFT_TEXT, DEVICE, uid_key="draft-7", created_at=CREATED)
    signed = signed_sr([source], SIGNED_TEXT, DEVICE, ADA, draft, uid_key="version-2",
                       instance_number=2)
    text = dsrdump(signed, tmp_path)
    assert signed.SOPInstanceUID != draft.SOPInstanceUID
    assert signed.SeriesInstanceUID == draft.SeriesInstanceUID
    assert (signed.CompletionFlag, signed.PreliminaryFlag, signed.VerificationFlag) == (
        "COMPLETE", "FINAL", "VERIFIED")
    observer = signed.VerifyingObserverSequence[0]
    assert (str(observer.VerifyingObserverName), observer.VerifyingOrganization) == (
        "Lovelace^Ada", "General Hospital")
    assert str(observer.VerificationDateTime).startswith("20261204101507")
    predecessor = signed.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == draft.SOPInstanceUID
    assert '"Small left effusion, no pneumonia."' in text and "AI-generated draft" not in text
    assert '"Lovelace^Ada"' in text


def test_an_amendment_names_the_previous_signed_version_as_predecessor(tmp_path):
    source = image()
    draft = draft_sr([source], DRAFT_TEXT, DEVICE, uid_key="d", created_at=CREATED)
    first = signed_sr([source], SIGNED_TEXT, DEVICE, ADA, draft, uid_key="v2", instance_number=2)
    amended = signed_sr([source], ReportSections(SIGNED_TEXT.findings, "Amended: effusion."),
                        DEVICE, ADA, first, uid_key="v3", instance_number=3)
    dsrdump(amended, tmp_path)
    ref = amended.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID


def test_the_same_version_built_twice_has_the_same_uid_and_another_version_another():
    source = image()
    a = draft_sr([source], DRAFT_TEXT, DEVICE, uid_key="draft-7", created_at=CREATED)
    b = draft_sr([source], DRAFT_TEXT, DEVICE, uid_key="draft-7", created_at=CREATED)
    c = draft_sr([source], DRAFT_TEXT, DEVICE, uid_key="draft-8", created_at=CREATED)
    assert a.SOPInstanceUID == b.SOPInstanceUID != c.SOPInstanceUID


def test_images_without_optional_patient_and_study_attributes_still_get_a_report(tmp_path):
    source = image()
    for keyword in ("AccessionNumber", "StudyID", "PatientBirthDate", "ReferringPhysicianName"):
        if keyword in source:
            delattr(source, keyword)
    sr = draft_sr([source], DRAFT_TEXT, DEVICE, uid_key="x", created_at=CREATED)
    dsrdump(sr, tmp_path)
    assert "AccessionNumber" in sr and not sr.AccessionNumber  # present, empty (Type 2)


def test_a_report_without_images_or_text_is_refused_with_a_reason():
    with pytest.raises(SRError, match="at least one image"):
        draft_sr([], DRAFT_TEXT, DEVICE, uid_key="x", created_at=CREATED)
    with pytest.raises(SRError, match="FINDINGS or IMPRESSION"):
        draft_sr([image()], ReportSections("  ", ""), DEVICE, uid_key="x", created_at=CREATED)
    with pytest.raises(SRError, match="one study"):
        draft_sr([image(study_uid="1.2.3"), image(study_uid="1.2.4")], DRAFT_TEXT, DEVICE,
                 uid_key="x", created_at=CREATED)


def test_text_beyond_ascii_is_written_in_the_narrowest_character_set_and_read_back_as_written(
        tmp_path):
    latin = image(patient_name="Müller^Jörg")
    ascii_sr = draft_sr([image()], DRAFT_TEXT, DEVICE, uid_key="a", created_at=CREATED)
    latin_sr = draft_sr([latin], ReportSections("Nodule 5 µm.", ""), DEVICE, uid_key="b",
                        created_at=CREATED)
    utf8_sr = draft_sr([latin], ReportSections("Effusion ≥ 2 cm, 30° tilt.", "Kerley B → edema."),
                       DEVICE, uid_key="c", created_at=CREATED)
    assert "SpecificCharacterSet" not in ascii_sr
    assert (latin_sr.SpecificCharacterSet, utf8_sr.SpecificCharacterSet) == (
        "ISO_IR 100", "ISO_IR 192")
    for sr in (latin_sr, utf8_sr):
        text = dsrdump(sr, tmp_path)
        assert "Müller^Jörg" in text
        buffer = io.BytesIO()
        sr.save_as(buffer, enforce_file_format=True)
        back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        assert str(back.PatientName) == "Müller^Jörg"
    assert '"Effusion ≥ 2 cm, 30° tilt."' in dsrdump(utf8_sr, tmp_path)
    assert '"Nodule 5 µm."' in dsrdump(latin_sr, tmp_path)
