"""Convolutional autoencoders trained without labels (Keras 3), and the training objectives.

The encoder is strided conv blocks (conv + BN + ReLU) down to a latent feature map of
(ceil(H/8), ceil(W/8), latent) channels, in the layer named `latent`; the decoder mirrors it and
reconstructs every channel of its input, values in [0, 1]. Objectives:
- `plain`: reconstruct the input (MSE);
- `denoising`: reconstruct the clean image from one with Gaussian noise and masked pixels;
- `augment`: reconstruct the un-jittered image from a randomly cropped, flipped, colour-jittered
  and noised view (the crop and flip are applied to the target too);
- `contrastive`: `augment` on two views of each image plus a SimCLR NT-Xent loss that pulls the
  pooled latents of the two views together and pushes other images' apart, so the features
  follow what the image shows rather than its exact pixels.

This module imports Keras and TensorFlow at the top: import it only where a model is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import layers, ops

from simfusion.learn.options import DEFAULT_OBJECTIVE, OBJECTIVES

ENCODER_LAYER = "latent"
RECONSTRUCTION = "reconstruction"
PROJECTION = "projection"
DOWNSAMPLING = 8  # three stride-2 blocks
TEMPERATURE = 0.2
CONTRASTIVE_WEIGHT = 0.1
# Keras' 0.99 leaves the inference statistics near their start after a few epochs on a small catalog.
BN_MOMENTUM = 0.9


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    return objective


def latent_shape(height: int, width: int, latent: int) -> tuple[int, int, int]:
    """Shape of the encoder's feature map for an input of height x width."""
    return math.ceil(height / DOWNSAMPLING), math.ceil(width / DOWNSAMPLING), latent


def build_autoencoder(
    input_shape: Sequence[int],
    *,
    latent: int = 16,
    filters: Sequence[int] = (32, 64, 128),
    objective: str = DEFAULT_OBJECTIVE,
    projection_dim: int = 64,
    name: str = "autoencoder",
) -> keras.Model:
    """A conv autoencoder for float32 images in [0, 1] of `input_shape` (H, W, C).

    Outputs the reconstruction (H, W, C); for the `contrastive` objective a dict that also holds
    `projection`, the head the NT-Xent loss is computed on (not used for retrieval).
    """
    check_objective(objective)
    height, width, channels = (int(v) for v in input_shape)
    if len(filters) != 3:
        raise ValueError(f"filters gives the widths of the 3 encoder blocks, not {list(filters)!r}")
    if latent <= 0:
        raise ValueError(f"latent must be a positive number of channels, not {latent}")
    inputs = keras.Input((height, width, channels), name="image")
    x = inputs
    for i, width_i in enumerate(filters, 1):
        x = _conv_block(x, width_i, strides=2, name=f"enc{i}a")
        x = _conv_block(x, width_i, strides=1, name=f"enc{i}b")
    code = layers.Conv2D(latent, 3, padding="same", name=ENCODER_LAYER)(x)
    # the mirror image of the encoder: each block works at the resolution of its encoder twin
    x = _conv_block(code, filters[2], strides=1, name="dec3")
    for i, width_i in ((2, filters[1]), (1, filters[0])):
        x = layers.Conv2DTranspose(
            width_i, 3, strides=2, padding="same", use_bias=False, name=f"dec{i}a_conv"
        )(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"dec{i}a_bn")(x)
        x = layers.ReLU(name=f"dec{i}a_relu")(x)
        x = _conv_block(x, width_i, strides=1, name=f"dec{i}b")
    x = layers.Conv2DTranspose(channels, 3, strides=2, padding="same", activation="sigmoid", name="dec_out")(
        x
    )
    # odd sizes (28 px Fashion-MNIST) decode to the next multiple of 8: crop back to the input
    extra_h, extra_w = x.shape[1] - height, x.shape[2] - width
    outputs = layers.Cropping2D(
        ((extra_h // 2, extra_h - extra_h // 2), (extra_w // 2, extra_w - extra_w // 2)), name=RECONSTRUCTION
    )(x)
    if objective != "contrastive":
        return keras.Model(inputs, outputs, name=name)
    pooled = layers.Concatenate(name="pool")(
        [
            layers.GlobalAveragePooling2D(name="pool_avg")(code),
            layers.GlobalMaxPooling2D(name="pool_max")(code),
        ]
    )
    hidden = layers.Dense(128, activation="relu", name="proj_hidden")(pooled)
    projection = layers.Dense(projection_dim, name=PROJECTION)(hidden)
    return keras.Model(inputs, {RECONSTRUCTION: outputs, PROJECTION: projection}, name=name)


def _conv_block(x, filters: int, *, strides: int, name: str):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def encoder_of(model: keras.Model) -> keras.Model:
    """The encoder part of an autoencoder: its input to the `latent` feature map."""
    return keras.Model(model.input, model.get_layer(ENCODER_LAYER).output, name=f"{model.name}_encoder")


def reconstruction_of(model: keras.Model, images) -> tf.Tensor:
    """Reconstruct float32 images in [0, 1] (either kind of model)."""
    out = model(images, training=False)
    return out[RECONSTRUCTION] if isinstance(out, dict) else out


@keras.saving.register_keras_serializable(package="simfusion")
def nt_xent(y_true, y_pred):
    """SimCLR's NT-Xent loss; the batch is two views stacked: row i and row i + N/2 are a pair.

    `y_true` is unused (the pairing is the target). Returns one loss per row.
    """
    z = y_pred / (ops.norm(y_pred, axis=-1, keepdims=True) + 1e-8)
    n = ops.shape(z)[0]
    half = n // 2
    logits = ops.matmul(z, ops.transpose(z)) / TEMPERATURE
    logits = logits - 1e9 * ops.eye(n, dtype=logits.dtype)  # never pair a row with itself
    targets = ops.concatenate([ops.arange(half, n), ops.arange(0, half)])
    return keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)


def compile_autoencoder(
    model: keras.Model,
    *,
    objective: str,
    learning_rate: float = 1e-3,
    contrastive_weight: float = CONTRASTIVE_WEIGHT,
) -> keras.Model:
    """Adam, MSE on the reconstruction, plus the weighted NT-Xent loss for `contrastive`."""
    optimizer = keras.optimizers.Adam(learning_rate)
    if check_objective(objective) == "contrastive":
        model.compile(
            optimizer=optimizer,
            loss={RECONSTRUCTION: "mse", PROJECTION: nt_xent},
            loss_weights={RECONSTRUCTION: 1.0, PROJECTION: contrastive_weight},
        )
    else:
        model.compile(optimizer=optimizer, loss="mse")
    return model


class Corruptor:
    """Turns a batch of clean float32 images (B, H, W, C) in [0, 1] into (input, target) for an objective.

    Random draws come from one seeded tf.random.Generator, so with a sequential tf.data map the
    same seed gives the same batches. Validation batches use `clean`: input = target = the image.
    """

    def __init__(self, objective: str, *, seed: int = 0) -> None:
        self.objective = check_objective(objective)
        self.generator = tf.random.Generator.from_seed(seed)

    def __call__(self, images: tf.Tensor):
        if self.objective == "plain":
            return images, images
        if self.objective == "denoising":
            return self.corrupt(images), images
        if self.objective == "augment":
            target = self.crop_flip(images)
            return self.jitter(target), target
        first, second = self.crop_flip(images), self.crop_flip(images)
        return _pack_views(self.jitter(first), self.jitter(second), first, second)

    def clean(self, images: tf.Tensor):
        if self.objective == "contrastive":
            return _pack_views(images, images, images, images)
        return images, images

    def corrupt(self, images: tf.Tensor, *, noise: float = 0.1, drop: float = 0.15) -> tf.Tensor:
        """Gaussian noise, then a random `drop` share of pixels set to 0 (all channels)."""
        shape = tf.shape(images)
        noisy = images + self.generator.normal(shape, stddev=noise)
        keep = tf.cast(self.generator.uniform(tf.concat([shape[:3], [1]], 0)) >= drop, images.dtype)
        return tf.clip_by_value(noisy * keep, 0.0, 1.0)

    def crop_flip(self, images: tf.Tensor, *, min_scale: float = 0.7) -> tf.Tensor:
        """A random crop of 70-100% of each side, resized back, mirrored left-right half the time."""
        shape = tf.shape(images)
        batch = shape[0]
        scale = self.generator.uniform([batch, 1], min_scale, 1.0)
        top = self.generator.uniform([batch, 1]) * (1.0 - scale)
        left = self.generator.uniform([batch, 1]) * (1.0 - scale)
        x0, x1 = left, left + scale
        # crop_and_resize mirrors a box whose x1 < x0
        flip = self.generator.uniform([batch, 1]) < 0.5
        x0, x1 = tf.where(flip, x1, x0), tf.where(flip, x0, x1)
        boxes = tf.concat([top, x0, top + scale, x1], axis=1)
        out = tf.image.crop_and_resize(images, boxes, tf.range(batch), shape[1:3])
        return tf.clip_by_value(out, 0.0, 1.0)

    def jitter(self, images: tf.Tensor) -> tf.Tensor:
        """Brightness, contrast and (colour images) saturation changes per image, plus light noise."""
        shape = tf.shape(images)
        batch = shape[0]
        brightness = self.generator.uniform([batch, 1, 1, 1], -0.15, 0.15)
        contrast = self.generator.uniform([batch, 1, 1, 1], 0.7, 1.3)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        out = (images - mean) * contrast + mean + brightness
        if images.shape[-1] == 3:
            gray = tf.reduce_mean(out, axis=-1, keepdims=True)
            saturation = self.generator.uniform([batch, 1, 1, 1], 0.6, 1.4)
            out = gray + (out - gray) * saturation
        out = out + self.generator.normal(shape, stddev=0.03)
        return tf.clip_by_value(out, 0.0, 1.0)


def _pack_views(first, second, target1, target2):
    """Two views stacked on the batch axis (row i pairs with row i + B), as the NT-Xent loss wants."""
    inputs = tf.concat([first, second], axis=0)
    targets = tf.concat([target1, target2], axis=0)
    return inputs, {RECONSTRUCTION: targets, PROJECTION: tf.zeros(tf.shape(inputs)[:1])}
