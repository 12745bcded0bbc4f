"""fusion.py: build the fused catalog index; add or remove catalog items."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from simfusion.cli.common import (
    HelpFormatter,
    add_log_level_argument,
    at_least,
    check_detector,
    configure_logging,
    positive_int,
    text_path,
)
from simfusion.io.lock import write_lock
from simfusion.io.records import (
    RecordError,
    mark_duplicates,
    parse_records,
    record_id,
    write_record,
)
from simfusion.io.store import FeatureStore, StoreFormatError, store_path, store_version
from simfusion.search.build import (
    STAGE,
    EmptyCatalogError,
    build_catalog_index,
    index_path,
    summary,
)
from simfusion.search.catalog import Catalog
from simfusion.search.index import IndexFileError
from simfusion.search.index_checks import KINDS
from simfusion.search.index_files import save_index
from simfusion.search.index_plan import IndexPlanError, parse_bytes, plan_index
from simfusion.search.tune import TuneOptions, tune_fusion
from simfusion.search.vectors import FUSIONS, POOLINGS, UnknownViewError, parse_weights

log = logging.getLogger(__name__)


def build_parser():
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
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
    parser.add_argument(
        "--whiten", action="store_true", help="PCA-whiten each view, fitted on the catalog (default: tuned)"
    )
    parser.add_argument(
        "--no_tune",
        action="store_true",
        help="no unsupervised tuning of the views' weights and whitening: every view weighs 1 (or --weights)",
    )
    parser.add_argument(
        "--no_clusters",
        action="store_true",
        help="rank by the views alone: no clusters term (a projection learnt from k-means clusters of the "
        "catalog's fused vectors, added to early fusion's score by default)",
    )
    parser.add_argument(
        "--tune_images", type=positive_int, default=TuneOptions.images, help="catalog items the tuning copies"
    )
    parser.add_argument(
        "--whiten_dim", type=at_least(2), help="dimensions kept by the whitening, 2 or more (default all)"
    )
    parser.add_argument(
        "--index",
        "--index_kind",
        choices=KINDS,
        default="auto",
        help="auto: exact below 50k items, HNSW above (or chosen by --max_index_memory); ivfpq/opq: "
        "product-quantised codes trained on a sample; binary: Hamming on sign bits",
    )
    parser.add_argument(
        "--max_index_memory",
        type=memory_size,
        help="with --index auto: choose the kind and its parameters to fit this memory, e.g. 4G",
    )
    parser.add_argument(
        "--target_latency_ms",
        type=float,
        help="with --max_index_memory: leave out kinds estimated slower than this per query",
    )
    parser.add_argument("--binary", action="store_true", help="same as --index binary")
    parser.add_argument("--nlist", type=positive_int, help="IVF lists (default ~4 sqrt(N))")
    parser.add_argument("--nprobe", type=positive_int, help="IVF lists searched per query")
    parser.add_argument("--ef_search", type=positive_int, help="HNSW search breadth (default 64)")
    parser.add_argument("--hnsw_m", type=at_least(2), help="HNSW links per node, 2 or more (default 32)")
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
        "--base_image_path",
        type=text_path,
        default=".",
        help="folder the added records' image paths are relative to",
    )
    parser.add_argument("--detector", help="object detector for --add (default: the one training used)")
    parser.add_argument("--batch_size", type=positive_int, default=32, help="images encoded at once by --add")
    add_log_level_argument(parser)
    return parser


def memory_size(text: str) -> int:
    import argparse

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def read_ids(stream, *, skipped: list[str] | None = None) -> list[str]:
    """Ids on stdin, one line at a time: bare (comma-separated) or JSON (a record with an id, an id
    as a string, or an array of those). A line that is not UTF-8 or not readable JSON is logged and,
    when `skipped` is given, noted in it; the other lines still count."""
    ids: list[str] = []
    buffer = getattr(stream, "buffer", None)
    for number, line in enumerate(stream if buffer is None else buffer, 1):
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            text = text.removeprefix("\ufeff").strip() if number == 1 else text.strip()
            if text[:1] in ("{", "[", '"'):
                values = json.loads(text)
                for value in values if isinstance(values, list) else [values]:
                    ids.append(record_id(value) if isinstance(value, dict) else _bare_id(value))
            elif text:
                ids.extend(part.strip() for part in text.split(",") if part.strip())
        except (UnicodeDecodeError, ValueError, RecordError) as exc:  # JSONDecodeError is a ValueError
            log.error("remove: line %d: cannot read an id from it: %s", number, exc)
            if skipped is not None:
                skipped.append(str(number))
    return ids


def _bare_id(value) -> str:
    """An id given in JSON on its own: a non-empty string or a whole number."""
    return record_id({"id": value})


# what a rebuild uses and --add / --remove cannot change: they keep the index's own settings
BUILD_FLAGS = (
    "views", "weights", "fusion", "pooling", "whiten", "no_tune", "no_clusters", "tune_images", "whiten_dim",
    "index", "max_index_memory", "target_latency_ms", "binary", "nlist", "nprobe", "ef_search", "hnsw_m",
)  # fmt: skip


def check_no_build_flags(parser, args) -> None:
    """--add and --remove with a build flag are a usage error (the flag was ignored silently)."""
    given = [flag for flag in BUILD_FLAGS if getattr(args, flag) != parser.get_default(flag)]
    if given:
        named = ", ".join("--" + flag for flag in given)
        verb = "--add" if args.add else "--remove"
        parser.error(f"{verb} keeps the index's own settings: {named} apply to a rebuild (without {verb})")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    kind = "binary" if args.binary else args.index
    if args.max_index_memory and kind != "auto":
        parser.error(f"--max_index_memory chooses the kind: leave out --index {kind}")
    if args.binary and args.index not in ("auto", "binary"):
        parser.error(f"--binary and --index {args.index} disagree: give one of them")
    if args.add or args.remove is not None:
        check_no_build_flags(parser, args)
    try:
        if args.remove is not None:
            unread: list[str] = []
            ids = (
                read_ids(sys.stdin, skipped=unread)
                if args.remove == "-"
                else [p.strip() for p in args.remove.split(",") if p.strip()]
            )
            if not ids and not unread:
                parser.error("--remove: no ids given")
            result = Catalog.open(args.model_save_path).remove(ids)  # no ids: writes nothing
            print(json.dumps({**result, "unread_lines": len(unread)}, ensure_ascii=False), flush=True)
            return 1 if unread else 0
        if args.add:
            check_detector(parser, args.detector)
            try:
                return add_main(args)
            except ValueError as exc:  # e.g. a store view that cannot be computed from a new image
                log.error("add: %s", exc)
                return 1
        return build_main(args, parser, kind)
    except (OSError, StoreFormatError, IndexFileError, EmptyCatalogError) as exc:  # a full disk, a held lock
        log.error("%s", exc)
        return 1


# fusion.py builds an index from the store without the write lock (tuning takes a while and would
# hold up adds), then saves it under the lock: a store that changed in between is read again
BUILD_TRIES = 3


def build_main(args, parser, kind: str) -> int:
    """Build the index: weights and whitening tuned on the catalog unless --weights or --no_tune;
    built again when an add or remove changed the store while it was being built."""
    path = store_path(args.model_save_path)
    check_plan(args, parser, kind, path)
    for _ in range(BUILD_TRIES):
        version = store_version(path)
        index, tuning = build_from_store(args, parser, kind)
        with write_lock(args.model_save_path):
            if store_version(path) == version:
                folder = save_index(index, index_path(args.model_save_path))
                out = {**summary(index, folder), "tuning": tuning}
                print(json.dumps(out, ensure_ascii=False), flush=True)
                return 0
        log.warning("the catalog changed while its index was built (an add or remove): building again")
    raise OSError(
        f"the catalog changed during each of {BUILD_TRIES} builds of its index: run fusion.py again"
    )


def check_plan(args, parser, kind: str, path: str) -> None:
    """Index settings that cannot work for this catalog, refused before the tuning's minutes."""
    if kind == "auto" and not args.nlist:
        return
    with FeatureStore(path) as store:
        items = len(store.record_ids())
    try:
        plan_index(kind, items, 1, args.nlist, args.nprobe, None, None, None)
    except IndexPlanError as exc:
        parser.error(str(exc))


def build_from_store(args, parser, kind: str):
    """(the index, the tuning's report) from the store as it is now."""
    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else None
    if views is None:
        with FeatureStore(store_path(args.model_save_path)) as store:
            known = store.views
    else:
        known = views
    try:
        weights = parse_weights(args.weights, known)
    except ValueError as exc:
        parser.error(f"--weights: {exc}")
    tuning = None if (args.no_tune or args.weights) else tuned_settings(args, views)
    if tuning:
        views, weights = tuning["views"], {v: tuning["weights"][v] for v in tuning["views"]}
    try:
        index = build_catalog_index(
            store_path(args.model_save_path),
            views=views,
            weights=weights,
            fusion=args.fusion,
            pooling=args.pooling,
            whiten=args.whiten or bool(tuning and tuning["whiten"]),
            whiten_dim=args.whiten_dim or (tuning and tuning.get("whiten_dim")),
            kind=kind,
            nlist=args.nlist,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
            hnsw_m=args.hnsw_m,
            max_memory=args.max_index_memory,
            target_latency_ms=args.target_latency_ms,
            clusters=not args.no_clusters,
            scene_weights=(tuning.get("scene") or {}).get("weights") if tuning else None,
        )
    except UnknownViewError as exc:
        parser.error(f"--views: {exc}")
    except IndexPlanError as exc:
        parser.error(str(exc))
    index.meta["tuning"] = tuning
    return index, tuning


def tuned_settings(args, views: list[str] | None) -> dict | None:
    """Weights and whitening tuned on the catalog (simfusion.search.tune); None when it cannot tune
    (then every view weighs 1, as with --no_tune)."""
    options = TuneOptions(images=args.tune_images, try_whiten=not args.whiten)
    with FeatureStore(store_path(args.model_save_path)) as store:
        if views and not set(views) <= set(store.views):
            return None  # the build says which views are unknown
    try:
        return tune_fusion(
            args.model_save_path,
            views=views,
            pooling=args.pooling,
            whiten_dim=args.whiten_dim,
            options=options,
        )
    except ValueError as exc:
        log.warning("tune: %s; every view weighs 1", exc)
        return None


def add_main(args) -> int:
    """--add: encode the records on stdin in memory, append them to the store and the index."""
    catalog = Catalog.open(args.model_save_path, detector=args.detector)
    skipped: list[int] = []
    records = list(mark_duplicates(parse_records(sys.stdin, skipped=skipped)))
    records = catalog.add(records, base_path=args.base_image_path, batch_size=args.batch_size, stage=STAGE)
    for record in records:
        write_record(record, sys.stdout)
    indexed = sum(bool(record.get("indexed")) for record in records)
    failed = sum("error" in record for record in records)
    log.info(
        "add: %d records indexed, %d with errors, %d input(s) not a record; the index holds %d items",
        indexed,
        failed,
        len(skipped),
        len(catalog),
    )
    return 1 if failed or skipped else 0
