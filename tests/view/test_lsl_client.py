"""The view's LSL client against a session's own streams, published in a chosen order.

The session runs through the real loop (:func:`~closedloop.runtime.loop.run_loop`) on a
recorded-like array; what it publishes is kept in order and pushed again through the
real :class:`~closedloop.io.outlets.SessionOutlets` on loopback, so a test decides which
of two streams reaches the view first.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import replace

import numpy as np
import pytest

from closedloop.config import loads_config
from closedloop.io.outlets import SessionOutlets
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.view.lsl_client import FROM_SESSION, SessionClient
from tests.analysis.test_report import KNOCK_CONFIG  # a resting pair, cusum
from tests.helpers import ArraySource


class Tape:
    """Stands in for the session's outlets: keeps every call the loop makes, in order,
    to make them again on real outlets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def _keep(self, name: str, *args, **kwargs) -> None:
        self.calls.append((name, copy.deepcopy(args), copy.deepcopy(kwargs)))

    def push_emg(self, *args, **kwargs) -> None:
        self._keep("push_emg", *args, **kwargs)

    def push_block(self, block) -> None:
        self._keep("push_block", block)

    def push_commands(self, commands) -> None:
        self._keep("push_commands", list(commands))

    def push_marker(self, *args, **kwargs) -> None:
        self._keep("push_marker", *args, **kwargs)

    def push_mwaves(self, records) -> None:
        self._keep("push_mwaves", list(records))

    def push_tally(self, *args, **kwargs) -> bool:
        return False  # the view's counts are not under test here


def wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture(scope="module", params=["held", "over"])
def knocked(request):
    """A resting session with absurd values on the biceps at 3 s, and what its loop
    published. ``held``: 5 ms of 1e10 (a driver's garbage): the held-value check says
    the channel is back at its first good sample, where the session restarts it.
    ``over``: 100 ms of +-1e10: the impulse gate says so at the stretch's last (still
    dirty) sample, and the session restarts the channel one sample later."""
    config = loads_config(KNOCK_CONFIG.format(envelope="rms"), source="knock view test")
    fs, n, knock = 2000.0, 10_000, 6000
    x = np.random.default_rng(7).normal(0.0, 3e-6, (n, 2))
    length = 10 if request.param == "held" else 200
    x[knock : knock + length, 0] = 1e10 * (1 if request.param == "held" else
                                           np.where(np.arange(length) % 2, 1, -1))
    src = ArraySource(x, fs, config.muscle_names, sizes=(20,))
    tape = Tape()
    run_loop(config, src, None, outlets=tape, options=LoopOptions(duration_s=n / fs))
    return config, src.info, knock, knock + length, tape.calls


def is_issue(call) -> bool:
    return call[0] == "push_marker" and call[1][0] == "input_issue"


@pytest.mark.parametrize("marker", ["before", "after"])
def test_the_emg_level_restarts_where_the_session_restarted_the_channel(knocked, marker):
    """The session restarts the biceps after the knock (an ``input_issue`` marker of kind
    ``recovered``); the view's EMG level (cusum: a moving RMS of the filtered EMG it
    receives) restarts there too, whether the marker reaches the view before the
    filtered samples it concerns or after them. Before, the 1e10 samples left a rounding
    residue in the RMS's running sum that held the level at 0 (or far above the EMG)
    for the rest of the session."""
    config, info, knock, end, calls = knocked
    issues = [c for c in calls if is_issue(c)]
    recovered = [c[2]["sample"] for c in issues
                 if c[2]["kind"] == "recovered" and c[2]["channel"] == "biceps"]
    assert recovered and end <= min(recovered) < end + 100, issues  # as published
    data = [c for c in calls if not is_issue(c)]
    outlets = SessionOutlets(f"knockview-{uuid.uuid4().hex[:8]}",
                             replace(info, channels=config.muscle_names),
                             config_text=config.text)
    levels: list[tuple[int, np.ndarray]] = []  # (filtered sample reached, level then)
    try:
        with SessionClient(outlets.session_name, window_s=5.0) as client:
            assert client.wait_connected(10.0)

            def push(items) -> None:
                for name, args, kwargs in items:
                    getattr(outlets, name)(*args, **kwargs)

            def push_issues() -> None:
                push(issues)
                assert wait_for(lambda: sum(
                    label == "input_issue" for _, label in client.snapshot(60.0).markers)
                    == len(issues), 10.0)

            def push_until(stop: int) -> None:
                """Push the session's data up to sample ``stop``; the level when the
                view has taken it."""
                while data and (data[0][0] != "push_block" or data[0][1][0].start < stop):
                    push([data.pop(0)])
                assert wait_for(lambda: client.snapshot().level_position >= stop, 10.0)
                levels.append((stop, client.snapshot().level_now.copy()))

            push_until(4000)
            assert client.snapshot().emg_from == FROM_SESSION
            if marker == "before":  # the view has it before the knock's samples
                push_issues()
            for stop in range(4100, end + 300, 100):
                push_until(stop)
            if marker == "after":  # the filtered samples of the restart came first
                push_issues()
                stop = levels[-1][0]
                levels = [(k, v) for k, v in levels if k <= knock]  # the marker was late
                levels.append((stop, client.snapshot().level_now.copy()))
            for stop in range(end + 300, 9900, 100):
                push_until(stop)
    finally:
        outlets.close()
    at = np.array([k for k, _ in levels])
    level = np.array([v for _, v in levels])
    rest = np.median(level[at <= knock], axis=0)
    assert np.isfinite(rest).all() and (rest > 1e-6).all(), rest
    biceps = level[at >= end + 100, 0] / rest[0]  # from 50 ms after the knock
    assert biceps.size > 30 and (0.3 < biceps).all() and (biceps < 3.0).all(), biceps
    triceps = level[:, 1] / rest[1]  # untouched
    assert (0.3 < triceps).all() and (triceps < 3.0).all(), triceps
