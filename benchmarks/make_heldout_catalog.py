"""Write a product catalog the defaults were never tuned on: Fashion-MNIST TRAIN-split items.

    python benchmarks/make_heldout_catalog.py --n 1500 --output /tmp/heldout
    python benchmarks/make_heldout_catalog.py --split test --n 10000 --output /tmp/fmnist10k

`--split test --n 10000` is the whole test split: the Fashion-MNIST protocol's catalog, run
through the product's own commands.

Seeded, class-balanced (n / 10 per class), upscaled to --size px JPEGs like the shipped sample;
records (id, image, category) in <output>/catalog.jsonl, for run-training.sh and evaluate.py.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from simfusion.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from simfusion.data.sample import upscale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    images, labels = load_fashion_mnist(split=args.split)
    rng = np.random.default_rng(args.seed)
    rows = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), args.n // 10, replace=False) for c in range(10)]
    )
    from PIL import Image

    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "catalog.jsonl"), "w", encoding="utf-8") as out:
        for row in rng.permutation(rows):
            category = CLASS_NAMES[int(labels[row])]
            rel = f"fashion/{category}/fmnist-{args.split}-{row:05d}.jpg"
            os.makedirs(os.path.join(args.output, os.path.dirname(rel)), exist_ok=True)
            Image.fromarray(upscale(images[row], size=args.size)).save(
                os.path.join(args.output, rel), quality=92
            )
            out.write(
                json.dumps({"id": f"fmnist-{args.split}-{row:05d}", "image": rel, "category": category})
                + "\n"
            )


if __name__ == "__main__":
    main()
