"""The recommendations picture: each query beside its top-k catalog items, with scores and categories."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from simfusion.io.images import ImageError, load_image, save_image, to_channels
from simfusion.io.records import RecordError, field_text, output_relpath, record_id

log = logging.getLogger(__name__)

PAD = 8
GAP = 24  # extra space between the query and its results
LINES = 3
FONT_SIZE = 12
LINE_HEIGHT = 15
BORDER = 3
BACKGROUND = (255, 255, 255)
QUERY_COLOUR = (40, 90, 200)
MATCH_COLOUR = (40, 160, 60)
OTHER_COLOUR = (190, 190, 190)
MISSING_COLOUR = (230, 230, 230)


@dataclass
class Tile:
    """One picture of the montage: an image (None draws a placeholder) and up to LINES lines under it."""

    image: np.ndarray | None
    lines: list[str] = field(default_factory=list)
    colour: tuple[int, int, int] = OTHER_COLOUR


def montage_size(rows: int, columns: int, *, tile: int = 128) -> tuple[int, int]:
    """(width, height) in pixels of a montage of `rows` queries with up to `columns` results each."""
    cell_height = tile + LINES * LINE_HEIGHT + PAD
    width = PAD + (1 + columns) * (tile + PAD) + GAP
    height = PAD + rows * (cell_height + PAD)
    return width, height


@functools.cache
def _font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def fit_tile(image: np.ndarray, tile: int) -> Image.Image:
    """The image scaled to fit a tile x tile square (aspect kept), centred on white."""
    picture = Image.fromarray(to_channels(np.asarray(image, dtype=np.uint8), 3))
    scale = tile / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    picture = picture.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    square = Image.new("RGB", (tile, tile), BACKGROUND)
    square.paste(picture, ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return square


def _shorten(text: str, width: int, draw: ImageDraw.ImageDraw) -> str:
    font = _font()
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _paste(canvas: Image.Image, draw: ImageDraw.ImageDraw, item: Tile, x: int, y: int, tile: int) -> None:
    if item.image is None:
        draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=MISSING_COLOUR)
        draw.text((x + tile // 2, y + tile // 2), "no image", fill=(90, 90, 90), font=_font(), anchor="mm")
    else:
        canvas.paste(fit_tile(item.image, tile), (x, y))
    draw.rectangle(
        [x - BORDER, y - BORDER, x + tile + BORDER - 1, y + tile + BORDER - 1],
        outline=item.colour,
        width=BORDER,
    )
    for number, line in enumerate(item.lines[:LINES]):
        draw.text(
            (x, y + tile + 2 + number * LINE_HEIGHT), _shorten(line, tile, draw), fill=(0, 0, 0), font=_font()
        )


def draw_recommendations(
    rows: Sequence[tuple[Tile, Sequence[Tile]]], *, tile: int = 128, columns: int | None = None
) -> np.ndarray:
    """One row per query: its tile, then its results' tiles best first. Returns uint8 RGB (H, W, 3)."""
    if tile < 16:
        raise ValueError(f"tile must be at least 16 pixels, not {tile}")
    columns = max((len(results) for _, results in rows), default=0) if columns is None else columns
    width, height = montage_size(max(len(rows), 1), columns, tile=tile)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    cell_height = tile + LINES * LINE_HEIGHT + PAD
    for number, (query, results) in enumerate(rows):
        y = PAD + number * (cell_height + PAD)
        _paste(canvas, draw, query, PAD, y, tile)
        for column, item in enumerate(results[:columns]):
            _paste(canvas, draw, item, PAD + GAP + (column + 1) * (tile + PAD), y, tile)
    return np.asarray(canvas, dtype=np.uint8)


def save_recommendations(
    path: str | os.PathLike,
    rows: Sequence[tuple[Tile, Sequence[Tile]]],
    *,
    tile: int = 128,
    columns: int | None = None,
) -> str:
    """Draw the montage and write it (atomically) to `path`."""
    return save_image(path, draw_recommendations(rows, tile=tile, columns=columns))


def catalog_image_path(record: Mapping[str, Any], model_save_path: str) -> str | None:
    """Where a catalog item's picture is: its thumbnail, else its original image; None when neither exists."""
    candidates = [record.get("thumbnail"), record.get("image_path")]
    try:
        # the pipeline's layout: OUT/model beside OUT/views/thumbnail/<relative path>
        out = os.path.dirname(os.path.abspath(model_save_path))
        candidates.append(os.path.join(out, "views", "thumbnail", output_relpath(record)))
    except RecordError:
        pass
    for path in candidates:
        if isinstance(path, str) and path and os.path.isfile(path):
            return path
    return None


def catalog_image(record: Mapping[str, Any], model_save_path: str) -> np.ndarray | None:
    """A catalog item's picture for the montage: its thumbnail, else its original image, else None."""

    path = catalog_image_path(record, model_save_path)
    if path is not None:
        try:
            return load_image(path, channels=3)
        except ImageError as exc:
            log.warning("montage: %s", exc)
    return None


def montage_rows(
    records: Sequence[dict[str, Any]],
    images: Mapping[int, np.ndarray],
    *,
    model_save_path: str,
    category_key: str = "category",
) -> list:
    """The montage's rows: each query's tile beside its results' tiles."""

    rows = []
    for record in records:
        try:
            # a query given as a path is named by its file name: the tile is narrow
            name = str(record["id"]) if record.get("id") else os.path.basename(record_id(record))
        except ValueError:
            name = "?"
        category = field_text(record.get(category_key)) or record.get("inferred_category")
        if "error" in record:
            rows.append((Tile(None, ["query (unreadable)", name, record["error"]], QUERY_COLOUR), []))
            continue
        label = category if record.get(category_key) else f"{category} (inferred)" if category else ""
        query = Tile(images.get(id(record)), ["query", name, label], QUERY_COLOUR)
        tiles = []
        for rank_, hit in enumerate(record["results"], 1):
            hit_category = field_text(hit.get(category_key)) or ""
            colour = MATCH_COLOUR if category and hit_category == category else OTHER_COLOUR
            lines = [f"#{rank_}  {hit['score']:.3f}", hit_category, hit["id"]]
            tiles.append(Tile(catalog_image(hit, model_save_path), lines, colour))
        rows.append((query, tiles))
    return rows
