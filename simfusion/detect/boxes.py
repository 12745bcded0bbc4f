"""Box geometry and the detection record shape every detector shares.

A detection is ``{"box": [x0, y0, x1, y1], "score": s, "label": l}``: the box in pixels of the
image the detector was given (x1, y1 exclusive: the whole image is ``[0, 0, W, H]``), the score in
[0, 1]. A detector is a function over a batch of uint8 RGB images of any sizes that returns per
image a list of detections (`DetectorFn`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from simfusion.io.images import to_channels

Detection = dict[str, Any]
DetectorFn = Callable[[Sequence[np.ndarray]], list[list[Detection]]]


def clip_detection_box(box: Sequence[float], width: int, height: int) -> list[int] | None:
    """Round a box outwards to whole pixels and clip it to the image; None if nothing is left."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        return None
    left, top = max(0, int(np.floor(min(x0, x1)))), max(0, int(np.floor(min(y0, y1))))
    right, bottom = min(width, int(np.ceil(max(x0, x1)))), min(height, int(np.ceil(max(y0, y1))))
    if right <= left or bottom <= top:
        return None
    return [left, top, right, bottom]


def box_area(box: Sequence[float]) -> float:
    return max(0.0, float(box[2]) - float(box[0])) * max(0.0, float(box[3]) - float(box[1]))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    inter = box_area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def filter_detections(
    detections: Sequence[Detection], *, labels: Sequence[str] | None = None, min_score: float = 0.0
) -> list[Detection]:
    """Keep the detections whose label is in `labels` (all when None) and whose score >= `min_score`."""
    wanted = None if labels is None else set(labels)
    return [
        d
        for d in detections
        if (wanted is None or d.get("label") in wanted) and float(d.get("score", 0.0)) >= min_score
    ]


def main_detection(detections: Sequence[Detection]) -> Detection | None:
    """The main object's detection: the best-scoring one (ties: the larger box); None if there is none."""
    if not detections:
        return None
    return max(detections, key=lambda d: (float(d["score"]), box_area(d["box"])))


def main_box(detections: Sequence[Detection], width: int, height: int) -> list[int]:
    """The main object's box (`main_detection`); the whole image if there is no detection."""
    best = main_detection(detections)
    return [0, 0, int(width), int(height)] if best is None else list(best["box"])


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A detector's input as contiguous uint8 RGB (gray is repeated, alpha dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"detectors take uint8 images, not {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(to_channels(image, 3))


def to_original(box: Sequence[float], small_shape: tuple[int, ...], shape: tuple[int, ...]) -> list[int]:
    """A box on the working copy, in pixels of the original image."""
    sy, sx = shape[0] / small_shape[0], shape[1] / small_shape[1]
    scaled = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
    return clip_detection_box(scaled, shape[1], shape[0]) or [0, 0, int(shape[1]), int(shape[0])]
