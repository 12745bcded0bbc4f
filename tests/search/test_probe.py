"""The probe part: an exact early-fusion index of many wide vectors scans short projections first,
then rescores exactly; it must rank like the full scan."""

import numpy as np
import pytest

from simfusion.search.index import build_index, search
from simfusion.search.index_edit import add_items, remove_items
from simfusion.search.index_files import load_index, save_index
from simfusion.search.probe import PROBE, PROBE_DIM, PROBE_MIN_ITEMS, PROJECTION
from simfusion.search.vectors import FUSED, fit_transform, l2_normalize, transform


def wide_catalog(n, *, seed=0):
    """Two wide views of items around 40 centres, each in a low-rank subspace (like pooled CNN maps)."""
    rng = np.random.default_rng(seed)
    views = {}
    for view, dim in (("hed_vgg16", 768), ("hog", 384)):
        basis = rng.standard_normal((64, dim))
        centres = rng.standard_normal((40, 64))
        codes = centres[rng.integers(40, size=n)] + 0.5 * rng.standard_normal((n, 64))
        views[view] = l2_normalize(codes @ basis + 0.5 * rng.standard_normal((n, dim)))
    return views, [f"item-{i:05d}" for i in range(n)]


@pytest.fixture(scope="module")
def built():
    views, ids = wide_catalog(PROBE_MIN_ITEMS + 200)
    vectors, params = fit_transform(views)
    return build_index(vectors, ids, params=params, kind="exact"), vectors, ids


def overlap(found, truth, ids):
    """Mean share of each query's exact top 10 among the hits found."""
    pairs = zip(found, truth, strict=True)
    return np.mean([len({hit["id"] for hit in hits} & {ids[i] for i in top}) / 10 for hits, top in pairs])


def full_scan(vectors, queries, weights=None):
    """The exact top 10 of every query by the weighted cosine sum over all items."""
    weights = weights or {view: 1.0 for view in vectors}
    total = sum(weights.values())
    scores = sum(weights[v] / total * (queries[v] @ vectors[v].T) for v in vectors)
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


def test_wide_exact_index_gets_a_probe_with_measured_recall(built):
    index, _, _ = built
    assert set(index.parts) == {FUSED, PROBE}
    assert index.params[PROJECTION].shape == (768 + 384, PROBE_DIM)
    assert index.parts[PROBE].d == PROBE_DIM
    assert index.meta["measured_recall"][PROBE] >= 0.95


def test_narrow_or_small_indexes_scan_in_full(built):
    _, vectors, ids = built
    small = {view: data[:300] for view, data in vectors.items()}
    params = fit_transform(small)[1]
    assert PROBE not in build_index(small, ids[:300], params=params, kind="exact").parts
    assert PROBE not in build_index(vectors, ids, params=params, kind="hnsw").parts
    assert PROBE not in build_index(vectors, ids, params=params, kind="exact", fusion="late").parts


def test_probe_search_ranks_like_the_full_scan(built):
    index, vectors, ids = built
    rows = np.random.default_rng(1).choice(len(ids), 50, replace=False)
    queries = {view: data[rows] for view, data in vectors.items()}
    truth = full_scan(vectors, queries)
    found = search(index, queries, k=10)
    assert overlap(found, truth, ids) >= 0.95
    for row, hits in zip(rows, found, strict=True):
        assert hits[0]["id"] == ids[row]  # an item ranks itself first
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)  # rescored exactly, not projected


def test_probe_follows_query_side_weights(built):
    index, vectors, ids = built
    rows = np.arange(20)
    queries = {view: data[rows] for view, data in vectors.items()}
    weights = {"hed_vgg16": 1.0, "hog": 4.0}
    truth = full_scan(vectors, queries, weights)
    found = search(index, queries, k=10, weights=weights)
    assert overlap(found, truth, ids) >= 0.9


def test_probe_survives_add_remove_save_and_load(built, tmp_path):
    index, vectors, ids = built
    extra, _ = wide_catalog(30, seed=5)
    extra_ids = [f"new-{i}" for i in range(30)]
    extra_vectors = transform(extra, index.params, pooling=index.meta["pooling"])
    add_items(index, extra_ids, extra_vectors)
    remove_items(index, ids[:10])
    assert index.parts[PROBE].ntotal == index.parts[FUSED].ntotal == len(index)
    loaded = load_index(save_index(index, tmp_path / "index"))
    assert set(loaded.parts) == {FUSED, PROBE}
    np.testing.assert_array_equal(loaded.params[PROJECTION], index.params[PROJECTION])
    hits = search(loaded, {view: data[3:4] for view, data in extra_vectors.items()}, k=5)
    assert hits[0][0]["id"] == "new-3"
    removed = search(loaded, {view: data[:10] for view, data in vectors.items()}, k=10)
    assert not {hit["id"] for hits in removed for hit in hits} & set(ids[:10])
