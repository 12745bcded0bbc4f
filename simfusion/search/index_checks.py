"""What a build of the catalog index checks: its input before anything is fitted, and the
recall of the approximate parts it built (logged and kept in the index's meta)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.search.faiss_index import FAISS_KINDS, measure_recall
from simfusion.search.probe import PROBE, PROJECTION, probe_recall
from simfusion.search.vectors import FUSED, FUSIONS

log = logging.getLogger(__name__)

KINDS = ("auto", *FAISS_KINDS)
RECALL_CHECK_LIMIT = 2 * 10**9  # measure recall after building only while n x dim stays below this


def check_input(
    vectors_by_view: Mapping[str, np.ndarray], ids: Sequence[str], *, fusion: str, kind: str
) -> list[str]:
    """The ids as strings, once the fusion, kind, views and row counts are known to be good."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not vectors_by_view:
        raise ValueError("no views to index")
    ids = [str(item) for item in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("catalog ids must be unique")
    for view, vectors in vectors_by_view.items():
        if len(vectors) != len(ids):
            raise ValueError(f"view {view!r} has {len(vectors)} vectors for {len(ids)} ids")
    return ids


def check_recall(index: Any, part_data: Mapping[str, np.ndarray]) -> None:
    """Log the recall@10 of an approximate index (or of the probe scan plus exact rescoring) against
    exact search, on a sample of its own items."""
    if PROBE in part_data:
        found = probe_recall(index.parts, index.params[PROJECTION], part_data[FUSED], index.labels)
        index.meta.setdefault("measured_recall", {})[PROBE] = round(found, 3)
        log.info("probe part: measured recall@10 %.3f after rescoring (100 of its own items)", found)
    if index.kind in ("exact", "binary") or not len(index):
        return
    for name, data in part_data.items():
        if data.size > RECALL_CHECK_LIMIT:
            log.info(
                "recall of part %s not measured: %d x %d is too many to search exactly", name, *data.shape
            )
            continue
        found = measure_recall(index.parts[name], data, index.labels)
        index.meta.setdefault("measured_recall", {})[name] = round(found, 3)
        log.info("index part %s: measured recall@10 %.3f (100 of its own items as queries)", name, found)
