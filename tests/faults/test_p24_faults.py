"""The P24 fails while stimulating: it stops answering, refuses a command, reports an
electrode error or a high-voltage fault, sends damaged data, or its USB device vanishes.

The same faults as ``test_stimulator_faults.py`` (the RehaStim2), through the real loop:
the simulated patient (in real time) against the strict P24 emulator on a pty, recorded
by LabRecorder. Every fault ends the session with exit 5 and a message naming the device
and what it did; the driver holds every channel off; where the device still hears, the
stop is confirmed by it, and where it cannot, the clinician is told to switch it off by
hand (the P24 stops by itself 2 s after the last keep-alive, at once when unplugged).
The recording holds every command up to the fault and the final offs.
"""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

from closedloop.runtime.loop import LoopOptions
from closedloop.sim.patient import Attempt
from tests.emulators.p24 import P24Emulator
from tests.faults.conftest import assert_recording_ends_off, run_recorded
from tests.runtime.conftest import sim_session

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pty"),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="science-mode-4 needs Python 3.11"),
]

#: From 2.5 s: no trial starts in the stream's first 2 s (``[safety] wait_for_rate``).
SCRIPT = [Attempt("biceps", 2.5, 1.5, 1.0, 0.04)]


@pytest.fixture
def emulator():
    emu = P24Emulator()
    emu.start()
    yield emu
    emu.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("fault", "words", "confirmed"), [
    ("go_silent", "did not answer", False),
    ("answer_error", "refused Ml_update: result 2, parameter error", True),
    ("keepalive_error", "refused Ml_get_current_data: result 2, parameter error", True),
    ("electrode_error", "channel 1 (biceps, yellow cable): electrode error", True),
    ("hv_fault", "high-voltage fault", True),
    ("garble", "corrupted data", True),
    ("vanish", "is gone", False),
])
def test_p24_fault_while_stimulating(tmp_path, config, emulator, fault, words, confirmed):
    from closedloop.stim.drivers.p24 import P24

    src, _ = sim_session(config, SCRIPT, artifacts=False)
    src.realtime = True  # device faults happen in wall time: let stream time keep pace
    driver = P24(emulator.path, channels=(1, 2), response_timeout=0.3)
    driver.open()
    injected = []

    def control() -> list[str]:
        if driver.any_on and not injected:
            injected.append(True)
            if fault == "answer_error":
                # the next update is refused (parameter error), not the keep-alive beside it
                emulator.answer_with(2, "Ml_update")
            elif fault == "keepalive_error":  # the keep-alive's probe is refused instead
                emulator.answer_with(2, "Ml_get_current_data")
            elif fault == "electrode_error":
                emulator.electrode_error(1)
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
        assert emulator.level == "none" and closing is None
    else:
        assert "could NOT confirm all channels off" in out.message
        assert "switch the stimulator off by hand" in out.message
        # and the device stops by itself: unplugged at once, silent after its 2 s timeout
        assert emulator.wait_until(lambda e: not e.running_channels, 3.0)
    assert rec.report.ok, rec.report.summary()  # every sample, event and command
    s = rec.session()
    assert s.n == out.samples and any(c.is_on for c in s.commands)
    assert_recording_ends_off(s)


@pytest.mark.timeout(60)
def test_a_p24_gone_silent_during_the_plateau_is_found_by_the_keepalive(tmp_path, config,
                                                                        emulator):
    """The plateau (3 s) sends no command; the keep-alive's Ml_get_current_data finds the
    silent device within keepalive_s + response_timeout, long before the ramp-down."""
    from closedloop.stim.drivers.p24 import P24

    src, _ = sim_session(config, SCRIPT, artifacts=False)
    src.realtime = True
    driver = P24(emulator.path, channels=(1, 2), response_timeout=0.3, keepalive_s=0.25)
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
    assert "did not answer Ml_get_current_data" in out.message
    assert silent_at and out.seconds - (silent_at[0] - src.t0) < 0.25 + 0.3 + 0.4
    assert "could NOT confirm all channels off" in out.message
    assert rec.report.ok, rec.report.summary()
