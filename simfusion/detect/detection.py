"""Object detection stage core: find the object a shopper means, so later stages look at it.

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

Plugging in a detector (e.g. a COCO detector, to get ``car`` boxes)
-------------------------------------------------------------------
No multi-class detector ships with this project (none can be installed offline), but any
TF Object Detection API style model works. The model contract for ``keras:`` models:

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
`register_detector`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.io.images import load_image, save_image, to_channels
from simfusion.io.records import output_relpath, record_path
from simfusion.io.stage import map_records
from simfusion.models.hed import edge_maps_unframed

log = logging.getLogger(__name__)

STAGE = "object_detection"
DEFAULT_DETECTOR = "objectness"
OBJECTNESS_SIZE = 256  # long side of the copy HED and the objectness map work on
MIN_WORK_SIDE = 32  # HED pools 4 times; smaller copies are stretched up to this

Detection = dict[str, Any]
DetectorFn = Callable[[Sequence[np.ndarray]], list[list[Detection]]]

# Our labels for OpenCV's bundled Haar cascades (cv2.data.haarcascades).
HAAR_CASCADES = {
    "face": "haarcascade_frontalface_default.xml",
    "cat_face": "haarcascade_frontalcatface.xml",
    "person": "haarcascade_fullbody.xml",
    "licence_plate": "haarcascade_russian_plate_number.xml",
}


# ---------------------------------------------------------------------------- geometry


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


def main_box(detections: Sequence[Detection], width: int, height: int) -> list[int]:
    """The main object's box: the best-scoring detection (ties: the larger); the whole image if none."""
    if not detections:
        return [0, 0, int(width), int(height)]
    best = max(detections, key=lambda d: (float(d["score"]), box_area(d["box"])))
    return list(best["box"])


# ---------------------------------------------------------------------------- objectness


def working_copy(image: np.ndarray, *, size: int = OBJECTNESS_SIZE) -> np.ndarray:
    """`image` shrunk so its long side is `size` (never enlarged, except sides below MIN_WORK_SIDE)."""
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, size / max(height, width))
    new_h = max(MIN_WORK_SIDE, round(height * scale))
    new_w = max(MIN_WORK_SIDE, round(width * scale))
    if (new_h, new_w) == (height, width):
        return image
    shrinking = new_h <= height and new_w <= width
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def border_mask(height: int, width: int, *, frac: float = 0.04) -> np.ndarray:
    """True on a frame `frac` of the short side wide (at least one pixel)."""
    band = max(1, round(frac * min(height, width)))
    mask = np.zeros((height, width), bool)
    mask[:band] = mask[-band:] = True
    mask[:, :band] = mask[:, -band:] = True
    return mask


def _kmeans(points: np.ndarray, k: int, *, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (centres start spread along the main axis): centres and labels."""
    points = points.astype(np.float32)
    k = max(1, min(k, len(points)))
    centred = points - points.mean(axis=0)
    sample = centred[:: max(1, len(points) // 2000)]
    axis = np.linalg.svd(sample, full_matrices=False)[2][0] if len(sample) > 1 else np.ones(points.shape[1])
    order = np.argsort(centred @ axis)
    centres = points[order[np.linspace(0, len(points) - 1, k).astype(int)]].copy()
    for _ in range(iterations):
        labels = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    labels = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return centres, labels


def border_contrast(image: np.ndarray, *, clusters: int = 8, cover: float = 0.8) -> np.ndarray:
    """Lab colour distance of each pixel to the image border's main colours, float32 (H, W).

    The border's colours are clustered; only the biggest clusters that together cover `cover` of
    the border count as background, so an object that touches the border (a product photo that
    fills the frame) does not make its own colours background.
    """
    import cv2

    height, width = image.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (0, 0), 1.0), cv2.COLOR_RGB2LAB).astype(np.float32)
    border = lab[border_mask(height, width)]
    centres, labels = _kmeans(border, clusters)
    share = np.bincount(labels, minlength=len(centres)) / len(border)
    order = np.argsort(-share)
    keep = order[: int(np.searchsorted(np.cumsum(share[order]), cover - 1e-9)) + 1]
    pixels = lab.reshape(-1, 3)
    distance = np.full(len(pixels), np.inf, np.float32)
    for centre in centres[keep]:
        np.minimum(distance, np.sqrt(((pixels - centre) ** 2).sum(-1)), out=distance)
    return distance.reshape(height, width)


def edge_excess(edges: np.ndarray, *, sigma: float = 0.015) -> np.ndarray:
    """Local HED edge density above what the border shows (its 95th percentile), float32 (H, W)."""
    import cv2

    height, width = edges.shape
    density = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), sigma * max(height, width))
    return np.maximum(0.0, density - np.percentile(density[border_mask(height, width)], 95))


def objectness_map(
    image: np.ndarray,
    edges: np.ndarray,
    *,
    contrast_floor: float = 20.0,
    edge_weight: float = 0.6,
    edge_gate: float = 0.03,
    smooth: float = 0.015,
) -> np.ndarray:
    """Objectness of each pixel from border colour contrast and HED edges, smoothed, float32 (H, W).

    Contrast is in units of max(its 99.5th percentile, `contrast_floor` Lab units), so a plain
    image with nothing on it stays near 0. Edges count only where the border itself has few
    (a studio backdrop: weight ~`edge_weight`); on textures and busy scenes they mostly mark
    background, so their weight falls as exp(-(mean border edge / `edge_gate`)^2).
    """
    import cv2

    height, width = edges.shape
    contrast = border_contrast(image)
    raw = contrast / max(float(np.percentile(contrast, 99.5)), contrast_floor)
    gate = float(np.exp(-((edges[border_mask(height, width)].mean() / edge_gate) ** 2)))
    if gate > 1e-3:
        raw = raw + gate * edge_weight * edge_excess(edges) / 0.2
    return cv2.GaussianBlur(raw.astype(np.float32), (0, 0), smooth * max(height, width))


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = np.percentile(values, 1), np.percentile(values, 99.5)
    return np.clip((values - low) / (high - low + 1e-6), 0, 1)


def select_object(
    objectness: np.ndarray, *, close: float = 0.05, keep_ratio: float = 0.3, border_sigma: float = 1.0
) -> tuple[np.ndarray, float]:
    """The main object's pixels in an objectness map: (mask bool (H, W), Otsu level in [0, 255]).

    Otsu threshold, a closing, then the components with the most objectness mass; a component
    that runs along the image border (the boundary connectivity of Zhu et al. 2014) counts less.
    """
    import cv2

    height, width = objectness.shape
    levels = (_stretch(objectness) * 255).astype(np.uint8)
    otsu, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (levels > otsu).astype(np.uint8)
    size = max(3, int(close * max(height, width)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if count <= 1:
        return np.ones((height, width), bool), float(otsu)
    mass = np.bincount(labels.ravel(), weights=levels.ravel().astype(np.float64), minlength=count)
    band = max(1, round(0.02 * min(height, width)))
    on_border = np.bincount(labels[border_mask(height, width, frac=0.02)], minlength=count)
    connectivity = on_border / band / np.sqrt(np.maximum(stats[:, 4], 1))
    weight = mass * np.exp(-(connectivity**2) / (2 * border_sigma**2))
    weight[0] = 0
    keep = np.nonzero(weight >= keep_ratio * weight.max())[0]
    return np.isin(labels, keep), float(otsu)


def refine_box(
    image: np.ndarray,
    objectness: np.ndarray,
    seed: np.ndarray,
    otsu: float,
    *,
    expand: float = 0.2,
    context: float = 0.5,
) -> list[int]:
    """Box around GrabCut's foreground, started from the seed mask inside its box grown by `expand`.

    GrabCut runs on a crop `context` times the box's size around it (the background it learns
    from is the part of that crop outside the grown box), which keeps it fast on small objects.
    """
    import cv2

    height, width = seed.shape
    ys, xs = np.nonzero(seed)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def grow(share: float) -> tuple[int, int, int, int]:
        dx, dy = (x1 - x0) * share, (y1 - y0) * share
        return int(max(0, x0 - dx)), int(max(0, y0 - dy)), int(min(width, x1 + dx)), int(min(height, y1 + dy))

    left, top, right, bottom = grow(expand)
    cl, ct, cr, cb = grow(expand + context)
    levels = _stretch(objectness)[ct:cb, cl:cr] * 255
    inner = seed[ct:cb, cl:cr]
    mask = np.full(levels.shape, cv2.GC_BGD, np.uint8)
    inside = np.zeros(levels.shape, bool)
    inside[top - ct : bottom - ct, left - cl : right - cl] = True
    mask[inside] = cv2.GC_PR_BGD
    mask[inside & (levels > otsu * 0.5)] = cv2.GC_PR_FGD
    mask[inner & (levels > otsu)] = cv2.GC_PR_FGD
    # GrabCut needs both colour models; a seed that fills the image has no background to learn
    if (mask == cv2.GC_PR_FGD).sum() < 4 or (mask == cv2.GC_BGD).sum() < 16:
        return [x0, y0, x1, y1]
    background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
    crop = np.ascontiguousarray(image[ct:cb, cl:cr])
    cv2.grabCut(crop, mask, None, background, foreground, 3, cv2.GC_INIT_WITH_MASK)
    found = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(found)
    if count <= 1:
        return [x0, y0, x1, y1]
    overlap = np.bincount(labels[inner], minlength=count)
    overlap[0] = 0
    keep = np.nonzero((overlap > 0) & (stats[:, 4] >= 0.02 * stats[1:, 4].max()))[0]
    if len(keep) == 0:
        return [x0, y0, x1, y1]
    ys, xs = np.nonzero(np.isin(labels, keep))
    return [int(xs.min()) + cl, int(ys.min()) + ct, int(xs.max()) + 1 + cl, int(ys.max()) + 1 + ct]


def box_score(objectness: np.ndarray, box: Sequence[int], *, ring: float = 0.25) -> float:
    """Confidence in [0, 1]: how much the box stands out from a ring around it, times its strength.

    `objectness` is in contrast units (1 = a clear object); the relative centre-surround contrast
    says the box is distinct, the mean inside says there is something there at all.
    """
    height, width = objectness.shape
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    outer = objectness[
        max(0, int(y0 - ring * bh)) : min(height, int(y1 + ring * bh)),
        max(0, int(x0 - ring * bw)) : min(width, int(x1 + ring * bw)),
    ]
    inside_sum = float(objectness[y0:y1, x0:x1].sum())
    inside = inside_sum / max(1, bw * bh)
    ring_area = outer.size - bw * bh
    around = (float(outer.sum()) - inside_sum) / ring_area if ring_area > 0 else 0.0
    distinct = (inside - around) / inside if inside > 1e-6 else 0.0
    return float(np.clip(distinct, 0, 1) * np.clip(inside / 0.5, 0, 1))


def object_candidates(
    objectness: np.ndarray,
    otsu: float,
    *,
    levels: Sequence[float] = (1.25, 1.5, 2.0, 2.5),
    min_area: float = 0.002,
) -> list[np.ndarray]:
    """Masks of the components above `levels` times the Otsu level: the cores of the map's peaks,
    which split an object from a neighbour that the Otsu level merged it with."""
    import cv2

    stretched = (_stretch(objectness) * 255).astype(np.uint8)
    out = []
    for level in levels:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (stretched > min(250, otsu * level)).astype(np.uint8)
        )
        out.extend(labels == j for j in range(1, count) if stats[j, 4] >= min_area * objectness.size)
    return out


def mask_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def locate_object(
    image: np.ndarray, edges: np.ndarray, *, split_gain: float | None = None, split_area: float = 0.06
) -> tuple[list[int], float]:
    """The main object's box [x0, y0, x1, y1] in `image`'s pixels and its score, from HED `edges`.

    The Otsu selection refined by GrabCut. With `split_gain`, a peak core of the map
    (`object_candidates`, at least `split_area` of that box) that scores `split_gain` times
    better replaces it: this splits an object from a busy scene it was merged with, but on real
    photos it also picks out distinct parts (an eye, a petrol tank), so it is off by default.
    """
    smooth = objectness_map(image, edges)
    seed, otsu = select_object(smooth)
    box = refine_box(image, smooth, seed, otsu)
    if split_gain is None:
        return box, box_score(smooth, box)
    best, best_mask = box_score(smooth, box) * split_gain, None
    for mask in object_candidates(smooth, otsu):
        core = mask_box(mask)
        if box_area(core) < split_area * box_area(box):
            continue
        score = box_score(smooth, core)
        if score > best:
            best, best_mask = score, mask
    if best_mask is not None:
        box = refine_box(image, smooth, best_mask, otsu)
    return box, box_score(smooth, box)


def detect_objectness(
    images: Sequence[np.ndarray],
    *,
    size: int = OBJECTNESS_SIZE,
    batch_size: int = 16,
    split_gain: float | None = None,
) -> list[list[Detection]]:
    """The `objectness` detector: one main-object box per image, label "object"."""

    smalls = [working_copy(_rgb(image), size=size) for image in images]
    out = []
    edges_all = edge_maps_unframed(smalls, batch_size=batch_size)
    for image, small, edges in zip(images, smalls, edges_all, strict=True):
        box, score = locate_object(small, edges, split_gain=split_gain)
        out.append([{"box": _to_original(box, small.shape, image.shape), "score": score, "label": "object"}])
    return out


def detect_saliency(images: Sequence[np.ndarray], *, size: int = OBJECTNESS_SIZE) -> list[list[Detection]]:
    """The `saliency` baseline: spectral-residual saliency, Otsu, the component with most mass."""
    import cv2

    out = []
    for image in images:
        small = working_copy(_rgb(image), size=size)
        ok, saliency = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(small)
        saliency = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), 0.02 * max(small.shape[:2]))
        levels = (_stretch(saliency) * 255).astype(np.uint8)
        otsu, mask = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
        if count > 1:
            mass = np.bincount(labels.ravel(), weights=levels.ravel().astype(np.float64), minlength=count)
            mass[0] = 0
            x, y, w, h = stats[int(mass.argmax()), :4]
            box = [int(x), int(y), int(x + w), int(y + h)]
        else:
            box = [0, 0, small.shape[1], small.shape[0]]
        score = box_score(saliency / max(float(saliency.max()), 1e-6), box)
        out.append([{"box": _to_original(box, small.shape, image.shape), "score": score, "label": "object"}])
    return out


def _rgb(image: np.ndarray) -> np.ndarray:

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"detectors take uint8 images, not {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(to_channels(image, 3))


def _to_original(box: Sequence[float], small_shape: tuple[int, ...], shape: tuple[int, ...]) -> list[int]:
    """A box on the working copy, in pixels of the original image."""
    sy, sx = shape[0] / small_shape[0], shape[1] / small_shape[1]
    scaled = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
    return clip_detection_box(scaled, shape[1], shape[0]) or [0, 0, int(shape[1]), int(shape[0])]


# ---------------------------------------------------------------------------- other detectors


def detect_full(images: Sequence[np.ndarray]) -> list[list[Detection]]:
    """The whole image, score 1, no label."""
    return [
        [{"box": [0, 0, int(im.shape[1]), int(im.shape[0])], "score": 1.0, "label": None}] for im in images
    ]


@functools.cache
def _cascade(path: str):
    import cv2

    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ValueError(f"cannot load Haar cascade {path}")
    return cascade


def haar_cascades(names: str | None = None) -> dict[str, str]:
    """Label -> cascade file for `haar:NAMES` (comma-separated); all of HAAR_CASCADES for None."""
    import cv2

    if not names:
        return {label: os.path.join(cv2.data.haarcascades, file) for label, file in HAAR_CASCADES.items()}
    out = {}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name in HAAR_CASCADES:
            out[name] = os.path.join(cv2.data.haarcascades, HAAR_CASCADES[name])
            continue
        if os.path.isfile(name):
            out[os.path.splitext(os.path.basename(name))[0]] = name
            continue
        stem = name.removeprefix("haarcascade_").removesuffix(".xml")
        path = os.path.join(cv2.data.haarcascades, f"haarcascade_{stem}.xml")
        if not os.path.isfile(path):
            known = sorted(HAAR_CASCADES) + sorted(
                f[len("haarcascade_") : -4] for f in os.listdir(cv2.data.haarcascades) if f.endswith(".xml")
            )
            raise ValueError(
                f"unknown Haar cascade {name!r}: use one of {', '.join(known)} or a path to a .xml"
            )
        label = {
            "frontalcatface": "cat_face",
            "fullbody": "person",
            "license_plate_rus_16stages": "licence_plate",
            "russian_plate_number": "licence_plate",
        }.get(stem)
        out[label or ("face" if stem.startswith("frontalface") else stem)] = path
    return out


def haar_detector(names: str | None = None, *, min_size: float = 0.05) -> DetectorFn:
    """Detector over OpenCV Haar cascades; objects smaller than `min_size` of the short side are ignored."""
    cascades = haar_cascades(names)

    def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
        import cv2

        out = []
        for image in images:
            gray = cv2.equalizeHist(cv2.cvtColor(_rgb(image), cv2.COLOR_RGB2GRAY))
            # cascades are slow on big images: search a copy whose long side is at most 800
            scale = min(1.0, 800 / max(gray.shape))
            if scale < 1:
                gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            side = max(12, int(min_size * min(gray.shape)))
            found = []
            for label, path in cascades.items():
                boxes, _, weights = _cascade(path).detectMultiScale3(
                    gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True
                )
                for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=True):
                    box = clip_detection_box(
                        [x / scale, y / scale, (x + w) / scale, (y + h) / scale],
                        image.shape[1],
                        image.shape[0],
                    )
                    if box is not None:
                        # the cascade's level weight is unbounded; squash it into [0, 1]
                        score = float(1 / (1 + np.exp(-float(weight))))
                        found.append({"box": box, "score": score, "label": label})
            out.append(found)
        return out

    return detect


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
                image = _rgb(images[i])
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
        results = list(fn([_rgb(image) for image in images]))
        if len(results) != len(images):
            raise ValueError(f"python:{target} returned {len(results)} results for {len(images)} images")
        return [
            [{"box": d["box"], "score": float(d.get("score", 1.0)), "label": d.get("label")} for d in found]
            for found in results
        ]

    return detect


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
}


def register_detector(name: str, factory: Callable[[str | None, Sequence[str] | None], DetectorFn]) -> None:
    """Make `--detector name[:argument]` build a detector with `factory(argument, label_map)`."""
    DETECTORS[name] = factory


def make_detector(spec: str = DEFAULT_DETECTOR, *, label_map: Sequence[str] | None = None) -> DetectorFn:
    """Build a detector from its spec (`objectness`, `full`, `haar:face`, `keras:model.tflite`, ...).

    The detector it returns clips every box to its image and names itself in `detector`.
    """
    name, _, argument = spec.partition(":")
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {spec!r}: use one of {', '.join(sorted(DETECTORS))}")
    if name in ("keras", "python") and not argument:
        raise ValueError(
            f"detector {name} needs an argument: {name}:PATH" + (":FUNCTION" if name == "python" else "")
        )
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


# ---------------------------------------------------------------------------- drawing and records


def draw_detections(
    image: np.ndarray, detections: Sequence[Detection], *, main: Sequence[int] | None = None
) -> np.ndarray:
    """A copy of `image` with each box drawn and labelled; the `main` box in green, others in orange."""
    import cv2

    canvas = np.ascontiguousarray(_rgb(image).copy())
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
