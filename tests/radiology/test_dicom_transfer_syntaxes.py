"""Every transfer syntax the reader claims, written by the tests themselves, decodes correctly."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom import uid

from radiology.dicom import read
from tests.helpers.dicom_factory import LOSSLESS, LOSSY, NATIVE, base_dataset, chest_like, encode

ENCAPSULATED_NATIVE = uid.UID("1.2.840.10008.1.2.1.98")
DEPTHS = [(8, False), (10, False), (12, False), (16, False), (12, True), (14, True), (16, True)]


def _case_id(ts: uid.UID, bits: int, signed: bool) -> str:
    return f"{ts.name}-{bits}{'s' if signed else 'u'}"


def _original(bits: int, signed: bool):
    arr = chest_like(bits=bits, signed=signed)
    return arr, base_dataset(arr, bits_stored=bits)


@pytest.mark.parametrize(
    ("ts", "bits", "signed"),
    [(ts, b, s) for ts in NATIVE + LOSSLESS for b, s in DEPTHS],
    ids=[_case_id(ts, b, s) for ts in NATIVE + LOSSLESS for b, s in DEPTHS],
)
def test_lossless_syntax_decodes_to_the_same_image_as_the_uncompressed_original(
    ts, bits, signed, caplog
):
    arr, ds = _original(bits, signed)
    data = encode(ds, ts)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == ts
    reference = read(encode(ds, uid.ExplicitVRLittleEndian))
    image = read(data)
    assert image.transfer_syntax == ts
    assert image.pixels.dtype == np.float32 and image.pixels.shape == arr.shape
    np.testing.assert_array_equal(image.pixels, reference.pixels)
    assert "unexpected" not in caplog.text  # no decoder fallback or wrapped internal error


@pytest.mark.parametrize(
    ("ts", "bits", "signed"), [(uid.ExplicitVRLittleEndian, b, s) for b, s in DEPTHS]
)
def test_uncompressed_original_matches_an_independent_percentile_window(ts, bits, signed):
    arr, ds = _original(bits, signed)
    image = read(encode(ds, ts))
    lo, hi = np.percentile(arr.astype(np.float64), [0.5, 99.5])
    expected = np.clip((arr - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-5)
    assert image.window_source == "percentile"
    assert image.bits_stored == bits


LOSSY_CASES = [(ts, b, s) for ts in LOSSY for b, s in DEPTHS
               if b == 8 or ts in (uid.JPEG2000, uid.JPEGLSNearLossless)]


@pytest.mark.parametrize(
    ("ts", "bits", "signed"), LOSSY_CASES, ids=[_case_id(*c) for c in LOSSY_CASES]
)
def test_lossy_syntax_decodes_close_to_the_original(ts, bits, signed):
    arr, ds = _original(bits, signed)
    reference = read(encode(ds, uid.ExplicitVRLittleEndian)).pixels
    image = read(encode(ds, ts))
    assert image.transfer_syntax == ts
    assert image.pixels.shape == arr.shape
    assert float(np.abs(image.pixels - reference).mean()) < 0.03


def test_twelve_bit_jpeg_extended_written_by_libjpeg_turbo_decodes_close_to_the_original():
    pytest.importorskip("imagecodecs")
    arr, ds = _original(12, False)
    data = encode(ds, uid.JPEGExtended12Bit)
    pixel_data = pydicom.dcmread(io.BytesIO(data)).PixelData
    frame = next(pydicom.encaps.generate_frames(pixel_data, number_of_frames=1))
    assert frame[frame.find(b"\xff\xc1") + 4] == 12  # SOF1 with 12-bit sample precision
    reference = read(encode(ds, uid.ExplicitVRLittleEndian)).pixels
    image = read(data)
    assert image.transfer_syntax == uid.JPEGExtended12Bit
    assert float(np.abs(image.pixels - reference).mean()) < 0.01


def test_multi_frame_uses_the_first_frame_and_says_so():
    frames = np.stack([chest_like(seed=1), chest_like(seed=2)])
    ds = base_dataset(frames, bits_stored=12)
    image = read(encode(ds, uid.JPEG2000Lossless))
    single = read(encode(base_dataset(frames[0], bits_stored=12), uid.ExplicitVRLittleEndian))
    np.testing.assert_array_equal(image.pixels, single.pixels)
    assert image.number_of_frames == 2
    assert any("first frame" in n for n in image.notes)


@pytest.mark.parametrize(
    ("ts", "decoder"),
    [(uid.JPEGLSLossless, "pyjpegls"), (uid.RLELossless, "pylibjpeg"),
     (uid.JPEG2000Lossless, "pylibjpeg"), (uid.JPEGBaseline8Bit, "pillow"),
     (uid.ExplicitVRLittleEndian, "native")],
)
def test_decoder_choice_is_fixed_per_syntax(ts, decoder):
    """Same decoder on every machine, so lossy images decode to the same values everywhere."""
    bits = 8 if ts == uid.JPEGBaseline8Bit else 12
    _, ds = _original(bits, False)
    assert read(encode(ds, ts)).decoder == decoder


@pytest.mark.parametrize(("bits", "signed"), [(12, False), (16, True), (8, False)])
def test_encapsulated_uncompressed_is_decoded_although_pydicom_has_no_decoder(bits, signed):
    arr, ds = _original(bits, signed)
    enc = pydicom.dcmread(io.BytesIO(encode(ds, uid.ExplicitVRLittleEndian)))
    enc.PixelData = pydicom.encaps.encapsulate([bytes(enc.PixelData)])
    enc["PixelData"].VR = "OB"
    enc.file_meta.TransferSyntaxUID = ENCAPSULATED_NATIVE
    buf = io.BytesIO()
    enc.save_as(buf, enforce_file_format=True)
    image = read(buf.getvalue())
    np.testing.assert_array_equal(image.pixels, read(encode(ds, uid.ExplicitVRLittleEndian)).pixels)
    assert image.transfer_syntax == ENCAPSULATED_NATIVE
