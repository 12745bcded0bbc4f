"""The I/O shell every stage shares: records in on stdin, the batch core over them, records out on stdout.

A stage hands `run_stage` its batch core as a `StageCore` (a function, its options and the models to
build where it runs); the distributor runs it here (`local`) or on Ray workers (`ray`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, islice
from typing import IO, Any

from simfusion.io.images import ImageError, OutputError
from simfusion.io.records import RecordError, mark_duplicates, parse_records, set_error, write_record

log = logging.getLogger(__name__)

Record = dict[str, Any]
BatchFn = Callable[[list[Record]], list[Record]]

# The failures expected of one record; anything else is a bug and fails loudly. An OutputError (a
# stage's own output cannot be written) is not one: run_stage stops on it.
RECORD_FAILURES = (ImageError, RecordError, OSError)
DISTRIBUTORS = ("local", "ray")


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
        except OutputError:
            raise
        except RECORD_FAILURES as exc:
            log.warning("%s: record %s: %s", stage, _name(record), exc)
            result = set_error(record, stage, exc)
        out.append(record if result is None else result)
    return out


def _name(record: Record) -> str:
    """How a log line names a record: its id, else its image, else that it has neither."""
    for key in ("id", "image_id", "image", "path"):
        if record.get(key) not in (None, ""):
            return repr(record[key])
    return "(no id)"


@dataclass(frozen=True)
class StageCore:
    """How to build a stage's batch function where it runs, so models are never pickled.

    `fn(records, **options, **models)` is the batch core; each entry of `models` is
    name -> (factory, kwargs), called once per worker (the detector, an encoder). `fn` and the
    factories are module-level functions, so a Ray worker imports them by name. `gpu`: the core
    runs a network and wants a GPU where the cluster has one.
    """

    fn: Callable[..., list[Record]]
    options: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, tuple[Callable[..., Any], Mapping[str, Any]]] = field(default_factory=dict)
    gpu: bool = False

    def build(self) -> BatchFn:
        built = {name: factory(**kwargs) for name, (factory, kwargs) in self.models.items()}
        return partial(self.fn, **self.options, **built)


def process_batch(batch: list[Record], fn: BatchFn, stage: str) -> list[Record]:
    """Run `fn` over the records of `batch` that carry no `error`; the others keep their place."""
    places = [i for i, record in enumerate(batch) if "error" not in record]
    if places:
        done = fn([batch[i] for i in places])
        if len(done) != len(places):
            raise RuntimeError(f"{stage}: batch returned {len(done)} records for {len(places)}")
        for i, record in zip(places, done, strict=True):
            batch[i] = record
    return batch


def run_stage(
    core: BatchFn | StageCore,
    *,
    stage: str,
    batch_size: int = 32,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    progress: bool = True,
    distributor: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Read records, run the batch core over the good ones in batches, write every record out.

    Records that already carry an `error` pass through untouched, in their place. `distributor`
    `local` runs the core in this process; `ray` runs it on Ray workers (`simfusion.io.distribute`)
    with the same output, in the same order. Returns counts, and `stopped` (why) when the stage's
    output could not be written: the command then exits 1.
    """
    from tqdm import tqdm

    if distributor not in DISTRIBUTORS:
        raise ValueError(f"distributor must be one of {', '.join(DISTRIBUTORS)}, not {distributor!r}")
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    counts: dict[str, Any] = {"records": 0, "errors": 0}
    records = mark_duplicates(parse_records(stdin))
    if distributor == "ray":
        from simfusion.io.distribute import ray_batches

        if not isinstance(core, StageCore):
            raise TypeError("the ray distributor needs a StageCore, which builds its models on the workers")
        batches = ray_batches(
            records, core, stage=stage, batch_size=batch_size, address=ray_address, progress=progress
        )
    else:
        fn = core.build() if isinstance(core, StageCore) else core
        batches = _local_batches(records, fn, stage, batch_size, counts)
    with tqdm(desc=stage, unit="img", file=sys.stderr, disable=not progress) as bar:
        for batch in batches:
            for record in batch:
                write_record(record, stdout)
                counts["records"] += 1
                counts["errors"] += "error" in record
            bar.update(len(batch))
    log.info("%s: %d records, %d with errors", stage, counts["records"], counts["errors"])
    return counts


def _local_batches(
    records: Iterable[Record], fn: BatchFn, stage: str, batch_size: int, counts: dict[str, Any]
) -> Iterator[list[Record]]:
    """The processed batches; once the stage's output cannot be written (OutputError), the rest of
    the records come out with that error, and `counts["stopped"]` says why."""
    batches = batched(records, batch_size)
    for batch in batches:
        try:
            yield process_batch(batch, fn, stage)
        except OutputError as exc:
            log.error("%s: %s; stopped: every record from here on is marked with it", stage, exc)
            counts["stopped"] = str(exc)
            for rest in chain([batch], batches):
                yield failed(rest, stage, exc)


def failed(batch: list[Record], stage: str, cause: object) -> list[Record]:
    """The batch with `cause` as the error of each record that has none yet (a batch whose output
    could not be written)."""
    return [record if "error" in record else set_error(record, stage, cause) for record in batch]
