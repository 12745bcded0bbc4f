"""The I/O shell every stage shares: flags, logging, records in on stdin, records out on stdout."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import IO, Any

from simfusion.images import ImageError
from simfusion.records import RecordError, mark_duplicates, parse_records, set_error, write_record

log = logging.getLogger(__name__)

Record = dict[str, Any]
BatchFn = Callable[[list[Record]], list[Record]]

# The failures expected of one record; anything else is a bug and fails loudly.
RECORD_FAILURES = (ImageError, RecordError, OSError)


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


def batched(items: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def map_records(records: list[Record], stage: str, fn: Callable[[Record], Record | None]) -> list[Record]:
    """Apply a per-record function, turning an expected failure into that record's `error`."""
    out = []
    for record in records:
        try:
            result = fn(record)
        except RECORD_FAILURES as exc:
            log.warning("%s: %s", stage, exc)
            result = set_error(record, stage, exc)
        out.append(record if result is None else result)
    return out


def run_stage(
    process_batch: BatchFn,
    *,
    stage: str,
    batch_size: int = 32,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Read records, run `process_batch` over the good ones in batches, write every record out.

    Records that already carry an `error` pass through untouched, in their place. Returns counts.
    """
    from tqdm import tqdm

    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    counts = {"records": 0, "errors": 0}
    records = mark_duplicates(parse_records(stdin))
    with tqdm(desc=stage, unit="img", file=sys.stderr, disable=not progress) as bar:
        for batch in batched(records, batch_size):
            places = [i for i, record in enumerate(batch) if "error" not in record]
            if places:
                done = process_batch([batch[i] for i in places])
                if len(done) != len(places):
                    raise RuntimeError(f"{stage}: batch returned {len(done)} records for {len(places)}")
                for i, record in zip(places, done, strict=True):
                    batch[i] = record
            for record in batch:
                write_record(record, stdout)
                counts["records"] += 1
                counts["errors"] += "error" in record
            bar.update(len(batch))
    log.info("%s: %d records, %d with errors", stage, counts["records"], counts["errors"])
    return counts
