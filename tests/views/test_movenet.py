import numpy as np
import pytest

from simfusion.views.movenet import movenet_features, movenet_late_features

pytestmark = pytest.mark.slow


def test_movenet_views_are_deterministic_and_find_the_same_photo(coco_models, monkeypatch):
    from skimage import data

    from simfusion.models import pose

    cat, coffee = data.chelsea()[:280, :380], data.coffee()[:280, :380]
    shifted = data.chelsea()[8:288, 10:390]  # the same photo, moved a little
    batch = np.stack([cat, shifted, coffee])
    passes = []
    real_pass = pose._pose_pass
    monkeypatch.setattr(
        pose, "_pose_pass", lambda images, **kw: passes.append(len(images)) or real_pass(images, **kw)
    )
    pose._recent.clear()
    for view, width in ((movenet_features, 112), (movenet_late_features, 168)):
        features = view(batch)
        assert features.shape == (3, 4 * 4 * width) and features.dtype == np.float32
        np.testing.assert_allclose(view(cat[None])[0], features[0], rtol=1e-4, atol=1e-4)
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.05
    assert passes == [3, 1]  # the late view read the batch's and the lone cat's passes of the first
    assert movenet_features(batch[:0]).shape == (0, 4 * 4 * 112)
