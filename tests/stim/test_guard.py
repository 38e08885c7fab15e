"""The safety guard: one test per rule, ceilings at load time, and properties.

Property: no sequence of commands and no limit settings make ``filter`` emit a command
outside the limits, both antagonists on at once, a step above ``max_step_ma``, an
on-stretch longer than ``max_on_time_s``, a rest shorter than ``min_rest_s``, more than
the session dose, or a level higher than requested.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.config import ceilings
from closedloop.config.schema import parse_table
from closedloop.config.stimulation import ChannelLimits, MuscleStim, SafetySettings, StimParams
from closedloop.core.events import Block
from closedloop.errors import ConfigError, SafetyError
from closedloop.stim.commands import StimCommand
from closedloop.stim.guard import GuardChannel, Rule, SafetyGuard, Severity

FS = 1000.0
LIM = ChannelLimits(max_current_ma=40.0, max_pulse_width_us=400.0, max_frequency_hz=50.0,
                    max_charge_uc=12.0, max_on_time_s=10.0, min_rest_s=3.0, max_step_ma=2.0)
CH = {"biceps": 1, "triceps": 2}


def make_guard(limits: ChannelLimits = LIM, safety: SafetySettings | None = None,
               co_stimulation: bool = False) -> SafetyGuard:
    chans = [GuardChannel("biceps", 1, limits, ("triceps",)),
             GuardChannel("triceps", 2, limits)]
    return SafetyGuard(chans, safety or SafetySettings(), FS, co_stimulation=co_stimulation)


def cmd(muscle: str, sample: int, current: float, pw: float = 250.0, f: float = 35.0,
        phase: str = "plateau") -> StimCommand:
    return StimCommand(muscle, CH[muscle], current, pw, f, sample, sample / FS, phase)


def block(start: int, stop: int) -> Block:
    n = stop - start
    z = np.zeros((n, 0))
    return Block(start, np.arange(start, stop) / FS, z, z, np.zeros((n, 0), bool),
                 np.zeros(0), np.zeros(0), [], ())


def ramp_on(g: SafetyGuard, muscle: str, sample: int, to: float = 10.0) -> int:
    """Ramp a channel up in allowed 2 mA steps, one per sample; return the next sample."""
    level = 0.0
    while level < to:
        level = min(to, level + 2.0)
        assert g.filter([cmd(muscle, sample, level)])[0].current_ma == level
        sample += 1
    return sample


def rules(g: SafetyGuard) -> list[tuple[Rule, Severity]]:
    return [(v.rule, v.severity) for v in g.violations]


# -- level limits: refuse and stop -------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "rule", "allowed"),
    [
        ({"current": 41.0}, Rule.CURRENT, 40.0),
        ({"current": 2.0, "pw": 401.0}, Rule.PULSE_WIDTH, 400.0),
        ({"current": 2.0, "f": 51.0}, Rule.FREQUENCY, 50.0),
        ({"current": 2.0, "pw": 400.0}, None, None),  # 0.8 uC: fine
    ],
)
def test_level_limits_refuse_and_stop(kwargs, rule, allowed):
    g = make_guard()
    out = g.filter([cmd("biceps", 10, **kwargs)])
    if rule is None:
        assert out[0].current_ma == 2.0 and not g.must_stop
        return
    assert out == []
    (v,) = g.violations
    assert (v.rule, v.severity, v.allowed, v.sample, v.muscle) == (
        rule, Severity.STOP, allowed, 10, "biceps")
    assert v.stops_session and g.must_stop and g.stop_violation is v
    # latched: a later, perfectly legal command is refused too
    assert g.filter([cmd("biceps", 5000, 2.0)]) == []
    assert g.violations[-1].rule is Rule.STOPPED


def test_current_above_limit_switches_everything_off():
    g = make_guard()
    s = ramp_on(g, "biceps", 0, 10.0)
    out = g.filter([cmd("biceps", s, 41.0)])
    assert [(c.muscle, c.current_ma, c.sample, c.phase) for c in out] == [
        ("biceps", 0.0, s, "stop")]
    assert g.level("biceps") == 0.0
    assert g.violations[-1].rule is Rule.CURRENT


def test_charge_limit():
    g = make_guard()
    # 2 mA x 400 us = 0.8 uC is fine; ramp to 32 mA x 400 us = 12.8 uC > 12 uC
    s = ramp_on(g, "biceps", 0, 30.0)
    assert g.filter([cmd("biceps", s, 30.0, pw=400.0)])[0].charge_uc == pytest.approx(12.0)
    out = g.filter([cmd("biceps", s + 1, 32.0, pw=400.0)])
    assert [c.current_ma for c in out] == [0.0]
    v = g.violations[-1]
    assert (v.rule, v.severity, v.requested, v.allowed) == (
        Rule.CHARGE, Severity.STOP, pytest.approx(12.8), pytest.approx(12.0))


def test_ceiling_applies_even_if_limits_were_bypassed():
    # ChannelLimits cannot be built above a ceiling; simulate a corrupted object anyway
    lim = ChannelLimits(max_current_ma=40.0, max_step_ma=5.0)
    object.__setattr__(lim, "max_current_ma", 500.0)
    g = make_guard(lim)
    s = 0
    level = 0.0
    while level < ceilings.MAX_CURRENT_MA:
        level += 5.0
        s += 1
        g.filter([cmd("biceps", s, level, pw=50.0, f=20.0)])
    assert g.level("biceps") == ceilings.MAX_CURRENT_MA
    assert g.filter([cmd("biceps", s + 1, 101.0, pw=50.0, f=20.0)]) == [
        cmd("biceps", s + 1, 0.0, pw=50.0, f=20.0, phase="stop")]
    assert g.violations[-1].rule is Rule.CURRENT


# -- ramp step: clip -----------------------------------------------------------------------
def test_ramp_step_clipped_to_previous_plus_max_step():
    g = make_guard()
    out = g.filter([cmd("biceps", 0, 10.0)])
    assert out[0].current_ma == 2.0
    v = g.violations[-1]
    assert (v.rule, v.severity, v.requested, v.allowed) == (
        Rule.RAMP_STEP, Severity.LIMIT, 10.0, 2.0)
    assert not g.must_stop
    # relative to what was let through, not to what was asked
    assert g.filter([cmd("biceps", 1, 10.0)])[0].current_ma == 4.0
    # decreases are never limited
    assert g.filter([cmd("biceps", 2, 1.0)])[0].current_ma == 1.0
    # several commands in one call are each limited against the previous
    out = g.filter([cmd("biceps", 3, 9.0), cmd("biceps", 4, 9.0)])
    assert [c.current_ma for c in out] == [3.0, 5.0]


# -- max continuous on-time: force off at the exact sample ----------------------------------
def test_max_on_time_forces_off_at_exact_sample_and_then_rest():
    g = make_guard()
    g.filter([cmd("biceps", 1000, 2.0)], block=block(1000, 1001))
    assert g.filter([], block=block(1001, 10999)) == []
    out = g.filter([], block=block(10999, 12000))
    assert [(c.current_ma, c.sample, c.phase) for c in out] == [(0.0, 11000, "stop")]
    assert out[0].stream_time == pytest.approx(11.0)
    v = g.violations[-1]
    assert (v.rule, v.severity, v.sample, v.requested) == (
        Rule.MAX_ON_TIME, Severity.LIMIT, 11000, 10.0)
    assert not g.must_stop
    assert "stays off until the protocol ends this train" in v.message
    # the rest of the train it cut stays off, past the rest too: no late, half-way start
    assert g.filter([cmd("biceps", 12000, 2.0), cmd("biceps", 14500, 2.0)]) == []
    assert len(g.violations) == 1  # said once, at the cut
    # after the protocol's off, the channel must rest min_rest_s = 3 s from the forced off
    g.filter([cmd("biceps", 14600, 0.0, phase="off")])
    assert g.filter([cmd("biceps", 15000, 2.0)])[0].current_ma == 2.0


def test_max_on_time_then_min_rest_counts_from_the_forced_off():
    g = make_guard()
    g.filter([cmd("biceps", 1000, 2.0)], block=block(1000, 1001))
    g.filter([cmd("biceps", 11500, 0.0, phase="off")], block=block(1001, 11600))
    assert [v.rule for v in g.violations] == [Rule.MAX_ON_TIME]
    assert g.filter([cmd("biceps", 13999, 2.0)]) == []
    assert g.violations[-1].rule is Rule.MIN_REST
    g.filter([cmd("biceps", 14000, 0.0, phase="off")])
    assert g.filter([cmd("biceps", 14000, 2.0)])[0].current_ma == 2.0


def test_max_on_time_found_by_next_command_without_block():
    g = make_guard()
    g.filter([cmd("biceps", 0, 2.0)])
    out = g.filter([cmd("biceps", 12000, 2.0)])  # later, nothing in between
    assert [(c.current_ma, c.sample) for c in out] == [(0.0, 10000)]
    assert out[0].stream_time == pytest.approx(10.0)  # extrapolated
    # the command at 12000 belongs to the train cut at 10000: refused with it
    assert [r for r, _ in rules(g)] == [Rule.MAX_ON_TIME]


def test_protocol_off_exactly_at_max_on_time_is_not_a_violation():
    g = make_guard()
    g.filter([cmd("biceps", 0, 2.0)])
    out = g.filter([cmd("biceps", 10000, 0.0, phase="off")], block=block(1, 20000))
    assert [(c.sample, c.phase) for c in out] == [(10000, "off")]
    assert g.violations == ()


def test_forced_off_is_chunk_invariant():
    wanted = [cmd("biceps", 5, 2.0), cmd("triceps", 20000, 2.0), cmd("biceps", 30000, 2.0)]

    def run(size: int) -> list[tuple]:
        g = make_guard()
        out = []
        for a in range(0, 40000, size):
            b = min(40000, a + size)
            out += g.filter([c for c in wanted if a <= c.sample < b], block=block(a, b))
        return [c.decision_key() + (round(c.stream_time, 9),) for c in out]

    ref = run(40000)
    assert ref == run(7) == run(1000) == run(12345)
    assert (("biceps", 1, 0.0, 250.0, 35.0, 10005, "stop", 10.005)) in ref


# -- minimum rest ----------------------------------------------------------------------------
def test_min_rest_refuses_until_rest_is_over():
    g = make_guard()
    s = ramp_on(g, "biceps", 0, 4.0)
    g.filter([cmd("biceps", 100, 0.0, phase="off")])
    assert g.filter([cmd("biceps", 3099, 2.0)]) == []
    v = g.violations[-1]
    assert (v.rule, v.severity, v.requested, v.allowed) == (
        Rule.MIN_REST, Severity.LIMIT, pytest.approx(2.999), 3.0)
    assert g.rest_until("biceps") == 3100
    assert s == 2
    # the rest of the refused train stays off, past the rest: it never starts half-way
    assert g.filter([cmd("biceps", 3100, 4.0), cmd("biceps", 3500, 6.0)]) == []
    assert len(g.violations) == 1  # said once, at its start
    # the protocol's off ends it; the next train passes, from its first step
    g.filter([cmd("biceps", 3600, 0.0, phase="off")])
    assert g.filter([cmd("biceps", 3700, 2.0)])[0].current_ma == 2.0


# -- nothing starts before the stream's rate is checked --------------------------------------
def test_before_first_sample_a_train_is_refused_to_its_off_and_the_next_one_passes():
    """A session's guard waits for the input checks to check the stream's rate
    (``first_sample``): an on-command before it is refused and so is the rest of that
    train (a ramp that reaches past the wait does not start half-way), said once; the
    protocol's off ends the refusal and the next train passes, ramp limits as ever."""
    chans = [GuardChannel("biceps", 1, LIM, ("triceps",)), GuardChannel("triceps", 2, LIM)]
    g = SafetyGuard(chans, SafetySettings(), FS, first_sample=2000)
    assert g.filter([cmd("biceps", 1990, 2.0, phase="ramp_up")]) == []
    (v,) = g.pop_violations()
    assert (v.rule, v.severity, v.sample, v.allowed) == (Rule.RATE_UNCHECKED, Severity.LIMIT,
                                                         1990, 2.0)
    assert "before the EMG stream's sample rate is checked" in v.message and not g.must_stop
    assert g.filter([cmd("biceps", 2000, 4.0, phase="ramp_up"),  # past the wait, same train
                     cmd("biceps", 2010, 6.0, phase="plateau")]) == []
    assert g.pop_violations() == [] and g.level("biceps") == 0.0
    (off,) = g.filter([cmd("biceps", 5000, 0.0, phase="off")])
    assert off.current_ma == 0.0
    assert g.filter([cmd("triceps", 5000, 2.0)])[0].current_ma == 2.0  # another channel
    g.filter([cmd("triceps", 5100, 0.0, phase="off")])
    new = g.filter([cmd("biceps", 6000, 2.0, phase="ramp_up"), cmd("biceps", 6001, 9.0)])
    assert [c.current_ma for c in new] == [2.0, 4.0]  # the next train, its step clipped
    assert [v.rule for v in g.violations] == [Rule.RATE_UNCHECKED, Rule.RAMP_STEP]


def test_a_protocol_error_before_first_sample_still_stops():
    chans = [GuardChannel("biceps", 1, LIM)]
    g = SafetyGuard(chans, SafetySettings(), FS, first_sample=2000)
    assert g.filter([cmd("biceps", 10, 41.0)]) == []
    assert g.must_stop and g.stop_violation.rule is Rule.CURRENT


def test_from_muscles_passes_first_sample_and_stim_test_waits_for_nothing():
    m = {"biceps": MuscleStim("biceps", StimParams(1, 10.0), LIM)}
    g = SafetyGuard.from_muscles(m, SafetySettings(), FS, first_sample=500)
    assert g.filter([cmd("biceps", 499, 2.0)]) == []
    assert g.violations[-1].rule is Rule.RATE_UNCHECKED
    # without first_sample (stim-test's guard, on the device's own clock): no wait
    g = SafetyGuard.from_muscles(m, SafetySettings(), FS)
    assert g.filter([cmd("biceps", 0, 2.0)])[0].current_ma == 2.0


# -- antagonist interlock -------------------------------------------------------------------
def test_interlock_first_on_wins_and_session_stops():
    g = make_guard()
    ramp_on(g, "biceps", 0, 4.0)
    out = g.filter([cmd("triceps", 10, 2.0)])
    # triceps refused; biceps switched off because the session stops
    assert [(c.muscle, c.current_ma, c.phase) for c in out] == [("biceps", 0.0, "stop")]
    v = g.violations[-1]
    assert (v.rule, v.severity, v.muscle) == (Rule.INTERLOCK, Severity.STOP, "triceps")
    assert g.must_stop


def test_interlock_is_symmetric_and_hand_over_at_one_sample_is_allowed():
    g = make_guard()
    ramp_on(g, "triceps", 0, 2.0)
    # on-command listed before the off-command of the same sample: offs go first
    out = g.filter([cmd("biceps", 50, 2.0), cmd("triceps", 50, 0.0, phase="off")])
    assert [(c.muscle, c.current_ma) for c in out] == [("triceps", 0.0), ("biceps", 2.0)]
    assert g.violations == ()
    g2 = make_guard()
    ramp_on(g2, "triceps", 0, 2.0)
    g2.filter([cmd("biceps", 50, 2.0)])
    assert g2.violations[-1].rule is Rule.INTERLOCK  # triceps names no antagonist itself


def test_co_stimulation_allows_both():
    g = make_guard(co_stimulation=True)
    ramp_on(g, "biceps", 0, 4.0)
    assert g.filter([cmd("triceps", 10, 2.0)])[0].current_ma == 2.0
    assert g.level("biceps") == 4.0 and g.level("triceps") == 2.0
    assert g.violations == ()


# -- session dose ----------------------------------------------------------------------------
def test_session_dose_time_stops_everything_at_exact_sample():
    g = make_guard(safety=SafetySettings(session_dose_s=12.0))
    g.filter([cmd("biceps", 0, 2.0)])
    g.filter([cmd("biceps", 8000, 0.0, phase="off")])  # 8 s used
    g.filter([cmd("biceps", 20000, 2.0), cmd("triceps", 20000, 0.0)])
    out = g.filter([], block=block(20001, 30000))
    assert [(c.muscle, c.current_ma, c.sample) for c in out] == [("biceps", 0.0, 24000)]
    v = g.violations[-1]
    assert (v.rule, v.severity, v.sample, v.requested, v.allowed, v.unit) == (
        Rule.SESSION_DOSE, Severity.STOP, 24000, 12.0, 12.0, "s")
    assert g.must_stop and g.dose_used_s("biceps") == 12.0
    assert g.filter([cmd("triceps", 40000, 2.0)]) == []
    assert g.violations[-1].rule is Rule.STOPPED


def test_session_dose_charge():
    # 10 mA x 200 us x 50 Hz = 100 uC/s; a 0.5 mC dose lasts 5 s
    g = make_guard(safety=SafetySettings(session_charge_mc=0.5))
    s = 0
    for level in (2.0, 4.0, 6.0, 8.0, 10.0):
        g.filter([cmd("biceps", s, level, pw=200.0, f=50.0)])
        s += 1
    out = g.filter([], block=block(s, 20000))
    (off,) = out
    ramp_uc = sum((2.0 * k) * 200 / 1000 * 50 / FS for k in range(1, 5))
    expected = 4 + math.floor((500.0 - ramp_uc) / 100.0 * FS)
    assert off.sample == expected and off.current_ma == 0.0
    v = g.violations[-1]
    assert (v.rule, v.unit) == (Rule.SESSION_DOSE, "mC")
    assert v.requested == pytest.approx(0.5, abs=1e-3)


# -- malformed commands ----------------------------------------------------------------------
def test_unknown_channel_or_muscle_mismatch_stops():
    g = make_guard()
    g.filter([StimCommand("biceps", 3, 2.0, 250.0, 35.0, 0, 0.0, "ramp_up")])
    assert g.violations[-1].rule is Rule.UNKNOWN_CHANNEL and g.must_stop
    g = make_guard()
    g.filter([StimCommand("triceps", 1, 2.0, 250.0, 35.0, 0, 0.0, "ramp_up")])
    assert g.violations[-1].rule is Rule.UNKNOWN_CHANNEL


@pytest.mark.parametrize("field", ["current_ma", "pulse_width_us", "frequency_hz"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_invalid_values_stop(field, bad):
    g = make_guard()
    ramp_on(g, "biceps", 0, 2.0)
    c = cmd("biceps", 5, 2.0)
    out = g.filter([StimCommand(**{**c.__dict__, field: bad})])
    assert all(o.current_ma == 0.0 for o in out) and g.level("biceps") == 0.0
    assert g.violations[-1].rule is Rule.INVALID and g.must_stop


def test_commands_out_of_order_raise():
    g = make_guard()
    g.filter([cmd("biceps", 100, 2.0)])
    with pytest.raises(SafetyError, match="sample order"):
        g.filter([cmd("biceps", 99, 0.0)])


def test_off_commands_always_pass_with_fields_clipped():
    g = make_guard()
    g.filter([cmd("biceps", 0, 41.0)])  # stop
    out = g.filter([cmd("biceps", 1, 0.0, pw=900.0, f=200.0, phase="off")])
    assert [(c.current_ma, c.pulse_width_us, c.frequency_hz) for c in out] == [
        (0.0, 400.0, 50.0)]


# -- the loop's side -------------------------------------------------------------------------
def test_all_off_and_applied():
    g = make_guard()
    ramp_on(g, "biceps", 0, 4.0)
    off = g.all_off(10, 0.01)
    assert [(c.muscle, c.channel, c.current_ma, c.phase) for c in off] == [
        ("biceps", 1, 0.0, "stop"), ("triceps", 2, 0.0, "stop")]
    assert g.level("biceps") == 0.0 and g.rest_until("biceps") == 3010
    g2 = make_guard()
    ramp_on(g2, "biceps", 0, 4.0)
    with pytest.raises(SafetyError, match="bypassed the guard"):
        g2.applied([cmd("biceps", 3, 6.0)])
    g2.applied([cmd("biceps", 3, 3.0)])  # the device applied less: take it over
    assert g2.level("biceps") == 3.0
    assert g2.filter([cmd("biceps", 4, 8.0)])[0].current_ma == 5.0  # step from 3
    g2.applied([cmd("biceps", 5, 0.0)])  # emergency stop seen by the driver
    assert g2.rest_until("biceps") == 3005
    with pytest.raises(SafetyError, match="unknown"):
        g2.applied([StimCommand("x", 7, 0.0, 0, 0, 6, 0.0, "off")])


def test_pop_violations_drains():
    g = make_guard()
    g.filter([cmd("biceps", 0, 10.0)])
    assert len(g.pop_violations()) == 1
    assert g.pop_violations() == [] and len(g.violations) == 1


def test_from_muscles_builds_interlock_from_protocol_pair():
    from closedloop.config.stimulation import ProtocolSettings

    m = {"biceps": MuscleStim("biceps", StimParams(1, 10.0), LIM),
         "triceps": MuscleStim("triceps", StimParams(2, 10.0), LIM)}
    proto = ProtocolSettings(kind="reciprocal", agonist="biceps", antagonist="triceps")
    g = SafetyGuard.from_muscles(m, SafetySettings(), FS, protocol=proto)
    ramp_on(g, "triceps", 0, 2.0)
    g.filter([cmd("biceps", 5, 2.0)])
    assert g.violations[-1].rule is Rule.INTERLOCK
    with pytest.raises(ConfigError, match="twice"):
        SafetyGuard([GuardChannel("a", 1, LIM), GuardChannel("b", 1, LIM)],
                    SafetySettings(), FS)


# -- ceilings at load time ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [("max_current_ma", 120.0), ("max_pulse_width_us", 600.0), ("max_frequency_hz", 200.0),
     ("max_charge_uc", 40.0), ("max_on_time_s", 60.0), ("min_rest_s", 0.2),
     ("max_step_ma", 10.0)],
)
def test_ceilings_rejected_at_load_time(key, value):
    data = {"max_current_ma": 40.0, key: value}
    with pytest.raises(ConfigError) as err:
        parse_table(ChannelLimits, data, source="p.toml", path="muscles[1].limits")
    assert f"p.toml: muscles[1].limits.{key} = {value!r}" in str(err.value)


# -- properties --------------------------------------------------------------------------------
limits_st = st.builds(
    ChannelLimits,
    max_current_ma=st.floats(1.0, ceilings.MAX_CURRENT_MA),
    max_pulse_width_us=st.floats(20.0, ceilings.MAX_PULSE_WIDTH_US),
    max_frequency_hz=st.floats(1.0, ceilings.MAX_FREQUENCY_HZ),
    max_charge_uc=st.floats(0.5, ceilings.MAX_CHARGE_PER_PHASE_UC),
    max_on_time_s=st.floats(0.01, 2.0),
    min_rest_s=st.floats(ceilings.MIN_REST_FLOOR_S, 1.5),
    max_step_ma=st.floats(0.1, ceilings.MAX_STEP_MA),
)
# Normal commands stay within the limits (or are 0); at most one command per example
# carries an anomaly (above a limit, NaN, negative), and most examples hand over (switch
# the other muscle off first): a STOP latches, and a stopped guard would mask every
# other rule.
value_st = st.tuples(st.sampled_from(["ok"] * 5 + ["zero"] * 2 + ["near"]),
                     st.floats(0.0, 1.0))
command_st = st.tuples(value_st, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
tick_st = st.tuples(st.integers(0, 700), st.sampled_from(["biceps", "triceps"]),
                    st.lists(command_st, min_size=1, max_size=3))
anomaly_st = st.one_of(
    st.none(),
    st.tuples(st.floats(0.0, 0.999), st.sampled_from(["current", "pw", "f"]),
              st.sampled_from(["over", "nan", "negative"])),
)


def make_commands(ticks: list, limits: dict[str, ChannelLimits], anomaly, hand_over: bool,
                  fs: float = 1000.0) -> list[list[StimCommand]]:
    """Commands on strictly increasing samples, values relative to the muscle's limits."""
    out: list[list[StimCommand]] = []
    s = 0
    n = 0
    odd = -1 if anomaly is None else int(anomaly[0] * sum(len(t[2]) for t in ticks))
    for dt, muscle, specs in ticks:
        s += dt + 1
        tick = []
        for (kind, u), y, z in specs:
            lim = limits[muscle]
            current = {"ok": u, "zero": 0.0, "near": 0.95 + 0.05 * u}[kind] * lim.max_current_ma
            fits = lim.max_charge_uc * 1000.0 / current if current > 0 else math.inf
            vals = {"current": current, "pw": y * min(lim.max_pulse_width_us, fits),
                    "f": z * lim.max_frequency_hz}
            if n == odd:
                top = {"current": lim.max_current_ma, "pw": lim.max_pulse_width_us,
                       "f": lim.max_frequency_hz}[anomaly[1]]
                vals[anomaly[1]] = {"over": top * (1 + u) + 1e-6, "nan": math.nan,
                                    "negative": -0.1}[anomaly[2]]
            n += 1
            if hand_over and vals["current"] > 0:
                other = "triceps" if muscle == "biceps" else "biceps"
                tick.append(StimCommand(other, CH[other], 0.0, 0.0, 0.0, s, s / fs, "off"))
            tick.append(StimCommand(muscle, CH[muscle], vals["current"], vals["pw"],
                                    vals["f"], s, s / fs, "x"))
        out.append(tick)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lim_b=limits_st,
    lim_t=limits_st,
    dose=st.one_of(st.floats(0.05, 2.0), st.just(ceilings.MAX_SESSION_DOSE_S)),
    charge=st.one_of(st.none(), st.floats(0.0001, 0.02), st.floats(1.0, 3000.0)),
    ticks=st.lists(tick_st, min_size=5, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    with_blocks=st.booleans(),
    anomaly=anomaly_st,
    hand_over=st.sampled_from([True, True, True, False]),
)
def test_property_filter_never_exceeds_any_limit(lim_b, lim_t, dose, charge, ticks, cuts,
                                                 with_blocks, anomaly, hand_over):
    fs = 1000.0
    limits = {"biceps": lim_b, "triceps": lim_t}
    g = SafetyGuard([GuardChannel("biceps", 1, lim_b, ("triceps",)),
                     GuardChannel("triceps", 2, lim_t)],
                    SafetySettings(session_dose_s=dose, session_charge_mc=charge), fs)
    wanted = make_commands(ticks, limits, anomaly, hand_over, fs)
    s = wanted[-1][0].sample
    end = s + 10000
    bounds = sorted({0, len(wanted), *[c for c in cuts if c < len(wanted)]})
    out: list[StimCommand] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        batch = [c for tick in wanted[a:b] for c in tick]
        start = batch[0].sample
        stop = wanted[b][0].sample if b < len(wanted) else end
        out += g.filter(batch, block=block(start, stop) if with_blocks else None)
    out += g.filter([], block=block(end, end + 1))  # flush forced offs

    requested: dict[tuple[int, int], float] = {}
    for tick in wanted:
        for c in tick:
            if c.current_ma > 0:
                key = (c.sample, c.channel)
                requested[key] = max(requested.get(key, 0.0), c.current_ma)

    level = {1: 0.0, 2: 0.0}
    rate = {1: 0.0, 2: 0.0}  # uC per sample
    seg = {1: 0, 2: 0}
    charge_uc = {1: 0.0, 2: 0.0}
    on_since: dict[int, int] = {}
    off_since: dict[int, int] = {}
    used = {1: 0, 2: 0}
    last_sample = -1
    for c in out:
        lim = limits[c.muscle]
        assert c.sample >= last_sample
        last_sample = c.sample
        assert c.pulse_width_us <= lim.max_pulse_width_us
        assert c.frequency_hz <= lim.max_frequency_hz
        ch = c.channel
        charge_uc[ch] += rate[ch] * (c.sample - seg[ch])
        seg[ch] = c.sample
        if c.current_ma > 0:
            # within every level limit and ceiling
            assert c.current_ma <= lim.max_current_ma <= ceilings.MAX_CURRENT_MA
            assert c.charge_uc <= lim.max_charge_uc * (1 + 1e-9)
            # never raises a level, never invents an on-command
            assert c.current_ma <= requested[(c.sample, ch)]
            # ramp step
            assert c.current_ma <= level[ch] + lim.max_step_ma + 1e-9
            if level[ch] == 0.0:
                if ch in off_since:  # rest
                    assert c.sample - off_since[ch] >= lim.min_rest_s * fs - 1e-6
                on_since[ch] = c.sample
            level[ch] = c.current_ma
            rate[ch] = c.charge_uc * c.frequency_hz / fs
            # interlock
            assert level[3 - ch] == 0.0
        elif level[ch] > 0:
            stretch = c.sample - on_since[ch]
            assert stretch <= lim.max_on_time_s * fs + 1e-6
            used[ch] += stretch
            off_since[ch] = c.sample
            level[ch] = 0.0
            rate[ch] = 0.0
    assert level == {1: 0.0, 2: 0.0}  # the flush found every forced off
    for ch in (1, 2):
        assert used[ch] <= dose * fs + 1e-6
        if charge is not None:
            assert charge_uc[ch] <= charge * 1000.0 * (1 + 1e-9) + 1e-9


SHORT = ChannelLimits(max_current_ma=40.0, max_pulse_width_us=400.0, max_frequency_hz=50.0,
                      max_charge_uc=12.0, max_on_time_s=0.8, min_rest_s=1.0, max_step_ma=2.0)


@settings(max_examples=100, deadline=None)
@given(ticks=st.lists(tick_st, min_size=1, max_size=30), seed_sizes=st.lists(
    st.integers(1, 3000), min_size=1, max_size=5), anomaly=anomaly_st)
def test_property_output_is_chunk_invariant(ticks, seed_sizes, anomaly):
    wanted = [c for tick in make_commands(ticks, {"biceps": SHORT, "triceps": SHORT},
                                          anomaly, True) for c in tick]
    s = wanted[-1].sample
    end = s + 1500
    sizes = [max(x, 1 + end // 2000) for x in seed_sizes]  # at most ~2000 calls

    def run(sizes: list[int]) -> list[tuple]:
        g = make_guard(SHORT, SafetySettings(session_dose_s=3.0, session_charge_mc=0.05))
        out, a, i = [], 0, 0
        while a < end:
            b = min(end, a + sizes[i % len(sizes)])
            i += 1
            out += g.filter([c for c in wanted if a <= c.sample < b], block=block(a, b))
            a = b
        return [c.decision_key() for c in out] + [
            (v.sample, v.rule, v.severity) for v in g.violations]

    assert run([end]) == run(sizes)
