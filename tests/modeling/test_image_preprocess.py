"""Image preprocessing: grayscale to 3 channels, square resize, values in [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.preprocess import ImageError, preprocess_image


def test_grayscale_becomes_three_equal_channels_in_minus_one_to_one():
    image = np.linspace(0, 1, 300 * 200, dtype=np.float32).reshape(300, 200)
    out = preprocess_image(image, 56)
    assert out.shape == (56, 56, 3) and out.dtype == np.float32
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert -1.0 <= out.min() < -0.9 and 0.9 < out.max() <= 1.0


def test_constant_image_maps_exactly():
    assert np.allclose(preprocess_image(np.zeros((50, 70), np.float32), 28), -1.0)
    assert np.allclose(preprocess_image(np.full((50, 70, 1), 0.5, np.float32), 28), 0.0)
    assert np.allclose(preprocess_image(np.ones((50, 70, 3), np.float32), 28), 1.0)


def test_rgb_channels_are_kept_apart():
    image = np.zeros((40, 40, 3), np.float32)
    image[..., 1] = 1.0
    out = preprocess_image(image, 28)
    assert np.allclose(out[..., 0], -1)
    assert np.allclose(out[..., 1], 1)
    assert np.allclose(out[..., 2], -1)


def test_downscaling_averages_fine_detail():
    stripes = np.zeros((224, 224), np.float32)
    stripes[:, ::2] = 1.0  # one-pixel stripes vanish into grey when antialiased
    out = preprocess_image(stripes, 28)
    assert np.allclose(out, 0.0, atol=0.05)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2)), np.zeros((0, 5)), np.full((4, 4), np.nan)])
def test_unusable_images_are_refused(bad):
    with pytest.raises(ImageError):
        preprocess_image(bad, 28)
