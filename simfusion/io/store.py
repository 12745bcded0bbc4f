"""The HDF5 feature store: each view's encoder feature maps, row-aligned with ids, beside the catalog.

Layout of `features.h5`:
- root attributes `format`, `format_version`, `package_version`, `created`, `input_size` [H, W, C];
- `/catalog/ids` and `/catalog/records` (each record as a JSON string, same order), so a query can
  return an item's fields and business rules can filter on them;
- `/views/<view>/ids` row-aligned with `/views/<view>/features` float32 (N, h, w, c), chunked a few
  rows per chunk (reading one candidate's row is cheap) and compressed; the view's attributes say
  what produced it (`model`, `input_size`, `kind`, `objective`, `package_version`, `created`).

Every write goes to a temporary file in the same folder and is renamed over the store only when it
is complete, so a crash never leaves a broken store and readers see the old one or the new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import h5py
import numpy as np

from simfusion import __version__
from simfusion.io.atomic import atomic_path, ensure_space
from simfusion.io.records import record_id, record_json, to_json

log = logging.getLogger(__name__)

FORMAT = "simfusion-features"
FORMAT_VERSION = 1
STORE_NAME = "features.h5"
# Chunks of about this many bytes, one to MAX_CHUNK_ROWS rows: reading one row stays cheap.
CHUNK_BYTES = 64 * 1024
MAX_CHUNK_ROWS = 8
COMPRESSIONS = ("gzip", "lzf", None)

STRING_DTYPE = h5py.string_dtype(encoding="utf-8")


class StoreFormatError(ValueError):
    """A file that is not a feature store, or one written in another format version."""


def store_path(model_save_path: str | os.PathLike) -> str:
    """Where train.py writes the store: `<model_save_path>/features.h5`."""
    return os.path.join(os.fspath(model_save_path), STORE_NAME)


def store_version(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """Which file the store is now (None: there is none). Every writer replaces it whole, through
    a temporary file and a rename, so a reader that compares this before and after knows whether
    the store changed under it (fusion.py's rebuild does, under the write lock, before it saves)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _attr_value(value: Any) -> Any:
    """HDF5 attributes hold numbers, strings and arrays; dicts and None are stored as JSON text."""
    if value is None or isinstance(value, Mapping):
        return json.dumps(value, default=to_json)
    if isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
        return np.array([str(v) for v in value], dtype=STRING_DTYPE)
    return value


def _read_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_read_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _set_attrs(target: h5py.AttributeManager, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        target[key] = _attr_value(value)


def _chunk_rows(feature_shape: Sequence[int]) -> int:
    row_bytes = 4 * int(np.prod(feature_shape, dtype=np.int64))
    return int(np.clip(CHUNK_BYTES // max(row_bytes, 1), 1, MAX_CHUNK_ROWS))


class StoreWriter:
    """Write a new store batch by batch, so a catalog larger than memory can be encoded into it.

    Use as a context manager: the store appears at `path` (by rename) only on a clean exit; on an
    exception the temporary file is deleted and any old store at `path` is left untouched.

        with StoreWriter(path, attrs={"input_size": [128, 128, 3]}, catalog_records=records) as out:
            out.add_view("thumbnail", {"model": "thumbnail.keras", "kind": "autoencoder"}, (16, 16, 16))
            for ids, maps in batches:
                out.append("thumbnail", ids, maps)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        attrs: Mapping[str, Any] | None = None,
        catalog_records: Iterable[Mapping[str, Any]] | None = None,
        compression: str | None = "gzip",
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        self.path = os.fspath(path)
        self.compression = compression
        self._attrs = dict(attrs or {})
        self._catalog = catalog_records
        self._file: h5py.File | None = None
        self._tmp: str | None = None
        self._commit: contextlib.ExitStack | None = None
        self._seen: dict[str, set[str]] = {}
        self._chunk_bytes: dict[str, int] = {}
        self._catalog_ids: set[str] = set()

    def __enter__(self) -> StoreWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def open(self) -> None:
        self._commit = contextlib.ExitStack()
        self._tmp = self._commit.enter_context(atomic_path(self.path))
        try:
            self._file = h5py.File(self._tmp, "w")
            root = {"package_version": __version__, "created": now_iso(), **self._attrs}
            _set_attrs(self._file.attrs, root)
            # the format attributes are the writer's, never the caller's
            self._file.attrs["format"] = FORMAT
            self._file.attrs["format_version"] = FORMAT_VERSION
            catalog = self._file.create_group("catalog")
            for name in ("ids", "records"):
                catalog.create_dataset(name, shape=(0,), maxshape=(None,), dtype=STRING_DTYPE, chunks=(256,))
            self._file.create_group("views")
            if self._catalog is not None:
                self.add_records(self._catalog)
        except BaseException:
            self.abort()
            raise

    def _h5(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError("the store writer is not open: use it in a `with` block")
        return self._file

    def add_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append catalog records (each once, by `record_id`)."""
        ids, texts = [], []
        for record in records:
            key = record_id(record)
            if key in self._catalog_ids:
                raise ValueError(f"catalog id {key!r} is given twice; ids must be unique")
            self._catalog_ids.add(key)
            ids.append(key)
            texts.append(record_json(record))
        extend_strings(self._h5()["catalog/ids"], ids)
        extend_strings(self._h5()["catalog/records"], texts)

    def add_view(self, name: str, attrs: Mapping[str, Any], feature_shape: Sequence[int]) -> None:
        """Create an empty view whose rows are float32 feature maps of `feature_shape` (h, w, c)."""
        if not name or "/" in name:
            raise ValueError(f"a view name must be non-empty and have no '/', not {name!r}")
        views = self._h5()["views"]
        if name in views:
            raise ValueError(f"view {name!r} was already added")
        shape = tuple(int(v) for v in feature_shape)
        group = views.create_group(name)
        group.create_dataset("ids", shape=(0,), maxshape=(None,), dtype=STRING_DTYPE, chunks=(1024,))
        group.create_dataset(
            "features",
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype=np.float32,
            chunks=(_chunk_rows(shape), *shape),
            compression=self.compression,
            shuffle=self.compression is not None,
        )
        _set_attrs(group.attrs, {"package_version": __version__, "created": now_iso(), **attrs})
        self._seen[name] = set()
        self._chunk_bytes[name] = 4 * int(np.prod(group["features"].chunks, dtype=np.int64))

    def append(self, view: str, ids: Sequence[str], features: np.ndarray) -> None:
        """Append rows to a view; `ids` and `features` must have the same length."""
        if view not in self._seen:
            raise ValueError(f"unknown view {view!r}: call add_view first")
        group = self._h5()["views"][view]
        ids = [str(v) for v in ids]
        seen = self._seen[view]
        if len(set(ids)) < len(ids):
            raise ValueError(f"the ids appended to view {view!r} repeat an id; ids must be unique")
        clash = next((v for v in ids if v in seen), None)
        if clash is not None:
            raise ValueError(f"view {view!r} already holds id {clash!r}; ids must be unique")
        # HDF5 cannot recover from a failed write (its file closes badly and the process dies at
        # exit), so each batch must fit before it goes in, and is flushed to disk at once
        needed = np.asarray(features).nbytes + sum(self._chunk_bytes.values())
        ensure_space(os.path.dirname(os.path.abspath(self.path)), needed, what="the feature store")
        extend_view(group, ids, features)
        self._h5().flush()
        seen.update(ids)

    def commit(self) -> str:
        """Close the temporary file and rename it over `path`."""
        file = self._h5()
        try:
            if self._catalog_ids:
                for view, ids in self._seen.items():
                    missing = ids - self._catalog_ids
                    if missing:
                        raise ValueError(
                            f"view {view!r} holds ids that are not in the catalog, e.g. {min(missing)!r}"
                        )
            file.close()
            self._file = None
            self._commit.close()  # renames the temporary file over the store
            self._tmp = self._commit = None
        except BaseException:
            self.abort()
            raise
        log.info("feature store written: %s (%s)", self.path, ", ".join(self._seen) or "no views")
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; the old store, if any, stays."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
        if self._commit is not None:
            # leaving the atomic write through an exception deletes the temporary file
            self._commit.__exit__(RuntimeError, RuntimeError("store write aborted"), None)
            self._tmp = self._commit = None


def extend_strings(dataset: h5py.Dataset, values: Sequence[str]) -> None:
    if not values:
        return
    start = dataset.shape[0]
    dataset.resize((start + len(values),))
    dataset[start:] = np.array(values, dtype=object)


def extend_view(group: h5py.Group, ids: Sequence[str], features: np.ndarray) -> None:
    dataset = group["features"]
    array = np.asarray(features, dtype=np.float32)
    if array.ndim == len(dataset.shape) - 1 and len(ids) == 1:
        array = array[None]
    if array.shape[1:] != dataset.shape[1:]:
        raise ValueError(
            f"features of shape {array.shape[1:]} do not fit view rows of shape {dataset.shape[1:]}"
        )
    if len(array) != len(ids):
        raise ValueError(f"{len(ids)} ids for {len(array)} feature rows; they must be row-aligned")
    if not len(ids):
        return
    start = dataset.shape[0]
    dataset.resize((start + len(ids), *dataset.shape[1:]))
    dataset[start:] = array
    extend_strings(group["ids"], list(ids))


def write_store(
    path: str | os.PathLike,
    *,
    catalog_records: Iterable[Mapping[str, Any]],
    views: Mapping[str, tuple[Sequence[str], np.ndarray, Mapping[str, Any]]],
    attrs: Mapping[str, Any] | None = None,
    compression: str | None = "gzip",
) -> str:
    """Write a whole store at once: `views` maps a view name to (ids, features (N, h, w, c), attrs)."""
    with StoreWriter(path, attrs=attrs, catalog_records=catalog_records, compression=compression) as out:
        for name, (ids, features, view_attrs) in views.items():
            array = np.asarray(features, dtype=np.float32)
            out.add_view(name, view_attrs, array.shape[1:])
            out.append(name, ids, array)
    return os.fspath(path)


class FeatureStore:
    """Read a store: views, ids, feature rows (lazily, by rows or batches), catalog records, attributes.

    Checks the format version on opening (`check=False` to inspect an old store). Use as a context
    manager, or call `close()`.
    """

    def __init__(self, path: str | os.PathLike, *, check: bool = True) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no feature store at {self.path}: run train.py first")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreFormatError(f"{self.path} is not a readable HDF5 feature store: {exc}") from exc
        self._ids: dict[str, list[str]] = {}
        if check:
            try:
                self.check_version()
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def check_version(self) -> None:
        """Raise StoreFormatError unless this is a store of the format version this package reads."""
        attrs = self._file.attrs
        if _read_attr(attrs.get("format")) != FORMAT:
            raise StoreFormatError(
                f"{self.path} is not a simfusion feature store (no format={FORMAT!r} attribute)"
            )
        version = _read_attr(attrs.get("format_version"))
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.path} is a feature store of format version {version}, written by simfusion "
                f"{_read_attr(attrs.get('package_version'))}; this simfusion ({__version__}) reads version "
                f"{FORMAT_VERSION}. Rebuild it with train.py, or use the simfusion version that wrote it."
            )

    @property
    def h5(self) -> h5py.File:
        """The open HDF5 file, for the store's own editing functions (simfusion.io.store_edit)."""
        return self._file

    @property
    def views(self) -> list[str]:
        return list(self._file["views"].keys())

    def _view(self, view: str) -> h5py.Group:
        if view not in self._file["views"]:
            raise KeyError(f"the store has no view {view!r}; it has {', '.join(self.views) or 'none'}")
        return self._file["views"][view]

    def ids(self, view: str) -> list[str]:
        """The ids of a view's rows, in row order."""
        if view not in self._ids:
            self._ids[view] = list(self._view(view)["ids"].asstr()[:])
        return list(self._ids[view])

    def rows(self, view: str, ids: Iterable[str]) -> np.ndarray:
        """Row numbers of `ids` in a view (KeyError for an id it does not hold)."""
        index = {key: row for row, key in enumerate(self.ids(view))}
        return np.array([index[key] for key in ids], dtype=np.int64)

    def shape(self, view: str) -> tuple[int, ...]:
        """(N, h, w, c) of a view's features."""
        return tuple(self._view(view)["features"].shape)

    def dataset(self, view: str) -> h5py.Dataset:
        """The view's features as a lazy h5py dataset (slicing reads only what it asks for)."""
        return self._view(view)["features"]

    def features(self, view: str, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Feature maps float32 of the given rows, in the given order (all rows when None)."""
        dataset = self.dataset(view)
        if rows is None:
            return dataset[:]
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not len(rows):
            return np.zeros((0, *dataset.shape[1:]), np.float32)
        if rows.min() < 0 or rows.max() >= dataset.shape[0]:
            raise IndexError(f"rows must be in 0..{dataset.shape[0] - 1}")
        # h5py wants increasing, unique indices: read those, then put them back in the asked order
        unique, inverse = np.unique(rows, return_inverse=True)
        return dataset[unique][inverse]

    def batches(self, view: str, *, batch_size: int = 1024) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield (ids, features) of a view in row order, `batch_size` rows at a time."""
        ids, dataset = self.ids(view), self.dataset(view)
        for start in range(0, dataset.shape[0], batch_size):
            yield ids[start : start + batch_size], dataset[start : start + batch_size]

    def record_ids(self) -> list[str]:
        return list(self._file["catalog/ids"].asstr()[:])

    def records(self) -> list[dict[str, Any]]:
        """The catalog records, in catalog order."""
        return [json.loads(text) for text in self._file["catalog/records"].asstr()[:]]

    def iter_records(self, *, batch_size: int = 256) -> Iterator[dict[str, Any]]:
        """The catalog records in catalog order, read and decoded `batch_size` at a time, so a
        caller that stops early reads only what it looked at."""
        texts = self._file["catalog/records"]
        for start in range(0, texts.shape[0], batch_size):
            yield from (json.loads(text) for text in texts.asstr()[start : start + batch_size])

    def records_at(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        """The catalog records at these rows (increasing), reading only those."""
        if not len(rows):
            return []
        return [json.loads(text) for text in self._file["catalog/records"].asstr()[np.asarray(rows)]]

    def attrs(self, view: str | None = None) -> dict[str, Any]:
        """The store's root attributes, or a view's attributes."""
        source = self._file.attrs if view is None else self._view(view).attrs
        return {key: _read_attr(value) for key, value in source.items()}
