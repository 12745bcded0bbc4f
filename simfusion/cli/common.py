"""Flags and logging every command shares."""

from __future__ import annotations

import argparse
import logging
import sys


def add_image_arguments(parser: argparse.ArgumentParser, *, output: bool = True, size: bool = True) -> None:
    """The prototype's flags, kept working: input and output folders and the thumbnail size."""
    parser.add_argument(
        "--base_image_path", default=".", help="folder the records' image paths are relative to"
    )
    if output:
        parser.add_argument("--output_image_path", help="folder to write this stage's images under")
    if size:
        parser.add_argument("--im_height", type=positive_int, default=128, help="thumbnail height in pixels")
        parser.add_argument("--im_width", type=positive_int, default=128, help="thumbnail width in pixels")
        parser.add_argument("--im_channel", type=int, choices=(1, 3), default=3, help="1 (gray) or 3 (RGB)")


def add_run_arguments(parser: argparse.ArgumentParser, *, batch_size: int = 32) -> None:
    """Batch size, overwrite and logging flags common to the stages."""
    parser.add_argument("--batch_size", type=positive_int, default=batch_size, help="records per batch")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    add_distributor_arguments(parser)


def add_distributor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the batch core runs: this process, or Ray workers (local Ray, or a cluster's address)."""
    import os

    distributor = os.environ.get("SIMFUSION_DISTRIBUTOR", "local")
    parser.add_argument(
        "--distributor",
        choices=("local", "ray"),
        default=distributor if distributor in ("local", "ray") else "local",
        help="local: this process (default; env SIMFUSION_DISTRIBUTOR); ray: Ray Data actors, one "
        "per CPU or GPU, models built once per worker",
    )
    parser.add_argument(
        "--ray_address",
        default=os.environ.get("RAY_ADDRESS") or None,
        help="Ray cluster to join, e.g. ray://head:10001 (env RAY_ADDRESS; default: start a local Ray)",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def configure_logging(level: str = "INFO") -> None:
    """Logs go to stderr; stdout is kept for records. Quiets TensorFlow's C++ and FAISS's start-up chatter."""
    import os

    # Must be set before TensorFlow is first imported; the stages import it lazily.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
