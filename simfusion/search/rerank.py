"""Query-side re-ranking over the catalog's own neighbourhood graph: k-reciprocal and diffusion.

Both take unit query vectors and unit catalog vectors (the fused or one view's) and return each
query's top `depth` catalog rows, best first. They use the catalog's k nearest neighbours
(`catalog_neighbours`, computed once per catalog and reusable across queries).
- `kreciprocal` (Zhong et al. 2017, simplified): a candidate is scored by the Jaccard overlap of
  its reciprocal neighbourhood with the query's, blended with the cosine distance;
- `diffusion` (Iscen et al. 2017, simplified): the query's similarities spread over the
  catalog's symmetric kNN graph for a few steps, so items reached by many paths rise.
"""

from __future__ import annotations

import numpy as np

RERANKS = ("none", "kreciprocal", "diffusion")
DIFFUSION_ALPHA = 0.8
DIFFUSION_STEPS = 10


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best columns of each row, best first."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def catalog_neighbours(
    catalog: np.ndarray, *, k: int = 20, batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Each catalog item's k nearest other items and their similarities, best first: (N, k) each."""
    rows, sims = [], []
    for start in range(0, len(catalog), batch):
        scores = catalog[start : start + batch] @ catalog.T
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf
        top = top_rows(scores, k)
        rows.append(top)
        sims.append(np.take_along_axis(scores, top, axis=1))
    return np.concatenate(rows), np.concatenate(sims).astype(np.float32)


def kreciprocal(
    queries: np.ndarray,
    catalog: np.ndarray,
    *,
    k: int = 20,
    depth: int = 100,
    lam: float = 0.3,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Re-ranked top `depth` rows per query: (1 - lam) Jaccard distance + lam cosine distance."""
    rows, sims = neighbours or catalog_neighbours(catalog, k=k)
    kth = sims[:, -1]
    n = len(catalog)
    out = np.empty((len(queries), min(depth, n)), np.int64)
    scores = queries @ catalog.T
    for q, row in enumerate(scores):
        candidates = top_rows(row[None], depth)[0]
        near = candidates[:k]
        reciprocal = near[row[near] >= kth[near]]  # the query would be in their top k too
        query_set = np.zeros(n, np.float32)
        query_set[reciprocal] = np.exp(row[reciprocal])
        query_set[near[:1]] = np.maximum(query_set[near[:1]], np.exp(row[near[:1]]))
        candidate_sets = np.zeros((len(candidates), n), np.float32)
        for i, c in enumerate(candidates):
            mine = rows[c]
            mutual = mine[np.any(rows[mine] == c, axis=1)]
            candidate_sets[i, mutual] = np.exp(sims[c][np.isin(mine, mutual)])
            candidate_sets[i, c] = 1.0
        overlap = np.minimum(candidate_sets, query_set).sum(axis=1)
        union = np.maximum(candidate_sets, query_set).sum(axis=1)
        distance = (1 - lam) * (1 - overlap / np.maximum(union, 1e-12)) + lam * (1 - row[candidates])
        out[q] = candidates[np.argsort(distance, kind="stable")][: out.shape[1]]
    return out


def diffusion_graph(rows: np.ndarray, sims: np.ndarray, *, gamma: float = 3.0):
    """The symmetric-normalised graph of mutual k nearest neighbours (scipy CSR, N x N) from each
    item's neighbours `rows` (N, k; -1 for none) and their similarities."""
    from scipy import sparse

    n = len(rows)
    keep = rows.ravel() >= 0
    weights = (np.maximum(sims, 0) ** gamma).ravel()[keep]
    graph = sparse.csr_matrix(
        (weights, (np.repeat(np.arange(n), rows.shape[1])[keep], rows.ravel()[keep])), (n, n)
    )
    graph = graph.minimum(graph.T)  # mutual neighbours only
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    return sparse.diags(scale) @ graph @ sparse.diags(scale)


def diffuse(
    graph,
    start: np.ndarray,
    *,
    alpha: float = DIFFUSION_ALPHA,
    steps: int = DIFFUSION_STEPS,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """`start` (Q, N: each query's similarities to its nearest items, 0 elsewhere) spread over
    `graph` for `steps` rounds: items many paths reach rise. (Q, N). `keep` (Q, N), 0 or 1, takes
    nodes out of a query's graph (a catalog item asking for its own neighbours is not a path)."""
    spread = start.copy()
    for _ in range(steps):
        flow = spread if keep is None else spread * keep
        spread = alpha * (graph @ flow.T).T + (1 - alpha) * start
        if keep is not None:
            spread *= keep
    return spread


def diffusion_start(scores: np.ndarray, rows: np.ndarray, n: int, *, gamma: float = 3.0) -> np.ndarray:
    """The start vectors (Q, N) of queries whose nearest items `rows` (Q, k) score `scores` (Q, k)."""
    start = np.zeros((len(rows), n), np.float64)
    np.put_along_axis(start, rows, np.maximum(scores, 0) ** gamma, axis=1)
    return start


def diffusion(
    queries: np.ndarray,
    catalog: np.ndarray,
    *,
    k: int = 20,
    depth: int = 100,
    alpha: float = DIFFUSION_ALPHA,
    steps: int = DIFFUSION_STEPS,
    gamma: float = 3.0,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Re-ranked top `depth` rows per query by diffusion over the symmetric kNN graph."""
    rows, sims = neighbours or catalog_neighbours(catalog, k=k)
    graph = diffusion_graph(rows, sims, gamma=gamma)
    scores = queries @ catalog.T
    near = top_rows(scores, k)
    start = diffusion_start(np.take_along_axis(scores, near, axis=1), near, len(catalog), gamma=gamma)
    spread = diffuse(graph, start, alpha=alpha, steps=steps)
    # ties (items the diffusion never reached) fall back to the cosine
    return top_rows(spread + 1e-6 * scores, depth)


def rerank(
    queries: np.ndarray, catalog: np.ndarray, *, method: str, depth: int = 100, **options
) -> np.ndarray:
    """Top `depth` rows per query by `method` (none: the cosine)."""
    if method == "none":
        return top_rows(queries @ catalog.T, depth)
    if method == "kreciprocal":
        return kreciprocal(queries, catalog, depth=depth, **options)
    if method == "diffusion":
        return diffusion(queries, catalog, depth=depth, **options)
    raise ValueError(f"rerank must be one of {', '.join(RERANKS)}, not {method!r}")
