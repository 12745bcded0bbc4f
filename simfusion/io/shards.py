"""The feature store at scale: workers write HDF5 shards, one merge writes `features.h5`.

The catalog is cut into shards of `shard_size` records, in order. Each shard is itself a feature
store (`shards/features-00012.h5`) written atomically by whichever worker encodes it, so a shard
file exists only when it is complete. A run that fails part-way leaves the finished shards; the
next run redoes only the missing ones (`missing_shards`). `merge_shards` then streams the shards,
`batch_size` rows at a time, into one store written through the atomic writer, so the merge's
memory stays flat in the catalog's size and readers see the old store or the whole new one.

A shard's encoder is a `StageCore` whose function takes one shard's records and returns
{view: (ids, features, attrs)}; with the `ray` distributor each Ray worker builds it once.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from simfusion.io.records import record_id
from simfusion.io.stage import StageCore, run_stage
from simfusion.io.store import FeatureStore, StoreFormatError, StoreWriter, write_store

log = logging.getLogger(__name__)

SHARD_FOLDER = "shards"
SHARD_SIZE = 10_000
STAGE = "shards"
# root attributes every store writer sets itself
OWN_ATTRS = ("format", "format_version", "package_version", "created")

Views = dict[str, tuple[Sequence[str], np.ndarray, Mapping[str, Any]]]


def shard_path(folder: str | os.PathLike, number: int) -> str:
    return os.path.join(os.fspath(folder), SHARD_FOLDER, f"features-{number:05d}.h5")


def shard_count(count: int, shard_size: int) -> int:
    return max(1, -(-count // shard_size))


def missing_shards(folder: str | os.PathLike, shards: int) -> list[int]:
    """The shards not yet written (or unreadable, which are redone too)."""
    missing = []
    for number in range(shards):
        path = shard_path(folder, number)
        try:
            with FeatureStore(path):
                pass
        except (OSError, StoreFormatError):
            missing.append(number)
    return missing


def write_shard(
    records: list[dict[str, Any]],
    *,
    folder: str,
    encode: Callable[[list[dict[str, Any]]], Views],
    attrs: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Batch core: encode the records of each shard task ({shard, records}) and write its store."""
    for task in records:
        views = encode(task["records"])
        catalog = [{k: v for k, v in record.items() if k != "features"} for record in task["records"]]
        write_store(shard_path(folder, task["shard"]), catalog_records=catalog, views=views, attrs=attrs)
        task["rows"] = len(catalog)
        del task["records"]
    return records


def write_shards(
    records: Sequence[dict[str, Any]],
    folder: str | os.PathLike,
    encoder: StageCore,
    *,
    shard_size: int = SHARD_SIZE,
    attrs: Mapping[str, Any] | None = None,
    distributor: str = "local",
    ray_address: str | None = None,
) -> list[int]:
    """Encode and write every missing shard of `records`; returns the shard numbers written.

    `encoder` builds (on each worker) a function records -> {view: (ids, features, attrs)}.
    """
    import io
    import json

    from simfusion.io.records import to_json

    folder = os.fspath(folder)
    shards = shard_count(len(records), shard_size)
    todo = missing_shards(folder, shards)
    log.info("%d of %d shards to write under %s", len(todo), shards, os.path.join(folder, SHARD_FOLDER))
    if not todo:
        return []
    tasks = io.StringIO()
    for number in todo:
        part = list(records[number * shard_size : (number + 1) * shard_size])
        tasks.write(json.dumps({"id": f"shard-{number}", "shard": number, "records": part}, default=to_json))
        tasks.write("\n")
    tasks.seek(0)
    core = StageCore(
        write_shard,
        {"folder": folder, "attrs": dict(attrs or {})},
        models={"encode": (StageCore.build, {"self": encoder})},
    )
    out = io.StringIO()
    run_stage(
        core,
        stage=STAGE,
        batch_size=1,
        stdin=tasks,
        stdout=out,
        progress=False,
        distributor=distributor,
        ray_address=ray_address,
    )
    return todo


def merge_shards(
    folder: str | os.PathLike, shards: int, target: str | os.PathLike, *, batch_size: int = 1024
) -> str:
    """Stream shards 0..shards-1 into one store at `target` (atomic), rows in shard order."""
    folder = os.fspath(folder)
    paths = [shard_path(folder, number) for number in range(shards)]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) missing, e.g. {missing[0]}: run the encoding again")
    with FeatureStore(paths[0]) as first:
        root = {k: v for k, v in first.attrs().items() if k not in OWN_ATTRS}
        views = {view: (first.attrs(view), first.shape(view)[1:]) for view in first.views}
    with StoreWriter(target, attrs=root) as out:
        for view, (view_attrs, shape) in views.items():
            out.add_view(view, {k: v for k, v in view_attrs.items() if k not in OWN_ATTRS}, shape)
        for path in paths:
            with FeatureStore(path) as shard:
                out.add_records(shard.records())
                for view in views:
                    for ids, features in shard.batches(view, batch_size=batch_size):
                        out.append(view, ids, features)
    log.info("merged %d shards into %s", shards, os.fspath(target))
    return os.fspath(target)


def build_store(
    records: Sequence[dict[str, Any]],
    folder: str | os.PathLike,
    encoder: StageCore,
    *,
    target: str | os.PathLike,
    shard_size: int = SHARD_SIZE,
    attrs: Mapping[str, Any] | None = None,
    distributor: str = "local",
    ray_address: str | None = None,
    keep_shards: bool = False,
) -> str:
    """Write the missing shards, merge them into `target`, then drop the shards (unless kept)."""
    ids = [record_id(record) for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("catalog ids must be unique")
    write_shards(
        records,
        folder,
        encoder,
        shard_size=shard_size,
        attrs=attrs,
        distributor=distributor,
        ray_address=ray_address,
    )
    merge_shards(folder, shard_count(len(records), shard_size), target)
    if not keep_shards:
        shutil.rmtree(os.path.join(os.fspath(folder), SHARD_FOLDER), ignore_errors=True)
    return os.fspath(target)
