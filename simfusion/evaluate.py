"""The evaluate command: how well each view, the fusion and simple baselines rank a labelled catalog.

    evaluate.py --model_save_path DIR [--category_key category] [--k 10,100] [--queries 1000]
                [--views ...] [--weights ...] [--fusion early|late|rrf] [--whiten]
                [--json PATH] [--plot PATH]

Every catalog item of the trained store can be a query; a seeded sample of them is drawn, each is
left out of its own results, and an item counts as relevant when it shares the query's category.
Reports precision@k, recall@k and mAP@k (simfusion.evaluation) per view, for the fused ranking and
for baselines computed from the thumbnails (raw pixels, PCA of pixels, colour histogram): a
markdown table on stdout, JSON and a bar chart on request.

The cores work on arrays (`rank_methods`, `score_rankings`, `baseline_vectors`), so benchmarks
can evaluate vectors made without files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.evaluation import mean_average_precision_at_k, precision_at_k, rank_catalog, recall_at_k

log = logging.getLogger(__name__)

FUSIONS = ("early", "late", "rrf")
BASELINES = ("pixels", "pca", "histogram")
BASELINE_SIZE = 32  # thumbnails are shrunk to this for the pixel baselines
FUSED = "fused"


def draw_queries(n_items: int, n_queries: int | None, *, seed: int = 0) -> np.ndarray:
    """Rows of the catalog used as queries: all of them, or `n_queries` drawn without replacement."""
    if n_queries is None or n_queries >= n_items:
        return np.arange(n_items, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n_items, n_queries, replace=False)).astype(np.int64)


def rank_methods(
    vectors: Mapping[str, np.ndarray], query_rows: np.ndarray, *, k: int
) -> dict[str, np.ndarray]:
    """Each method's top-`k` catalog rows per query (cosine, the query left out of its own results)."""
    return {
        method: rank_catalog(vecs[query_rows], vecs, k=k, exclude_self_ids=query_rows)[0]
        for method, vecs in vectors.items()
    }


def fused_ranking(
    vectors_by_view: Mapping[str, np.ndarray],
    query_rows: np.ndarray,
    *,
    k: int,
    fusion: str = "early",
    weights: Mapping[str, float] | None = None,
    view_rankings: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The fused top-`k` rows per query, by the same fusion rules fusion.py offers."""
    from simfusion.fusion import fuse, fuse_scores, normalize_weights, rrf

    views = list(vectors_by_view)
    weights = {view: 1.0 for view in views} if weights is None else {view: weights[view] for view in views}
    if fusion == "early":
        fused = fuse(vectors_by_view, weights)
        return rank_catalog(fused[query_rows], fused, k=k, exclude_self_ids=query_rows)[0]
    if fusion == "late":
        out = np.empty((len(query_rows), k), dtype=np.int64)
        for start in range(0, len(query_rows), 256):
            rows = query_rows[start : start + 256]
            scores = fuse_scores(
                {view: vecs[rows] @ vecs.T for view, vecs in vectors_by_view.items()}, weights
            )
            scores[np.arange(len(rows)), rows] = -np.inf
            top = np.argpartition(-scores, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
            out[start : start + len(rows)] = np.take_along_axis(top, order, axis=1)
        return out
    if fusion == "rrf":
        depth = min(len(next(iter(vectors_by_view.values()))) - 1, max(4 * k, 200))
        rankings = view_rankings or {}
        rankings = {
            view: rankings[view]
            if view in rankings and rankings[view].shape[1] >= depth
            else rank_catalog(vecs[query_rows], vecs, k=depth, exclude_self_ids=query_rows)[0]
            for view, vecs in vectors_by_view.items()
        }
        share = normalize_weights(weights)
        out = np.empty((len(query_rows), k), dtype=np.int64)
        for q in range(len(query_rows)):
            labels, _ = rrf([rankings[view][q] for view in views], weights=[share[view] for view in views])
            out[q] = labels[:k]
        return out
    raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")


def score_rankings(
    rankings: Mapping[str, np.ndarray],
    labels: Sequence[Any] | np.ndarray,
    query_rows: np.ndarray,
    *,
    ks: Sequence[int] = (10, 100),
) -> dict[str, dict[str, float]]:
    """P@k, R@k and mAP@k of each method's ranking; recall counts the query's other same-label items."""
    labels = np.asarray(labels)
    query_labels = labels[query_rows]
    values, counts = np.unique(labels, return_counts=True)
    per_label = dict(zip(values.tolist(), counts.tolist(), strict=True))
    n_relevant = np.array([per_label[label] - 1 for label in query_labels.tolist()])
    out: dict[str, dict[str, float]] = {}
    for method, ranking in rankings.items():
        ranked_labels = labels[np.asarray(ranking)]
        metrics = {}
        for k in ks:
            metrics[f"P@{k}"] = precision_at_k(ranked_labels, query_labels, k)
            metrics[f"R@{k}"] = recall_at_k(ranked_labels, query_labels, k, n_relevant)
            metrics[f"mAP@{k}"] = mean_average_precision_at_k(ranked_labels, query_labels, k)
        out[method] = metrics
    return out


def baseline_vectors(
    images: np.ndarray, *, pca_dim: int = 128, bins: int = 8, seed: int = 0
) -> dict[str, np.ndarray]:
    """The obvious alternatives: raw pixels, PCA of the pixels (fitted on the catalog), an RGB histogram."""
    from sklearn.decomposition import PCA

    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = batch[..., None]
    pixels = batch.reshape(len(batch), -1).astype(np.float32) / 255.0
    dim = min(pca_dim, *pixels.shape)
    pca = (
        PCA(n_components=dim, random_state=seed)
        .fit_transform(pixels - pixels.mean(axis=0))
        .astype(np.float32)
    )
    levels = np.minimum((batch.astype(np.int64) * bins) // 256, bins - 1)
    channels = batch.shape[-1]
    codes = np.zeros(batch.shape[:-1], dtype=np.int64)
    for c in range(channels):
        codes = codes * bins + levels[..., c]
    flat = codes.reshape(len(batch), -1)
    histogram = np.stack([np.bincount(row, minlength=bins**channels) for row in flat]).astype(np.float32)
    return {"pixels": pixels, "pca": pca, "histogram": np.sqrt(histogram / flat.shape[1])}


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: one row per method, one column per metric."""
    metrics = list(next(iter(results.values())))
    lines = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for method, values in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    return "\n".join(lines)


def plot_results(results: Mapping[str, Mapping[str, float]], path: str, *, title: str = "") -> str:
    """A grouped bar chart of every metric per method, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    metrics = list(next(iter(results.values())))
    width = 0.8 / len(metrics)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(methods) + 2), 4.2))
    for i, metric in enumerate(metrics):
        positions = np.arange(len(methods)) + (i - (len(metrics) - 1) / 2) * width
        axes.bar(positions, [results[m][metric] for m in methods], width, label=metric)
    axes.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("score")
    axes.set_title(title)
    axes.legend(fontsize="small", ncols=min(len(metrics), 3))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluate_store(
    model_save_path: str,
    *,
    category_key: str = "category",
    ks: Sequence[int] = (10, 100),
    n_queries: int | None = 1000,
    seed: int = 0,
    views: Sequence[str] | None = None,
    weights: str | None = None,
    fusion: str = "early",
    pooling: str = "avgmax",
    whiten: bool = False,
    baselines: Sequence[str] = BASELINES,
    base_path: str = ".",
) -> dict[str, Any]:
    """Evaluate a trained catalog's store: per view, fused and baselines. Returns a JSON-ready dict.

    `weights` are per-view fusion weights as fusion.py takes them (`thumbnail=1,edges=0.5`).
    """
    from simfusion.catalog_index import catalog_vectors
    from simfusion.features import FeatureStore, store_path
    from simfusion.fusion import apply_whitening, fit_whitening, parse_weights

    with FeatureStore(store_path(model_save_path)) as store:
        views = list(views or store.views)
        unknown = [view for view in views if view not in store.views]
        if unknown:
            raise ValueError(
                f"unknown view(s) {', '.join(unknown)}: the store holds {', '.join(store.views)}"
            )
        weights_by_view = parse_weights(weights, views)
        ids, pooled = catalog_vectors(store, views, pooling=pooling)
        records = {str(r.get("id", r.get("image_id"))): r for r in store.records()}
    # the same whitening fusion.py --whiten fits on the catalog
    vectors = {view: apply_whitening(v, fit_whitening(v)) for view, v in pooled.items()} if whiten else pooled
    keep = [i for i, key in enumerate(ids) if records.get(key, {}).get(category_key) not in (None, "")]
    if len(keep) < 2:
        raise ValueError(f"fewer than 2 catalog items have a {category_key!r}: nothing to evaluate")
    if len(keep) < len(ids):
        log.warning("%d items have no %r and are left out", len(ids) - len(keep), category_key)
    ids = [ids[i] for i in keep]
    vectors = {view: vecs[keep] for view, vecs in vectors.items()}
    labels = np.array([str(records[key][category_key]) for key in ids])
    k_max = min(max(ks), len(ids) - 1)
    ks = sorted({min(k, k_max) for k in ks})
    query_rows = draw_queries(len(ids), n_queries, seed=seed)

    methods = dict(vectors)
    wanted = [name for name in baselines if name]
    if wanted:
        thumbs = _load_thumbnails([records[key] for key in ids], base_path=base_path)
        methods.update(
            {name: vecs for name, vecs in baseline_vectors(thumbs, seed=seed).items() if name in wanted}
        )
    rankings = rank_methods(methods, query_rows, k=k_max)
    if len(vectors) > 1:
        rankings[FUSED] = fused_ranking(
            vectors, query_rows, k=k_max, fusion=fusion, weights=weights_by_view, view_rankings=rankings
        )
    results = score_rankings(rankings, labels, query_rows, ks=ks)
    return {
        "model_save_path": model_save_path,
        "items": len(ids),
        "queries": len(query_rows),
        "seed": seed,
        "category_key": category_key,
        "views": views,
        "fusion": fusion,
        "whiten": whiten,
        "pooling": pooling,
        "results": results,
    }


def _load_thumbnails(records: Sequence[Mapping[str, Any]], *, base_path: str) -> np.ndarray:
    import cv2

    from simfusion.images import ImageError, load_image

    out = []
    for record in records:
        path = record.get("thumbnail") or record.get("image") or record.get("path")
        try:
            image = load_image(os.path.join(base_path, path))
        except (ImageError, TypeError) as exc:
            raise ValueError(
                f"baselines need the thumbnails: {exc} (use --baselines '' to skip them)"
            ) from exc
        out.append(cv2.resize(image, (BASELINE_SIZE, BASELINE_SIZE), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Precision@k, recall@k and mAP@k of every view, the fused ranking and baselines on a "
        "labelled catalog trained by train.py. Queries are left out of their own results.",
    )
    parser.add_argument(
        "--model_save_path", required=True, help="folder of the trained models and features.h5"
    )
    parser.add_argument("--category_key", default="category", help="record field that says what is relevant")
    parser.add_argument("--k", default="10,100", help="comma-separated cut-offs (default 10,100)")
    parser.add_argument("--queries", type=int, default=1000, help="queries drawn from the catalog (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query draw")
    parser.add_argument("--views", help="comma-separated views (default: every view of the store)")
    parser.add_argument("--weights", help="per-view weights of the fusion, e.g. thumbnail=1,edges=0.5")
    parser.add_argument("--fusion", choices=FUSIONS, default="early")
    parser.add_argument("--pooling", default="avgmax", choices=("avgmax", "avg", "max", "gem", "flatten"))
    parser.add_argument("--whiten", action="store_true", help="PCA-whiten each view, fitted on the catalog")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="baselines to add ('' for none)")
    parser.add_argument("--base_image_path", default=".", help="folder relative thumbnail paths start from")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--plot", help="also draw the results as a bar chart (PNG) here")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    from simfusion.stage import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        parser.error(f"--k takes whole numbers separated by commas, not {args.k!r}")
    if not ks or min(ks) < 1:
        parser.error("--k needs at least one cut-off >= 1")
    baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown baseline(s) {', '.join(unknown)}: choose from {', '.join(BASELINES)}")
    configure_logging(args.log_level)
    views = [v.strip() for v in args.views.split(",")] if args.views else None
    try:
        report = evaluate_store(
            args.model_save_path,
            category_key=args.category_key,
            ks=ks,
            n_queries=args.queries or None,
            seed=args.seed,
            views=views,
            weights=args.weights,
            fusion=args.fusion,
            pooling=args.pooling,
            whiten=args.whiten,
            baselines=baselines,
            base_path=args.base_image_path,
        )
    except (ValueError, FileNotFoundError, OSError) as exc:
        log.error("evaluate: %s", exc)
        return 1
    print(f"{report['queries']} queries over {report['items']} items, relevant = same {args.category_key!r}")
    print(format_table(report["results"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    if args.plot:
        plot_results(
            report["results"], args.plot, title=f"{report['items']} items, {report['queries']} queries"
        )
    return 0
