"""The guarded stim test: refusals before sending, ramp-hold-ramp, always all-off."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.config.stimulation import ChannelLimits, SafetySettings
from closedloop.errors import ConfigError, DeviceLostError, SafetyError
from closedloop.stim.drivers.sim import SimStimulator
from closedloop.stim.guard import GuardChannel, SafetyGuard
from closedloop.stim.stimtest import run_stim_test

FS = 1000.0
LIM = ChannelLimits(max_current_ma=30.0, max_pulse_width_us=300.0, max_frequency_hz=50.0,
                    max_charge_uc=6.0, max_on_time_s=5.0, min_rest_s=3.0, max_step_ma=2.0)


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def setup():
    guard = SafetyGuard([GuardChannel("biceps", 1, LIM, ("triceps",)),
                         GuardChannel("triceps", 2, LIM)], SafetySettings(), FS)
    stim = SimStimulator(clock=None)
    stim.open()
    return guard, stim, FakeTime()


def run(guard, stim, t, current=10.0, pw=250.0, f=35.0, duration=1.0, muscle="biceps",
        channel=1, **kw):
    return run_stim_test(stim, guard, muscle, channel, LIM, current, pw, f, duration,
                         sleep=t.sleep, clock=t.clock, **kw)


def test_ramp_hold_ramp_in_guard_limited_steps():
    guard, stim, t = setup()
    summary = run(guard, stim, t, current=10.0, duration=1.0)
    levels = [a.command.current_ma for a in stim.log if a.command.phase == "test"]
    assert levels == [2.0, 4.0, 6.0, 8.0, 10.0, 8.0, 6.0, 4.0, 2.0, 0.0]
    assert max(np.diff([0.0] + levels)) <= LIM.max_step_ma
    # paced on the clock: 50 ms per step, 1 s hold
    times = [a.stream_time for a in stim.log if a.command.phase == "test"]
    np.testing.assert_allclose(np.diff(times), [0.05] * 4 + [1.0] + [0.05] * 4)
    assert t.now - 1000.0 == pytest.approx(1.4)
    assert summary.completed and summary.peak_current_ma == 10.0
    assert summary.n_commands == 10 and summary.violations == ()
    assert (summary.start_sample, summary.end_sample) == (0, 1400)
    assert not stim.any_on and stim.log[-1].command.phase == "stop"
    assert guard.level("biceps") == 0.0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"current": 31.0}, "current 31 mA is above the channel limit of 30 mA"),
        ({"pw": 350.0}, "pulse width 350 us is above"),
        ({"f": 60.0}, "frequency 60 Hz is above"),
        ({"current": 25.0, "pw": 300.0}, "charge per phase 7.5 uC is above"),
        ({"duration": 4.8}, r"make 5.2 s, above max_on_time_s = 5 s; use duration_s <= 4.6"),
    ],
)
def test_beyond_limits_refused_before_anything_is_sent(kw, match):
    guard, stim, t = setup()
    with pytest.raises(SafetyError, match=match):
        run(guard, stim, t, **kw)
    assert stim.log == () and t.sleeps == []
    assert guard.violations == ()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"current": -1.0}, "current_ma = -1.0 must be a positive number"),
        ({"duration": math.nan}, "duration_s = nan"),
        ({"channel": 2}, "is on stimulator channel 1 in the config, not 2"),
        ({"muscle": "deltoid"}, "does not know muscle 'deltoid'"),
        ({"step_s": 0.0}, "step_s = 0.0"),
    ],
)
def test_bad_requests_are_config_errors(kw, match):
    guard, stim, t = setup()
    with pytest.raises(ConfigError, match=match):
        run(guard, stim, t, **kw)
    assert stim.log == ()


def test_driver_error_still_ends_all_off():
    guard, stim, t = setup()
    calls = {"n": 0}
    real_apply = stim.apply

    def flaky(cmds):
        calls["n"] += 1
        if calls["n"] == 4:
            raise DeviceLostError("port gone")
        real_apply(cmds)

    stim.apply = flaky
    with pytest.raises(DeviceLostError, match="port gone"):
        run(guard, stim, t)
    assert not stim.any_on and stim.log[-1].command.phase == "stop"
    assert guard.level("biceps") == 0.0


def test_keyboard_interrupt_ends_all_off():
    guard, stim, t = setup()

    def sleep(s: float) -> None:
        t.sleep(s)
        if len(t.sleeps) == 5:  # the hold (the first step is sent without a wait)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stim_test(stim, guard, "biceps", 1, LIM, 10.0, 250.0, 35.0, 1.0,
                      sleep=sleep, clock=t.clock)
    assert stim.log[-2].command.current_ma == 10.0
    assert not stim.any_on and stim.log[-1].command.phase == "stop"
    assert stim.pulses(t.now, t.now + 100).size == 0


def test_guard_stop_during_test_raises_and_ends_all_off():
    # the guard knows stricter limits than the ones handed to the test
    strict = ChannelLimits(max_current_ma=5.0, max_step_ma=2.0)
    guard = SafetyGuard([GuardChannel("biceps", 1, strict)], SafetySettings(), FS)
    stim = SimStimulator()
    stim.open()
    t = FakeTime()
    with pytest.raises(SafetyError, match="stopped by the safety guard.*max_current_ma"):
        run_stim_test(stim, guard, "biceps", 1, LIM, 10.0, 250.0, 35.0, 1.0,
                      sleep=t.sleep, clock=t.clock)
    assert max(a.command.current_ma for a in stim.log) == 4.0
    assert not stim.any_on
    with pytest.raises(SafetyError, match="has stopped stimulation"):
        run_stim_test(stim, guard, "biceps", 1, LIM, 2.0, 250.0, 35.0, 1.0,
                      sleep=t.sleep, clock=t.clock)


def test_second_test_waits_for_the_channel_rest():
    guard, stim, t = setup()
    run(guard, stim, t)
    before = t.now
    summary = run(guard, stim, t)
    assert summary.violations == () and summary.peak_current_ma == 10.0
    # off at sample 1400, min rest 3 s: the second test starts at sample 4400
    assert summary.start_sample == 4400
    first_on = next(a.stream_time for a in stim.log[11:] if a.command.current_ma > 0)
    assert first_on - before == pytest.approx(3.0 - 0.001)


class FakeStop:
    """A stop request made ``at`` a time of the fake clock (as a signal would be)."""

    def __init__(self, t: FakeTime, at: float, reason: str = "sigterm") -> None:
        self.t, self.at, self._reason, self.reason = t, at, reason, ""

    def is_set(self) -> bool:
        if self.t.now >= self.at:
            self.reason = self._reason
        return bool(self.reason)

    def wait(self, timeout: float) -> bool:
        self.t.now = min(self.t.now + timeout, max(self.t.now, self.at))
        return self.is_set()


def test_a_stop_request_during_the_hold_ends_the_test_at_once_all_off():
    guard, stim, t = setup()
    stop = FakeStop(t, at=t.now + 0.2 + 0.5)  # half-way through the 1 s hold
    summary = run(guard, stim, t, current=10.0, duration=1.0, stop=stop)
    levels = [a.command.current_ma for a in stim.log if a.command.phase == "test"]
    assert levels == [2.0, 4.0, 6.0, 8.0, 10.0]  # no ramp-down: off at once
    assert t.now == pytest.approx(stop.at)  # it waited on the request, not the full hold
    assert not summary.completed and summary.stopped == "sigterm"
    assert summary.n_commands == 5 and math.isfinite(summary.off_wall)
    assert not stim.any_on and stim.log[-1].command.phase == "stop"
    assert guard.level("biceps") == 0.0


def test_a_stop_requested_before_the_first_command_sends_nothing_but_the_off():
    guard, stim, t = setup()
    summary = run(guard, stim, t, stop=FakeStop(t, at=t.now, reason="sighup"))
    assert summary.stopped == "sighup" and summary.n_commands == 0
    assert stim.log == () and not stim.any_on  # nothing was ever on
    assert math.isfinite(summary.off_wall)  # stop_all() was called all the same
