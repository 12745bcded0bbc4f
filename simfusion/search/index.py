"""The catalog's FAISS indexes: build, search with fusion, add, remove, save and load.

A `CatalogIndex` holds, for early fusion, one index over the fused vectors (sqrt-weighted
concatenation of the views) and, for late and rrf fusion, one index per view. Candidates come
from the FAISS indexes; every candidate is then rescored exactly per view from its reconstructed
vector, so each hit carries its per-view scores whatever the index kind.

The FAISS kinds themselves (exact, ivf, hnsw, ivfpq, opq, binary), the memory-budget chooser and
mmap reading live in `simfusion.search.faiss_index`. FAISS cannot remove from HNSW, so removed items
become tombstones skipped at search time and the graph is rebuilt once they are a quarter of it.
For the PQ kinds the per-view scores come from the decoded (approximate) vectors. Catalog ids
(strings) map to int64 labels that are never reused.

An exact early-fusion index over many wide vectors also keeps a `probe` part
(`simfusion.search.probe`): short projections of the fused vectors that a query scans first, its
candidates then rescored exactly from the full fused part.

Saved as a folder: `index.json` (settings, ids and labels), `params.npz` (the fitted pooling
normalisation and whitening, no pickle) and one `.faiss` file per part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simfusion import __version__
from simfusion.search.clusters import (
    CLUSTERS,
    cluster_probe,
    cluster_vectors,
    clusters_meta,
    fit_clusters,
    has_clusters,
    query_shares,
    width,
    with_cluster_queries,
    with_clusters,
)
from simfusion.search.faiss_index import EF_SEARCH, HNSW_M, build_faiss_index, faiss_reconstruct, faiss_search
from simfusion.search.index_checks import check_input, check_recall
from simfusion.search.index_plan import plan_index
from simfusion.search.probe import PROBE, PROBE_CANDIDATES, PROBE_DIM, PROJECTION, fit_projection, uses_probe
from simfusion.search.scene import CLEAN, PREFIX, SCENE, profile_fused, profile_weights, scene_profile
from simfusion.search.vectors import (
    FUSED,
    binary_codes,
    check_views,
    hamming_similarity,
    normalize_weights,
    rrf,
)

log = logging.getLogger(__name__)

INDEX_FORMAT = "simfusion-index"
INDEX_FORMAT_VERSION = 1
META_FILE = "index.json"
PARAMS_FILE = "params.npz"
TOMBSTONE_SHARE = 0.25

Hit = dict[str, Any]


class IndexFileError(ValueError):
    """An index folder that is missing, damaged or from another version: re-run fusion.py."""


# ---------------------------------------------------------------- the catalog index


@dataclass
class CatalogIndex:
    """The fused search structure of one catalog; `meta` is what `index.json` holds."""

    meta: dict[str, Any]
    params: dict[str, np.ndarray]
    parts: dict[str, Any]
    ids: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    removed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.remap()

    def remap(self) -> None:
        """Refresh the id <-> label lookups after `ids` / `labels` changed."""
        self._label_of = {item: int(label) for item, label in zip(self.ids, self.labels, strict=True)}
        self._id_of = {int(label): item for item, label in zip(self.ids, self.labels, strict=True)}

    @property
    def views(self) -> list[str]:
        return list(self.meta["views"])

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.meta["weights"])

    @property
    def scene_views(self) -> list[str]:
        """The views a scene query is chosen and ranked with (simfusion.search.scene)."""
        return list(profile_weights(self.meta, SCENE))

    @property
    def fusion(self) -> str:
        return self.meta["fusion"]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def clusters_share(self) -> float:
        """The clusters term's share of the fused score (simfusion.search.clusters); 0 without."""
        return float(self.meta.get("clusters", {}).get("share", 0.0)) if has_clusters(self.params) else 0.0

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: str) -> bool:
        return item in self._label_of

    def label_of(self, item: str) -> int:
        return self._label_of[item]

    def id_of(self, label: int) -> str:
        return self._id_of[label]


def build_index(
    vectors_by_view: Mapping[str, np.ndarray],
    ids: Sequence[str],
    *,
    params: Mapping[str, np.ndarray],
    fusion: str = "early",
    weights: Mapping[str, float] | None = None,
    kind: str = "auto",
    pooling: str = "avgmax",
    whiten: bool = False,
    nlist: int | None = None,
    nprobe: int | None = None,
    ef_search: int = EF_SEARCH,
    hnsw_m: int = HNSW_M,
    pq_m: int | None = None,
    max_memory: int | None = None,
    target_latency_ms: float | None = None,
    clusters: bool = False,
    scene_weights: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> CatalogIndex:
    """Index catalog vectors (already pooled and transformed by `fusion.fit_transform`).

    With `kind="auto"` and `max_memory` (bytes), the kind and its parameters come from
    `choose_index` (memory budget and `target_latency_ms`). `extra` goes into the meta as is
    (e.g. what the feature store says about its models). `clusters`: the clusters term of an
    early float fusion (simfusion.search.clusters). An index holding a view that is not scene-safe gets
    a scene profile (simfusion.search.scene): `scene_weights`, else its own weights of the others.
    """
    ids = check_input(vectors_by_view, ids, fusion=fusion, kind=kind)
    views = list(vectors_by_view)
    weights = {view: float((weights or {}).get(view, 1.0)) for view in views}
    normalize_weights(weights)  # validates
    dims = {view: int(np.asarray(vectors).shape[1]) for view, vectors in vectors_by_view.items()}
    plan = plan_index(kind, len(ids), sum(dims.values()), nlist, nprobe, pq_m, max_memory, target_latency_ms)
    meta = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "package_version": __version__,
        "views": views,
        "weights": weights,
        "fusion": fusion,
        "pooling": pooling,
        "whiten": bool(whiten),
        "dims": dims,
        **plan,
        "ef_search": ef_search,
        "hnsw_m": hnsw_m,
        "next_label": len(ids),
        **dict(extra or {}),
    }
    scene = scene_profile(weights, scene_weights) if fusion == "early" else None
    if scene:
        meta["scene"] = scene
    index = CatalogIndex(
        meta=meta, params=dict(params), parts={}, ids=ids, labels=np.arange(len(ids), dtype=np.int64)
    )
    _fill(index, vectors_by_view, clusters=clusters)
    log.info("indexed %d items: %s fusion of %s, %s index", len(ids), fusion, ", ".join(views), index.kind)
    return index


def _fill(index: CatalogIndex, vectors_by_view: Mapping[str, np.ndarray], *, clusters: bool) -> None:
    """Fit what the index learns (the clusters term, the probe's projection), then build and check
    its FAISS parts."""
    data = part_data(index, vectors_by_view)
    data = _add_clusters(index, vectors_by_view, data) if clusters else data
    if uses_probe(index.kind, index.fusion, sum(index.meta["dims"].values()), len(index)):
        _add_probe(index, data)
    _build_parts(index, data)
    check_recall(index, data)


def _add_probe(index: CatalogIndex, data: dict[str, np.ndarray]) -> None:
    index.params[PROJECTION] = fit_projection(data[FUSED], dim=PROBE_DIM)
    index.meta["probe_dim"] = PROBE_DIM
    data[PROBE] = data[FUSED] @ index.params[PROJECTION]


def _add_clusters(
    index: CatalogIndex, vectors_by_view: Mapping[str, np.ndarray], data: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Fit the clusters term on the fused vectors (simfusion.search.clusters); the parts' data
    with it, or as they were for a catalog too small to fit it."""
    start = time.perf_counter()
    fitted = fit_clusters(data[FUSED]) if index.fusion == "early" and index.kind != "binary" else {}
    if not fitted:
        return data
    index.params.update(fitted)
    index.meta["clusters"] = clusters_meta(fitted, len(index), seconds=time.perf_counter() - start)
    if "scene" in index.meta:  # the scene profile's own projection, fitted on its own fused vectors
        start, weights = time.perf_counter(), index.meta["scene"]["weights"]
        fitted = fit_clusters(profile_fused(vectors_by_view, weights), prefix=PREFIX)
        index.params.update(fitted)
        seconds = time.perf_counter() - start
        index.meta["scene"]["clusters"] = clusters_meta(fitted, len(index), seconds=seconds, prefix=PREFIX)
    return part_data(index, vectors_by_view)


def _build_parts(index: CatalogIndex, part_data: Mapping[str, np.ndarray]) -> None:
    for name, data in part_data.items():
        index.parts[name] = build_faiss_index(
            data,
            index.labels,
            kind=index.kind,
            nlist=index.meta["nlist"],
            hnsw_m=index.meta["hnsw_m"],
            pq_m=_part_pq_m(index, name),
        )


def _part_pq_m(index: CatalogIndex, name: str) -> int | None:
    """A part's PQ code bytes: the planned bytes shared out by dimension (all of them for early fusion)."""
    total = index.meta.get("pq_m")
    if not total or name == FUSED:
        return total
    dim = index.meta["dims"][name]
    return max(1, round(total * dim / sum(index.meta["dims"].values())))


def _part_names(index: CatalogIndex) -> list[str]:
    return [FUSED] if index.fusion == "early" else index.views


def _codes(index: CatalogIndex, view: str, vectors: np.ndarray) -> np.ndarray:
    return binary_codes(vectors, index.params.get(f"{view}/center"))


def part_data(index: CatalogIndex, vectors_by_view: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What each FAISS part stores for these items: fused or per-view vectors, or their codes."""
    binary = index.kind == "binary"
    check_dims(index, vectors_by_view, index.views, what="vectors")
    if binary:
        per_view = {view: _codes(index, view, vectors_by_view[view]) for view in index.views}
    else:
        per_view = {view: np.asarray(vectors_by_view[view], np.float32) for view in index.views}
    if index.fusion != "early":
        return per_view
    if binary:
        return {FUSED: np.ascontiguousarray(np.concatenate([per_view[v] for v in index.views], axis=1))}
    share = normalize_weights(index.weights)
    fused = np.concatenate([np.sqrt(share[v]) * per_view[v] for v in index.views], axis=1)
    if index.clusters_share:
        more = []
        if has_clusters(index.params, PREFIX):
            scene = profile_fused(per_view, index.meta["scene"]["weights"])
            more.append(cluster_vectors(scene, index.params, PREFIX))
        fused = with_clusters(fused, index.params, share=index.clusters_share, more=more)
    if PROJECTION not in index.params:
        return {FUSED: fused}
    return {FUSED: fused, PROBE: fused @ index.params[PROJECTION]}


def check_dims(index: CatalogIndex, vectors: Mapping[str, np.ndarray], views: Sequence[str], *, what: str):
    """Every one of `views` is in `vectors`, as wide as the index's view."""
    for view in views:
        if view not in vectors:
            raise ValueError(f"{what} of view {view!r} are missing")
        got, dim = np.asarray(vectors[view]).shape[-1], index.meta["dims"][view]
        if got != dim:
            raise ValueError(f"{what} of view {view!r} have {got} dimensions, the index {dim}")


def _offsets(index: CatalogIndex) -> dict[str, tuple[int, int]]:
    """Where each view sits inside a fused vector (float columns, or code bytes for binary)."""
    out, start = {}, 0
    for view in index.views:
        dim = index.meta["dims"][view]
        columns = (dim + 7) // 8 if index.kind == "binary" else dim
        out[view] = (start, start + columns)
        start += columns
    clean, scene = width(index.params), width(index.params, PREFIX)
    out[CLEAN], out[SCENE] = (start, start + clean), (start + clean, start + clean + scene)
    return out


def search(
    index: CatalogIndex,
    queries: Mapping[str, np.ndarray],
    *,
    k: int = 10,
    candidates: int | None = None,
    views: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    clusters: bool = True,
    clusters_share: float | Sequence[float] | None = None,
    profile: str = CLEAN,
) -> list[list[Hit]]:
    """The `k` best items for each query: hits {id, score, scores: {view: score}} best first.

    `queries` maps view -> vectors (Q, d) made with the index's params. `candidates` items per
    FAISS part are gathered (default k) and rescored exactly; `views` and `weights` may narrow
    or re-weight the views the index was built with, without rebuilding it; either, or `clusters`
    False, leaves out the clusters term (simfusion.search.clusters). `clusters_share` (one for all
    queries, or one per query) replaces the term's share of the score the index was built with.
    `profile` "scene" searches with the index's scene profile (simfusion.search.scene) where it has one.
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, not {k}")
    built = profile_weights(index.meta, profile)
    block = SCENE if profile == SCENE and "scene" in index.meta else CLEAN
    views = list(views or built)
    check_views(views, index.views, holder="the index")
    base = {view: built.get(view, index.weights[view]) for view in views}
    share = normalize_weights({view: float((weights or base).get(view, base[view])) for view in views})
    check_dims(index, queries, views, what="query vectors")
    count = len(np.asarray(queries[views[0]]))
    if not len(index):
        return [[] for _ in range(count)]
    wanted = min(max(k, candidates or k), len(index))
    if clusters:
        prefix = PREFIX if block == SCENE else ""
        queries = with_cluster_queries(queries, index.params, normalize_weights(built), share, prefix)
    shares = query_shares(index.clusters_share, clusters_share, count)
    pools = _candidates(index, queries, share, wanted, shares, block, nprobe=nprobe, ef_search=ef_search)
    searched = [v for v in (*views, CLUSTERS) if v in queries]
    return [
        _rescore(
            index, {v: np.asarray(queries[v])[i] for v in searched}, pools[i], share, k, shares[i], block
        )
        for i in range(count)
    ]


def _candidates(
    index: CatalogIndex,
    queries: Mapping[str, np.ndarray],
    share: dict[str, float],
    wanted: int,
    shares: np.ndarray,
    block: str,
    *,
    nprobe: int | None,
    ef_search: int | None,
) -> list[np.ndarray]:
    """Candidate labels per query: the union of what each searched part returns (the views of
    `share`; a query's clusters vector goes into the fused part's `block`)."""
    binary = index.kind == "binary"
    options = {
        "nprobe": nprobe or index.meta.get("nprobe"),
        "ef_search": ef_search or index.meta.get("ef_search"),
        "exclude": sorted(index.removed),
    }
    found: list[np.ndarray] = []
    if index.fusion == "early":
        if binary:
            probe = np.concatenate(
                [_codes(index, v, _all_views(index, queries, v)) for v in index.views], axis=1
            )
        else:
            built = normalize_weights(index.weights)
            # query-side weights: <q', x> = sum_v share_v cos_v for any views/weights at query time
            probe = np.concatenate(
                [share.get(v, 0.0) / np.sqrt(built[v]) * _all_views(index, queries, v) for v in index.views],
                axis=1,
            )
            dims, which = (width(index.params), width(index.params, PREFIX)), int(block == SCENE)
            probe = cluster_probe(
                probe, queries.get(CLUSTERS), index.clusters_share, dims, queried=shares, block=which
            )
        if PROBE in index.parts:
            probe, part, wanted = probe @ index.params[PROJECTION], PROBE, max(wanted, PROBE_CANDIDATES)
        else:
            part = FUSED
        found.append(faiss_search(index.parts[part], probe, min(wanted, len(index)), **options)[1])
    else:
        for view in share:
            data = np.asarray(queries[view], np.float32)
            probe = _codes(index, view, data) if binary else data
            found.append(faiss_search(index.parts[view], probe, wanted, **options)[1])
    out = []
    for row in range(len(found[0])):
        labels = np.concatenate([part[row] for part in found])
        out.append(np.array(list(dict.fromkeys(labels[labels >= 0].tolist())), dtype=np.int64))
    return out


def _all_views(index: CatalogIndex, queries: Mapping[str, np.ndarray], view: str) -> np.ndarray:
    """A view's query vectors, or zeros for a view left out at query time (early fusion only)."""
    if view in queries:
        return np.asarray(queries[view], np.float32)
    count = len(np.asarray(next(iter(queries.values()))))
    return np.zeros((count, index.meta["dims"][view]), np.float32)


def view_scores(
    index: CatalogIndex, query: Mapping[str, np.ndarray], labels: np.ndarray, block: str = CLEAN
) -> dict[str, np.ndarray]:
    """Exact per-view similarity of one query (view -> (d,)) to the items `labels`; its clusters
    vector is scored against the fused part's `block` (simfusion.search.scene)."""
    out = {}
    binary = index.kind == "binary"
    if index.fusion == "early":
        stored = faiss_reconstruct(index.parts[FUSED], labels)
        built = normalize_weights(index.weights)
        offsets = _offsets(index)
    for view, vector in query.items():
        scale = 1.0
        if view == CLUSTERS:
            start, stop = offsets[block]
            data, scale = stored[:, start:stop], 1.0 / np.sqrt(index.clusters_share)
        elif index.fusion == "early":
            start, stop = offsets[view]
            data = stored[:, start:stop]
            scale = 1.0 if binary else 1.0 / np.sqrt(built[view] * (1 - index.clusters_share))
        else:
            data = faiss_reconstruct(index.parts[view], labels)
        if binary:
            code = _codes(index, view, np.asarray(vector, np.float32)[None])[0]
            out[view] = hamming_similarity(code, data, bits=index.meta["dims"][view])
        else:
            # scaling the scores, not the stored vectors, spares a copy of every candidate's vector
            out[view] = (data @ np.asarray(vector, np.float32)) * np.float32(scale)
    return out


def _rescore(
    index: CatalogIndex,
    query: dict[str, np.ndarray],
    labels: np.ndarray,
    share: dict[str, float],
    k: int,
    clusters_share: float,
    block: str,
) -> list[Hit]:
    if not len(labels):
        return []
    per_view = view_scores(index, query, labels, block)
    if index.fusion == "rrf":
        rankings = [labels[np.argsort(-per_view[view], kind="stable")] for view in per_view]
        ranked, values = rrf(rankings, weights=[share[view] for view in per_view])
        position = {int(label): row for row, label in enumerate(labels.tolist())}
        rows = np.array([position[int(label)] for label in ranked[:k]], dtype=np.int64)
        scores = values[:k]
    else:
        fused = sum(share[view] * per_view[view].astype(np.float64) for view in share)
        if CLUSTERS in per_view:
            fused = (1 - clusters_share) * fused + clusters_share * per_view[CLUSTERS]
        rows = np.argsort(-fused, kind="stable")[:k]
        scores = fused[rows]
    hits = []
    for row, score in zip(rows.tolist(), np.asarray(scores).tolist(), strict=True):
        hits.append(
            {
                "id": index.id_of(int(labels[row])),
                "score": round(float(score), 6),
                "scores": {view: round(float(per_view[view][row]), 6) for view in per_view},
            }
        )
    return hits
