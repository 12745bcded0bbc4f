"""The Ray distributor: a stage's batch core over Ray Data `map_batches`, on a pool of actors.

Each actor builds the stage's `StageCore` once (the detector, HED, the encoders are built inside
the worker, never pickled) and then processes batches of records sent as JSON text. A worker that
dies is restarted and its batch retried (`max_restarts`, `max_task_retries`); the driver puts the
records back in input order and checks that every record came back exactly once. With no address
a local Ray is started on this machine (`LOCAL_CPUS` workers); an address (or RAY_ADDRESS) joins a
cluster started with `ray start --head`, whose nodes must have this package installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

import simfusion
from simfusion.io.images import OutputError
from simfusion.io.records import to_json
from simfusion.io.stage import Record, StageCore, failed, process_batch

log = logging.getLogger(__name__)

LOCAL_CPUS = 2
MAX_RESTARTS = 3  # a worker that keeps dying fails the run after this many restarts
MAX_TASK_RETRIES = 3


def package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(simfusion.__file__)))


def start_ray(address: str | None = None, *, num_cpus: int = LOCAL_CPUS) -> None:
    """Join the cluster at `address`, or start a local Ray whose workers can import this package."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("joined the Ray cluster at %s: %s", address, ray.cluster_resources())
        return
    # local workers inherit this environment: let them import simfusion from wherever it is
    paths = [package_root(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=False)
    log.info("started a local Ray with %d CPUs", num_cpus)


class StageActor:
    """One Ray worker of a stage: builds the core once, then maps batches of JSON records."""

    def __init__(self, core: StageCore, stage: str) -> None:
        self.fn = core.build()
        self.stage = stage

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [json.loads(text) for text in batch["record"]]
        try:
            done = process_batch(records, self.fn, self.stage)
        except OutputError as exc:  # the local run stops; here each batch that meets it says so
            done = failed(records, self.stage, exc)
        texts = [json.dumps(record, ensure_ascii=False, default=to_json) for record in done]
        return {"seq": batch["seq"], "record": np.array(texts, dtype=object)}


def pool_size(core: StageCore, workers: int | None) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU for a core that wants one, else one per CPU."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if core.gpu else 0
    if gpus:
        return workers or gpus, 1.0
    return workers or max(1, int(resources.get("CPU", 1))), 0.0


def ray_batches(
    records: Iterable[Record],
    core: StageCore,
    *,
    stage: str,
    batch_size: int,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Iterator[list[Record]]:
    """Process `records` on Ray and yield them back in input order, in runs as they complete.

    Raises RuntimeError if a record comes back twice or never (which Ray's retries should prevent).
    """
    import ray

    items = [
        {"seq": seq, "record": json.dumps(record, ensure_ascii=False, default=to_json)}
        for seq, record in enumerate(records)
    ]
    if not items:
        return
    start_ray(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    actors, gpus = pool_size(core, workers)
    log.info("%s on Ray: %d records, %d actors%s", stage, len(items), actors, " with a GPU each" * bool(gpus))
    blocks = max(1, -(-len(items) // batch_size))
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        StageActor,
        fn_constructor_kwargs={"core": core, "stage": stage},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0 if gpus else 1,
        num_gpus=gpus,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_TASK_RETRIES,
    )
    yield from in_order(_stream(dataset), len(items))


def _stream(dataset) -> Iterator[tuple[int, str]]:
    # Ray prints its workers' output on the driver's stdout: keep that for records
    with contextlib.redirect_stdout(sys.stderr):
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield from zip(batch["seq"].tolist(), batch["record"].tolist(), strict=True)


def in_order(pairs: Iterable[tuple[int, str]], count: int) -> Iterator[list[dict[str, Any]]]:
    """Reorder (seq, JSON record) pairs into runs of consecutive records; each seq exactly once."""
    pending: dict[int, str] = {}
    expected = 0
    for seq, text in pairs:
        if seq < expected or seq in pending:
            raise RuntimeError(f"record {seq} came back twice from the Ray workers")
        pending[seq] = text
        run = []
        while expected in pending:
            run.append(json.loads(pending.pop(expected)))
            expected += 1
        if run:
            yield run
    if expected != count:
        raise RuntimeError(f"{count - expected} of {count} records never came back from the Ray workers")
