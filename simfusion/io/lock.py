"""One writer at a time per model folder: an exclusive lock on `<folder>/.lock`.

Every command that changes a model folder (train.py, fusion.py, fusion.py --add / --remove, the
HTTP service's add and remove) holds it while it writes; the second writer waits, then fails
with a clear message after the timeout. Readers take no lock: every file is replaced by one
atomic rename, and the catalog reconciles an index that lags its store. The lock is the
operating system's (flock), so a killed writer's lock is released with its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator

from simfusion.io.atomic import TEMP_PREFIX, remove_quietly

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
DEFAULT_TIMEOUT = 600.0  # seconds; SIMFUSION_LOCK_TIMEOUT overrides
# what an interrupted write may leave: atomic temporaries, and the index folders of older releases
LEFTOVER_PREFIXES = (TEMP_PREFIX, ".old-index-")


class LockTimeout(TimeoutError):
    """Another process held the model folder's lock for longer than the timeout."""


def lock_timeout() -> float:
    text = os.environ.get("SIMFUSION_LOCK_TIMEOUT", "")
    try:
        return float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f"SIMFUSION_LOCK_TIMEOUT must be a number of seconds, not {text!r}") from None


@contextlib.contextmanager
def write_lock(folder: str | os.PathLike, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the folder's exclusive lock; on entry, remove what interrupted writes left behind."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    timeout = lock_timeout() if timeout is None else timeout
    path = os.path.join(folder, LOCK_FILE)
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another process is changing {folder} (it holds {path}); waited {timeout:g} s. "
                        "Retry when it has finished (SIMFUSION_LOCK_TIMEOUT sets the wait)."
                    ) from None
                if not waited:
                    log.info("waiting for another process to finish changing %s", folder)
                    waited = True
                time.sleep(0.05)
        try:
            remove_leftovers(folder)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_leftovers(folder: str) -> list[str]:
    """Delete the temporaries of interrupted writes in the folder and one level below; only safe
    while holding the lock (no writer is running). Returns what was removed."""
    removed = []
    for parent in [
        folder,
        *(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")),
    ]:
        for entry in os.scandir(parent):
            if entry.name.startswith(LEFTOVER_PREFIXES):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    remove_quietly(entry.path)
                removed.append(entry.path)
    if removed:
        log.info("removed %d leftovers of interrupted writes in %s", len(removed), folder)
    return removed
