"""Each cause of a bad DICOM input raises its own DicomError subclass with an actionable message."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from radiology.dicom import (
    ERROR_CODES,
    CorruptPixelDataError,
    DicomError,
    InvalidHeaderError,
    NoPixelDataError,
    NotDicomError,
    NotProjectionRadiographError,
    PixelDataLengthError,
    ReadPolicy,
    TooLargeError,
    TruncatedError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
    read,
    read_header,
)
from tests.helpers.dicom_factory import base_dataset, chest_like, encode, to_bytes


def _dx(ts=uid.ExplicitVRLittleEndian, **attrs) -> bytes:
    return encode(base_dataset(chest_like(), **attrs), ts)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_every_error_class_has_a_distinct_stable_code():
    codes = [cls.code for cls in ERROR_CODES.values()]
    assert len(codes) == len(set(codes)) == 10
    assert all(issubclass(cls, DicomError) for cls in ERROR_CODES.values())


@pytest.mark.parametrize(
    "data", [b"", b"hello world" * 20, _png_bytes(), b"%PDF-1.7\n" + bytes(300)]
)
def test_not_dicom(data: bytes):
    with pytest.raises(NotDicomError) as info:
        read(data)
    assert info.value.code == "not_dicom"
    assert "not DICOM" in info.value.message


def test_not_dicom_path_too(tmp_path):
    path = tmp_path / "export.png"
    path.write_bytes(_png_bytes())
    with pytest.raises(NotDicomError):
        read(path)


def test_truncated_native_pixel_data():
    data = _dx()
    with pytest.raises(TruncatedError) as info:
        read(data[:-500])
    assert info.value.code == "truncated"
    assert "Re-send the complete file" in info.value.message


def test_truncated_compressed_stream_that_pydicom_reads_as_an_empty_dataset_with_a_warning():
    data = _dx(uid.JPEG2000Lossless)
    cut = data[: len(data) - 700]
    with pytest.warns(UserWarning):  # what pydicom alone does: a warning and an empty data set
        assert len(pydicom.dcmread(io.BytesIO(cut))) == 0
    with pytest.raises(TruncatedError):
        read(cut)


@pytest.mark.parametrize("lost", [10, 500, 5000])
def test_truncated_deflated_data_set(lost: int):
    with pytest.raises(TruncatedError) as info:
        read(_dx(uid.DeflatedExplicitVRLittleEndian)[:-lost])
    assert "deflated" in info.value.message


@pytest.mark.parametrize("keep", [132, 200, 400])
def test_truncated_inside_the_header(keep: int):
    with pytest.raises(TruncatedError):
        read(_dx()[:keep])


def test_image_header_cut_right_before_pixel_data_is_truncated():
    data = _dx()
    at = data.rfind(b"\xe0\x7f\x10\x00")  # the Pixel Data tag
    with pytest.raises(TruncatedError) as info:
        read(data[:at])
    assert "before its pixel data" in info.value.message


def test_no_pixel_data_for_a_structured_report():
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Modality = "SR"
    with pytest.raises(NoPixelDataError) as info:
        read(to_bytes(ds))
    assert "Basic Text SR Storage" in info.value.message
    assert "send the CR/DX image instances" in info.value.message


def test_no_pixel_data_for_a_presentation_state():
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Modality = "PR"
    with pytest.raises(NoPixelDataError) as info:
        read(to_bytes(ds))
    assert "Presentation State" in info.value.message


def _with_syntax(syntax: str) -> bytes:
    """A J2K file relabelled with ``syntax`` (patched in the bytes: pydicom refuses to write
    transfer syntaxes it does not know)."""
    ds = pydicom.dcmread(io.BytesIO(_dx(uid.JPEG2000Lossless)))
    placeholder = uid.HTJ2KLossless  # 23 characters, stored as 24 with its padding byte
    ds.file_meta.TransferSyntaxUID = placeholder
    data = to_bytes(ds)
    padded = (syntax + "\0" * (24 - len(syntax))).encode() if len(syntax) < 24 else syntax.encode()
    assert len(padded) == 24
    return data.replace(placeholder.encode() + b"\0", padded, 1)


def test_unsupported_transfer_syntax_names_it_and_what_to_do():
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        read(_with_syntax("1.2.840.10008.1.2.4.110"))
    message = info.value.message
    assert "JPEG XL" in message and "1.2.840.10008.1.2.4.110" in message
    assert "transcode" in message


def test_unsupported_video_transfer_syntax_says_send_the_still_image():
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        read(_with_syntax(uid.MPEG2MPML))
    assert "MPEG2" in info.value.message and "still image" in info.value.message


def test_unknown_private_transfer_syntax():
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        read(_with_syntax("1.3.6.1.4.1.99999.1.2.34"))
    assert "Unknown transfer syntax 1.3.6.1.4.1.99999.1.2.34" in info.value.message


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM"])
def test_not_a_projection_radiograph_by_default(modality: str):
    data = _dx(Modality=modality)
    with pytest.raises(NotProjectionRadiographError) as info:
        read(data)
    assert f"Modality {modality}" in info.value.message
    assert read(data, policy=ReadPolicy(modalities=None)).modality == modality


def test_modality_policy_is_configurable():
    policy = ReadPolicy(modalities=frozenset({"CR"}))
    with pytest.raises(NotProjectionRadiographError):
        read(_dx(), policy=policy)  # DX is outside this narrower policy


def test_missing_modality_follows_the_policy():
    ds = base_dataset(chest_like())
    del ds.Modality
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture -> OT, accepted by default
    assert read(to_bytes(ds)).modality == "OT"
    ds.SOPClassUID = "1.2.3.4"
    assert read(to_bytes(ds)).modality is None
    with pytest.raises(NotProjectionRadiographError):
        read(to_bytes(ds), policy=ReadPolicy(accept_missing_modality=False))


def test_too_large_in_bytes_before_parsing(tmp_path):
    data = _dx()
    policy = ReadPolicy(max_bytes=len(data) - 1)
    with pytest.raises(TooLargeError) as info:
        read(data, policy=policy)
    assert "ReadPolicy.max_bytes" in info.value.message
    path = tmp_path / "big.dcm"
    path.write_bytes(data)
    with pytest.raises(TooLargeError):
        read(path, policy=policy)


def test_too_large_decoded_image_is_refused_before_decoding():
    """A decompression bomb: a tiny compressed stream whose header claims 40000 x 40000 pixels."""
    ds = pydicom.dcmread(io.BytesIO(_dx(uid.RLELossless)))
    ds.Rows = ds.Columns = 40000
    data = to_bytes(ds)
    assert len(data) < 100_000
    with pytest.raises(TooLargeError) as info:
        read(data)
    assert "40000 x 40000" in info.value.message


def test_pixel_data_length_inconsistent_with_header():
    ds = pydicom.dcmread(io.BytesIO(_dx()))
    ds.Rows = ds.Rows + 10
    with pytest.raises(PixelDataLengthError) as info:
        read(to_bytes(ds))
    assert info.value.code == "pixel_length_mismatch"
    assert "header and the pixels disagree" in info.value.message


def test_missing_rows_is_an_invalid_header():
    ds = pydicom.dcmread(io.BytesIO(_dx()))
    del ds.Rows
    with pytest.raises(InvalidHeaderError) as info:
        read(to_bytes(ds))
    assert "Rows" in info.value.message


def test_multi_frame_rejected_when_the_policy_says_so():
    frames = np.stack([chest_like(seed=1), chest_like(seed=2)])
    data = encode(base_dataset(frames), uid.ExplicitVRLittleEndian)
    with pytest.raises(UnsupportedImageError) as info:
        read(data, policy=ReadPolicy(multiframe="reject"))
    assert "2 frames" in info.value.message


def test_damaged_compressed_stream_is_corrupt_pixel_data():
    ds = pydicom.dcmread(io.BytesIO(_dx(uid.JPEG2000Lossless)))
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    garbage = bytes(np.random.default_rng(0).integers(0, 256, len(frame), dtype=np.uint8))
    ds.PixelData = encapsulate([frame[:2] + garbage[2:]])
    with pytest.raises(CorruptPixelDataError) as info:
        read(to_bytes(ds))
    assert "re-export" in info.value.message.lower()


def test_error_string_carries_the_code():
    with pytest.raises(DicomError) as info:
        read(b"not dicom at all")
    assert str(info.value).startswith("[not_dicom] ")


def test_messages_never_contain_patient_identifiers():
    ds = base_dataset(chest_like())
    phi = [str(ds.PatientName), ds.PatientID, ds.AccessionNumber, ds.StudyInstanceUID,
           ds.SOPInstanceUID]
    variants = []
    bad = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
    bad.Rows = 999
    variants.append(to_bytes(bad))
    bad = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
    bad.Modality = "CT"
    variants.append(to_bytes(bad))
    variants.append(to_bytes(ds)[:-100])
    variants.append(_with_syntax("1.2.840.10008.1.2.4.110"))
    for data in variants:
        with pytest.raises(DicomError) as info:
            read(data)
        assert not any(value in str(info.value) for value in phi)


def test_never_a_crash_on_damaged_bytes():
    """Cuts and byte flips anywhere: a complete image or a DicomError, nothing else."""
    rng = np.random.default_rng(7)
    originals = [_dx(), _dx(uid.RLELossless), _dx(uid.JPEG2000Lossless), _dx(uid.JPEGLSLossless)]
    outcomes = set()
    for data in originals:
        for _ in range(60):
            mutated = bytearray(data)
            if rng.random() < 0.5:
                mutated = mutated[: int(rng.integers(0, len(mutated)))]
            else:
                for pos in rng.integers(0, len(mutated), size=int(rng.integers(1, 8))):
                    mutated[pos] = int(rng.integers(0, 256))
            try:
                image = read(bytes(mutated))
            except DicomError as exc:
                outcomes.add(exc.code)
            else:
                assert image.pixels.dtype == np.float32 and image.pixels.ndim == 2
                assert np.isfinite(image.pixels).all()
                outcomes.add("ok")
    assert {"ok", "truncated"} <= outcomes


def test_pydicom_log_messages_are_redacted(caplog):
    ds = base_dataset(chest_like())
    ds.StudyInstanceUID = "1.2.3.4.Doe^Jane"  # an invalid UID carrying a name
    with caplog.at_level("WARNING", logger="pydicom"):
        image = read(to_bytes(ds))
        assert image.study_uid == "1.2.3.4.Doe^Jane"  # the value itself is kept for the caller
        pydicom.dcmread(io.BytesIO(to_bytes(ds))).StudyInstanceUID  # noqa: B018 - triggers validation
    assert "Invalid value for VR UI: '<redacted>'" in caplog.text
    assert "Doe^Jane" not in caplog.text


def test_missing_file_error_does_not_echo_the_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read(tmp_path / "Doe_Jane_MRN0012345.dcm")
    assert "Doe" not in str(info.value) and "MRN" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"multiframe": "middle"}, {"presentation_lut": "maybe"}, {"percentiles": (99, 1)},
     {"max_bytes": 0}],
)
def test_policy_rejects_nonsense_settings(kwargs):
    with pytest.raises(ValueError):
        ReadPolicy(**kwargs)


def test_jpip_referenced_pixels_are_an_unsupported_syntax():
    ds = pydicom.dcmread(io.BytesIO(_dx()))
    del ds.PixelData
    ds.PixelDataProviderURL = "https://jpip.example/pixels"
    ds.file_meta.TransferSyntaxUID = uid.UID("1.2.840.10008.1.2.4.94")  # JPIP Referenced
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        read(to_bytes(ds))
    assert "JPIP" in info.value.message


def test_an_element_with_an_unknown_vr_is_an_invalid_header_naming_it():
    """pydicom converts elements lazily; a damaged one must fail the parse stage as a DicomError
    naming the tag, not leak pydicom's NotImplementedError from whichever stage reads it first."""
    data = bytearray(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert bytes(data[622:626]) == b"\x08\x00\x32\x00"  # (0008,0032) AcquisitionTime
    data[626:628] = b"T\x00"  # its VR becomes an unknown one
    policy = ReadPolicy(modalities=None)
    for stage in (lambda: read_header(bytes(data), policy=policy, check=True),
                  lambda: read(bytes(data), policy=policy)):
        with pytest.raises(InvalidHeaderError, match=r"\(0008,0032\)") as caught:
            stage()
        assert caught.value.code == "invalid_header"
