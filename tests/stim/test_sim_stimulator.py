"""SimStimulator: log, outputs, pulse timing in stream time, fault injection."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.errors import DeviceLostError, StimulatorError
from closedloop.stim.base import ChannelOutput
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.sim import PULSE_DTYPE, SimStimulator


def cmd(t: float, current: float, f: float = 50.0, channel: int = 1, pw: float = 250.0,
        muscle: str = "biceps", handed: float = float("nan")) -> StimCommand:
    return StimCommand(muscle, channel, current, pw, f, int(t * 1000), t, "plateau",
                       handed_wall=handed)


@pytest.fixture
def stim():
    s = SimStimulator(wall_clock=lambda: 42.0)
    s.open()
    yield s
    s.close()


def test_apply_requires_open_and_valid_channel():
    s = SimStimulator()
    with pytest.raises(StimulatorError, match="not open; call open"):
        s.apply([cmd(0.0, 5.0)])
    s.open()
    with pytest.raises(StimulatorError, match="channels 1..8; got channel 9"):
        s.apply([cmd(0.0, 5.0), cmd(0.0, 5.0, channel=9)])
    assert s.log == () and s.outputs == {}  # nothing applied from a refused list


def test_pulses_at_t0_plus_k_over_f_in_half_open_range(stim):
    stim.apply([cmd(10.0, 5.0, f=50.0)])
    stim.apply([cmd(10.1, 0.0, f=50.0)])  # off at 10.1: the pulse at 10.1 is not sent
    p = stim.pulses(0.0, 100.0)
    assert p.dtype == PULSE_DTYPE
    np.testing.assert_allclose(p["time"], 10.0 + np.arange(5) / 50.0)
    assert set(p["channel"]) == {1} and set(p["current_ma"]) == {5.0}
    assert set(p["pulse_width_us"]) == {250.0}
    # half-open: a pulse exactly at t_start counts, one exactly at t_end does not
    assert stim.pulses(10.0, 10.02)["time"].tolist() == [10.0]
    assert stim.pulses(10.02, 10.04)["time"].tolist() == [pytest.approx(10.02)]
    assert stim.pulses(20.0, 30.0).size == 0


def test_adjacent_windows_tile_exactly(stim):
    stim.apply([cmd(1.0, 5.0, f=35.0), cmd(1.013, 3.0, f=27.0, channel=2)])
    stim.apply([cmd(2.5, 7.0, f=35.0)])
    stim.apply([cmd(3.3, 7.0, f=40.0)])
    stim.apply([cmd(5.0, 0.0, f=40.0), cmd(4.0, 0.0, f=27.0, channel=2)])
    whole = stim.pulses(0.0, 6.0)
    edges = np.concatenate([[0.0], np.sort(np.random.default_rng(0).uniform(0, 6, 97)), [6.0]])
    parts = np.concatenate([stim.pulses(a, b) for a, b in zip(edges[:-1], edges[1:],
                                                                strict=True)])
    np.testing.assert_array_equal(parts, whole)
    assert np.all(np.diff(whole["time"]) >= 0)


def test_level_change_keeps_the_grid_frequency_change_moves_it(stim):
    stim.apply([cmd(0.0, 5.0, f=10.0)])
    stim.apply([cmd(0.25, 8.0, f=10.0)])   # level change between pulses 0.2 and 0.3
    stim.apply([cmd(0.55, 8.0, f=20.0)])   # frequency change: next old pulse is 0.6
    stim.apply([cmd(0.92, 0.0, f=20.0)])
    p = stim.pulses(0.0, 1.0)
    np.testing.assert_allclose(p["time"], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7,
                                           0.75, 0.8, 0.85, 0.9])
    assert p["current_ma"].tolist() == [5.0] * 3 + [8.0] * 10


def test_level_change_exactly_on_a_pulse_gives_that_pulse_the_new_level(stim):
    stim.apply([cmd(0.0, 5.0, f=10.0)])
    stim.apply([cmd(0.2, 9.0, f=10.0)])
    p = stim.pulses(0.0, 0.35)
    assert p["current_ma"].tolist() == [5.0, 5.0, 9.0, 9.0]


def test_injected_clock_sets_t0(stim):
    now = [100.0]
    s = SimStimulator(clock=lambda: now[0])
    s.open()
    s.apply([cmd(3.0, 5.0, f=20.0)])  # command says 3.0, the clock says 100.0
    now[0] = 100.2
    s.apply([cmd(3.3, 0.0, f=20.0)])
    np.testing.assert_allclose(s.pulses(0, 1000)["time"], [100.0, 100.05, 100.1, 100.15])
    assert [a.stream_time for a in s.log] == [100.0, 100.2]


def test_log_outputs_and_wall_times(stim):
    stim.apply([cmd(1.0, 5.0, handed=7.5), cmd(1.0, 3.0, channel=2, muscle="triceps")])
    assert [a.wall for a in stim.log] == [7.5, 42.0]
    assert [a.command.muscle for a in stim.log] == ["biceps", "triceps"]
    assert stim.commands[0].current_ma == 5.0
    assert stim.outputs == {1: ChannelOutput(5.0, 250.0, 50.0), 2: ChannelOutput(3.0, 250.0, 50.0)}
    assert stim.any_on


def test_stop_all_switches_everything_off_and_is_always_safe():
    s = SimStimulator()
    s.stop_all()  # never opened: fine
    s.open()
    s.apply([cmd(1.0, 5.0), cmd(1.0, 3.0, channel=2)])
    s.apply([cmd(1.5, 5.0)])
    s.stop_all()
    s.stop_all()
    assert not s.any_on
    stops = [a for a in s.log if a.command.phase == "stop"]
    assert {a.command.channel for a in stops} == {1, 2}
    assert all(a.stream_time == 1.5 for a in stops)  # latest stream time seen
    assert s.pulses(1.5, 100.0).size == 0
    assert s.pulses(1.0, 1.5).size == 2 * 25
    s.close()
    s.close()
    assert not s.is_open


def test_close_stops_all():
    s = SimStimulator()
    with s:
        s.apply([cmd(1.0, 5.0)])
    assert not s.any_on and s.log[-1].command.phase == "stop"


def test_fail_next_apply_changes_nothing_and_fires_once(stim):
    stim.apply([cmd(1.0, 5.0)])
    stim.fail_next(DeviceLostError("cable pulled"))
    with pytest.raises(DeviceLostError, match="cable pulled"):
        stim.apply([cmd(1.1, 0.0)])
    assert stim.outputs[1].current_ma == 5.0 and len(stim.log) == 1
    stim.apply([cmd(1.2, 0.0)])
    assert not stim.any_on


def test_fail_next_stop_all_and_check(stim):
    stim.apply([cmd(1.0, 5.0)])
    stim.fail_next(StimulatorError("no ack"), on="stop_all")
    with pytest.raises(StimulatorError, match="no ack"):
        stim.stop_all()
    assert stim.any_on  # the device "did not hear" it
    stim.stop_all()
    assert not stim.any_on
    stim.check()
    stim.fail_next(StimulatorError("emergency switch"), on="check")
    with pytest.raises(StimulatorError, match="emergency switch"):
        stim.check()
    stim.check()
    with pytest.raises(ValueError, match="expected one of"):
        stim.fail_next(RuntimeError(), on="open")


def test_zero_frequency_or_forgotten_segments_give_no_pulses(stim):
    stim.apply([cmd(0.0, 5.0, f=0.0)])
    assert stim.pulses(0.0, 10.0).size == 0
    stim.apply([cmd(1.0, 5.0, f=10.0)])
    stim.apply([cmd(2.0, 0.0, f=10.0)])
    assert stim.pulses(0.0, 10.0).size == 10
    stim.forget_before(2.0)
    assert stim.pulses(0.0, 10.0).size == 0


def test_the_log_keeps_the_last_commands_only():
    """An hour of simulated stimulation must not grow memory: the log is bounded."""
    s = SimStimulator(log_limit=5)
    s.open()
    for k in range(12):
        s.apply([StimCommand("biceps", 1, float(k % 3), 200.0, 35.0, k, k * 0.1, "plateau")])
    s.stop_all()
    assert len(s.log) == 5 and s.log[-1].command.phase == "stop"
    assert [a.command.sample for a in s.log[:4]] == [8, 9, 10, 11]


def test_a_coarse_timer_delivers_its_own_rate():
    """``rates`` plays a device whose period has steps: 35 Hz asked, 29 ms delivered."""
    s = SimStimulator(rates={35.0: 1000.0 / 29.0})
    s.open()
    assert s.delivered_hz(35.0) == pytest.approx(34.4827586) and s.delivered_hz(50.0) == 50.0
    s.apply([StimCommand("biceps", 1, 10.0, 200.0, 35.0, 0, 0.0, "plateau")])
    times = s.pulses(0.0, 1.0)["time"]
    np.testing.assert_allclose(np.diff(times), 0.029)
    assert s.outputs[1].frequency_hz == pytest.approx(1000.0 / 29.0)
