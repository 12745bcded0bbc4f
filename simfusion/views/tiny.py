"""The `tiny` view: the thumbnail itself, shrunk to a tiny gray image, as a vector. No model.

The raw-pixel baseline as a view (named apart from evaluate.py's `pixels` baseline): cheap, and in a
fusion at a low weight it adds the layout and tone that the network views pool away (BENCHMARKS.md,
Fashion-MNIST research log).
"""

from __future__ import annotations

import numpy as np

from simfusion.io.images import to_channels

TINY_SIZE = 24


def tiny_features(images: np.ndarray, *, size: int = TINY_SIZE) -> np.ndarray:
    """(N, size * size) float32 of a uint8 batch (N, H, W[, C]): gray, area-resized, centred per image."""
    import cv2

    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, not {array.dtype}")
    out = np.zeros((len(array), size * size), np.float32)
    for row, image in enumerate(array):
        gray = to_channels(image, 1).reshape(image.shape[0], image.shape[1])
        small = cv2.resize(np.ascontiguousarray(gray), (size, size), interpolation=cv2.INTER_AREA)
        out[row] = small.astype(np.float32).ravel() / 255.0
    return out
