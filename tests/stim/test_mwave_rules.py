"""The M-wave rules (no response, fatigue) on records, and the guard's channel stop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.config.stimulation import MWaveRules
from closedloop.core.evoked import MWave
from closedloop.stim.guard import Rule, Severity
from closedloop.stim.mwave_rules import FATIGUE, NO_RESPONSE, ChannelStop, ResponseRules
from tests.stim.test_guard import FS, block, cmd, make_guard


def rec(sample: int, *, present: bool = True, pp: float = 2e-3, current: float = 20.0,
        n: int = 17, noise: float = 2e-6, first: int | None = None) -> MWave:
    first = sample - 1000 if first is None else first
    return MWave(sample=sample, time=sample / FS, muscle="biceps", channel=1,
                 first_sample=first, last_sample=sample - 30, n_pulses=n, current_ma=current,
                 pulse_width_us=250.0, peak_to_peak=pp, area=0.0, latency_s=math.nan,
                 end_s=math.nan, noise=noise, present=present, offset_s=0.002,
                 waveform=np.zeros(3))


def test_no_response_warns_at_once_and_stops_the_channel_after_the_set_time():
    rules = ResponseRules(MWaveRules(no_response_s=1.0, no_response_min_ma=10.0), FS)
    n, s = rules.feed([rec(1500, present=False, first=1000)])
    assert [x.kind for x in n] == [NO_RESPONSE] and not s
    assert "check the electrodes" in n[0].message
    n, s = rules.feed([rec(1900, present=False)])
    assert not n and not s  # 0.9 s without a response
    n, s = rules.feed([rec(2000, present=False)])
    assert not n and [x.sample for x in s] == [2000] and s[0].muscle == "biceps"
    assert rules.feed([rec(3000, present=False)]) == ([], [])  # stopped once


@pytest.mark.parametrize("record", [
    rec(2500, present=False, current=8.0),  # below the motor threshold: expected
    rec(2500, present=False, n=2),  # too few pulses to tell
    rec(2500, present=False, noise=math.nan),  # noise unknown
])
def test_records_that_cannot_tell_neither_warn_nor_stop(record):
    rules = ResponseRules(MWaveRules(no_response_s=1.0, no_response_min_ma=10.0), FS)
    assert rules.feed([record]) == ([], [])


def test_a_response_ends_the_stretch_and_rules_are_off_by_default():
    rules = ResponseRules(MWaveRules(no_response_s=1.0), FS)
    rules.feed([rec(1500, present=False, first=1000)])
    assert rules.feed([rec(1800)]) == ([], [])
    n, s = rules.feed([rec(2400, present=False, first=2300)])
    assert n and not s  # warned again, counting from 2300
    assert rules.feed([rec(3200, present=False)])[1] == []
    assert rules.feed([rec(3300, present=False)])[1]
    off = ResponseRules(MWaveRules(), FS)
    assert not MWaveRules().enabled
    assert off.feed([rec(9000, present=False, first=0)]) == ([], [])


def test_fatigue_compares_each_level_with_its_first_record_once_per_repetition():
    rules = ResponseRules(MWaveRules(fatigue_percent=70.0, fatigue_action="lower"), FS)
    assert rules.feed([rec(1000, pp=2e-3), rec(1000, pp=1e-3, current=12.0)]) == ([], [])
    assert rules.feed([rec(1500, pp=1.5e-3)]) == ([], [])  # 75 %
    n, _ = rules.feed([rec(2000, pp=1.3e-3), rec(2000, pp=1e-3, current=12.0)])
    assert [(x.kind, x.action) for x in n] == [(FATIGUE, "lower")]
    assert "65 %" in n[0].message and "lowered by 10 %" in n[0].message
    assert rules.feed([rec(2500, pp=1.0e-3)]) == ([], [])  # once per repetition
    n, _ = rules.feed([rec(5000, pp=1.0e-3)])  # a pause of more than 1 s: a new one
    assert [x.kind for x in n] == [FATIGUE]
    warn = ResponseRules(MWaveRules(fatigue_percent=70.0), FS)
    warn.feed([rec(1000)])
    assert warn.feed([rec(1500, pp=1e-3)])[0][0].action == ""


def test_the_guard_stops_one_channel_for_the_session_and_the_other_goes_on():
    g = make_guard()
    out = g.filter([cmd("biceps", 100, 2.0), cmd("biceps", 150, 4.0)], block=block(0, 200))
    assert [c.current_ma for c in out] == [2.0, 4.0]
    stop = ChannelStop(250, 0.25, "biceps", "biceps: no evoked response; check the electrodes")
    out = g.filter([cmd("biceps", 240, 6.0), cmd("biceps", 260, 8.0)], block=block(200, 300),
                   stops=[stop])
    assert [(c.sample, c.current_ma, c.phase) for c in out] == [(240, 6.0, "plateau"),
                                                                (250, 0.0, "stop")]
    v = g.pop_violations()
    assert [(x.rule, x.severity, x.sample) for x in v] == [(Rule.NO_RESPONSE, Severity.LIMIT,
                                                            250)]
    assert not g.must_stop and g.level("biceps") == 0.0
    # never again for biceps, even after its rest; triceps is unaffected
    out = g.filter([cmd("biceps", 9000, 2.0), cmd("triceps", 9000, 2.0)],
                   block=block(300, 9100))
    assert [(c.muscle, c.current_ma) for c in out] == [("triceps", 2.0)]
    assert g.pop_violations() == []


def test_a_stop_in_order_with_the_commands_whatever_the_calls():
    """The stop at 250 comes before a command at 260 of the same call and after one at
    240 of an earlier call: the same output however the commands are grouped."""
    stop = ChannelStop(250, 0.25, "biceps", "x")
    a = make_guard()
    one = a.filter([cmd("biceps", 100, 2.0), cmd("biceps", 240, 4.0), cmd("biceps", 260, 6.0)],
                   stops=[stop])
    b = make_guard()
    two = b.filter([cmd("biceps", 100, 2.0), cmd("biceps", 240, 4.0)])
    two += b.filter([cmd("biceps", 260, 6.0)], stops=[stop])
    assert [(c.sample, c.current_ma) for c in one] == [(c.sample, c.current_ma) for c in two] \
        == [(100, 2.0), (240, 4.0), (250, 0.0)]
