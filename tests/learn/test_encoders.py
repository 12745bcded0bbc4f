"""The view registry and the untrained encoders: HOG, pixels, the square-root grid pooling."""

from __future__ import annotations

import numpy as np
import pytest

from simfusion.learn.encoders import ComputedEncoder, PretrainedEncoder, pool_grid_sqrt
from simfusion.views.hog import hog_features
from simfusion.views.registry import (
    AUTOENCODER,
    DEFAULT_VIEWS,
    VIEWS,
    check_view_name,
    image_view,
    view_channels,
    view_spec,
)
from simfusion.views.tiny import TINY_SIZE, tiny_features


def disc(size=64, radius=16, value=255):
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.uint8)
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2] = value
    return image


def bar(size=64, value=255):
    image = np.zeros((size, size, 3), np.uint8)
    image[size // 4 : 3 * size // 4, size // 2 - 4 : size // 2 + 4] = value
    return image


def test_every_default_view_is_registered_and_reads_a_stage_image():
    for name in DEFAULT_VIEWS:
        assert name in VIEWS
        assert image_view(name) in ("thumbnail", "saliency", "edges", "foreground")


def test_an_unknown_view_is_an_autoencoder_over_its_own_images():
    spec = view_spec("my_view")
    assert spec.kind == AUTOENCODER and spec.image == "my_view" and spec.trained
    assert view_channels("my_view", 1) == 1 and view_channels("edges", 3) == 1
    assert view_channels("hog", 1) == 3  # computed views read the RGB thumbnail
    assert image_view("hed_vgg16") == "thumbnail"
    with pytest.raises(ValueError, match="letters, digits"):
        check_view_name("bad/name")


def test_hog_tells_shapes_apart_and_ignores_brightness():
    vectors = hog_features(np.stack([disc(), disc(value=128), bar()]))
    assert vectors.dtype == np.float32 and vectors.ndim == 2 and len(vectors) == 3
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    same, other = unit[0] @ unit[1], unit[0] @ unit[2]
    assert same > 0.99 and other < same - 0.2
    assert hog_features(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, vectors.shape[1])


def test_hog_vectors_do_not_depend_on_the_thumbnail_size():
    assert hog_features(np.stack([disc(128, 32)])).shape == hog_features(np.stack([disc(32, 8)])).shape


def test_tiny_is_the_small_gray_image():
    vectors = tiny_features(np.stack([disc(), np.full((64, 64, 3), 255, np.uint8)]))
    assert vectors.shape == (2, TINY_SIZE * TINY_SIZE)
    assert vectors[1].min() == pytest.approx(1.0) and 0 < vectors[0].mean() < 0.5
    with pytest.raises(ValueError, match="uint8"):
        tiny_features(np.zeros((1, 8, 8), np.float32))


def test_computed_encoder_wraps_the_registry_function():
    encoder = ComputedEncoder(VIEWS["hog"].compute, model_name="hog")
    out = encoder(np.stack([disc(), bar()]))
    assert out.dtype == np.float32 and out.shape == hog_features(np.stack([disc(), bar()])).shape


def test_sqrt_grid_pooling_known_values():
    maps = np.zeros((1, 8, 8, 2), np.float32)
    maps[0, :4, :4, 0] = 4.0  # top-left cell of a 2x2 grid, channel 0
    maps[0, :, :, 1] = -1.0  # negative responses count as 0
    out = pool_grid_sqrt(maps, grid=2)
    assert out.shape == (1, 2 * 2 * 2)
    np.testing.assert_allclose(out[0], [2.0, 0, 0, 0, 0, 0, 0, 0])


def test_pretrained_encoder_checks_its_options():
    with pytest.raises(ValueError, match="block must be"):
        PretrainedEncoder(input_shape=(32, 32, 3), block="block9")
    with pytest.raises(ValueError, match="pooling must be"):
        PretrainedEncoder(input_shape=(32, 32, 3), pooling="median")
    assert PretrainedEncoder(input_shape=(128, 128, 3), size=64).input_shape == (64, 64, 3)
