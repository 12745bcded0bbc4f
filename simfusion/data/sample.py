"""Build the small sample catalog the project ships (local_test_data/) from data installed locally.

Fashion-MNIST test images (Debian's dataset-fashion-mnist), the colour photos bundled with
scikit-image and scikit-learn, and two deliberately broken records. Nothing is downloaded; the
same seed gives the same files.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from simfusion.data.fashion_mnist import CLASS_NAMES
from simfusion.io.atomic import write_bytes
from simfusion.io.images import load_image, save_image

log = logging.getLogger(__name__)

Record = dict[str, Any]

JPEG_QUALITY = 92
PHOTO_MAX_SIDE = 512
QUERY_CLASS = "sneaker"
FASHION_SOURCE = "fashion-mnist"
FASHION_LICENCE = "MIT (Copyright (c) 2017 Zalando SE)"
BROKEN_NOTE = "deliberately broken, to show error records"
PRICE_NOTE = "fake: made up from the seed, for demos"
# Price ranges (EUR, whole part) per class, only so the demo records look like a shop's.
PRICE_RANGES = {
    "t-shirt": (8, 30),
    "trouser": (20, 80),
    "pullover": (20, 70),
    "dress": (20, 120),
    "coat": (50, 250),
    "sandal": (15, 60),
    "shirt": (15, 60),
    "sneaker": (30, 150),
    "bag": (15, 200),
    "ankle-boot": (40, 180),
}
_FASHION_FILE = re.compile(r"fmnist-test-\d+\.jpg")


@dataclass(frozen=True)
class Photo:
    """A colour photo shipped inside an installed package, with what we know of its licence."""

    name: str
    package: str
    file: str
    category: str
    source: str
    licence: str
    credit: str


PHOTOS = (
    Photo(
        "astronaut",
        "skimage",
        "data/astronaut.png",
        "person",
        "scikit-image data.astronaut",
        "public domain",
        "NASA (Great Images database): astronaut Eileen Collins; no known copyright restrictions",
    ),
    Photo(
        "chelsea",
        "skimage",
        "data/chelsea.png",
        "cat",
        "scikit-image data.chelsea",
        "CC0",
        "Stefan van der Walt (photographer)",
    ),
    Photo(
        "coffee",
        "skimage",
        "data/coffee.png",
        "cup",
        "scikit-image data.coffee",
        "CC0",
        "Rachel Michetti (photographer), courtesy of Pikolo Espresso Bar",
    ),
    Photo(
        "rocket",
        "skimage",
        "data/rocket.jpg",
        "rocket",
        "scikit-image data.rocket",
        "public domain",
        "SpaceX: launch of DSCOVR on Falcon 9, released by SpaceX into the public domain",
    ),
    Photo(
        "motorcycle",
        "skimage",
        "data/motorcycle_left.png",
        "motorcycle",
        "scikit-image data.stereo_motorcycle (left image)",
        "no licence stated; cite Scharstein et al., GCPR 2014",
        "Middlebury 2014 stereo benchmark (N. Nesic, P. Westling, X. Wang, Y. Kitajima, "
        "G. Krathwohl, D. Scharstein, Middlebury College), down-sampled by scikit-image",
    ),
    Photo(
        "hubble_deep_field",
        "skimage",
        "data/hubble_deep_field.jpg",
        "galaxy",
        "scikit-image data.hubble_deep_field",
        "public domain",
        "NASA (HubbleSite): Hubble eXtreme Deep Field",
    ),
    Photo(
        "retina",
        "skimage",
        "data/retina.jpg",
        "eye",
        "scikit-image data.retina",
        "CC0 1.0",
        "Mikael Häggström, via Wikimedia Commons (Fundus photograph of normal left eye)",
    ),
    Photo(
        "immunohistochemistry",
        "skimage",
        "data/ihc.png",
        "tissue",
        "scikit-image data.immunohistochemistry",
        "no known copyright restrictions",
        "Center for Microscopy And Molecular Imaging (CMMI)",
    ),
    Photo(
        "china",
        "sklearn",
        "datasets/images/china.jpg",
        "building",
        "scikit-learn datasets.load_sample_image('china.jpg')",
        "CC BY 2.0",
        "danielbuechele on Flickr (https://www.flickr.com/photos/danielbuechele/6061409035)",
    ),
    Photo(
        "flower",
        "sklearn",
        "datasets/images/flower.jpg",
        "flower",
        "scikit-learn datasets.load_sample_image('flower.jpg')",
        "CC BY 2.0",
        "vultilion on Flickr (https://www.flickr.com/photos/vultilion/6056698931); "
        "scikit-learn's README.txt credits danielbuechele, but its link is vultilion's",
    ),
)


def select_fashion(
    labels: np.ndarray, *, per_class: int, seed: int, query_class: str = QUERY_CLASS
) -> tuple[dict[int, np.ndarray], int]:
    """Pick `per_class` indices of each label, sorted, and one query index of `query_class` not picked.

    Each class is shuffled by its own generator (seed, label), so a larger `per_class` keeps the
    smaller selection, and the query (the last of its class's shuffle) never changes with it.
    """
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if per_class < 1 or per_class >= counts.min():
        raise ValueError(f"per_class must be between 1 and {counts.min() - 1} (one is kept for the query)")
    chosen: dict[int, np.ndarray] = {}
    query = -1
    for label, name in enumerate(CLASS_NAMES):
        order = np.random.default_rng([seed, label]).permutation(np.flatnonzero(labels == label))
        chosen[label] = np.sort(order[:per_class])
        if name == query_class:
            query = int(order[-1])
    if query < 0:
        raise ValueError(f"query_class must be one of {', '.join(CLASS_NAMES)}, not {query_class!r}")
    return chosen, query


def fake_price(index: int, category: str, *, seed: int) -> float:
    """A made-up but repeatable price for one Fashion-MNIST item."""
    low, high = PRICE_RANGES[category]
    whole = int(np.random.default_rng([seed, 1_000_003, index]).integers(low, high + 1))
    return round(whole + 0.99, 2)


def upscale(image: np.ndarray, *, size: int) -> np.ndarray:
    """A (28, 28) gray image as (size, size, 3) RGB uint8, resized with Lanczos."""
    from PIL import Image

    gray = Image.fromarray(image, mode="L").resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(gray.convert("RGB"))


def shrink(image: np.ndarray, *, max_side: int) -> np.ndarray:
    """An RGB image resized (Lanczos) so that its long side is at most `max_side`."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.LANCZOS))


def fashion_id(index: int) -> str:
    return f"fmnist-test-{index:05d}"


def fashion_record(index: int, label: int, *, seed: int) -> Record:
    """The catalog record of one Fashion-MNIST test image (its image path included)."""
    category = CLASS_NAMES[label]
    item_id = fashion_id(index)
    return {
        "id": item_id,
        "image": f"fashion/{category}/{item_id}.jpg",
        "category": category,
        "source": f"{FASHION_SOURCE} test #{index}",
        "licence": FASHION_LICENCE,
        "label": label,
        "price": fake_price(index, category, seed=seed),
        "currency": "EUR",
        "price_note": PRICE_NOTE,
    }


def photo_record(photo: Photo) -> Record:
    return {
        "id": f"photo-{photo.name}",
        "image": f"photos/{photo.name}.jpg",
        "category": photo.category,
        "source": photo.source,
        "licence": f"{photo.licence}; {photo.credit}",
    }


def package_file(package: str, relpath: str) -> str | None:
    """Path of a file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, relpath)
        if os.path.isfile(path):
            return path
    return None


def write_photos(output: str, *, max_side: int = PHOTO_MAX_SIDE) -> list[Record]:
    """Copy the bundled photos that are installed, shrunk, as JPEG; a missing one is skipped."""

    records = []
    for photo in PHOTOS:
        path = package_file(photo.package, photo.file)
        if path is None:
            log.warning("photo %s: %s/%s is not installed; skipped", photo.name, photo.package, photo.file)
            continue
        record = photo_record(photo)
        image = shrink(load_image(path), max_side=max_side)
        save_image(os.path.join(output, record["image"]), image, quality=JPEG_QUALITY)
        records.append(record)
    return records


def write_fashion(
    output: str,
    images: np.ndarray,
    labels: np.ndarray,
    chosen: dict[int, np.ndarray],
    *,
    size: int,
    seed: int,
) -> list[Record]:
    """Write the chosen Fashion-MNIST images, class by class, and remove ones left from older runs."""

    records = []
    for label in sorted(chosen):
        for index in chosen[label]:
            record = fashion_record(int(index), int(labels[index]), seed=seed)
            save_image(
                os.path.join(output, record["image"]), upscale(images[index], size=size), quality=JPEG_QUALITY
            )
            records.append(record)
    keep = {os.path.relpath(record["image"], "fashion") for record in records}
    remove_stale(os.path.join(output, "fashion"), keep=keep)
    return records


def remove_stale(folder: str, *, keep: set[str]) -> None:
    """Delete our own generated fashion files (`<category>/fmnist-test-*.jpg`) not in `keep`."""
    removed = 0
    for current, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(current, name)
            if _FASHION_FILE.fullmatch(name) and os.path.relpath(path, folder) not in keep:
                os.unlink(path)
                removed += 1
    if removed:
        log.info("removed %d fashion images left from an earlier run", removed)


def write_broken(output: str, *, cut_from: str) -> list[Record]:
    """A JPEG cut in half and a record whose image does not exist."""
    with open(os.path.join(output, cut_from), "rb") as stream:
        data = stream.read()
    write_bytes(os.path.join(output, "broken", "truncated.jpg"), data[: len(data) // 2])
    missing = os.path.join(output, "broken", "missing.jpg")
    if os.path.exists(missing):
        os.unlink(missing)
    return [
        {
            "id": "broken-truncated",
            "image": "broken/truncated.jpg",
            "category": "unknown",
            "source": f"first half of {cut_from}",
            "licence": "as the image it was cut from",
            "note": BROKEN_NOTE,
        },
        {
            "id": "broken-missing",
            "image": "broken/missing.jpg",
            "category": "unknown",
            "source": "none: the file does not exist",
            "licence": "none",
            "note": BROKEN_NOTE,
        },
    ]


def write_jsonl(path: str, records: Iterable[Record]) -> None:
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_bytes(path, text.encode("utf-8"))


def attribution_text(photos: list[Record], fashion_count: int, *, command: str) -> str:
    """ATTRIBUTION.md: where every file came from, under which licence, and how to rebuild it."""
    by_name = {f"photo-{photo.name}": photo for photo in PHOTOS}
    lines = [
        "# Sample data: sources and licences",
        "",
        "Everything here was made from data installed on the machine; nothing was downloaded.",
        "Rebuild the folder with:",
        "",
        "```",
        command,
        "```",
        "",
        "## fashion/ and query.jpg: Fashion-MNIST",
        "",
        f"{fashion_count} catalog images and the query image come from the test split of Fashion-MNIST",
        "(Han Xiao, Kashif Rasul, Roland Vollgraf: *Fashion-MNIST: a Novel Image Dataset for Benchmarking",
        "Machine Learning Algorithms*, arXiv:1708.07747, 2017), read from Debian's package",
        "`dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`).",
        "Licence: MIT, Copyright (c) 2017 Zalando SE. Each record's `source` names the image's index in",
        "the test split (`fashion-mnist test #1234`); the 28x28 images were upscaled with Lanczos and",
        "saved as RGB JPEG, light product on black as in the dataset. The `price` fields are made up.",
        "",
        "## photos/: photos bundled with scikit-image and scikit-learn",
        "",
        "Shrunk so the long side is at most 512 px and saved as JPEG.",
        "",
        "| file | source | licence | credit |",
        "|---|---|---|---|",
    ]
    for record in photos:
        photo = by_name[record["id"]]
        lines.append(f"| `{record['image']}` | {photo.source} | {photo.licence} | {photo.credit} |")
    lines += [
        "",
        "The scikit-image licences are those stated in the docstrings of `skimage.data`; the",
        "scikit-learn ones are from `sklearn/datasets/images/README.txt`. scikit-image states no licence",
        "for the Middlebury motorcycle; it cites D. Scharstein et al., *High-resolution stereo datasets",
        "with subpixel-accurate ground truth*, GCPR 2014 (https://vision.middlebury.edu/stereo/data/scenes2014/).",
        "Check its terms before redistributing it beyond this project's tests.",
        "",
        "## broken/",
        "",
        "Deliberately broken records, to show error handling: `broken/truncated.jpg` is the first half of",
        "another image in this folder, and `broken/missing.jpg` does not exist.",
        "",
    ]
    return "\n".join(lines)
