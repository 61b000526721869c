"""Real DICOM files written by other software (shipped inside pydicom) decode or fail by cause.

Every ``*.dcm`` file pydicom installs is listed here with the outcome it must have, so a new
pydicom release that adds files fails this test until someone decides what each one means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from radiology.dicom import DicomError, NotProjectionRadiographError, ReadPolicy, read

ANY_MODALITY = ReadPolicy(modalities=None)

# file -> "ok" (decodes, any modality allowed) or the DicomError code it must raise.
EXPECTED: dict[str, str] = {
    "693_J2KI.dcm": "ok",
    "CT_small.dcm": "ok",
    "ExplVR_BigEnd.dcm": "ok",
    "ExplVR_BigEndNoMeta.dcm": "no_pixel_data",
    "ExplVR_LitEndNoMeta.dcm": "no_pixel_data",
    "GDCMJ2K_TextGBR.dcm": "ok",
    "J2K_pixelrep_mismatch.dcm": "ok",
    "JPEG-lossy.dcm": "corrupt_pixel_data",  # known-bad stream (pydicom's own tests expect failure)
    "JPEG2000-embedded-sequence-delimiter.dcm": "corrupt_pixel_data",
    "JPEG2000.dcm": "ok",
    "JPEGLSNearLossless_08.dcm": "ok",
    "JPEGLSNearLossless_16.dcm": "ok",
    "JPGExtended.dcm": "ok",
    "MR_small.dcm": "ok",
    "MR_small_RLE.dcm": "ok",
    "MR_small_bigendian.dcm": "ok",
    "MR_small_expb.dcm": "ok",
    "MR_small_implicit.dcm": "ok",
    "MR_small_jp2klossless.dcm": "ok",
    "MR_small_jpeg_ls_lossless.dcm": "ok",
    "MR_small_padded.dcm": "ok",
    "MR_truncated.dcm": "truncated",
    "SC_jpeg_no_color_transform.dcm": "ok",
    "SC_jpeg_no_color_transform_2.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cr.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": "ok",
    "SC_rgb_gdcm_KY.dcm": "ok",
    "SC_rgb_jls_lossy_line.dcm": "ok",
    "SC_rgb_jls_lossy_sample.dcm": "ok",
    "SC_rgb_jpeg.dcm": "ok",
    "SC_rgb_jpeg_app14_dcmd.dcm": "ok",
    "SC_rgb_jpeg_dcmd.dcm": "ok",
    "SC_rgb_jpeg_dcmtk.dcm": "ok",
    "SC_rgb_jpeg_gdcm.dcm": "ok",
    "SC_rgb_jpeg_lossy_gdcm.dcm": "ok",
    "SC_rgb_rle.dcm": "ok",
    "SC_rgb_rle_16bit.dcm": "ok",
    "SC_rgb_rle_16bit_2frame.dcm": "ok",
    "SC_rgb_rle_2frame.dcm": "ok",
    "SC_rgb_rle_32bit.dcm": "ok",
    "SC_rgb_rle_32bit_2frame.dcm": "ok",
    "SC_rgb_small_odd.dcm": "ok",
    "SC_rgb_small_odd_big_endian.dcm": "ok",
    "SC_rgb_small_odd_jpeg.dcm": "ok",
    "SC_ybr_full_422_uncompressed.dcm": "ok",
    "UN_sequence.dcm": "no_pixel_data",
    "badVR.dcm": "corrupt_pixel_data",
    "empty_charset_LEI.dcm": "no_pixel_data",
    "examples_jpeg2k.dcm": "ok",
    "examples_overlay.dcm": "ok",
    "examples_palette.dcm": "ok",
    "examples_rgb_color.dcm": "ok",
    "examples_ybr_color.dcm": "ok",
    "image_dfl.dcm": "ok",
    "liver_1frame.dcm": "ok",
    "liver_expb_1frame.dcm": "ok",
    "meta_missing_tsyntax.dcm": "invalid_header",
    "nested_priv_SQ.dcm": "invalid_header",
    "no_meta.dcm": "not_dicom",
    "no_meta_group_length.dcm": "no_pixel_data",
    "priv_SQ.dcm": "no_pixel_data",
    "reportsi.dcm": "no_pixel_data",
    "reportsi_with_empty_number_tags.dcm": "no_pixel_data",
    "rtdose.dcm": "ok",
    "rtdose_1frame.dcm": "ok",
    "rtdose_expb.dcm": "ok",
    "rtdose_expb_1frame.dcm": "ok",
    "rtdose_rle.dcm": "ok",
    "rtdose_rle_1frame.dcm": "ok",
    "rtplan.dcm": "no_pixel_data",
    "rtplan_truncated.dcm": "truncated",
    "rtstruct.dcm": "no_pixel_data",
    "test-SR.dcm": "no_pixel_data",
    "waveform_ecg.dcm": "no_pixel_data",
}


def _local_dcm_files() -> list[Path]:
    base = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(p for p in base.glob("*.dcm") if p.is_file())


def test_every_shipped_file_has_a_specified_outcome():
    names = {p.name for p in _local_dcm_files()}
    assert names, "pydicom ships no test files"
    assert names <= set(EXPECTED), f"new files to classify: {sorted(names - set(EXPECTED))}"


@pytest.mark.parametrize("path", _local_dcm_files(), ids=lambda p: p.name)
def test_shipped_file_decodes_or_fails_with_its_cause(path: Path):
    expected = EXPECTED[path.name]
    if expected == "ok":
        image = read(path, policy=ANY_MODALITY)
        assert image.pixels.dtype == np.float32 and image.pixels.ndim == 2
        assert 0.0 <= float(image.pixels.min()) <= float(image.pixels.max()) <= 1.0
        assert float(image.pixels.max()) > float(image.pixels.min())  # not blank
        assert image.rows == int(pydicom.dcmread(path, stop_before_pixels=True).Rows)
    else:
        with pytest.raises(DicomError) as info:
            read(path, policy=ANY_MODALITY)
        assert info.value.code == expected


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
     "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_real_lossless_variants_equal_the_uncompressed_original(name: str):
    original = read(get_testdata_file("MR_small.dcm"), policy=ANY_MODALITY).pixels
    image = read(get_testdata_file(name), policy=ANY_MODALITY)
    np.testing.assert_array_equal(image.pixels, original)


def test_real_jpeg_lossless_sv1_colour_file_equals_its_rle_twin():
    jpeg = read(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"), policy=ANY_MODALITY).pixels
    rle = read(get_testdata_file("SC_rgb_rle.dcm"), policy=ANY_MODALITY).pixels
    np.testing.assert_allclose(jpeg, rle, atol=1e-6)


def test_deflated_real_file_matches_pydicom_stored_values():
    path = get_testdata_file("image_dfl.dcm")
    image = read(path, policy=ANY_MODALITY)
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert np.corrcoef(image.pixels.ravel(), stored.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm"])
def test_default_policy_rejects_ct_and_mr_by_name(name: str):
    with pytest.raises(NotProjectionRadiographError) as info:
        read(get_testdata_file(name))
    assert info.value.code == "not_projection_radiograph"
    modality = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).Modality
    assert f"Modality {modality}" in info.value.message
    assert "ReadPolicy.modalities" in info.value.message

