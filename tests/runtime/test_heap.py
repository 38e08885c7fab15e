"""The loop freezes the heap it starts with (:mod:`closedloop.runtime.loop`): the garbage
collector's walks in the loop leave out the start-up's objects, whose full collection
paused a default session's loop for 60-65 ms, and everything is as before once the loop
has ended, however it ended."""

from __future__ import annotations

import gc

import pytest

from closedloop.errors import DeviceLostError
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt
from tests.runtime.conftest import assert_all_off, sim_session

SCRIPT = [Attempt("biceps", 2.5, 1.5, 1.0, 0.04)]  # no trial starts in the first 2 s


def in_generations(obj) -> bool:
    """``obj`` is in one of the collector's generations (frozen objects are in none)."""
    return any(o is obj for g in range(3) for o in gc.get_objects(generation=g))


@pytest.mark.parametrize("ends", ["duration", "device"])
def test_the_heap_is_frozen_while_the_loop_runs_and_only_then(config, ends):
    src, stim = sim_session(config, SCRIPT)
    sentinel = [object()]  # made before the loop, as the start-up's objects are
    seen: list[tuple[int, bool, int]] = []

    def control() -> list:
        if not seen:
            garbage: list = [[]]
            garbage[0].append(garbage)  # a cycle made in the loop: still collected
            del garbage
            seen.append((gc.get_freeze_count(), in_generations(sentinel), gc.collect()))
        if ends == "device" and stim.any_on:
            stim.fail_next(DeviceLostError("no answer from the stimulator"), on="check")
        return []

    assert in_generations(sentinel) and gc.get_freeze_count() == 0
    out = run_loop(config, src, stim, options=LoopOptions(duration_s=4.0, watchdog_s=2.0),
                   control=control)
    assert out.reason == ends
    frozen, sentinel_seen, collected = seen[0]
    assert frozen > 10_000 and not sentinel_seen and collected >= 2
    assert gc.get_freeze_count() == 0 and in_generations(sentinel)  # unfrozen at the end
    assert_all_off(stim)
