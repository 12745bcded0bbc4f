import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_the_backbone_started_after_the_graphs_own_resize_gives_the_graphs_maps(coco_models):
    """MoveNet's graph takes one int32 256x256 image and normalises it itself; started at its
    normalised image, it takes any batch and gives the same block maps for the same pixels."""
    import tensorflow as tf
    from skimage import data

    from simfusion.models.cache import model_path
    from simfusion.models.coco import resized_batch
    from simfusion.models.pose import BLOCK, LAYERS, MODEL, pose_maps
    from simfusion.models.tfjs import load_graph_model

    image = resized_batch([data.astronaut()], 256).round().astype(np.uint8)
    whole = load_graph_model(model_path(MODEL), inputs=["input"], outputs=[BLOCK.format(layer=LAYERS[0])])
    expected = whole(tf.constant(image.astype(np.int32)))[0].numpy()
    maps = pose_maps(np.concatenate([image, image[:, ::-1]]), size=256)
    assert maps.shape == (2, 16, 16, 112) and not maps.flags.writeable
    np.testing.assert_allclose(maps[:1], expected, rtol=1e-3, atol=1e-3)
    assert not np.allclose(maps[1], maps[0], atol=1e-2)  # the mirrored photo is another input
    late = pose_maps(np.concatenate([image, image[:, ::-1]]), layer=LAYERS[1], size=256)
    assert late.shape == (2, 16, 16, 168)
    with pytest.raises(ValueError, match="unknown pose backbone layer"):
        pose_maps(image, layer="block_3_add")
    with pytest.raises(ValueError, match="uint8 RGB"):
        pose_maps(image[..., 0])
