"""Every way out of :func:`run_loop` ends with all channels off and the right exit code.

The loop runs on the simulated patient and stimulator (not in real time); each stop
happens while stimulation is on. ``tests/e2e/test_run_cli.py`` does the same through
``closedloop run`` with signals, LSL streams and the RehaStim2 emulator.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import asdict, replace

import numpy as np
import pytest

from closedloop.core.stream import Chunk
from closedloop.errors import DeviceLostError, StimulatorError
from closedloop.runtime.control import ControlCommand, ControlSender
from closedloop.runtime.loop import LoopOptions, StopRequest, run_loop
from closedloop.runtime.outcome import MESSAGES, SIGNAL_POLL_S
from closedloop.runtime.signals import say, stop_on_signals
from closedloop.sim.patient import Attempt
from closedloop.sources.base import Source
from closedloop.stim.protocol import make_protocol
from tests.runtime.conftest import Capture, assert_all_off, sim_session

#: The biceps tries at 2.5 s (after the stream's first 2 s, before which the guard lets
#: no stimulation start): stimulation is on from ~2.53 s to ~6.5 s.
SCRIPT = [Attempt("biceps", 2.5, 1.5, 1.0, 0.04)]
FAST = LoopOptions(duration_s=9.5, watchdog_s=2.0)


def when_stimulating(stim, action):
    """A control callback that runs ``action`` once, as soon as a channel is on."""
    done = []

    def control() -> list[str]:
        if stim.any_on and not done:
            done.append(True)
            return action() or []
        return []

    return control


def test_duration_reached_exit_0(config):
    src, stim = sim_session(config, SCRIPT)
    out = run_loop(config, src, stim, options=LoopOptions(duration_s=3.0))
    assert (out.reason, out.exit_code) == ("duration", 0)
    assert out.samples == 6000  # exactly the duration, on the sample clock
    assert out.trials["trials"] == 1 and stim.commands[0].is_on  # it was stimulating
    assert_all_off(stim)
    assert out.all_off and out.message == "duration reached"


def test_stop_button_exit_3_says_who_sent_it(config):
    src, stim = sim_session(config, SCRIPT)
    sender = ControlSender("ward-pc", "closedloop-control.abc", "uid-1", "S-Control",
                           origin="view@ward-pc")
    other = ControlSender("other-pc", "closedloop-control.def", "uid-2", "S-Control")
    outlets = Capture()
    out = run_loop(config, src, stim, options=FAST, outlets=outlets,
                   control=when_stimulating(stim, lambda: [ControlCommand("stop", sender),
                                                           ControlCommand("stop", other)]))
    assert (out.reason, out.exit_code) == ("stop_button", 3)
    assert out.samples < 4 * 2000
    assert_all_off(stim)
    assert out.stopped_by == sender  # the first STOP stopped it
    assert out.message == ("stopped with STOP from view@ward-pc on host ward-pc, control "
                           "stream source_id closedloop-control.abc, stream uid uid-1")
    ((kind, t, fields),) = [m for m in outlets.markers if m[0] == "stop_request"]
    assert fields["sample"] < out.samples and t > 2.5
    assert {k: v for k, v in fields.items() if k != "sample"} == asdict(sender)


@pytest.mark.parametrize(("reason", "code"), [("interrupt", 130), ("sigterm", 143)])
def test_stop_request_from_another_thread(config, reason, code):
    src, stim = sim_session(config, SCRIPT)
    stop = StopRequest()

    def request():
        threading.Thread(target=stop.set, args=(reason,)).start()

    out = run_loop(config, src, stim, options=FAST, stop=stop,
                   control=when_stimulating(stim, request))
    assert (out.reason, out.exit_code) == (reason, code)
    assert_all_off(stim)
    assert np.isfinite(out.stop_to_off_ms) and out.stop_to_off_ms >= 0
    print(f"stop request -> all off: {out.stop_to_off_ms:.2f} ms")


STOP_SIGNALS = [
    (signal.SIGINT, "interrupt", 130),
    (signal.SIGTERM, "sigterm", 143),
    pytest.param(getattr(signal, "SIGHUP", None), "sighup", 129, marks=pytest.mark.skipif(
        not hasattr(signal, "SIGHUP"), reason="POSIX signal")),
    pytest.param(getattr(signal, "SIGQUIT", None), "sigquit", 131, marks=pytest.mark.skipif(
        not hasattr(signal, "SIGQUIT"), reason="POSIX signal")),
]


@pytest.mark.parametrize(("sig", "reason", "code"), STOP_SIGNALS)
def test_each_stop_signal_ends_the_loop_all_off_with_its_exit_code(config, sig, reason, code):
    """The shared mechanism every stimulating command uses: a real signal to this
    process while stimulating; its handlers are in place only inside the block."""
    src, stim = sim_session(config, SCRIPT)
    before = signal.getsignal(sig)
    with stop_on_signals() as stop:
        assert signal.getsignal(sig) is not before
        out = run_loop(config, src, stim, options=FAST, stop=stop,
                       control=when_stimulating(stim, lambda: os.kill(os.getpid(), sig)))
    assert signal.getsignal(sig) is before  # restored
    assert (out.reason, out.exit_code) == (reason, code)
    assert out.message == MESSAGES[reason]
    assert out.samples < 4 * 2000  # at once, not at the duration
    assert_all_off(stim)
    assert np.isfinite(out.stop_to_off_ms)


def test_a_signal_wakes_a_stop_request_wait():
    """stim-test waits on the request between commands: a signal (which may not take a
    lock) is seen within SIGNAL_POLL_S, a request from another thread at once."""
    with stop_on_signals() as stop:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        t0 = time.monotonic()
        assert stop.wait(5.0)
        waited = time.monotonic() - t0
    assert stop.reason == "sigterm" and 0.04 < waited < 0.05 + SIGNAL_POLL_S + 0.5
    other = StopRequest()
    threading.Timer(0.05, other.set, ("stop_button",)).start()
    assert other.wait(5.0) and other.reason == "stop_button"
    assert not StopRequest().wait(0.02)


def test_the_first_stop_request_wins():
    stop = StopRequest()
    stop.set_from_signal("sighup")
    stop.set("stop_button")
    assert stop.reason == "sighup" and stop.is_set() and np.isfinite(stop.wall)


def test_say_survives_an_output_that_is_gone():
    """After SIGHUP the terminal is gone (EIO); a pipe's reader may be gone (EPIPE):
    the summary must not fail the command or the interpreter's final flush."""
    r, w = os.pipe()
    os.close(r)
    stream = os.fdopen(w, "w")
    try:
        assert say("session ended: ...", file=stream) is False  # EPIPE, not raised
        assert say("  all channels off: yes", file=stream)  # now to the null device
    finally:
        stream.close()  # flushes: must not raise either


class Failing(Source):
    """Wraps a source; from ``fail_at`` reads on, raises ``exc`` (None: returns nothing,
    a stalled stream)."""

    def __init__(self, inner: Source, fail_at: int, exc: BaseException | None) -> None:
        super().__init__()
        self.inner, self.fail_at, self.exc, self.reads = inner, fail_at, exc, 0
        self._info = inner.info

    @property
    def position(self) -> int:
        return self.inner.position

    @property
    def exhausted(self) -> bool:
        return False  # it fails or stalls instead

    def read(self, timeout: float) -> Chunk | None:
        self.reads += 1
        if self.reads >= self.fail_at:
            if self.exc is None:
                time.sleep(timeout)
                return None
            raise self.exc
        return self.inner.read(timeout)


@pytest.mark.parametrize(("exc", "reason", "code", "words"), [
    (RuntimeError("amplifier driver bug"), "error", 1, "unexpected RuntimeError"),
    (DeviceLostError("EMG stream lost"), "device", 5, "EMG stream lost"),
    (None, "stall", 4, "check the amplifier"),
])
def test_source_failures_while_stimulating(config, exc, reason, code, words):
    src, stim = sim_session(config, SCRIPT)
    failing = Failing(src, fail_at=270, exc=exc)  # 270 chunks of 10 ms: at 2.7 s
    out = run_loop(config, failing, stim, options=replace(FAST, watchdog_s=0.1))
    assert (out.reason, out.exit_code) == (reason, code)
    assert words in out.message
    assert 2.6 * 2000 < out.samples < 2.8 * 2000
    assert stim.commands[0].is_on  # stimulation was on when it failed
    assert_all_off(stim)
    if exc is not None and code == 1:
        assert out.error is exc


@pytest.mark.parametrize(("exc", "reason", "code"), [
    (RuntimeError("driver bug"), "error", 1),
    (DeviceLostError("no answer from the stimulator"), "device", 5),
    (StimulatorError("stimulation error -1: emergency switch pressed"), "device", 5),
])
def test_stimulator_failures_while_stimulating(config, exc, reason, code):
    src, stim = sim_session(config, SCRIPT)
    out = run_loop(config, src, stim, options=FAST,
                   control=when_stimulating(stim, lambda: stim.fail_next(exc, on="check")))
    assert (out.reason, out.exit_code) == (reason, code)
    assert str(exc) in out.message
    assert_all_off(stim)


def test_stimulator_that_cannot_be_switched_off_is_reported(config):
    src, stim = sim_session(config, SCRIPT)

    def fail_twice():
        stim.fail_next(DeviceLostError("port gone"), on="check")
        stim.fail_next(DeviceLostError("port gone"), on="stop_all")

    out = run_loop(config, src, stim, options=FAST, control=when_stimulating(stim, fail_twice))
    assert out.exit_code == 5 and not out.all_off
    assert "could NOT confirm all channels off" in out.message


@pytest.mark.parametrize(("field", "excess"), [
    ("pulse_width_us", lambda limits: 1.1 * limits.max_pulse_width_us),  # just above
    ("current_ma", lambda limits: limits.max_current_ma + 10.0),
])
def test_safety_violation_stops_with_exit_6(config, field, excess):
    limits = config.muscle("biceps").limits
    value = excess(limits)

    def greedy(settings, muscles, fs):  # a protocol that asks for more than the limit
        proto = make_protocol(settings, muscles, fs)
        step = proto.step
        proto.step = lambda block: [replace(c, **{field: value}) if c.is_on else c
                                    for c in step(block)]
        return proto

    src, stim = sim_session(config, SCRIPT)
    out = run_loop(config, src, stim, options=FAST, protocol_factory=greedy)
    assert (out.reason, out.exit_code) == ("safety", 6)
    assert "safety stop" in out.message and out.violations
    assert out.trials["trials"] == 1  # it stopped at the first trigger
    limit = {"pulse_width_us": limits.max_pulse_width_us, "current_ma": limits.max_current_ma}
    assert all(getattr(c, field) <= limit[field] for c in stim.commands)  # never sent
    assert not stim.any_on


def test_a_protocol_that_does_not_wait_for_the_rate_check_is_held_by_the_guard(config):
    """A researcher's protocol that ignores ``first_sample`` starts a train at an onset in
    the stream's first 2 s: the session's guard refuses that train to its end (a limit,
    ``rate_unchecked``: the session goes on), nothing reaches the stimulator before
    then, and the next attempt, after the protocol's rest, stimulates."""

    def eager(settings, muscles, fs):
        proto = make_protocol(settings, muscles, fs)
        step = proto.step

        def step_at_once(block):
            proto.first_sample = 0  # it does not wait
            return step(block)

        proto.step = step_at_once
        return proto

    script = [Attempt("biceps", 1.0, 1.0, 1.0, 0.04), Attempt("biceps", 10.5, 1.0, 1.0, 0.04)]
    src, stim = sim_session(config, script)
    out = run_loop(config, src, stim, options=LoopOptions(duration_s=12.0, watchdog_s=2.0),
                   protocol_factory=eager)
    assert (out.reason, out.exit_code) == ("duration", 0) and out.trials["trials"] == 2
    (refused,) = out.violations
    assert "refused at 1.0" in refused and "[safety] wait_for_rate" in refused
    on = [a.command for a in stim.log if a.command.is_on]
    assert on and on[0].sample / 2000 == pytest.approx(10.5, abs=0.1)
    assert_all_off(stim)


def test_unusable_input_exit_7(config):
    src, stim = sim_session(config, SCRIPT)

    class WrongShape(Failing):
        def read(self, timeout):
            chunk = self.inner.read(timeout)
            self.reads += 1
            if self.reads >= self.fail_at:  # a channel disappears mid-session
                return Chunk(chunk.samples[:, :1], chunk.timestamps, chunk.counter)
            return chunk

    out = run_loop(config, WrongShape(src, 270, None), stim, options=FAST)
    assert (out.reason, out.exit_code) == ("input", 7)
    assert_all_off(stim)


def test_stuck_stimulator_call_trips_the_watchdog(config):
    src, stim = sim_session(config, SCRIPT)
    apply = stim.apply
    stuck = []

    def slow_apply(commands):
        if not stuck and stim.any_on:  # the second command hangs in the "driver" for 1 s
            stuck.append(True)
            time.sleep(1.0)
        apply(commands)

    stim.apply = slow_apply
    out = run_loop(config, src, stim, options=replace(FAST, watchdog_s=0.1))
    assert (out.reason, out.exit_code) == ("stall", 4)
    assert "watchdog" in out.message
    assert_all_off(stim)
