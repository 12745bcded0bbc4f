"""saliency.py: the saliency, edge and foreground views of each thumbnail."""

from __future__ import annotations

from simfusion.cli.common import HelpFormatter, add_image_arguments, add_run_arguments, configure_logging
from simfusion.io.stage import StageCore, run_stage
from simfusion.views.saliency import EDGE_METHODS, METHODS, STAGE, VIEW_NAMES, check_views, saliency_records
from simfusion.views.thumbnail import FILLS


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="saliency.py",
        description="Write a saliency map, an edge map and a saliency-weighted foreground of each "
        "record's thumbnail, each under OUTPUT/<view>/, named after the record's id. Records on stdin, "
        "enriched records (keys saliency, edges, foreground: the paths written) on stdout.",
    )
    # --im_height/--im_width are accepted so the prototype's command lines keep working; the
    # thumbnails already have that size. --im_channel picks gray or RGB for the foreground.
    add_image_arguments(parser)
    parser.add_argument(
        "--method", choices=METHODS, default="spectral_residual", help="OpenCV static saliency"
    )
    parser.add_argument(
        "--edges",
        choices=EDGE_METHODS,
        default="hed",
        help="hed: pretrained network (default); canny: fast, binary",
    )
    parser.add_argument(
        "--views",
        default=",".join(VIEW_NAMES),
        help=f"comma-separated views to write, of {','.join(VIEW_NAMES)}",
    )
    parser.add_argument(
        "--fill", choices=FILLS, default="white", help="colour the foreground's background fades to"
    )
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.output_image_path:
        parser.error("--output_image_path is required: the folder the views go under")
    try:
        views = check_views(name.strip() for name in args.views.split(",") if name.strip())
    except ValueError as exc:
        parser.error(f"--views: {exc}")
    configure_logging(args.log_level)
    options = dict(
        base_path=args.base_image_path,
        output_path=args.output_image_path,
        views=views,
        method=args.method,
        edges=args.edges,
        fill=args.fill,
        channels=args.im_channel,
        overwrite=args.overwrite,
    )
    counts = run_stage(
        StageCore(saliency_records, options, gpu=args.edges == "hed"),
        stage=STAGE,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        distributor=args.distributor,
        ray_address=args.ray_address,
    )
    return 1 if counts.get("stopped") else 0
