"""Image records: the JSON objects every stage reads on stdin and writes on stdout."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

log = logging.getLogger(__name__)

ID_KEYS = ("id", "image_id")
PATH_KEYS = ("image", "path")


class RecordError(ValueError):
    """A record that cannot be processed: becomes its `error`, never a crash."""


def parse_records(stream: IO[str]) -> Iterator[dict[str, Any]]:
    """Yield records from JSON lines or from one JSON array.

    A line that is not valid JSON, or not an object, is logged with its line number and skipped.
    """
    first = ""
    for first in stream:
        if first.strip():
            break
    else:
        return
    if first.lstrip().startswith("["):
        text = first + stream.read()
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            log.error("input: bad JSON array at line %d: %s", exc.lineno, exc.msg)
            return
        for number, item in enumerate(items, 1):
            if isinstance(item, dict):
                yield item
            else:
                log.error("input: array item %d is not a JSON object; skipped", number)
        return
    lines = _chain_first(first, stream)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            log.error("input: line %d is not valid JSON (%s); skipped", number, exc.msg)
            continue
        if not isinstance(item, dict):
            log.error("input: line %d is not a JSON object; skipped", number)
            continue
        yield item


def _chain_first(first: str, stream: IO[str]) -> Iterator[str]:
    yield first
    yield from stream


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a whole records file (JSON lines or a JSON array)."""
    with open(path, encoding="utf-8") as stream:
        return list(parse_records(stream))


def record_id(record: dict[str, Any]) -> str:
    """The record's id: `id`, else the prototype's `image_id`, else its image path."""
    for key in ID_KEYS:
        if record.get(key) not in (None, ""):
            return str(record[key])
    return record_path(record)


def record_path(record: dict[str, Any]) -> str:
    """The record's image path, relative to the stage's base folder (`image`, else `path`)."""
    for key in PATH_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    raise RecordError("record has no image path (`image` or `path`)")


def output_relpath(record: dict[str, Any]) -> str:
    """Where a stage writes this record's output, relative to its output folder.

    The record's own relative path, so the next stage finds it with `--base_image_path`; a path
    that is absolute or climbs out of the base folder falls back to a name made from the id.
    """
    rel = os.path.normpath(record_path(record))
    if os.path.isabs(rel) or rel.startswith(".."):
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in record_id(record))
        rel = stem + (os.path.splitext(rel)[1] or ".png")
    return rel


def set_error(record: dict[str, Any], stage: str, cause: object) -> dict[str, Any]:
    """Mark a record as failed in `stage`; later stages pass it through untouched."""
    record["error"] = f"{stage}: {cause}"
    return record


def mark_duplicates(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pass records through, giving each repeat of an id an `error` (the first one wins)."""
    seen: dict[str, int] = {}
    for number, record in enumerate(records, 1):
        if "error" not in record:
            try:
                key = record_id(record)
            except RecordError as exc:
                set_error(record, "input", exc)
            else:
                if key in seen:
                    log.warning("input: duplicate id %r (records %d and %d)", key, seen[key], number)
                    set_error(record, "input", f"duplicate id {key!r} (first seen in record {seen[key]})")
                else:
                    seen[key] = number
        yield record


def write_record(record: dict[str, Any], stream: IO[str]) -> None:
    """Write one record as a JSON line and flush, so pipes see it at once."""
    stream.write(record_json(record) + "\n")
    stream.flush()


def record_json(record: Mapping[str, Any]) -> str:
    """A record as one line of JSON (numpy values as lists)."""
    return json.dumps(record, ensure_ascii=False, default=to_json)


def to_json(value: Any) -> Any:
    """`json.dumps` default: numpy scalars and arrays as plain values."""
    # numpy scalars and arrays reach records from the cores
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def field_text(value: Any) -> str | None:
    """A record field as the text a rule compares with: strings as is, other values as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
