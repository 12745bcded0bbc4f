import numpy as np
import pytest
from conftest import square_image

from simfusion.views.mobilenet import (
    grid_pool,
    mobilenet_deep_features,
    mobilenet_features,
    mobilenet_late_features,
)
from simfusion.views.nanodet import nanodet_features
from simfusion.views.registry import CACHED_MODELS, DEFAULT_VIEWS, default_views


def test_grid_pool_is_a_signed_square_root_of_cell_means():
    maps = np.zeros((1, 8, 8, 2), np.float32)
    maps[0, :2, :2, 0] = 4.0  # the top-left cell of a 4x4 grid
    maps[0, 6:, 6:, 1] = -9.0  # the bottom-right one, negative
    out = grid_pool(maps, grid=4).reshape(4, 4, 2)
    assert out[0, 0, 0] == pytest.approx(2.0) and out[3, 3, 1] == pytest.approx(-3.0)
    assert np.count_nonzero(out) == 2


@pytest.mark.slow
def test_mobilenet_view_is_deterministic_and_finds_the_same_object(coco_models):
    red = square_image(128, 128, box=(30, 30, 100, 100), colour=(200, 30, 30))
    moved = square_image(128, 128, box=(36, 34, 104, 102), colour=(200, 30, 30))
    blue = square_image(128, 128, box=(10, 50, 120, 70), colour=(20, 40, 220))
    features = mobilenet_features(np.stack([red, moved, blue]))
    assert features.shape == (3, 4 * 4 * 32) and features.dtype == np.float32
    np.testing.assert_allclose(mobilenet_features(red[None])[0], features[0], rtol=1e-4, atol=1e-4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]
    for view, width in ((mobilenet_deep_features, 64), (mobilenet_late_features, 88)):
        deep = view(np.stack([red, moved, blue]))
        assert deep.shape == (3, 4 * 4 * width) and deep.dtype == np.float32
        unit = deep / np.linalg.norm(deep, axis=1, keepdims=True)
        assert unit[0] @ unit[1] > unit[0] @ unit[2]


@pytest.mark.slow
def test_nanodet_view_is_deterministic_and_finds_the_same_photo(coco_models):
    from skimage import data

    cat = data.chelsea()
    shifted = cat[8:, 10:]  # the same photo, cropped a little
    coffee = data.coffee()
    features = nanodet_features(np.stack([np.asarray(image[:280, :380]) for image in (cat, shifted, coffee)]))
    assert features.shape == (3, 4 * 4 * 256) and features.dtype == np.float32
    assert np.isfinite(features).all()
    np.testing.assert_allclose(nanodet_features(cat[None, :280, :380])[0], features[0], rtol=1e-4, atol=1e-4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.05
    with pytest.raises(ValueError, match="uint8"):
        nanodet_features(features[:, :10])


def test_default_views_leave_mobilenet_out_only_without_its_model(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SIMFUSION_MODELS", str(tmp_path / "empty"))
    with caplog.at_level("WARNING"):
        views = default_views()
    assert views == tuple(v for v in DEFAULT_VIEWS if v not in CACHED_MODELS)
    assert views == ("hed_vgg16", "hog", "tiny")
    assert "mobilenet_coco left out" in caplog.text and "nanodet_coco left out" in caplog.text
    assert "make models" in caplog.text


def test_default_views_include_mobilenet_where_its_model_is_fetched(coco_models):
    assert default_views() == DEFAULT_VIEWS
    assert {"mobilenet_coco", "mobilenet_coco_deep", "nanodet_coco"} <= set(DEFAULT_VIEWS)
