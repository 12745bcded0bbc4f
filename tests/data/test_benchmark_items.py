"""The benchmarks' second item source (scikit-learn's digits) and the held-out catalog writer."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from benchmarks._items import load_items  # noqa: E402


def test_digits_splits_are_disjoint_balanced_and_light_on_black():
    train, train_names, classes = load_items("digits", "train")
    test, test_names, _ = load_items("digits", "test")
    assert classes == [f"digit-{d}" for d in range(10)]
    assert len(train) + len(test) == 1797 and train.shape[1:] == test.shape[1:] == (28, 28)
    assert train.dtype == np.uint8 and train.max() == 255
    counts = np.unique(test_names, return_counts=True)[1]
    assert len(counts) == 10 and counts.min() >= 35  # a fifth of each digit
    assert not {im.tobytes() for im in test} & {im.tobytes() for im in train}
    assert train[:, 0, :].mean() < 1  # the margin around each digit is ground (cubic rings a little)
    again, _, _ = load_items("digits", "test")
    assert np.array_equal(again, test)  # seeded


def test_the_catalog_writer_writes_a_balanced_digits_catalog(tmp_path):
    script = os.path.join(ROOT, "benchmarks", "make_heldout_catalog.py")
    args = [
        sys.executable,
        script,
        "--source",
        "digits",
        "--n",
        "50",
        "--size",
        "64",
        "--output",
        str(tmp_path),
    ]
    subprocess.run(args, check=True, capture_output=True)
    records = [json.loads(line) for line in open(tmp_path / "catalog.jsonl")]
    assert len(records) == 50 and len({r["id"] for r in records}) == 50
    assert sorted({r["category"] for r in records}) == [f"digit-{d}" for d in range(10)]
    assert all(r["id"].startswith("digits-train-") and (tmp_path / r["image"]).is_file() for r in records)
    too_many = [arg if arg != "50" else "5000" for arg in args]
    refused = subprocess.run(too_many, capture_output=True, text=True)
    assert refused.returncode == 2 and "have fewer" in refused.stderr
