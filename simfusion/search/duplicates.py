"""Near-duplicate groups of a catalog: every item against the others, kept above a similarity threshold.

    from simfusion.search.duplicates import find_duplicates

    groups = find_duplicates(Catalog.open("out/model"), threshold=0.95)
    # {"item-1": [["item-7", 0.973], ...], "item-2": [], ...}

The shape is imagededup's `find_duplicates`: every catalog id is a key, its value the items at
or above the threshold, best first, as [id, score] pairs (JSON has no tuples). Each item's query
is its own stored features, so nothing is re-encoded; the score is the fused index's similarity
(with the index's views and weights unless others are given).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from simfusion.io.store import FeatureStore, store_path
from simfusion.search.index import search

# The fused score above which a pair counts as one photo's copy, crop, flip, re-encoding or colour
# change. PROVISIONAL: an exact copy scores about 0.999; the sweep that calibrates it against the
# near-duplicate benchmark is benchmarks/bench_near_duplicates.py's `duplicates_threshold` table.
DEFAULT_THRESHOLD = 0.9
MAX_PER_ITEM = 50  # duplicates kept per item at most (imagededup keeps all; a catalog of copies is rare)


def duplicate_groups(
    ids: Sequence[str], hits: Sequence[Sequence[Mapping[str, Any]]], *, threshold: float
) -> dict[str, list[list[Any]]]:
    """{id: [[other_id, score], ...]} from each item's ranked hits, itself left out, those below
    `threshold` dropped; row-aligned `ids` and `hits`."""
    out: dict[str, list[list[Any]]] = {}
    for key, ranked in zip(ids, hits, strict=True):
        out[key] = [
            [hit["id"], hit["score"]] for hit in ranked if hit["id"] != key and hit["score"] >= threshold
        ]
    return out


def find_duplicates(
    catalog,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_per_item: int = MAX_PER_ITEM,
    views: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    ids: Iterable[str] | None = None,
    batch_size: int = 256,
) -> dict[str, list[list[Any]]]:
    """Near-duplicates of each item of a `Catalog` (or of `ids` only, still among the whole catalog)."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a similarity between -1 and 1, not {threshold}")
    if max_per_item < 1:
        raise ValueError(f"max_per_item must be at least 1, not {max_per_item}")
    index = catalog.index
    keys = list(index.ids) if ids is None else [str(key) for key in ids]
    unknown = [key for key in keys if key not in index]
    if unknown:
        raise KeyError(f"not in the catalog: {', '.join(unknown[:10])}")
    views = list(views or index.views)
    out: dict[str, list[list[Any]]] = {}
    with FeatureStore(store_path(catalog.path)) as store:
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            maps = {view: store.features(view, store.rows(view, chunk)) for view in views}
            # the views' own similarity: the clusters term would raise items of the same kind, not copies
            hits = search(
                index, catalog.vectors(maps), k=max_per_item + 1, views=views, weights=weights, clusters=False
            )
            out.update(duplicate_groups(chunk, hits, threshold=threshold))
    return out
