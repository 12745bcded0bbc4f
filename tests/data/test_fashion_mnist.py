import gzip
import re

import numpy as np
import pytest

from simfusion.data.fashion_mnist import CLASS_NAMES, ROOT_ENV, find_root, load_fashion_mnist


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as out:
        out.write(header + array.astype(np.uint8).tobytes())


def write_split(folder, prefix, images, labels):
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)


@pytest.fixture
def tiny_root(tmp_path):
    rng = np.random.default_rng(0)
    write_split(tmp_path, "train", rng.integers(0, 256, (5, 28, 28)), np.array([9, 0, 3, 7, 1]))
    write_split(tmp_path, "t10k", rng.integers(0, 256, (3, 28, 28)), np.array([2, 8, 5]))
    return tmp_path


@pytest.fixture(scope="module")
def real_root():
    try:
        return find_root()
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


def test_class_names():
    assert len(CLASS_NAMES) == 10
    assert len(set(CLASS_NAMES)) == 10
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", name) for name in CLASS_NAMES)
    assert CLASS_NAMES[0] == "t-shirt"
    assert CLASS_NAMES[7] == "sneaker"
    assert CLASS_NAMES[9] == "ankle-boot"


def test_reads_idx_files(tiny_root):
    images, labels = load_fashion_mnist("test", root=tiny_root)
    assert images.shape == (3, 28, 28)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels.tolist() == [2, 8, 5]
    expected = np.random.default_rng(0)
    expected.integers(0, 256, (5, 28, 28))
    assert np.array_equal(images, expected.integers(0, 256, (3, 28, 28)).astype(np.uint8))


def test_root_from_environment(tiny_root, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tiny_root))
    images, labels = load_fashion_mnist("train")
    assert images.shape == (5, 28, 28)
    assert labels.tolist() == [9, 0, 3, 7, 1]


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)


def test_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_fashion_mnist("validation")


def test_bad_magic_number(tiny_root):
    write_idx(tiny_root / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]), 2051)
    with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
        load_fashion_mnist("test", root=tiny_root)


def test_truncated_file(tiny_root):
    with gzip.open(tiny_root / "t10k-images-idx3-ubyte.gz", "rb") as stream:
        data = stream.read()
    with gzip.open(tiny_root / "t10k-images-idx3-ubyte.gz", "wb") as out:
        out.write(data[:-10])
    with pytest.raises(ValueError, match="expected"):
        load_fashion_mnist("test", root=tiny_root)


@pytest.mark.parametrize(
    ("split", "count", "first_labels"),
    [("test", 10_000, [9, 2, 1, 1, 6]), ("train", 60_000, [9, 0, 0, 3, 0])],
)
def test_real_dataset(real_root, split, count, first_labels):
    images, labels = load_fashion_mnist(split, root=real_root)
    assert images.shape == (count, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (count,)
    assert labels.dtype == np.int64
    assert labels[:5].tolist() == first_labels
    assert np.bincount(labels).tolist() == [count // 10] * 10
    # light product on a black background
    assert images[:, 0, 0].mean() < 5
