"""The `hog` view: histograms of oriented gradients of the thumbnail (scikit-image), no model.

A cheap, untrained view that captures shape and outline; on Fashion-MNIST it ranks better than
raw pixels (BENCHMARKS.md). The thumbnail is read in gray at a fixed size, so every catalog
gives vectors of the same length whatever its thumbnail size.
"""

from __future__ import annotations

import numpy as np

from simfusion.io.images import to_channels

HOG_SIZE = 64  # the thumbnail is resized to HOG_SIZE x HOG_SIZE gray first
HOG_CELL = 8  # pixels per cell
HOG_BLOCK = 3  # cells per block (block-normalised, L2-Hys)
HOG_ORIENTATIONS = 9


def hog_vector(
    image: np.ndarray,
    *,
    size: int = HOG_SIZE,
    cell: int = HOG_CELL,
    block: int = HOG_BLOCK,
    orientations: int = HOG_ORIENTATIONS,
) -> np.ndarray:
    """HOG descriptor of one uint8 image (H, W[, C]) as float32 (d,)."""
    import cv2
    from skimage.feature import hog

    gray = to_channels(np.asarray(image, dtype=np.uint8), 1).reshape(image.shape[0], image.shape[1])
    if gray.shape != (size, size):
        interpolation = cv2.INTER_AREA if max(gray.shape) > size else cv2.INTER_LINEAR
        gray = cv2.resize(np.ascontiguousarray(gray), (size, size), interpolation=interpolation)
    return hog(
        gray,
        orientations=orientations,
        pixels_per_cell=(cell, cell),
        cells_per_block=(block, block),
        block_norm="L2-Hys",
        feature_vector=True,
    ).astype(np.float32)


def hog_features(images: np.ndarray) -> np.ndarray:
    """HOG vectors (N, d) float32 of a uint8 batch (N, H, W[, C])."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, not {array.dtype}")
    if not len(array):
        return np.zeros((0, len(hog_vector(np.zeros((HOG_SIZE, HOG_SIZE), np.uint8)))), np.float32)
    return np.stack([hog_vector(image) for image in array])
