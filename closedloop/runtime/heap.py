"""The heap during a live session: frozen, so that the garbage collector does not pause
the loop.

CPython's cyclic garbage collector now and then runs a full collection (generation 2),
which walks every tracked object: after a session's start-up (numpy, scipy, pydantic,
pylsl, the session's devices, outlets and recorder) about 90,000 of them. Measured on a
two-core machine, a default ``closedloop run`` (LSL outlets on) ran one such collection
of 60-65 ms within its first minute, in the loop's thread: the loop stood still for that
long, so a trigger decided in that chunk reached the stimulator that much later; in a
process with a larger heap the same pause grows past the backstop watchdog's 0.25 s.

:func:`frozen_heap` collects once before the loop and freezes what is left
(:func:`gc.freeze`): the collector's later collections walk only what the session itself
allocates, which the same session did in well under a millisecond (``closedloop bench
--latency`` prints the collections during its session and the longest). The objects are
unfrozen when the loop ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then freeze the heap until the block ends (module docstring)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


__all__ = ["frozen_heap"]
