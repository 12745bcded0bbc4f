"""The probe part of an exact early-fusion index: the fused vectors projected onto their top
`PROBE_DIM` singular directions, fitted on the catalog at build and frozen like the whitening.

A query scans the short probe vectors for at least `PROBE_CANDIDATES` candidates, which the index
then rescores exactly from its full fused part: at 10,000 items of 7,588 dimensions the scan reads
10 MB instead of 300 MB a query. The recall of the two steps against the full scan is measured at
build and kept in the index's meta (`measured_recall.probe`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from simfusion.search.faiss_index import brute_force_search, faiss_reconstruct, faiss_search
from simfusion.search.vectors import FUSED

PROBE = "probe"  # the part of projected fused vectors that an exact early-fusion search scans first
PROJECTION = f"{PROBE}/projection"  # params key of the (fused dims, PROBE_DIM) matrix
PROBE_DIM = 256  # dimensions of the probe vectors
PROBE_MIN_DIM = 4 * PROBE_DIM  # fused vectors narrower than this are scanned in full
PROBE_MIN_ITEMS = 4 * PROBE_DIM  # below this many items the full scan is already fast
PROBE_CANDIDATES = 200  # candidates the probe scan passes on to the exact rescoring, at the least
PROBE_FIT_LIMIT = 10_000  # items sampled to fit the projection


def uses_probe(kind: str, fusion: str, dim: int, items: int) -> bool:
    """Whether a new index gets a probe part: exact early fusion of many wide float vectors."""
    return kind == "exact" and fusion == "early" and dim >= PROBE_MIN_DIM and items >= PROBE_MIN_ITEMS


def fit_projection(fused: np.ndarray, *, dim: int = PROBE_DIM, seed: int = 0) -> np.ndarray:
    """The top `dim` right singular vectors of (a seeded sample of) the fused vectors, (D, dim).

    Not centred: the projection keeps inner products (what the index ranks by), not variances.
    """
    from sklearn.utils.extmath import randomized_svd

    fused = np.asarray(fused, np.float32)
    if len(fused) > PROBE_FIT_LIMIT:
        fused = fused[np.random.default_rng(seed).choice(len(fused), PROBE_FIT_LIMIT, replace=False)]
    _, _, rows = randomized_svd(fused, dim, n_iter=4, random_state=seed)
    return np.ascontiguousarray(rows.T, dtype=np.float32)


def probe_recall(
    parts: Mapping[str, Any],
    projection: np.ndarray,
    fused: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 10,
    queries: int = 100,
    seed: int = 0,
) -> float:
    """Recall@k of the probe scan plus exact rescoring against the full scan, for a seeded sample
    of an index's own fused vectors (row-aligned with its `labels`) as queries."""
    from faiss.contrib.evaluation import knn_intersection_measure

    rows = np.random.default_rng(seed).choice(len(fused), min(queries, len(fused)), replace=False)
    probes = fused[rows]
    _, truth = brute_force_search(fused, probes, k)
    _, pools = faiss_search(parts[PROBE], probes @ projection, min(max(k, PROBE_CANDIDATES), len(fused)))
    found = np.full((len(rows), k), -1, np.int64)
    for q, pool in enumerate(pools):
        pool = pool[pool >= 0]
        exact = faiss_reconstruct(parts[FUSED], pool) @ probes[q]
        best = pool[np.argsort(-exact, kind="stable")[:k]]
        found[q, : len(best)] = best
    return float(knn_intersection_measure(np.asarray(labels)[truth], found))
