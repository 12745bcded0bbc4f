"""The catalog's own kinds of item, learnt without labels: a projection fitted on k-means clusters
of the fused vectors, added to the fused ranking.

When the index is built, the fused catalog vectors (the views at their tuned weights) are reduced
by PCA to `PCA_DIM` dimensions and clustered by k-means three times, at about 15, 10 and 6 items a
cluster. Each clustering's pseudo-labels fit a shrinkage LDA, whose discriminant directions are the
ones that separate the clusters and squeeze each cluster together. An item's `clusters` vector is
its three LDA projections, each L2-normalised, concatenated; the index stores it beside the fused
vector with the share `SHARE`, so a hit's score is

    (1 - SHARE) * fused cosine  +  SHARE * cosine of the clusters vectors.

The views' own similarity finds near matches; the clusters term pulls up items of the same kind
that sit a little further away in every view, which is what "similar items" asks for. Fitted
once and frozen, like the whitening: queries and items added later go through the same matrices.
On the held-out Fashion-MNIST catalog (1,500 items) it moved P@10 of the five-view fusion from
0.756 to 0.780 (research, labels only to score); BENCHMARKS.md measures it through the product.

An index with a scene profile (simfusion.search.scene) fits a second projection the same way on
its scene-safe views' fused vectors; its params sit under a `prefix` ("scene/"), and its catalog
vectors form one more block after the first (`with_clusters(..., more=...)`, `cluster_probe`'s
`block`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from simfusion.search.vectors import l2_normalize

log = logging.getLogger(__name__)

CLUSTERS = "clusters"  # its score's name beside the views' in a hit
MEAN = f"{CLUSTERS}/mean"  # params keys: the fused vectors' mean (D,)
COMPONENTS = f"{CLUSTERS}/components"  # (D, PCA_DIM): the PCA
MATRIX = f"{CLUSTERS}/matrix"  # (PCA_DIM, sum of the projections' widths): the LDAs side by side
WIDTHS = f"{CLUSTERS}/widths"  # each projection's width, to normalise them apart
SHARE = 0.5  # the clusters term's share of a hit's score
ITEMS_PER_CLUSTER = (15, 10, 6)  # one clustering per entry: about this many catalog items a cluster
PCA_DIM = 256
SHRINKAGE = 0.3  # LDA's covariance shrinkage: few items a cluster, many dimensions
# Below this the clusters are too few to learn anything: no projection. Random subsets of the
# held-out catalog (P@10, views alone -> with the term, 12 draws each): 50 items -0.013, 75 -0.002,
# 100 -0.002, 120 +0.004, 150 +0.016, 600 +0.019; the near-duplicate benchmark's 90 items +0.017
# with detection, -0.010 without.
MIN_ITEMS = 75
FIT_LIMIT = 20_000  # items sampled to fit
KMEANS_ITERATIONS = 50


def cluster_counts(items: int) -> list[int]:
    """The number of clusters of each clustering for a catalog of `items`."""
    return [max(2, items // per) for per in ITEMS_PER_CLUSTER]


def keys(prefix: str = "") -> tuple[str, str, str, str]:
    """The params keys of one projection (MEAN, COMPONENTS, MATRIX, WIDTHS), under `prefix` (the
    scene profile's projection: simfusion.search.scene)."""
    return tuple(prefix + key for key in (MEAN, COMPONENTS, MATRIX, WIDTHS))


def fit_clusters(fused: np.ndarray, *, seed: int = 0, prefix: str = "") -> dict[str, np.ndarray]:
    """The projection's params (flat keys under `prefix`, for the index's params.npz) fitted on fused
    catalog vectors (N, D); empty when the catalog has fewer than `MIN_ITEMS` items."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    fused = np.asarray(fused, np.float32)
    if fused.ndim != 2:
        raise ValueError(f"fused vectors must be (N, D), not {fused.shape}")
    if len(fused) < MIN_ITEMS:
        log.info("clusters: %d items (< %d), no projection", len(fused), MIN_ITEMS)
        return {}
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    sample = fused if len(fused) <= FIT_LIMIT else fused[rng.choice(len(fused), FIT_LIMIT, replace=False)]
    dim = min(PCA_DIM, len(sample) - 1, sample.shape[1])
    pca = PCA(dim, svd_solver="randomized", random_state=seed).fit(sample)
    reduced = pca.transform(sample)
    matrices = []
    for number, count in enumerate(cluster_counts(len(sample))):
        found = KMeans(count, n_init=1, max_iter=KMEANS_ITERATIONS, random_state=seed + number).fit(reduced)
        width = min(count - 1, dim)
        lda = LinearDiscriminantAnalysis(n_components=width, solver="eigen", shrinkage=SHRINKAGE)
        # the eigen solver's transform is reduced @ scalings_, cut to the components asked for
        with warnings.catch_warnings():  # a cluster of one item has no covariance of its own: fine
            warnings.filterwarnings("ignore", "Only one sample available", UserWarning)
            matrices.append(lda.fit(reduced, found.labels_).scalings_[:, :width])
    widths = np.array([m.shape[1] for m in matrices], np.int64)
    matrix = np.concatenate(matrices, axis=1)
    log.info(
        "clusters: %s clusters of %d items, %d dimensions, in %.1f s",
        "/".join(map(str, cluster_counts(len(sample)))),
        len(sample),
        int(widths.sum()),
        time.perf_counter() - start,
    )
    # kept apart, not folded into one (D, widths) matrix: a query then reads a third of the bytes
    mean, components, matrix_key, widths_key = keys(prefix)
    return {
        mean: pca.mean_.astype(np.float32),
        components: np.ascontiguousarray(pca.components_.T, dtype=np.float32),
        matrix_key: matrix.astype(np.float32),
        widths_key: widths,
    }


def clusters_meta(params: Mapping[str, np.ndarray], items: int, *, seconds: float, prefix: str = "") -> dict:
    """What the index's meta says of its fitted clusters term."""
    return {
        "share": SHARE,
        "dim": width(params, prefix),
        "clusters": cluster_counts(min(items, FIT_LIMIT)),
        "seconds": round(seconds, 1),
    }


def has_clusters(params: Mapping[str, np.ndarray], prefix: str = "") -> bool:
    return prefix + MATRIX in params


def width(params: Mapping[str, np.ndarray], prefix: str = "") -> int:
    """How wide a projection's clusters vectors are (0 where `params` has none)."""
    return int(np.asarray(params[prefix + WIDTHS]).sum()) if has_clusters(params, prefix) else 0


def cluster_vectors(fused: np.ndarray, params: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """The clusters vectors (N, sum of widths) of fused vectors (N, D), unit length."""
    mean_key, components, matrix, widths = keys(prefix)
    fused = np.asarray(fused, np.float32)
    mean = np.asarray(params[mean_key])
    if fused.shape[-1] != mean.shape[0]:
        raise ValueError(
            f"fused vectors have {fused.shape[-1]} dimensions; the clusters were fitted on {mean.shape[0]}"
        )
    projected = ((fused - mean) @ np.asarray(params[components])) @ np.asarray(params[matrix])
    bounds = np.cumsum(np.concatenate([[0], np.asarray(params[widths])]))
    parts = [l2_normalize(projected[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)


def with_clusters(
    fused: np.ndarray,
    params: Mapping[str, np.ndarray],
    *,
    share: float = SHARE,
    more: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Fused vectors with their clusters vectors appended, so that inner products give
    (1 - share) * fused cosine + share * clusters cosine; `more`: further clusters vectors, a block
    each after the first (the scene profile's), which a query that does not fill them leaves out."""
    fused = np.asarray(fused, np.float32)
    blocks = [cluster_vectors(fused, params), *more]
    parts = [np.sqrt(1 - share) * fused, *(np.sqrt(share) * np.asarray(b, np.float32) for b in blocks)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def with_cluster_queries(
    queries: Mapping[str, np.ndarray],
    params: Mapping[str, np.ndarray],
    built: Mapping[str, float],
    share: Mapping[str, float],
    prefix: str = "",
) -> Mapping[str, np.ndarray]:
    """The queries (view -> vectors) with their clusters vectors added, when the index has the
    projection (`params`, under `prefix`) and the query searches with the views and normalised
    weights `built` that the projection was fitted on; else the queries as they are."""
    if not has_clusters(params, prefix) or set(share) != set(built):
        return queries
    if any(abs(share[view] - built[view]) > 1e-9 for view in built):
        return queries
    fused = np.concatenate([np.sqrt(built[v]) * np.asarray(queries[v], np.float32) for v in built], axis=1)
    return {**queries, CLUSTERS: cluster_vectors(fused, params, prefix)}


def query_shares(built: float, shares: float | Sequence[float] | None, count: int) -> np.ndarray:
    """The term's share of each of `count` queries' scores: `shares` (one, or one a query), else the
    share `built` into the index; 0 for an index without the term (`built` 0)."""
    if not built:
        return np.zeros(count)
    if shares is None:
        return np.full(count, built)
    out = np.broadcast_to(np.asarray(shares, np.float64), (count,)).copy()
    if not np.all((out >= 0) & (out < 1)):
        raise ValueError(f"a clusters share must be in [0, 1), not {shares}")
    return out


def cluster_probe(
    probe: np.ndarray,
    clusters: np.ndarray | None,
    share: float,
    dims: Sequence[int],
    *,
    queried=None,
    block: int = 0,
) -> np.ndarray:
    """An early-fusion query vector made to match fused vectors that carry the clusters term with
    `share` in blocks as wide as `dims`: the views' part rescaled, then the query's clusters vector in
    its `block` and zeros in the others, or zeros everywhere where it has none (the query narrowed or
    re-weighted the views). `queried` (one share per query) gives each query's inner products that
    share of the term instead: (1 - q) views + q clusters."""
    if not share:
        return probe
    queried = np.full(len(probe), share) if queried is None else np.asarray(queried, np.float64)
    zeros = [np.zeros((len(probe), dim), np.float32) for dim in dims]
    if clusters is None:
        return np.concatenate([probe / np.sqrt(1 - share), *zeros], axis=1)
    views_scale = ((1 - queried) / np.sqrt(1 - share)).astype(np.float32)[:, None]
    clusters_scale = (queried / np.sqrt(share)).astype(np.float32)[:, None]
    zeros[block] = clusters_scale * np.asarray(clusters, np.float32)
    return np.concatenate([views_scale * probe, *zeros], axis=1)
