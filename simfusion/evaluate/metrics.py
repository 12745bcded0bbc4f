"""Retrieval metrics over ranked results: precision@k, recall@k, AP@k / mAP@k, and cosine ranking.

Pure numpy; FAISS is imported inside `rank_catalog` only. A ranking is a 2-D array with one row per
query and the catalog items best first; the metrics take the labels of those items
(`catalog_labels[ranking]`) and count an item relevant when its label equals the query's.

AP@k follows the hashing-literature convention that the Fashion-MNIST reference numbers use:
the precision at each relevant rank i <= k, averaged over the relevant items found in the top k
(0 when none is found). Pass `n_relevant` to normalise by min(k, relevant items in the catalog)
instead, the information-retrieval convention; it is never larger.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)


def _relevance(ranked_labels, query_labels, k: int) -> np.ndarray:
    """Float (Q, k) 0/1 matrix: ranked item j of query q has q's label."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    ranked = np.asarray(ranked_labels)
    queries = np.asarray(query_labels)
    if ranked.ndim == 1:  # one query's ranking
        ranked = ranked[None, :]
    queries = queries.reshape(-1)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_labels must be (queries, ranks) or (ranks,), not shape {ranked.shape}")
    if len(queries) != len(ranked):
        raise ValueError(
            f"{len(ranked)} rankings but {len(queries)} query labels: give one label per ranking"
        )
    if ranked.shape[1] < k:
        raise ValueError(
            f"rankings hold {ranked.shape[1]} items, fewer than k={k}: rank more items or lower k"
        )
    return (ranked[:, : int(k)] == queries[:, None]).astype(np.float64)


def _n_relevant(n_relevant, n_queries: int) -> np.ndarray:
    counts = np.broadcast_to(np.asarray(n_relevant, dtype=np.float64).reshape(-1), (n_queries,))
    if np.any(counts < 0):
        raise ValueError("n_relevant must be >= 0 for every query")
    return counts


def precision_at_k(ranked_labels, query_labels, k: int) -> float:
    """Mean over queries of the share of the top `k` results that share the query's label."""
    return float(_relevance(ranked_labels, query_labels, k).mean(axis=1).mean())


def recall_at_k(ranked_labels, query_labels, k: int, n_relevant) -> float:
    """Mean over queries of (relevant items in the top `k`) / `n_relevant`.

    `n_relevant` is one count for all queries or one per query: the relevant items in the catalog,
    not counting the query itself when it was left out of its results. Queries with none score 0.
    """
    hits = _relevance(ranked_labels, query_labels, k).sum(axis=1)
    counts = _n_relevant(n_relevant, len(hits))
    return float(np.where(counts > 0, hits / np.maximum(counts, 1), 0.0).mean())


def average_precision_at_k(ranked_labels, query_labels, k: int, *, n_relevant=None) -> np.ndarray:
    """AP@k of each query, float64 (Q,): sum over relevant ranks i <= k of precision@i, normalised.

    Normalised by the relevant items found in the top `k` (the hashing convention) unless
    `n_relevant` (one count, or one per query) is given: then by min(k, n_relevant).
    """
    relevance = _relevance(ranked_labels, query_labels, k)
    precision = np.cumsum(relevance, axis=1) / np.arange(1, relevance.shape[1] + 1)
    total = (precision * relevance).sum(axis=1)
    if n_relevant is None:
        norm = relevance.sum(axis=1)
    else:
        norm = np.minimum(relevance.shape[1], _n_relevant(n_relevant, len(total)))
    return np.where(norm > 0, total / np.maximum(norm, 1), 0.0)


def mean_average_precision_at_k(ranked_labels, query_labels, k: int, *, n_relevant=None) -> float:
    """mAP@k: the mean of `average_precision_at_k` over the queries."""
    return float(average_precision_at_k(ranked_labels, query_labels, k, n_relevant=n_relevant).mean())


def rank_catalog(
    query_vectors: np.ndarray,
    catalog_vectors: np.ndarray,
    *,
    k: int,
    exclude_self_ids: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` catalog rows most cosine-similar to each query: (indices int64 (Q, k), scores float32 (Q, k)).

    `exclude_self_ids[q]` is query q's own row in the catalog (or -1 for none); that row never
    appears in q's results, so a query taken from the catalog does not find itself.
    """
    import faiss

    queries = _unit_rows(query_vectors, "query_vectors")
    catalog = _unit_rows(catalog_vectors, "catalog_vectors")
    if queries.shape[1] != catalog.shape[1]:
        raise ValueError(
            f"queries have {queries.shape[1]} dimensions but the catalog {catalog.shape[1]}: "
            "encode both with the same features"
        )
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    k = int(k)
    exclude = None
    if exclude_self_ids is not None:
        exclude = np.asarray(exclude_self_ids, dtype=np.int64).reshape(-1)
        if len(exclude) != len(queries):
            raise ValueError(
                f"{len(exclude)} exclude_self_ids for {len(queries)} queries: give one per query"
            )
        if np.any(exclude >= len(catalog)):
            raise ValueError(f"exclude_self_ids must be catalog rows below {len(catalog)} (or -1 for none)")
    available = len(catalog) - (1 if exclude is not None and np.any(exclude >= 0) else 0)
    if k > available:
        raise ValueError(f"k={k} but only {available} catalog items can be returned: lower k")

    index = faiss.IndexFlatIP(catalog.shape[1])
    index.add(catalog)
    # One extra result so that dropping the query's own row still leaves k.
    scores, indices = index.search(queries, k + (exclude is not None))
    if exclude is None:
        return indices.astype(np.int64), scores.astype(np.float32)
    keep = indices != exclude[:, None]
    # Rows that did not contain themselves drop their last (extra) result instead.
    keep[keep.all(axis=1), -1] = False
    return (
        indices[keep].reshape(len(queries), k).astype(np.int64),
        scores[keep].reshape(len(queries), k).astype(np.float32),
    )


def _unit_rows(vectors: np.ndarray, name: str) -> np.ndarray:
    """float32 C-contiguous rows scaled to unit length (zero rows stay zero)."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (items, dimensions), not shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values: fix the features before ranking")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12))


def evaluate_rankings(
    rankings: Mapping[str, np.ndarray],
    *,
    catalog_labels: np.ndarray,
    query_labels: np.ndarray,
    precision_k: int = 10,
    map_k: int = 100,
) -> dict[str, dict[str, float]]:
    """Metrics of each method's ranking (catalog rows, best first): {method: {"P@10": .., "mAP@100": ..}}.

    mAP uses the hashing convention (see the module docstring). Leave-out-self must already be
    applied to the rankings (rank_catalog does it).
    """
    labels = np.asarray(catalog_labels)
    results: dict[str, dict[str, float]] = {}
    for method, ranking in rankings.items():
        ranked = np.asarray(ranking)
        if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
            raise ValueError(f"ranking of {method!r} must be a 2-D integer array of catalog rows")
        if ranked.size and (ranked.min() < 0 or ranked.max() >= len(labels)):
            raise ValueError(f"ranking of {method!r} holds rows outside the {len(labels)}-item catalog")
        ranked_labels = labels[ranked]
        results[method] = {
            f"P@{precision_k}": precision_at_k(ranked_labels, query_labels, precision_k),
            f"mAP@{map_k}": mean_average_precision_at_k(ranked_labels, query_labels, map_k),
        }
        log.debug("%s: %s", method, results[method])
    return results
