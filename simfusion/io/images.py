"""Image loading and saving shared by all stages: every format and mode in, uint8 RGB or gray out."""

from __future__ import annotations

import io
import os
import stat
import warnings
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from simfusion.io.atomic import atomic_path

# Larger images are refused as likely decompression bombs. Pillow is told the same cap (its own
# default is about 89.5 MP), so the README's 100 megapixels is what holds: at most MAX_PIXELS passes.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# A strip longer than this many times its width is refused: a 661-byte 1x200000 PNG would otherwise
# become a 200000x200000 thumbnail canvas, and no photo of one object is that shape.
MAX_ASPECT = 100


class ImageError(ValueError):
    """An image that cannot be read: missing, not a regular file, truncated, not an image, or too large."""


class OutputError(OSError):
    """An image that cannot be written (a full disk, a folder that is a file, no permission): not the
    record's fault, and the next record would fail the same way, so a stage stops on it."""


def load_image(path: str | os.PathLike, *, channels: int = 3, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image as uint8, (H, W, 3) RGB for `channels=3` or (H, W) gray for `channels=1`.

    EXIF orientation is applied, transparency is flattened onto white, 16-bit images are scaled
    to 8 bits. Raises ImageError for anything that is not a readable image, for a FIFO, device or
    folder (refused without waiting on it), for more than `max_pixels` pixels
    and for an aspect ratio over MAX_ASPECT.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    name = os.fspath(path)
    try:
        with _open_regular(name) as stream:
            return _read(stream, name, channels=channels, max_pixels=max_pixels)
    except FileNotFoundError as exc:
        raise ImageError(f"no such file: {name}") from exc
    except OSError as exc:
        raise ImageError(f"cannot read image {name}: {exc}") from exc


def decode_image(
    data: bytes, *, channels: int = 3, max_pixels: int = MAX_PIXELS, reduce_to: int | None = None
) -> np.ndarray:
    """Decode an image file's bytes (an upload) like `load_image`; the format is decided by decoding,
    never by a name. Raises ImageError for bytes that are not a readable image, or too large."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    if not data:
        raise ImageError("cannot read image: it is empty")
    return _read(io.BytesIO(data), "upload", channels=channels, max_pixels=max_pixels, reduce_to=reduce_to)


def _read(
    stream: IO[bytes], name: str, *, channels: int, max_pixels: int, reduce_to: int | None = None
) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # check_size below is the exact cap; Pillow's own check (a warning over MAX_PIXELS,
            # an error over twice that) would refuse with another message, or not at all
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                check_size(image.size, max_pixels=max_pixels)
                if reduce_to:  # a JPEG decodes at 1/2, 1/4 or 1/8 scale, each side still >= reduce_to
                    image.draft(image.mode, (reduce_to, reduce_to))
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_uint8(image, channels)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        # Pillow's own message quotes its own, larger limit: this one is the cap that holds
        raise ImageError(f"image {name} is over the limit of {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        cause = str(exc).replace(repr(stream), name)  # Pillow names a bytes buffer by its repr
        raise ImageError(f"cannot read image {name}: {cause}") from exc


def check_size(size: tuple[int, int], *, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ImageError for an image of `size` (width, height) over the pixel cap or too elongated."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} pixels is over the limit of {max_pixels}")
    if min(width, height) <= 0 or max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"image of {width}x{height} pixels has an aspect ratio over {MAX_ASPECT}:1")


def _open_regular(name: str) -> IO[bytes]:
    """Open a file for reading, refusing anything but a regular file (without blocking on a FIFO)."""
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"not a regular file: {name}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _to_uint8(image: Image.Image, channels: int) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or data.max() > 255 else 255.0
        gray = np.clip(np.round(data / top * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(gray, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert a uint8 image between gray (H, W) and RGB (H, W, 3)."""
    if channels == 3:
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.shape[2] == 1:
            return np.repeat(image, 3, axis=2)
        return image
    if channels == 1:
        if image.ndim == 2:
            return image
        if image.shape[2] == 1:
            return image[:, :, 0]
        return np.asarray(Image.fromarray(image).convert("L"))
    raise ValueError(f"channels must be 1 or 3, not {channels!r}")


def save_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95) -> str:
    """Write a uint8 image atomically (temporary file, then rename); the format follows the suffix."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"save_image wants uint8 pixels, not {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    picture = Image.fromarray(array)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            picture.save(out, format=fmt, **options)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
