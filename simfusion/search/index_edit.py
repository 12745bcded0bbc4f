"""Adding items to and removing items from a built `CatalogIndex`, in memory (save it with
`simfusion.search.index_files.save_index`). Nothing is refitted: added items go through the
index's frozen params."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from simfusion.search.faiss_index import build_faiss_index, faiss_reconstruct
from simfusion.search.index import TOMBSTONE_SHARE, CatalogIndex, part_data

log = logging.getLogger(__name__)


def add_items(
    index: CatalogIndex, ids: Sequence[str], vectors_by_view: Mapping[str, np.ndarray]
) -> list[int]:
    """Add items (vectors transformed with the index's own params) without refitting anything.

    Raises ValueError for an id already in the index. Returns the new labels.
    """
    ids = [str(item) for item in ids]
    clash = [item for item in ids if item in index]
    if clash or len(set(ids)) != len(ids):
        raise ValueError(f"already in the index (remove them first): {', '.join(clash) or 'repeated ids'}")
    start = int(index.meta["next_label"])
    labels = np.arange(start, start + len(ids), dtype=np.int64)
    if ids:
        for name, data in part_data(index, vectors_by_view).items():
            index.parts[name].add_with_ids(np.ascontiguousarray(data), labels)
    index.meta["next_label"] = start + len(ids)
    index.ids.extend(ids)
    index.labels = np.concatenate([index.labels, labels])
    index.remap()
    return labels.tolist()


def remove_items(index: CatalogIndex, ids: Sequence[str]) -> list[str]:
    """Remove items by id; ids not in the index are ignored. Returns the ids removed."""
    found = [str(item) for item in dict.fromkeys(ids) if str(item) in index]
    if not found:
        return []
    labels = np.array([index.label_of(item) for item in found], dtype=np.int64)
    if index.kind == "hnsw":
        index.removed.update(labels.tolist())
    else:
        for part in index.parts.values():
            part.remove_ids(labels)
    gone = set(labels.tolist())
    keep = np.array([label not in gone for label in index.labels.tolist()], dtype=bool)
    index.ids = [item for item, kept in zip(index.ids, keep, strict=True) if kept]
    index.labels = index.labels[keep]
    index.remap()
    if index.removed and len(index.removed) > TOMBSTONE_SHARE * (len(index.ids) + len(index.removed)):
        _compact(index)
    return found


def _compact(index: CatalogIndex) -> None:
    """Rebuild HNSW parts from their live vectors, dropping tombstones."""
    log.info("rebuilding the HNSW graph without %d removed items", len(index.removed))
    for name, part in list(index.parts.items()):
        data = faiss_reconstruct(part, index.labels)
        index.parts[name] = build_faiss_index(data, index.labels, kind="hnsw", hnsw_m=index.meta["hnsw_m"])
    index.removed = set()
