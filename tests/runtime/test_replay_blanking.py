"""Replay reproduces the blanking exactly: a live session's commands carry the sample at
which each took effect, and a replay that reuses them (cutting its chunks there) gives
the same envelope to the bit, whatever its own chunk sizes."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.runtime.replay import RecordedEffect, SplitSource
from closedloop.sim.patient import Attempt
from closedloop.stim.drivers.sim import SimStimulator
from tests.runtime.conftest import ArraySource, Capture, sim_session

FS = 2000.0
#: From 2.2 s: the guard lets no stimulation start in the stream's first 2 s.
SCRIPT = [Attempt("biceps", 2.2, 1.0, 1.0, 0.04), Attempt("triceps", 3.8, 1.0, 1.0, 0.04),
          Attempt("biceps", 5.1, 0.5, 1.0, 0.04)]


@pytest.fixture(scope="module")
def live(config):
    src, stim = sim_session(config, SCRIPT, chunk=20)
    cap = Capture()
    out = run_loop(config, src, stim, outlets=cap, options=LoopOptions(duration_s=8.2))
    assert out.reason == "duration" and out.trials["trials"] == 1
    return out, cap


def replay(config, cap, sizes, *, recorded=True, rates=True):
    """Replay the captured EMG as ``closedloop replay`` does (``recorded=False``: as if
    the recording held no effective samples; ``rates=False``: no delivered rates)."""
    x = np.vstack(cap.emg)
    rec = [c for c in cap.commands if c.effective_sample >= 0] if recorded else []
    src = SplitSource(ArraySource(x, FS, config.muscle_names, sizes),
                      sorted({c.effective_sample for c in rec}))
    again = Capture()
    stim = SimStimulator(rates={c.frequency_hz: c.delivered_hz for c in cap.commands
                                if np.isfinite(c.delivered_hz)} if rates else None)
    with src, stim:
        out = run_loop(config, src, stim, outlets=again,
                       effective_sample=RecordedEffect(rec) if recorded else None,
                       options=LoopOptions(watchdog_s=5.0))
    return out, again


def test_effective_samples_are_recorded(live):
    out, cap = live
    handed = [c for c in cap.commands if c.effective_sample >= 0]
    assert len(handed) >= 20
    # a command decided in a 20-sample block takes effect at the block's end
    assert all(c.sample < c.effective_sample <= c.sample + 20 for c in handed)
    assert all(c.effective_sample % 20 == 0 for c in handed)


@pytest.mark.parametrize("sizes", [(7,), (333, 1, 50), (4000,)])
def test_replay_reuses_them_and_gives_the_same_envelope_to_the_bit(config, live, sizes):
    out, cap = live
    r_out, again = replay(config, cap, sizes)
    assert [c.decision_key() for c in r_out.commands] == [c.decision_key() for c in out.commands]
    effective = [c.effective_sample for c in cap.commands]
    assert [c.effective_sample for c in again.commands] == effective
    key = lambda e: (e.sample, e.channel, e.kind, e.envelope, e.threshold)  # noqa: E731
    assert [key(e) for e in r_out.events] == [key(e) for e in out.events]  # times: i / fs
    np.testing.assert_array_equal(np.vstack(again.envelope), np.vstack(cap.envelope))


def test_without_them_the_blanking_would_differ(config, live):
    _, cap = live
    _, again = replay(config, cap, (333,), recorded=False)  # take effect at chunk ends
    assert not np.array_equal(np.vstack(again.envelope), np.vstack(cap.envelope))


# -- a device whose timer has coarse steps ---------------------------------------------------
COARSE = {35.0: 1000.0 / 29.0}  # a RehaStim2 runs 35 Hz with a 29 ms period (34.48 Hz)


@pytest.fixture(scope="module")
def coarse(config):
    """One long biceps train (4 s, ~140 pulses) from a device 1.5 % slower than asked:
    pulses blanked at the commanded rate would drift out of their windows within 1 s."""
    src, stim = sim_session(config, [Attempt("biceps", 2.2, 1.0, 1.0, 0.04)], chunk=20,
                            rates=COARSE)
    cap = Capture()
    out = run_loop(config, src, stim, outlets=cap, options=LoopOptions(duration_s=7.7))
    return out, cap, stim


def test_commands_say_the_rate_the_device_delivers(coarse):
    _, cap, stim = coarse
    on = [c for c in cap.commands if c.is_on]
    assert len(on) >= 15 and all(c.delivered_hz == pytest.approx(1000.0 / 29.0) for c in on)
    assert all(c.pulse_rate_hz == c.delivered_hz and c.frequency_hz == 35.0 for c in on)


def test_blanking_stays_on_the_delivered_pulses(coarse):
    """Every pulse of the whole train is blanked: the stimulated biceps shows one onset
    and one offset (the patient's), the triceps (cross-talk) nothing."""
    out, _, _ = coarse
    assert [(e.channel, e.kind) for e in out.events if e.kind != "suspend"] == [
        ("biceps", "onset"), ("biceps", "offset")]


def test_replay_uses_the_recorded_rates(config, coarse):
    out, cap, _ = coarse
    r_out, again = replay(config, cap, (333,))
    assert [c.decision_key() for c in r_out.commands] == [c.decision_key() for c in out.commands]
    np.testing.assert_array_equal(np.vstack(again.envelope), np.vstack(cap.envelope))
    _, without = replay(config, cap, (333,), rates=False)
    assert not np.array_equal(np.vstack(without.envelope), np.vstack(cap.envelope))
