"""The `movenet_pose` views: the backbone of MoveNet-Thunder, a pose network (a MobileNetV2 trained
by Google to find people's joints; from the model cache that `make models` fills), two blocks
pooled on a 4x4 grid. Pretrained, no training.

A network trained for another task on other photos sees shape in its own way: on the held-out
Fashion-MNIST and digits catalogs its blocks are near the best single views and add to the fusion
of the others (BENCHMARKS.md, fusion_heldout: the default ranking +0.006 P@10 on the held-out
catalog, +0.0015 P@10 and +0.005 mAP@100 on digits; near_duplicates: block 9 is the best single
view). The thumbnail is resized to 128 px; `movenet_pose` is block 9 (8x8x112, stride 16) and
`movenet_pose_late` block 12 (8x8x168), each pooled to 4x4 cells through a signed square root:
1,792 and 2,688 values. One pass gives both. Not default views (views/registry.py says why).
"""

from __future__ import annotations

import numpy as np

from simfusion.models.pose import LAYERS, pose_maps
from simfusion.views.mobilenet import grid_pool, rgb_batch

SIZE = 128
GRID = 4


def movenet_features(images: np.ndarray, *, layer: str = LAYERS[0]) -> np.ndarray:
    """The `movenet_pose` view of a uint8 batch (N, H, W[, C]): (N, 1792) float32."""
    return grid_pool(pose_maps(rgb_batch(images, size=SIZE), layer=layer, size=SIZE), grid=GRID)


def movenet_late_features(images: np.ndarray) -> np.ndarray:
    """The `movenet_pose_late` view, block 12 out of the same pass: (N, 2688) float32."""
    return movenet_features(images, layer=LAYERS[1])
