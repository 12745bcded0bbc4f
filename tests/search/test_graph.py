"""Query-side diffusion through the Catalog (predict.py --rerank diffusion) and its graph."""

import numpy as np
import pytest
from conftest import synthetic_model

from simfusion.search.catalog import Catalog
from simfusion.search.graph import GRAPH_K, NeighbourGraph, diffused
from simfusion.search.rules import Rules


def chain_hits(n=8):
    """Items a0..a{n-1} on a chain (each close to the next) plus a lone look-alike `x`."""
    return [f"a{i}" for i in range(n)] + ["x"]


def test_diffusion_lifts_the_items_many_paths_reach_above_a_lone_look_alike():
    ids = chain_hits()
    # every a_i's neighbours are the other a's (a dense group); x's only neighbour is a0, weakly
    hits = {key: [{"id": other, "score": 0.9} for other in ids[:8] if other != key] for key in ids[:8]}
    hits["x"] = [{"id": "a0", "score": 0.2}]
    graph = NeighbourGraph.from_hits(ids, [hits[key] for key in ids])
    assert len(graph.rows) == 9 and graph.graph.shape == (9, 9)
    query = [{"id": "x", "score": 0.80}] + [{"id": f"a{i}", "score": 0.79 - 0.01 * i} for i in range(8)]
    order = [hit["id"] for hit in diffused(query, graph)]
    assert sorted(order) == sorted(ids)  # a permutation: nothing lost, nothing added
    assert order[-1] == "x"  # the cosine's first, reached by no path, drops to the end
    unknown = diffused([{"id": "new", "score": 0.99}, *query], graph)
    assert unknown[-1]["id"] == "new"  # an item added after the graph keeps a place after the others


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "model"
    ids, records, _ = synthetic_model(folder, n=60)
    return str(folder), ids, records


def test_a_reranked_search_reorders_the_same_hits_and_keeps_their_scores(model):
    folder, ids, records = model
    catalog = Catalog.open(folder)
    [plain] = catalog.search_ids([ids[0]], k=59)
    [reranked] = catalog.search_ids([ids[0]], k=59, rerank="diffusion")
    assert {h["id"] for h in plain["results"]} == {h["id"] for h in reranked["results"]}
    assert ids[0] not in {h["id"] for h in reranked["results"]}
    scores = {h["id"]: h["score"] for h in plain["results"]}
    assert all(scores[h["id"]] == h["score"] for h in reranked["results"])
    # diffusion ranks the query's own category (a dense cluster) at least as well as the cosine
    category = records[0]["category"]

    def in_category(answer, top=10):
        return sum(hit["category"] == category for hit in answer["results"][:top])

    assert in_category(reranked) >= in_category(plain)
    # rules still apply after the re-ranking, and keep its order
    [ruled] = catalog.search_ids([ids[0]], k=5, rerank="diffusion", rules=Rules(filters={"brand": "acme"}))
    assert [h["id"] for h in ruled["results"]] == [
        h["id"] for h in reranked["results"] if h["brand"] == "acme"
    ][:5]
    with pytest.raises(ValueError, match="rerank must be one of"):
        catalog.search_ids([ids[0]], rerank="magic")


def test_the_graph_is_built_once_and_again_after_a_change(model):
    folder, ids, _ = model
    catalog = Catalog.open(folder)
    graph = catalog.neighbour_graph()
    assert catalog.neighbour_graph() is graph
    assert len(graph.rows) == len(ids)
    neighbours = graph.graph.getrow(graph.rows[ids[0]])
    assert 0 < neighbours.nnz <= GRAPH_K and np.all(neighbours.data > 0)
    catalog.remove([ids[1]])
    fresh = catalog.neighbour_graph()
    assert fresh is not graph and ids[1] not in fresh.rows
