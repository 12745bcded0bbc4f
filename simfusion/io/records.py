"""Image records: the JSON objects every stage reads on stdin and writes on stdout."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

log = logging.getLogger(__name__)

ID_KEYS = ("id", "image_id")
PATH_KEYS = ("image", "path")


class RecordError(ValueError):
    """A record that cannot be processed: becomes its `error`, never a crash."""


def parse_records(
    stream: IO[str] | IO[bytes] | Iterable[str | bytes], *, skipped: list[int] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield records from JSON lines, or from one JSON array spread over several lines.

    Each line is read on its own (a text stream with a byte buffer, like sys.stdin, is read as bytes,
    so the locale cannot stop the input). A line holding an array gives the array's objects. A
    line that is not UTF-8, not JSON, nested deeper than MAX_DEPTH, or not an object is logged
    with its line number and skipped; the other lines still come out. Input whose first line opens
    an array without closing it is one array: its items come out, and if it breaks off, a record
    with an `error` saying from which line the input was left unread. `skipped`, when given, gets
    the line number of each line or array item skipped, so a command can count them as failures.
    """
    skip = functools.partial(_skip, skipped)
    lines = enumerate(_text_lines(stream), 1)
    first = True
    for number, line in lines:
        if line is None:
            skip(number, "is not valid UTF-8")
            continue
        if number == 1:
            line = line.removeprefix(BOM)
        if not line.strip():
            continue
        # only the first line may open an array over many lines; later, a cut line is just bad
        if first and line.lstrip().startswith("[") and _incomplete(line):
            yield from _parse_array(line, lines, first_line=number, skip=skip)
            return
        first = False
        yield from _parse_line(line, number, skip)


BOM = "\ufeff"
# Records are flat; anything deeper is refused before it can exhaust the stack when written back.
MAX_DEPTH = 64


def _text_lines(stream: IO[str] | IO[bytes] | Iterable[str | bytes]) -> Iterator[str | None]:
    """The stream's lines as text; None for a line that is not UTF-8."""
    buffer = getattr(stream, "buffer", None)
    for line in stream if buffer is None else buffer:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                yield None
                continue
        yield line


def _skip(skipped: list[int] | None, number: int, why: str) -> None:
    log.error("input: line %d %s; skipped", number, why)
    if skipped is not None:
        skipped.append(number)


def _incomplete(line: str) -> bool:
    """Whether a line opening an array is only the start of a JSON document spread over lines."""
    try:
        json.loads(line)
    except json.JSONDecodeError as exc:
        return exc.pos >= len(line.rstrip())  # ran out of input, rather than met a wrong character
    except (ValueError, RecursionError):
        return False
    return False


def _parse_line(line: str, number: int, skip: Callable[[int, str], None]) -> Iterator[dict[str, Any]]:
    try:
        value = json.loads(line)
    except RecursionError:
        skip(number, "is nested too deeply")
        return
    except ValueError as exc:  # JSONDecodeError, or an integer over Python's digit limit
        skip(number, f"is not valid JSON ({getattr(exc, 'msg', exc)})")
        return
    items = value if isinstance(value, list) else [value]
    for position, item in enumerate(items, 1):
        where = f"item {position} " if isinstance(value, list) else ""
        why = _unusable(item)
        if why:
            skip(number, f"{where}{why}")
        else:
            yield _finite(item, number)


def _unusable(item: Any) -> str | None:
    """Why a parsed value cannot be a record (None when it can): each one must be written back."""
    if not isinstance(item, dict):
        return "is not a JSON object"
    if _depth(item) > MAX_DEPTH:
        return f"is nested deeper than {MAX_DEPTH} levels"
    try:
        record_json(item).encode("utf-8")  # NaN and Infinity are `_finite`'s
    except UnicodeEncodeError:
        return "holds text that is not valid Unicode (a lone surrogate)"
    return None


def _finite(item: dict[str, Any], number: int) -> dict[str, Any]:
    """The record with NaN and Infinity (which Python's json reads and no strict JSON reader would
    read back) written as null, and logged. In a field the pipeline reads (`box`, the id, the image
    path) the record becomes an error record: a box of NaN is not the whole image."""
    keys: list[str] = []

    def clean(value: Any, key: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            keys.append(key)
            return None
        if isinstance(value, dict):
            return {k: clean(v, key) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, key) for v in value]
        return value

    if "error" in item and item["error"] is None:  # "no error": a failed record has a message
        item = {key: value for key, value in item.items() if key != "error"}
    cleaned = {key: clean(value, key) for key, value in item.items()}
    if not keys:
        return item
    named = ", ".join(f"`{key}`" for key in dict.fromkeys(keys))
    why = f"{named} held NaN or Infinity, which is not a JSON number (written as null)"
    if set(keys) & {"box", *ID_KEYS, *PATH_KEYS}:
        cleaned["error"] = f"input: {why}"
    else:
        log.warning("input: line %d: %s", number, why)
    return cleaned


def _depth(value: Any) -> int:
    deepest, todo = 0, [(value, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                todo.extend((child, depth + 1) for child in value)
    return deepest


def _parse_array(
    first: str, lines: Iterator[tuple[int, str | None]], *, first_line: int, skip: Callable[[int, str], None]
) -> Iterator[dict[str, Any]]:
    """The items of one JSON array; where it breaks off, an error record for the unread rest.

    The array is read up to its first line that is not UTF-8.
    """
    text, cut, last = [first], None, first_line
    for last, line in lines:
        if line is None:
            cut = cut or last
        elif cut is None:
            text.append(line)
    if cut is not None:
        skip(cut, "is not valid UTF-8: the JSON array is read up to it")
    yield from _array_items("".join(text), first_line=first_line, last_line=last, skip=skip)


def _array_items(
    text: str, *, first_line: int, last_line: int, skip: Callable[[int, str], None]
) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")
    at = space.match(text).end() + 1  # past "["
    position = 0
    while True:
        at = space.match(text, at).end()
        if text.startswith("]", at) and position == 0:
            at += 1
            break
        position += 1
        try:
            item, at = decoder.raw_decode(text, at)
        except RecursionError:
            yield _broken(text, at, first_line, last_line, "an item is nested too deeply")
            return
        except ValueError as exc:
            yield _broken(text, at, first_line, last_line, getattr(exc, "msg", str(exc)))
            return
        line = first_line + text.count("\n", 0, at)
        why = _unusable(item)
        if why:
            skip(line, f"(array item {position}) {why}")
        else:
            yield _finite(item, line)
        at = space.match(text, at).end()
        if text.startswith(",", at):
            at += 1
        elif text.startswith("]", at):
            at += 1
            break
        else:
            yield _broken(text, at, first_line, last_line, "expecting ',' or ']' after an item")
            return
    at = space.match(text, at).end()
    if at < len(text):
        yield _broken(text, at, first_line, last_line, "more input after the array's closing ']'")


def _broken(text: str, at: int, first_line: int, last_line: int, why: str) -> dict[str, Any]:
    line = min(first_line + text.count("\n", 0, at), last_line)
    message = f"JSON array broken at line {line} ({why}); input lines {line}-{last_line} unread"
    log.error("input: %s", message)
    return {"error": f"input: {message}", "input_line": line}


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a whole records file (JSON lines or a JSON array)."""
    with open(path, encoding="utf-8") as stream:
        return list(parse_records(stream))


def record_id(record: dict[str, Any]) -> str:
    """The record's id: `id`, else the prototype's `image_id`, else (neither key given) its image path.

    An id is a non-empty string or a whole number; a key given as anything else (null, "", true,
    an object) is a RecordError, never a silent fall back to the path."""
    for key in ID_KEYS:
        if key not in record:
            continue
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            kind = "null" if value is None else type(value).__name__
            raise RecordError(f"`{key}` must be a string or a whole number, not {kind}")
        if value == "":
            raise RecordError(f"`{key}` is empty: give the record an id, or leave `{key}` out")
        return _without_nul(str(value), key)
    return _without_nul(record_path(record), "image")


def _without_nul(key: str, field: str) -> str:
    """An id as it is, unless it holds a NUL character (HDF5 stores ids as C strings)."""
    if "\x00" in key:
        raise RecordError(f"`{field}` holds a NUL character (\\u0000), which an id cannot")
    return key


def record_path(record: dict[str, Any]) -> str:
    """The record's image path, relative to the stage's base folder (`image`, else `path`)."""
    for key in PATH_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    for key in PATH_KEYS:
        if record.get(key) not in (None, ""):
            raise RecordError(f"`{key}` must be an image path (a string), not {type(record[key]).__name__}")
    raise RecordError("record has no image path (`image` or `path`)")


def output_relpath(record: dict[str, Any]) -> str:
    """Where a stage writes this record's output, relative to its output folder: a name made from the id.

    Ids are unique within a run (`mark_duplicates`), and the name is a function of the id alone,
    which every stage passes through untouched, so each stage finds the one before's output. An id
    of lower-case letters, digits, `._-` and `/` (its sub-folders) is kept as it is, plus `.png`;
    any other id (upper case, other characters, `..`, an absolute path, very long) becomes a
    cleaned, shortened name plus `~` and a hash of the id. So no two ids share a file, even on a
    case-blind disk, and no name climbs out of the output folder.
    """
    key = record_id(record)
    parts = key.split("/")
    plain = len(key) <= MAX_PLAIN and all(SAFE_PART.fullmatch(part) for part in parts)
    # a folder named like a file ("a.png/b") would collide with the record "a"
    if plain and not any(part.endswith(OUTPUT_SUFFIX) for part in parts[:-1]):
        return key + OUTPUT_SUFFIX
    stem = re.sub(r"[^a-z0-9._-]+", "_", key.lower()).strip("._-")[:80] or "record"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{stem}~{digest}{OUTPUT_SUFFIX}"


# Stage outputs are PNG whatever the input: lossless, so a thumbnail is not JPEG-compressed twice.
OUTPUT_SUFFIX = ".png"
SAFE_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
MAX_PLAIN = 200


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


def same_item(record: Mapping[str, Any], held: Mapping[str, Any]) -> bool:
    """Whether a record to add is the one the catalog holds (every field it gives is held alike)."""
    return all(held.get(key) == value for key, value in record.items())
