#!/usr/bin/env python3
"""Per-image cost of each registry view's encoder on 128 px thumbnails (what a query and the
catalog encoding pay per view). Synthetic seeded thumbnails (benchmarks/bench_training.py's),
batches of 64, best of `--passes` passes after a warm-up call; trained views are timed with an
untrained model of the same shape (the same cost).

    python benchmarks/bench_view_cost.py --n 128
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._report import load_average, machine, publish, today  # noqa: E402
from benchmarks.bench_training import SyntheticImages  # noqa: E402

SECTION = "view_cost"


def encoders(size: int) -> dict:
    from simfusion.learn.autoencoder import build_autoencoder
    from simfusion.learn.encoders import AutoencoderEncoder, ComputedEncoder, PretrainedEncoder
    from simfusion.learn.students import STUDENT_SIZE, StudentEncoder, build_student
    from simfusion.views.registry import COMPUTED, VIEWS

    out = {"thumbnail (autoencoder)": AutoencoderEncoder(build_autoencoder((size, size, 3), latent=16))}
    for name in ("hed_vgg16", "hed_vgg16_block4"):
        o = VIEWS[name].options
        out[f"{name} ({o['block']} at {o['size']} px, {o['grid']}x{o['grid']} sqrt)"] = PretrainedEncoder(
            input_shape=(size, size, 3), block=o["block"], grid=o["grid"], size=o["size"], pooling="sqrt"
        )
    out["hed_vgg16 before (block5 at 128 px, 2x2 avg+max)"] = PretrainedEncoder(
        input_shape=(size, size, 3), block="block5", grid=2
    )
    # every computed view (the COCO and MoveNet backbones need `make models`)
    for name, view in VIEWS.items():
        if view.kind == COMPUTED:
            out[name] = ComputedEncoder(view.compute, model_name=name)
    out["student"] = StudentEncoder(build_student((STUDENT_SIZE, STUDENT_SIZE, 3), 50))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--no_write", action="store_true")
    args = parser.parse_args(argv)
    from simfusion.models import coco, pose

    load = load_average()
    images = SyntheticImages(args.n, 128).load(np.arange(args.n))
    rows = []
    for name, encoder in encoders(128).items():
        encoder(images[:8])  # warm-up: model build, tracing
        best = float("inf")
        for _ in range(args.passes):
            coco._recent.clear()  # the MobileNet (and MoveNet) views share their pass: time each one
            pose._recent.clear()  # paying for it
            start = time.perf_counter()
            for i in range(0, len(images), 64):
                encoder(images[i : i + 64])
            best = min(best, time.perf_counter() - start)
        rows.append(f"| {name} | {args.n / best:,.0f} | {1000 * best / args.n:.2f} |")
        print(rows[-1], file=sys.stderr)
    text = "\n".join(
        [
            "## view cost",
            "",
            f"Encoding {args.n} synthetic 128x128 RGB thumbnails per view, batches of 64, best of "
            f"{args.passes} passes after a warm-up; each MobileNet or MoveNet view pays for the whole pass "
            f"(in the product the three MobileNet views of a batch share one, and so do the two MoveNet "
            f"views). Machine: {machine()}; load "
            f"average at the start {load} (shared cores: rough). Date: {today()}.",
            "",
            "| view | images/s | ms/image |",
            "|---|---:|---:|",
            *rows,
            "",
            f"Reproduce: `python benchmarks/bench_view_cost.py --n {args.n}`",
        ]
    )
    return publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
