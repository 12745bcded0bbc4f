"""The index on disk: one folder, committed by one atomic rename of its `index.json`, read back with the
format checked and every failure turned into an IndexFileError that says what to do."""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from typing import Any

import numpy as np

from simfusion import __version__
from simfusion.io.atomic import TEMP_PREFIX, atomic_path, ensure_space, remove_quietly, write_json
from simfusion.search.faiss_index import FAISS_KINDS, read_faiss_index, write_faiss_index
from simfusion.search.index import (
    INDEX_FORMAT,
    INDEX_FORMAT_VERSION,
    META_FILE,
    PARAMS_FILE,
    CatalogIndex,
    IndexFileError,
)
from simfusion.search.vectors import FUSIONS


def save_index(index: CatalogIndex, folder: str | os.PathLike) -> str:
    """Write the index into its folder; `index.json` is the commit point.

    The FAISS parts and the params are written under names of a new generation (one above every
    generation the folder holds, so a save never writes over a file the live index names) beside
    the old ones, then `index.json`, which names them, is replaced atomically (one rename), then
    the old generation's files are deleted. A kill or a full disk at any step leaves the old index
    or the new one, complete, and never a folder without an index; a failed save removes what it
    wrote.
    """
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(folder, exist_ok=True)
    live = live_meta(folder)  # read once: index.json lists every id, and can be large
    ensure_space(folder, save_bytes(folder, live, len(index.ids) + len(index.removed)), what="the index")
    generation = next_generation(folder, index.meta, live)
    files = {name: f"part-{number}.g{generation}.faiss" for number, name in enumerate(index.parts)}
    params_file = f"params.g{generation}.npz"
    written: list[str] = []
    try:
        for name, part in index.parts.items():
            written.append(os.path.join(folder, files[name]))
            with atomic_path(written[-1]) as tmp:
                write_faiss_index(part, tmp)
        written.append(os.path.join(folder, params_file))
        with atomic_path(written[-1]) as tmp, open(tmp, "wb") as out:
            np.savez(out, **index.params)
        meta = {
            **index.meta,
            "generation": generation,
            "parts": files,
            "params": params_file,
            "count": len(index.ids),
            "ids": index.ids,
            "labels": index.labels.tolist(),
            "removed": sorted(index.removed),
        }
        write_json(os.path.join(folder, META_FILE), meta, indent=None)
    except BaseException:
        for path in written:
            remove_quietly(path)
        raise
    index.meta["generation"] = generation
    remove_unreferenced(folder, keep={META_FILE, params_file, *files.values()})
    return folder


_GENERATION = re.compile(r"^(?:part-\d+|params)\.g(\d+)\.")


def live_meta(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's committed `index.json`, or None where there is no readable one."""
    try:
        return read_meta(folder)
    except IndexFileError:
        return None


def next_generation(folder: str, meta: dict[str, Any], live: dict[str, Any] | None) -> int:
    """One above the generation of `meta`, of the folder's committed index (`live`) and of any file
    an interrupted save left there: a fresh build (generation 0 in memory) never reuses the names
    the live index reads."""
    seen = [int(meta.get("generation", 0))]
    with contextlib.suppress(AttributeError, ValueError, TypeError):
        seen.append(int(live.get("generation", 0)))
    for name in os.listdir(folder):
        match = _GENERATION.match(name)
        if match:
            seen.append(int(match.group(1)))
    return max(seen) + 1


def save_bytes(folder: str | os.PathLike, live: dict[str, Any] | None, count: int) -> int:
    """About the bytes a save of `count` items writes beside the live index (`live`, its
    `index.json`): the live generation's files, scaled by the change in items (0 where there is no
    readable index yet)."""
    try:
        names = [*live["parts"].values(), live.get("params", PARAMS_FILE)]
        size = sum(os.path.getsize(os.path.join(os.fspath(folder), name)) for name in names)
        held = int(live.get("count", 0)) + len(live.get("removed", []))
    except (OSError, KeyError, AttributeError, TypeError, ValueError):
        return 0
    return int(size * max(count, 1) / max(held, 1))


def remove_unreferenced(folder: str, *, keep: set[str]) -> None:
    """Delete what an older generation or an interrupted save left in the index folder."""
    for name in os.listdir(folder):
        if name not in keep and (name.startswith(("part-", "params", TEMP_PREFIX))):
            remove_quietly(os.path.join(folder, name))


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """The index folder's `index.json`, checked for format and version."""
    path = os.path.join(os.fspath(folder), META_FILE)
    if not os.path.exists(path):
        raise IndexFileError(
            f"no index at {os.fspath(folder)}: build it with fusion.py --model_save_path ..."
        )
    try:
        with open(path, encoding="utf-8") as stream:
            meta = json.load(stream)
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexFileError(f"cannot read {path}: {exc}; rebuild it with fusion.py") from exc
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        raise IndexFileError(f"{path} is not a simfusion index; rebuild it with fusion.py")
    if meta.get("format_version") != INDEX_FORMAT_VERSION:
        raise IndexFileError(
            f"{path} has index format version {meta.get('format_version')!r}, this program reads "
            f"{INDEX_FORMAT_VERSION} (written by simfusion {meta.get('package_version')}, this is "
            f"{__version__}); rebuild it with fusion.py"
        )
    return meta


def load_index(folder: str | os.PathLike, *, mmap: bool = False, attempts: int = 3) -> CatalogIndex:
    """Read an index folder written by `save_index`; IndexFileError says what is wrong and what to do.

    `mmap` maps the IVF kinds' inverted lists from disk instead of reading them (for serving: the
    page cache is shared between processes; such an index can search but not add or remove).
    A writer may commit a new generation (and delete the old one's files) while this reads: the
    read then starts again from the new `index.json`.
    """
    folder = os.fspath(folder)
    for attempt in range(attempts):
        generation = read_meta(folder).get("generation")
        try:
            return _load_generation(folder, mmap=mmap)
        except (IndexFileError, FileNotFoundError):
            if attempt == attempts - 1 or read_meta(folder).get("generation") == generation:
                raise
    raise AssertionError("unreachable")


def read_params(folder: str | os.PathLike, name: str = PARAMS_FILE) -> dict[str, np.ndarray]:
    """The fitted arrays of an index (`name`: the params file its meta names)."""
    path = os.path.join(os.fspath(folder), name)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise IndexFileError(f"cannot read {path} ({exc}); rebuild the index with fusion.py") from exc


def _load_generation(folder: str, *, mmap: bool) -> CatalogIndex:
    meta = read_meta(folder)
    wrong = meta_problem(meta)
    if wrong:
        path = os.path.join(folder, META_FILE)
        raise IndexFileError(f"{path} is damaged ({wrong}); rebuild the index with fusion.py")
    ids, labels = meta.pop("ids"), np.asarray(meta.pop("labels"), dtype=np.int64)
    removed = set(meta.pop("removed", []))
    files = meta.pop("parts")
    meta.pop("count", None)
    params = read_params(folder, meta.pop("params", PARAMS_FILE))
    parts = {}
    for name, file in files.items():
        path = os.path.join(folder, file)
        if not os.path.exists(path):
            raise IndexFileError(f"index part {path} is missing; rebuild the index with fusion.py")
        try:
            parts[name] = read_faiss_index(path, kind=meta["kind"], mmap=mmap)
        except RuntimeError as exc:  # FAISS's own error for a truncated or foreign file
            reason = str(exc).strip().splitlines()[-1][:200]
            raise IndexFileError(
                f"cannot read index part {path} ({reason}); rebuild the index with fusion.py"
            ) from exc
        if parts[name].ntotal != len(ids) + len(removed):
            raise IndexFileError(
                f"index part {path} holds {parts[name].ntotal} items, index.json lists {len(ids)}; "
                "rebuild the index with fusion.py"
            )
    return CatalogIndex(meta=meta, params=params, parts=parts, ids=list(ids), labels=labels, removed=removed)


def meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with an `index.json` that parses (None: nothing found): the keys a reader
    relies on, with their types; a hand edit or a foreign writer gave tracebacks before."""
    views = meta.get("views")
    if not isinstance(views, list) or not views or not all(isinstance(v, str) for v in views):
        return "`views` is not a list of view names"
    checks = (
        (
            "weights",
            lambda w: all(
                isinstance(w.get(v), (int, float)) and not isinstance(w.get(v), bool) for v in views
            ),
        ),  # fmt: skip
        ("dims", lambda d: all(isinstance(d.get(v), int) for v in views)),
        ("parts", lambda p: all(isinstance(k, str) and isinstance(f, str) for k, f in p.items())),
    )
    for key, good in checks:
        if not isinstance(meta.get(key), dict) or not good(meta[key]):
            return f"`{key}` does not give every view"
    if meta.get("fusion") not in FUSIONS or meta.get("kind") not in FAISS_KINDS:
        return "`fusion` or `kind` is not one this program knows"
    ids, labels = meta.get("ids"), meta.get("labels")
    if not isinstance(ids, list) or not all(isinstance(key, str) for key in ids):
        return "`ids` is not a list of ids"
    if not isinstance(labels, list) or len(labels) != len(ids) or not all(type(v) is int for v in labels):
        return "`labels` is not one whole number an id"
    if not isinstance(meta.get("params", PARAMS_FILE), str) or not isinstance(meta.get("store", {}), dict):
        return "`params` or `store` has the wrong type"
    if not isinstance(meta.get("removed", []), list) or not isinstance(meta.get("clusters") or {}, dict):
        return "`removed` or `clusters` has the wrong type"
    return _scene_problem(meta.get("scene"), views)


def _scene_problem(scene: Any, views: list[str]) -> str | None:
    """What is wrong with the scene profile's entry (simfusion.search.scene), None where it is good."""
    if scene is None:
        return None
    weights = scene.get("weights") if isinstance(scene, dict) else None
    if not isinstance(weights, dict) or not weights or not set(weights) <= set(views):
        return "`scene` does not give weights of the index's views"
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights.values()):
        return "`scene` weights must be numbers > 0"
    return None
