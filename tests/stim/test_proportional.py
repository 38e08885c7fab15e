"""The proportional protocol on its own (blocks carrying effort, no loop): settings
checked, the law followed, and ten minutes of random efforts and settings that never
produce a current above any limit (a property test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.config.model import protocol_settings_for
from closedloop.config.stimulation import (
    ChannelLimits,
    MuscleStim,
    ProportionalSettings,
    SafetySettings,
    StimParams,
)
from closedloop.core.events import ONSET, SUSPEND, Block, Effort, Event
from closedloop.errors import ConfigError
from closedloop.registry import PROTOCOLS
from closedloop.stim.guard import SafetyGuard
from closedloop.stim.mwave_rules import FATIGUE, Notice
from closedloop.stim.proportional import Proportional
from closedloop.stim.protocol import make_protocol

CH = ("biceps", "triceps")


def muscles(current=20.0, max_current=40.0, max_step=2.0, max_on=10.0, min_rest=2.0,
            rest=3.0) -> dict[str, MuscleStim]:
    limits = ChannelLimits(max_current_ma=max_current, max_step_ma=max_step,
                           max_on_time_s=max_on, min_rest_s=min_rest)
    return {
        name: MuscleStim(name, StimParams(channel=ch, current_ma=current, rest_time_s=rest),
                         limits, other)
        for name, ch, other in (("biceps", 1, "triceps"), ("triceps", 2, "biceps"))
    }


def block(start: int, effort: np.ndarray, fs: float, events=()) -> Block:
    n = effort.shape[0]
    e = np.zeros((n, 2))
    if effort.ndim == 1:
        e[:, 0] = effort
    else:
        e[:] = effort
    z = np.zeros((n, 2))
    return Block(start=start, timestamps=(start + np.arange(n)) / fs, filtered=z, envelope=z,
                 above=np.zeros((n, 2), dtype=bool), on_threshold=np.ones(2),
                 off_threshold=np.ones(2), events=list(events), channels=CH,
                 effort=Effort(e, e, e, e))


def onset(sample: int, fs: float, kind: str = ONSET, muscle: str = "biceps") -> Event:
    return Event(sample, sample / fs, muscle, kind)


def drive(protocol, effort: np.ndarray, fs: float, onsets=(), size=100, notices=()):
    """Run ``effort`` through ``protocol`` in blocks of ``size``; the wanted commands."""
    out = []
    for s in range(0, effort.shape[0], size):
        e = effort[s : s + size]
        evs = [ev if isinstance(ev, Event) else onset(ev, fs) for ev in onsets
               if s <= (ev.sample if isinstance(ev, Event) else ev) < s + e.shape[0]]
        protocol.notify([n for n in notices if s <= n.sample < s + e.shape[0]])
        out += protocol.step(block(s, e, fs, evs))
    return out


def test_registered_and_its_settings_are_typed():
    assert PROTOCOLS.knows("proportional")
    assert PROTOCOLS.load("proportional") is Proportional
    assert protocol_settings_for("proportional") is ProportionalSettings
    with pytest.raises(ConfigError, match="max_on_s"):
        ProportionalSettings(kind="proportional", agonist="biceps", min_on_s=5.0,
                             stop_ramp_s=1.0, max_on_s=5.5)
    with pytest.raises(ConfigError, match="gain"):
        ProportionalSettings(kind="proportional", agonist="biceps", gain=-1.0)


@pytest.mark.parametrize(("change", "words"), [
    ({"min_current_ma": 25.0}, "min_current_ma = 25 mA is above"),
    ({"max_on_s": 9.0}, "max_on_s = 9 s is longer than"),
    ({"slew_ma_per_s": 10.0, "resolution_ma": 1.0}, "could never rise"),
])
def test_settings_that_cannot_work_are_refused(change, words):
    s = ProportionalSettings(kind="proportional", agonist="biceps", **change)
    with pytest.raises(ConfigError, match=words):
        make_protocol(s, muscles(max_on=8.0), 1000.0)


def test_the_current_follows_the_law_and_stops_when_the_effort_goes():
    fs = 1000.0
    s = ProportionalSettings(kind="proportional", agonist="biceps", threshold=5.0, gain=1.0,
                             min_current_ma=8.0, smooth_s=0.0, slew_ma_per_s=40.0,
                             ramp_step_s=0.05, stop_hold_s=0.05, stop_ramp_s=0.2)
    p = make_protocol(s, muscles(current=20.0), fs)
    effort = np.r_[np.full(1000, 3.0), np.full(2000, 15.0), np.full(2000, 30.0),
                   np.full(2000, 3.0)]
    cmds = drive(p, effort, fs, onsets=[1000])
    def level(sample: int) -> float:
        return [c.current_ma for c in cmds if c.sample <= sample][-1]

    assert cmds[0].sample == 1000 and cmds[0].current_ma == 2.0 and cmds[0].phase == "ramp_up"
    assert level(1100) == 6.0  # 2 mA per 50 ms (slew 40 mA/s) from the onset
    assert level(2950) == 18.0  # 8 + 1 x (15 - 5)
    assert level(4950) == 20.0  # 8 + 25 clipped to I_max
    assert all(c.current_ma - b.current_ma <= 2.0 for b, c in zip(cmds, cmds[1:], strict=False))
    off = [c for c in cmds if c.phase == "off"]
    assert len(off) == 1 and 5000 < off[0].sample <= 5000 + 50 + 200
    assert not p.active


def test_no_repetition_starts_before_first_sample():
    """Neither the agonist's onset nor (``reciprocal_effort``) the antagonist's own starts
    a repetition before ``first_sample`` (where a session's input checks have checked the
    stream's rate); the first onsets from it do."""
    fs = 1000.0
    s = ProportionalSettings(kind="proportional", agonist="biceps", antagonist="triceps",
                             reciprocal_effort=True)
    early = [onset(500, fs), onset(1200, fs, muscle="triceps")]
    p = make_protocol(s, muscles(), fs)
    p.first_sample = 2000
    cmds = drive(p, np.full((6000, 2), 20.0), fs, onsets=[*early, onset(2000, fs)])
    assert cmds and min(c.sample for c in cmds) == 2000 and cmds[0].muscle == "biceps"
    assert [(te.kind, te.sample) for te in p.trial_events][:2] == [("ignored", 500),
                                                                  ("trigger", 2000)]
    q = make_protocol(s, muscles(), fs)  # without the wait: from the first onset
    assert min(c.sample for c in drive(q, np.full((6000, 2), 20.0), fs, onsets=early)) == 500


def test_a_suspended_agonist_switches_off_at_once():
    fs = 1000.0
    s = ProportionalSettings(kind="proportional", agonist="biceps")
    p = make_protocol(s, muscles(), fs)
    cmds = drive(p, np.full(3000, 20.0), fs, onsets=[100, onset(1500, fs, SUSPEND)])
    assert cmds[-1].sample == 1500 and cmds[-1].current_ma == 0.0
    assert [te.kind for te in p.trial_events] == ["trigger", "aborted"]


def test_reciprocal_use_drives_the_antagonist_from_its_own_effort_never_both():
    fs = 1000.0
    s = ProportionalSettings(kind="proportional", agonist="biceps", antagonist="triceps",
                             reciprocal_effort=True, smooth_s=0.0, threshold=5.0, gain=1.0,
                             min_current_ma=6.0)
    assert s.stimulated == ("biceps", "triceps")
    m = muscles(current=20.0)
    p = make_protocol(s, m, fs)
    effort = np.zeros((12000, 2))
    effort[1000:3000, 0] = 15.0  # biceps tries
    effort[2000:2500, 1] = 30.0  # triceps co-contracts meanwhile: no stimulation for it
    effort[6000:9000, 1] = 12.0  # then triceps tries on its own
    events = [onset(1000, fs), onset(2000, fs, muscle="triceps"),
              onset(6000, fs, muscle="triceps")]
    cmds = drive(p, effort, fs, onsets=events)
    tri = [c for c in cmds if c.muscle == "triceps"]
    bi = [c for c in cmds if c.muscle == "biceps"]
    assert bi and tri and min(c.sample for c in tri) == 6000
    assert max(c.current_ma for c in tri) == 13.0  # 6 + 1 x (12 - 5)
    assert max(c.sample for c in bi) < 6000
    guard = SafetyGuard.from_muscles(m, SafetySettings(), fs, protocol=s)
    guard.filter(cmds)
    assert guard.violations == ()  # the interlock never had to act
    with pytest.raises(ConfigError, match="antagonist"):
        ProportionalSettings(kind="proportional", agonist="biceps", reciprocal_effort=True)


def test_fatigue_notices_lower_or_end_never_raise():
    fs = 1000.0
    s = ProportionalSettings(kind="proportional", agonist="biceps", smooth_s=0.0)
    p = make_protocol(s, muscles(current=20.0), fs)
    lower = Notice(FATIGUE, 2000, 2.0, "biceps", "lower", "tired")
    end = Notice(FATIGUE, 4000, 4.0, "biceps", "end", "tired")
    cmds = drive(p, np.full(6000, 40.0), fs, onsets=[100], notices=[lower, end])
    assert max(c.current_ma for c in cmds if c.sample < 2000) == 20.0
    assert max(c.current_ma for c in cmds if c.sample >= 2000) == 18.0
    off = [c for c in cmds if c.phase == "off"]
    assert len(off) == 1 and 4000 <= off[0].sample <= 4000 + 200


@pytest.mark.parametrize("seed", range(8))
def test_ten_minutes_of_random_efforts_and_settings_never_exceed_a_limit(seed):
    """Seeded random settings, limits, efforts (NaN stretches included), onsets,
    suspends and fatigue notices, in random block sizes: every wanted command is within
    the channel's limits (level, step, on-time, rest, the fatigue-lowered maximum), so
    the guard lets all of it through unchanged."""
    fs = 1000.0
    rng = np.random.default_rng(seed)
    u = rng.uniform
    current = round(u(5.0, 40.0), 1)
    max_step, step = u(0.5, 5.0), float(rng.choice([0.01, 0.025, 0.05, 0.1]))
    resolution = float(rng.choice([0.1, 0.5, 1.0]))
    if max_step < resolution:
        resolution = 0.1
    min_on, stop_ramp = u(0.0, 1.0), u(0.0, 1.0)
    max_on = u(max(2.0, min_on + stop_ramp + 0.2), 10.0)
    min_rest = u(1.0, 5.0)
    threshold, gain = u(0.0, 20.0), float(np.exp(u(np.log(0.01), np.log(20.0))))
    s = ProportionalSettings(
        kind="proportional", agonist="biceps", threshold=threshold, gain=gain,
        min_current_ma=round(u(0.0, 1.0) * current, 1), smooth_s=u(0.0, 0.5),
        slew_ma_per_s=max(resolution, max_step) / step * u(1.01, 3.0), ramp_step_s=step,
        stop_hold_s=u(0.0, 0.2), stop_ramp_s=stop_ramp, min_on_s=min_on,
        max_on_s=u(min_on + stop_ramp + 0.1, max_on), resolution_ma=resolution)
    m = muscles(current=current, max_current=max(current, u(20.0, 40.0)), max_step=max_step,
                max_on=max_on, min_rest=min_rest, rest=min_rest + u(0.0, 3.0))
    p = make_protocol(s, m, fs)
    n = int(600 * fs)
    edges = np.sort(rng.integers(0, n, 2000))
    levels = rng.uniform(0, threshold + 3 * current / gain, edges.size + 1)
    levels[rng.random(levels.size) < 0.05] = np.nan
    effort = levels[np.searchsorted(edges, np.arange(n), side="right")]
    onsets = sorted(set(rng.integers(0, n, 300).tolist()))
    events = [onset(o, fs, SUSPEND if rng.random() < 0.03 else ONSET) for o in onsets]
    notices = [Notice(FATIGUE, int(x), x / fs, "biceps", str(rng.choice(["lower", "end"])), "")
               for x in np.sort(rng.integers(0, n, 6))]
    wanted = drive(p, effort, fs, onsets=events, size=int(rng.integers(20, 700)),
                   notices=notices)
    limits, stim = m["biceps"].limits, m["biceps"].stim
    lowers = [x.sample for x in notices if x.action == "lower"]
    level, on_since, off_at, prev = 0.0, 0, None, -1
    for c in wanted:
        assert c.sample >= prev
        prev = c.sample
        assert math.isfinite(c.current_ma) and 0.0 <= c.current_ma <= stim.current_ma
        assert c.current_ma <= limits.max_current_ma
        assert c.current_ma - level <= limits.max_step_ma + 1e-9
        top = stim.current_ma * 0.9 ** sum(x <= c.sample for x in lowers)
        assert c.current_ma <= top + 1e-9 or c.current_ma < level
        if c.current_ma > 0 and level == 0:
            assert off_at is None or c.sample - off_at >= limits.min_rest_s * fs - 1
            on_since = c.sample
        if c.current_ma == 0 and level > 0:
            assert c.sample - on_since <= min(limits.max_on_time_s, s.max_on_s) * fs
            off_at = c.sample
        level = c.current_ma
    assert len(wanted) > 100
    guard = SafetyGuard.from_muscles(m, SafetySettings(), fs)
    safe = guard.filter(wanted)
    assert guard.violations == ()  # the guard never had to clip, refuse or stop
    assert [c.current_ma for c in safe] == [c.current_ma for c in wanted]
