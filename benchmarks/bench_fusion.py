#!/usr/bin/env python3
"""Fusion on Fashion-MNIST, sized for 2 cores: every registry view, equal-weight fusion, the
unsupervised tuned fusion (simfusion.search.tune) and query-side re-ranking, against raw pixels.

Catalog: `--catalog` Fashion-MNIST TEST images drawn with `--seed`, upscaled to 64 px RGB (the
product reads thumbnails; 28 px is too small for VGG16's block 3); queries: `--queries` of them,
each left out of its own results; relevant = same class. No labels are used to train or tune:
the thumbnail autoencoder and the student are trained on the catalog itself (the student on
k-means pseudo-labels of hed_vgg16 + hog), the tuning sees only augmented copies of catalog items.

    python benchmarks/bench_fusion.py --catalog 2000 --queries 1000 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._report import load_average, machine, publish, today  # noqa: E402

SECTION = "fusion_fashion_mnist"


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return np.stack(
        [cv2.resize(i, (size, size), interpolation=cv2.INTER_LINEAR)[..., None].repeat(3, -1) for i in images]
    )


def encoders_for(catalog: np.ndarray, *, epochs: int, seed: int, timings: dict) -> dict:
    """The product's encoders of every default view (and hed block 4), trained on the catalog."""
    from simfusion.learn.encoders import AutoencoderEncoder, ComputedEncoder, PretrainedEncoder
    from simfusion.learn.options import TrainOptions
    from simfusion.learn.trainer import train_view
    from simfusion.views.registry import VIEWS

    encoders = {}
    for name in ("hed_vgg16", "hed_vgg16_block4"):
        opts = VIEWS[name].options
        encoders[name] = PretrainedEncoder(
            input_shape=catalog.shape[1:],
            block=opts["block"],
            grid=opts["grid"],
            size=opts["size"],
            pooling="sqrt",
        )
    for name in ("hog", "tiny", "mobilenet_coco"):
        encoders[name] = ComputedEncoder(VIEWS[name].compute, model_name=name)
    started = time.perf_counter()
    model, _ = train_view(catalog, options=TrainOptions(epochs=epochs, seed=seed), name="thumbnail")
    encoders["thumbnail"] = AutoencoderEncoder(model)
    timings["thumbnail autoencoder (train)"] = time.perf_counter() - started
    return encoders


def encode_all(encoders: dict, images: np.ndarray, timings: dict | None = None) -> dict:
    out = {}
    for name, encoder in encoders.items():
        started = time.perf_counter()
        out[name] = np.concatenate([encoder(images[i : i + 100]) for i in range(0, len(images), 100)])
        if timings is not None:
            timings[f"{name} (encode {len(images)})"] = time.perf_counter() - started
    return out


def add_student(encoders, maps, catalog, *, seed, timings):
    from simfusion.learn.options import TrainOptions
    from simfusion.learn.students import StudentEncoder, fit_student
    from simfusion.views.registry import VIEWS

    spec = VIEWS["student"].options
    started = time.perf_counter()
    model, _ = fit_student(
        catalog,
        {t: maps[t] for t in spec["teachers"]},
        options=TrainOptions(seed=seed),
        clusters=spec["clusters"],
    )
    encoders["student"] = StudentEncoder(model)
    timings["student (k-means + train)"] = time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from simfusion.data.fashion_mnist import load_fashion_mnist
    from simfusion.evaluate.protocol import baseline_vectors, draw_queries, rank_methods, score_rankings
    from simfusion.evaluate.report import format_table
    from simfusion.learn.data import fit_image
    from simfusion.search.augment import augmented_copies
    from simfusion.search.rerank import rerank
    from simfusion.search.tune import TuneOptions, tune_vectors
    from simfusion.search.vectors import fit_transform, fuse
    from simfusion.views.registry import DEFAULT_VIEWS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2, help="thumbnail autoencoder epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_write", action="store_true")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    load = load_average()
    images, labels = load_fashion_mnist("test")
    rows = np.sort(np.random.default_rng(args.seed).choice(len(images), args.catalog, replace=False))
    catalog, labels = upscale(images[rows], 64), labels[rows]
    query_rows = draw_queries(len(catalog), args.queries, seed=args.seed)
    timings: dict[str, float] = {}

    encoders = encoders_for(catalog, epochs=args.epochs, seed=args.seed, timings=timings)
    maps = encode_all(encoders, catalog, timings)
    add_student(encoders, maps, catalog, seed=args.seed, timings=timings)
    maps["student"] = encode_all({"student": encoders["student"]}, catalog, timings)["student"]
    views = ["thumbnail", "hed_vgg16", "hed_vgg16_block4", "hog", "tiny", "mobilenet_coco", "student"]
    defaults = list(DEFAULT_VIEWS)

    started = time.perf_counter()
    options = TuneOptions(seed=args.seed)
    sample = np.sort(np.random.default_rng(args.seed).choice(len(catalog), options.images, replace=False))
    copies, sources, kinds = augmented_copies(list(catalog[sample]), copies=options.copies, seed=args.seed)
    copy_maps = encode_all(
        encoders, np.stack([fit_image(c, height=64, width=64, channels=3) for c in copies])
    )
    pooled, _ = fit_transform({v: maps[v] for v in views})
    report = tune_vectors(
        {v: pooled[v] for v in defaults},
        {v: copy_maps[v] for v in defaults},
        own=sample[sources],
        originals=sample,
        options=options,
        kinds=kinds,
        start=started,
    )
    timings["tuning (copies encoded + search)"] = time.perf_counter() - started
    with_mobilenet = [*defaults, "mobilenet_coco"]  # the COCO detector's backbone: does it earn a place?
    report_mobilenet = tune_vectors(
        {v: pooled[v] for v in with_mobilenet},
        {v: copy_maps[v] for v in with_mobilenet},
        own=sample[sources],
        originals=sample,
        options=options,
        kinds=kinds,
    )

    k = 100
    plain = pooled
    whitened, _ = fit_transform({v: maps[v] for v in views}, whiten=True, whiten_dim=256)
    results = score_rankings(rank_methods({v: plain[v] for v in views}, query_rows, k=k), labels, query_rows)
    base = baseline_vectors(images[rows][..., None], pca_dim=128)
    results.update(
        score_rankings(
            rank_methods({"baseline: pixels (28 px)": base["pixels"]}, query_rows, k=k), labels, query_rows
        )
    )
    fusions = {
        "fused: equal weights (all seven views)": fuse(plain, dict.fromkeys(views, 1.0)),
        "fused: equal weights (default views)": fuse(
            {v: plain[v] for v in defaults}, dict.fromkeys(defaults, 1.0)
        ),
        "fused: equal weights, whitened": fuse(
            {v: whitened[v] for v in defaults}, dict.fromkeys(defaults, 1.0)
        ),
    }
    tuned_space = whitened if report["whiten"] else plain
    kept = report["views"]
    tuned = fuse({v: tuned_space[v] for v in kept}, {v: report["weights"][v] for v in kept})
    fusions["fused: tuned (default views)"] = tuned
    space = whitened if report_mobilenet["whiten"] else plain
    fusions["fused: tuned (default views + mobilenet_coco)"] = fuse(
        {v: space[v] for v in report_mobilenet["views"]},
        {v: report_mobilenet["weights"][v] for v in report_mobilenet["views"]},
    )
    results.update(score_rankings(rank_methods(fusions, query_rows, k=k), labels, query_rows))
    for method in ("kreciprocal", "diffusion"):
        started = time.perf_counter()
        ranked = rerank(tuned[query_rows], tuned, method=method, depth=k + 1)
        ranked = np.stack([[r for r in row if r != q][:k] for row, q in zip(ranked, query_rows, strict=True)])
        timings[f"rerank {method} ({len(query_rows)} queries)"] = time.perf_counter() - started
        results.update(score_rankings({f"fused: tuned + {method} re-ranking": ranked}, labels, query_rows))

    table = format_table({m: {key: v[key] for key in ("P@10", "mAP@100")} for m, v in results.items()})
    singles = [m for m in results if m in views]
    best = max(singles, key=lambda m: results[m]["P@10"])
    weights = ", ".join(f"{v} {w:g}" for v, w in report["weights"].items())
    alone = ", ".join(f"{v} {r['J']:.3f}" for v, r in report["alone"].items())
    timing_lines = "\n".join(f"- {name}: {seconds:.0f} s" for name, seconds in timings.items())
    equal_j, tuned_j, whole = report["equal"]["J"], report["tuned"]["J"], time.perf_counter() - began
    command = "python benchmarks/bench_fusion.py " + (
        f"--catalog {args.catalog} --queries {args.queries} --epochs {args.epochs}"
    )
    text = f"""## Fusion on Fashion-MNIST: every view, equal weights, tuned without labels

Catalog: {args.catalog:,} Fashion-MNIST test images (seed {args.seed}) at 64 px RGB; {len(query_rows)} queries
from it, each left out of its own results; relevant = same class; mAP@100 as in the 10k protocol.
The thumbnail autoencoder (default contrastive objective, {args.epochs} epochs) and the student
(k-means pseudo-labels of hed_vgg16 + hog) are trained on the catalog, without labels. The default
views are {", ".join(defaults)}; hed_vgg16_block4 and mobilenet_coco (the COCO detector's
MobileNetV3 backbone, block 5 on a 4x4 grid) are shown for comparison. Tuning: {len(sources)}
augmented copies of {options.images} catalog items ({", ".join(sorted(set(kinds)))}), simfusion.search.tune.

{table}

Tuned weights: {weights}; whitening: {report["whiten"]}. Tuning objective J (MRR of the copies'
sources + consensus precision@10) alone: {alone}; equal {equal_j:.3f}; tuned {tuned_j:.3f}.
Best single view: {best} (P@10 {results[best]["P@10"]:.4f}, mAP@100 {results[best]["mAP@100"]:.4f}).

Time on this machine ({machine()}; load average at the start {load}; whole run {whole:.0f} s):
{timing_lines}

Date: {today()}. Reproduce: `{command}`
"""
    return publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
