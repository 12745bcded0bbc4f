"""Item sources for the benchmarks' catalogs and queries: gray items, light on black.

- `fashion`: Fashion-MNIST (28 px; Debian's dataset-fashion-mnist), its own train and test splits.
- `digits`: scikit-learn's bundled handwritten digits (8 px, 1,797 of them), stretched to 28 px;
  a seeded fifth of each digit is the `test` split, the rest `train`. A second item source with
  other shapes and much less detail, so a default chosen on Fashion-MNIST can be checked apart.
"""

from __future__ import annotations

import numpy as np

SOURCES = ("fashion", "digits")
SIDE = 28  # every source's items come out this many pixels square
DIGITS_TEST_SHARE = 0.2


def load_items(source: str, split: str) -> tuple[np.ndarray, list[str], list[str]]:
    """(N, 28, 28) uint8 items, their category names, and the source's categories in label order,
    for `split` "train" or "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    if source == "fashion":
        from simfusion.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

        images, labels = load_fashion_mnist(split)
        return images, [CLASS_NAMES[int(label)] for label in labels], list(CLASS_NAMES)
    if source == "digits":
        return _digits(split)
    raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")


def item_prefix(source: str) -> str:
    """The id prefix of a source's catalog items (fmnist-train-00012, digits-train-00012)."""
    return {"fashion": "fmnist", "digits": "digits"}[source]


def _digits(split: str) -> tuple[np.ndarray, list[str], list[str]]:
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    test = np.zeros(len(digits.target), bool)
    for digit in range(10):
        rows = np.flatnonzero(digits.target == digit)
        test[rng.choice(rows, int(round(len(rows) * DIGITS_TEST_SHARE)), replace=False)] = True
    rows = np.flatnonzero(test if split == "test" else ~test)
    # 0-16 ink on a 0 ground; an 8 px digit fills its frame, so it gets a 2 px margin like MNIST's
    small = (digits.images[rows] * (255 / 16)).astype(np.uint8)
    framed = np.pad(small, ((0, 0), (1, 1), (1, 1)))
    images = np.stack([cv2.resize(im, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC) for im in framed])
    return images, [f"digit-{int(d)}" for d in digits.target[rows]], [f"digit-{d}" for d in range(10)]
