"""De-identified header copies (PS3.15 basic profile) and hashed identifiers for logs."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from radiology.deid import SECRET_ENV, Deidentifier, has_burned_in_annotation, profile_actions
from tests.helpers.dicom_factory import CR_STORAGE, base_dataset, chest_like, to_bytes

SECRET = b"test-secret-0123456789abcdef"


def _instance(study_uid: str | None = None) -> Dataset:
    ds = base_dataset(chest_like(rows=16, cols=16), study_uid=study_uid)
    ds.OtherPatientIDs = "OLD-77"
    ds.PatientAddress = "1 Main Street"
    ds.OperatorsName = "Tech^Tom"
    ds.StationName = "XR-ROOM-3"
    ds.add_new(0x00091010, "LO", "vendor private note")
    ds.add_new(0x60004000, "LT", "overlay comment with a name")
    ds.file_meta.SourceApplicationEntityTitle = "WARD7_XRAY"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CR_STORAGE
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.SourceImageSequence = Sequence([ref])
    return ds


def test_profile_table_covers_the_core_identifiers():
    actions = profile_actions()
    assert actions[0x00100010] == "Z"  # Patient's Name
    assert actions[0x0020000D] == "U"  # Study Instance UID
    assert actions[0x00080018] == "U"  # SOP Instance UID
    assert len(actions) > 600


def test_identifying_attributes_are_emptied_or_removed():
    ds = _instance()
    out = Deidentifier(SECRET).deidentify(ds)
    written = to_bytes(out)
    for value in ("Doe", "MRN0012345", "ACC778899", "19600101", "General Hospital", "House",
                  "OLD-77", "Main Street", "Tech", "XR-ROOM-3", "vendor private", "overlay comment",
                  "WARD7_XRAY"):
        assert value.encode() not in written, value
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"


def test_image_attributes_survive():
    out = Deidentifier(SECRET).deidentify(_instance())
    kept = (out.Modality, out.ViewPosition, out.Rows, out.BodyPartExamined)
    assert kept == ("DX", "PA", 16, "CHEST")
    assert "PixelData" not in out


def test_pixels_kept_on_request():
    out = Deidentifier(SECRET).deidentify(_instance(), keep_pixels=True)
    assert out.pixel_array.shape == (16, 16)


def test_uids_are_remapped_consistently_across_instances_and_references():
    study = generate_uid()
    a, b = _instance(study), _instance(study)
    d = Deidentifier(SECRET)
    da, db = d.deidentify(a), d.deidentify(b)
    assert da.StudyInstanceUID == db.StudyInstanceUID != study
    assert da.SOPInstanceUID != a.SOPInstanceUID
    assert da.SourceImageSequence[0].ReferencedSOPInstanceUID == da.SOPInstanceUID
    assert da.file_meta.MediaStorageSOPInstanceUID == da.SOPInstanceUID
    assert da.SOPClassUID == a.SOPClassUID  # class UIDs are not identifiers
    assert da.StudyInstanceUID.startswith("2.25.") and len(da.StudyInstanceUID) <= 64


def test_mapping_is_stable_across_processes_and_keyed():
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert Deidentifier(SECRET).map_uid(uid) == Deidentifier(SECRET).map_uid(uid)
    assert Deidentifier(SECRET).map_uid(uid) != Deidentifier(SECRET + b"x").map_uid(uid)


def test_patient_id_becomes_a_keyed_pseudonym_or_the_profile_value():
    ds = _instance()
    assert Deidentifier(SECRET).deidentify(ds).PatientID.startswith("anon-")
    strict = Deidentifier(SECRET, pseudonymize_patient_id=False).deidentify(ds).PatientID
    assert strict in ("", None, "ANONYMIZED")  # the profile's empty or dummy value


def test_patient_characteristics_option():
    ds = _instance()
    retaining = Deidentifier(SECRET, retain_patient_characteristics=True)
    assert retaining.deidentify(ds).PatientSex == "F"
    assert Deidentifier(SECRET).deidentify(ds).PatientSex in ("", None)


def test_input_dataset_is_not_modified():
    ds = _instance()
    before = to_bytes(ds)
    Deidentifier(SECRET).deidentify(ds)
    assert to_bytes(ds) == before


def test_result_is_a_valid_dicom_file():
    out = Deidentifier(SECRET).deidentify(_instance(), keep_pixels=True)
    again = pydicom.dcmread(io.BytesIO(to_bytes(out)))
    assert again.StudyInstanceUID == out.StudyInstanceUID


def test_safe_ids_are_short_hashes_without_the_raw_values():
    ds = _instance()
    ids = Deidentifier(SECRET).safe_ids(ds).as_dict()
    assert all(v is not None and len(v) == 16 for v in ids.values())
    text = repr(ids)
    assert ds.StudyInstanceUID not in text and ds.PatientID not in text
    assert ids == Deidentifier(SECRET).safe_ids(ds).as_dict()
    assert ids["study"] != ids["series"]


def test_secret_must_be_long_enough_and_present(monkeypatch):
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Deidentifier(b"short")
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ValueError, match=SECRET_ENV):
        Deidentifier.from_env()
    monkeypatch.setenv(SECRET_ENV, SECRET.decode())
    assert Deidentifier.from_env().map_uid("1.2.3") == Deidentifier(SECRET).map_uid("1.2.3")


def test_burned_in_annotation_flag():
    ds = _instance()
    assert not has_burned_in_annotation(ds)
    ds.BurnedInAnnotation = "YES"
    assert has_burned_in_annotation(ds)


def test_retain_uids_option_keeps_uids_and_declares_it():
    ds = _instance()
    out = Deidentifier(SECRET, retain_uids=True).deidentify(ds)
    assert (out.StudyInstanceUID, out.SOPInstanceUID) == (ds.StudyInstanceUID, ds.SOPInstanceUID)
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "113110" in [code.CodeValue for code in out.DeidentificationMethodCodeSequence]
    assert not out.PatientName and ds.PatientName


def test_a_part10_file_is_deidentified_with_its_pixels_and_transfer_syntax():
    ds = _instance()
    data = to_bytes(ds)
    out = pydicom.dcmread(io.BytesIO(Deidentifier(SECRET).deidentify_file(data)))
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert out.PixelData == ds.PixelData
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID != ds.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES" and "PatientAddress" not in out
