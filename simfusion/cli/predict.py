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

import argparse
import logging
import os
import sys
from typing import Any

from simfusion.cli.common import (
    HelpFormatter,
    add_log_level_argument,
    check_detector,
    configure_logging,
    positive_int,
)
from simfusion.io.montage import (
    montage_rows,
    save_recommendations,
)
from simfusion.io.records import (
    mark_duplicates,
    parse_records,
    write_record,
)
from simfusion.search.catalog import Catalog
from simfusion.search.crops import CROPS
from simfusion.search.faiss_index import single_query_threads
from simfusion.search.graph import REORDERS
from simfusion.search.options import CANDIDATE_FACTOR
from simfusion.search.rules import (
    CATEGORY_KEY,
    Rules,
    parse_boosts,
    parse_filters,
    parse_ids,
)
from simfusion.search.vectors import UnknownViewError, check_views, parse_weights

log = logging.getLogger(__name__)

STAGE = "predict"
MONTAGE_NAME = "recommendations.png"


def query_records_from(args, skipped: list[int]) -> tuple[list[dict[str, Any]], str]:
    """Queries from the command line's paths, else from stdin (`skipped` gets the numbers of the
    input lines that were no record); and the folder their paths are under."""
    if args.queries:
        return [{"image": path} for path in args.queries], ""
    return list(mark_duplicates(parse_records(sys.stdin, skipped=skipped))), args.base_image_path


def build_parser():

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
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
    parser.add_argument(
        "--rerank",
        choices=REORDERS,
        default="none",
        help="diffusion: reorder the best 100 hits over the catalog's own 20-nearest-neighbour graph "
        "(built once per process: seconds at 10,000 items); scores stay the fused cosine",
    )
    parser.add_argument("--detector", help="object detector (default: the one training used)")
    parser.add_argument(
        "--crops",
        choices=CROPS,
        default="guided",
        help="guided: a query the detector is unsure of (a product inside a busy scene) is also searched "
        "with windows of the photo, and answered from the crop most like the catalog; detector: its box only",
    )
    parser.add_argument(
        "--edges", choices=("hed", "canny"), help="edge method of the edges view (default: training's)"
    )
    parser.add_argument("--tile", type=montage_tile, default=128, help="montage tile side, 16-1024 px")
    # the prototype's size flags still parse; the trained model's training.json decides the size
    for flag in ("--im_height", "--im_width", "--im_channel"):
        parser.add_argument(flag, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=positive_int, default=16, help="queries encoded at once")
    add_log_level_argument(parser)
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
    check_detector(parser, args.detector)
    single_query_threads()
    try:
        catalog = Catalog.open(args.model_save_path, detector=args.detector, edges=args.edges)
        catalog.pipeline  # noqa: B018  (reads training.json: fail here, before any query is read)
    except (OSError, ValueError) as exc:  # missing or damaged model files, a stale index
        log.error("%s: %s", STAGE, exc)
        return 1
    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else catalog.views
    if not views:
        parser.error(f"--views: name at least one view of the index ({', '.join(catalog.views)})")
    try:
        check_views(views, catalog.views, holder="the index")
    except UnknownViewError as exc:
        parser.error(f"--views: {exc}")
    try:
        weights = parse_weights(args.weights, views) if args.weights else None
    except ValueError as exc:
        parser.error(f"--weights: {exc}")
    for flag in ("im_height", "im_width", "im_channel"):
        if getattr(args, flag) is not None:
            log.warning("%s: --%s is ignored: the model's training.json sets the query size", STAGE, flag)

    skipped: list[int] = []
    records, base = query_records_from(args, skipped)
    good = [record for record in records if "error" not in record]
    try:
        options = dict(
            k=args.top_k,
            rules=rules,
            candidates=args.candidates,
            views=views,
            weights=weights,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
            crops=args.crops,
            rerank=args.rerank,
        )
        encoded = catalog.encode_queries(
            good, base_path=base, batch_size=args.batch_size, stage=STAGE, **options
        )
        catalog.answer(encoded.records, encoded.maps, **options)
    except (ValueError, OSError) as exc:  # a view a new image cannot give; a model not fetched or damaged
        log.error("%s: %s", STAGE, exc)
        return 1
    for record in records:
        write_record(record, sys.stdout)
    if args.output_image_path and not write_montage(args, records, encoded, catalog, rules):
        return 1
    failed = sum("error" in record for record in records)
    log.info("%s: %d queries, %d failed%s", STAGE, len(records), failed, unread_lines(skipped))
    return 1 if failed or skipped else 0


MONTAGE_COLUMNS = 100


def write_montage(args, records, encoded, catalog, rules) -> bool:
    """recommendations.png under --output_image_path; False (logged) when it cannot be written."""
    pictures = {id(record): image for record, image in zip(encoded.records, encoded.images, strict=True)}
    path = os.path.join(args.output_image_path, MONTAGE_NAME)
    rows = montage_rows(records, pictures, model_save_path=catalog.path, category_key=rules.category_key)
    # a column per result that came back, at most MONTAGE_COLUMNS: --top_k 100000 sized an 8 GB picture
    columns = min(args.top_k, MONTAGE_COLUMNS, max((len(results) for _, results in rows), default=0))
    try:
        save_recommendations(path, rows, tile=args.tile, columns=columns)
    except OSError as exc:  # the results are out on stdout already
        log.error("%s: cannot write %s: %s", STAGE, path, exc)
        return False
    log.info("%s: wrote %s", STAGE, path)
    return True


def montage_tile(text: str) -> int:
    value = positive_int(text)
    if not 16 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be 16 to 1024 pixels, not {text}")
    return value


def unread_lines(skipped: list[int], *, named: int = 10) -> str:
    """What the summary says of the input lines that were no record: how many, and the first few."""
    if not skipped:
        return ""
    lines = sorted(set(skipped))
    more = ", ..." if len(lines) > named else ""
    return f", {len(skipped)} input(s) not a record (lines {', '.join(map(str, lines[:named]))}{more})"
