"""Small test doubles shared by several test packages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from closedloop.core.stream import Chunk, SourceInfo
from closedloop.sources.base import Source


class ArraySource(Source):
    """Samples from an array, delivered in the given chunk sizes (cycled).

    Timestamps are ``i / fs`` and the counter is ``i`` unless given explicitly (to feed
    faulty timestamps or counters).
    """

    def __init__(self, x: np.ndarray, fs: float, channels: Sequence[str],
                 sizes: Sequence[int] = (20,), *, timestamps: np.ndarray | None = None,
                 counter: np.ndarray | None = None, name: str = "array") -> None:
        super().__init__()
        n = x.shape[0]
        self.x, self.fs, self.sizes = x, fs, list(sizes)
        self.ts = np.arange(n) / fs if timestamps is None else np.asarray(timestamps)
        self.counter = np.arange(n) if counter is None else np.asarray(counter)
        self._info = SourceInfo(name, fs, tuple(channels))
        self._pos = self._k = 0

    @property
    def position(self) -> int:
        return self._pos

    @property
    def exhausted(self) -> bool:
        return self._pos >= self.x.shape[0]

    def read(self, timeout: float) -> Chunk | None:
        if self.exhausted:
            return None
        a = self._pos
        b = min(a + self.sizes[self._k % len(self.sizes)], self.x.shape[0])
        self._pos, self._k = b, self._k + 1
        return Chunk(self.x[a:b].copy(), self.ts[a:b].copy(), self.counter[a:b].copy(), 0.0)
