"""Query-side diffusion through the catalog's own neighbour graph (`predict.py --rerank diffusion`).

The graph is every catalog item's `GRAPH_K` nearest items, found with the index itself from the
items' stored features, as the mutual-neighbour graph of `simfusion.search.rerank`. A query's
`RERANK_POOL` best hits are then reordered by how its similarity to its nearest items spreads over
that graph: items that many paths reach (the dense middle of a category) rise, lone look-alikes
fall. A hit keeps its fused cosine `score`; only the order changes. The graph is built once per
opened catalog (seconds at 10,000 items) and again after the catalog changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simfusion.search.rerank import diffuse, diffusion_graph, diffusion_start

GRAPH_K = 20  # neighbours per item in the graph, and hits a query's diffusion starts from
RERANK_POOL = 100  # hits a re-ranked query reorders
REORDERS = ("none", "diffusion")  # what the Catalog offers; k-reciprocal stays a library (rerank.py)


@dataclass(frozen=True)
class NeighbourGraph:
    """The catalog's mutual kNN graph: `rows[id]` is an item's node; `graph` the normalised matrix."""

    rows: Mapping[str, int]
    graph: Any

    @classmethod
    def from_hits(cls, ids: Sequence[str], hits: Sequence[Sequence[Mapping[str, Any]]]) -> NeighbourGraph:
        """From each item's hits (best first, itself among them or not)."""
        rows = {key: row for row, key in enumerate(ids)}
        neighbours = np.full((len(ids), GRAPH_K), -1, np.int64)
        sims = np.zeros((len(ids), GRAPH_K), np.float32)
        for row, (key, found) in enumerate(zip(ids, hits, strict=True)):
            others = [hit for hit in found if hit["id"] != key and hit["id"] in rows][:GRAPH_K]
            neighbours[row, : len(others)] = [rows[hit["id"]] for hit in others]
            sims[row, : len(others)] = [hit["score"] for hit in others]
        return cls(rows=rows, graph=diffusion_graph(neighbours, sims))


def diffused(hits: Sequence[dict[str, Any]], graph: NeighbourGraph) -> list[dict[str, Any]]:
    """One query's hits (best first by fused score) in diffusion order; hits the graph does not
    hold (added since it was built) keep their place after the others."""
    known = [hit for hit in hits if hit["id"] in graph.rows]
    if not known:
        return list(hits)
    start_hits = known[:GRAPH_K]
    nodes = np.array([[graph.rows[hit["id"]] for hit in start_hits]])
    scores = np.array([[float(hit["score"]) for hit in start_hits]])
    spread = diffuse(graph.graph, diffusion_start(scores, nodes, len(graph.rows)))[0]
    # the cosine breaks ties between items the diffusion never reached
    order = sorted(known, key=lambda hit: -(spread[graph.rows[hit["id"]]] + 1e-6 * float(hit["score"])))
    return order + [hit for hit in hits if hit["id"] not in graph.rows]
