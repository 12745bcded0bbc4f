"""The clusters term: a projection learnt from k-means clusters of the fused catalog vectors, added
to early fusion's score. It must find the catalog's groups better than the raw cosine where the
groups hide in a few directions, and the index must rank by exactly the score it documents."""

import numpy as np
import pytest

from simfusion.search.clusters import (
    CLUSTERS,
    MIN_ITEMS,
    SHARE,
    cluster_counts,
    cluster_vectors,
    fit_clusters,
    with_clusters,
)
from simfusion.search.index import build_index, search
from simfusion.search.index_edit import add_items, remove_items
from simfusion.search.index_files import load_index, save_index
from simfusion.search.vectors import FUSED, fit_transform, fuse, l2_normalize, transform


def grouped(n, *, groups=8, seed=0):
    """Two views of items in `groups` groups: each group differs in a few directions, under noise
    spread over many more (as pooled CNN features of items of one kind)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(groups, size=n)
    views = {}
    for view, dim in (("hed_vgg16", 96), ("hog", 64)):
        centres = np.zeros((groups, dim))
        centres[:, :6] = 1.2 * rng.standard_normal((groups, 6))
        views[view] = l2_normalize(centres[group] + 0.6 * rng.standard_normal((n, dim)))
    return views, group, [f"item-{i:04d}" for i in range(n)]


def precision_at_10(vectors, group):
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :10]
    return float((group[top] == group[:, None]).mean())


def test_small_catalogs_get_no_projection():
    views, _, _ = grouped(MIN_ITEMS - 1)
    assert fit_clusters(fuse(views, {"hed_vgg16": 1, "hog": 1})) == {}
    assert cluster_counts(1500) == [100, 150, 250]


def test_the_clusters_term_finds_the_groups_better_than_the_cosine():
    views, group, _ = grouped(600)
    fused = fuse(views, {"hed_vgg16": 1.0, "hog": 1.0})
    params = fit_clusters(fused)
    clusters = cluster_vectors(fused, params)
    assert clusters.dtype == np.float32 and clusters.shape[0] == 600
    np.testing.assert_allclose(np.linalg.norm(clusters, axis=1), 1.0, atol=1e-5)
    plain = precision_at_10(fused, group)
    both = precision_at_10(with_clusters(fused, params), group)
    assert both > plain + 0.03, (plain, both)
    # frozen: a new item goes through the same matrices as the catalog did
    np.testing.assert_allclose(cluster_vectors(fused[:5], params), clusters[:5], atol=1e-5)
    with pytest.raises(ValueError, match="dimensions"):
        cluster_vectors(fused[:, :10], params)


@pytest.fixture(scope="module")
def built():
    views, _, ids = grouped(400)
    vectors, params = fit_transform(views)
    weights = {"hed_vgg16": 3.0, "hog": 1.0}
    return build_index(vectors, ids, params=params, weights=weights, clusters=True), vectors, ids


def test_the_index_ranks_by_the_documented_score(built):
    index, vectors, ids = built
    assert index.clusters_share == SHARE and index.meta["clusters"]["dim"] > 0
    assert index.meta["clusters"]["clusters"] == cluster_counts(400) == [26, 40, 66]
    fused = with_clusters(fuse(vectors, index.weights), index.params)
    assert index.parts[FUSED].d == fused.shape[1]
    queries = {view: v[:20] for view, v in vectors.items()}
    hits = search(index, queries, k=10)
    for row, found in enumerate(hits):
        assert found[0]["id"] == ids[row]  # an item ranks itself first
        truth = np.argsort(-(fused @ fused[row]), kind="stable")[:10]
        assert [hit["id"] for hit in found] == [ids[i] for i in truth]
        for hit in found:
            views_part = 0.75 * hit["scores"]["hed_vgg16"] + 0.25 * hit["scores"]["hog"]
            expected = (1 - SHARE) * views_part + SHARE * hit["scores"][CLUSTERS]
            assert hit["score"] == pytest.approx(expected, abs=1e-4)


def test_a_query_side_share_gives_each_query_its_own_mix(built):
    """`clusters_share` re-mixes the term per query without rebuilding: the score is exactly
    (1 - q) views + q clusters, the candidates come from the same mix, and the index's own share
    is what None gives."""
    index, vectors, ids = built
    queries = {view: v[:6] for view, v in vectors.items()}
    shares = [0.0, 0.1, 0.25, SHARE, 0.8, 0.1]
    mixed = search(index, queries, k=10, clusters_share=shares)
    for row, (found, q) in enumerate(zip(mixed, shares, strict=True)):
        views_part = 0.75 * np.array([h["scores"]["hed_vgg16"] for h in found])
        views_part += 0.25 * np.array([h["scores"]["hog"] for h in found])
        clusters = np.array([h["scores"][CLUSTERS] for h in found])
        np.testing.assert_allclose(
            [h["score"] for h in found], (1 - q) * views_part + q * clusters, atol=1e-4
        )
        alone = search(index, {view: v[row : row + 1] for view, v in queries.items()}, k=10, clusters_share=q)
        assert [h["id"] for h in alone[0]] == [h["id"] for h in found]
    # the whole catalog ranked by the same mix, exactly: the candidates are not those of share 0.5
    fused = fuse(vectors, index.weights)
    term = cluster_vectors(fused, index.params)
    scores = 0.9 * (fused @ fused[1]) + 0.1 * (term @ term[1])
    truth = np.argsort(-scores, kind="stable")[:10]
    assert [h["id"] for h in mixed[1]] == [ids[i] for i in truth]
    default = search(index, queries, k=10)
    assert [[h["id"] for h in f] for f in default] == [
        [h["id"] for h in f] for f in search(index, queries, k=10, clusters_share=SHARE)
    ]
    assert [h["id"] for h in mixed[3]] == [h["id"] for h in default[3]]
    with pytest.raises(ValueError, match="clusters share"):
        search(index, queries, k=3, clusters_share=1.0)


def test_narrowed_or_reweighted_queries_rank_by_the_views_alone(built):
    index, vectors, _ = built
    queries = {view: v[:5] for view, v in vectors.items()}
    for options in ({"views": ["hog"]}, {"weights": {"hed_vgg16": 1.0, "hog": 1.0}}, {"clusters": False}):
        for found in search(index, queries, k=5, **options):
            assert all(CLUSTERS not in hit["scores"] for hit in found)
            share = {
                "views": {"hog": 1.0},
                "weights": {"hed_vgg16": 0.5, "hog": 0.5},
                "clusters": {"hed_vgg16": 0.75, "hog": 0.25},  # the index's own weights, 3 and 1
            }[next(iter(options))]
            for hit in found:
                expected = sum(w * hit["scores"][view] for view, w in share.items())
                assert hit["score"] == pytest.approx(expected, abs=1e-4)


def test_added_items_and_a_saved_index_keep_the_clusters_term(built, tmp_path):
    index, vectors, ids = built
    extra, _, _ = grouped(30, seed=5)
    new = transform(extra, index.params)
    add_items(index, [f"new-{i}" for i in range(30)], new)
    remove_items(index, ids[:10])
    save_index(index, str(tmp_path / "index"))
    again = load_index(str(tmp_path / "index"))
    first = search(index, {view: v[:3] for view, v in new.items()}, k=5)
    second = search(again, {view: v[:3] for view, v in new.items()}, k=5)
    assert [hit["id"] for hit in first[0]] == [hit["id"] for hit in second[0]]
    assert [found[0]["id"] for found in second] == ["new-0", "new-1", "new-2"]
    assert all(CLUSTERS in hit["scores"] for hit in second[0])


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq", "binary"])
def test_every_index_kind_builds_with_the_clusters_term_asked_for(kind):
    views, _, ids = grouped(400, seed=3)
    vectors, params = fit_transform(views)
    index = build_index(vectors, ids, params=params, kind=kind, nlist=8, clusters=True)
    # binary codes have no cosine to add the term to: the index is built without it
    assert bool(index.clusters_share) == (kind != "binary")
    hits = search(index, {view: v[:20] for view, v in vectors.items()}, k=5, candidates=50)
    assert np.mean([found[0]["id"] == ids[row] for row, found in enumerate(hits)]) >= 0.9
