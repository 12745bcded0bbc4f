"""The trainer: one view's autoencoder fitted with early stopping, checkpoints, resume and a time
budget; its history saved and plotted. Keras is imported inside the functions."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from simfusion.io.atomic import atomic_path, read_json, write_json
from simfusion.learn.data import ImageSource, as_source, split_indices, training_dataset
from simfusion.learn.options import TrainOptions

log = logging.getLogger(__name__)


def epoch_logger(name: str, epochs: int):
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


def time_budget_callback(name: str, seconds: float):
    """Stops training once `seconds` have passed (checked after every batch), so a run by time
    budget ends on time whatever the device's speed; the epoch in progress is cut short."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()
            self.stopped = False

        def on_train_batch_end(self, batch, logs=None):
            if not self.stopped and time.perf_counter() - self.start >= seconds:
                self.stopped = True
                self.model.stop_training = True
                log.info("%s: time budget of %.0f s spent; training stops", name, seconds)

    return TimeBudget()


def _start_model(source: ImageSource, options: TrainOptions, *, checkpoint_path, resume, name):
    """A fresh compiled autoencoder, or the checkpoint and its history when resuming."""
    import keras

    from simfusion.learn.autoencoder import build_autoencoder, compile_autoencoder

    history_path = f"{checkpoint_path}.history.json" if checkpoint_path else None
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        try:
            model = keras.saving.load_model(checkpoint_path)
            previous = read_json(history_path) if history_path and os.path.exists(history_path) else {}
        except (OSError, ValueError, KeyError) as exc:  # a checkpoint cut short by a kill
            log.warning("%s: cannot resume from %s (%s); training from the start", name, checkpoint_path, exc)
        else:
            log.info(
                "%s: resuming from %s after %d epochs", name, checkpoint_path, len(previous.get("loss", []))
            )
            return model, previous
    model = build_autoencoder(
        source.shape, latent=options.latent, filters=options.filters, objective=options.objective, name=name
    )
    compile_autoencoder(
        model,
        objective=options.objective,
        learning_rate=options.learning_rate,
        contrastive_weight=options.contrastive_weight,
    )
    return model, {}


def _callbacks(options: TrainOptions, *, monitor, name, checkpoint_path, previous, previous_best, extra):
    import keras

    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=options.patience, restore_best_weights=True),
        epoch_logger(name, options.epochs),
        *extra,
    ]
    if options.time_budget:
        callbacks.append(time_budget_callback(name, options.time_budget))
    if checkpoint_path:
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint_path)), exist_ok=True)
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                checkpoint_path, monitor=monitor, save_best_only=True, initial_value_threshold=previous_best
            )
        )
        callbacks.append(_history_saver(f"{checkpoint_path}.history.json", previous))
    return callbacks


def _datasets(source, train_idx, val_idx, options: TrainOptions, *, initial_epoch: int, name: str):
    """The training and validation datasets (None without a validation split)."""
    from simfusion.learn.autoencoder import Corruptor  # TensorFlow: imported when first used

    # a resumed run draws new orders and augmentations rather than replaying the first epochs
    seeded = replace(options, seed=options.seed + initial_epoch)
    corruptor = Corruptor(options.objective, seed=seeded.seed)
    train_ds = training_dataset(source, train_idx, options=seeded, corruptor=corruptor, training=True)
    val_ds = (
        training_dataset(source, val_idx, options=options, corruptor=corruptor, training=False)
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
    return train_ds, val_ds


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
    not bit-identical to an uninterrupted run). `options.time_budget` (seconds) stops training when
    spent, whatever `epochs` says. `callbacks` are extra Keras callbacks. Seeded: the same options
    and images give the same model and losses.
    """
    import keras

    options = options or TrainOptions()
    source = as_source(images)
    train_idx, val_idx = split_indices(len(source), options.validation_split, seed=options.seed)
    monitor = "val_loss" if len(val_idx) else "loss"
    keras.utils.set_random_seed(options.seed)
    model, previous = _start_model(source, options, checkpoint_path=checkpoint_path, resume=resume, name=name)
    initial_epoch = len(previous.get("loss", []))
    previous_best = min(previous[monitor]) if previous.get(monitor) else None
    callbacks = _callbacks(
        options,
        monitor=monitor,
        name=name,
        checkpoint_path=checkpoint_path,
        previous=previous,
        previous_best=previous_best,
        extra=callbacks,
    )
    train_ds, val_ds = _datasets(source, train_idx, val_idx, options, initial_epoch=initial_epoch, name=name)
    history = {key: list(values) for key, values in previous.items()}
    if initial_epoch >= options.epochs:
        return model, history
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
    model,
    history: Mapping[str, list[float]],
    *,
    model_save_path: str,
    view: str,
    objective: str,
    filename: str | None = None,
) -> str:
    """Save the model as `filename` (default `<view>.keras`), `<view>.history.json` and the plot
    `<view>.loss.png`; returns the model's path."""
    os.makedirs(model_save_path, exist_ok=True)
    path = os.path.join(model_save_path, filename or f"{view}.keras")
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


def log_device(stage: str = "train") -> str:
    """Which device TensorFlow trains on (logged): the GPUs it sees, or the CPU."""
    from simfusion.learn.device import gpu_names

    gpus = gpu_names()
    device = f"GPU ({', '.join(gpus)})" if gpus else "CPU (TensorFlow sees no GPU)"
    log.info("%s: running on %s", stage, device)
    return device
