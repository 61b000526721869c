"""radiology.images: any image file of a study as float32 grayscale in [0, 1]."""

from __future__ import annotations

import numpy as np
from PIL import Image

from radiology.images import is_dicom_file, read_image
from tests.helpers.dicom_factory import base_dataset, chest_like, to_bytes


def test_a_16_bit_png_keeps_its_depth(tmp_path):
    values = np.array([[0, 257, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, values / 65535.0, atol=1e-7)


def test_an_rgb_jpeg_becomes_grayscale_in_unit_range(tmp_path):
    Image.fromarray(np.full((4, 5, 3), 255, np.uint8)).save(tmp_path / "x.jpg")
    out = read_image(tmp_path / "x.jpg")
    assert out.shape == (4, 5) and np.allclose(out, 1.0, atol=2 / 255)


def test_a_dicom_file_is_recognised_by_its_magic_without_the_dcm_suffix(tmp_path):
    path = tmp_path / "IMG0001"
    path.write_bytes(to_bytes(base_dataset(chest_like(32, 24))))
    assert is_dicom_file(path)
    out = read_image(path)
    assert out.shape == (32, 24) and 0.0 <= out.min() <= out.max() <= 1.0
