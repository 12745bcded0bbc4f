"""Plug-in detectors: a user's own Keras, TFLite or SavedModel model (`keras:PATH`) or Python
function (`python:module:function`); the model contract is in `simfusion.detect.registry`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from simfusion.detect.boxes import Detection, DetectorFn, as_rgb, clip_detection_box


def read_label_map(path: str | os.PathLike | None) -> list[str] | None:
    """Labels, one per line (line c is class c); None for no path."""
    if path is None:
        return None
    with open(path, encoding="utf-8") as stream:
        return [line.strip() for line in stream.read().splitlines()]


def keras_detector(path: str, *, label_map: Sequence[str] | None = None) -> DetectorFn:
    """Detector over a user's Keras or TFLite model with the contract in this module's docstring."""
    if not os.path.exists(path):
        raise ValueError(f"no detector model at {path}")
    if path.endswith(".tflite"):
        run, size = _tflite_runner(path)
    elif os.path.isdir(path):
        run, size = _savedmodel_runner(path)
    else:
        run, size = _keras_runner(path)

    def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
        import cv2

        out = []
        if size is None:
            groups = [[i] for i in range(len(images))]
        else:
            groups = [list(range(len(images)))] if images else []
        for group in groups:
            batch = []
            for i in group:
                image = as_rgb(images[i])
                if size is not None:
                    image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                batch.append(image)
            boxes, scores, classes = run(np.stack(batch))
            for i, b, s, c in zip(group, boxes, scores, classes, strict=True):
                out.append(_model_detections(b, s, c, images[i].shape, label_map))
        return out

    return detect


def _model_detections(boxes, scores, classes, shape, label_map) -> list[Detection]:
    height, width = shape[:2]
    found = []
    for (y0, x0, y1, x1), score, cls in zip(
        np.asarray(boxes, np.float64), np.ravel(scores), np.ravel(classes), strict=True
    ):
        box = clip_detection_box([x0 * width, y0 * height, x1 * width, y1 * height], width, height)
        if box is None:
            continue
        number = int(round(float(cls)))
        label = label_map[number] if label_map is not None and 0 <= number < len(label_map) else str(number)
        found.append({"box": box, "score": float(np.clip(score, 0, 1)), "label": label})
    return found


def _split_outputs(outputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(outputs, dict):
        # TF Object Detection API models (the TF2 Detection Zoo) name them detection_*
        found = {k: outputs.get(k, outputs.get(f"detection_{k}")) for k in ("boxes", "scores", "classes")}
        missing = [k for k, v in found.items() if v is None]
        if missing:
            raise ValueError(f"the detector model's outputs lack {', '.join(missing)}")
        return tuple(np.asarray(found[k]) for k in ("boxes", "scores", "classes"))  # type: ignore[return-value]
    if isinstance(outputs, (list, tuple)) and len(outputs) >= 3:
        return tuple(np.asarray(o) for o in outputs[:3])  # type: ignore[return-value]
    raise ValueError(
        "a detector model must return boxes, scores and classes (a dict or a list in that order)"
    )


def _keras_runner(path: str):
    import keras

    model = keras.models.load_model(path, compile=False)
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else (None, None, None, 3)
    size = (int(shape[1]), int(shape[2])) if shape[1] and shape[2] else None

    def run(batch: np.ndarray):
        boxes, scores, classes = _split_outputs(model(batch.astype(np.float32) / 255.0, training=False))
        return (
            boxes.reshape(len(batch), -1, 4),
            scores.reshape(len(batch), -1),
            classes.reshape(len(batch), -1),
        )

    return run, size


def _savedmodel_runner(path: str):
    """A TensorFlow SavedModel folder, called through its serving signature one image at a time."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"the SavedModel at {path} has no serving_default signature")
    serve = loaded.signatures["serving_default"]
    (name, spec), *rest = serve.structured_input_signature[1].items()
    if rest:
        raise ValueError(
            f"the SavedModel at {path} takes {1 + len(rest)} inputs; a detector takes one image batch"
        )

    def run(batch: np.ndarray):
        results = []
        for image in batch:
            data = (
                image[None]
                if spec.dtype == tf.uint8
                else (image[None] / 255.0).astype(spec.dtype.as_numpy_dtype)
            )
            results.append(
                _split_outputs({k: v.numpy() for k, v in serve(**{name: tf.constant(data)}).items()})
            )
        return (
            np.stack([r[0].reshape(-1, 4) for r in results]),
            np.stack([r[1].ravel() for r in results]),
            np.stack([r[2].ravel() for r in results]),
        )

    return run, None


def _tflite_runner(path: str):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    size = (int(source["shape"][1]), int(source["shape"][2]))
    outputs = interpreter.get_output_details()

    def pick(name: str, fallback: int):
        for detail in outputs:
            if name in detail["name"].lower():
                return detail["index"]
        return outputs[fallback]["index"]

    # TFLite's detection post-processing op orders its outputs boxes, classes, scores, count
    order = [pick("box", 0), pick("score", 2), pick("class", 1)]

    def run(batch: np.ndarray):
        results = []
        for image in batch:  # TFLite detection models take one image at a time
            data = (
                image[None] if source["dtype"] == np.uint8 else (image[None] / 255.0).astype(source["dtype"])
            )
            interpreter.set_tensor(source["index"], data)
            interpreter.invoke()
            results.append([interpreter.get_tensor(index)[0] for index in order])
        return (
            np.stack([r[0].reshape(-1, 4) for r in results]),
            np.stack([r[1].ravel() for r in results]),
            np.stack([r[2].ravel() for r in results]),
        )

    return run, size


def python_detector(target: str) -> DetectorFn:
    """Detector from `module:function` or `/path/file.py:function`."""
    import importlib
    import importlib.util

    module_name, _, function = target.rpartition(":")
    if not module_name or not function:
        raise ValueError(f"a python detector is python:module:function, not python:{target}")
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise ValueError(f"no such file for the python detector: {module_name}")
        spec = importlib.util.spec_from_file_location(
            os.path.splitext(os.path.basename(module_name))[0], module_name
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import {module_name} for the python detector: {exc}") from exc
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ValueError(f"{module_name} has no function {function!r}")

    def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results = list(fn([as_rgb(image) for image in images]))
        if len(results) != len(images):
            raise ValueError(f"python:{target} returned {len(results)} results for {len(images)} images")
        return [
            [{"box": d["box"], "score": float(d.get("score", 1.0)), "label": d.get("label")} for d in found]
            for found in results
        ]

    return detect
