"""Changes to an existing feature store: append items, remove ids; each rewrites a copy and renames it over
the store, so a crash leaves the old store or the new one."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from simfusion.io.atomic import atomic_path, ensure_space
from simfusion.io.records import record_id, record_json
from simfusion.io.store import STRING_DTYPE, FeatureStore, extend_strings, extend_view, now_iso

log = logging.getLogger(__name__)


def _update_copy(path: str, change, *, extra_bytes: int = 0) -> Any:
    """Copy the store to a temporary file, apply `change(file)`, rename it over the store."""
    with FeatureStore(path):
        pass  # refuse to change a store of another format
    ensure_space(
        os.path.dirname(os.path.abspath(path)),
        os.path.getsize(path) + extra_bytes,
        what="the feature store's update",
    )
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as file:
            result = change(file)
            file.attrs["modified"] = now_iso()
    return result


def append_items(
    path: str | os.PathLike,
    *,
    views: Mapping[str, tuple[Sequence[str], np.ndarray]],
    records: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Add rows to several views and their records to the catalog, in one atomic update.

    An id a view already holds is a ValueError (remove it first); an id with no catalog record
    and none given gets a minimal {"id": ...} record, so every view id is in the catalog.
    """
    path = os.fspath(path)
    records = list(records)

    def change(file: h5py.File) -> None:
        catalog_ids = set(file["catalog/ids"].asstr()[:])
        new_records = []
        for record in records:
            key = record_id(record)
            if key not in catalog_ids:
                catalog_ids.add(key)
                new_records.append((key, record_json(record)))
        for view, (ids, features) in views.items():
            if view not in file["views"]:
                raise KeyError(f"the store has no view {view!r}; it has {', '.join(file['views']) or 'none'}")
            group = file["views"][view]
            held = set(group["ids"].asstr()[:])
            ids = [str(v) for v in ids]
            clash = [v for v in ids if v in held]
            if clash or len(set(ids)) < len(ids):
                raise ValueError(f"view {view!r} already holds id {(clash or ids)[0]!r}; remove it first")
            extend_view(group, ids, features)
            for key in ids:
                if key not in catalog_ids:
                    catalog_ids.add(key)
                    new_records.append((key, record_json({"id": key})))
        extend_strings(file["catalog/ids"], [key for key, _ in new_records])
        extend_strings(file["catalog/records"], [text for _, text in new_records])

    _update_copy(path, change, extra_bytes=sum(np.asarray(f).nbytes for _, f in views.values()))


def append_rows(
    path: str | os.PathLike,
    view: str,
    ids: Sequence[str],
    features: np.ndarray,
    *,
    records: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Add rows to one view (and their records to the catalog), atomically. See `append_items`."""
    append_items(path, views={view: (ids, features)}, records=records)


def remove_ids(path: str | os.PathLike, ids: Iterable[str], *, batch_size: int = 1024) -> int:
    """Remove these ids from every view and from the catalog, atomically; returns how many were held.

    Rows are copied in batches to a new file (HDF5 cannot shrink a dataset in place without
    leaving its space unused), so memory stays flat for a large store.
    """
    path = os.fspath(path)
    drop = {str(v) for v in ids}
    ensure_space(
        os.path.dirname(os.path.abspath(path)), os.path.getsize(path), what="the feature store's update"
    )
    with FeatureStore(path) as store:
        removed: set[str] = set()
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
            for key, value in store.h5.attrs.items():
                out.attrs[key] = value
            out.attrs["modified"] = now_iso()
            catalog_ids = store.record_ids()
            keep = [i for i, key in enumerate(catalog_ids) if key not in drop]
            removed.update(key for key in catalog_ids if key in drop)
            catalog = out.create_group("catalog")
            for name in ("ids", "records"):
                values = store.h5["catalog"][name].asstr()[:]
                catalog.create_dataset(
                    name,
                    data=np.array(values[keep], dtype=object),
                    dtype=STRING_DTYPE,
                    maxshape=(None,),
                    chunks=(256,),
                )
            views = out.create_group("views")
            for view in store.views:
                source = store.h5["views"][view]
                group = views.create_group(view)
                for key, value in source.attrs.items():
                    group.attrs[key] = value
                old = source["features"]
                group.create_dataset("ids", shape=(0,), maxshape=(None,), dtype=STRING_DTYPE, chunks=(1024,))
                group.create_dataset(
                    "features",
                    shape=(0, *old.shape[1:]),
                    maxshape=(None, *old.shape[1:]),
                    dtype=old.dtype,
                    chunks=old.chunks,
                    compression=old.compression,
                    compression_opts=old.compression_opts,
                    shuffle=old.shuffle,
                )
                for batch_ids, batch in store.batches(view, batch_size=batch_size):
                    mask = np.array([key not in drop for key in batch_ids], dtype=bool)
                    removed.update(key for key, kept in zip(batch_ids, mask, strict=True) if not kept)
                    extend_view(
                        group,
                        [key for key, kept in zip(batch_ids, mask, strict=True) if kept],
                        batch[mask],
                    )
    missing = len(drop - removed)
    if missing:
        log.warning("remove: %d of %d ids were not in the store", missing, len(drop))
    return len(removed)
