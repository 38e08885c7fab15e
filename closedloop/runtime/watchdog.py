"""The backstop watchdog: switches stimulation off if the loop stops checking in.

The loop's own stall check handles a source that returns no data (it raises
:class:`~closedloop.errors.StallError`); this thread handles a loop that does not
return at all (stuck in a device or library call): after ``limit_s`` without a
:meth:`Watchdog.feed` it calls ``on_trip`` once, from its own thread. It reads the wall
clock, which is its job; nothing else in the loop decides by the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Watchdog:
    """Call ``on_trip`` once if :meth:`feed` is not called for ``limit_s`` seconds."""

    def __init__(self, limit_s: float, on_trip: Callable[[], None]) -> None:
        self.limit_s = limit_s
        self._on_trip = on_trip
        self._last = time.perf_counter()
        self._done = threading.Event()
        self.tripped = False
        self._thread = threading.Thread(target=self._run, name="closedloop-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching (the first deadline counts from now)."""
        self._last = time.perf_counter()
        self._thread.start()

    def feed(self) -> None:
        """The loop is alive: the deadline counts from now."""
        self._last = time.perf_counter()

    def stop(self) -> None:
        """Stop watching (waits up to 1 s for the thread)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._done.wait(self.limit_s / 4):
            if time.perf_counter() - self._last > self.limit_s:
                self.tripped = True
                self._on_trip()
                return


__all__ = ["Watchdog"]
