"""Unsupervised fusion tuning: augmented copies, the objective, the weight search, and fusion.py."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from simfusion.cli.index import main as index_main
from simfusion.cli.train import main as train_main
from simfusion.io.images import save_image
from simfusion.search.augment import AUGMENTATIONS, augment, augmented_copies
from simfusion.search.tune import (
    Problem,
    TuneOptions,
    consensus_neighbours,
    coordinate_ascent,
    objective,
)


def picture(rng, size=48):
    image = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
    y, x = rng.integers(4, size // 2, 2)
    image[y : y + size // 3, x : x + size // 3] = rng.integers(0, 256, 3)
    return image


def test_every_augmentation_keeps_an_rgb_image(rng):
    image, background = picture(rng), picture(rng)
    for kind in AUGMENTATIONS:
        out = augment(image, kind, np.random.default_rng(0), background=background)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, kind
    np.testing.assert_array_equal(augment(image, "flip", rng), image[:, ::-1])
    with pytest.raises(ValueError, match="background"):
        augment(image, "paste", rng)
    with pytest.raises(ValueError, match="augmentation must be"):
        augment(image, "melt", rng)


def test_copies_are_seeded_and_know_their_source(rng):
    images = [picture(rng) for _ in range(5)]
    copies, sources, kinds = augmented_copies(images, copies=3, seed=1)
    again, _, kinds_again = augmented_copies(images, copies=3, seed=1)
    assert len(copies) == 15 and list(sources) == [r for r in range(5) for _ in range(3)]
    assert kinds == kinds_again and all(np.array_equal(a, b) for a, b in zip(copies, again, strict=True))
    assert set(kinds) <= set(AUGMENTATIONS) and len(set(kinds)) >= 6


def toy_problem(rng, n=30, queries=20):
    """`good` ranks each copy's own item first and groups items by thirds; `noise` is random."""
    own = rng.permutation(n)[:queries]
    good = rng.normal(size=(queries, n)) * 0.1
    good[np.arange(queries), own] = 1.0
    noise = rng.normal(size=(queries, n))
    groups = np.arange(n) % 3
    originals = np.where(groups[:, None] == groups[None, :], 0.8, 0.0) + rng.normal(size=(n, n)) * 0.05
    np.fill_diagonal(originals, -np.inf)
    consensus = (groups[:, None] == groups[None, :]) & ~np.eye(n, dtype=bool)
    return Problem(
        copy_scores={"good": good, "noise": noise},
        own=own,
        original_scores={"good": originals, "noise": rng.normal(size=(n, n))},
        consensus=consensus,
    )


def test_a_view_that_adds_nothing_gets_weight_zero(rng):
    problem = toy_problem(rng)
    weights = coordinate_ascent(problem, ["good", "noise"], TuneOptions())
    assert weights["noise"] == 0 and weights["good"] > 0
    tuned = objective(problem, weights, k=5, category_weight=1.0)
    equal = objective(problem, {"good": 1.0, "noise": 1.0}, k=5, category_weight=1.0)
    assert tuned["mrr"] == pytest.approx(1.0) and tuned["J"] > equal["J"]


@pytest.mark.slow
def test_a_small_catalog_is_not_tuned(tmp_path, rng, monkeypatch, capsys):
    records = write_thumbnails(tmp_path, rng, n=20)
    model = tmp_path / "model"
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    argv = ["--model_save_path", str(model), "--views", "hog,tiny", "--im_height", "48", "--im_width", "48"]
    assert train_main(argv + ["--no_progress"], stdin=stdin, stdout=io.StringIO()) == 0
    assert index_main(["--model_save_path", str(model)]) == 0
    meta = json.loads((model / "index" / "index.json").read_text())
    assert meta["tuning"] is None and meta["weights"] == {"hog": 1.0, "tiny": 1.0}


def test_consensus_needs_a_majority_of_views():
    a = np.array([[0.0, 0.9, 0.8, 0.1]])
    b = np.array([[0.0, 0.9, 0.1, 0.8]])
    c = np.array([[0.0, 0.9, 0.8, 0.1]])
    np.testing.assert_array_equal(
        consensus_neighbours({"a": a, "b": b, "c": c}, k=2), [[False, True, True, False]]
    )


def write_thumbnails(folder, rng, n=60):
    """Three kinds of thumbnails (disc, bar, square) in random colours; records name their files."""
    records = []
    yy, xx = np.mgrid[:48, :48]
    for i in range(n):
        image = np.full((48, 48, 3), rng.integers(0, 80, 3), np.uint8)
        colour = rng.integers(150, 256, 3)
        kind = i % 3
        if kind == 0:
            image[(yy - 24) ** 2 + (xx - 24) ** 2 < 150] = colour
        elif kind == 1:
            image[6:42, 20:28] = colour
        else:
            image[10:38, 10:38] = colour
        path = folder / f"item{i:02d}.png"
        save_image(str(path), image)
        records.append({"id": f"item{i:02d}", "image": path.name, "thumbnail": str(path), "kind": kind})
    return records


@pytest.mark.slow
def test_fusion_py_tunes_stores_the_report_and_no_tune_does_not(tmp_path, rng, monkeypatch, capsys):
    records = write_thumbnails(tmp_path, rng)
    model = tmp_path / "model"
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    argv = ["--model_save_path", str(model), "--views", "hog,tiny", "--im_height", "48", "--im_width", "48"]
    assert train_main(argv + ["--no_progress"], stdin=stdin, stdout=io.StringIO()) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert index_main(["--model_save_path", str(model), "--tune_images", "12"]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = json.loads((model / "index" / "index.json").read_text())
    tuning = meta["tuning"]
    assert summary["tuning"] == tuning and set(tuning["weights"]) == {"hog", "tiny"}
    assert (
        tuning["copies"] == 24 and tuning["catalog_items"] == 60 and set(tuning["alone"]) == {"hog", "tiny"}
    )
    assert meta["views"] == tuning["views"] and meta["whiten"] == tuning["whiten"]
    assert tuning["tuned"]["J"] >= tuning["equal"]["J"] - TuneOptions().tolerance
    assert tuning["seconds"] > 0
    assert index_main(["--model_save_path", str(model), "--weights", "hog=2"]) == 0  # weights win
    meta = json.loads((model / "index" / "index.json").read_text())
    assert meta["tuning"] is None and meta["weights"] == {"hog": 2.0, "tiny": 1.0}
    assert index_main(["--model_save_path", str(model), "--no_tune"]) == 0
    meta = json.loads((model / "index" / "index.json").read_text())
    assert meta["tuning"] is None and meta["weights"] == {"hog": 1.0, "tiny": 1.0}
