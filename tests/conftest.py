"""Shared fixtures: small seeded images written to tmp_path."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from simfusion.io.store import store_path, write_store
from simfusion.search.build import build_catalog_index, index_path
from simfusion.search.index_files import save_index

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DATA = os.path.join(REPO, "local_test_data")
CATEGORIES = ("sneaker", "sandal", "bag")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def square_image(
    height: int = 60, width: int = 80, *, box=(20, 10, 50, 40), colour=(200, 30, 30), background=255
):
    """A flat background with one coloured rectangle at `box` [x0, y0, x1, y1]."""
    image = np.full((height, width, 3), background, dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour
    return image


def synthetic_store(folder, n=40, *, seed=0, created="2026-01-01T00:00:00+00:00"):
    """A seeded store in the agreed layout: two views of (n, 2, 2, c) maps clustered by category."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(CATEGORIES), size=n)
    centres = {"thumbnail": rng.standard_normal((3, 2, 2, 8)), "edges": rng.standard_normal((3, 2, 2, 4))}
    ids = [f"item-{i:03d}" for i in range(n)]
    records = [
        {"id": key, "image": f"{key}.jpg", "category": CATEGORIES[c], "brand": "acme" if i % 2 else "zeta"}
        for i, (key, c) in enumerate(zip(ids, labels, strict=True))
    ]
    views = {}
    for view, centre in centres.items():
        maps = (centre[labels] + 0.3 * rng.standard_normal((n, *centre.shape[1:]))).astype(np.float32)
        attrs = {
            "model": f"{view}.keras",
            "input_size": [32, 32, 3],
            "kind": "autoencoder",
            "objective": "plain",
            "created": created,
        }
        views[view] = (ids, maps, attrs)
    folder.mkdir(parents=True, exist_ok=True)
    write_store(store_path(folder), catalog_records=records, views=views, compression=None)
    return ids, records, views


def synthetic_model(folder, **store_options):
    """A synthetic store, its index, and a training.json naming its views (no trained encoders)."""
    ids, records, views = synthetic_store(folder, **store_options)
    save_index(build_catalog_index(store_path(folder)), index_path(folder))
    info = {
        "input_size": [32, 32, 3],
        "views": {view: {"kind": "autoencoder", "source": view} for view in views},
    }
    with open(os.path.join(folder, "training.json"), "w") as out:
        json.dump(info, out)
    return ids, records, views


@pytest.fixture(scope="session")
def coco_models() -> str:
    """The model cache with the COCO detectors, fetched as CI's set-up does; skips where it cannot."""
    from simfusion.models.cache import FetchError, fetch_models

    try:
        return fetch_models()
    except (FetchError, OSError) as exc:
        pytest.skip(f"the COCO models could not be fetched: {exc}")
