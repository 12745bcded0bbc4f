"""The library's front door: a trained model folder, opened to search, add and remove.

    from simfusion.search.catalog import Catalog

    catalog = Catalog.open("out/model")
    [answer] = catalog.search([{"image": "query.jpg"}], k=10, rules=Rules(same_category=True))
    catalog.add(records, base_path="photos/")        # encoded like the catalog, nothing retrained
    catalog.remove(["item-12"])

Every command that searches (predict.py, fusion.py --add/--remove, evaluate.py's fused rows, the
benchmarks, the HTTP service) goes through this class. A query's cost does not grow with the
catalog's records: only the records of the hits are read from the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from simfusion.detect.registry import catalog_detector
from simfusion.io.lock import write_lock
from simfusion.io.montage import catalog_image_path
from simfusion.io.records import record_id, record_path, same_item, set_error
from simfusion.io.store import FeatureStore, store_path
from simfusion.pipeline import Encoded, Pipeline, encode_images, encode_records, load_pipeline
from simfusion.search.build import (
    add_catalog_items,
    check_store,
    check_training_run,
    index_path,
    reconcile,
    remove_catalog_items,
    repair_index,
)
from simfusion.search.graph import GRAPH_K, RERANK_POOL, NeighbourGraph, diffused
from simfusion.search.guided import GuidedCrops, search_as_answered
from simfusion.search.index import CatalogIndex, search
from simfusion.search.index_files import load_index
from simfusion.search.options import SearchOptions, fresh_query
from simfusion.search.rules import Rules, ruled, with_fields
from simfusion.search.vectors import transform

log = logging.getLogger(__name__)

GROWTH = 4  # how much wider each further search is when the rules left too few results


class Catalog(GuidedCrops):
    """A trained catalog: its index, its feature store and the pipeline that encodes new images."""

    def __init__(
        self, model_save_path: str | os.PathLike, *, detector: str | None = None, edges=None
    ) -> None:
        self.path = os.fspath(model_save_path)
        self._overrides = {"detector": detector, "edges": edges}
        self._pipeline: Pipeline | None = None
        self.reload()

    @classmethod
    def open(cls, model_save_path: str | os.PathLike, **overrides: Any) -> Catalog:
        """Open a model folder; raises FileNotFoundError, StoreFormatError or IndexFileError saying
        what to run when it is incomplete, stale or foreign."""
        return cls(model_save_path, **overrides)

    def reload(self) -> None:
        """Read the index and the store's ids again (after another process changed them). An index
        that lags its store (an interrupted add or remove) is brought in line in memory; the next
        writer saves the repair."""
        with FeatureStore(store_path(self.path)) as store:
            check_training_run(self.path, store)
            index = load_index(index_path(self.path))
            check_store(index, store)
            reconcile(index, store)
            self._rows = {key: row for row, key in enumerate(store.record_ids())}
        self.index: CatalogIndex = index
        self._graph: NeighbourGraph | None = None  # built when a search first re-ranks

    # ------------------------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    @property
    def views(self) -> list[str]:
        return list(self.index.views)

    @property
    def pipeline(self) -> Pipeline:
        """How images become view images, as training made the catalog's (training.json)."""
        if self._pipeline is None:
            pipeline = load_pipeline(self.path, **self._overrides)
            if pipeline.detector is None:
                with FeatureStore(store_path(self.path)) as store:
                    pipeline = replace(pipeline, detector=catalog_detector(store.iter_records()))
            self._pipeline = pipeline
        return self._pipeline

    def records(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The catalog records of these ids (those it holds), read from the store by row."""
        wanted = {key: self._rows[key] for key in dict.fromkeys(ids) if key in self._rows}
        if not wanted:
            return {}
        with FeatureStore(store_path(self.path)) as store:
            found = store.records_at(sorted(wanted.values()))
        by_row = dict(zip(sorted(wanted.values()), found, strict=True))
        return {key: by_row[row] for key, row in wanted.items()}

    def record(self, key: str) -> dict[str, Any] | None:
        return self.records([key]).get(key)

    # ----------------------------------------------------------------------------------- encoding
    def encode(
        self,
        records: Sequence[dict[str, Any]],
        *,
        base_path: str = "",
        batch_size: int = 16,
        views: Sequence[str] | None = None,
        stage: str = "search",
    ) -> Encoded:
        """Read and encode records' images like the catalog's; an unreadable one gets an `error`."""
        return encode_records(
            records,
            model_save_path=self.path,
            base_path=base_path,
            views=list(views or self.index.views),
            pipeline=self.pipeline,
            batch_size=batch_size,
            stage=stage,
        )

    def vectors(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feature maps -> the index's vectors, with its frozen pooling and normalisation."""
        return transform(maps, self.index.params, pooling=self.index.meta["pooling"])

    # ------------------------------------------------------------------------------------ search
    def search(
        self, queries: Sequence[dict[str, Any]], *, base_path: str = "", batch_size: int = 16, **options: Any
    ) -> list[dict[str, Any]]:
        """Each query record (an `image` path under `base_path`) with its `results` added, or an
        `error` when its image could not be read; `options` are SearchOptions' fields."""
        records = [fresh_query(query) for query in queries]
        good = [record for record in records if "error" not in record]
        encoded = self.encode_queries(good, base_path=base_path, batch_size=batch_size, **options)
        self.answer(encoded.records, encoded.maps, **options)
        return records

    def encode_queries(
        self,
        records: Sequence[dict[str, Any]],
        *,
        base_path: str = "",
        batch_size: int = 16,
        stage: str = "search",
        **options: Any,
    ) -> Encoded:
        """`encode`, then catalog-guided crops for the queries the detector is unsure of (unless
        `crops="detector"`); a guided query's record gets the `query_box` it was answered from."""
        opts = SearchOptions(**options)
        encoded = self.encode(
            records, base_path=base_path, batch_size=batch_size, views=opts.views, stage=stage
        )
        if opts.crops == "guided" and encoded.records:
            self.guide(encoded.records, encoded.images, encoded.maps, encoded.found, opts)
        return encoded

    def search_images(
        self, images: Sequence[np.ndarray], records: Sequence[dict[str, Any]] | None = None, **options: Any
    ) -> list[dict[str, Any]]:
        """Like `search`, for decoded uint8 RGB images (an upload) instead of paths."""
        records = [fresh_query(r) for r in records] if records is not None else [{} for _ in images]
        opts = SearchOptions(**options)
        if images:
            maps, found = encode_images(
                images,
                model_save_path=self.path,
                views=list(opts.views or self.index.views),
                pipeline=self.pipeline,
                boxes=[r.get("box") for r in records],
            )
            if opts.crops == "guided":
                self.guide(records, images, maps, found, opts)
            self.answer(records, maps, **options)
        return records

    def search_ids(self, ids: Sequence[str], **options: Any) -> list[dict[str, Any]]:
        """ "More like this": catalog items as queries, from their stored features; each leaves
        itself out of its own results."""
        opts = SearchOptions(**options)
        unknown = [key for key in ids if key not in self]
        if unknown:
            raise KeyError(f"not in the catalog: {', '.join(map(str, unknown))}")
        views = list(opts.views or self.index.views)
        with FeatureStore(store_path(self.path)) as store:
            maps = {view: store.features(view, store.rows(view, ids)) for view in views}
        records = [fresh_query(self.record(key) or {"id": key}) for key in ids]
        rules = opts.rules or Rules()
        rules = replace(rules, exclude_ids=set(rules.exclude_ids) | set(ids))
        self.answer(records, maps, **{**options, "rules": rules})
        return records

    def answer(self, records: list[dict[str, Any]], maps: Mapping[str, np.ndarray], **options: Any) -> None:
        """Add `results` (and `inferred_category` where the rules inferred one) to each record,
        from its feature maps row-aligned with `records`; `options` are SearchOptions' fields."""
        if not records:
            return
        opts = SearchOptions(**options)
        rules = opts.rules or Rules()
        ranked = self.rank(self.vectors(maps), records, opts)
        for record, (results, inferred) in zip(records, ranked, strict=True):
            record["results"] = results
            if inferred is not None or (rules.same_category and not record.get(rules.category_key)):
                record["inferred_category"] = inferred

    def rank(
        self,
        queries: Mapping[str, np.ndarray],
        query_records: Sequence[Mapping[str, Any]],
        opts: SearchOptions,
    ) -> list[tuple[list[dict[str, Any]], str | None]]:
        """Results (hits with record fields, best first) and the inferred category of each query.

        Searches `k * candidates` items, applies the rules and searches again with more while the
        rules leave fewer than `k` and the catalog has more.
        """
        rules, k = opts.rules or Rules(), opts.k
        size = len(self.index)
        wanted = min(size, k * (opts.candidates if rules else 1)) if size else k
        if opts.rerank != "none":
            wanted = min(size, max(wanted, RERANK_POOL))
        todo = list(range(len(query_records)))
        out: list[tuple[list[dict[str, Any]], str | None]] = [([], None)] * len(query_records)
        while todo:
            subset = {view: np.asarray(vectors)[todo] for view, vectors in queries.items()}
            records = [query_records[row] for row in todo]
            # late and rrf fusion rescore the union of each view's candidates: a wider pool ranks better
            found = search_as_answered(
                self.index,
                subset,
                records,
                shares=[self.share_of(record) for record in records],
                k=max(wanted, 1),
                candidates=max(wanted, k * opts.candidates),
                views=opts.views,
                weights=opts.weights,
                nprobe=opts.nprobe,
                ef_search=opts.ef_search,
            )
            if opts.rerank == "diffusion" and size:
                graph = self.neighbour_graph()
                found = [diffused(hits, graph) for hits in found]
            fields = self.records({hit["id"] for hits in found for hit in hits})
            again = []
            for row, hits in zip(todo, found, strict=True):
                hits = with_fields(hits, fields)
                out[row] = ruled(hits, query_records[row], rules, k=k, query_number=row + 1)
                if len(out[row][0]) < k and wanted < size:
                    again.append(row)
            todo, wanted = again, min(size, wanted * GROWTH)
        return out

    def neighbour_graph(self, *, batch_size: int = 256) -> NeighbourGraph:
        """The catalog's own kNN graph (simfusion.search.graph), found with the index from the items'
        stored features; built once, and again after the catalog changes."""
        if self._graph is None:
            ids, views, hits = list(self.index.ids), self.index.views, []
            log.info("building the neighbour graph of %d items for re-ranking", len(ids))
            with FeatureStore(store_path(self.path)) as store:
                for start in range(0, len(ids), batch_size):
                    batch = ids[start : start + batch_size]
                    maps = {view: store.features(view, store.rows(view, batch)) for view in views}
                    hits.extend(search(self.index, self.vectors(maps), k=min(len(ids), GRAPH_K + 1)))
            self._graph = NeighbourGraph.from_hits(ids, hits)
        return self._graph

    # ---------------------------------------------------------------------------------- changes
    def add(
        self,
        records: Sequence[dict[str, Any]],
        *,
        base_path: str = "",
        batch_size: int = 16,
        stage: str = "add",
        lock_timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Encode new records' images and add them to the store and the index, nothing retrained or
        refitted. Returns the records: added ones with `indexed`, `detections` and `box`; one the
        catalog already holds unchanged (a retried add) with `indexed` too; the others (an id held
        with another record, an unreadable image) with an `error`."""
        with write_lock(self.path, timeout=lock_timeout):
            repair_index(self.path)
            self.reload()
            records = [dict(record) for record in records]
            held = self.records(record_id(r) for r in records if "error" not in r)
            for record in records:
                if "error" not in record and record_id(record) in held:
                    if not same_item(record, held[record_id(record)]):
                        set_error(
                            record,
                            stage,
                            f"id {record_id(record)!r} is already in the catalog "
                            "with another record; remove it first",
                        )
                    else:
                        record.update(indexed=True, note="already in the catalog")
            fresh = [r for r in records if "error" not in r and not r.get("indexed")]
            encoded = self.encode(
                fresh, base_path=base_path, batch_size=batch_size, views=self._store_views(), stage=stage
            )
            for record, found in zip(encoded.records, encoded.found, strict=True):
                record.update(found)  # `detections` and `box`, as the catalog's records have them
                # the montage finds an added item's picture here (no thumbnail file is written for it)
                record["image_path"] = os.path.abspath(os.path.join(base_path, record_path(record)))
            if encoded.records:
                add_catalog_items(self.path, encoded.records, encoded.maps)
            self.reload()
        for record in encoded.records:
            record["indexed"] = True
        return records

    def remove(self, ids: Iterable[str], *, lock_timeout: float | None = None) -> dict[str, Any]:
        """Remove ids from the store and the index; returns what was removed and what was missing."""
        with write_lock(self.path, timeout=lock_timeout):
            summary = remove_catalog_items(self.path, ids)
            self.reload()
        return summary

    def _store_views(self) -> list[str]:
        with FeatureStore(store_path(self.path)) as store:
            return store.views

    def image_path(self, key: str) -> str | None:
        """Where item `key`'s picture is on disk (its thumbnail, else its original image), found from
        its record and the pipeline's layout; None when the catalog has no such item or picture."""
        record = self.record(key)
        return None if record is None else catalog_image_path(record, self.path)
