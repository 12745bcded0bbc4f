"""thumbnail.py: crop, pad and resize each record's box to a thumbnail."""

from __future__ import annotations

from simfusion.cli.common import HelpFormatter, add_image_arguments, add_run_arguments, configure_logging
from simfusion.io.stage import StageCore, map_records, run_stage
from simfusion.views.thumbnail import FILLS, STAGE, thumbnail_record


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="thumbnail.py",
        description="Crop each record's `box` (the whole image when it has none) with a margin, pad to "
        "the thumbnail's aspect and resize. Records on stdin, enriched records on stdout.",
    )
    add_image_arguments(parser)
    parser.add_argument(
        "--margin", type=float, default=0.1, help="margin around the box, as a share of its size"
    )
    parser.add_argument(
        "--fill", choices=FILLS, default="border", help="padding colour (border: the image's own)"
    )
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from functools import partial

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.output_image_path:
        parser.error("--output_image_path is required: the folder the thumbnails go to")
    if args.margin < 0:
        parser.error("--margin must be >= 0")
    configure_logging(args.log_level)
    one = partial(
        thumbnail_record,
        base_path=args.base_image_path,
        output_path=args.output_image_path,
        height=args.im_height,
        width=args.im_width,
        channels=args.im_channel,
        margin=args.margin,
        fill=args.fill,
        overwrite=args.overwrite,
    )
    counts = run_stage(
        StageCore(map_records, {"stage": STAGE, "fn": one}),
        stage=STAGE,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        distributor=args.distributor,
        ray_address=args.ray_address,
    )
    return 1 if counts.get("stopped") else 0
