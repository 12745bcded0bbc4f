"""The detector registry: `make_detector(spec)` builds a detector by name.

Every detector is a function over a batch of uint8 RGB images (H, W, 3), of any sizes, that
returns per image a list of detections ``{"box": [x0, y0, x1, y1], "score": s, "label": l}``;
boxes are in pixels of the image it was given (x1, y1 exclusive: the whole image is
``[0, 0, W, H]``), scores in [0, 1]. `make_detector(spec)` builds one by name:

``objectness`` (default)
    Class-agnostic main-object localisation from pretrained models that ship offline: HED edges
    (the bundled BSDS500 weights, `simfusion.models.hed`) and colour contrast with the image border
    (the border's main colours, found by k-means, stand for the background) make an objectness
    map on a copy shrunk to `OBJECTNESS_SIZE` px; the main object is the strongest compact part of
    it (Otsu threshold, components weighted by how little they touch the border), refined with
    GrabCut. One box per image, label ``"object"``. ``objectness:split`` also splits a distinct
    object off a busy scene it merged with (better on pasted-object benchmarks, worse on real
    photos, where it picks out parts). OpenCV's static saliency, VGG feature contrast and box
    search were tried as further cues and did not help (BENCHMARKS.md, section detection).
``saliency``
    A plain baseline without TensorFlow: OpenCV's spectral-residual static saliency, Otsu
    threshold, the component with the most mass. Label ``"object"``.
``full``
    The whole image, score 1, label None.
``coco`` / ``coco:nanodet``
    A pretrained COCO detector (80 everyday classes: person, car, cat, cup...; CenterNet, or
    NanoDet as the second choice) from the model cache, fetched once by set-up
    (`simfusion.models.cache`): every detection with its COCO label (`simfusion.detect.coco`).
``auto`` / ``auto:THRESHOLD``
    A confident COCO detection where there is one, the objectness box otherwise.
``haar`` / ``haar:NAME[,NAME]``
    OpenCV's bundled Haar cascades: ``face``, ``cat_face``, ``person`` (full body),
    ``licence_plate``; ``haar`` alone runs them all. A NAME may also be a bundled cascade
    (``frontalface_alt2``) or a path to a cascade .xml (label: its file name).
``keras:PATH``
    Your own detector: a Keras model (``.keras``, ``.h5``), a ``.tflite`` model or a TensorFlow
    SavedModel folder; see "Plugging in a detector" below.
``python:module:function`` or ``python:/path/file.py:function``
    A Python function ``fn(images: list[np.ndarray]) -> list[list[dict]]``: uint8 RGB images in,
    per image a list of detection dicts (``box`` in that image's pixels, ``score``, ``label``) out.

Plugging in a detector (e.g. a stronger COCO detector than ``coco``)
--------------------------------------------------------------------
Any TF Object Detection API style model works. The model contract for ``keras:`` models:

- input: float32 batch (N, H, W, 3), RGB in [0, 1], at the model's input size (images are
  resized to it; a model with a free input size gets each image as it is, one at a time).
  A ``.tflite`` or SavedModel whose input is uint8 gets uint8 pixels in [0, 255] instead.
- outputs: ``boxes`` (N, K, 4) normalised ``[y0, x0, y1, x1]`` (TF Object Detection API order),
  ``scores`` (N, K) in [0, 1] and ``classes`` (N, K); either as a dict with those keys (or
  ``detection_boxes``, ``detection_scores``, ``detection_classes``) or as a list in that order.
  TFLite outputs are matched by name, else taken in the order of TFLite's detection
  post-processing op (boxes, classes, scores, count).
- labels: ``--label_map labels.txt`` has one label per line; class c is line c (0-based), so
  for COCO's 1-based ids put a placeholder (``???``) on the first line. Without a label map the
  label is the class number as text.

For example, with a COCO model of the TF2 Detection Zoo (say ``ssd_mobilenet_v2_320x320_coco17``,
downloaded and unpacked by hand: its ``saved_model`` folder takes uint8 images of any size and
returns ``detection_*`` outputs with COCO's 1-based class ids) and a label file whose line 0 is
``???`` and line 3 is ``car``::

    object_detection.py --base_image_path photos --detector keras:ssd_mobilenet/saved_model \\
        --label_map coco_labels.txt --labels car --min_score 0.4 < records.jsonl

keeps only ``car`` boxes, and each record's ``box`` becomes its best car (the whole image, with a
``detection_note``, where no car is found). For a model with another output layout, wrap it in
a ``python:`` function that returns the detection dicts, or register a factory with
`register_detector` (a new built-in detector is one module plus one line in `DETECTORS`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.detect.boxes import Detection, DetectorFn, clip_detection_box
from simfusion.detect.coco import auto_detector, coco_detector
from simfusion.detect.haar import haar_detector
from simfusion.detect.objectness import detect_objectness, detect_saliency
from simfusion.detect.plugins import keras_detector, python_detector

DEFAULT_DETECTOR = "objectness"


def detect_full(images: Sequence[np.ndarray]) -> list[list[Detection]]:
    """The whole image, score 1, no label."""
    return [
        [{"box": [0, 0, int(im.shape[1]), int(im.shape[0])], "score": 1.0, "label": None}] for im in images
    ]


def _objectness_detector(argument: str | None) -> DetectorFn:
    if argument is None:
        return detect_objectness
    if argument == "split":
        return functools.partial(detect_objectness, split_gain=1.5)
    raise ValueError(f"objectness takes no argument or `split`, not {argument!r}")


# name (or prefix before ":") -> factory(argument after ":", label_map) -> detector
DETECTORS: dict[str, Callable[[str | None, Sequence[str] | None], DetectorFn]] = {
    "objectness": lambda arg, labels: _objectness_detector(arg),
    "saliency": lambda arg, labels: detect_saliency,
    "full": lambda arg, labels: detect_full,
    "haar": lambda arg, labels: haar_detector(arg),
    "keras": lambda arg, labels: keras_detector(arg or "", label_map=labels),
    "python": lambda arg, labels: python_detector(arg or ""),
    "coco": lambda arg, labels: coco_detector(arg),
    "auto": lambda arg, labels: auto_detector(arg),
}


def register_detector(name: str, factory: Callable[[str | None, Sequence[str] | None], DetectorFn]) -> None:
    """Make `--detector name[:argument]` build a detector with `factory(argument, label_map)`."""
    DETECTORS[name] = factory


def _parse_spec(spec: str) -> tuple[str, str]:
    """(name, argument) of a detector spec; ValueError for an unknown name or a missing argument."""
    name, _, argument = spec.partition(":")
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {spec!r}: use one of {', '.join(sorted(DETECTORS))}")
    if name in ("keras", "python") and not argument:
        raise ValueError(
            f"detector {name} needs an argument: {name}:PATH" + (":FUNCTION" if name == "python" else "")
        )
    return name, argument


def check_detector_spec(spec: str) -> None:
    """Raise ValueError for a spec `make_detector` would refuse, without building it (no model is
    loaded, no user module imported): an unknown name, a missing argument or model file, an
    argument objectness does not take. What only loading can tell is left to `make_detector`."""
    name, argument = _parse_spec(spec)
    path = argument.rpartition(":")[0] if name == "python" else argument
    if name == "keras" or (name == "python" and path.endswith(".py")):
        if not os.path.exists(path):
            raise ValueError(f"no detector file at {path}")
    if name == "objectness":
        _objectness_detector(argument or None)


def make_detector(spec: str = DEFAULT_DETECTOR, *, label_map: Sequence[str] | None = None) -> DetectorFn:
    """Build a detector from its spec (`objectness`, `full`, `haar:face`, `keras:model.tflite`, ...).

    The detector it returns clips every box to its image and names itself in `detector`.
    """
    name, argument = _parse_spec(spec)
    inner = DETECTORS[name](argument or None, label_map)

    def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results = inner(images)
        out = []
        for image, found in zip(images, results, strict=True):
            height, width = image.shape[:2]
            kept = []
            for d in found:
                box = clip_detection_box(d["box"], width, height)
                if box is not None:
                    kept.append(
                        {"box": box, "score": float(d["score"]), "label": d.get("label"), "detector": spec}
                    )
            out.append(kept)
        return out

    return detect


NO_DETECTOR = "none"


def catalog_detector(records: Iterable[Mapping[str, Any]]) -> str | None:
    """The detector the catalog's records name in their `detections`; None (the detection module's
    default) when they have a `box` but name none; "none" when they have no box at all (the
    catalog's thumbnails were made of whole images, so the queries' must be too)."""
    boxed = False
    for record in records:
        for found in record.get("detections") or ():
            if isinstance(found, Mapping) and found.get("detector"):
                return str(found["detector"])
        boxed = boxed or "box" in record
    return None if boxed else NO_DETECTOR
