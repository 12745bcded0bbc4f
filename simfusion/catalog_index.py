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

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.fusion import (
    FUSIONS,
    POOLINGS,
    fit_transform,
    l2_normalize,
    parse_weights,
    pool_features,
    transform,
)
from simfusion.index import KINDS, CatalogIndex, IndexFileError

log = logging.getLogger(__name__)

STAGE = "fusion"
INDEX_FOLDER = "index"
# what a view's vectors depend on: when the store's differ from the index's, the index is stale
SIGNATURE_KEYS = ("model", "input_size", "kind", "objective", "created")


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
            raise ValueError(f"view {view!r} of the feature store is empty: nothing to index")
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
) -> CatalogIndex:
    """Index the catalog of a feature store (all its views unless `views` names some)."""
    from simfusion.features import FeatureStore
    from simfusion.index import EF_SEARCH, HNSW_M, build_index

    with FeatureStore(store_file) as store:
        views = list(views or store.views)
        unknown = [view for view in views if view not in store.views]
        if unknown:
            raise ValueError(f"unknown view(s) {', '.join(unknown)}: the store has {', '.join(store.views)}")
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
        extra={"store": signature},
    )


def add_catalog_items(
    model_save_path: str | os.PathLike,
    records: Sequence[dict[str, Any]],
    maps_by_view: Mapping[str, np.ndarray],
) -> CatalogIndex:
    """Append encoded items to the store (all its views) and to the index, then save the index.

    `maps_by_view` holds each store view's feature maps, row-aligned with `records`. Nothing is
    refitted: the index's frozen pooling and whitening make the new vectors.
    """
    from simfusion.features import FeatureStore, append_items, store_path
    from simfusion.index import add_items, load_index, save_index
    from simfusion.records import record_id

    folder = index_path(model_save_path)
    index = load_index(folder)
    with FeatureStore(store_path(model_save_path)) as store:
        check_store(index, store)
        missing = [view for view in store.views if view not in maps_by_view]
    if missing:
        raise ValueError(f"no feature maps for store view(s) {', '.join(missing)}")
    ids = [record_id(record) for record in records]
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
    """Remove ids from the store and from the index; returns what was removed and what was not there."""
    from simfusion.features import remove_ids, store_path
    from simfusion.index import load_index, remove_items, save_index

    ids = list(dict.fromkeys(str(key) for key in ids))
    folder = index_path(model_save_path)
    index = load_index(folder)
    in_store = remove_ids(store_path(model_save_path), ids)
    removed = remove_items(index, ids)
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
    }


# ---------------------------------------------------------------- command line


def build_parser():
    import argparse

    from simfusion.stage import positive_int

    parser = argparse.ArgumentParser(
        prog="fusion.py",
        description="Build the fused search index of a trained catalog (from <model_save_path>/features.h5), "
        "or add new catalog images to it (--add, records on stdin) or remove ids (--remove) without "
        "retraining. Prints a JSON summary (for --add: the records) on stdout.",
    )
    parser.add_argument(
        "--model_save_path", required=True, help="folder of the trained models and features.h5"
    )
    parser.add_argument("--views", help="comma-separated views to fuse (default: every view of the store)")
    parser.add_argument("--weights", help="per-view weights, e.g. thumbnail=1,edges=0.5 (default 1 each)")
    parser.add_argument(
        "--fusion",
        choices=FUSIONS,
        default="early",
        help="early: weighted concatenation; late: weighted sum of per-view scores; "
        "rrf: reciprocal-rank fusion (default early)",
    )
    parser.add_argument(
        "--pooling", choices=POOLINGS, default="avgmax", help="how a feature map becomes a vector"
    )
    parser.add_argument("--whiten", action="store_true", help="PCA-whiten each view, fitted on the catalog")
    parser.add_argument(
        "--whiten_dim", type=positive_int, help="dimensions kept by the whitening (default all)"
    )
    parser.add_argument(
        "--index",
        choices=KINDS,
        default="auto",
        help="auto: exact below 50k items, HNSW above; binary: Hamming on sign bits",
    )
    parser.add_argument("--binary", action="store_true", help="same as --index binary")
    parser.add_argument("--nlist", type=positive_int, help="IVF lists (default ~4 sqrt(N))")
    parser.add_argument("--nprobe", type=positive_int, help="IVF lists searched per query")
    parser.add_argument("--ef_search", type=positive_int, help="HNSW search breadth (default 64)")
    parser.add_argument("--hnsw_m", type=positive_int, help="HNSW links per node (default 32)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--add", action="store_true", help="add the records on stdin to the store and the index"
    )
    mode.add_argument(
        "--remove",
        nargs="?",
        const="-",
        metavar="IDS",
        help="remove comma-separated ids (no value: ids or records on stdin)",
    )
    parser.add_argument(
        "--base_image_path", default=".", help="folder the added records' image paths are relative to"
    )
    parser.add_argument("--detector", help="object detector for --add (default: the one training used)")
    parser.add_argument("--batch_size", type=positive_int, default=32, help="images encoded at once by --add")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def read_ids(stream) -> list[str]:
    """Ids on stdin: one per line, bare or as a JSON record with an id."""
    from simfusion.records import RecordError, record_id

    ids = []
    for line in stream:
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                ids.append(record_id(json.loads(text)))
            except (json.JSONDecodeError, RecordError) as exc:
                log.error("remove: cannot read an id from %r: %s", text[:80], exc)
        else:
            ids.extend(part.strip() for part in text.split(",") if part.strip())
    return ids


def main(argv: list[str] | None = None) -> int:
    from simfusion.features import StoreFormatError, store_path
    from simfusion.index import save_index
    from simfusion.stage import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    kind = "binary" if args.binary else args.index
    if args.binary and args.index not in ("auto", "binary"):
        parser.error(f"--binary and --index {args.index} disagree: give one of them")
    try:
        if args.remove is not None:
            ids = (
                read_ids(sys.stdin)
                if args.remove == "-"
                else [p.strip() for p in args.remove.split(",") if p.strip()]
            )
            if not ids:
                parser.error("--remove: no ids given")
            result = remove_catalog_items(args.model_save_path, ids)
            print(json.dumps(result, ensure_ascii=False), flush=True)
            return 0
        if args.add:
            try:
                return add_main(args)
            except ValueError as exc:  # e.g. a store view that cannot be computed from a new image
                log.error("add: %s", exc)
                return 1
        views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else None
        if views is None:
            from simfusion.features import FeatureStore

            with FeatureStore(store_path(args.model_save_path)) as store:
                known = store.views
        else:
            known = views
        try:
            weights = parse_weights(args.weights, known)
        except ValueError as exc:
            parser.error(f"--weights: {exc}")
        try:
            index = build_catalog_index(
                store_path(args.model_save_path),
                views=views,
                weights=weights,
                fusion=args.fusion,
                pooling=args.pooling,
                whiten=args.whiten,
                whiten_dim=args.whiten_dim,
                kind=kind,
                nlist=args.nlist,
                nprobe=args.nprobe,
                ef_search=args.ef_search,
                hnsw_m=args.hnsw_m,
            )
        except ValueError as exc:
            if "unknown view" in str(exc):
                parser.error(f"--views: {exc}")
            raise
        folder = save_index(index, index_path(args.model_save_path))
        print(json.dumps(summary(index, folder), ensure_ascii=False), flush=True)
        return 0
    except (FileNotFoundError, StoreFormatError, IndexFileError) as exc:
        log.error("%s", exc)
        return 1


def add_main(args) -> int:
    """--add: encode the records on stdin in memory, append them to the store and the index."""
    from dataclasses import replace

    from simfusion.encoding import catalog_detector, encode_records, load_pipeline
    from simfusion.features import FeatureStore, store_path
    from simfusion.index import load_index
    from simfusion.records import (
        mark_duplicates,
        parse_records,
        record_id,
        record_path,
        set_error,
        write_record,
    )

    index = load_index(index_path(args.model_save_path))
    with FeatureStore(store_path(args.model_save_path)) as store:
        check_store(index, store)
        store_views = store.views
        held = set(store.record_ids())
        pipeline = load_pipeline(args.model_save_path, detector=args.detector)
        if pipeline.detector is None:
            pipeline = replace(pipeline, detector=catalog_detector(store.records()))
    records = list(mark_duplicates(parse_records(sys.stdin)))
    for record in records:
        if "error" not in record and (record_id(record) in index or record_id(record) in held):
            set_error(record, STAGE, f"id {record_id(record)!r} is already in the catalog; --remove it first")
    good = [record for record in records if "error" not in record]
    encoded = encode_records(
        good,
        model_save_path=args.model_save_path,
        base_path=args.base_image_path,
        views=store_views,
        pipeline=pipeline,
        batch_size=args.batch_size,
        stage=STAGE,
    )
    for record, found in zip(encoded.records, encoded.found, strict=True):
        record.update(found)  # `detections` and `box`, as the catalog's records have them
        # the montage finds an added item's picture here (no thumbnail file is written for it)
        record["image_path"] = os.path.abspath(os.path.join(args.base_image_path, record_path(record)))
    if encoded.records:
        add_catalog_items(args.model_save_path, encoded.records, encoded.maps)
    for record in encoded.records:
        record["indexed"] = True
    for record in records:
        write_record(record, sys.stdout)
    failed = sum("error" in record for record in records)
    log.info(
        "add: %d records indexed, %d with errors; the index holds %d items",
        len(encoded.records),
        failed,
        len(index) + len(encoded.records),
    )
    return 1 if failed else 0
