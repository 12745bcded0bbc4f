"""What the HTTP service does, without HTTP: one open Catalog shared by concurrent requests.

Searches hold a shared (read) lock and run side by side; an add or a remove holds the exclusive
(write) lock for its whole change, so a search sees the catalog wholly before or wholly after it,
never a store and an index of different versions. Catalog.add and Catalog.remove write the new
store and index beside the old ones and rename them in (simfusion.io.atomic), so a process killed
during a change keeps the old catalog, and an acknowledged change is on disk.

Uploaded images of added items are kept under `<model_save_path>/uploads/`, named by a hash of
the item's id (never by a name the client chose).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from simfusion.io.atomic import remove_quietly, write_bytes
from simfusion.io.images import ImageError, decode_image, load_image
from simfusion.io.records import field_text, record_id, set_error
from simfusion.io.store import FeatureStore, store_path
from simfusion.search.catalog import Catalog
from simfusion.search.duplicates import find_duplicates
from simfusion.views.saliency import VIEW_NAMES as SALIENCY_VIEWS

log = logging.getLogger(__name__)

STAGE = "serve"
UPLOADS = "uploads"
# keys of a record that name server files: a client may not set them, and no answer shows them (items
# are named by id; GET /items/{id}/image has the picture); the saliency stage's views name files too
PATH_KEYS = ("image", "path", "image_path", "thumbnail")
HIDDEN_KEYS = (*PATH_KEYS, *SALIENCY_VIEWS)
PICTURE_SIZE = 256  # largest side of the pictures GET /items/{id}/image answers with
# an upload's pixel cap (the stages take 100 MP): a 48-MP phone photo passes, and no one request
# can take a gigabyte of memory
MAX_UPLOAD_PIXELS = 50_000_000
# A larger JPEG query decodes at 1/2, 1/4 or 1/8 scale, each side still at least this (guided crops
# are cut at 1024 px anyway). Scene queries at 2560 px (150, JPEG 90): P@10 0.5287 decoded at 2048 px
# or more, 0.5267 at 1024 or more, 1.34 -> 1.26 s a query; a 24 MP photo's peak memory 406 -> 142 MiB.
QUERY_SIDE = 1024


class ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before readers that come after it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


@dataclass
class Upload:
    """One image of POST /items: its record (as the client sent it) and the file's bytes."""

    record: dict[str, Any]
    data: bytes


class Service:
    """The open catalog behind the endpoints; every method is safe to call from many threads."""

    def __init__(self, catalog: Catalog, *, uploads: str | None = None) -> None:
        self.catalog = catalog
        self.lock = ReadWriteLock()
        self.uploads = uploads or os.path.join(catalog.path, UPLOADS)
        self._categories: dict[str, list[str]] = {}

    # ------------------------------------------------------------------------------ reading
    def size(self) -> int:
        return len(self.catalog)

    def views(self) -> list[str]:
        return self.catalog.views

    def warm(self) -> str | None:
        """Load the detector, HED and the encoders with one search of a blank image, so the first
        request is not the slow one. Returns why image search is unavailable, or None."""
        try:
            self.search_image(np.full((64, 64, 3), 255, np.uint8), {}, {"k": 1})
        except Exception as exc:  # a catalog without its trained encoders still answers search by id
            log.warning("%s: image search is unavailable: %s", STAGE, exc)
            return str(exc)
        return None

    def search_image(
        self, image: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        with self.lock.read():
            return public(self.catalog.search_images([image], [dict(record)], **options)[0])

    def search_upload(
        self, data: bytes, record: Mapping[str, Any], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Decode an upload (ImageError when it is not a readable image) and search with it."""
        image = decode_image(data, channels=3, max_pixels=MAX_UPLOAD_PIXELS, reduce_to=QUERY_SIDE)
        return self.search_image(image, record, options)

    def search_id(self, key: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """More like catalog item `key` (KeyError when the catalog has no such item)."""
        with self.lock.read():
            return public(self.catalog.search_ids([key], **options)[0])

    def record(self, key: str) -> dict[str, Any] | None:
        with self.lock.read():
            found = self.catalog.record(key)
        return None if found is None else public(found)

    def image_path(self, key: str) -> str | None:
        with self.lock.read():
            return self.catalog.image_path(key)

    def picture(self, key: str, *, size: int = PICTURE_SIZE) -> bytes | None:
        """Item `key`'s picture as PNG bytes, at most `size` pixels a side; None when it has none.
        The path comes from the catalog's record (simfusion.io.montage), never from a request."""
        path = self.image_path(key)
        if path is None:
            return None
        try:
            stamp = os.stat(path)
        except OSError:
            return None
        return _picture(path, stamp.st_mtime_ns, stamp.st_size, size)

    def categories(self, key: str = "category") -> list[str]:
        """The distinct values of a record field over the catalog, sorted (read once per version);
        ValueError for a field that names server files."""
        if key in HIDDEN_KEYS:
            raise ValueError(f"{key!r} names server files, not categories")
        with self.lock.read():
            if key not in self._categories:
                with FeatureStore(store_path(self.catalog.path)) as store:
                    found = {field_text(record.get(key)) for record in store.records()}
                self._categories[key] = sorted(value for value in found if value)
            return list(self._categories[key])

    def duplicates(self, **options: Any) -> dict[str, list[list[Any]]]:
        with self.lock.read():
            return find_duplicates(self.catalog, **options)

    # ------------------------------------------------------------------------------ changes
    def add(self, uploads: Sequence[Upload]) -> list[dict[str, Any]]:
        """Add uploaded images with their records; each comes back `indexed` or with an `error`."""
        with self.lock.write():
            records, written, seen = [], {}, set()
            for upload in uploads:
                record = self._prepare(upload, seen)
                if "error" not in record:
                    written[id(record)] = write_bytes(
                        os.path.join(self.uploads, record["image"]), upload.data
                    )
                records.append(record)
            try:
                out = self.catalog.add(records, base_path=self.uploads, stage=STAGE)
            except BaseException:
                for path in written.values():
                    remove_quietly(path)
                raise
            finally:
                self._categories.clear()
            for before, after in zip(records, out, strict=True):
                if "error" in after and id(before) in written:
                    remove_quietly(written[id(before)])
            return [public(record) for record in out]

    def remove(self, ids: Sequence[str]) -> dict[str, Any]:
        """Remove items; an upload kept for one of them is deleted once it is out of the catalog."""
        with self.lock.write():
            records = self.catalog.records(ids)
            summary = self.catalog.remove(ids)
            self._categories.clear()
            folder = os.path.abspath(self.uploads)
            for key in summary["ids"]:
                path = (records.get(key) or {}).get("image_path")
                if isinstance(path, str) and os.path.dirname(os.path.abspath(path)) == folder:
                    remove_quietly(path)
            return summary

    def _prepare(self, upload: Upload, seen: set[str]) -> dict[str, Any]:
        record = {key: value for key, value in upload.record.items() if key not in HIDDEN_KEYS}
        try:
            key = record_id(record)
        except ValueError:
            return set_error(record, STAGE, "the record has no id")
        if key in self.catalog or key in seen:
            return set_error(record, STAGE, f"id {key!r} is already in the catalog; remove it first")
        seen.add(key)
        try:
            decode_image(upload.data, channels=3, max_pixels=MAX_UPLOAD_PIXELS, reduce_to=QUERY_SIDE)
            with Image.open(io.BytesIO(upload.data)) as image:
                suffix = "." + (image.format or "png").lower()
        except (ValueError, OSError) as exc:
            return set_error(record, STAGE, exc)
        record["image"] = upload_name(key, suffix)
        return record


@functools.lru_cache(maxsize=1024)
def _picture(path: str, mtime_ns: int, nbytes: int, size: int) -> bytes | None:
    try:
        image = Image.fromarray(load_image(path, channels=3))
    except ImageError as exc:
        log.warning("%s: %s", STAGE, exc)
        return None
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def upload_name(key: str, suffix: str) -> str:
    """The file name an added item's upload is kept under: a hash of its id, never a client's name."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + suffix


def public(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A record, or an answer and its hits, without the keys that name server files."""
    out = {key: value for key, value in answer.items() if key not in HIDDEN_KEYS}
    if isinstance(out.get("results"), list):
        out["results"] = [public(hit) if isinstance(hit, Mapping) else hit for hit in out["results"]]
    return out
