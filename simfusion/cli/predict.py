"""Find the catalog items most similar to query images: encode, search the fused index, apply rules.

    predict.py --model_save_path DIR [QUERY_IMAGE ...] [--top_k 10] [--output_image_path DIR]
               [--same_category] [--filter key=value ...] [--exclude_ids a,b] [--boost key=value:factor ...]

Queries are image paths on the command line, or records on stdin (paths relative to
--base_image_path). Each query goes through the catalog's own stages in memory (detection,
thumbnail, saliency views, the trained encoders, the index's frozen normalisation), then the
index; one JSON line per query comes out: its record plus `results`, best first, each
{id, score, scores: {view: score}, ...the catalog item's record fields}. With
--output_image_path, `recommendations.png` shows each query beside its results.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from simfusion.cli.common import configure_logging, positive_int
from simfusion.detect.registry import catalog_detector
from simfusion.io.images import ImageError, load_image
from simfusion.io.montage import MATCH_COLOUR, OTHER_COLOUR, QUERY_COLOUR, Tile, save_recommendations
from simfusion.io.records import (
    RecordError,
    mark_duplicates,
    output_relpath,
    parse_records,
    record_id,
    write_record,
)
from simfusion.io.store import FeatureStore, StoreFormatError, store_path
from simfusion.pipeline import encode_records, load_pipeline
from simfusion.search.build import check_store, index_path
from simfusion.search.index import IndexFileError, load_index, search
from simfusion.search.rules import (
    CATEGORY_KEY,
    Rules,
    apply_rules,
    field_text,
    infer_category,
    parse_boosts,
    parse_filters,
    parse_ids,
    record_category,
)
from simfusion.search.vectors import parse_weights, transform

log = logging.getLogger(__name__)

STAGE = "predict"
CANDIDATE_FACTOR = 10  # candidates searched per result shown, before the rules thin them out
GROWTH = 4
MONTAGE_NAME = "recommendations.png"


@dataclass
class Catalog:
    """What a query is searched against: the index, the catalog's records, the model folder."""

    index: Any  # simfusion.search.index.CatalogIndex
    records: dict[str, dict[str, Any]]
    model_save_path: str
    store_views: list[str] = field(default_factory=list)


def load_catalog(model_save_path: str | os.PathLike) -> Catalog:
    """Open the index and the feature store's records; raises with a message saying what to run."""

    model_save_path = os.fspath(model_save_path)
    with FeatureStore(store_path(model_save_path)) as store:
        index = load_index(index_path(model_save_path))
        check_store(index, store)
        records = dict(zip(store.record_ids(), store.records(), strict=True))
        views = store.views
    return Catalog(index=index, records=records, model_save_path=model_save_path, store_views=views)


def with_fields(
    hits: Sequence[dict[str, Any]], records: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Hits with their catalog record's fields after {id, score, scores} (those keys win)."""
    out = []
    for hit in hits:
        full = dict(hit)
        for key, value in records.get(hit["id"], {}).items():
            full.setdefault(key, value)
        out.append(full)
    return out


def rank(
    catalog: Catalog,
    queries: Mapping[str, np.ndarray],
    query_records: Sequence[dict[str, Any]],
    *,
    top_k: int = 10,
    rules: Rules | None = None,
    candidate_factor: int = CANDIDATE_FACTOR,
    **search_options: Any,
) -> list[tuple[list[dict[str, Any]], str | None]]:
    """Results (hits with record fields, best first) and inferred category of each query vector.

    Searches `top_k * candidate_factor` candidates, applies the rules and searches again with
    more candidates while the rules leave fewer than `top_k` and the catalog has more.
    """

    rules = rules or Rules()
    size = len(catalog.index)
    wanted = min(size, top_k * (candidate_factor if rules else 1)) if size else top_k
    todo = list(range(len(query_records)))
    out: list[tuple[list[dict[str, Any]], str | None]] = [([], None)] * len(query_records)
    while todo:
        subset = {view: np.asarray(vectors)[todo] for view, vectors in queries.items()}
        # late and rrf fusion rescore the union of each view's candidates: a wider pool ranks better
        pool = max(wanted, top_k * candidate_factor)
        found = search(catalog.index, subset, k=max(wanted, 1), candidates=pool, **search_options)
        again = []
        for row, hits in zip(todo, found, strict=True):
            hits = with_fields(hits, catalog.records)
            category, inferred = None, None
            if rules.same_category:
                category = record_category(query_records[row], rules.category_key)
                if category in (None, ""):
                    category = inferred = infer_category(hits, key=rules.category_key, top=top_k)
            effective = rules
            if rules.same_category and category in (None, ""):
                # nothing to match: better the unfiltered ranking than no results at all
                log.warning(
                    "%s: query %d has no category and its neighbours none to infer; "
                    "--same_category ignored for it",
                    STAGE,
                    row + 1,
                )
                effective = replace(rules, same_category=False)
            kept = apply_rules(hits, effective, category=category) if effective else hits
            out[row] = (kept[:top_k], inferred)
            if len(kept) < top_k and wanted < size:
                again.append(row)
        todo, wanted = again, min(size, wanted * GROWTH)
    return out


def query_records_from(args) -> tuple[list[dict[str, Any]], str]:
    """Queries from the command line's paths, else from stdin; and the folder their paths are under."""

    if args.queries:
        return [{"image": path} for path in args.queries], ""
    return list(mark_duplicates(parse_records(sys.stdin))), args.base_image_path


def catalog_image(record: Mapping[str, Any], model_save_path: str) -> np.ndarray | None:
    """A catalog item's picture for the montage: its thumbnail, else its original image, else None."""

    candidates = [record.get("thumbnail"), record.get("image_path")]
    try:
        # the pipeline's layout: OUT/model beside OUT/views/thumbnail/<relative path>
        out = os.path.dirname(os.path.abspath(model_save_path))
        candidates.append(os.path.join(out, "views", "thumbnail", output_relpath(record)))
    except RecordError:
        pass
    for path in candidates:
        if isinstance(path, str) and path and os.path.exists(path):
            try:
                return load_image(path, channels=3)
            except ImageError as exc:
                log.warning("montage: %s", exc)
    return None


def montage_rows(
    records: Sequence[dict[str, Any]], images: Mapping[int, np.ndarray], catalog: Catalog, *, rules: Rules
) -> list:
    """The montage's rows: each query's tile beside its results' tiles."""

    rows = []
    for record in records:
        try:
            # a query given as a path is named by its file name: the tile is narrow
            name = str(record["id"]) if record.get("id") else os.path.basename(record_id(record))
        except ValueError:
            name = "?"
        category = field_text(record.get(rules.category_key)) or record.get("inferred_category")
        if "error" in record:
            rows.append((Tile(None, ["query (unreadable)", name, record["error"]], QUERY_COLOUR), []))
            continue
        label = category if record.get(rules.category_key) else f"{category} (inferred)" if category else ""
        query = Tile(images.get(id(record)), ["query", name, label], QUERY_COLOUR)
        tiles = []
        for rank_, hit in enumerate(record["results"], 1):
            hit_category = field_text(hit.get(rules.category_key)) or ""
            colour = MATCH_COLOUR if category and hit_category == category else OTHER_COLOUR
            lines = [f"#{rank_}  {hit['score']:.3f}", hit_category, hit["id"]]
            tiles.append(Tile(catalog_image(hit, catalog.model_save_path), lines, colour))
        rows.append((query, tiles))
    return rows


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Find the catalog items most similar to each query image. Queries are image paths, "
        "or records on stdin; one JSON line per query on stdout: its record plus `results`.",
    )
    parser.add_argument(
        "queries", nargs="*", metavar="QUERY_IMAGE", help="query image paths (else records on stdin)"
    )
    parser.add_argument(
        "--model_save_path", required=True, help="folder of the trained models, features.h5, index/"
    )
    parser.add_argument(
        "--base_image_path", default=".", help="folder the stdin records' image paths are relative to"
    )
    parser.add_argument("--output_image_path", help=f"folder to write {MONTAGE_NAME} to")
    parser.add_argument("--top_k", type=positive_int, default=10, help="results per query")
    parser.add_argument(
        "--same_category",
        action="store_true",
        help="only items of the query's category (inferred from its neighbours when it has none)",
    )
    parser.add_argument("--category_key", default=CATEGORY_KEY, help="the record field holding the category")
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep items whose field equals the value (repeat: all must match)",
    )
    parser.add_argument("--exclude_ids", help="comma-separated catalog ids never to return")
    parser.add_argument(
        "--boost",
        action="append",
        default=[],
        metavar="KEY=VALUE:FACTOR",
        help="multiply the score of items whose field equals the value",
    )
    parser.add_argument("--views", help="search with these views only (default: the index's)")
    parser.add_argument("--weights", help="per-view weights for this search, e.g. thumbnail=1,edges=0.5")
    parser.add_argument(
        "--candidates",
        type=positive_int,
        default=CANDIDATE_FACTOR,
        help="candidates searched per result when rules filter (x top_k)",
    )
    parser.add_argument("--nprobe", type=positive_int, help="IVF lists searched (IVF index)")
    parser.add_argument("--ef_search", type=positive_int, help="HNSW search breadth (HNSW index)")
    parser.add_argument("--detector", help="object detector (default: the one training used)")
    parser.add_argument(
        "--edges", choices=("hed", "canny"), help="edge method of the edges view (default: training's)"
    )
    parser.add_argument("--tile", type=positive_int, default=128, help="montage tile size in pixels")
    # the prototype's size flags still parse; the trained model's training.json decides the size
    for flag in ("--im_height", "--im_width", "--im_channel"):
        parser.add_argument(flag, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=positive_int, default=16, help="queries encoded at once")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def rules_from(args, parser) -> Rules:

    try:
        return Rules(
            filters=parse_filters(args.filter),
            exclude_ids=parse_ids(args.exclude_ids),
            boosts=parse_boosts(args.boost),
            same_category=args.same_category,
            category_key=args.category_key,
        )
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    rules = rules_from(args, parser)
    configure_logging(args.log_level)
    try:
        catalog = load_catalog(args.model_save_path)
        pipeline = load_pipeline(args.model_save_path, detector=args.detector, edges=args.edges)
        if pipeline.detector is None:
            pipeline = replace(pipeline, detector=catalog_detector(catalog.records.values()))
    except (FileNotFoundError, StoreFormatError, IndexFileError) as exc:
        log.error("%s: %s", STAGE, exc)
        return 1
    index = catalog.index
    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else index.views
    unknown = [view for view in views if view not in index.views]
    if unknown:
        parser.error(f"--views: unknown view(s) {', '.join(unknown)}: the index has {', '.join(index.views)}")
    try:
        weights = parse_weights(args.weights, views) if args.weights else None
    except ValueError as exc:
        parser.error(f"--weights: {exc}")
    for flag in ("im_height", "im_width", "im_channel"):
        if getattr(args, flag) is not None:
            log.warning("%s: --%s is ignored: the model's training.json sets the query size", STAGE, flag)

    records, base = query_records_from(args)
    good = [record for record in records if "error" not in record]
    try:
        encoded = encode_records(
            good,
            model_save_path=args.model_save_path,
            base_path=base,
            views=views,
            pipeline=pipeline,
            batch_size=args.batch_size,
            stage=STAGE,
        )
    except ValueError as exc:
        log.error("%s: %s", STAGE, exc)
        return 1
    if encoded.records:
        vectors = transform(encoded.maps, index.params, pooling=index.meta["pooling"])
        ranked = rank(
            catalog,
            vectors,
            encoded.records,
            top_k=args.top_k,
            rules=rules,
            candidate_factor=args.candidates,
            views=views,
            weights=weights,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
        )
        for record, (results, inferred) in zip(encoded.records, ranked, strict=True):
            record["results"] = results
            if inferred is not None or (rules.same_category and not record.get(rules.category_key)):
                record["inferred_category"] = inferred
    for record in records:
        write_record(record, sys.stdout)
    if args.output_image_path:
        pictures = {id(record): image for record, image in zip(encoded.records, encoded.images, strict=True)}
        path = os.path.join(args.output_image_path, MONTAGE_NAME)
        save_recommendations(
            path, montage_rows(records, pictures, catalog, rules=rules), tile=args.tile, columns=args.top_k
        )
        log.info("%s: wrote %s", STAGE, path)
    failed = sum("error" in record for record in records)
    log.info("%s: %d queries, %d failed", STAGE, len(records), failed)
    return 1 if failed else 0
