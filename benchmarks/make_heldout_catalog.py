"""Write a product catalog the defaults were never tuned on: Fashion-MNIST TRAIN-split items.

    python benchmarks/make_heldout_catalog.py --n 1500 --output /tmp/heldout
    python benchmarks/make_heldout_catalog.py --split test --n 10000 --output /tmp/fmnist10k

`--split test --n 10000` is the whole test split: the Fashion-MNIST protocol's catalog, run
through the product's own commands. `--source digits --n 1380` is a second item source the
defaults never saw: scikit-learn's handwritten digits (benchmarks/_items.py), train split.

Seeded, class-balanced (n / 10 per class), upscaled to --size px JPEGs like the shipped sample;
records (id, image, category) in <output>/catalog.jsonl, for run-training.sh and evaluate.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks._items import SOURCES, item_prefix, load_items  # noqa: E402
from simfusion.data.sample import upscale  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--source", choices=SOURCES, default="fashion")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    images, names, categories = load_items(args.source, args.split)
    names = np.asarray(names)
    rng = np.random.default_rng(args.seed)
    per = args.n // len(categories)
    short = [c for c in categories if (names == c).sum() < per]
    if short:
        parser.error(f"--n {args.n} asks for {per} items of each category; {', '.join(short)} have fewer")
    rows = np.concatenate([rng.choice(np.flatnonzero(names == c), per, replace=False) for c in categories])
    prefix = item_prefix(args.source)
    from PIL import Image

    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "catalog.jsonl"), "w", encoding="utf-8") as out:
        for row in rng.permutation(rows):
            category = str(names[row])
            key = f"{prefix}-{args.split}-{row:05d}"
            rel = f"{args.source}/{category}/{key}.jpg"
            os.makedirs(os.path.join(args.output, os.path.dirname(rel)), exist_ok=True)
            Image.fromarray(upscale(images[row], size=args.size)).save(
                os.path.join(args.output, rel), quality=92
            )
            out.write(json.dumps({"id": key, "image": rel, "category": category}) + "\n")


if __name__ == "__main__":
    main()
