"""The stimulator fails while stimulating: it stops answering, answers with an error,
reports a stimulation error (electrode), or its port vanishes (USB cable pulled).

The loop runs the simulated patient (in real time) against the strict RehaStim2 emulator on
a pty, recorded. Every fault ends the session with exit 5 and a message naming the
device and what it did; the driver holds every channel off; where the device can still
hear, the stop is confirmed by it, and where it cannot, the clinician is told to switch
it off by hand (the device's own 1.2 s watchdog stops it once the keep-alives stop).
The recording holds every command up to the fault and the final offs.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os

import pytest

from closedloop.runtime.loop import LoopOptions
from closedloop.sim.patient import Attempt
from closedloop.stim.drivers import sciencemode2 as sm
from closedloop.stim.drivers.rehastim2 import RehaStim2
from tests.emulators.rehastim2 import RehaStim2Emulator
from tests.faults.conftest import assert_recording_ends_off, run_recorded
from tests.runtime.conftest import sim_session

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pty")

#: From 2.5 s: no trial starts in the stream's first 2 s (``[safety] wait_for_rate``).
SCRIPT = [Attempt("biceps", 2.5, 1.5, 1.0, 0.04)]


@pytest.fixture
def emulator():
    emu = RehaStim2Emulator(init_interval_s=0.1)
    emu.start()
    yield emu
    emu.stop()


@pytest.mark.parametrize(("fault", "words", "confirmed"), [
    ("go_silent", "did not answer", False),
    ("answer_error", "refused StartChannelListMode", True),
    ("electrode_error", "error -2: electrode error", True),
    ("vanish", "is gone", False),
])
def test_stimulator_fault_while_stimulating(tmp_path, config, emulator, fault, words, confirmed):
    src, _ = sim_session(config, SCRIPT, artifacts=False)
    src.realtime = True  # device faults happen in wall time: let stream time keep pace
    driver = RehaStim2(emulator.path, channels=(1, 2), response_timeout=0.3)
    driver.open()
    injected = []

    def control() -> list[str]:
        if driver.any_on and not injected:
            injected.append(True)
            if fault == "answer_error":
                # the next Start is refused (parameter error), not a mode probe beside it
                emulator.answer_with(-2, "StartChannelListMode")
            else:
                getattr(emulator, fault)()
        return []

    try:
        rec = run_recorded(tmp_path, config, src, driver, control=control,
                           options=LoopOptions(duration_s=8.0, watchdog_s=2.0))
    finally:
        closing = None
        try:
            driver.close()
        except Exception as exc:  # noqa: BLE001 - a lost device cannot be closed cleanly
            closing = exc
    out = rec.out
    assert (out.reason, out.exit_code) == ("device", 5), out.message
    assert words in out.message
    assert out.seconds < 4.5  # ended at the fault, not at the duration
    assert not driver.any_on  # the driver holds every channel off
    assert out.all_off == confirmed
    if confirmed:  # the device heard the stop: nothing runs
        assert emulator.wait_until(lambda e: not e.running_channels, 2.0)
        assert closing is None
    else:
        assert "could NOT confirm all channels off" in out.message
        assert "switch the stimulator off by hand" in out.message
    assert rec.report.ok, rec.report.summary()  # every sample, event and command
    s = rec.session()
    assert s.n == out.samples and any(c.is_on for c in s.commands)
    assert_recording_ends_off(s)


def test_a_device_gone_silent_during_the_plateau_is_found_by_the_probe(tmp_path, config,
                                                                       emulator):
    """The plateau (3 s) sends no command; the driver's mode probe finds the silent device
    within probe_s + response_timeout, long before the ramp-down would have."""
    src, _ = sim_session(config, SCRIPT, artifacts=False)
    src.realtime = True
    driver = RehaStim2(emulator.path, channels=(1, 2), response_timeout=0.3, probe_s=0.5)
    driver.open()
    silent_at: list[float] = []

    def control() -> list[str]:
        if not silent_at and driver.outputs[1].current_ma >= 20.0:  # the plateau level
            silent_at.append(src.now())
            emulator.go_silent()
        return []

    try:
        rec = run_recorded(tmp_path, config, src, driver, control=control,
                           options=LoopOptions(duration_s=8.0, watchdog_s=2.0))
    finally:
        with contextlib.suppress(Exception):  # a lost device cannot be closed cleanly
            driver.close()
    out = rec.out
    assert (out.reason, out.exit_code) == ("device", 5), out.message
    assert "did not answer GetStimulationMode" in out.message
    assert silent_at and out.seconds - (silent_at[0] - src.t0) < 0.5 + 0.3 + 0.4
    assert "could NOT confirm all channels off" in out.message
    assert rec.report.ok, rec.report.summary()


def device_sequence(emulator: RehaStim2Emulator) -> list:
    """What the device executed, in order: the levels of channels 1 and 2 of every
    StartChannelListMode it accepted, "stop" for every accepted StopChannelListMode
    (repeats folded, trailing stops dropped)."""
    seq: list = []
    for r in emulator.received:
        if r.result != 0:
            continue
        if r.cmd == sm.Command.START_CHANNEL_LIST_MODE:
            seq.append((r.data[3], r.data[7]))  # mode, pw, pw, current per channel
        elif r.cmd == sm.Command.STOP_CHANNEL_LIST_MODE and seq and seq[-1] != "stop":
            seq.append("stop")
    while seq and seq[-1] == "stop":
        seq.pop()
    return seq


def handed_sequence(commands) -> list:
    """The same, from the commands the loop handed to the driver (one apply() per
    handed_wall): the driver sends a Start when the levels change and something is on,
    a Stop when all is off."""
    levels = {1: 0, 2: 0}
    seq: list = []
    handed = [c for c in commands if math.isfinite(c.handed_wall)]
    for _, group in itertools.groupby(handed, key=lambda c: c.handed_wall):
        for c in group:
            levels[c.channel] = math.floor(c.current_ma + 1e-6)
        state = (levels[1], levels[2])
        if any(state):
            if not seq or seq[-1] != state:
                seq.append(state)
        elif seq and seq[-1] != "stop":
            seq.append("stop")
    while seq and seq[-1] == "stop":
        seq.pop()
    return seq


def run_busy(tmp_path, config, emulator: RehaStim2Emulator, busy: int | None,
             duration_s: float):
    """Run the recorded loop on the emulator; once stimulating, the next ``busy``
    commands (None: all, until cleared) are answered busy."""
    src, _ = sim_session(config, SCRIPT, artifacts=False)
    src.realtime = True
    driver = RehaStim2(emulator.path, channels=(1, 2), response_timeout=0.3)
    driver.open()
    injected = []

    def control() -> list[str]:
        if driver.any_on and not injected:
            injected.append(True)
            emulator.answer_busy(busy)
        return []

    try:
        return run_recorded(tmp_path, config, src, driver, control=control,
                            options=LoopOptions(duration_s=duration_s, watchdog_s=2.0,
                                                history=None))
    finally:
        driver.close()


def test_a_few_busy_answers_do_not_end_the_session(tmp_path, config, emulator):
    """Busy (-8) means "still processing, not executed": the driver sends the command
    again, the session goes on to its end, and the device executes every level the loop
    decided, in order, exactly once."""
    rec = run_busy(tmp_path, config, emulator, 3, duration_s=7.5)
    out = rec.out
    assert (out.reason, out.exit_code) == ("duration", 0), out.message
    assert emulator.busy_answers == 3 and emulator.violations == []
    assert out.all_off and emulator.running_channels == {}
    sequence = device_sequence(emulator)
    assert len(sequence) >= 10 and sequence == handed_sequence(out.commands)
    assert rec.report.ok, rec.report.summary()


def test_a_device_that_stays_busy_ends_the_session_all_off(tmp_path, config, emulator):
    rec = run_busy(tmp_path, config, emulator, None, duration_s=8.0)
    out = rec.out
    assert (out.reason, out.exit_code) == ("device", 5), out.message
    assert "answered busy (-8)" in out.message
    assert "switch the stimulator off and on" in out.message
    assert out.seconds < 4.5
    assert out.all_off  # StopChannelListMode is never busy: the device confirmed the stop
    assert emulator.running_channels == {} and emulator.watchdog_expiries == 0
    assert rec.report.ok, rec.report.summary()
    assert_recording_ends_off(rec.session())


def test_a_device_at_its_max_response_time_keeps_a_session_with_the_run_watchdog(config):
    """A compliant RehaStim2 may take its MaxResponseTime (100 ms, DOC2 Table 7) for every
    answer; the first stimulation of an attempt then blocks the loop for two transactions
    (InitChannelListMode, StartChannelListMode), every later level for one. With the
    watchdog ``closedloop run`` uses (the config's ``watchdog_ms``, its backstop 0.25 s)
    the session still runs to its end, stimulating, and stops all off: a slow device is
    not taken for a hung loop. (A third transaction, the stop before a new frequency, never
    comes: closedloop refuses programs with two rates for the RehaStim2.)"""
    from closedloop.runtime.loop import run_loop

    emu = RehaStim2Emulator(init_interval_s=0.1, response_delay_s=sm.MAX_RESPONSE_TIME_S)
    emu.start()
    try:
        src, _ = sim_session(config, SCRIPT, artifacts=False)
        src.realtime = True
        with RehaStim2(emu.path, channels=(1, 2)) as driver:  # the command line's waits
            out = run_loop(config, src, driver, options=LoopOptions(
                duration_s=5.5, watchdog_s=config.session.watchdog_ms / 1000.0))
        assert (out.reason, out.exit_code) == ("duration", 0), out.message
        assert sum(c.is_on for c in out.commands) >= 5 and out.all_off
        assert emu.violations == [] and emu.running_channels == {}
        inits = [r for r in emu.received if r.cmd == sm.Command.INIT_CHANNEL_LIST_MODE]
        assert inits and all(r.result == 0 for r in emu.received if r.answer)
    finally:
        emu.stop()
