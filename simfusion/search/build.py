"""The catalog index beside the feature store: build it, add new items, remove items (fusion.py).

    fusion.py --model_save_path DIR [--views ...] [--weights ...] [--fusion early|late|rrf]
              [--pooling ...] [--whiten] [--index auto|exact|ivf|hnsw|binary] [--binary]
    fusion.py --model_save_path DIR --add --base_image_path BASE < records
    fusion.py --model_save_path DIR --remove id1,id2        (or --remove, ids on stdin)

Building reads `<DIR>/features.h5`, pools each view's feature maps, fits the normalisation
(and optional PCA-whitening) on the catalog and writes `<DIR>/index/`. Adding runs new images
through detection, thumbnail, views and the trained encoders in memory, appends them to the
store and to the index with the frozen normalisation: nothing is retrained or refitted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.io.atomic import ensure_space, read_json
from simfusion.io.records import record_id
from simfusion.io.store import FeatureStore, StoreFormatError, store_path
from simfusion.io.store_edit import append_items, remove_ids
from simfusion.learn.encoders import TRAINING_JSON, finish_training_run
from simfusion.search.index import (
    EF_SEARCH,
    HNSW_M,
    CatalogIndex,
    IndexFileError,
    build_index,
)
from simfusion.search.index_edit import add_items, remove_items
from simfusion.search.index_files import live_meta, load_index, save_bytes, save_index
from simfusion.search.vectors import (
    check_views,
    fit_transform,
    l2_normalize,
    pool_features,
    transform,
)

log = logging.getLogger(__name__)

STAGE = "fusion"
INDEX_FOLDER = "index"
# what a view's vectors depend on: when the store's differ from the index's, the index is stale
SIGNATURE_KEYS = ("model", "input_size", "kind", "objective", "created")


class EmptyCatalogError(ValueError):
    """A catalog with no items, asked for what needs some (a fresh index)."""


def index_path(model_save_path: str | os.PathLike) -> str:
    """Where the index lives: `<model_save_path>/index`."""
    return os.path.join(os.fspath(model_save_path), INDEX_FOLDER)


def store_signature(store, views: Sequence[str]) -> dict[str, Any]:
    """What the store says produced the given views; kept in the index to detect a stale one."""
    root = store.attrs()
    signature = {"format_version": root.get("format_version"), "package_version": root.get("package_version")}
    signature["views"] = {
        view: {
            **{key: store.attrs(view).get(key) for key in SIGNATURE_KEYS},
            "feature_shape": list(store.shape(view)[1:]),
        }
        for view in views
    }
    return signature


def check_training_run(model_save_path: str | os.PathLike, store) -> None:
    """Raise StoreFormatError when training.json and the store come from different training runs
    (train.py was killed between writing the two): the encoders would not match the features."""
    path = os.path.join(os.fspath(model_save_path), TRAINING_JSON)
    if not os.path.exists(path):
        return
    try:
        trained = read_json(path).get("run")
    except (OSError, ValueError, AttributeError) as exc:
        raise StoreFormatError(f"cannot read {path} ({exc}); run train.py again") from exc
    stored = store.attrs().get("run")
    if trained and stored and trained != stored:
        if finish_training_run(model_save_path, stored):
            log.warning("%s: train.py was killed after writing run %s's store: finished it", path, stored)
            return
        raise StoreFormatError(
            f"{os.fspath(model_save_path)} holds the features of training run {stored} but the "
            f"encoders of run {trained} (train.py was interrupted?); run train.py again"
        )


def check_store(index: CatalogIndex, store) -> None:
    """Raise IndexFileError when the store's models differ from those the index was built from."""
    built = index.meta.get("store", {}).get("views", {})
    missing = [view for view in index.views if view not in store.views]
    if missing:
        raise IndexFileError(
            f"the feature store has no view(s) {', '.join(missing)} that the index was built with; "
            "rebuild the index with fusion.py"
        )
    now = store_signature(store, index.views)["views"]
    for view in index.views:
        if built.get(view) != now[view]:
            raise IndexFileError(
                f"the index was built from other features of view {view!r} (another model or training run) "
                f"than {store.path} holds; rebuild it with fusion.py --model_save_path ..."
            )


def catalog_vectors(
    store, views: Sequence[str], *, pooling: str = "avgmax", batch_size: int = 1024
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Pooled, L2-normalised vectors of every view, row-aligned over the ids all views hold.

    Pooled batch by batch, so the feature maps of a large catalog never sit in memory at once.
    """
    pooled: dict[str, np.ndarray] = {}
    ids_of: dict[str, list[str]] = {}
    for view in views:
        parts, ids = [], []
        for batch_ids, maps in store.batches(view, batch_size=batch_size):
            parts.append(l2_normalize(pool_features(maps, pooling=pooling)))
            ids.extend(batch_ids)
        if not parts:
            raise EmptyCatalogError(
                f"view {view!r} of the feature store is empty: nothing to index (add items with "
                "fusion.py --add, or train the catalog with train.py)"
            )
        pooled[view], ids_of[view] = np.concatenate(parts), ids
    shared = set.intersection(*(set(ids) for ids in ids_of.values()))
    ids = [key for key in ids_of[views[0]] if key in shared]
    for view in views:
        if len(ids_of[view]) != len(ids):
            log.warning("view %r: %d ids are not in every view; left out", view, len(ids_of[view]) - len(ids))
        if ids_of[view] != ids:
            rows = {key: row for row, key in enumerate(ids_of[view])}
            pooled[view] = pooled[view][[rows[key] for key in ids]]
    return ids, pooled


def build_catalog_index(
    store_file: str | os.PathLike,
    *,
    views: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    fusion: str = "early",
    pooling: str = "avgmax",
    whiten: bool = False,
    whiten_dim: int | None = None,
    kind: str = "auto",
    nlist: int | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    hnsw_m: int | None = None,
    max_memory: int | None = None,
    target_latency_ms: float | None = None,
    clusters: bool = True,
    scene_weights: Mapping[str, float] | None = None,
) -> CatalogIndex:
    """Index the catalog of a feature store (all its views unless `views` names some); `clusters`
    adds the clusters term to an early fusion (simfusion.search.clusters); `scene_weights`: the scene
    profile's (simfusion.search.scene), where the tuning chose them."""

    with FeatureStore(store_file) as store:
        views = list(views or store.views)
        check_views(views, store.views, holder="the store")
        ids, pooled = catalog_vectors(store, views, pooling=pooling)
        signature = store_signature(store, views)
    vectors, params = fit_transform(pooled, pooling=pooling, whiten=whiten, whiten_dim=whiten_dim)
    return build_index(
        vectors,
        ids,
        params=params,
        fusion=fusion,
        weights=weights,
        kind=kind,
        pooling=pooling,
        whiten=whiten,
        nlist=nlist,
        nprobe=nprobe,
        ef_search=ef_search or EF_SEARCH,
        hnsw_m=hnsw_m or HNSW_M,
        max_memory=max_memory,
        target_latency_ms=target_latency_ms,
        clusters=clusters,
        scene_weights=scene_weights,
        extra={"store": signature},
    )


def reconcile(index: CatalogIndex, store) -> dict[str, list[str]]:
    """Bring the index in line with its store, the source of truth, in memory.

    An add or remove interrupted between committing the store and saving the index leaves the
    index behind: the items the store holds and the index lacks are added (their vectors made
    from the stored features with the index's frozen params), those it holds and the store no
    longer does are removed. Returns {"added": ids, "removed": ids}.
    """
    held = store.record_ids()
    in_store = set(held)
    extra = [key for key in index.ids if key not in in_store]
    missing = [key for key in held if key not in index]
    if extra:
        remove_items(index, extra)
    if missing:
        maps = {view: store.features(view, store.rows(view, missing)) for view in index.views}
        add_items(index, missing, transform(maps, index.params, pooling=index.meta["pooling"]))
    if extra or missing:
        log.warning(
            "the index disagreed with %s (an interrupted add or remove): %d added, %d removed",
            store.path,
            len(missing),
            len(extra),
        )
    return {"added": missing, "removed": extra}


def repair_index(model_save_path: str | os.PathLike) -> dict[str, list[str]]:
    """Reconcile the saved index with its store and save it when they disagreed; the caller
    holds the folder's write lock. Returns what `reconcile` changed."""
    folder = index_path(model_save_path)
    with FeatureStore(store_path(model_save_path)) as store:
        index = load_index(folder)
        check_store(index, store)
        changed = reconcile(index, store)
    if changed["added"] or changed["removed"]:
        save_index(index, folder)
    return changed


def add_catalog_items(
    model_save_path: str | os.PathLike,
    records: Sequence[dict[str, Any]],
    maps_by_view: Mapping[str, np.ndarray],
) -> CatalogIndex:
    """Append encoded items to the store (all its views) and to the index, then save the index.

    `maps_by_view` holds each store view's feature maps, row-aligned with `records`. Nothing is
    refitted: the index's frozen pooling and whitening make the new vectors. The store is
    committed first; a crash before the index is saved is repaired by `reconcile`. The caller
    holds the folder's write lock.
    """
    folder = index_path(model_save_path)
    with FeatureStore(store_path(model_save_path)) as store:
        index = load_index(folder)
        check_store(index, store)
        reconcile(index, store)
        missing = [view for view in store.views if view not in maps_by_view]
    if missing:
        raise ValueError(f"no feature maps for store view(s) {', '.join(missing)}")
    ids = [record_id(record) for record in records]
    # the index's save is checked for space before the store commits, so a full disk changes neither
    grows = sum(np.asarray(maps).nbytes for maps in maps_by_view.values())
    needed = save_bytes(folder, live_meta(folder), len(index.ids) + len(index.removed) + len(ids)) + grows
    ensure_space(folder, needed, what="the index")
    append_items(
        store_path(model_save_path),
        views={view: (ids, maps) for view, maps in maps_by_view.items()},
        records=records,
    )
    vectors = transform(
        {view: maps_by_view[view] for view in index.views}, index.params, pooling=index.meta["pooling"]
    )
    add_items(index, ids, vectors)
    save_index(index, folder)
    return index


def remove_catalog_items(model_save_path: str | os.PathLike, ids: Iterable[str]) -> dict[str, Any]:
    """Remove ids from the store and from the index; returns what was removed and what was not
    there. The store is committed first; the caller holds the folder's write lock."""
    ids = list(dict.fromkeys(str(key) for key in ids))
    folder = index_path(model_save_path)
    with FeatureStore(store_path(model_save_path)) as store:
        index = load_index(folder)
        # ids an interrupted remove took from the store only: gone now, and counted as removed
        changed = reconcile(index, store)
        repaired = [key for key in changed["removed"] if key in set(ids)]
        held = set(store.record_ids())
    if not any(changed.values()) and not any(key in held or key in index for key in ids):
        # nothing to remove: the store and the index stay as they are (a new generation before)
        return {"removed": 0, "removed_from_store": 0, "ids": [], "missing": ids, "items": len(index)}
    needed = save_bytes(folder, live_meta(folder), len(index.ids) + len(index.removed))
    ensure_space(folder, needed, what="the index")
    in_store = remove_ids(store_path(model_save_path), [key for key in ids if key in held])
    removed = repaired + remove_items(index, ids)
    save_index(index, folder)
    missing = [key for key in ids if key not in set(removed)]
    return {
        "removed": len(removed),
        "removed_from_store": in_store,
        "ids": removed,
        "missing": missing,
        "items": len(index),
    }


def summary(index: CatalogIndex, folder: str) -> dict[str, Any]:
    meta = index.meta
    return {
        "index": folder,
        "items": len(index),
        "views": index.views,
        "weights": index.weights,
        "fusion": index.fusion,
        "pooling": meta["pooling"],
        "whiten": meta["whiten"],
        "kind": index.kind,
        "dims": meta["dims"],
        "clusters": meta.get("clusters"),
        "scene": meta.get("scene"),
    }


# ---------------------------------------------------------------- command line
