import json
import os

import numpy as np
import pytest

from simfusion.search.index import (
    INDEX_FORMAT_VERSION,
    IndexFileError,
    build_index,
    search,
)
from simfusion.search.index_edit import add_items, remove_items
from simfusion.search.index_files import load_index, save_index
from simfusion.search.vectors import fit_transform, l2_normalize, transform

KINDS = ("exact", "ivf", "hnsw", "binary")


def clustered(n, dim, *, clusters=8, noise=0.3, seed=0):
    """Unit vectors scattered around a few centres, like real embeddings (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return l2_normalize(centres[rng.integers(clusters, size=n)] + noise * rng.standard_normal((n, dim)))


def catalog(n=300, seed=0):
    views = {"thumbnail": clustered(n, 24, seed=seed), "edges": clustered(n, 16, seed=seed + 1)}
    ids = [f"item-{i:04d}" for i in range(n)]
    return views, ids


def make_index(fusion="early", kind="exact", n=300, weights=None, seed=0):
    views, ids = catalog(n, seed)
    vectors, params = fit_transform(views)
    return build_index(vectors, ids, params=params, fusion=fusion, kind=kind, weights=weights), vectors, ids


def one(vectors, row):
    return {view: data[row : row + 1] for view, data in vectors.items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fusion", ["early", "late", "rrf"])
def test_every_item_ranks_itself_first(kind, fusion):
    index, vectors, ids = make_index(fusion, kind)
    rows = [0, 17, 123, 299]
    hits = search(index, {view: data[rows] for view, data in vectors.items()}, k=5, candidates=20)
    for row, found in zip(rows, hits, strict=True):
        assert found[0]["id"] == ids[row]
        assert set(found[0]["scores"]) == {"thumbnail", "edges"}
        if fusion != "rrf":
            assert found[0]["score"] == pytest.approx(1.0, abs=1e-4)
        scores = [hit["score"] for hit in found]
        assert scores == sorted(scores, reverse=True)


def test_early_fused_score_is_weighted_cosine_sum():
    index, vectors, ids = make_index("early", "exact", weights={"thumbnail": 3, "edges": 1})
    hits = search(index, one(vectors, 5), k=10)[0]
    for hit in hits:
        row = ids.index(hit["id"])
        t = float(vectors["thumbnail"][row] @ vectors["thumbnail"][5])
        e = float(vectors["edges"][row] @ vectors["edges"][5])
        assert hit["scores"] == pytest.approx({"thumbnail": t, "edges": e}, abs=1e-5)
        assert hit["score"] == pytest.approx(0.75 * t + 0.25 * e, abs=1e-5)


@pytest.mark.parametrize("fusion", ["early", "late", "rrf"])
def test_weights_change_the_ranking(fusion):
    # item a matches the query in the thumbnail view, item b in the edges view
    q = {"thumbnail": np.array([[1, 0, 0]], np.float32), "edges": np.array([[0, 1, 0]], np.float32)}
    items = {
        "thumbnail": l2_normalize(np.array([[1, 0, 0], [0.2, 1, 0], [0, 0, 1]], np.float32)),
        "edges": l2_normalize(np.array([[0, 0.2, 1], [0, 1, 0], [1, 0, 0]], np.float32)),
    }
    _, params = fit_transform(items)
    index = build_index(items, ["a", "b", "c"], params=params, fusion=fusion, kind="exact")
    favour_thumbnail = search(index, q, k=3, weights={"thumbnail": 4, "edges": 1})[0]
    favour_edges = search(index, q, k=3, weights={"thumbnail": 1, "edges": 4})[0]
    assert favour_thumbnail[0]["id"] == "a" and favour_edges[0]["id"] == "b"
    only_edges = search(index, q, k=3, views=["edges"])[0]
    assert only_edges[0]["id"] == "b" and set(only_edges[0]["scores"]) == {"edges"}
    with pytest.raises(ValueError, match="unknown view.*colour"):
        search(index, q, views=["colour"])


def test_exact_and_hnsw_agree_on_small_data():
    exact, vectors, _ = make_index("early", "exact", n=500)
    hnsw, _, _ = make_index("early", "hnsw", n=500)
    queries = {view: data[::25] for view, data in vectors.items()}
    for a, b in zip(search(exact, queries, k=10), search(hnsw, queries, k=10), strict=True):
        assert [hit["id"] for hit in a] == [hit["id"] for hit in b]


def test_auto_kind_by_size():
    index, _, _ = make_index(kind="auto", n=50)
    assert index.kind == "exact"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fusion", ["early", "late"])
def test_add_then_remove_without_refitting(kind, fusion, tmp_path):
    index, vectors, ids = make_index(fusion, kind)
    new_maps = {"thumbnail": clustered(2, 24, seed=9), "edges": clustered(2, 16, seed=10)}
    new = transform(new_maps, index.params)
    add_items(index, ["new-0", "new-1"], new)
    assert len(index) == 302
    found = search(index, one(new, 1), k=3)[0]
    assert found[0]["id"] == "new-1"
    with pytest.raises(ValueError, match="already in the index"):
        add_items(index, ["new-1"], one(new, 1))

    save_index(index, tmp_path / "index")
    index = load_index(tmp_path / "index")
    assert search(index, one(new, 1), k=1)[0][0]["id"] == "new-1"

    assert remove_items(index, ["new-1", "item-0003", "not-there"]) == ["new-1", "item-0003"]
    for query in (one(new, 1), one(vectors, 3)):
        assert {"new-1", "item-0003"}.isdisjoint(hit["id"] for hit in search(index, query, k=20)[0])
    save_index(index, tmp_path / "index")
    again = load_index(tmp_path / "index")
    assert len(again) == 300 and "new-1" not in again
    assert search(again, one(new, 0), k=1)[0][0]["id"] == "new-0"
    # a removed id can come back, under a new label
    add_items(again, ["new-1"], one(new, 1))
    assert search(again, one(new, 1), k=1)[0][0]["id"] == "new-1"


def test_hnsw_rebuilds_once_many_items_are_removed():
    index, vectors, ids = make_index("early", "hnsw", n=100)
    remove_items(index, ids[:20])
    assert len(index.removed) == 20
    remove_items(index, ids[20:30])
    assert not index.removed and index.parts["fused"].ntotal == 70
    assert search(index, one(vectors, 50), k=1)[0][0]["id"] == ids[50]


def test_binary_hamming_scores():
    index, vectors, ids = make_index("early", "binary")
    hits = search(index, one(vectors, 7), k=5, candidates=50)[0]
    assert hits[0]["id"] == ids[7] and hits[0]["score"] == 1.0
    assert all(-1 <= hit["score"] <= 1 for hit in hits)
    # Hamming neighbours mostly agree with cosine neighbours on clustered data
    exact, _, _ = make_index("early", "exact")
    truth = {hit["id"] for hit in search(exact, one(vectors, 7), k=10)[0]}
    got = {hit["id"] for hit in search(index, one(vectors, 7), k=10, candidates=100)[0]}
    assert len(truth & got) >= 5


def test_load_refuses_missing_and_other_versions(tmp_path):
    with pytest.raises(IndexFileError, match="no index at .*fusion.py"):
        load_index(tmp_path / "nothing")
    index, _, _ = make_index(n=20)
    folder = save_index(index, tmp_path / "index")
    meta_path = os.path.join(folder, "index.json")
    with open(meta_path) as stream:
        meta = json.load(stream)
    meta["format_version"] = INDEX_FORMAT_VERSION + 1
    with open(meta_path, "w") as stream:
        json.dump(meta, stream)
    with pytest.raises(IndexFileError, match="format version 2.*rebuild it with fusion.py"):
        load_index(folder)


def test_build_rejects_bad_input():
    views, ids = catalog(10)
    with pytest.raises(ValueError, match="unique"):
        build_index(views, ids[:9] + ids[:1], params={})
    with pytest.raises(ValueError, match="fusion must be one of"):
        build_index(views, ids, params={}, fusion="mean")
    with pytest.raises(ValueError, match="9 vectors for 10 ids"):
        build_index({"thumbnail": views["thumbnail"][:9]}, ids, params={})
