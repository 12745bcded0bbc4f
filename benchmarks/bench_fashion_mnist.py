#!/usr/bin/env python3
"""Benchmark 1: retrieval quality on Fashion-MNIST, every view, the fusion and the baselines.

Catalog: the 10,000 test images. Queries: 1,000 drawn with seed 0, each left out of its own
results; relevant = same class. Autoencoders train on the first `--train` training images
(never on the catalog). Every number comes from the product's own code: simfusion.views.saliency for
the views, simfusion.learn.training for the autoencoders and the pretrained HED-VGG16 encoder,
simfusion.search.vectors for pooling, whitening and fusion, simfusion.evaluate.protocol for the ranking and
metrics (mAP@100 in the hashing convention the reference numbers use).

    python benchmarks/bench_fashion_mnist.py            # about 10-15 minutes on 2 cores
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

from benchmarks._report import machine, publish, today  # noqa: E402

SECTION = "fashion_mnist"


def product_views(images: np.ndarray, *, edges: str) -> dict[str, np.ndarray]:
    """The saliency stage's views of each image: saliency and edge maps as uint8, the foreground."""
    from simfusion.views.saliency import compute_views, to_uint8

    rgb = np.repeat(images[..., None], 3, axis=-1)
    out: dict[str, list[np.ndarray]] = {"saliency": [], "edges": [], "foreground": []}
    for start in range(0, len(rgb), 500):
        for views in compute_views(list(rgb[start : start + 500]), edges=edges, fill="black"):
            out["saliency"].append(to_uint8(views["saliency"]))
            out["edges"].append(to_uint8(views["edges"]))
            out["foreground"].append(views["foreground"][..., 0])
    return {"thumbnail": images, **{view: np.stack(maps) for view, maps in out.items()}}


def autoencoder_maps(train: np.ndarray, catalog: np.ndarray, *, epochs: int, objective: str, latent: int):
    """Train one autoencoder on `train` (N, 28, 28) and encode the catalog: feature maps (N, h, w, c)."""
    from simfusion.learn.encoders import AutoencoderEncoder, encode_images
    from simfusion.learn.options import TrainOptions
    from simfusion.learn.trainer import train_view

    options = TrainOptions(epochs=epochs, batch_size=128, latent=latent, objective=objective, patience=3)
    model, _ = train_view(train[..., None], options=options, name=objective)
    return encode_images(AutoencoderEncoder(model), catalog[..., None], batch_size=512)


def hed_maps(catalog: np.ndarray, *, block: str, size: int, grid: int) -> np.ndarray:
    """The pretrained view: HED's VGG16 backbone on the image upscaled to `size`, pooled to a grid."""
    from simfusion.learn.encoders import PretrainedEncoder, encode_images

    rgb = np.repeat(catalog[..., None], 3, axis=-1)
    return encode_images(
        PretrainedEncoder(input_shape=(size, size, 3), block=block, grid=grid), rgb, batch_size=100
    )


def main(argv: list[str] | None = None) -> int:
    from simfusion.data.fashion_mnist import load_fashion_mnist
    from simfusion.evaluate.protocol import (
        baseline_vectors,
        draw_queries,
        fused_ranking,
        rank_methods,
        score_rankings,
    )
    from simfusion.evaluate.report import format_table
    from simfusion.search.vectors import fit_transform

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20000, help="training images for the autoencoders")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--objective", default="plain", help="autoencoder objective")
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument(
        "--edges", default="canny", choices=("canny", "hed"), help="edge method of the edges view"
    )
    parser.add_argument("--hed_size", type=int, default=64, help="input size of the pretrained view")
    parser.add_argument("--whiten_dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--no_write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    catalog, labels = load_fashion_mnist("test")
    train, _ = load_fashion_mnist("train")
    train = train[: args.train]
    query_rows = draw_queries(len(catalog), args.queries, seed=0)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    views_catalog = product_views(catalog, edges=args.edges)
    views_train = product_views(train, edges=args.edges)
    timings["views (saliency stage)"] = time.perf_counter() - started

    maps: dict[str, np.ndarray] = {}
    for view in ("thumbnail", "foreground", "edges", "saliency"):
        started = time.perf_counter()
        maps[view] = autoencoder_maps(
            views_train[view],
            views_catalog[view],
            epochs=args.epochs,
            objective=args.objective,
            latent=args.latent,
        )
        timings[f"{view} autoencoder (train + encode)"] = time.perf_counter() - started
    for block in ("block3", "block4"):
        started = time.perf_counter()
        maps[f"hed_vgg16_{block}"] = hed_maps(catalog, block=block, size=args.hed_size, grid=4)
        timings[f"hed_vgg16 {block} (encode)"] = time.perf_counter() - started

    k = 100
    rows: dict[str, dict[str, float]] = {}
    plain, _ = fit_transform(maps, pooling="flatten")
    whitened, _ = fit_transform(maps, pooling="flatten", whiten=True, whiten_dim=args.whiten_dim)
    for name, vectors in (("", plain), (" whitened", whitened)):
        rankings = rank_methods({f"{view}{name}": v for view, v in vectors.items()}, query_rows, k=k)
        rows.update(score_rankings(rankings, labels, query_rows, ks=(10, 100)))
    baselines = baseline_vectors(catalog[..., None], pca_dim=128)
    rows.update(
        score_rankings(
            rank_methods({f"baseline: {n}": v for n, v in baselines.items()}, query_rows, k=k),
            labels,
            query_rows,
            ks=(10, 100),
        )
    )

    pretrained = [v for v in maps if v.startswith("hed_vgg16")]
    aes = ["thumbnail", "foreground", "edges", "saliency"]
    heavy = {view: 3.0 for view in pretrained}
    fusions = {
        "fused: all views, whitened, early": (whitened, list(maps), "early", None),
        "fused: all views, whitened, rrf": (whitened, list(maps), "rrf", None),
        "fused: all views, not whitened": (plain, list(maps), "early", None),
        "fused: hed_vgg16 blocks 3+4, whitened": (whitened, pretrained, "early", None),
        "fused: hed_vgg16 + thumbnail AE, whitened": (whitened, pretrained + ["thumbnail"], "early", None),
        "fused: all views, hed_vgg16 x3, whitened": (
            whitened,
            list(maps),
            "early",
            {**heavy, **dict.fromkeys(aes, 1.0)},
        ),
        "fused: hed_vgg16 x3 + thumbnail, foreground AEs, whitened": (
            whitened,
            pretrained + aes[:2],
            "early",
            {**heavy, "thumbnail": 1.0, "foreground": 1.0},
        ),
    }
    for name, (vectors, views, fusion, weights) in fusions.items():
        chosen = {view: vectors[view] for view in views}
        ranking = fused_ranking(chosen, query_rows, k=k, fusion=fusion, weights=weights)
        rows.update(score_rankings({name: ranking}, labels, query_rows, ks=(10, 100)))

    table = format_table({m: {key: v[key] for key in ("P@10", "mAP@100")} for m, v in rows.items()})
    best_view = max(
        (m for m in rows if not m.startswith(("fused", "baseline"))), key=lambda m: rows[m]["P@10"]
    )
    best_fused = max((m for m in rows if m.startswith("fused")), key=lambda m: rows[m]["P@10"])
    command = "python benchmarks/bench_fashion_mnist.py " + (
        f"--train {args.train} --epochs {args.epochs} --edges {args.edges}"
    )
    timing_lines = "\n".join(f"- {name}: {seconds:.0f} s" for name, seconds in timings.items())
    text = f"""## Fashion-MNIST retrieval (benchmark 1)

Catalog: the 10,000 Fashion-MNIST test images; {len(query_rows)} queries drawn with seed 0, each left out
of its own results; relevant = same class. Autoencoders ({args.objective}, latent {args.latent},
{args.epochs} epochs, early stopping) trained on the first {len(train):,} training images only. Views
made by the saliency stage's own code (edges: {args.edges}); the pretrained view is HED's VGG16 on the
image upscaled to {args.hed_size} px, blocks 3 and 4, average+max pooled to a 4x4 grid. Feature maps
flattened, L2-normalised; "whitened" = PCA-whitening to {args.whiten_dim} dims fitted on the catalog
(no labels), as `fusion.py --whiten` does. mAP@100 in the hashing convention (AP over the relevant
items found in the top 100). Machine: {machine()}. Date: {today()}.

{table}

Best single view: {best_view} (P@10 {rows[best_view]["P@10"]:.3f}); best fusion: {best_fused}
(P@10 {rows[best_fused]["P@10"]:.3f}, mAP@100 {rows[best_fused]["mAP@100"]:.3f}).
Goal: fused P@10 >= 0.85 and mAP@100 >= 0.80, beating every single view.

Time on this machine:
{timing_lines}

Reproduce: `{command}`
"""
    return publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
