"""Protocols on the sample clock, driven by synthetic blocks and events.

Chunk invariance: the same events and ``above`` masks through blocks of 1, 7 and
10,000 samples give identical commands (and trial events) at identical samples.
"""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.config.stimulation import (
    ChannelLimits,
    MuscleStim,
    ProtocolSettings,
    ReciprocalSettings,
    SafetySettings,
    StimParams,
    TrialSettings,
    validate_stimulation,
)
from closedloop.core.events import OFFSET, ONSET, Block, Event
from closedloop.errors import ConfigError, InputError
from closedloop.stim.guard import SafetyGuard
from closedloop.stim.protocol import (
    CuedTrials,
    Reciprocal,
    TrialCounts,
    TriggeredAssist,
    make_protocol,
)

FS = 1000.0
CHANNELS = ("biceps", "triceps")
LIMITS = ChannelLimits(max_current_ma=40.0, max_on_time_s=10.0, min_rest_s=3.0,
                       max_step_ma=2.0)
MUSCLES = {
    "biceps": MuscleStim("biceps", StimParams(1, 20.0, ramp_up_s=0.5, ramp_down_s=0.5,
                                              on_time_s=2.0, rest_time_s=3.0), LIMITS,
                         "triceps"),
    "triceps": MuscleStim("triceps", StimParams(2, 10.0, pulse_width_us=200.0,
                                                frequency_hz=30.0, ramp_up_s=0.3,
                                                ramp_down_s=0.2, on_time_s=1.0,
                                                rest_time_s=3.0), LIMITS, "biceps"),
}


def settings(**kw) -> ProtocolSettings:
    kw.setdefault("agonist", "biceps")
    kw.setdefault("antagonist", "triceps")
    return ProtocolSettings(**kw)


class Recording:
    """Events and an ``above`` mask for the whole run, sliced into blocks."""

    def __init__(self, n: int, events: list[tuple[int, str]] = (), above_triceps=()):
        self.n = n
        self.events = [Event(s, s / FS, "biceps", k) for s, k in events]
        self.above = np.zeros((n, 2), bool)
        for a, b in above_triceps:
            self.above[a:b, 1] = True

    def blocks(self, size: int):
        for a in range(0, self.n, size):
            b = min(self.n, a + size)
            z = np.zeros((b - a, 2))
            yield Block(a, 100.0 + np.arange(a, b) / FS, z, z, self.above[a:b].copy(),
                        np.zeros(2), np.zeros(2),
                        [e for e in self.events if a <= e.sample < b], CHANNELS)

    def run(self, proto, size: int, guard: SafetyGuard | None = None):
        out = []
        for blk in self.blocks(size):
            cmds = proto.step(blk)
            for c in cmds:
                assert blk.start <= c.sample < blk.stop
                assert c.stream_time == pytest.approx(100.0 + c.sample / FS)
            out += guard.filter(cmds, block=blk) if guard is not None else cmds
        return out


def timeline(cmds) -> list[tuple[str, int, float, str]]:
    return [(c.muscle, c.sample, round(c.current_ma, 9), c.phase) for c in cmds]


def test_triggered_assist_timeline_on_the_sample_clock():
    p = make_protocol(settings(), MUSCLES, FS)
    assert isinstance(p, TriggeredAssist) and p.stimulated == ("biceps",)
    cmds = Recording(8000, [(1000, ONSET)]).run(p, 10000)
    # ramp-up: 10 steps of 2 mA every 50 samples, the first at the onset sample
    up = [("biceps", 1000 + 50 * k, 2.0 * (k + 1), "ramp_up") for k in range(9)]
    plateau = [("biceps", 1450, 20.0, "plateau")]
    # plateau 2 s, then 10 steps down
    down = [("biceps", 3450 + 50 * j, 20.0 - 2.0 * (j + 1), "ramp_down") for j in range(9)]
    off = [("biceps", 3900, 0.0, "off")]
    assert timeline(cmds) == up + plateau + down + off
    c = cmds[0]
    assert (c.channel, c.pulse_width_us, c.frequency_hz) == (1, 250.0, 35.0)
    assert p.counts == TrialCounts(trials=1, hits=1)
    assert [(e.kind, e.sample) for e in p.trial_events] == [("trigger", 1000)]


def test_assist_ignores_onsets_during_stimulation_and_rest():
    p = make_protocol(settings(), MUSCLES, FS)
    # train ends (off) at 3900; rest 3 s -> onsets from 6900 on trigger
    rec = Recording(12000, [(1000, ONSET), (2000, ONSET), (6899, ONSET), (6900, ONSET)])
    cmds = rec.run(p, 10000)
    starts = [c.sample for c in cmds if c.phase == "ramp_up" and c.current_ma == 2.0]
    assert starts == [1000, 6900]
    assert [e.kind for e in p.trial_events] == ["trigger", "ignored", "ignored", "trigger"]
    assert p.counts == TrialCounts(trials=2, hits=2, ignored=2)
    assert p.pop_trial_events()[0].kind == "trigger" and p.pop_trial_events() == []


@pytest.mark.parametrize("kind", ["triggered_assist", "reciprocal"])
@pytest.mark.parametrize("size", [1, 7, 10000])
def test_no_trial_starts_before_first_sample(kind, size):
    """A session's chain sets ``first_sample`` to where its input checks have checked the
    stream's rate: an onset before it is ignored (logged), so no train starts, nor the
    antagonist's phase of a reciprocal trial; the first onset from it triggers."""
    p = make_protocol(settings(kind=kind), MUSCLES, FS)
    p.first_sample = 2000
    cmds = Recording(12000, [(1000, ONSET), (1999, ONSET), (2000, ONSET)]).run(p, size)
    assert {c.sample for c in cmds if c.is_on} and min(c.sample for c in cmds) == 2000
    assert [(e.kind, e.sample) for e in p.trial_events] == [
        ("ignored", 1000), ("ignored", 1999), ("trigger", 2000)]
    assert p.counts == TrialCounts(trials=1, hits=1, ignored=2)
    # the same onsets without the wait: the train starts at the first
    q = make_protocol(settings(kind=kind), MUSCLES, FS)
    assert min(c.sample for c in Recording(12000, [(1000, ONSET)]).run(q, size)) == 1000


def test_the_trial_event_history_is_bounded_and_nothing_is_lost_to_pop(monkeypatch):
    import closedloop.stim.protocol as protocol

    monkeypatch.setattr(protocol, "EVENT_HISTORY", 2)
    p = make_protocol(settings(), MUSCLES, FS)
    rec = Recording(12000, [(1000, ONSET), (2000, ONSET), (6899, ONSET), (6900, ONSET)])
    rec.run(p, 10000)
    assert [e.kind for e in p.trial_events] == ["ignored", "trigger"]  # the last two
    assert [e.kind for e in p.pop_trial_events()] == ["trigger", "ignored", "ignored",
                                                      "trigger"]


def test_ramp_steps_respect_max_step_even_if_ramp_is_short():
    m = dict(MUSCLES)
    m["biceps"] = MuscleStim("biceps", StimParams(1, 20.0, ramp_up_s=0.0, ramp_down_s=0.0,
                                                  on_time_s=1.0), LIMITS)
    cmds = Recording(5000, [(100, ONSET)]).run(make_protocol(settings(), m, FS), 10000)
    levels = [c.current_ma for c in cmds]
    assert max(np.diff([0.0] + levels)) <= 2.0 + 1e-9
    assert levels[-2:] == [20.0, 0.0]  # ramp-down of 0 s: straight off


def test_reciprocal_antagonist_after_gap_never_overlapping():
    p = make_protocol(settings(kind="reciprocal", reciprocal=ReciprocalSettings(0.2)),
                      MUSCLES, FS)
    assert isinstance(p, Reciprocal)
    cmds = Recording(10000, [(1000, ONSET)]).run(p, 10000)
    bic = [c for c in cmds if c.muscle == "biceps"]
    tri = [c for c in cmds if c.muscle == "triceps"]
    assert bic[-1].sample == 3900 and bic[-1].current_ma == 0.0
    assert tri[0].sample == 3900 + 200 and tri[0].phase == "ramp_up"
    # triceps: 6 steps up (0.3 s / 0.05 s) to 10 mA, 1 s plateau, 4 steps down
    assert timeline(tri)[:7] == [("triceps", 4100 + 50 * k, round(10.0 * (k + 1) / 6, 9),
                                  "ramp_up" if k < 5 else "plateau") for k in range(6)] + [
        ("triceps", 4350 + 1000, 7.5, "ramp_down")]
    assert tri[-1].sample == 5350 + 150 and tri[-1].current_ma == 0.0
    assert (tri[0].channel, tri[0].pulse_width_us, tri[0].frequency_hz) == (2, 200.0, 30.0)
    # never both on: walk the timeline
    on = {"biceps": 0.0, "triceps": 0.0}
    for c in cmds:
        on[c.muscle] = c.current_ma
        assert min(on.values()) == 0.0
    # refractory counts from the end of the whole sequence
    p2 = make_protocol(settings(kind="reciprocal"), MUSCLES, FS)
    Recording(10000, [(1000, ONSET), (5000, ONSET), (8499, ONSET)]).run(p2, 10000)
    assert [e.kind for e in p2.trial_events] == ["trigger", "ignored", "ignored"]


def test_reciprocal_with_co_stimulation_may_overlap_and_guard_allows_it():
    s = settings(kind="reciprocal", co_stimulation=True,
                 reciprocal=ReciprocalSettings(-1.0))
    p = make_protocol(s, MUSCLES, FS)
    g = SafetyGuard.from_muscles(MUSCLES, SafetySettings(), FS, protocol=s)
    cmds = Recording(10000, [(1000, ONSET)]).run(p, 10000, g)
    tri = [c for c in cmds if c.muscle == "triceps"]
    assert tri[0].sample == 3900 - 1000
    assert g.violations == ()


def test_protocols_through_the_guard_need_no_intervention():
    for kind in ("triggered_assist", "reciprocal"):
        s = settings(kind=kind)
        validate_stimulation(MUSCLES, s, SafetySettings())
        g = SafetyGuard.from_muscles(MUSCLES, SafetySettings(), FS, protocol=s)
        rec = Recording(20000, [(1000, ONSET), (9000, ONSET)])
        p = make_protocol(s, MUSCLES, FS)
        out = rec.run(p, 333, g)
        wanted = rec.run(make_protocol(s, MUSCLES, FS), 333)
        assert p.counts.hits == 2 and len(wanted) >= 40
        assert g.violations == ()
        assert [c.decision_key() for c in out] == [c.decision_key() for c in wanted]


# -- co-contraction gate ---------------------------------------------------------------------
def test_gate_blocks_onset_when_antagonist_active_in_window():
    s = settings(co_contraction_gate=True, gate_window_s=0.1)
    # antagonist above up to sample 950 (exclusive): window for onset 1000 is [901, 1000]
    rec = Recording(5000, [(1000, ONSET)], above_triceps=[(900, 950)])
    p = make_protocol(s, MUSCLES, FS)
    assert rec.run(p, 10000) == []
    assert p.counts.gated == 1 and p.trial_events[0].kind == "gated"
    # above ending before the window: triggers
    rec = Recording(5000, [(1000, ONSET)], above_triceps=[(850, 901)])
    p = make_protocol(s, MUSCLES, FS)
    assert rec.run(p, 10000)[0].sample == 1000
    # above at the onset sample itself: gated
    rec = Recording(5000, [(1000, ONSET)], above_triceps=[(1000, 1001)])
    p = make_protocol(s, MUSCLES, FS)
    assert rec.run(p, 10000) == []
    # above after the onset sample does not matter (causal)
    rec = Recording(5000, [(1000, ONSET)], above_triceps=[(1001, 1100)])
    p = make_protocol(s, MUSCLES, FS)
    assert rec.run(p, 10000)[0].sample == 1000


@pytest.mark.parametrize("size", [1, 7, 10000])
def test_gate_history_crosses_block_boundaries(size):
    s = settings(co_contraction_gate=True, gate_window_s=0.1)
    rec = Recording(3000, [(1000, ONSET), (1500, ONSET)], above_triceps=[(950, 951)])
    p = make_protocol(s, MUSCLES, FS)
    cmds = rec.run(p, size)
    assert [e.kind for e in p.trial_events] == ["gated", "trigger"]
    assert cmds[0].sample == 1500


def test_gate_needs_the_antagonist_channel():
    p = make_protocol(settings(co_contraction_gate=True), MUSCLES, FS)
    z = np.zeros((10, 1))
    blk = Block(0, np.arange(10) / FS, z, z, np.zeros((10, 1), bool), np.zeros(1),
                np.zeros(1), [], ("biceps",))
    with pytest.raises(InputError, match="needs channel 'triceps'"):
        p.step(blk)


# -- end on offset ---------------------------------------------------------------------------
def test_offset_during_plateau_ramps_down_early():
    s = settings(end_on_offset=True)
    p = make_protocol(s, MUSCLES, FS)
    cmds = Recording(8000, [(1000, ONSET), (2000, OFFSET)]).run(p, 10000)
    after = [(c.sample, c.current_ma, c.phase) for c in cmds if c.sample >= 2000]
    assert after == [(2000 + 50 * j, 20.0 - 2.0 * (j + 1),
                      "ramp_down" if j < 9 else "off") for j in range(10)]
    assert [e.kind for e in p.trial_events] == ["trigger", "early_stop"]
    # without the option the offset changes nothing
    p = make_protocol(settings(), MUSCLES, FS)
    cmds = Recording(8000, [(1000, ONSET), (2000, OFFSET)]).run(p, 10000)
    assert cmds[-1].sample == 3900


def test_offset_during_ramp_up_ramps_down_from_the_current_level():
    p = make_protocol(settings(end_on_offset=True), MUSCLES, FS)
    cmds = Recording(8000, [(1000, ONSET), (1120, OFFSET)]).run(p, 10000)
    # levels 2, 4, 6 at 1000, 1050, 1100; offset at 1120 -> 4, 2, 0 (step 2 mA)
    assert timeline(cmds) == [
        ("biceps", 1000, 2.0, "ramp_up"), ("biceps", 1050, 4.0, "ramp_up"),
        ("biceps", 1100, 6.0, "ramp_up"), ("biceps", 1120, 4.0, "ramp_down"),
        ("biceps", 1170, 2.0, "ramp_down"), ("biceps", 1220, 0.0, "off")]


def test_offset_exactly_on_a_ramp_step_does_not_take_that_step():
    p = make_protocol(settings(end_on_offset=True), MUSCLES, FS)
    cmds = Recording(8000, [(1000, ONSET), (1100, OFFSET)]).run(p, 10000)
    assert timeline(cmds) == [
        ("biceps", 1000, 2.0, "ramp_up"), ("biceps", 1050, 4.0, "ramp_up"),
        ("biceps", 1100, 2.0, "ramp_down"), ("biceps", 1150, 0.0, "off")]


def test_offset_after_ramp_down_started_is_ignored():
    p = make_protocol(settings(end_on_offset=True), MUSCLES, FS)
    cmds = Recording(8000, [(1000, ONSET), (3600, OFFSET)]).run(p, 10000)
    assert cmds[-1].sample == 3900 and "early_stop" not in [e.kind for e in p.trial_events]


def test_early_stop_retimes_the_reciprocal_antagonist():
    s = settings(kind="reciprocal", end_on_offset=True, reciprocal=ReciprocalSettings(0.2))
    p = make_protocol(s, MUSCLES, FS)
    cmds = Recording(8000, [(1000, ONSET), (2000, OFFSET)]).run(p, 10000)
    bic_off = [c.sample for c in cmds if c.muscle == "biceps" and c.phase == "off"]
    tri = [c for c in cmds if c.muscle == "triceps"]
    assert bic_off == [2450] and tri[0].sample == 2650
    assert sum(1 for c in tri if c.phase == "off") == 1


# -- cued trials -----------------------------------------------------------------------------
TRIALS = TrialSettings(n_trials=3, first_cue_s=1.0, work_s=6.0, rest_s=4.0,
                       response_window_s=2.0)


def test_cued_trials_hits_misses_and_counts():
    s = settings(kind="cued_trials", trials=TRIALS)
    p = make_protocol(s, MUSCLES, FS)
    assert isinstance(p, CuedTrials)
    # cues at 1000, 11000, 21000; windows [c, c + 2000)
    rec = Recording(33000, [(500, ONSET),      # before the first cue: ignored
                            (1500, ONSET),     # hit in trial 0
                            (13000, ONSET),    # window of trial 1 ended at 13000: late
                            (21999, ONSET)])   # hit in trial 2, last sample of window
    cmds = rec.run(p, 10000)
    kinds = [(e.kind, e.sample, e.trial) for e in p.trial_events]
    assert kinds == [
        ("ignored", 500, -1), ("cue", 1000, 0), ("hit", 1500, 0), ("cue", 11000, 1),
        ("miss", 13000, 1), ("ignored", 13000, 1), ("cue", 21000, 2), ("hit", 21999, 2),
        ("done", 31000, -1)]
    assert p.counts == TrialCounts(trials=3, hits=2, misses=1, ignored=2)
    starts = [c.sample for c in cmds if c.current_ma == 2.0 and c.phase == "ramp_up"]
    assert starts == [1500, 21999]
    assert p.finished
    assert p.trial_events[1].time == pytest.approx(101.0)


def test_cued_trials_not_finished_while_stimulating():
    s = settings(kind="cued_trials", trials=TrialSettings(
        n_trials=1, first_cue_s=0.0, work_s=2.0, rest_s=0.5, response_window_s=1.0))
    p = make_protocol(s, MUSCLES, FS)
    rec = Recording(6000, [(900, ONSET)])
    blocks = list(rec.blocks(100))
    for blk in blocks[:30]:  # up to sample 3000: done at 2500, train ends at 3800
        p.step(blk)
    assert "done" in [e.kind for e in p.trial_events] and not p.finished
    for blk in blocks[30:]:
        p.step(blk)
    assert p.finished


def test_cued_trials_gate_and_reciprocal_pattern():
    s = settings(kind="cued_trials", co_contraction_gate=True, trials=TrialSettings(
        n_trials=1, first_cue_s=1.0, work_s=8.0, rest_s=5.0, response_window_s=2.0,
        pattern="reciprocal"))
    p = make_protocol(s, MUSCLES, FS)
    rec = Recording(16000, [(1200, ONSET), (1800, ONSET)], above_triceps=[(1150, 1160)])
    cmds = rec.run(p, 10000)
    assert [e.kind for e in p.trial_events] == ["cue", "gated", "hit", "done"]
    assert {c.muscle for c in cmds} == {"biceps", "triceps"}
    assert p.counts == TrialCounts(trials=1, hits=1, gated=1)


# -- chunk invariance ------------------------------------------------------------------------
CASES = {
    "assist": (settings(), [(1000, ONSET), (1200, OFFSET), (5000, ONSET), (9000, ONSET)]),
    "assist_gate_early": (settings(co_contraction_gate=True, end_on_offset=True),
                          [(1000, ONSET), (1210, OFFSET), (4000, ONSET), (4900, ONSET),
                           (5600, OFFSET), (9999, ONSET)]),
    "reciprocal": (settings(kind="reciprocal", end_on_offset=True),
                   [(1000, ONSET), (2222, OFFSET), (8000, ONSET)]),
    "trials": (settings(kind="cued_trials", co_contraction_gate=True, trials=TrialSettings(
        n_trials=4, first_cue_s=0.5, work_s=5.0, rest_s=2.0, response_window_s=1.5)),
        [(600, ONSET), (700, ONSET), (8000, ONSET), (14999, ONSET), (16000, ONSET)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunk_invariance(case):
    s, events = CASES[case]
    rec = Recording(30000, events, above_triceps=[(650, 700), (4850, 4880), (14000, 14001)])

    def run(size: int):
        p = make_protocol(s, MUSCLES, FS)
        g = SafetyGuard.from_muscles(MUSCLES, SafetySettings(), FS, protocol=s)
        out = rec.run(p, size, g)
        return ([c.decision_key() + (c.stream_time,) for c in out],
                p.trial_events, p.counts, g.violations)

    ref = run(10000)
    assert len(ref[0]) > 10
    assert run(1) == ref
    assert run(7) == ref


# -- input errors and construction ---------------------------------------------------------
def test_event_outside_block_and_overlapping_blocks_are_input_errors():
    p = make_protocol(settings(), MUSCLES, FS)
    blk = next(Recording(100, [(50, ONSET)]).blocks(10))
    bad = Block(blk.start, blk.timestamps, blk.filtered, blk.envelope, blk.above,
                blk.on_threshold, blk.off_threshold, [Event(50, 0.05, "biceps", ONSET)],
                CHANNELS)
    with pytest.raises(InputError, match="outside its block"):
        p.step(bad)
    p = make_protocol(settings(), MUSCLES, FS)
    blocks = list(Recording(100).blocks(10))
    p.step(blocks[1])
    with pytest.raises(InputError, match="overlaps"):
        p.step(blocks[0])


def test_gap_in_blocks_emits_overdue_steps_at_first_sample_after_gap():
    p = make_protocol(settings(), MUSCLES, FS)
    blocks = list(Recording(5000, [(1000, ONSET)]).blocks(10))
    cmds = []
    for blk in blocks[:101]:  # up to sample 1010
        cmds += p.step(blk)
    cmds += p.step(blocks[110])  # samples 1010..1099 dropped; 1100..1109
    assert [(c.sample, c.current_ma) for c in cmds] == [(1000, 2.0), (1100, 4.0),
                                                        (1100, 6.0)]


def test_make_protocol_rejects_train_longer_than_max_on_time():
    m = dict(MUSCLES)
    m["biceps"] = MuscleStim("biceps", StimParams(1, 20.0, on_time_s=9.5), LIMITS)
    with pytest.raises(ConfigError, match="longer than max_on_time_s = 10"):
        make_protocol(settings(), m, FS)
    with pytest.raises(ConfigError, match="stimulates triceps"):
        make_protocol(settings(kind="reciprocal"), {"biceps": MUSCLES["biceps"]}, FS)
    with pytest.raises(ConfigError, match="fs"):
        make_protocol(settings(), MUSCLES, 0.0)
