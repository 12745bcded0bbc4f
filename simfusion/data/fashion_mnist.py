"""Fashion-MNIST from the local idx files (Debian's dataset-fashion-mnist), as numpy arrays."""

from __future__ import annotations

import gzip
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ROOT_ENV = "SIMFUSION_FASHION_MNIST"

# Slug-friendly names of the ten labels, in label order (0 = T-shirt/top ... 9 = Ankle boot).
CLASS_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC = 2051  # idx3: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # idx1: unsigned bytes, 1 dimension


def find_root(root: str | os.PathLike | None = None, *, split: str | None = None) -> str:
    """The folder holding the idx files: `root`, else $SIMFUSION_FASHION_MNIST, else Debian's path.

    Raises FileNotFoundError, saying how to install the data, when the files of `split` (both
    splits when None) are not there.
    """
    folder = os.fspath(root) if root is not None else os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    names = _FILES[split] if split is not None else _FILES["train"] + _FILES["test"]
    missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}). "
            f"Install it with `apt-get install dataset-fashion-mnist`, or point ${ROOT_ENV} "
            "(or the `root` argument) at a folder holding the four *-ubyte.gz files."
        )
    return folder


def load_fashion_mnist(
    split: str = "train", *, root: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split: images uint8 (N, 28, 28), light product on black, and labels int64 (N,)."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = find_root(root, split=split)
    images_name, labels_name = _FILES[split]
    images = _read_idx(os.path.join(folder, images_name), magic=_IMAGES_MAGIC, ndim=3)
    labels = _read_idx(os.path.join(folder, labels_name), magic=_LABELS_MAGIC, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{folder}: label {labels.max()} is out of range 0-{len(CLASS_NAMES) - 1}")
    log.debug("fashion-mnist %s: %d images of %s", split, len(images), images.shape[1:])
    return images, labels


def _read_idx(path: str, *, magic: int, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: too short for an idx header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: idx magic number {found}, expected {magic}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
