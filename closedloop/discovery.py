"""Finding streams on the LSL network, without liblsl's one-shot resolve.

One function, :func:`find_streams`, used wherever closedloop looks for a stream: the
EMG source, the live view, the session list, the stimulation receiver and the
listing of what is visible. It sits below every layer that touches LSL (the
stimulation receiver in :mod:`closedloop.stim` too); :mod:`closedloop.io.lsl` holds the
rest of the discovery helpers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pylsl

#: How often :func:`find_streams` looks at what its resolver found, seconds.
FIND_POLL_S = 0.05


def find_streams(
    pred: str | None,
    wait: float,
    *,
    minimum: int = 0,
    settle: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[pylsl.StreamInfo]:
    """The streams matching the XPath predicate ``pred`` (every stream when None).

    Waits up to ``wait`` seconds for the first stream; returns with what answered by
    then, or earlier: as soon as ``minimum`` streams (when > 0) answered, ``settle``
    seconds after the first answered (when given; the others get those seconds even
    past ``wait``), or when ``stop()`` says so.

    Why not ``pylsl.resolve_bypred``/``resolve_streams``: the one-shot resolve that
    ends on its timeout (no stream, or fewer than its minimum) now and then returns
    5 s late, and cannot be interrupted meanwhile (the liblsl pylsl 1.18 ships, on
    loopback, given 0.5 s for a stream that is not there: 19 calls of 150 here). A
    continuous resolver, polled, answers as soon as streams do and is deleted at once.
    """
    resolver = (pylsl.ContinuousResolver(pred=pred) if pred is not None
                else pylsl.ContinuousResolver())
    try:
        start = time.monotonic()
        first = None
        found: list[pylsl.StreamInfo] = []
        while True:
            now = time.monotonic()
            found = resolver.results() or found
            if found and first is None:
                first = now
            if (
                (minimum > 0 and len(found) >= minimum)
                or (first is not None and settle is not None and now - first >= settle)
                or (now - start >= wait and (first is None or settle is None))
                or (stop is not None and stop())
            ):
                return found
            time.sleep(FIND_POLL_S)
    finally:
        del resolver
