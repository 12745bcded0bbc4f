import json
import os

import numpy as np
import pytest
from conftest import SAMPLE_DATA
from PIL import Image

from simfusion.cli.sample_data import main
from simfusion.data.fashion_mnist import CLASS_NAMES, find_root
from simfusion.data.sample import PRICE_RANGES, fake_price, select_fashion
from simfusion.io.images import ImageError, load_image

BROKEN = {"broken-truncated", "broken-missing"}
SHIPPED = SAMPLE_DATA


def read_jsonl(path):
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    try:
        find_root(split="test")
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    folder = tmp_path_factory.mktemp("sample")
    assert main(["--output", str(folder), "--per_class", "2", "--size", "56", "--log_level", "WARNING"]) == 0
    return folder


def test_every_image_exists_but_the_broken_ones(sample):
    records = read_jsonl(sample / "catalog.jsonl")
    for record in records:
        exists = (sample / record["image"]).is_file()
        assert exists == (record["id"] != "broken-missing"), record["id"]
    assert {r["id"] for r in records if "note" in r} == BROKEN
    assert [r["id"] for r in records[-2:]] == ["broken-truncated", "broken-missing"]


def test_truncated_image_is_unreadable(sample):
    with pytest.raises(ImageError, match="truncated"):
        load_image(sample / "broken" / "truncated.jpg")


def test_ids_unique_and_photos_first(sample):
    records = read_jsonl(sample / "catalog.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    kinds = [r["id"].split("-")[0] for r in records]
    assert kinds == sorted(kinds, key=["photo", "fmnist", "broken"].index)
    assert all({"id", "image", "category", "source", "licence"} <= r.keys() for r in records)


def test_fashion_items(sample):
    fashion = [r for r in read_jsonl(sample / "catalog.jsonl") if r["id"].startswith("fmnist-")]
    assert len(fashion) == 2 * len(CLASS_NAMES)
    assert {r["category"] for r in fashion} == set(CLASS_NAMES)
    for record in fashion:
        assert record["category"] == CLASS_NAMES[record["label"]]
        assert record["image"] == f"fashion/{record['category']}/{record['id']}.jpg"
        assert record["source"] == f"fashion-mnist test #{int(record['id'].rsplit('-', 1)[1])}"
        low, high = PRICE_RANGES[record["category"]]
        assert low <= record["price"] <= high + 1
    with Image.open(sample / fashion[0]["image"]) as image:
        assert (image.size, image.mode, image.format) == ((56, 56), "RGB", "JPEG")


def test_query_not_in_catalog(sample):
    (query,) = read_jsonl(sample / "query.jsonl")
    assert (query["id"], query["image"], query["category"]) == ("query-sneaker", "query.jpg", "sneaker")
    sources = {r["source"] for r in read_jsonl(sample / "catalog.jsonl")}
    assert query["source"] not in sources
    assert load_image(sample / "query.jpg").shape == (56, 56, 3)


def test_attribution_names_the_command(sample):
    text = (sample / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "MIT" in text
    assert "--per_class 2 --size 56 --seed 0" in text


def test_rerun_gives_the_same_files(sample, tmp_path):
    main(["--output", str(tmp_path), "--per_class", "2", "--size", "56", "--log_level", "WARNING"])
    first = read_jsonl(sample / "catalog.jsonl")
    names = ["catalog.jsonl", "query.jsonl", "query.jpg", "broken/truncated.jpg"] + [
        r["image"] for r in first[:-1]
    ]
    for name in names:
        assert (tmp_path / name).read_bytes() == (sample / name).read_bytes(), name


def test_smaller_run_removes_stale_fashion_images(sample, tmp_path):
    main(["--output", str(tmp_path), "--per_class", "3", "--size", "28", "--log_level", "WARNING"])
    main(["--output", str(tmp_path), "--per_class", "1", "--size", "28", "--log_level", "WARNING"])
    assert len(list((tmp_path / "fashion").glob("*/*.jpg"))) == len(CLASS_NAMES)


def test_select_fashion_is_stable():
    labels = np.repeat(np.arange(10), 20)
    small, query = select_fashion(labels, per_class=3, seed=5)
    large, query_again = select_fashion(labels, per_class=10, seed=5)
    assert query == query_again
    assert labels[query] == CLASS_NAMES.index("sneaker")
    for label in range(10):
        assert set(small[label]) <= set(large[label])
        assert (labels[large[label]] == label).all()
        assert query not in large[label]
    other, _ = select_fashion(labels, per_class=3, seed=6)
    assert any(set(small[label]) != set(other[label]) for label in range(10))


def test_select_fashion_keeps_one_for_the_query():
    labels = np.repeat(np.arange(10), 4)
    with pytest.raises(ValueError, match="between 1 and 3"):
        select_fashion(labels, per_class=4, seed=0)


def test_fake_price_is_repeatable():
    assert fake_price(1234, "coat", seed=0) == fake_price(1234, "coat", seed=0)
    prices = {fake_price(index, "coat", seed=0) for index in range(50)}
    assert len(prices) > 10
    assert all(50.99 <= price <= 250.99 and round(price % 1, 2) == 0.99 for price in prices)


def test_shipped_catalog_is_complete():
    path = os.path.join(SHIPPED, "catalog.jsonl")
    if not os.path.exists(path):
        pytest.skip("local_test_data/ has not been generated (python make_sample_data.py)")
    records = read_jsonl(path)
    missing = [r["id"] for r in records if not os.path.isfile(os.path.join(SHIPPED, r["image"]))]
    assert missing == ["broken-missing"]
    fashion = [r for r in records if r["id"].startswith("fmnist-")]
    assert {r["category"] for r in fashion} == set(CLASS_NAMES)
