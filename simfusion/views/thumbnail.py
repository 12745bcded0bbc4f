"""Thumbnail stage core: crop the main object's box with a margin, pad to the aspect, resize."""

from __future__ import annotations

import logging
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

    Raises ValueError for a box that is not four numbers or has no area inside the image.
    """
    if len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1], not {list(box)!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box {list(box)!r} has no area")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, not {margin}")
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    height, width = shape[:2]
    left, top = max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy)))
    right, bottom = min(width, int(np.ceil(x1 + dx))), min(height, int(np.ceil(y1 + dy)))
    if right <= left or bottom <= top:
        raise ValueError(f"box {list(box)!r} lies outside the {width}x{height} image")
    return left, top, right, bottom


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
    colour = fill_value(image, fill)
    out = np.empty((target_h, target_w) + image.shape[2:], dtype=image.dtype)
    out[...] = colour if image.ndim == 3 else colour[0]
    top, left = (target_h - height) // 2, (target_w - width) // 2
    out[top : top + height, left : left + width] = image
    return out


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
    image = pad_to_aspect(to_channels(image, channels), width / height, fill=fill)
    shrinking = image.shape[0] > height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)


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
