"""Shared fixtures: small seeded images written to tmp_path."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

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
    """The model cache (COCO detectors, MoveNet), fetched as CI's set-up does; skips where it cannot."""
    from simfusion.models.cache import FetchError, fetch_models

    try:
        return fetch_models()
    except (FetchError, OSError) as exc:
        pytest.skip(f"the COCO models could not be fetched: {exc}")


SAMPLE_CLASSES = ("sneaker", "trouser", "bag", "dress", "sandal")


def sample_records(per_class: int = 4) -> list[dict]:
    """`per_class + 1` Fashion-MNIST sample records of each of SAMPLE_CLASSES (local_test_data)."""
    records = []
    with open(os.path.join(SAMPLE_DATA, "catalog.jsonl")) as stream:
        for record in map(json.loads, stream):
            if record.get("category") in SAMPLE_CLASSES and "fashion" in record.get("image", ""):
                if sum(r["category"] == record["category"] for r in records) < per_class + 1:
                    records.append(record)
    return records


def train_tiny_model(out) -> dict:
    """OUT/model trained 1 epoch at 32x32 on 20 sample images (thumbnail and foreground views),
    with OUT/views/thumbnail beside it as the pipeline lays it out; one image per class held out."""
    from simfusion.cli.index import main as fusion_main
    from simfusion.cli.train import main as train_main
    from simfusion.views.saliency import saliency_records
    from simfusion.views.thumbnail import thumbnail_record

    records = sample_records()
    held_out = [next(r for r in reversed(records) if r["category"] == c) for c in SAMPLE_CLASSES]
    catalog = [r for r in records if r not in held_out]
    views = os.path.join(out, "views")
    for record in catalog:
        thumbnail_record(
            record, base_path=SAMPLE_DATA, output_path=os.path.join(views, "thumbnail"), height=32, width=32
        )
    catalog = saliency_records(
        catalog, base_path=os.path.join(views, "thumbnail"), output_path=views, views=("foreground",)
    )
    model = os.path.join(out, "model")
    argv = ["--model_save_path", model, "--base_image_path_for_model", views, "--im_height", "32"]
    argv += ["--im_width", "32", "--views", "thumbnail,foreground", "--epochs", "1", "--batch_size", "8"]
    stdin = io.StringIO("\n".join(json.dumps(r) for r in catalog))
    assert train_main([*argv, "--no_progress"], stdin=stdin, stdout=io.StringIO()) == 0
    assert fusion_main(["--model_save_path", model, "--whiten"]) == 0
    return {"out": str(out), "model": model, "catalog": catalog, "held_out": held_out}


TMPFS_SIZE = "3m"


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs under tmp_path (skips where mounting needs root and this is not)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(
            f"cannot mount a small tmpfs for the full-disk test ({done.stderr.strip() or 'not root'})"
        )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave: int) -> None:
    """Fill `disk` with one file until about `leave` bytes are free."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


def png_header(width, height, *, colour_type=0, bit_depth=1):
    """A PNG that declares a size and holds no pixel data: a few dozen bytes for any size."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
