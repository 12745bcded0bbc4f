"""The I/O shell every stage shares: flags, logging, records in on stdin, records out on stdout."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import IO, Any

from simfusion.io.images import ImageError
from simfusion.io.records import RecordError, mark_duplicates, parse_records, set_error, write_record

log = logging.getLogger(__name__)

Record = dict[str, Any]
BatchFn = Callable[[list[Record]], list[Record]]

# The failures expected of one record; anything else is a bug and fails loudly.
RECORD_FAILURES = (ImageError, RecordError, OSError)


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
