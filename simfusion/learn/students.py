"""Student views: a small CNN trained per catalog on pseudo-labels, with no labels at all.

The pseudo-labels are the k-means clusters of the teacher views' features (the pretrained HED
view and HOG by default): the student learns to tell apart the groups its teachers see, from the
thumbnail alone, with flips and shifts as augmentation, and its embedding layer becomes a view
that generalises the teachers (BENCHMARKS.md, Fashion-MNIST research log). Keras is imported
inside the functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.learn.data import ImageSource, as_source, fit_batch
from simfusion.learn.options import TrainOptions

log = logging.getLogger(__name__)

EMBEDDING_LAYER = "embedding"
STUDENT_SIZE = 64  # the student reads its source image at STUDENT_SIZE x STUDENT_SIZE
STUDENT_EPOCHS = 10
MAX_FIT_ITEMS = 10_000  # k-means and the student see at most this many catalog items


def pseudo_labels(
    teachers: Mapping[str, np.ndarray], *, clusters: int, seed: int = 0, dims: int = 64
) -> np.ndarray:
    """k-means cluster of each item over its teachers' vectors (each L2-normalised, equal share,
    reduced to `dims` by PCA); `clusters` shrinks to n / 20 on a small catalog."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    parts = []
    for vectors in teachers.values():
        flat = np.asarray(vectors, np.float32).reshape(len(vectors), -1)
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        parts.append(flat / np.maximum(norms, 1e-12) / np.sqrt(len(teachers)))
    joined = np.concatenate(parts, axis=1)
    n = len(joined)
    if n < 4:
        raise ValueError(f"a student needs at least 4 catalog items to cluster, not {n}")
    reduced = PCA(n_components=min(dims, n - 1, joined.shape[1]), random_state=seed).fit_transform(joined)
    k = max(2, min(clusters, n // 20))
    return KMeans(n_clusters=k, n_init=2, random_state=seed).fit_predict(reduced).astype(np.int64)


def build_student(input_shape: Sequence[int], classes: int, *, embedding: int = 128, name: str = "student"):
    """Three conv blocks, global average pooling, an `embedding` layer, a softmax over the clusters."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(embedding, name=EMBEDDING_LAYER)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def _augment(images, seed: int):
    """Random horizontal flips and shifts of up to 1/8 of the side (reflected), float32 in [0, 1]."""
    import tensorflow as tf

    images = tf.image.random_flip_left_right(images, seed=seed)
    size = tf.shape(images)[1]
    pad = size // 8
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    return tf.image.random_crop(padded, tf.shape(images), seed=seed + 1)


def train_student(
    images: np.ndarray | ImageSource,
    labels: np.ndarray,
    *,
    options: TrainOptions,
    epochs: int = STUDENT_EPOCHS,
    size: int = STUDENT_SIZE,
    name: str = "student",
) -> tuple[Any, dict[str, list[float]]]:
    """Fit a student to predict `labels` from `images` (row-aligned); returns (model, history).

    Seeded; `options` gives the batch size, learning rate, seed and time budget."""
    import keras
    import tensorflow as tf

    from simfusion.learn.trainer import epoch_logger, time_budget_callback

    source = as_source(images)
    batch = fit_batch(source.load(np.arange(len(source))), height=size, width=size, channels=3)
    keras.utils.set_random_seed(options.seed)
    model = build_student((size, size, 3), int(labels.max()) + 1, name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(options.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    ds = (
        tf.data.Dataset.from_tensor_slices((batch, labels))
        .shuffle(len(batch), seed=options.seed)
        .batch(options.batch_size)
        .map(lambda x, y: (_augment(tf.cast(x, tf.float32) / 255.0, options.seed), y))
        .prefetch(tf.data.AUTOTUNE)
    )
    callbacks = [epoch_logger(name, epochs)]
    if options.time_budget:
        callbacks.append(time_budget_callback(name, options.time_budget))
    start = time.perf_counter()
    fit = model.fit(ds, epochs=epochs, callbacks=callbacks, verbose=0)
    log.info(
        "%s: trained on %d items, %d pseudo-classes, in %.1f s",
        name,
        len(batch),
        model.output_shape[-1],
        time.perf_counter() - start,
    )
    return model, {key: [float(v) for v in values] for key, values in fit.history.items()}


def fit_student(
    images: ImageSource,
    teachers: Mapping[str, np.ndarray],
    *,
    options: TrainOptions,
    clusters: int,
    epochs: int = STUDENT_EPOCHS,
    size: int = STUDENT_SIZE,
    name: str = "student",
) -> tuple[Any, dict[str, list[float]]]:
    """Pseudo-labels from the teachers' vectors (row-aligned with `images`), then a trained student."""
    labels = pseudo_labels(teachers, clusters=clusters, seed=options.seed)
    log.info(
        "%s: %d items in %d k-means clusters of %s", name, len(labels), labels.max() + 1, ", ".join(teachers)
    )
    return train_student(images, labels, options=options, epochs=epochs, size=size, name=name)


def sample_rows(n: int, *, limit: int = MAX_FIT_ITEMS, seed: int = 0) -> np.ndarray:
    """A seeded, sorted sample of at most `limit` of range(n)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


class StudentEncoder:
    """A trained student's embedding layer: uint8 images in, (N, embedding) float32 vectors out."""

    kind = "student"

    def __init__(self, model, *, model_name: str = "") -> None:
        import keras

        self.encoder = keras.Model(model.input, model.get_layer(EMBEDDING_LAYER).output)
        self.input_shape = tuple(int(v) for v in model.input_shape[1:])
        self.model_name = model_name or f"{model.name}.keras"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        height, width, channels = self.input_shape
        batch = fit_batch(images, height=height, width=width, channels=channels).astype(np.float32) / 255.0
        if not len(batch):
            return np.zeros((0, self.encoder.output_shape[-1]), np.float32)
        return np.asarray(self.encoder.predict_on_batch(batch), dtype=np.float32)
