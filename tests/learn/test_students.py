"""Students on k-means pseudo-labels, and training that stops when its time budget is spent."""

from __future__ import annotations

import numpy as np
import pytest

from simfusion.learn.options import TrainOptions
from simfusion.learn.students import StudentEncoder, pseudo_labels, sample_rows, train_student
from simfusion.learn.trainer import train_view


def blobs(rng, n_per=20, centres=3, dim=16):
    centre = rng.normal(size=(centres, dim)) * 5
    return np.concatenate([centre[c] + rng.normal(size=(n_per, dim)) * 0.1 for c in range(centres)])


def test_pseudo_labels_find_the_teachers_groups(rng):
    teacher = blobs(rng)
    labels = pseudo_labels({"a": teacher, "b": teacher[:, ::-1]}, clusters=3, seed=0)
    truth = np.repeat(np.arange(3), 20)
    # the same partition up to the names of the clusters
    assert all(len(set(labels[truth == c])) == 1 for c in range(3)) and len(set(labels)) == 3
    np.testing.assert_array_equal(labels, pseudo_labels({"a": teacher, "b": teacher[:, ::-1]}, clusters=3))


def test_pseudo_labels_shrink_the_clusters_on_a_small_catalog(rng):
    assert pseudo_labels({"a": blobs(rng, n_per=10)}, clusters=50).max() + 1 == 2  # 30 items / 20 -> 2
    with pytest.raises(ValueError, match="at least 4"):
        pseudo_labels({"a": np.ones((3, 4))}, clusters=2)


def test_sample_rows_is_seeded_sorted_and_bounded():
    np.testing.assert_array_equal(sample_rows(5, limit=10), np.arange(5))
    rows = sample_rows(100, limit=10, seed=1)
    assert len(rows) == 10 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, sample_rows(100, limit=10, seed=1))


@pytest.mark.slow
def test_a_student_learns_its_pseudo_labels_and_encodes(rng):
    images = np.zeros((40, 32, 32, 3), np.uint8)
    images[:20, 8:24, 8:24] = 255  # squares
    images[20:, :, 14:18] = 255  # bars
    labels = np.repeat([0, 1], 20)
    options = TrainOptions(epochs=1, batch_size=8, learning_rate=3e-3)
    model, history = train_student(images, labels, options=options, epochs=8, size=32)
    assert history["accuracy"][-1] > 0.9
    vectors = StudentEncoder(model)(images)
    assert vectors.shape == (40, 128) and vectors.dtype == np.float32
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    within, across = unit[:20] @ unit[:20].T, unit[:20] @ unit[20:].T
    assert within.mean() > across.mean()


@pytest.mark.slow
def test_the_time_budget_stops_training_before_the_epochs_run_out(rng):
    images = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    options = TrainOptions(
        epochs=50, batch_size=8, latent=4, filters=(4, 4, 4), objective="plain", patience=50, time_budget=0.01
    )
    _, history = train_view(images, options=options)
    assert len(history["loss"]) == 1  # the first batch spends the budget; that epoch is the last


def test_the_time_budget_must_be_positive():
    with pytest.raises(ValueError, match="time_budget"):
        TrainOptions(time_budget=0)
