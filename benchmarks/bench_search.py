#!/usr/bin/env python3
"""Benchmark: search latency and recall of the FAISS index kinds on synthetic catalogs.

For catalogs of 10k, 100k and 1M unit vectors (dimension 256, clustered like real embeddings:
sqrt(N) centres plus noise), times one query at a time (batch of 1) with numpy brute force,
FAISS exact (IndexFlatIP), IVF (IndexIVFFlat, nlist ~4 sqrt(N), default nprobe), HNSW
(IndexHNSWFlat, M=32, efSearch 64) and binary codes (IndexBinaryFlat over centred sign bits), and
reports p50 / p95 latency, build time and recall@10 against the exact top 10. Queries are catalog
items with fresh noise. HNSW is built at 10k and 100k only: on 2 cores a 1M graph takes many
minutes. `simfusion search` rows time `simfusion.search.index.search` (early fusion of two 128-d views,
exact index, 100 candidates rescored per view) to show the wrapper's overhead. With --model DIR,
also times the whole query (detection, thumbnail, views, encoders, search) on the sample images.

    python benchmarks/bench_search.py [--sizes 10000,100000,1000000] [--queries 200] [--model out/model]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import load_average, machine, today, write_section  # noqa: E402

log = logging.getLogger("bench_search")

SECTION = "search"
K = 10
HNSW_LIMIT = 200_000
SEARCH_THREADS = 1


def clustered(
    n: int, dim: int, *, seed: int, latent: int = 32, separation: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (n, dim) float32 like real embeddings: sqrt(n) cluster centres, each item its
    centre plus a point of a shared `latent`-dimensional subspace plus a little isotropic noise.

    Low intrinsic dimension (uniform noise in 256-d has no meaningful neighbours); `separation`
    scales the centres: at 1 the clusters are far apart and every index finds everything, at
    0.35 they overlap, so an item's neighbours often sit in other IVF lists (the harder case).
    """
    from simfusion.search.vectors import l2_normalize

    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((max(8, int(math.sqrt(n))), dim)).astype(np.float32)
    basis = (rng.standard_normal((latent, dim)) / math.sqrt(latent)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        which = rng.integers(len(centres), size=stop - start)
        spread = rng.standard_normal((stop - start, latent), dtype=np.float32) @ basis * 0.6
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * 0.05
        out[start:stop] = l2_normalize(centres[which] + spread + noise)
    return out, centres


def queries_from(vectors: np.ndarray, count: int, *, seed: int, noise: float = 0.02) -> np.ndarray:
    """Catalog items moved a little (a re-photographed product), renormalised."""
    from simfusion.search.vectors import l2_normalize

    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(len(vectors), count, replace=False)
    return l2_normalize(
        vectors[rows] + rng.standard_normal((count, vectors.shape[1]), dtype=np.float32) * noise
    )


def time_queries(fn, count: int) -> tuple[list[float], np.ndarray]:
    """Per-query latencies (ms) of fn(query row) -> its K labels, and all labels.

    FAISS searches with SEARCH_THREADS threads: one query at a time gains little from more, and
    OpenMP's spinning threads make latency erratic on a shared 2-core machine.
    """
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    try:
        with threadpool_limits(limits=SEARCH_THREADS):  # numpy's BLAS and OpenMP
            faiss.omp_set_num_threads(SEARCH_THREADS)
            fn(0)  # warm up
            times, labels = [], []
            for row in range(count):
                start = time.perf_counter()
                found = fn(row)
                times.append((time.perf_counter() - start) * 1000)
                labels.append(np.asarray(found).reshape(-1)[:K])
    finally:
        faiss.omp_set_num_threads(before)
    return times, np.stack(labels)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(found, truth, strict=True)])
    )


def bench_size(n: int, dim: int, count: int, seed: int) -> list[dict]:
    import faiss

    from simfusion.search.faiss_index import brute_force_search, ivf_nlist
    from simfusion.search.index import build_faiss_index, build_index, faiss_search, search
    from simfusion.search.vectors import binary_codes, fit_transform

    rows = []
    start = time.perf_counter()
    vectors, _ = clustered(n, dim, seed=seed)
    queries = queries_from(vectors, count, seed=seed)
    log.info("%d x %d vectors made in %.1f s", n, dim, time.perf_counter() - start)
    labels = np.arange(n, dtype=np.int64)

    def row(method, build, times, found, note=""):
        rows.append(
            {
                "n": n,
                "method": method,
                "build": build,
                "p50": float(np.percentile(times, 50)),
                "p95": float(np.percentile(times, 95)),
                "recall": recall(found, truth),
                "note": note,
            }
        )
        log.info(
            "%d %s: build %.1f s, p50 %.2f ms, recall %.3f",
            n,
            method,
            build,
            rows[-1]["p50"],
            rows[-1]["recall"],
        )

    start = time.perf_counter()
    exact = build_faiss_index(vectors, labels, kind="exact")
    build = time.perf_counter() - start
    truth = faiss_search(exact, queries, K)[1]
    times, found = time_queries(lambda r: faiss_search(exact, queries[r : r + 1], K)[1], count)
    row("faiss exact (IndexFlatIP)", build, times, found)
    times, found = time_queries(lambda r: brute_force_search(vectors, queries[r : r + 1], K)[1], count)
    row("numpy brute force", 0.0, times, found, "matmul + argpartition")
    exact = None  # free it before the next index

    start = time.perf_counter()
    ivf = build_faiss_index(vectors, labels, kind="ivf")
    build = time.perf_counter() - start
    default = faiss.downcast_index(ivf).nprobe
    for nprobe in (max(1, default // 4), default):
        times, found = time_queries(
            lambda r, nprobe=nprobe: faiss_search(ivf, queries[r : r + 1], K, nprobe=nprobe)[1], count
        )
        note = f"nlist {ivf_nlist(n)}, nprobe {nprobe}" + (" (default)" if nprobe == default else "")
        row("faiss IVF (IVFFlat)", build, times, found, note)
    ivf = None

    if n <= HNSW_LIMIT:
        start = time.perf_counter()
        hnsw = build_faiss_index(vectors, labels, kind="hnsw")
        build = time.perf_counter() - start
        for ef in (64, 128):
            times, found = time_queries(
                lambda r, ef=ef: faiss_search(hnsw, queries[r : r + 1], K, ef_search=ef)[1], count
            )
            note = f"M 32, efSearch {ef}" + (" (default)" if ef == 64 else "")
            row("faiss HNSW (HNSWFlat)", build, times, found, note)
        hnsw = None

    start = time.perf_counter()
    centre = vectors.mean(axis=0)
    binary = build_faiss_index(binary_codes(vectors, centre), labels, kind="binary")
    build = time.perf_counter() - start
    codes = binary_codes(queries, centre)
    times, found = time_queries(lambda r: binary.search(codes[r : r + 1], K)[1], count)
    row("faiss binary (Hamming)", build, times, found, f"{dim} bits, no float rerank")
    binary = None

    if n <= HNSW_LIMIT:
        half = dim // 2
        views = {"thumbnail": vectors[:, :half], "edges": vectors[:, half:]}
        start = time.perf_counter()
        fitted, params = fit_transform(views)
        index = build_index(fitted, [str(i) for i in range(n)], params=params, kind="exact")
        build = time.perf_counter() - start
        # truth for the wrapper: exact top 10 of the same fused score
        fused = np.concatenate([np.sqrt(0.5) * fitted["thumbnail"], np.sqrt(0.5) * fitted["edges"]], axis=1)
        qv = {"thumbnail": queries[:, :half], "edges": queries[:, half:]}
        from simfusion.search.vectors import transform

        qv = transform(qv, params)
        qf = np.concatenate([np.sqrt(0.5) * qv["thumbnail"], np.sqrt(0.5) * qv["edges"]], axis=1)
        truth = brute_force_search(fused, qf, K)[1]

        def wrapped(r):
            hits = search(index, {v: x[r : r + 1] for v, x in qv.items()}, k=K, candidates=100)[0]
            return np.array([int(hit["id"]) for hit in hits])

        times, found = time_queries(wrapped, count)
        row("simfusion search (early, exact)", build, times, found, "2 views, 100 candidates rescored")
        index = None
    return rows


def bench_model(model: str, repeat: int) -> list[dict]:
    """Whole queries on the sample images: encode (detection .. encoders) then search, per query."""
    from simfusion.search.catalog import Catalog
    from simfusion.search.options import SearchOptions

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = os.path.join(repo, "local_test_data")
    catalog = Catalog.open(model)
    with open(os.path.join(base, "catalog.jsonl")) as stream:
        records = [json.loads(line) for line in stream][:repeat]
    encode_ms, search_ms = [], []
    for record in [records[0]] + records:  # the first one loads the models; not counted
        query = {"id": record["id"], "image": record["image"]}
        start = time.perf_counter()
        encoded = catalog.encode([query], base_path=base)
        middle = time.perf_counter()
        if encoded.records:
            catalog.rank(catalog.vectors(encoded.maps), encoded.records, SearchOptions(k=10))
        end = time.perf_counter()
        encode_ms.append((middle - start) * 1000)
        search_ms.append((end - middle) * 1000)
    encode_ms, search_ms = encode_ms[1:], search_ms[1:]
    total = [a + b for a, b in zip(encode_ms, search_ms, strict=True)]
    return [
        {
            "items": len(catalog.index),
            "views": ", ".join(catalog.index.views),
            "kind": catalog.index.kind,
            "encode": float(np.median(encode_ms)),
            "search": float(np.median(search_ms)),
            "p50": float(np.percentile(total, 50)),
            "p95": float(np.percentile(total, 95)),
            "queries": len(total),
        }
    ]


PQ_SECTION = "search-pq"
PQ_CHUNK = 200_000


def vector_chunks(n: int, dim: int, *, seed: int, latent: int = 32, separation: float = 0.35):
    """`clustered`-like unit vectors, made 200k at a time from per-chunk seeds, so 10M of them never
    sit in memory at once (the same chunks come back on every call)."""
    from simfusion.search.vectors import l2_normalize

    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((max(8, int(math.sqrt(n))), dim)).astype(np.float32)
    basis = (rng.standard_normal((latent, dim)) / math.sqrt(latent)).astype(np.float32)
    for number, start in enumerate(range(0, n, PQ_CHUNK)):
        size = min(PQ_CHUNK, n - start)
        part = np.random.default_rng([seed, number])
        which = part.integers(len(centres), size=size)
        spread = part.standard_normal((size, latent), dtype=np.float32) @ basis * 0.6
        noise = part.standard_normal((size, dim), dtype=np.float32) * 0.05
        yield start, l2_normalize(centres[which] + spread + noise).astype(np.float32)


def bench_pq(n: int, dim: int, kinds: list[str], count: int, pq_bytes: int, seed: int) -> list[dict]:
    """Train each PQ kind on a sample, add N streamed vectors, time single queries, recall vs exact."""
    import resource

    import faiss
    from faiss.contrib.evaluation import knn_intersection_measure
    from faiss.contrib.exhaustive_search import knn_ground_truth

    from simfusion.search.faiss_index import BUILDERS, TRAIN_LIMIT, BuildOptions, faiss_search, pq_nlist

    # queries: new items of the same distribution (the first vectors of a catalog of another seed)
    queries = next(vector_chunks(max(n, count), dim, seed=seed + 1))[1][:count]
    truth, rows = None, []
    for kind in kinds:
        start = time.perf_counter()
        sample = next(vector_chunks(n, dim, seed=seed))[1][:TRAIN_LIMIT]  # chunks are random: a sample
        index = BUILDERS[kind](sample, BuildOptions(nlist=pq_nlist(n), pq_m=pq_bytes, seed=seed))
        trained = time.perf_counter() - start
        added = [0.0]

        def feed(index=index, added=added):
            for offset, chunk in vector_chunks(n, dim, seed=seed):
                begin = time.perf_counter()
                index.add_with_ids(chunk, np.arange(offset, offset + len(chunk), dtype=np.int64))
                added[0] += time.perf_counter() - begin
                yield chunk

        if truth is None:  # exact top 10 over the same stream, while it is being added
            truth = knn_ground_truth(queries, feed(), K, metric_type=faiss.METRIC_INNER_PRODUCT)[1]
        else:
            for _ in feed():
                pass
        times, found = time_queries(
            lambda row, index=index: faiss_search(index, queries[row : row + 1], K)[1], count
        )
        # what re-ranking 100 candidates with exact vectors would find of the true top 10
        wide = faiss_search(index, queries, 10 * K)[1]
        pairs = zip(truth.tolist(), wide.tolist(), strict=True)
        in_wide = np.mean([len(set(a) & set(b)) / K for a, b in pairs])
        inner = faiss.downcast_index(index.index) if kind == "opq" else index
        rows.append(
            {
                "n": n,
                "kind": kind,
                "params": f"nlist {inner.nlist}, nprobe {inner.nprobe}, {inner.pq.M} x {inner.pq.nbits} bits",
                "bytes": len(faiss.serialize_index(index)),
                "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "train": trained,
                "add": added[0],
                "p50": float(np.percentile(times, 50)),
                "recall": float(knn_intersection_measure(truth, found)),
                "in_wide": float(in_wide),
            }
        )
        log.info("%s", rows[-1])
        del index
    return rows


def pq_table(rows: list[dict]) -> str:
    from simfusion.search.index_plan import format_bytes

    lines = [
        "| vectors | kind | parameters | index size | peak RSS | train s | add s | p50 ms | recall@10 "
        "| true top 10 in top 100 |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['kind']} | {r['params']} | {format_bytes(r['bytes'])} | "
            f"{format_bytes(r['rss'])} | {r['train']:.0f} | {r['add']:.0f} | {r['p50']:.2f} | "
            f"{r['recall']:.3f} | {r.get('in_wide', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def pq_main(args) -> int:
    import faiss

    load, began = load_average(), time.perf_counter()
    rows = []
    for n in [int(v) for v in args.pq_sizes.split(",") if v.strip()]:
        kinds = [kind for kind in (args.pq_large_kinds if n >= 5e6 else args.pq_kinds).split(",") if kind]
        rows.extend(bench_pq(n, args.pq_dim, kinds, min(args.queries, n), args.pq_bytes, args.seed))
    section = "\n".join(
        [
            "## search at scale: IVF-PQ and OPQ",
            "",
            f"Synthetic clustered unit vectors of dimension {args.pq_dim} (as in `search`), streamed 200k",
            "at a time so the catalog is never held in memory; each kind is trained on a sample of 100k",
            "(`simfusion.search.faiss_index.BUILDERS`, hashtable direct map so items can be removed and",
            "rescored), then every vector is added. Queries are new items of the same distribution, one at a",
            f"time on {SEARCH_THREADS} thread, default nprobe; recall@10 against the exact top 10",
            "(`faiss.contrib.exhaustive_search.knn_ground_truth` over the same stream). Index size is",
            "`faiss.serialize_index`; peak RSS is the whole benchmark process so far (vectors chunks, the",
            "index, the ground truth). The last column is the share of the true top 10 among the index's",
            "top 100: what re-ranking 100 candidates with exact vectors (from the feature store) reaches.",
            f"Machine: {machine()}, SHARED with other engineers' jobs (load average {load} at the start),",
            f"so times are noisy; FAISS {faiss.__version__}; training and adding on",
            f"{faiss.omp_get_max_threads()} threads. Date: {today()}.",
            f"Whole run: {time.perf_counter() - began:.0f} s.",
            "",
            pq_table(rows),
            "",
            f"Reproduce: `python benchmarks/bench_search.py --pq_sizes {args.pq_sizes} --pq_kinds "
            f"{args.pq_kinds} --pq_large_kinds {args.pq_large_kinds}` (large: 5M vectors and more)",
        ]
    )
    print(section)
    if not args.no_write:
        write_section(PQ_SECTION, section)
    return 0


def table(rows: list[dict]) -> str:
    lines = [
        "| catalog | method | build s | p50 ms | p95 ms | recall@10 | notes |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['method']} | {r['build']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} | "
            f"{r['recall']:.3f} | {r['note']} |"
        )
    return "\n".join(lines)


def model_table(rows: list[dict]) -> str:
    lines = [
        "| catalog items | views | index | encode ms (p50) | search ms (p50) | total p50 ms | total p95 ms |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['items']} | {r['views']} | {r['kind']} | {r['encode']:.0f} | {r['search']:.1f} | "
            f"{r['p50']:.0f} | {r['p95']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated catalog sizes")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200, help="queries timed per method (one at a time)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a trained model folder (with index/): also time whole queries")
    parser.add_argument("--model_queries", type=int, default=20)
    parser.add_argument("--no_write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--pq_sizes", help="instead: IVF-PQ / OPQ at these sizes, e.g. 1000000,10000000")
    parser.add_argument("--pq_kinds", default="ivfpq,opq", help="PQ kinds to build at each --pq_sizes")
    parser.add_argument("--pq_large_kinds", default="ivfpq", help="kinds built at 5M vectors and more")
    parser.add_argument("--pq_dim", type=int, default=128)
    parser.add_argument("--pq_bytes", type=int, default=16, help="PQ code bytes per vector")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if args.pq_sizes:
        return pq_main(args)
    import faiss

    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    build_threads = faiss.omp_get_max_threads()
    load = load_average()
    began = time.perf_counter()
    rows = []
    for n in sizes:
        rows.extend(bench_size(n, args.dim, min(args.queries, n), args.seed))
    text = table(rows)
    command = "python benchmarks/bench_search.py" + (
        f" --sizes {args.sizes}" if args.sizes != "10000,100000,1000000" else ""
    )
    extra = ""
    if args.model:
        extra = (
            "\n\nWhole queries (one sample image of local_test_data at a time, after the models are loaded: "
            "detection, thumbnail, views, encoders, then search):\n\n"
            + model_table(bench_model(args.model, args.model_queries))
        )
        command += " --model MODEL_DIR"
        extra += f"\n\nMODEL_DIR was `{args.model}`."
    seconds = time.perf_counter() - began
    section = "\n".join(
        [
            "## search",
            "",
            f"One query at a time (batch of 1), k={K}, {args.queries} queries per row; synthetic",
            f"clustered unit vectors of dimension {args.dim} (sqrt(N) overlapping centres + a shared 32-d",
            "subspace + a little noise; queries are catalog items moved a little); recall@10 against the",
            "exact top 10.",
            f"Machine: {machine()}; FAISS {faiss.__version__}; builds on",
            f"{build_threads} threads, searches on {SEARCH_THREADS} (one query at a time gains little from",
            "more, and spinning OpenMP threads make latency erratic on shared cores); load average",
            f"{load} at the start (other work shared the cores, so p95 is noisy).",
            f"Date: {today()}.",
            f"Whole run: {seconds:.0f} s.",
            "",
            "HNSW is not built at 1M: its build takes many minutes on 2 cores (use IVF there). Binary rows",
            "rank by Hamming distance alone; the index's binary kind rescores per view with Hamming too, so",
            "this is its recall.",
            "",
            text + extra,
            "",
            f"Reproduce: `{command}`",
        ]
    )
    print(section)
    if not args.no_write:
        write_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
