"""New images through the training pipeline's stages, in memory: detection, thumbnail, views, encoders.

What a query (predict.py) and a catalog addition (fusion.py --add) share, so both are encoded
exactly like the catalog was: the same thumbnail size and channels (training.json), the same
saliency, edge and foreground views, the same trained encoders. Nothing is written to disk.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simfusion.detect.boxes import main_box
from simfusion.detect.registry import DEFAULT_DETECTOR, NO_DETECTOR, make_detector
from simfusion.io.atomic import read_json
from simfusion.io.images import load_image
from simfusion.io.records import record_path, set_error
from simfusion.io.stage import batched, map_records
from simfusion.learn.encoders import TRAINING_JSON, encode_views
from simfusion.views.registry import SALIENCY_VIEWS, THUMBNAIL
from simfusion.views.saliency import compute_views, to_uint8
from simfusion.views.thumbnail import make_thumbnail

log = logging.getLogger(__name__)

# How the pipeline made the catalog's images; training.json may override them under "pipeline".
DEFAULT_PIPELINE = {
    "detector": None,  # None: simfusion.detect.registry's own default; "none": the whole image
    "margin": 0.1,
    "fill": "border",
    "saliency_method": "spectral_residual",
    "edges": "hed",
    "foreground_fill": "white",
}


@dataclass(frozen=True)
class Pipeline:
    """The settings that turn a raw image into the view images the encoders were trained on."""

    height: int
    width: int
    channels: int
    sources: dict[str, str]  # view -> the view image it is computed from (hed_vgg16 -> thumbnail)
    detector: str | None = None
    margin: float = 0.1
    fill: str = "border"
    saliency_method: str = "spectral_residual"
    edges: str = "hed"
    foreground_fill: str = "white"


def load_pipeline(model_save_path: str | os.PathLike, **overrides: Any) -> Pipeline:
    """The pipeline settings of a trained model (its training.json), with `overrides` not None applied."""

    path = os.path.join(os.fspath(model_save_path), TRAINING_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {TRAINING_JSON} in {os.fspath(model_save_path)}: run train.py first")
    try:
        info = read_json(path)
        height, width, channels = (int(v) for v in info["input_size"])
        settings = {**DEFAULT_PIPELINE, **info.get("pipeline", {})}
        settings.update({key: value for key, value in overrides.items() if value is not None})
        sources = {view: spec.get("source", view) for view, spec in info["views"].items()}
        return Pipeline(height=height, width=width, channels=channels, sources=sources, **settings)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path} is not a training.json that train.py wrote ({exc!r}); run train.py again"
        ) from exc


def detect_boxes(images: Sequence[np.ndarray], *, detector: str | None = None) -> list[dict[str, Any]]:
    """Each image's `detections` and main `box` ; detector "none": {} (the whole image)."""
    if detector == NO_DETECTOR:
        return [{} for _ in images]

    found = _detector(detector or DEFAULT_DETECTOR)(list(images))
    out = []
    for image, detections in zip(images, found, strict=True):
        height, width = image.shape[:2]
        out.append({"detections": detections, "box": main_box(detections, width, height)})
    return out


@functools.lru_cache(maxsize=4)
def _detector(spec: str):

    return make_detector(spec)


def _boxes(
    images: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None] | None, pipeline: Pipeline
) -> tuple[list, list[dict[str, Any]]]:
    """Each image's box: the one given, else the detector's; and the detection result ({} if none ran)."""
    boxes = list(boxes) if boxes is not None else [None] * len(images)
    todo = [row for row, box in enumerate(boxes) if box is None]
    found: list[dict[str, Any]] = [{} for _ in images]
    if todo:
        detected = detect_boxes([images[r] for r in todo], detector=pipeline.detector)
        for row, result in zip(todo, detected, strict=True):
            found[row] = result
            boxes[row] = result.get("box")
    return boxes, found


def view_images(
    images: Sequence[np.ndarray],
    views: Sequence[str],
    pipeline: Pipeline,
    *,
    boxes: Sequence[Sequence[float] | None] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The uint8 image batch of each view for raw RGB images, and each image's detection result.

    An image with a box in `boxes` is cropped to it as given (as thumbnail.py honours a record's
    `box`); the others go through the detector. Their result is {} when no detector ran.
    """

    unknown = [view for view in views if pipeline.sources.get(view, view) not in (THUMBNAIL, *SALIENCY_VIEWS)]
    if unknown:
        raise ValueError(
            f"view(s) {', '.join(unknown)} cannot be computed from a new image (only {THUMBNAIL}, "
            f"{', '.join(SALIENCY_VIEWS)} and views made from them); leave them out with --views"
        )
    boxes, found = _boxes(images, boxes, pipeline)
    thumbs = np.stack(
        [
            make_thumbnail(
                image,
                height=pipeline.height,
                width=pipeline.width,
                channels=pipeline.channels,
                box=box,
                margin=pipeline.margin,
                fill=pipeline.fill,
            )
            for image, box in zip(images, boxes, strict=True)
        ]
    )
    sources = {pipeline.sources.get(view, view) for view in views}
    made: dict[str, np.ndarray] = {}
    if THUMBNAIL in sources:
        made[THUMBNAIL] = thumbs
    wanted = [view for view in SALIENCY_VIEWS if view in sources]
    if wanted:
        per_image = compute_views(
            list(thumbs),
            method=pipeline.saliency_method,
            edges=pipeline.edges,
            views=wanted,
            fill=pipeline.foreground_fill,
        )
        for view in wanted:
            # the catalog's views went through files as uint8, so the encoders saw uint8 maps
            made[view] = np.stack(
                [v[view] if v[view].dtype == np.uint8 else to_uint8(v[view]) for v in per_image]
            )
    return {view: made[pipeline.sources.get(view, view)] for view in views}, found


def encode_images(
    images: Sequence[np.ndarray],
    *,
    model_save_path: str | os.PathLike,
    views: Sequence[str],
    pipeline: Pipeline | None = None,
    boxes: Sequence[Sequence[float] | None] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Feature maps per view (N, h, w, c) of raw uint8 RGB images, and each image's detection result."""

    pipeline = pipeline or load_pipeline(model_save_path)
    if not len(images):
        raise ValueError("no images to encode")
    batches, found = view_images(images, views, pipeline, boxes=boxes)
    return encode_views(batches, model_save_path=model_save_path), found


@dataclass
class Encoded:
    """What `encode_records` made, row-aligned: the records it could read, their feature maps per
    view, their images and their detection results ({} where the record gave its own `box`)."""

    records: list[dict[str, Any]]
    maps: dict[str, np.ndarray]
    images: list[np.ndarray]
    found: list[dict[str, Any]]


def _encode_batch(records, pictures, model_save_path, views, pipeline, stage):
    """Encode a batch; when one record's image or box cannot be made into views (a box with no
    area, say), encode the records one by one so only that one gets an `error`."""
    boxes = [record.get("box") for record in records]
    try:
        maps, found = encode_images(
            pictures, model_save_path=model_save_path, views=views, pipeline=pipeline, boxes=boxes
        )
        return records, pictures, maps, found
    except (ValueError, TypeError) as exc:
        if len(records) == 1:
            set_error(records[0], stage, str(exc))
            return [], [], {}, []
    kept, kept_pictures, parts, found = [], [], {view: [] for view in views}, []
    for record, picture in zip(records, pictures, strict=True):
        one, _, maps, result = _encode_batch([record], [picture], model_save_path, views, pipeline, stage)
        if one:
            kept.append(record)
            kept_pictures.append(picture)
            found.extend(result)
            for view in views:
                parts[view].append(maps[view])
    joined = {view: np.concatenate(chunks) for view, chunks in parts.items() if chunks}
    return kept, kept_pictures, joined, found


def encode_records(
    records: Sequence[dict[str, Any]],
    *,
    model_save_path: str | os.PathLike,
    base_path: str,
    views: Sequence[str],
    pipeline: Pipeline | None = None,
    batch_size: int = 16,
    stage: str = "encode",
) -> Encoded:
    """Read and encode the records' images, batch by batch; records are not changed, except that
    one whose image cannot be read gets an `error` (and is left out of the result)."""

    pipeline = pipeline or load_pipeline(model_save_path)
    out = Encoded(records=[], maps={}, images=[], found=[])
    parts: dict[str, list[np.ndarray]] = {view: [] for view in views}
    loaded: dict[int, np.ndarray] = {}

    def load(record: dict[str, Any]) -> None:
        loaded[id(record)] = load_image(os.path.join(base_path, record_path(record)), channels=3)

    for batch in batched(records, batch_size):
        loaded.clear()
        map_records(batch, stage, load)
        good = [record for record in batch if id(record) in loaded]
        if not good:
            continue
        good, pictures, maps, found = _encode_batch(
            good, [loaded[id(record)] for record in good], model_save_path, views, pipeline, stage
        )
        if not good:
            continue
        for view in views:
            parts[view].append(maps[view])
        out.records.extend(good)
        out.images.extend(pictures)
        out.found.extend(found)
    out.maps = {view: np.concatenate(chunks) for view, chunks in parts.items() if chunks}
    return out
