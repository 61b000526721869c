"""Grey-level pipeline and headers that lie: each case is handled by a deliberate, noted rule."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radiology.dicom import ReadPolicy, read, sanitize_preamble
from radiology.dicom.pixels import window
from tests.helpers.dicom_factory import (
    base_dataset,
    chest_like,
    encode,
    raw_dataset_bytes,
    to_bytes,
)

ARR = chest_like(bits=12)


def _read(**attrs):
    return read(encode(base_dataset(ARR, **attrs), uid.ExplicitVRLittleEndian))


def test_output_is_float32_in_unit_range_with_metadata():
    ds = base_dataset(ARR)
    image = read(to_bytes(ds))
    assert image.pixels.dtype == np.float32 and image.pixels.flags["C_CONTIGUOUS"]
    assert 0.0 == float(image.pixels.min()) and float(image.pixels.max()) == 1.0
    assert (image.rows, image.columns) == ARR.shape
    assert (image.study_uid, image.series_uid, image.sop_uid) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert (image.modality, image.manufacturer, image.view) == ("DX", "FakeVendor", "PA")
    assert image.pixel_spacing == (0.139, 0.139)
    assert image.photometric == "MONOCHROME2" and image.bits_stored == 12
    assert image.transfer_syntax == uid.ExplicitVRLittleEndian


def test_window_linear_follows_the_standard_formula():
    # PS3.3 C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped
    x = np.array([0.0, 1499.5, 2000.0, 2500.0, 4000.0], dtype=np.float32)
    y = window(x, 2000.0, 1001.0)
    np.testing.assert_allclose(y, [0.0, 0.0, 0.5005, 1.0, 1.0], atol=1e-4)


def test_header_window_is_applied_in_rescaled_units():
    image = _read(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3000, WindowWidth=4001)
    rescaled = ARR.astype(np.float64) * 2 - 1000
    expected = np.clip((rescaled - 2999.5) / 4000 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-5)
    assert image.window_source == "window"


def test_sigmoid_voi_function():
    image = _read(WindowCenter=2000, WindowWidth=1000, VOILUTFunction="SIGMOID")
    expected = 1 / (1 + np.exp(-4 * (ARR.astype(np.float64) - 2000) / 1000))
    np.testing.assert_allclose(image.pixels, expected, atol=1e-5)


def test_voi_lut_sequence_is_preferred_over_the_window():
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    lut = (np.sqrt(np.arange(4096) / 4095) * 4095).astype(np.uint16)
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    image = _read(VOILUTSequence=Sequence([item]), WindowCenter=100, WindowWidth=50)
    np.testing.assert_allclose(image.pixels, lut[ARR] / 4095, atol=1e-6)
    assert image.window_source == "voi_lut"


def test_window_entirely_outside_the_stored_values_falls_back_to_percentiles():
    # a CT-style brain window copied onto a CR whose values are 0..4095 shifted far above it
    image = _read(WindowCenter=-40000, WindowWidth=400)
    reference = _read()
    np.testing.assert_array_equal(image.pixels, reference.pixels)
    assert image.window_source == "percentile"
    assert any("outside the image values" in n for n in image.notes)


def test_voi_lut_that_flattens_the_image_falls_back_to_percentiles():
    item = Dataset()
    item.LUTDescriptor = [16, 60000, 16]  # maps only values >= 60000; the image is below
    item.add_new(0x00283006, "US", [0] * 16)
    image = _read(VOILUTSequence=Sequence([item]))
    assert image.window_source == "percentile"
    assert float(image.pixels.std()) > 0.1


def test_monochrome1_is_inverted_so_bone_is_bright():
    inverted = (4095 - ARR).astype(np.uint16)
    image = read(to_bytes(base_dataset(inverted, photometric="MONOCHROME1")))
    reference = _read()
    np.testing.assert_allclose(image.pixels, reference.pixels, atol=1e-5)


def test_presentation_lut_inverse_on_monochrome2_is_noted_and_ignored_by_default():
    image = _read(PresentationLUTShape="INVERSE")
    np.testing.assert_array_equal(image.pixels, _read().pixels)
    assert any("contradicts MONOCHROME2" in n for n in image.notes)


def test_presentation_lut_inverse_can_be_honoured_by_policy():
    ds = base_dataset(ARR, PresentationLUTShape="INVERSE")
    image = read(to_bytes(ds), policy=ReadPolicy(presentation_lut="honor"))
    np.testing.assert_allclose(image.pixels, 1 - _read().pixels, atol=1e-6)


def test_monochrome1_with_its_standard_inverse_shape_is_inverted_once():
    inverted = (4095 - ARR).astype(np.uint16)
    ds = base_dataset(inverted, photometric="MONOCHROME1", PresentationLUTShape="INVERSE")
    image = read(to_bytes(ds))
    np.testing.assert_allclose(image.pixels, _read().pixels, atol=1e-5)
    assert not any("contradicts" in n for n in image.notes)


def test_pixel_spacing_zero_is_skipped_for_the_next_source():
    image = _read(PixelSpacing=[0, 0])
    assert image.pixel_spacing == (0.139, 0.139)  # Imager Pixel Spacing
    assert any("PixelSpacing is not two positive numbers" in n for n in image.notes)


def test_pixel_spacing_zero_everywhere_is_unknown():
    image = _read(PixelSpacing=[0, 0], ImagerPixelSpacing=[0, 0])
    assert image.pixel_spacing is None


def test_rescale_slope_zero_is_ignored():
    image = _read(RescaleSlope=0, RescaleIntercept=0)
    np.testing.assert_array_equal(image.pixels, _read().pixels)
    assert "Rescale Slope 0 ignored" in image.notes


def test_part10_file_without_file_meta_is_read_with_an_inferred_syntax():
    ds = base_dataset(ARR)
    bare = raw_dataset_bytes(ds, implicit=False)
    image = read(bytes(128) + b"DICM" + bare)
    np.testing.assert_array_equal(image.pixels, _read().pixels)
    assert any("file meta information missing" in n for n in image.notes)


@pytest.mark.parametrize("implicit", [True, False])
def test_bare_data_set_without_preamble_is_read(implicit: bool):
    image = read(raw_dataset_bytes(base_dataset(ARR), implicit=implicit))
    np.testing.assert_array_equal(image.pixels, _read().pixels)


@pytest.mark.parametrize(
    ("ts", "inferred"),
    [(uid.JPEG2000Lossless, uid.JPEG2000), (uid.RLELossless, uid.RLELossless),
     (uid.JPEGLSLossless, uid.JPEGLSLossless), (uid.JPEGLSNearLossless, uid.JPEGLSNearLossless),
     (uid.JPEGLosslessSV1, uid.JPEGLossless), (uid.JPEGBaseline8Bit, uid.JPEGBaseline8Bit)],
)
def test_compressed_data_set_without_file_meta_is_identified_by_its_stream(ts, inferred):
    arr = chest_like(bits=8) if ts == uid.JPEGBaseline8Bit else ARR
    bits = 8 if ts == uid.JPEGBaseline8Bit else 12
    encoded = pydicom.dcmread(io.BytesIO(encode(base_dataset(arr, bits_stored=bits), ts)))
    image = read(raw_dataset_bytes(encoded, implicit=False))
    reference = read(encode(base_dataset(arr, bits_stored=bits), ts))
    np.testing.assert_allclose(image.pixels, reference.pixels, atol=1e-6)
    assert image.transfer_syntax == inferred
    assert f"inferred as {inferred.name}" in " ".join(image.notes)


def test_sanitize_preamble_zeroes_an_executable_header_and_keeps_the_image():
    data = bytearray(_bytes := encode(base_dataset(ARR), uid.ExplicitVRLittleEndian))
    data[:4] = b"MZ\x90\x00"  # a PE header hidden in the preamble (CVE-2019-11687)
    clean = sanitize_preamble(bytes(data))
    assert clean[:128] == bytes(128) and clean[128:] == _bytes[128:]
    np.testing.assert_array_equal(read(clean).pixels, read(_bytes).pixels)
    bare = raw_dataset_bytes(base_dataset(ARR))
    assert sanitize_preamble(bare) == bare


def test_colour_secondary_capture_becomes_luminance():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    ds = base_dataset(rgb, bits_stored=8, photometric="RGB", modality="OT")
    image = read(to_bytes(ds))
    np.testing.assert_allclose(image.pixels, 0.587, atol=1e-6)
    assert image.window_source == "colour"


def test_pixel_padding_is_excluded_from_the_window_and_rendered_black():
    padded = np.maximum(ARR, 1)  # the image itself never holds the padding value
    padded[:, :20] = 0  # a collimated border written with the padding value
    inside = padded[:, 20:].astype(np.float64)
    image = _read_array(padded, PixelPaddingValue=0)
    lo, hi = np.percentile(inside, [0.5, 99.5])
    expected = np.clip((inside - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(image.pixels[:, 20:], expected, atol=1e-5)
    assert float(image.pixels[:, :20].max()) == 0.0
    assert any("padding pixels excluded" in n for n in image.notes)


def test_pixel_padding_on_monochrome1_is_still_black():
    inverted = np.minimum(4095 - ARR, 4094).astype(np.uint16)
    inverted[:, :20] = 4095
    image = _read_array(inverted, photometric="MONOCHROME1", PixelPaddingValue=4095)
    assert float(image.pixels[:, :20].max()) == 0.0
    assert float(image.pixels[:, 20:].max()) == 1.0


def _read_array(arr, photometric="MONOCHROME2", **attrs):
    return read(to_bytes(base_dataset(arr, photometric=photometric, **attrs)))


def test_for_processing_image_is_read_and_noted():
    image = _read_array(ARR, SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1.1")
    assert any("For Processing" in n for n in image.notes)
