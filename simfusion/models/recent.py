"""The last few batches' feature maps of a shared backbone pass, so that views read from one pass
(several blocks of one network) cost one pass when they encode the same batch one after another."""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Callable, Hashable

import numpy as np


class RecentPasses:
    """Maps of the last `keep` batches, keyed by the images' bytes and what else shapes the pass."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._maps: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()

    def get(
        self, images: np.ndarray, settings: Hashable, compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """The pass of `images` under `settings`: a recent one, else `compute()` (kept, read-only)."""
        digest = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16)
        key = (digest.hexdigest(), images.dtype.str, images.shape, settings)
        with self._lock:
            found = self._maps.get(key)
            if found is not None:
                self._maps.move_to_end(key)
                return found
        found = compute()  # two threads missing at once both compute it; the first one kept wins
        for maps in found.values():
            maps.flags.writeable = False  # shared by every caller of the same batch
        with self._lock:
            found = self._maps.setdefault(key, found)
            self._maps.move_to_end(key)
            while len(self._maps) > self.keep:
                self._maps.popitem(last=False)
        return found
