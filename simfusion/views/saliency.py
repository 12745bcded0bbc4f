"""Saliency stage core: a saliency map, an edge map and a saliency-weighted foreground per thumbnail.

Each view is what its name says (the prototype's "edge" flag ran saliency):
- `saliency`: OpenCV contrib static saliency (spectral residual or fine grained), float32 (H, W) in [0, 1];
- `edges`: HED edge probabilities (pretrained, batched), or Canny as a fast option, float32 (H, W) in [0, 1];
- `foreground`: the thumbnail with its background damped toward a fill colour by the smoothed saliency,
  uint8 with the input's channels.

A constant image has nothing salient and no edges: its maps are all zeros (never NaN).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from simfusion.io.images import load_image, save_image, to_channels
from simfusion.io.records import output_relpath, record_path
from simfusion.io.stage import map_records
from simfusion.models.hed import FRAME_MARGIN, edge_maps_unframed
from simfusion.views.thumbnail import FILLS, fill_value

log = logging.getLogger(__name__)

STAGE = "saliency"
VIEW_NAMES = ("saliency", "edges", "foreground")
METHODS = ("spectral_residual", "fine_grained")
EDGE_METHODS = ("hed", "canny")


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (load them with simfusion.io.images.load_image), not {array.dtype}"
        )
    if array.ndim == 3 and array.shape[2] in (1, 3):
        pass
    elif array.ndim != 2:
        raise ValueError(f"an image must be (H, W), (H, W, 1) or (H, W, 3), not {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image of shape {array.shape} has no pixels")
    return array


def _gray(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(to_channels(_check_image(image), 1))


def _is_constant(gray: np.ndarray) -> bool:
    return int(gray.max()) == int(gray.min())


def _normalise(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] float32; a flat (or non-finite) map becomes all zeros."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """A [0, 1] float map as an 8-bit image."""
    return np.clip(np.round(np.asarray(values, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def saliency_map(image: np.ndarray, *, method: str = "spectral_residual") -> np.ndarray:
    """Static saliency of a uint8 gray or RGB image: float32 (H, W) scaled to [0, 1].

    `method` is 'spectral_residual' (Hou & Zhang 2007, fast, works on a 64x64 copy) or
    'fine_grained' (Montabone & Soto 2010, center-surround at full resolution).
    """
    import cv2

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    gray = _gray(image)
    # OpenCV answers a flat image with rounding noise scaled to full range; there is nothing salient.
    if _is_constant(gray):
        return np.zeros(gray.shape, np.float32)
    if method == "spectral_residual":
        detector = cv2.saliency.StaticSaliencySpectralResidual_create()
    else:
        detector = cv2.saliency.StaticSaliencyFineGrained_create()
    ok, values = detector.computeSaliency(gray)
    if not ok or values is None:
        return np.zeros(gray.shape, np.float32)
    values = np.asarray(values, dtype=np.float32).reshape(gray.shape)
    return _normalise(values)


def edge_map_canny(image: np.ndarray, *, sigma: float = 1.0) -> np.ndarray:
    """Canny edges of a uint8 gray or RGB image as float32 (H, W) of 0 and 1.

    The thresholds follow the image: the high one is the 90th percentile of the gradient magnitude
    (at least 30, so flat noise is not traced), the low one 40% of it.
    """
    import cv2

    gray = _gray(image)
    if _is_constant(gray) or min(gray.shape) < 3:
        return np.zeros(gray.shape, np.float32)
    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    dx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    high = max(float(np.percentile(np.hypot(dx, dy), 90)), 30.0)
    edges = cv2.Canny(gray, 0.4 * high, high, L2gradient=True)
    return (edges > 0).astype(np.float32)


def edge_maps_hed(
    images: Sequence[np.ndarray], *, batch_size: int = 16, margin: int = FRAME_MARGIN
) -> list[np.ndarray]:
    """HED edge probabilities, float32 (H, W) in [0, 1], for uint8 images of any mix of sizes.

    Only images of exactly one size go through the network together, so no image is ever padded
    to a bigger batch member (one long strip would otherwise blow up the whole batch). Each gets a
    reflected `margin` of pixels that is cropped off again, so the image frame is not drawn as an
    edge (16 px costs about half again the compute at 128x128; 0 turns it off).
    """

    out: list[np.ndarray | None] = [None] * len(images)
    sizes: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        gray = _gray(image)
        if _is_constant(gray):
            out[i] = np.zeros(gray.shape, np.float32)
        else:
            sizes.setdefault(gray.shape, []).append(i)
    for members in sizes.values():
        maps = edge_maps_unframed([images[i] for i in members], margin=margin, batch_size=batch_size)
        for i, values in zip(members, maps, strict=True):
            out[i] = values
    return out  # type: ignore[return-value]


def foreground_weight(
    saliency: np.ndarray, *, smooth: float = 0.04, threshold: float | None = None
) -> np.ndarray:
    """How much of each pixel to keep, float32 (H, W) in [0, 1], from a saliency map.

    The map is blurred (sigma = `smooth` of the longer side) and scaled to its maximum; pixels at or
    above `threshold` (None: Otsu's threshold of the blurred map) mark the object. Saliency often
    lights only an object's outline or corners, so the convex hull of those pixels is kept whole,
    softened at its rim; elsewhere the weight ramps from 0 at threshold / 2 to 1 at the threshold.
    """
    import cv2

    values = np.nan_to_num(np.asarray(saliency, dtype=np.float32))
    if values.ndim != 2:
        raise ValueError(f"a saliency map is (H, W), not {values.shape}")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] or None (Otsu), not {threshold}")
    sigma = smooth * max(values.shape)
    if sigma > 0.3:
        values = cv2.GaussianBlur(values, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    top = float(values.max())
    if top <= 1e-12:
        return np.zeros(values.shape, np.float32)
    values = values / top
    if threshold is None:
        level, _ = cv2.threshold(to_uint8(values), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # a map with one level has no Otsu split; keep everything that is salient at all
        threshold = max(level / 255.0, 0.05)
    hull = np.zeros(values.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero((values >= threshold).astype(np.uint8))), 1)
    inside = hull.astype(np.float32)
    if sigma > 0.3:
        # twice the blurred mask: 1 up to the hull's rim, fading out over about a sigma beyond it
        inside = np.minimum(1.0, 2.0 * cv2.GaussianBlur(inside, (0, 0), sigma, borderType=cv2.BORDER_REFLECT))
    ramp = np.clip(values / (0.5 * threshold) - 1.0, 0.0, 1.0)
    return np.maximum(inside, ramp).astype(np.float32)


def foreground_image(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    fill: str = "white",
    smooth: float = 0.04,
    threshold: float | None = None,
) -> np.ndarray:
    """The image with its non-salient background damped toward `fill`, uint8 with the image's channels.

    `fill` is 'white', 'gray', 'black' or 'border' (the median colour of the image's border).
    Colour is kept; the object (see `foreground_weight`) is kept unchanged.
    """

    array = _check_image(image)
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    if np.shape(saliency) != array.shape[:2]:
        raise ValueError(f"saliency map {np.shape(saliency)} does not match the image {array.shape[:2]}")
    weight = foreground_weight(saliency, smooth=smooth, threshold=threshold)
    colour = fill_value(array, fill).astype(np.float32)
    if array.ndim == 3:
        weight = weight[:, :, None]
    else:
        colour = colour[0]
    blended = weight * array.astype(np.float32) + (1.0 - weight) * colour
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def check_views(views: Iterable[str]) -> tuple[str, ...]:
    """Validate view names, keeping VIEW_NAMES order; raises ValueError naming the choices."""
    wanted = set(views)
    unknown = wanted - set(VIEW_NAMES)
    if unknown:
        raise ValueError(f"unknown view(s) {', '.join(sorted(unknown))}; choose from {', '.join(VIEW_NAMES)}")
    if not wanted:
        raise ValueError(f"ask for at least one view of {', '.join(VIEW_NAMES)}")
    return tuple(view for view in VIEW_NAMES if view in wanted)


def compute_views(
    images: Sequence[np.ndarray],
    *,
    method: str = "spectral_residual",
    edges: str = "hed",
    views: Iterable[str] = VIEW_NAMES,
    fill: str = "white",
) -> list[dict[str, np.ndarray]]:
    """The requested views of each uint8 image, in order: {view: array} per image.

    `saliency` and `edges` are float32 (H, W) in [0, 1]; `foreground` is uint8 shaped like the image.
    HED runs once per group of same-sized images.
    """
    views = check_views(views)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if edges not in EDGE_METHODS:
        raise ValueError(f"edges must be one of {', '.join(EDGE_METHODS)}, not {edges!r}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    images = [_check_image(image) for image in images]
    out: list[dict[str, np.ndarray]] = [{} for _ in images]
    if "saliency" in views or "foreground" in views:
        for result, image in zip(out, images, strict=True):
            result["saliency"] = saliency_map(image, method=method)
    if "edges" in views:
        maps = edge_maps_hed(images) if edges == "hed" else [edge_map_canny(image) for image in images]
        for result, values in zip(out, maps, strict=True):
            result["edges"] = values
    if "foreground" in views:
        for result, image in zip(out, images, strict=True):
            result["foreground"] = foreground_image(image, result["saliency"], fill=fill)
    if "saliency" not in views:
        for result in out:
            result.pop("saliency", None)
    return out


def view_paths(record: dict[str, Any], *, output_path: str, views: Iterable[str]) -> dict[str, str]:
    """Where each view of a record goes: <output_path>/<view>/<output_relpath(record)>."""
    rel = output_relpath(record)
    return {view: os.path.join(output_path, view, rel) for view in views}


def thumbnail_source(record: dict[str, Any], base_path: str) -> str:
    """The image a record's views are made from, under `base_path` (the thumbnail stage's output folder).

    A record that went through thumbnail.py (it has `thumbnail`) is found under the name that stage
    gave it, `output_relpath(record)`; any other record is read at its own image path.
    """
    rel = output_relpath(record) if "thumbnail" in record else record_path(record)
    return os.path.join(base_path, rel)


def saliency_records(
    records: list[dict[str, Any]],
    *,
    base_path: str,
    output_path: str,
    views: Sequence[str] = VIEW_NAMES,
    method: str = "spectral_residual",
    edges: str = "hed",
    fill: str = "white",
    channels: int = 3,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Write the views of a batch of records; each gains a key per view (the path written).

    Views already on disk are kept unless `overwrite`. A record whose thumbnail cannot be read or
    whose views cannot be written gets an `error`; the others still come out.
    """

    views = check_views(views)
    todo: list[tuple[dict[str, Any], dict[str, str], np.ndarray]] = []

    def load(record: dict[str, Any]) -> None:
        targets = view_paths(record, output_path=output_path, views=views)
        missing = {view: path for view, path in targets.items() if overwrite or not os.path.exists(path)}
        if missing:
            image = load_image(thumbnail_source(record, base_path), channels=channels)
            todo.append((record, missing, image))
        else:
            record.update(targets)

    records = map_records(records, STAGE, load)
    if not todo:
        return _with_settings(records, method=method, edges=edges, fill=fill)
    needed = check_views({view for _, missing, _ in todo for view in missing})
    results = compute_views(
        [image for _, _, image in todo], method=method, edges=edges, views=needed, fill=fill
    )
    written = {
        id(record): (missing, result) for (record, missing, _), result in zip(todo, results, strict=True)
    }

    def save(record: dict[str, Any]) -> None:
        if id(record) not in written:
            return
        missing, result = written[id(record)]
        for view, path in missing.items():
            array = result[view]
            save_image(path, array if array.dtype == np.uint8 else to_uint8(array))
        record.update(view_paths(record, output_path=output_path, views=views))

    return _with_settings(map_records(records, STAGE, save), method=method, edges=edges, fill=fill)


def _with_settings(
    records: list[dict[str, Any]], *, method: str, edges: str, fill: str
) -> list[dict[str, Any]]:
    """Record what made the views (`view_settings`), so train.py can have queries made the same way."""
    for record in records:
        if "error" not in record:
            record["view_settings"] = {"saliency_method": method, "edges": edges, "foreground_fill": fill}
    return records
