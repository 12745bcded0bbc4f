"""Thumbnail stage core: crop the main object's box with a margin, pad to the aspect, resize."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from simfusion.io.images import load_image, save_image, to_channels
from simfusion.io.records import RecordError, output_relpath, record_path

log = logging.getLogger(__name__)

STAGE = "thumbnail"
FILLS = ("border", "white", "black", "gray")


def clip_box(
    box: Sequence[float], shape: tuple[int, ...], *, margin: float = 0.0
) -> tuple[int, int, int, int]:
    """Grow `box` [x0, y0, x1, y1] by `margin` of its size on every side and clip it to the image.

    Raises ValueError for a box that is not four finite numbers or has no area inside the image.
    """
    x0, y0, x1, y1 = check_box(box)
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, not {margin}")
    # finite corners can still be too far apart for a float; inf margins clip to the image below
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    height, width = shape[:2]
    left, right = _clip(x0 - dx, width, math.floor), _clip(x1 + dx, width, math.ceil)
    top, bottom = _clip(y0 - dy, height, math.floor), _clip(y1 + dy, height, math.ceil)
    if right <= left or bottom <= top:
        raise ValueError(f"box {list(box)!r} lies outside the {width}x{height} image")
    return left, top, right, bottom


def check_box(box: Any) -> tuple[float, float, float, float]:
    """A box as four finite floats x0 < x1, y0 < y1; ValueError for anything else a record may hold."""
    numbers = isinstance(box, list | tuple) and all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)
        for v in box
    )
    if not numbers or len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1] of four numbers, not {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, x1 - x0, y1 - y0)):
        raise ValueError(f"box {list(box)!r} is not finite")
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box {list(box)!r} has no area")
    return x0, y0, x1, y1


def _clip(value: float, size: int, rounding) -> int:
    return int(rounding(min(max(value, 0.0), float(size))))


def fill_value(image: np.ndarray, fill: str) -> np.ndarray:
    """The padding colour: the median of the image border ('border'), or a fixed neutral colour."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    if fill == "border":
        edge = np.concatenate(
            [
                image[0].reshape(-1, channels),
                image[-1].reshape(-1, channels),
                image[:, 0].reshape(-1, channels),
                image[:, -1].reshape(-1, channels),
            ]
        )
        return np.median(edge, axis=0).astype(np.uint8)
    levels = {"white": 255, "black": 0, "gray": 128}
    if fill not in levels:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    return np.full(channels, levels[fill], dtype=np.uint8)


def pad_to_aspect(image: np.ndarray, aspect: float, *, fill: str = "border") -> np.ndarray:
    """Pad `image` evenly on two sides so that width / height == `aspect`."""
    height, width = image.shape[:2]
    target_w = max(width, int(round(height * aspect)))
    target_h = max(height, int(round(width / aspect)))
    if (target_h, target_w) == (height, width):
        return image
    return _pad_to(image, target_h, target_w, fill_value(image, fill))


def make_thumbnail(
    image: np.ndarray,
    *,
    height: int,
    width: int,
    channels: int = 3,
    box: Sequence[float] | None = None,
    margin: float = 0.1,
    fill: str = "border",
) -> np.ndarray:
    """Crop `box` (the whole image when None) with `margin`, pad to height:width, resize.

    Returns uint8 (height, width, 3) for channels=3 or (height, width) for channels=1.
    """
    import cv2

    if height <= 0 or width <= 0:
        raise ValueError(f"thumbnail size must be positive, not {height}x{width}")
    if box is not None:
        left, top, right, bottom = clip_box(box, image.shape, margin=margin)
        image = image[top:bottom, left:right]
    image = to_channels(image, channels)
    colour = fill_value(image, fill)
    # shrink (or grow) to fit first, then pad: a long strip never becomes a huge padded canvas
    scale = min(height / image.shape[0], width / image.shape[1])
    size = (
        min(width, max(1, round(image.shape[1] * scale))),
        min(height, max(1, round(image.shape[0] * scale))),
    )
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    image = cv2.resize(np.ascontiguousarray(image), size, interpolation=interpolation)
    return _pad_to(image, height, width, colour)


def _pad_to(image: np.ndarray, height: int, width: int, colour: np.ndarray) -> np.ndarray:
    """`image` centred on a (height, width) canvas of `colour`."""
    if image.shape[:2] == (height, width):
        return image
    out = np.empty((height, width) + image.shape[2:], dtype=image.dtype)
    out[...] = colour if image.ndim == 3 else colour[0]
    top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out


def thumbnail_record(
    record: dict[str, Any],
    *,
    base_path: str,
    output_path: str,
    height: int,
    width: int,
    channels: int = 3,
    margin: float = 0.1,
    fill: str = "border",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Make and save one record's thumbnail; adds `thumbnail` (the path written) and `thumbnail_size`."""
    rel = output_relpath(record)
    target = os.path.join(output_path, rel)
    if overwrite or not os.path.exists(target):
        image = load_image(os.path.join(base_path, record_path(record)), channels=3)
        try:
            thumb = make_thumbnail(
                image,
                height=height,
                width=width,
                channels=channels,
                box=record.get("box"),
                margin=margin,
                fill=fill,
            )
        except ValueError as exc:
            raise RecordError(exc) from exc
        save_image(target, thumb)
    record["thumbnail"] = target
    record["thumbnail_size"] = [height, width, channels]
    record["thumbnail_settings"] = {"margin": margin, "fill": fill}
    return record
