"""Query-side re-ranking: k-reciprocal and diffusion over the catalog's kNN graph."""

from __future__ import annotations

import numpy as np
import pytest

from simfusion.search.rerank import RERANKS, catalog_neighbours, rerank, top_rows


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clusters(rng, groups=4, per=15, dim=12, spread=0.3):
    centres = rng.normal(size=(groups, dim))
    points = np.concatenate([centres[g] + rng.normal(size=(per, dim)) * spread for g in range(groups)])
    return unit(points), np.repeat(np.arange(groups), per)


def test_top_rows_and_neighbours_leave_the_item_itself_out(rng):
    catalog, _ = clusters(rng)
    rows, sims = catalog_neighbours(catalog, k=5)
    assert rows.shape == (60, 5) and not np.any(rows == np.arange(60)[:, None])
    assert np.all(np.diff(sims, axis=1) <= 1e-6)
    np.testing.assert_array_equal(top_rows(np.array([[0.1, 0.9, 0.5]]), 2), [[1, 2]])


@pytest.mark.parametrize("method", RERANKS)
def test_every_method_ranks_an_exact_copy_high_and_finds_its_cluster(rng, method):
    catalog, labels = clusters(rng)
    queries = catalog[[0, 20, 40]]
    ranked = rerank(queries, catalog, method=method, depth=15, k=10)
    assert ranked.shape == (3, 15) and all(len(set(r)) == 15 for r in ranked)
    # the cosine and k-reciprocal put the copy first; diffusion ranks by paths, so near the top
    top = 1 if method != "diffusion" else 3
    assert all(q in row[:top] for q, row in zip([0, 20, 40], ranked, strict=True))
    precision = np.mean(labels[ranked[:, :10]] == labels[[0, 20, 40]][:, None])
    assert precision >= 0.9


def test_diffusion_follows_a_chain_that_the_cosine_cuts_across():
    # two parallel lines of points; the query sits at the end of line A, close to line B's start
    t = np.linspace(0, 3, 30)
    line_a = np.stack([t, np.zeros_like(t), np.ones_like(t) * 4], axis=1)
    line_b = np.stack([t[:10] * 0.3, np.ones(10) * 0.25, np.ones(10) * 4], axis=1)
    catalog = unit(np.concatenate([line_a, line_b]))
    query = catalog[:1]
    cosine = rerank(query, catalog, method="none", depth=10)[0]
    diffused = rerank(query, catalog, method="diffusion", depth=10, k=4, steps=20)[0]
    assert np.sum(diffused < 30) >= np.sum(cosine < 30)


def test_unknown_method_is_refused(rng):
    catalog, _ = clusters(rng)
    with pytest.raises(ValueError, match="rerank must be"):
        rerank(catalog[:1], catalog, method="magic")
