#!/usr/bin/env python3
"""Benchmark: images per second of each view of the saliency stage at thumbnail size.

The images are seeded random crops of scikit-image's astronaut, chelsea and coffee photos, resized
to 128x128 (thumbnails). Timed in memory (no file I/O), best of `--repeat` passes over all images:
the two OpenCV saliency methods, Canny, HED (batched, batch of 16 same-size images, after a warm-up
that loads the network) and the foreground blend (given a saliency map), then `compute_views` with
the stage's defaults (spectral residual + HED + foreground). Writes section `saliency` of BENCHMARKS.md.

    python benchmarks/bench_saliency.py [--n 32] [--size 128] [--repeat 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import machine, publish, today  # noqa: E402

SECTION = "saliency"
PHOTOS = ("astronaut", "chelsea", "coffee")


def make_images(n: int, *, size: int = 128, seed: int = 0) -> list[np.ndarray]:
    """`n` uint8 (size, size, 3) images: seeded square crops (40-90% of the short side) of the photos."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in PHOTOS]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.uniform(0.4, 0.9) * min(height, width))
        y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = np.ascontiguousarray(photo[y : y + side, x : x + side])
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return out


def best_rate(fn, count: int, repeat: int) -> float:
    """Images per second of the fastest of `repeat` runs of `fn()` (which handles `count` images)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="images")
    parser.add_argument("--size", type=int, default=128, help="thumbnail side in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    from simfusion.views.saliency import (
        compute_views,
        edge_map_canny,
        edge_maps_hed,
        foreground_image,
        saliency_map,
    )

    images = make_images(args.n, size=args.size, seed=args.seed)
    maps = [saliency_map(image) for image in images]
    start = time.perf_counter()
    edge_maps_hed(images[:2])
    hed_load = time.perf_counter() - start

    cases = [
        ("saliency: spectral_residual", "`saliency_map(method='spectral_residual')`, per image",
         lambda: [saliency_map(image, method="spectral_residual") for image in images]),
        ("saliency: fine_grained", "`saliency_map(method='fine_grained')`, per image",
         lambda: [saliency_map(image, method="fine_grained") for image in images]),
        ("edges: canny", "`edge_map_canny`, per image", lambda: [edge_map_canny(image) for image in images]),
        ("edges: hed", "`edge_maps_hed`, all images in one call (batches of 16, 16 px reflected margin)",
         lambda: edge_maps_hed(images)),
        ("edges: hed, margin=0", "`edge_maps_hed(margin=0)` (the frame shows as an edge)",
         lambda: edge_maps_hed(images, margin=0)),
        ("foreground", "`foreground_image(fill='white')` given the saliency map",
         lambda: [foreground_image(image, m) for image, m in zip(images, maps, strict=True)]),
        ("all views (defaults)", "`compute_views` spectral_residual + hed + foreground",
         lambda: compute_views(images)),
        ("all views (fast)", "`compute_views` spectral_residual + canny + foreground",
         lambda: compute_views(images, edges="canny")),
    ]  # fmt: skip
    rows = []
    for name, what, fn in cases:
        rate = best_rate(fn, len(images), args.repeat)
        rows.append(f"| {name} | {rate:,.0f} | {1000 / rate:.2f} | {what} |")
        print(rows[-1], file=sys.stderr)

    command = "python benchmarks/bench_saliency.py" + (" " + " ".join(argv) if argv else "")
    text = "\n".join(
        [
            "## saliency",
            "",
            f"Views of {args.n} real photo crops (scikit-image astronaut, chelsea, coffee; seed {args.seed}) "
            f"resized to {args.size}x{args.size} RGB, in memory, best of {args.repeat} passes. "
            f"Machine: {machine()}. Date: {today()}. "
            f"HED's first call (TensorFlow + weights) took {hed_load:.1f} s and is not counted.",
            "",
            "| view | images/s | ms/image | what is timed |",
            "|---|---:|---:|---|",
            *rows,
            "",
            f"Reproduce: `{command}`",
        ]
    )
    return publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
