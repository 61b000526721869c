"""Hostile and cut input meets a bound before memory does: deflate bombs, short pixel data found
from the header alone, compressed streams that declare another size than their header, and
byte-mutated files that may only ever raise a DicomError."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from radiology.dicom import (
    CorruptPixelDataError,
    DicomError,
    PixelDataLengthError,
    ReadPolicy,
    TooLargeError,
    TruncatedError,
    read,
    read_header,
)
from radiology.dicom.checks import codestream_size
from radiology.dicom.parse import first_fragment
from tests.helpers.dicom_factory import base_dataset, chest_like, deflated_bomb, encode, to_bytes

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30


@pytest.fixture(scope="module")
def bomb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.dcm"
    path.write_bytes(deflated_bomb())
    return path


PEAK_GROWTH = """
import json, resource, sys
from radiology.dicom import DicomError, read, read_header
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = {}
for name, call in (("read", read), ("read_header", read_header)):
    try:
        call(data)
        outcome[name] = "accepted"
    except DicomError as error:
        outcome[name] = error.code
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "growth_mb": (peak - before) / 1024}))
"""


def test_a_deflate_bomb_is_refused_by_read_and_read_header_within_300_mb(bomb_path: Path):
    assert bomb_path.stat().st_size < 2_000_000  # ~1 MB that would inflate to 1 GiB
    done = subprocess.run([sys.executable, "-c", PEAK_GROWTH, str(bomb_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == {"read": "too_large", "read_header": "too_large"}
    assert result["growth_mb"] < 300, result


def test_the_bomb_refusal_names_the_limit_and_the_cause(bomb_path: Path):
    with pytest.raises(TooLargeError) as info:
        read(bomb_path, policy=ReadPolicy(max_bytes=8 << 20))
    assert "inflates to more than 8 MiB" in info.value.message
    assert "ReadPolicy.max_bytes" in info.value.message


def test_a_deflated_file_within_the_limit_reads_as_before():
    data = encode(base_dataset(chest_like()), uid.DeflatedExplicitVRLittleEndian)
    image = read(data)
    assert image.transfer_syntax == uid.DeflatedExplicitVRLittleEndian
    assert image.pixels.shape == (96, 80)


def test_a_deflated_file_cut_inside_its_stream_is_truncated():
    data = encode(base_dataset(chest_like()), uid.DeflatedExplicitVRLittleEndian)
    with pytest.raises(TruncatedError):
        read_header(data[: len(data) * 2 // 3])


def test_read_header_finds_a_file_cut_inside_its_pixel_data_without_reading_them():
    data = to_bytes(base_dataset(chest_like(256, 256)))
    with pytest.raises(TruncatedError) as info:
        read_header(data[: len(data) - 1000])
    assert "declared bytes present" in info.value.message


def test_read_header_checks_native_pixel_length_against_the_header_when_asked():
    ds = base_dataset(chest_like(64, 64))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # a complete file, half an image
    data = to_bytes(ds)
    assert read_header(data).rows == 64  # the structural read alone accepts it
    with pytest.raises(PixelDataLengthError):
        read_header(data, check=True)
    with pytest.raises(PixelDataLengthError):
        read(data)


def test_a_compressed_stream_declaring_another_size_is_refused_before_decoding():
    data = encode(base_dataset(chest_like(64, 48, bits=8), bits_stored=8), uid.JPEGBaseline8Bit)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = 32, 24  # the stream still says 64 x 48
    with pytest.raises(CorruptPixelDataError) as info:
        read(to_bytes(ds))
    assert "declares a 48 x 64 image" in info.value.message


def test_only_the_start_of_a_stream_declares_its_size():
    """RLE (and any data) can hold the J2K SOC + SIZ bytes by chance: 47 of 607 synthetic RLE
    radiographs did, and were refused as declaring a negative size."""
    siz = (b"\xff\x4f\xff\x51" + b"\x00\x29\x00\x00"
           + (48).to_bytes(4, "big") + (64).to_bytes(4, "big") + bytes(8))
    assert codestream_size(siz + bytes(32)) == (64, 48)
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x14ftypjp2 " + bytes(8)
    assert codestream_size(jp2 + b"\x00\x00\x00\x00jp2c" + siz + bytes(32)) == (64, 48)
    rle_header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
    assert codestream_size(rle_header + b"\x05\x01" + siz + bytes(32)) is None
    rle = encode(base_dataset(chest_like(64, 48)), uid.RLELossless)
    ds = pydicom.dcmread(io.BytesIO(rle))
    fragment = first_fragment(ds.PixelData)
    ds.PixelData = encapsulate([fragment[:80] + siz + fragment[80:]])
    assert codestream_size(first_fragment(ds.PixelData)) is None


def _seed_files() -> list[bytes]:
    """Real files of each kind the reader meets: native, deflated, RLE, JPEG, JPEG 2000."""
    out = [encode(base_dataset(chest_like(48, 40)), ts) for ts in (
        uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian, uid.RLELossless,
        uid.JPEG2000Lossless)]
    eight_bit = base_dataset(chest_like(48, 40, bits=8), bits_stored=8)
    out.append(encode(eight_bit, uid.JPEGBaseline8Bit))
    base = Path(pydicom.data.__file__).parent / "test_files"
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "image_dfl.dcm"):
        if (base / name).exists():
            out.append((base / name).read_bytes())
    return out


SEEDS = _seed_files()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with a few bytes overwritten, a slice removed or the tail cut."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data) - 1))
        del data[start: start + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_mutated_files_only_ever_raise_a_dicom_error(data: bytes):
    policy = ReadPolicy(modalities=None, max_bytes=64 << 20, max_pixels=16 << 20)
    for call in (lambda: read(data, policy=policy),
                 lambda: read_header(data, policy=policy, check=True)):
        try:
            result = call()
        except DicomError:
            continue
        if hasattr(result, "pixels"):
            assert result.pixels.dtype == np.float32
            assert np.isfinite(result.pixels).all()


def test_the_fuzz_seeds_cover_the_kinds_of_file():
    kinds = {str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).file_meta
                 .TransferSyntaxUID) for d in SEEDS}
    assert {uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian, uid.RLELossless,
            uid.JPEGBaseline8Bit, uid.JPEG2000Lossless} <= kinds
    assert isinstance(Dataset(), Dataset)
