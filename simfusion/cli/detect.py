"""object_detection.py: find the main object of each record's image."""

from __future__ import annotations

import sys

from simfusion.cli.common import HelpFormatter, add_image_arguments, add_run_arguments, configure_logging
from simfusion.detect.plugins import read_label_map
from simfusion.detect.registry import DEFAULT_DETECTOR, make_detector
from simfusion.detect.stage import STAGE, detect_records
from simfusion.io.stage import StageCore, run_stage
from simfusion.models.cache import ModelMissing


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="object_detection.py",
        description="Find the main object of each record's image: adds `detections` and `box` "
        "([x0, y0, x1, y1] in the image's pixels). Records on stdin, enriched records on stdout.",
        epilog="Detectors: objectness (HED edges + border colour contrast, pretrained, "
        "class-agnostic), saliency (spectral-residual baseline), full (whole image), haar[:face,"
        "cat_face,person,licence_plate], coco[:nanodet] (80 COCO classes, labelled; fetch the model once "
        "with `python -m simfusion.models.cache fetch`), auto[:THRESHOLD] (a confident COCO box, else "
        "objectness), keras:MODEL(.keras|.h5|.tflite) with --label_map, "
        "python:MODULE:FUNCTION. See simfusion/detect/registry.py for the model contract.",
    )
    add_image_arguments(parser, size_used=False)
    parser.add_argument(
        "--detector", default=DEFAULT_DETECTOR, help=f"detector spec (default: {DEFAULT_DETECTOR})"
    )
    parser.add_argument(
        "--labels", help="comma-separated labels to keep, e.g. car,truck (coco) or face,person (haar)"
    )
    parser.add_argument("--min_score", type=float, default=0.0, help="drop detections scoring below this")
    parser.add_argument("--label_map", help="text file of class labels, one per line, for keras: models")
    add_run_arguments(parser, batch_size=16)
    return parser


def main(argv: list[str] | None = None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_score <= 1.0:
        parser.error("--min_score must be between 0 and 1")
    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    if args.labels is not None and not labels:
        parser.error("--labels needs at least one label, e.g. --labels car,person")
    configure_logging(args.log_level)
    try:
        label_map = read_label_map(args.label_map)
        detector = make_detector(args.detector, label_map=label_map)
    except ModelMissing as exc:
        print(f"object_detection.py: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        parser.error(f"--detector {args.detector}: {exc}")
    options = dict(
        base_path=args.base_image_path,
        output_path=args.output_image_path,
        labels=labels,
        min_score=args.min_score,
    )
    if args.distributor == "local":
        core = StageCore(detect_records, {**options, "detector": detector})
    else:  # each Ray worker builds its own detector
        models = {"detector": (make_detector, {"spec": args.detector, "label_map": label_map})}
        core = StageCore(detect_records, options, models=models, gpu=True)
    counts = run_stage(
        core,
        stage=STAGE,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        distributor=args.distributor,
        ray_address=args.ray_address,
    )
    return 1 if counts.get("stopped") else 0
