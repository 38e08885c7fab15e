"""The M-wave over a session (runtime/mwaves.py, Outcome.add_mwaves): first trains per
level, the working level's fatigue against the simulated patient's truth, and "no
response" counted only where a response is expected."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from closedloop.core.evoked import EvokedSettings
from closedloop.runtime.mwaves import MWaveTracker, track
from closedloop.runtime.outcome import Outcome
from closedloop.sim.patient import FatigueModel, MWaveModel
from tests.core.stimulated import FS, Command, stimulate

MWAVE = MWaveModel()
#: a staircase as triggered assist gives: 1 mA (below the motor threshold), 12 mA, then
#: the 30 mA plateau for 4 s, every 10 s
STEPS = ((0.0, 1.0), (0.5, 12.0), (1.0, 30.0))


def repetitions(n: int, every_s: float = 10.0) -> list[Command]:
    out = []
    for k in range(n):
        t0 = 1.0 + k * every_s
        out += [Command(int((t0 + dt) * FS), "biceps", ma) for dt, ma in STEPS]
        out.append(Command(int((t0 + 5.0) * FS), "biceps", 0.0))
    return out


@pytest.fixture(scope="module")
def tiring():
    """12 repetitions (2 minutes) of a muscle that fatigues."""
    return stimulate(repetitions(12), 120.0, chunks=(500,), evoked=EvokedSettings(),
                     mwave=MWAVE, fatigue=FatigueModel(fatigue_s=20.0, recovery_s=200.0))


def truth_pp(session, record) -> float:
    return float(np.mean([p.mwave_pp for p in session.pulses if p.muscle == record.muscle
                          and record.first_sample <= np.floor(p.time * FS + 1e-6)
                          <= record.last_sample]))


def test_the_working_level_s_first_and_last_trains_follow_the_fatigue(tiring):
    records = [r for r in tiring.records if r.muscle == "biceps"]
    points, summary = track(records)
    m = summary["biceps"]
    plateau = [r for r in records if r.current_ma == 30.0]
    assert m.current_ma == 30.0 and m.records == len(records)
    assert m.pulses == sum(r.n_pulses for r in records)
    first = plateau[:3]
    want_first = sum(truth_pp(tiring, r) * r.n_pulses for r in first) / sum(
        r.n_pulses for r in first)
    last = plateau[-3:]
    want_last = sum(truth_pp(tiring, r) * r.n_pulses for r in last) / sum(
        r.n_pulses for r in last)
    assert m.first_pp == pytest.approx(want_first, rel=0.05)
    assert m.last_pp == pytest.approx(want_last, rel=0.05)
    want_drop = 100 * (1 - want_last / want_first)
    assert want_drop > 15  # the muscle did tire
    assert m.drop_pct == pytest.approx(want_drop, abs=3.0)
    # each level against its own first trains: the 12 mA steps of the first repetitions
    # read ~100 %, the plateau falls with the truth
    by_level: dict[float, list] = {}
    for p in points:
        by_level.setdefault(p.current_ma, []).append(p)
    assert by_level[12.0][0].percent == pytest.approx(100.0)
    last_pct = [p.percent for p in by_level[30.0][-3:]]
    assert np.mean(last_pct) == pytest.approx(100 - want_drop, abs=5.0)


def test_steps_below_the_motor_threshold_are_not_counted_as_no_response(tiring):
    records = [r for r in tiring.records if r.muscle == "biceps"]
    points, summary = track(records)
    below = [p for p in points if p.current_ma == 1.0]
    assert below and not any(p.present for p in below)  # no M-wave at 1 mA
    assert summary["biceps"].clear_from_ma == 12.0
    assert summary["biceps"].no_response == 0
    assert not any(p.no_response for p in points)


def test_a_detached_electrode_counts_every_record_and_has_no_amplitude():
    s = stimulate(repetitions(2), 20.0, chunks=(500,), evoked=EvokedSettings(), mwave=MWAVE,
                  detached={"biceps": "nothing"})
    points, summary = track(s.records)
    m = summary["biceps"]
    assert m.records == len(s.records) > 10
    assert m.no_response == m.records and all(p.no_response for p in points)
    assert math.isnan(m.first_pp) and math.isnan(m.drop_pct) and math.isnan(m.clear_from_ma)
    assert all(math.isnan(p.percent) for p in points)


def test_the_outcome_keeps_the_summary_in_any_grouping_of_the_records(tiring):
    whole = track(tiring.records)[1]
    out = Outcome.start(("biceps", "triceps"), FS, history=10)
    rng = np.random.default_rng(1)
    i = 0
    while i < len(tiring.records):
        k = int(rng.integers(0, 4))  # empty hand-overs too
        out.add_mwaves(tiring.records[i:i + k])
        i += k
    out.finish(int(120 * FS), FS)
    assert out.mwave == whole and set(out.mwave) >= {"biceps"}
    assert Outcome().mwave == {}


def test_a_grown_response_is_a_negative_drop():
    from tests.io.test_mwave_stream import mwave

    t = MWaveTracker()
    # the same level, the amplitude growing by 1 % a record
    t.add([replace(mwave(k), current_ma=20.0) for k in range(8)])
    m = t.summary()["biceps"]
    assert m.first_pp < m.last_pp and m.drop_pct < 0


def test_a_record_whose_noise_is_not_known_yet_is_not_a_missing_response():
    """The first single-pulse ramp steps of a session have no noise figure (no group of
    several pulses before them): not present, but not "no response" either."""
    from tests.io.test_mwave_stream import mwave

    first = replace(mwave(0, present=False), n_pulses=1, noise=math.nan, current_ma=12.0)
    known = replace(mwave(1, present=False), current_ma=12.0)
    t = MWaveTracker()
    points = t.add([first, known])
    assert [p.no_response for p in points] == [False, True]
    assert t.summary()["biceps"].no_response == 1


def test_an_electrode_that_comes_off_mid_session_counts_where_the_muscle_responded(tiring):
    """From 60 s on the records show nothing (as a detached electrode's do): those at
    12 and 30 mA count, those at 1 mA (never a response there) do not."""
    off = [r if r.sample < 60 * FS else replace(r, present=False, peak_to_peak=5e-6,
                                                   latency_s=math.nan, end_s=math.nan)
           for r in tiring.records]
    points, summary = track(off)
    late = [p for p in points if p.sample >= 60 * FS]
    assert summary["biceps"].no_response == sum(p.current_ma > 1.0 for p in late) > 10
    assert all(p.no_response == (p.current_ma > 1.0) for p in late)
    assert not any(p.no_response for p in points if p.sample < 60 * FS)
    # live, the first silent plateau record is flagged as it comes
    t = MWaveTracker()
    live = t.add(off)
    first_off = next(p for p in live if p.sample >= 60 * FS and p.current_ma == 30.0)
    assert first_off.no_response and first_off.percent < 1.0


@pytest.mark.parametrize("restart", [True, False])
def test_the_chain_restarts_the_mwave_reader_with_the_filters(config, restart):
    """When the input checks restart a channel (good data again after a knock), the
    chain restarts the M-wave reader's hum template with the pipeline's filters: what
    the knock taught it is gone."""
    from closedloop.core.stream import SourceInfo
    from closedloop.runtime.chain import build_chain
    from closedloop.runtime.inputs import Segment

    names = tuple(config.muscle_names)
    chain = build_chain(config, SourceInfo("t", FS, names), stimulating=True)
    assert chain.stim is not None and chain.stim.evoked is not None
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, len(names))) * 1e-5
    x[500:510, 0] = 1.0  # the knock
    ts = np.arange(2020) / FS
    chain.process(Segment(0, x, ts[:2000]))
    knocked = np.abs(chain.stim.evoked._hum[0]).max()
    y = rng.standard_normal((20, len(names))) * 1e-5
    chain.process(Segment(2000, y, ts[2000:], restarts=(0,) if restart else ()))
    left = np.abs(chain.stim.evoked._hum[0]).max()
    assert knocked > 1e-3
    assert (left < 1e-5) if restart else (left > 1e-3)


def test_the_config_says_how_the_mwave_is_measured(config, tmp_path):
    """``[protocol.mwave]`` window and record period reach the M-wave reader a session
    builds: a wider window reads more samples after each pulse, a shorter period
    averages fewer pulses per record (the defaults without the keys)."""
    from dataclasses import replace as dc_replace

    from closedloop.core.stream import SourceInfo
    from closedloop.runtime.chain import build_chain

    names = tuple(config.muscle_names)
    info = SourceInfo("t", FS, names)
    default = build_chain(config, info, stimulating=True).stim.evoked
    mwave = dc_replace(config.protocol.mwave, window_ms=40.0, every_s=0.25)
    wide = dc_replace(config, protocol=dc_replace(config.protocol, mwave=mwave))
    evoked = build_chain(wide, info, stimulating=True).stim.evoked
    assert (default.settings.window_ms, default.settings.every_s) == (25.0, 0.5)
    assert (evoked.settings.window_ms, evoked.settings.every_s) == (40.0, 0.25)
    assert evoked.window > default.window and evoked.span < default.span


def test_the_config_s_mwave_defaults_are_the_reader_s():
    """The M-wave measurement's defaults are declared twice: in ``[protocol.mwave]``
    (with their ranges, what a config without the keys gets) and in the core's
    ``EvokedSettings`` (a pure core has no config to read): they must agree."""
    from closedloop.config.stimulation import MWaveRules
    from closedloop.runtime.chain import evoked_settings

    assert evoked_settings(MWaveRules()) == EvokedSettings()
