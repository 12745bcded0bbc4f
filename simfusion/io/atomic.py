"""One atomic writer for every file the tools write: a temporary file in the target's folder, made
readable as an ordinary file would be (0666 less the umask, where mkstemp gives 0600), flushed to
disk and renamed over the target. A crash, a kill or a full disk leaves the old file or the new one,
never half of either; the temporary file is removed on any error."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from simfusion.io.records import to_json

TEMP_PREFIX = ".tmp-"
MARGIN_BYTES = 2**20

# The process's umask, read once: os.umask can only be read by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)


def file_mode() -> int:
    """The permissions a plain `open(path, "w")` would give a new file."""
    return 0o666 & ~_UMASK


def folder_mode() -> int:
    """The permissions `os.makedirs` would give a new folder."""
    return 0o777 & ~_UMASK


def remove_quietly(path: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def ensure_space(folder: str | os.PathLike, needed: int, *, what: str = "the write") -> None:
    """Raise OSError(ENOSPC) with a clear message unless `folder`'s disk has `needed` bytes free
    (plus a 1 MiB margin): a write that would fill the disk is refused before it starts, rather
    than failing half-way inside a native library."""
    free = shutil.disk_usage(os.fspath(folder)).free
    if free < needed + MARGIN_BYTES:
        raise OSError(
            errno.ENOSPC,
            f"not enough disk space for {what} in {os.fspath(folder)}: it needs about "
            f"{_mib(needed + MARGIN_BYTES)}, {_mib(free)} is free; nothing was changed",
        )


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside `path` to write; on a clean exit it replaces `path`.

    `suffix` defaults to the target's extension, for writers that choose a format by it
    (Keras, Pillow, h5py)."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(
        dir=folder, prefix=TEMP_PREFIX, suffix=os.path.splitext(path)[1] if suffix is None else suffix
    )
    os.close(handle)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_folder(folder)


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(data)
    return os.fspath(path)


def write_text(path: str | os.PathLike, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 1) -> str:
    """Write JSON atomically (numpy values as plain numbers and lists)."""
    return write_text(path, json.dumps(value, indent=indent, ensure_ascii=False, default=to_json))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)
