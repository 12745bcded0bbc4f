"""train.py: one autoencoder per view, the pretrained views, and the feature store."""

from __future__ import annotations

import logging
import sys

from simfusion.cli.common import (
    HelpFormatter,
    add_distributor_arguments,
    add_log_level_argument,
    configure_logging,
    positive_int,
)
from simfusion.io.records import mark_duplicates, parse_records, write_record
from simfusion.learn.data import TooFewImagesError
from simfusion.learn.device import GPU_EPOCHS, GPU_TIME_BUDGET, GPU_VIEWS, PROFILES, gpu_names, plan_training
from simfusion.learn.options import OBJECTIVES, TrainOptions
from simfusion.learn.training import STAGE, train_catalog
from simfusion.views.registry import (
    DEFAULT_VIEWS,
    HED_BLOCKS,
    VIEWS,
    check_view_name,
    default_views,
    view_spec,
)

log = logging.getLogger(__name__)


def parse_views(text: str) -> tuple[str, ...]:
    views = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not views:
        raise ValueError("give at least one view")
    for view in views:
        check_view_name(view)
    return views


def add_optimiser_arguments(parser) -> None:
    """How a trained view's optimiser runs: validation split, patience, learning rate, loss weight."""
    parser.add_argument(
        "--validation_split",
        type=float,
        default=TrainOptions.validation_split,
        help="share of the images held out to stop training early",
    )
    parser.add_argument(
        "--patience", type=positive_int, default=TrainOptions.patience, help="early stopping patience"
    )
    parser.add_argument(
        "--learning_rate", type=float, default=TrainOptions.learning_rate, help="Adam's learning rate"
    )
    parser.add_argument(
        "--contrastive_weight",
        type=float,
        default=TrainOptions.contrastive_weight,
        help="the contrastive loss's weight beside the reconstruction's (--objective contrastive)",
    )


def add_training_arguments(parser) -> None:
    """How the trained views train: the profile, epochs, time budget and the autoencoders' settings."""
    parser.add_argument(
        "--epochs",
        type=positive_int,
        help=f"epochs per trained view (default {TrainOptions.epochs}; the gpu profile: {GPU_EPOCHS}, "
        "ended by its time budget)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="auto",
        help="what the defaults train: cpu, the pretrained and computed views only (nothing is trained); "
        f"gpu, those plus {','.join(GPU_VIEWS)} (with --distributor local), and every trained view, "
        f"{','.join(GPU_VIEWS)} or one --views names, trains for up to {GPU_EPOCHS} epochs and "
        f"--time_budget (default {GPU_TIME_BUDGET:.0f} s); auto (default): gpu where TensorFlow sees a "
        "GPU. --views, --epochs and --time_budget override it",
    )
    parser.add_argument(
        "--batch_size", type=positive_int, default=TrainOptions.batch_size, help="images a training step"
    )
    parser.add_argument("--latent", type=positive_int, default=TrainOptions.latent, help="latent channels")
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=TrainOptions.objective,
        help="what the autoencoders learn from (see simfusion/learn/autoencoder.py)",
    )
    add_optimiser_arguments(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints of an earlier run"
    )
    parser.add_argument(
        "--seed", type=int, default=TrainOptions.seed, help="seed of the weights, splits and augmentations"
    )
    parser.add_argument(
        "--hed_block", choices=HED_BLOCKS, help="HED backbone block of hed_vgg16 (default block3)"
    )
    parser.add_argument(
        "--hed_grid", type=positive_int, help="hed_vgg16 pooled to a grid x grid map (default 4)"
    )
    parser.add_argument(
        "--time_budget",
        type=float,
        help="seconds of training per trained view; stops it when spent, whatever --epochs says "
        "(with it a student trains for --epochs, not its own 10)",
    )


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="train.py",
        description="Train the views that learn, without labels (none of the defaults: they are "
        "pretrained or computed; the gpu profile adds the student), then encode every record of every "
        "view into <model_save_path>/features.h5. Records on stdin, records with `features` on stdout.",
    )
    parser.add_argument(
        "--base_image_path_for_model",
        "--base_image_path",
        dest="base",
        default=None,
        help="folder holding <view>/<name from the record's id> (used when a record has no path under the "
        "view's key)",
    )
    parser.add_argument("--model_save_path", help="folder for the models, training.json and features.h5")
    parser.add_argument("--im_height", type=positive_int, default=128, help="thumbnail height in pixels")
    parser.add_argument("--im_width", type=positive_int, default=128, help="thumbnail width in pixels")
    parser.add_argument("--im_channel", type=int, choices=(1, 3), default=3, help="1 (gray) or 3 (RGB)")
    parser.add_argument(
        "--views",
        help=f"comma-separated views to train/encode, of {','.join(VIEWS)} (any other name: an autoencoder "
        f"over <base>/<name>/ images); default {','.join(DEFAULT_VIEWS)} (the mobilenet_coco views left out, "
        "with a warning, where the COCO model cache is not fetched)",
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--encode_batch_size", type=positive_int, default=64, help="images a batch when encoding the views"
    )
    add_log_level_argument(parser)
    parser.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    add_distributor_arguments(parser)  # the encoding pass: shards on Ray workers
    return parser


def check_flags(args, parser) -> None:
    """A bad value exits 2 with argparse's message, before anything slow is imported."""
    if not args.model_save_path:
        parser.error("--model_save_path is required: the folder the models and features.h5 go to")
    if not 0 <= args.validation_split < 1:
        parser.error("--validation_split must be in [0, 1)")
    if args.time_budget is not None and not args.time_budget > 0:
        parser.error("--time_budget must be > 0 seconds")
    if args.learning_rate <= 0 or args.contrastive_weight < 0:
        parser.error("--learning_rate must be > 0 and --contrastive_weight >= 0")


def options_from(args, plan) -> TrainOptions:
    """The training options of the flags and the run's plan (its epochs and time budget)."""
    return TrainOptions(
        epochs=plan.epochs,
        batch_size=args.batch_size,
        latent=args.latent,
        objective=args.objective,
        validation_split=args.validation_split,
        patience=args.patience,
        seed=args.seed,
        learning_rate=args.learning_rate,
        contrastive_weight=args.contrastive_weight,
        time_budget=plan.time_budget,
    )


def training_plan(args, views: tuple[str, ...] | None):
    """The run's profile (cpu, or gpu where TensorFlow sees one), views, epochs and budget; logged.
    Students need the whole catalog in one process, so a Ray run's GPU profile adds none."""
    plan = plan_training(
        args.profile,
        gpus=gpu_names() if args.profile != "cpu" else [],
        default_views=default_views() if views is None else (),
        cpu_epochs=TrainOptions.epochs,
        views=views,
        epochs=args.epochs,
        time_budget=args.time_budget,
        students=args.distributor == "local",
    )
    trained = [view for view in plan.views if view_spec(view).trained]
    budget = f", up to {plan.time_budget:.0f} s each" if plan.time_budget else ""
    how = f"{','.join(trained)} trained for {plan.epochs} epochs{budget}" if trained else "none trained"
    log.info("%s: %s profile: views %s; %s", STAGE, plan.profile, ",".join(plan.views), how)
    if args.resume:
        warn_if_replanned(args.model_save_path, plan)
    return plan


def warn_if_replanned(model_save_path: str, plan) -> None:
    """--resume keeps only what was trained the same way: say so when the earlier run's views or
    epochs differ (another machine's profile, say), since those views then train again from scratch."""
    import os

    from simfusion.io.atomic import read_json
    from simfusion.learn.encoders import TRAINING_JSON

    path = os.path.join(model_save_path, TRAINING_JSON)
    try:
        old = read_json(path)
    except (OSError, ValueError):
        return
    if list(old.get("views", {})) != list(plan.views) or old.get("epochs") != plan.epochs:
        log.warning(
            "%s: --resume: the earlier run trained %s for %s epochs (%s), this one plans %s for %d (%s "
            "profile): a trained view whose settings differ trains again from the start",
            STAGE, ",".join(old.get("views", {})), old.get("epochs"), old.get("device", "device unknown"),
            ",".join(plan.views), plan.epochs, plan.profile,
        )  # fmt: skip


def main(argv: list[str] | None = None, *, stdin=None, stdout=None) -> int:
    import contextlib

    parser = build_parser()
    args = parser.parse_args(argv)
    check_flags(args, parser)
    try:
        views = parse_views(args.views) if args.views is not None else None
    except ValueError as exc:
        parser.error(f"--views: {exc}")
    configure_logging(args.log_level)
    plan = training_plan(args, views)
    options, views = options_from(args, plan), plan.views
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    records = list(mark_duplicates(parse_records(stdin)))
    skipped = sum("error" in record for record in records)
    log.info(
        "%s: %d records, %d with an earlier error (passed through, not trained on)",
        STAGE,
        len(records),
        skipped,
    )
    failure = None
    # stdout carries records only: anything a library prints while training goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        try:
            train_catalog(
                records,
                model_save_path=args.model_save_path,
                base=args.base,
                views=views,
                height=args.im_height,
                width=args.im_width,
                channels=args.im_channel,
                options=options,
                resume=args.resume,
                hed_block=args.hed_block,
                hed_grid=args.hed_grid,
                encode_batch_size=args.encode_batch_size,
                progress=not args.no_progress,
                distributor=args.distributor,
                ray_address=args.ray_address,
            )
        except (TooFewImagesError, OSError, ValueError) as exc:  # a held lock, a full disk, students on Ray
            log.error("%s: %s", STAGE, exc)
            failure = f"{STAGE}: the catalog was not trained ({exc})"
            records = [record if "error" in record else {**record, "error": failure} for record in records]
    for record in records:
        write_record(record, stdout)
    errors = sum("error" in record for record in records)
    log.info("%s: %d records out, %d with errors", STAGE, len(records), errors)
    return 1 if failure else 0
