"""Where training and encoding get their images: numpy arrays or files, read on demand, and tf.data.

An image source has `shape` (H, W, C), a length and `load(indices)`; FileImages streams from
files, so a catalog larger than memory trains and encodes. TensorFlow is imported inside the
functions that build datasets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from simfusion.io.images import load_image, to_channels
from simfusion.io.records import RecordError, output_relpath
from simfusion.learn.options import TrainOptions

MIN_TRAIN_IMAGES = 2


class TooFewImagesError(ValueError):
    """Too few usable images to train with the chosen validation split."""


# ---------------------------------------------------------------------------------------------- images


class ArrayImages:
    """Images held in a numpy array (N, H, W, C) or (N, H, W) uint8."""

    def __init__(self, images: np.ndarray) -> None:
        array = np.asarray(images)
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W, C) or (N, H, W), not {array.dtype} {array.shape}"
            )
        self.array = array
        self.shape = tuple(array.shape[1:])

    def __len__(self) -> int:
        return len(self.array)

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return self.array[np.asarray(indices, dtype=np.int64)]


class FileImages:
    """Images read from files on demand, converted to `channels` and resized to height x width."""

    def __init__(self, paths: Sequence[str], *, height: int, width: int, channels: int) -> None:
        self.paths = list(paths)
        self.shape = (int(height), int(width), int(channels))

    def __len__(self) -> int:
        return len(self.paths)

    def load_one(self, index: int) -> np.ndarray:
        return load_view_image(
            self.paths[index], height=self.shape[0], width=self.shape[1], channels=self.shape[2]
        )

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return (
            np.stack([self.load_one(int(i)) for i in indices])
            if len(indices)
            else np.zeros((0, *self.shape), np.uint8)
        )


class ImageSource(Protocol):
    """Images by index: ArrayImages, FileImages, or anything with `shape` (H, W, C), len and `load`."""

    shape: tuple[int, int, int]

    def __len__(self) -> int: ...

    def load(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 (len(indices), H, W, C)."""
        ...


def as_source(images: np.ndarray | ImageSource) -> ImageSource:
    if isinstance(images, np.ndarray):
        return ArrayImages(images)
    if not (hasattr(images, "load") and hasattr(images, "shape")):
        raise TypeError(f"images must be a uint8 array or an image source, not {type(images).__name__}")
    return images


def fit_image(image: np.ndarray, *, height: int, width: int, channels: int) -> np.ndarray:
    """A uint8 image as (height, width, channels): channels converted, resized when its size differs."""
    array = to_channels(np.asarray(image, dtype=np.uint8), 3 if channels == 3 else 1)
    if array.shape[:2] != (height, width):
        import cv2

        shrinking = array.shape[0] > height or array.shape[1] > width
        array = cv2.resize(
            np.ascontiguousarray(array),
            (width, height),
            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
        )
    return array.reshape(height, width, channels)


def fit_batch(images: np.ndarray, *, height: int, width: int, channels: int) -> np.ndarray:
    """A uint8 batch (N, H, W[, C]) as (N, height, width, channels)."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, not {array.dtype}")
    if array.ndim == 4 and array.shape[1:] == (height, width, channels):
        return array
    if array.ndim not in (3, 4):
        raise ValueError(f"a batch of images is (N, H, W) or (N, H, W, C), not {array.shape}")
    return np.stack([fit_image(image, height=height, width=width, channels=channels) for image in array])


def load_view_image(path: str, *, height: int, width: int, channels: int) -> np.ndarray:
    """Read one view image as uint8 (height, width, channels); ImageError when unreadable."""
    return fit_image(
        load_image(path, channels=3 if channels == 3 else 1), height=height, width=width, channels=channels
    )


def view_image_path(record: Mapping[str, Any], view: str, base: str | os.PathLike | None) -> str:
    """Where a record's image of `view` is: record[view] when it is a path, else <base>/<view>/<rel>."""
    value = record.get(view)
    if isinstance(value, str) and value:
        return value
    if base is None:
        raise RecordError(f"the record has no `{view}` path and no --base_image_path_for_model was given")
    return os.path.join(os.fspath(base), view, output_relpath(record))


def split_indices(n: int, validation_split: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train / validation split of range(n); ValueError when there are too few images."""
    if not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1), not {validation_split}")
    n_val = max(1, int(round(n * validation_split))) if validation_split > 0 else 0
    if n - n_val < MIN_TRAIN_IMAGES:
        need = MIN_TRAIN_IMAGES + (1 if validation_split > 0 else 0)
        raise TooFewImagesError(
            f"{n} usable images are too few to train with validation_split {validation_split}: "
            f"need at least {need} ({MIN_TRAIN_IMAGES} to train"
            + (", 1 to validate" if validation_split > 0 else "")
            + "); add images, or lower --validation_split"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def image_dataset(
    source: ImageSource, indices: np.ndarray, *, batch_size: int, shuffle: bool = False, seed: int = 0
):
    """tf.data batches of uint8 images of `source` at `indices`, loaded in parallel, order kept."""
    import tensorflow as tf

    height, width, channels = source.shape
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shuffle:
        ds = ds.shuffle(max(len(indices), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def load(batch):
        images = tf.py_function(lambda idx: source.load(idx.numpy()), [batch], tf.uint8)
        images.set_shape([None, height, width, channels])
        return images

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def training_dataset(source: ImageSource, indices, *, options: TrainOptions, corruptor, training: bool):
    import tensorflow as tf

    ds = image_dataset(source, indices, batch_size=options.batch_size, shuffle=training, seed=options.seed)
    ds = ds.map(lambda images: tf.cast(images, tf.float32) / 255.0)
    # sequential map: the corruptor's random generator then gives the same draws on every run
    # plain Python branches on the objective: nothing for autograph to convert
    ds = ds.map(tf.autograph.experimental.do_not_convert(corruptor if training else corruptor.clean))
    return ds.prefetch(tf.data.AUTOTUNE)
