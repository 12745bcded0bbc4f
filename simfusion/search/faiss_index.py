"""Single FAISS indexes: one registry of kinds, search, reconstruct, mmap loading.

Kinds (`BUILDERS`): `exact` (IndexFlatIP), `hnsw` (IndexHNSWFlat), `ivf` (IndexIVFFlat), `ivfpq`
(IndexIVFPQ: product-quantised codes of `pq_m` bytes per vector), `opq` (an OPQ rotation in front of
an IndexIVFPQ, better codes for the same bytes) and `binary` (IndexBinaryFlat over sign bits). The IVF
kinds keep their own ids and a hashtable direct map, so items can be removed and reconstructed; they
are trained on a sample of at most `TRAIN_LIMIT` vectors. A new kind is one builder function and one
line in `BUILDERS`.

Choosing the kind and its parameters (from a memory budget, as autofaiss does) is
simfusion.search.index_plan; `measure_recall` checks a built index against exact search.
`read_faiss_index(..., mmap=True)` maps the inverted lists of the IVF kinds from disk for serving.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXACT_LIMIT = 50_000  # auto: exact search below this many items, HNSW from here on
HNSW_M = 32
EF_SEARCH = 64
EF_CONSTRUCTION = 40
TRAIN_LIMIT = 100_000  # k-means on more points costs minutes and gains little
IVF_TRAIN_LIMIT = TRAIN_LIMIT
PQ_NBITS = 8
OPQ_ITERATIONS = 25  # FAISS's 50 doubles the training time for little recall
MMAP_KINDS = ("ivf", "ivfpq", "opq")  # kinds whose inverted lists FAISS can map from disk
# memory per item beyond its vector or code: its int64 id, and the direct map's hashtable entry
ID_BYTES = 8
DIRECT_MAP_BYTES = 32
# bytes of codes or vectors scanned per ms on one core, for the latency estimate only (calibrated
# on the 10M IVF-PQ run of benchmarks/bench_search.py: 12.7 MB of codes in 12 ms)
SCAN_BYTES_PER_MS = 1e6


def single_query_threads() -> None:
    """One thread for FAISS (OpenMP) and for numpy's BLAS, in processes that answer one query at a
    time (the service, predict.py). Neither gains on a single query, and both keep their threads
    spinning after it, taking the cores from the next query's TensorFlow work. OpenMP's setting
    belongs to the calling thread: call this in every thread that searches (the service's search
    pool has it as its initializer); the BLAS limit holds for the whole process. Measured on 2 cores:
    FAISS's probe scan of a 10,000-item catalog 2.2 ms with 2 threads, 0.2 ms with 1; HED on the next
    query's detection copy 45-65 ms right after a search with BLAS on 2 threads, 25-30 ms with 1."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")


def choose_kind(n: int) -> str:
    """The index kind for a catalog of `n` items: exact search while it is cheap, HNSW beyond."""
    return "exact" if n < EXACT_LIMIT else "hnsw"


def ivf_nlist(n: int) -> int:
    """IVF lists for `n` items: ~4 sqrt(n), with at least ~39 training points per list."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))


def pq_nlist(n: int) -> int:
    """IVF lists of the PQ kinds: as `ivf_nlist`, but no more than the training sample gives ~39
    points each (the PQ kinds are for catalogs far larger than the sample)."""
    return min(ivf_nlist(n), TRAIN_LIMIT // 39)


def default_nprobe(nlist: int) -> int:
    """IVF lists searched per query: 4 sqrt(nlist) (about 0.8-0.9 recall@10 on overlapping clusters
    in benchmarks/bench_search.py, where sqrt(nlist) gave only 0.6-0.75)."""
    return min(nlist, max(16, 4 * int(round(math.sqrt(nlist)))))


def pq_m(dim: int, code_bytes: int | None = None) -> int:
    """PQ sub-quantisers (= code bytes at 8 bits) for `dim`: a divisor of `dim` no larger than asked
    (default dim/4, i.e. 1 byte per 4 dimensions, 16x smaller than float32)."""
    wanted = max(1, min(dim, code_bytes or max(1, dim // 4)))
    return max(m for m in range(1, wanted + 1) if dim % m == 0)


def pq_nbits(n: int) -> int:
    """Bits per PQ code: 8 when there are ~39 training points per centroid, fewer for tiny sets."""
    return int(min(PQ_NBITS, max(1, math.floor(math.log2(max(n, 2) / 39))))) if n < 39 * 256 else PQ_NBITS


# ---------------------------------------------------------------- building: one function per kind


@dataclass(frozen=True)
class BuildOptions:
    nlist: int | None = None
    hnsw_m: int = HNSW_M
    pq_m: int | None = None
    seed: int = 0


def _build_exact(vectors: np.ndarray, options: BuildOptions):
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))


def _build_hnsw(vectors: np.ndarray, options: BuildOptions):
    import faiss

    inner = faiss.IndexHNSWFlat(vectors.shape[1], options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = EF_CONSTRUCTION
    return faiss.IndexIDMap2(inner)


def _build_ivf(vectors: np.ndarray, options: BuildOptions):
    import faiss

    dim, nlist = vectors.shape[1], options.nlist or ivf_nlist(len(vectors))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    return _train_ivf(index, index, vectors, options)


def _build_ivfpq(vectors: np.ndarray, options: BuildOptions):
    import faiss

    dim, nlist = vectors.shape[1], options.nlist or pq_nlist(len(vectors))
    m = pq_m(dim, options.pq_m)
    index = faiss.IndexIVFPQ(
        faiss.IndexFlatIP(dim), dim, nlist, m, pq_nbits(len(vectors)), faiss.METRIC_INNER_PRODUCT
    )
    return _train_ivf(index, index, vectors, options)


def _build_opq(vectors: np.ndarray, options: BuildOptions):
    import faiss

    dim, nlist = vectors.shape[1], options.nlist or pq_nlist(len(vectors))
    m = pq_m(dim, options.pq_m)
    ivf = faiss.IndexIVFPQ(
        faiss.IndexFlatIP(dim), dim, nlist, m, pq_nbits(len(vectors)), faiss.METRIC_INNER_PRODUCT
    )
    # OPQ rotates the space so each sub-quantiser gets an even share of the variance
    rotation = faiss.OPQMatrix(dim, m)
    rotation.niter = OPQ_ITERATIONS
    return _train_ivf(faiss.IndexPreTransform(rotation, ivf), ivf, vectors, options)


def _train_ivf(index, ivf, vectors: np.ndarray, options: BuildOptions):
    """Train on a seeded sample of at most TRAIN_LIMIT vectors; hashtable direct map; default nprobe."""
    import faiss

    ivf.cp.seed = options.seed
    train = vectors
    if len(vectors) > TRAIN_LIMIT:
        pick = np.random.default_rng(options.seed).choice(len(vectors), TRAIN_LIMIT, replace=False)
        train = vectors[np.sort(pick)]
    index.train(train)
    # a hashtable direct map lets the IVF reconstruct and remove items by label
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    ivf.nprobe = default_nprobe(ivf.nlist)
    return index


BUILDERS: dict[str, Callable[[np.ndarray, BuildOptions], Any]] = {
    "exact": _build_exact,
    "ivf": _build_ivf,
    "hnsw": _build_hnsw,
    "ivfpq": _build_ivfpq,
    "opq": _build_opq,
}
FAISS_KINDS = (*BUILDERS, "binary")


def build_faiss_index(
    data: np.ndarray,
    labels: np.ndarray,
    *,
    kind: str,
    nlist: int | None = None,
    hnsw_m: int = HNSW_M,
    pq_m: int | None = None,
    seed: int = 0,
):
    """One FAISS index over `data` (float32 vectors, or packed uint8 codes for `binary`) with `labels`.

    Inner product for float vectors (cosine for unit vectors), Hamming for codes.
    """
    import faiss

    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if kind == "binary":
        codes = np.ascontiguousarray(data, dtype=np.uint8)
        index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(codes.shape[1] * 8))
        index.add_with_ids(codes, labels)
        return index
    if kind not in BUILDERS:
        raise ValueError(f"index kind must be one of {', '.join(FAISS_KINDS)}, not {kind!r}")
    vectors = np.ascontiguousarray(data, dtype=np.float32)
    index = BUILDERS[kind](vectors, BuildOptions(nlist=nlist, hnsw_m=hnsw_m, pq_m=pq_m, seed=seed))
    if len(vectors):
        index.add_with_ids(vectors, labels)
    return index


# ---------------------------------------------------------------- searching and reading back


def _unwrap(index):
    """The index under an id map or a pre-transform (OPQ), where the search parameters apply."""
    import faiss

    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexPreTransform):
        return faiss.downcast_index(index.index)
    return index


def faiss_search(
    index,
    queries: np.ndarray,
    k: int,
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
    exclude: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Search `k` nearest labels per query: (distances, labels), labels -1 where fewer exist.

    Distances are inner products for float indexes, Hamming distances for binary ones. `exclude`
    labels are skipped during the search (HNSW tombstones).
    """
    import faiss

    if isinstance(index, faiss.IndexBinary):
        return index.search(np.ascontiguousarray(queries, dtype=np.uint8), k)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    inner = _unwrap(index)
    selector = (
        faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(exclude, np.int64))) if len(exclude) else None
    )
    if isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search or EF_SEARCH, k))
        if selector is not None:
            params.sel = selector
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=min(nprobe or inner.nprobe, inner.nlist))
        if selector is not None:
            params.sel = selector
    else:
        params = None if selector is None else faiss.SearchParameters(sel=selector)
    if isinstance(index, faiss.IndexPreTransform) and params is not None:
        params = faiss.SearchParametersPreTransform(index_params=params)
    return index.search(queries, k, params=params)


def faiss_reconstruct(index, labels: np.ndarray) -> np.ndarray:
    """The stored vectors (or codes) of `labels`, row-aligned (decoded approximations for PQ kinds)."""
    import faiss

    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if isinstance(index, faiss.IndexBinary):
        out = np.empty((len(labels), index.code_size), dtype=np.uint8)
        for row, label in enumerate(labels):
            out[row] = index.reconstruct(int(label))
        return out
    if not len(labels):
        return np.zeros((0, index.d), dtype=np.float32)
    return index.reconstruct_batch(labels)


def faiss_kind(index) -> str:
    import faiss

    if isinstance(index, faiss.IndexBinary):
        return "binary"
    if isinstance(index, faiss.IndexPreTransform):
        return "opq"
    inner = _unwrap(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "exact"


def brute_force_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search in numpy: (scores, rows) best first, for comparison with FAISS."""
    vectors = np.asarray(vectors, dtype=np.float32)
    scores = np.asarray(queries, dtype=np.float32) @ vectors.T
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)


def write_faiss_index(index, path: str | os.PathLike) -> None:
    import faiss

    try:
        if isinstance(index, faiss.IndexBinary):
            faiss.write_index_binary(index, os.fspath(path))
        else:
            faiss.write_index(index, os.fspath(path))
    except RuntimeError as exc:  # FAISS reports a failed fwrite (a full disk) as a RuntimeError
        full = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < 2**20
        reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "write failed"
        raise OSError(
            errno.ENOSPC if full else errno.EIO,
            f"cannot write the index file {os.fspath(path)} ({'the disk is full' if full else reason})",
        ) from exc


def read_faiss_index(path: str | os.PathLike, *, kind: str, mmap: bool = False):
    """Read one index file; `mmap` maps the inverted lists of the IVF kinds from disk (read-only:
    searching and reconstructing work, adding and removing do not). Other kinds are read into memory."""
    import faiss

    if kind == "binary":
        return faiss.read_index_binary(os.fspath(path))
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and kind in MMAP_KINDS else 0
    return faiss.read_index(os.fspath(path), flags)


# ---------------------------------------------------------------- choosing from a memory budget


def measure_recall(
    index, vectors: np.ndarray, labels: np.ndarray, *, k: int = 10, queries: int = 100, seed: int = 0
) -> float:
    """Recall@k of `index` against exact search, for a seeded sample of its own vectors as queries."""
    from faiss.contrib.evaluation import knn_intersection_measure

    vectors = np.asarray(vectors, np.float32)
    if not len(vectors):
        return 1.0
    k = min(k, len(vectors))
    rows = np.random.default_rng(seed).choice(len(vectors), min(queries, len(vectors)), replace=False)
    _, truth = brute_force_search(vectors, vectors[rows], k)
    _, found = faiss_search(index, vectors[rows], k)
    return float(knn_intersection_measure(np.asarray(labels)[truth], found))
