"""The object detection stage over records: adds `detections`, the main `box` and a drawing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from simfusion.detect.boxes import Detection, DetectorFn, as_rgb, filter_detections, main_box, main_detection
from simfusion.io.images import load_image, save_image
from simfusion.io.records import output_relpath, record_path
from simfusion.io.stage import map_records

STAGE = "object_detection"


def draw_detections(
    image: np.ndarray, detections: Sequence[Detection], *, main: Sequence[int] | None = None
) -> np.ndarray:
    """A copy of `image` with each box drawn and labelled; the `main` box in green, others in orange."""
    import cv2

    canvas = np.ascontiguousarray(as_rgb(image).copy())
    height, width = canvas.shape[:2]
    thickness = max(1, round(max(height, width) / 300))
    font = max(0.3, max(height, width) / 1000)
    for d in detections:
        x0, y0, x1, y1 = (int(v) for v in d["box"])
        colour = (0, 200, 0) if main is not None and list(d["box"]) == list(main) else (255, 140, 0)
        cv2.rectangle(canvas, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)
        text = f"{d.get('label') or 'box'} {float(d['score']):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(height - 1, y0 + th + 2)
        cv2.putText(
            canvas, text, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thickness, cv2.LINE_AA
        )
    return canvas


def detect_records(
    records: list[dict[str, Any]],
    *,
    detector: DetectorFn,
    base_path: str,
    output_path: str | None = None,
    labels: Sequence[str] | None = None,
    min_score: float = 0.0,
) -> list[dict[str, Any]]:
    """Detect objects in a batch of records: adds `detections`, `box` and, with `output_path`,
    `detection_image`; a record whose image cannot be read gets an `error`, the others go on."""

    images: dict[int, np.ndarray] = {}

    def load(record):
        images[id(record)] = load_image(os.path.join(base_path, record_path(record)), channels=3)

    records = map_records(records, STAGE, load)
    good = [r for r in records if id(r) in images]
    found = detector([images[id(r)] for r in good]) if good else []

    def finish(record, detections):
        image = images.pop(id(record))
        height, width = image.shape[:2]
        kept = filter_detections(detections, labels=labels, min_score=min_score)
        record["detections"] = kept
        record["box"] = main_box(kept, width, height)
        main = main_detection(kept)
        if main is not None and main.get("label") is not None:
            record.setdefault("label", main["label"])  # a record's own `label` is kept
        if not kept:
            why = f" labelled {', '.join(labels)}" if labels else ""
            why += f" scoring >= {min_score}" if min_score > 0 else ""
            record["detection_note"] = f"no detection{why}; box is the whole image"
        if output_path:
            target = os.path.join(output_path, output_relpath(record))
            save_image(target, draw_detections(image, kept, main=record["box"] if kept else None))
            record["detection_image"] = target

    by_id = {id(r): d for r, d in zip(good, found, strict=True)}
    return map_records(records, STAGE, lambda r: finish(r, by_id[id(r)]) if id(r) in by_id else None)
