import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_backbone_maps_shapes_and_content(coco_models, rng):
    from skimage import data

    from simfusion.models.coco import backbone_maps

    images = np.stack([data.astronaut()[:300, :300], data.chelsea()[:300, :300], data.coffee()[:300, :300]])
    maps = backbone_maps(images, size=128)
    assert maps.dtype == np.float32 and maps.shape == (3, 16, 16, 32)
    assert np.isfinite(maps).all() and maps.std() > 0
    assert not np.allclose(maps[0], maps[1])
    # batching does not change a map; a later block is coarser
    assert np.allclose(backbone_maps(images[1:2], size=128)[0], maps[1], atol=1e-4)
    assert backbone_maps(images[:1], layer="expanded_conv_11", size=128).shape == (1, 8, 8, 88)
    with pytest.raises(ValueError, match="uint8"):
        backbone_maps(images.astype(np.float32))
    with pytest.raises(ValueError, match="unknown backbone layer"):
        backbone_maps(images, layer="conv_99")


def test_nanodet_backbone_maps_shapes_and_content(coco_models):
    from skimage import data

    from simfusion.models.coco import nanodet_backbone_maps

    images = np.stack([data.astronaut()[:300, :300], data.coffee()[:300, :300]])
    maps = nanodet_backbone_maps(images, size=128)
    assert maps.dtype == np.float32 and maps.shape == (2, 8, 8, 256)
    assert np.isfinite(maps).all() and maps.std() > 0 and not np.allclose(maps[0], maps[1])
    assert np.allclose(nanodet_backbone_maps(images[1:], size=128)[0], maps[1], atol=1e-4)
    assert nanodet_backbone_maps(images[:1], size=192).shape == (1, 12, 12, 256)
    assert nanodet_backbone_maps(images[:0]).shape == (0, 8, 8, 256)
    with pytest.raises(ValueError, match="uint8"):
        nanodet_backbone_maps(images.astype(np.float32))


def test_the_two_mobilenet_views_share_one_pass_with_the_same_maps(coco_models):
    from skimage import data

    from simfusion.models import coco

    images = np.stack([data.astronaut()[:200, :200], data.coffee()[:200, :200]])
    coco._recent.clear()
    early = coco.backbone_maps(images, layer="expanded_conv_5", size=128)
    late = coco.backbone_maps(images, layer="expanded_conv_8", size=128)
    assert len(coco._recent) == 1  # the second view came from the first one's pass
    assert late.shape == (2, 8, 8, 64) and not late.flags.writeable
    alone = coco._backbone_pass(images, ("expanded_conv_8",), size=128, batch_size=32)["expanded_conv_8"]
    assert np.allclose(late, alone, atol=1e-4)
    # another batch is its own entry, and only the last few are kept
    for shift in range(1, 1 + coco.RECENT_BATCHES):
        other = coco.backbone_maps(np.roll(images, shift, axis=1), layer="expanded_conv_5", size=128)
        assert not np.allclose(other, early)
    assert len(coco._recent) == coco.RECENT_BATCHES


def test_centernet_is_batched_and_answers_in_each_images_pixels(coco_models):
    import cv2
    from skimage import data

    from simfusion.models.coco import COCO_LABELS, centernet_detect

    photo = data.astronaut()
    big = cv2.resize(photo, (1024, 768), interpolation=cv2.INTER_LINEAR)
    alone = centernet_detect([photo])[0]
    small, large, again = centernet_detect([photo, big, photo], batch_size=2)
    assert np.allclose(again.boxes, alone.boxes, atol=1e-2) and np.allclose(
        again.scores, alone.scores, atol=1e-4
    )
    assert COCO_LABELS[alone.classes[0]] == "person" and COCO_LABELS[large.classes[0]] == "person"
    expected = small.boxes[0] * np.array([2, 1.5, 2, 1.5])
    assert np.abs(large.boxes[0] - expected).max() < 0.05 * 1024
