"""The `nanodet_coco` view: the backbone of the other COCO detector, NanoDet-m (a ShuffleNetV2,
from the model cache that `make models` fills), its stage 3 pooled on a 4x4 grid. Pretrained, no
training.

A second network, trained by other people with another architecture, errs in other places than
MobileNetV3 and VGG16: that is what makes the fusion pay. The thumbnail is resized to 128 px;
stage 3 (8x8x256, stride 16) is pooled to 4x4 cells, each cell's mean through a signed square
root, and flattened: 4,096 values.
"""

from __future__ import annotations

import numpy as np

from simfusion.models.coco import nanodet_backbone_maps
from simfusion.views.mobilenet import grid_pool, rgb_batch

SIZE = 128
GRID = 4


def nanodet_features(images: np.ndarray) -> np.ndarray:
    """(N, 4096) float32 of a uint8 batch (N, H, W[, C])."""
    return grid_pool(nanodet_backbone_maps(rgb_batch(images, size=SIZE), size=SIZE), grid=GRID)
