"""Near-duplicate groups of a trained catalog, as imagededup's find_duplicates gives them.

    duplicates.py --model_save_path DIR [--threshold 0.9] [--max_per_item 50] [--views ...] [--weights ...]

One JSON line per catalog item on stdout: {"id": ..., "duplicates": [[other_id, score], ...]},
best first; with --groups_only, only the items that have any. Every item is compared with the
whole catalog by its stored features (nothing is re-encoded); the score is the fused index's
similarity. The default threshold comes from the near-duplicate benchmark (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import sys

from simfusion.cli.common import HelpFormatter, add_log_level_argument, configure_logging, positive_int
from simfusion.io.records import write_record
from simfusion.io.store import StoreFormatError
from simfusion.search.catalog import Catalog
from simfusion.search.duplicates import DEFAULT_THRESHOLD, MAX_PER_ITEM, find_duplicates
from simfusion.search.index import IndexFileError
from simfusion.search.vectors import UnknownViewError, check_views, parse_weights

log = logging.getLogger(__name__)

STAGE = "duplicates"


def similarity(text: str) -> float:
    import argparse

    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a similarity from -1 to 1, not {text}")
    return value


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="duplicates.py",
        description="Near-duplicate groups of a trained catalog: one JSON line per item, "
        '{"id": ..., "duplicates": [[other_id, score], ...]}.',
    )
    parser.add_argument(
        "--model_save_path", required=True, help="folder of the trained models, features.h5, index/"
    )
    parser.add_argument(
        "--threshold",
        type=similarity,
        default=DEFAULT_THRESHOLD,
        help=f"fused similarity at or above which two items are duplicates (default {DEFAULT_THRESHOLD}, "
        "from the near-duplicate benchmark)",
    )
    parser.add_argument("--max_per_item", type=positive_int, default=MAX_PER_ITEM, help="duplicates per item")
    parser.add_argument("--views", help="compare with these views only (default: the index's)")
    parser.add_argument("--weights", help="per-view weights, e.g. thumbnail=1,edges=0.5")
    parser.add_argument("--groups_only", action="store_true", help="leave out items with no duplicate")
    add_log_level_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        catalog = Catalog.open(args.model_save_path)
    except (FileNotFoundError, StoreFormatError, IndexFileError) as exc:
        log.error("%s: %s", STAGE, exc)
        return 1
    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else catalog.views
    try:
        check_views(views, catalog.views, holder="the index")
        weights = parse_weights(args.weights, views) if args.weights else None
    except (UnknownViewError, ValueError) as exc:
        parser.error(str(exc))
    groups = find_duplicates(
        catalog, threshold=args.threshold, max_per_item=args.max_per_item, views=views, weights=weights
    )
    for key, found in groups.items():
        if found or not args.groups_only:
            write_record({"id": key, "duplicates": found}, sys.stdout)
    pairs = sum(len(found) for found in groups.values()) // 2
    log.info(
        "%s: %d items, %d with duplicates, about %d pairs at threshold %g",
        STAGE,
        len(groups),
        sum(bool(found) for found in groups.values()),
        pairs,
        args.threshold,
    )
    return 0
