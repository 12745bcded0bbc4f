"""The evaluate command: how well each view, the fusion and simple baselines rank a labelled catalog.

    evaluate.py --model_save_path DIR [--category_key category] [--k 10,100] [--queries 1000]
                [--views ...] [--weights ...] [--fusion early|late|rrf] [--whiten]
                [--json PATH] [--plot PATH]

Every catalog item of the trained store can be a query; a seeded sample of them is drawn, each is
left out of its own results, and an item counts as relevant when it shares the query's category.
Reports precision@k, recall@k and mAP@k (simfusion.evaluate.metrics) per view, for the fused ranking and
for baselines computed from the thumbnails (raw pixels, PCA of pixels, colour histogram): a
markdown table on stdout, JSON and a bar chart on request.

The cores work on arrays (`rank_methods`, `score_rankings`, `baseline_vectors`), so benchmarks
can evaluate vectors made without files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.evaluate.metrics import (
    mean_average_precision_at_k,
    precision_at_k,
    rank_catalog,
    recall_at_k,
)
from simfusion.io.atomic import read_json
from simfusion.io.images import ImageError, load_image
from simfusion.io.records import record_id
from simfusion.io.store import FeatureStore, store_path
from simfusion.search.build import catalog_vectors, index_path
from simfusion.search.clusters import has_clusters, width
from simfusion.search.index import META_FILE, PARAMS_FILE, CatalogIndex, part_data
from simfusion.search.index_files import read_meta, read_params
from simfusion.search.probe import PROJECTION
from simfusion.search.scene import PREFIX
from simfusion.search.vectors import (
    FUSED,
    FUSIONS,
    apply_whitening,
    check_views,
    fit_whitening,
    fuse,
    fuse_scores,
    normalize_weights,
    parse_weights,
    rrf,
    transform,
)

log = logging.getLogger(__name__)

TUNED = "fused: tuned (the index's weights)"
CLUSTERED = "fused: tuned + clusters (the index's ranking)"

BASELINES = ("pixels", "pca", "histogram")
BASELINE_SIZE = 32  # thumbnails are shrunk to this for the pixel baselines


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


def diffused_ranking(fused: np.ndarray, query_rows: np.ndarray, *, k: int, batch: int = 256) -> np.ndarray:
    """Each query's top-`k` rows as predict.py --rerank diffusion ranks them (simfusion.search.graph):
    its best RERANK_POOL by the cosine, reordered by diffusion over the catalog's neighbour graph.
    A query is a catalog item here: it is left out of its own pool and taken out of its own graph."""
    from simfusion.search.graph import GRAPH_K, RERANK_POOL
    from simfusion.search.rerank import catalog_neighbours, diffuse, diffusion_graph, diffusion_start

    graph = diffusion_graph(*catalog_neighbours(fused, k=GRAPH_K))
    pool_size = min(len(fused) - 1, max(k, RERANK_POOL))
    out = np.empty((len(query_rows), min(k, pool_size)), np.int64)
    for start in range(0, len(query_rows), batch):
        rows = query_rows[start : start + batch]
        pool, scores = rank_catalog(fused[rows], fused, k=pool_size, exclude_self_ids=rows)
        keep = np.ones((len(rows), len(fused)))
        keep[np.arange(len(rows)), rows] = 0
        seeds = diffusion_start(scores[:, :GRAPH_K], pool[:, :GRAPH_K], len(fused))
        spread = diffuse(graph, seeds, keep=keep)
        order = np.argsort(-(np.take_along_axis(spread, pool, axis=1) + 1e-6 * scores), axis=1, kind="stable")
        out[start : start + len(rows)] = np.take_along_axis(pool, order, axis=1)[:, : out.shape[1]]
    return out


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
    rerank: str = "none",
) -> dict[str, Any]:
    """Evaluate a trained catalog's store: per view, fused and baselines. Returns a JSON-ready dict.

    `weights` are per-view fusion weights as fusion.py takes them (`thumbnail=1,edges=0.5`).
    """

    views, all_ids, pooled, records = _read_store(model_save_path, views, pooling=pooling)
    weights_by_view = parse_weights(weights, views)
    # the same whitening fusion.py --whiten fits on the catalog
    vectors = {view: apply_whitening(v, fit_whitening(v)) for view, v in pooled.items()} if whiten else pooled
    ids, vectors, labels = labelled(all_ids, vectors, records, category_key=category_key)
    k_max = min(max(ks), len(ids) - 1)
    ks = sorted({min(k, k_max) for k in ks})
    query_rows = draw_queries(len(ids), n_queries, seed=seed)

    baseline, unread = baselines_of([records[key] for key in ids], baselines, base_path, seed=seed)
    methods = {**vectors, **baseline}
    rankings = rank_methods(methods, query_rows, k=k_max)
    if len(vectors) > 1:
        rankings[FUSED] = fused_ranking(
            vectors, query_rows, k=k_max, fusion=fusion, weights=weights_by_view, view_rankings=rankings
        )

    def keep(tuned):  # the labelled items' rows of vectors of every stored item
        return labelled(all_ids, tuned, records, category_key=category_key)[1]

    options = {"k": k_max, "fusion": fusion, "rerank": rerank}
    rankings.update(index_rankings(model_save_path, pooled, vectors, query_rows, keep=keep, **options))
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
        **({"baselines_unread_thumbnails": len(unread)} if unread else {}),
    }


def _read_store(model_save_path: str, views: Sequence[str] | None, *, pooling: str):
    """The views evaluated (all the store's by default), every stored id, each view's pooled
    vectors and the catalog records by id."""
    with FeatureStore(store_path(model_save_path)) as store:
        views = list(views or store.views)
        check_views(views, store.views, holder="the store")
        all_ids, pooled = catalog_vectors(store, views, pooling=pooling)
        records = {record_id(r): r for r in store.records()}
    return views, all_ids, pooled, records


def index_rankings(
    model_save_path: str,
    pooled: Mapping[str, np.ndarray],
    vectors: Mapping[str, np.ndarray],
    query_rows: np.ndarray,
    *,
    keep,
    k: int,
    fusion: str,
    rerank: str,
) -> dict[str, np.ndarray]:
    """The rows of the fusion the index was built with (its tuned weights) and, with `rerank`, of
    the index's ranking (else the tuned, else the plain fusion) re-ranked as predict.py re-ranks.
    `keep` maps vectors of every stored item to the labelled items' rows, which `vectors` already are."""
    out = {}
    tuned = tuned_vectors(model_save_path, pooled)
    if tuned is not None:
        tuned_rows = keep(tuned[0])
        out[TUNED] = fused_ranking(tuned_rows, query_rows, k=k, fusion=fusion, weights=tuned[1])
    clustered = clustered_vectors(model_save_path, pooled)
    if clustered is not None:
        rows = keep({CLUSTERED: clustered})[CLUSTERED]
        out[CLUSTERED] = rank_catalog(rows[query_rows], rows, k=k, exclude_self_ids=query_rows)[0]
    if rerank == "diffusion" and clustered is not None:  # predict.py diffuses the index's own ranking
        out[f"{CLUSTERED} + diffusion"] = diffused_ranking(rows, query_rows, k=k)
    elif rerank == "diffusion":
        name, base, weights = (TUNED, tuned_rows, tuned[1]) if tuned is not None else (FUSED, vectors, None)
        out[f"{name} + diffusion"] = diffused_ranking(
            fuse(base, weights or dict.fromkeys(base, 1.0)), query_rows, k=k
        )
    return out


def baselines_of(
    records: Sequence[Mapping[str, Any]],
    baselines: Sequence[str],
    base_path: str,
    *,
    seed: int,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The wanted baselines' vectors, computed from the records' thumbnails, and the ids whose
    thumbnail could not be read. Such a thumbnail counts as a blank image (a warning says so), so
    one bad file costs the baselines one item, not the whole evaluation."""
    wanted = [name for name in baselines if name]
    if not wanted:
        return {}, []
    thumbs, missing = _load_thumbnails(records, base_path=base_path)
    if missing:
        log.warning(
            "baselines: %d of %d thumbnails cannot be read and count as blank images, e.g. %s",
            len(missing),
            len(records),
            missing[0][1],
        )
    vectors = {name: vecs for name, vecs in baseline_vectors(thumbs, seed=seed).items() if name in wanted}
    return vectors, [key for key, _ in missing]


def tuned_vectors(
    model_save_path: str, pooled: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, float]] | None:
    """The vectors and weights of the fusion the index was built with (tuned weights and
    whitening, views at weight 0 left out), or None when the index was not tuned."""
    tuning = index_tuning(model_save_path)
    if not tuning or not set(tuning["views"]) <= set(pooled):
        return None
    tuned = {view: pooled[view] for view in tuning["views"]}
    if tuning["whiten"]:
        tuned = {view: apply_whitening(v, fit_whitening(v)) for view, v in tuned.items()}
    return tuned, tuning["weights"]


def clustered_vectors(model_save_path: str, pooled: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Every stored item's vector as the index ranks by it (its fused part: the views with the
    index's params and weights, the clusters term appended); None for an index without the term."""
    folder = index_path(model_save_path)
    if not os.path.exists(os.path.join(folder, META_FILE)):
        return None
    meta = read_meta(folder)
    params = read_params(folder, meta.get("params", PARAMS_FILE))
    if not has_clusters(params) or meta.get("fusion") != "early" or not set(meta["views"]) <= set(pooled):
        return None
    vectors = transform({view: pooled[view] for view in meta["views"]}, params, pooling=meta["pooling"])
    # no probe projection: only the fused part is wanted here
    index = CatalogIndex(meta=meta, params={k: v for k, v in params.items() if k != PROJECTION}, parts={})
    fused = part_data(index, vectors)[FUSED]
    # the scene profile's clusters block comes last; a catalog item is a clean query
    return fused[:, : fused.shape[1] - width(params, PREFIX)]


def labelled(
    ids: Sequence[str],
    vectors: Mapping[str, np.ndarray],
    records: Mapping[str, Mapping[str, Any]],
    *,
    category_key: str,
) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """The items that have a category: their ids, their rows of each view's vectors, their labels."""
    keep = [i for i, key in enumerate(ids) if records.get(key, {}).get(category_key) not in (None, "")]
    if len(keep) < 2:
        raise ValueError(f"fewer than 2 catalog items have a {category_key!r}: nothing to evaluate")
    if len(keep) < len(ids):
        log.warning("%d items have no %r and are left out", len(ids) - len(keep), category_key)
    ids = [ids[i] for i in keep]
    labels = np.array([str(records[key][category_key]) for key in ids])
    return ids, {view: vecs[keep] for view, vecs in vectors.items()}, labels


def index_tuning(model_save_path: str) -> dict[str, Any] | None:
    """The tuning report fusion.py stored in the index's meta, or None (no index, or built untuned)."""
    path = os.path.join(index_path(model_save_path), META_FILE)
    if not os.path.exists(path):
        return None
    return read_json(path).get("tuning")


def _load_thumbnails(
    records: Sequence[Mapping[str, Any]], *, base_path: str
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The records' thumbnails at BASELINE_SIZE (blank where one cannot be read) and the
    (id, reason) of each that could not."""
    import cv2

    out, missing = [], []
    for record in records:
        path = record.get("thumbnail") or record.get("image") or record.get("path")
        try:
            image = load_image(os.path.join(base_path, path))
        except (ImageError, TypeError) as exc:
            missing.append((record_id(record), f"{record_id(record)}: {exc}"))
            image = np.full((BASELINE_SIZE, BASELINE_SIZE, 3), 128, np.uint8)
        out.append(cv2.resize(image, (BASELINE_SIZE, BASELINE_SIZE), interpolation=cv2.INTER_AREA))
    return np.stack(out), missing
