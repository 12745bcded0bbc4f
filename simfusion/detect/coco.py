"""The `coco` detector (COCO's 80 everyday classes, labelled) and `auto` (a confident COCO box where
there is one, the class-agnostic objectness box otherwise).

``coco`` / ``coco:centernet``
    CenterNet (MobileNetV3) from the model cache (`simfusion.models.coco`): every detection
    scoring at least `COCO_FLOOR`, with its COCO label (``person``, ``car``, ``cup``...).
``coco:nanodet``
    NanoDet-m, the second choice (slower here: one image per call, and less sure of its labels).
``auto`` / ``auto:THRESHOLD``
    CenterNet's detections where its best scores at least THRESHOLD (default `AUTO_THRESHOLD`,
    chosen on the benchmark's tuning seeds), the `objectness` box otherwise.

Fashion products (shoes, shirts, dresses) are not COCO classes: on catalog shots of them the
objectness detector is the one to use. The models must have been fetched once
(`python -m simfusion.models.cache fetch`); a missing model raises `ModelMissing`, which says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simfusion.detect.boxes import Detection, DetectorFn, as_rgb, clip_detection_box
from simfusion.detect.objectness import detect_objectness
from simfusion.models.cache import model_path
from simfusion.models.coco import COCO_LABELS, Found, centernet_detect, nanodet_detect

COCO_MODELS = ("centernet", "nanodet")
COCO_FLOOR = 0.1  # detections below this are noise (CenterNet returns its top 100 whatever they score)
# chosen on the benchmark's tuning seeds 0 and 1: the best threshold that keeps the catalog shots
# (lower ones let CenterNet's looser boxes replace objectness's on products; BENCHMARKS.md, detection)
AUTO_THRESHOLD = 0.5


def found_detections(found: Found, shape: tuple[int, ...], *, floor: float = COCO_FLOOR) -> list[Detection]:
    """A model's detections of one image as detection dicts with COCO labels, best first."""
    height, width = shape[:2]
    out = []
    for box, score, cls in zip(found.boxes, found.scores, found.classes, strict=True):
        if score < floor:
            continue
        clipped = clip_detection_box(box, width, height)
        if clipped is not None:
            out.append({"box": clipped, "score": round(float(score), 4), "label": COCO_LABELS[int(cls)]})
    return sorted(out, key=lambda d: -d["score"])


def coco_detector(argument: str | None = None, *, floor: float = COCO_FLOOR) -> DetectorFn:
    """The `coco[:centernet|nanodet]` detector; checks that the model is cached before any image."""
    model = argument or "centernet"
    if model not in COCO_MODELS:
        raise ValueError(f"coco takes {' or '.join(COCO_MODELS)}, not {argument!r}")
    model_path(model)  # ModelMissing, with how to fetch it, before the first batch
    run = centernet_detect if model == "centernet" else nanodet_detect

    def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
        images = [as_rgb(image) for image in images]
        return [
            found_detections(found, image.shape, floor=floor)
            for image, found in zip(images, run(images), strict=True)
        ]

    return detect


def auto_detector(argument: str | None = None) -> DetectorFn:
    """The `auto[:THRESHOLD]` detector: COCO's detections where the best one is confident, the
    objectness box otherwise."""
    try:
        threshold = AUTO_THRESHOLD if argument is None else float(argument)
    except ValueError:
        raise ValueError(f"auto takes a score threshold between 0 and 1, not {argument!r}") from None
    if not 0 <= threshold <= 1:
        raise ValueError(f"auto takes a score threshold between 0 and 1, not {argument!r}")
    coco = coco_detector()

    def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
        found = coco(images)
        unsure = [i for i, dets in enumerate(found) if not dets or dets[0]["score"] < threshold]
        fallback = detect_objectness([images[i] for i in unsure]) if unsure else []
        for i, dets in zip(unsure, fallback, strict=True):
            found[i] = dets
        return found

    return detect
