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
import pylsl
import pytest

from closedloop.config import loads_config
from closedloop.core.envelope import Envelope, level_settings
from closedloop.io.outlets import CHANNEL_RESTART, ROLE_MARKERS, SessionOutlets
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.view.lsl_client import FROM_SESSION, SessionClient
from tests.analysis.test_report import KNOCK_CONFIG  # a resting pair, cusum
from tests.helpers import ArraySource

FS, N, KNOCK = 2000.0, 10_000, 6000
#: The loop over the whole array. Its backstop watchdog reads the wall clock (its job):
#: 0.25 s without a chunk ends a session, and a long test process's garbage collection
#: or a loaded machine can take that long, ending the tape early and the test with it
#: (seen in two CI runs, 1600 slow tests in one process). Offline, as a replay does, it gets 5 s.
OFFLINE = LoopOptions(duration_s=N / FS, watchdog_s=5.0)


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


def _emg(case: str) -> np.ndarray:
    """A resting pair with one bad stretch on the biceps (see :func:`taped`)."""
    x = np.random.default_rng(7).normal(0.0, 3e-6, (N, 2))
    alternating = np.where(np.arange(200) % 2, 1.0, -1.0)
    if case == "held":
        x[KNOCK : KNOCK + 10, 0] = 1e10
    elif case == "over":
        x[KNOCK : KNOCK + 200, 0] = 1e10 * alternating
    elif case == "knock":
        x[KNOCK : KNOCK + 10, 0] = 1e10 * alternating[:10]
    else:  # "hum": 2 s of mains hum, and 5 ms of NaN in the middle of it
        t = np.arange(N) / FS
        x[2500:5500, 0] += 1e-4 * np.sin(2 * np.pi * 50.0 * t[2500:5500])
        x[4500:4510, 0] = np.nan
    return x


@pytest.fixture(scope="module", params=["held", "over", "knock", "hum"])
def taped(request):
    """A resting session with a bad stretch on the biceps, and what its loop published.

    ``held``: 5 ms of 1e10 at 3 s (a driver's garbage): the held-value check says the
    channel is back at its first good sample, where the session restarts it; the
    impulse gate restarts it again 20 samples later. ``over``: 100 ms of +-1e10: the
    impulse gate says so at the stretch's last (still dirty) sample, and the session
    restarts the channel one sample later. ``knock``: 5 ms of +-1e10: the session
    restarts the channel after it and no input issue says ``recovered``. ``hum``: mains
    hum on the biceps from 1.25 s to 2.75 s with 5 ms of NaN at 2.25 s: the NaN check says
    ``recovered`` where the hum still holds the channel (no restart there); the session
    restarts it once, when the hum check lets it go."""
    config = loads_config(KNOCK_CONFIG.format(envelope="rms"), source="knock view test")
    src = ArraySource(_emg(request.param), FS, config.muscle_names, sizes=(20,))
    tape = Tape()
    out = run_loop(config, src, None, outlets=tape, options=OFFLINE)
    assert out.reason == "duration", (out.reason, out.message)  # the whole array was taped
    return request.param, config, src.info, tape.calls


def is_marker(call, label: str | None = None) -> bool:
    return call[0] == "push_marker" and label in (None, call[1][0])


def restarts(calls) -> list[tuple[int, str]]:
    """``(sample, muscle)`` of the session's ``channel_restart`` markers."""
    return [(c[2]["sample"], c[2]["muscle"]) for c in calls if is_marker(c, CHANNEL_RESTART)]


def recovered(calls) -> list[tuple[int, str]]:
    """``(sample, channel)`` of the session's ``recovered`` input issues."""
    return [(c[2]["sample"], c[2]["channel"]) for c in calls
            if is_marker(c, "input_issue") and c[2]["kind"] == "recovered"]


def reference_level(config, calls) -> np.ndarray:
    """Each muscle's EMG level after each sample, restarted exactly where the session's
    core restarted the channel (:attr:`Block.restarts`, as the report's is)."""
    blocks = [c[1][0] for c in calls if c[0] == "push_block"]
    envs = [Envelope(level_settings(config.envelope), FS, 1) for _ in config.muscle_names]
    out = np.full((N, len(envs)), np.nan)
    for b in blocks:
        for c in b.restarts:
            envs[c].restart_channel(0)
        for c, env in enumerate(envs):
            out[b.start : b.start + b.n, c] = env.process(b.filtered[:, c : c + 1])[:, 0]
    return out


def test_the_session_marks_each_restart_and_recovered_does_not_say_it(taped):
    """What the tests below stand on: the loop publishes one ``channel_restart`` marker
    per restart of the core (:attr:`Block.restarts`), at the block's first sample, and
    the ``recovered`` input issues are not the same list."""
    case, config, _, calls = taped
    core = [(b.start, b.channels[c]) for name, (b, *_), _ in calls if name == "push_block"
            for c in b.restarts]
    assert restarts(calls) == core and core, core
    assert all(m == "biceps" and s > 2500 for s, m in core)
    said = [(s, ch) for s, ch in recovered(calls) if ch == "biceps"]
    if case == "knock":  # (a): restarted, and nothing says recovered
        assert said == []
    if case == "hum":  # (b): recovered where the channel was not restarted
        assert [s for s, _ in said if s not in {k for k, _ in core}]


def _checkpoints(interesting: list[int]) -> list[int]:
    """Samples at which the level is compared: every 100, and every 20 for 100 samples
    from the one after each sample in ``interesting`` (a moving RMS restarted for
    nothing differs for one window: 15 ms, 30 samples)."""
    dense = {k + d for k in interesting for d in range(1, 120, 20)}
    return sorted({*range(1000, N - 100, 100), *dense} - set(range(N - 100, N + 200)))


@pytest.mark.parametrize("marker", ["before", "after"])
def test_the_emg_level_restarts_exactly_where_the_session_restarted_the_channel(taped, marker):
    """The session restarts the biceps after the bad stretch and publishes where; the
    view's EMG level (cusum: a moving RMS of the filtered EMG it receives) restarts there
    too and nowhere else, so it equals, at every checkpoint, the level restarted where
    the session's core restarted the channel (the report's), whether the markers reach
    the view before the filtered samples they concern or after them.

    Before, the view restarted one sample after each ``recovered`` input issue: after
    5 ms of +-1e10 (``knock``) none says so and the level kept a rounding residue of
    the 1e10 samples for the rest of the session, and in the ``hum`` case it restarted
    where the session had not (the level dipped for one window)."""
    case, config, info, calls = taped
    ref = reference_level(config, calls)
    markers = [c for c in calls if is_marker(c)]
    data = [c for c in calls if not is_marker(c)]
    moments = [s for s, _ in restarts(calls)] + [s for s, _ in recovered(calls)]
    first, last = min(moments), max(moments)
    late = last + 300  # "after": the markers come once the view has the samples up to here
    outlets = SessionOutlets(f"levelview-{uuid.uuid4().hex[:8]}",
                             replace(info, channels=config.muscle_names),
                             config_text=config.text)
    checked: list[int] = []
    told = [marker == "before"]  # the view has the markers
    try:
        with SessionClient(outlets.session_name, window_s=5.0) as client:
            assert client.wait_connected(10.0)

            def push(items) -> None:
                for name, args, kwargs in items:
                    getattr(outlets, name)(*args, **kwargs)

            def push_markers() -> None:
                push(markers)
                labels = {c[1][0] for c in markers}
                assert wait_for(lambda: sum(label in labels for _, label
                                            in client.snapshot(60.0).markers) == len(markers),
                                10.0)
                told[0] = True

            def compare(stop: int) -> None:
                """Push the session's data up to sample ``stop``; the level when the
                view has taken it must be the reference's at that sample."""
                while data and (data[0][0] != "push_block" or data[0][1][0].start < stop):
                    push([data.pop(0)])
                assert wait_for(lambda: client.snapshot().level_position >= stop, 10.0)
                snap = client.snapshot()
                if not told[0] and snap.level_position > first:
                    return  # the view cannot know the restarts yet
                np.testing.assert_allclose(snap.level_now, ref[snap.level_position - 1],
                                           rtol=1e-9, atol=0,
                                           err_msg=f"at sample {snap.level_position}")
                checked.append(snap.level_position)

            compare(1000)
            assert client.snapshot().emg_from == FROM_SESSION
            if marker == "before":  # the view has them before the samples they concern
                push_markers()
            for stop in _checkpoints(moments):
                if not told[0] and stop > late:
                    compare(late)  # the samples of the restarts came first
                    push_markers()
                    compare(late)
                compare(stop)
    finally:
        outlets.close()
    assert sum(k > last for k in checked) >= 10, checked
    if marker == "before":  # within a window of every restart and recovered issue
        assert all(any(k < p <= k + 30 for p in checked) for k in moments), (moments, checked)
    rest = np.median(ref[1000:2400], axis=0)  # before any bad stretch
    assert np.isfinite(rest).all() and (rest > 1e-6).all(), rest
    biceps = ref[last + 100 : N - 100, 0] / rest[0]  # from 50 ms after the last restart
    assert (0.3 < biceps).all() and (biceps < 3.0).all()  # the reference is at rest again


def _old_outlet(info: pylsl.StreamInfo) -> pylsl.StreamOutlet:
    """A session from before ``channel_restart`` markers: its markers stream's header
    does not declare them."""
    cl = info.desc().child("closedloop")
    if cl.child_value("role") == ROLE_MARKERS:
        cl.remove_child(cl.child("restart_marker"))
    return pylsl.StreamOutlet(info)


@pytest.mark.parametrize("case", ["held", "over"])
def test_a_session_from_before_restart_markers_restarts_the_level_on_recovered(case):
    """A session that does not declare ``channel_restart`` markers (one from before
    them) publishes only ``recovered`` input issues: the view restarts the level one
    sample after each, as it did before, so the level is back at rest right after a
    knock the session reported as over. (After 5 ms of +-1e10 such a session says
    nothing the view could restart on: the limitation the markers remove.)"""
    config = loads_config(KNOCK_CONFIG.format(envelope="rms"), source="old session test")
    src = ArraySource(_emg(case), FS, config.muscle_names, sizes=(20,))
    tape = Tape()
    out = run_loop(config, src, None, outlets=tape, options=OFFLINE)
    assert out.reason == "duration", (out.reason, out.message)  # the whole array was taped
    calls = [c for c in tape.calls if not is_marker(c, CHANNEL_RESTART)]  # not published then
    end = KNOCK + (10 if case == "held" else 200)
    outlets = SessionOutlets(f"oldview-{uuid.uuid4().hex[:8]}",
                             replace(src.info, channels=config.muscle_names),
                             config_text=config.text, outlet_factory=_old_outlet)
    levels: list[tuple[int, np.ndarray]] = []
    try:
        with SessionClient(outlets.session_name, window_s=5.0) as client:
            assert client.wait_connected(10.0)
            for name, args, kwargs in calls:
                if name == "push_block" and args[0].start % 100 == 0 and args[0].start:
                    stop = args[0].start
                    assert wait_for(lambda k=stop: client.snapshot().level_position >= k,
                                    10.0)
                    levels.append((stop, client.snapshot().level_now.copy()))
                getattr(outlets, name)(*args, **kwargs)
    finally:
        outlets.close()
    at = np.array([k for k, _ in levels])
    level = np.array([v for _, v in levels])
    rest = np.median(level[(at > 1000) & (at <= KNOCK)], axis=0)
    assert np.isfinite(rest).all() and (rest > 1e-6).all(), rest
    biceps = level[at >= end + 100, 0] / rest[0]  # from 50 ms after the knock
    assert biceps.size > 30 and (0.3 < biceps).all() and (biceps < 3.0).all(), biceps
    triceps = level[at > 1000, 1] / rest[1]  # untouched
    assert (0.3 < triceps).all() and (triceps < 3.0).all(), triceps


def test_a_stream_whose_source_id_breaks_a_query_is_still_shown():
    """The session's uid comes over the network, inside the stream's ``source_id``: one
    with a quote in it made the query for its streams invalid XPath, and the view never
    connected (retrying every second). It is quoted now."""
    name = f"quote{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(f"{name}-EMG", "EMG", 2, 1000.0, pylsl.cf_float32,
                            f"closedloop.it's{uuid.uuid4().hex[:6]}.emg")
    outlet = pylsl.StreamOutlet(info)
    with SessionClient(name, window_s=5.0) as client:
        assert client.wait_connected(10.0), client.errors
        snap = client.snapshot()
        assert snap.session == name and snap.channels == ("ch1", "ch2")
        assert client.errors == []
    del outlet
