"""Proportional stimulation in the loop, on the simulated patient at 10 dB with
stimulation artifacts and physiological M-waves: the current follows the true voluntary
drive; stimulation alone reads as no effort; a passive patient or one who stops trying
gets no current within the set time; the M-wave rules (no response, fatigue) act; the
same samples in chunks of 1, 7 or 10,000 give the same commands."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from closedloop.config import Config, load_config
from closedloop.core.events import Block
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.runtime.replay import RecordedEffect, SplitSource
from closedloop.sim.patient import Attempt, FatigueModel, MWaveModel
from closedloop.sources.sim import SimSource, patient_settings
from closedloop.stim.drivers.sim import SimStimulator
from closedloop.stim.protocol import TriggeredAssist
from tests.conftest import ROOT
from tests.runtime.conftest import ArraySource, Capture

FS = 2000.0
PROGRAM = ROOT / "configs" / "programs" / "proportional_assist.toml"


@pytest.fixture(scope="module")
def program() -> Config:
    return load_config(PROGRAM)


class TruthSource(SimSource):
    """The simulated source, keeping the patient's truth (voluntary drive, pulses)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drive: list[np.ndarray] = []
        self.pulses: list = []

    def read(self, timeout=None):
        chunk = super().read(timeout)
        if chunk is not None and chunk.truth is not None:
            self.drive.append(chunk.truth.drive)
            self.pulses += list(chunk.truth.pulses)
        return chunk


class Efforts(Capture):
    """Keeps the effort (µV) of every block too."""

    def __init__(self) -> None:
        super().__init__()
        self.effort: list[np.ndarray] = []

    def push_block(self, block: Block) -> None:
        super().push_block(block)
        if block.effort is not None:
            self.effort.append(block.effort.uv.copy())


def run(config: Config, script, seconds: float, *, chunk: int = 20, factory=None,
        **patient):
    """A session on the simulated patient (physiological M-wave unless given); returns
    (outcome, capture, drive (n, muscles), source)."""
    holder: dict[str, SimSource] = {}
    stim = SimStimulator(clock=lambda: holder["src"].now())
    chans = {m.stim.channel: m.name for m in config.muscles if m.stim is not None}
    patient.setdefault("mwave", MWaveModel())
    ps = replace(patient_settings(config), **patient)
    src = TruthSource(ps, script, realtime=False, chunk_size=chunk, stimulator=stim,
                      stim_channels=chans)
    holder["src"] = src
    src.open()
    stim.open()
    cap = Efforts()
    out = run_loop(config, src, stim, outlets=cap, protocol_factory=factory,
                   options=LoopOptions(duration_s=seconds, watchdog_s=5.0))
    return out, cap, np.vstack(src.drive), src


def current(commands, muscle: str, n: int) -> np.ndarray:
    """The current delivered at every sample (each command from its effective sample)."""
    cur = np.zeros(n)
    for c in sorted((c for c in commands if c.muscle == muscle and c.effective_sample >= 0),
                    key=lambda c: c.effective_sample):
        cur[c.effective_sample:] = c.current_ma
    return cur


def modulated(seconds: float, rng: np.random.Generator) -> list[Attempt]:
    """Repetitions in which the patient holds a light effort and pushes harder for a
    while in the middle (the drive is the larger of the two)."""
    out, t = [], 2.0
    while t + 6 < seconds:
        dur = rng.uniform(3.0, 4.5)
        out.append(Attempt("biceps", round(t, 3), dur, rng.uniform(0.3, 0.45), 0.04))
        out.append(Attempt("biceps", round(t + rng.uniform(0.8, 1.2), 3),
                           rng.uniform(1.0, 1.5), rng.uniform(0.85, 1.0), 0.1))
        t += dur + rng.uniform(4.0, 6.0)
    return out


def off_after(cur: np.ndarray, sample: int) -> int:
    """The first sample at or after ``sample`` with no current."""
    return sample + int(np.flatnonzero(cur[sample:] == 0)[0])


@pytest.mark.parametrize("seed", [1, 2])
def test_the_current_follows_the_true_voluntary_drive(program, seed):
    script = modulated(120.0, np.random.default_rng(seed))
    out, cap, drive, _ = run(program, script, 120.0)
    assert out.reason == "duration" and out.n_violations == 0, out.violations
    assert out.trials["trials"] == len(script) // 2  # one repetition per attempt
    cur = current(cap.commands, "biceps", drive.shape[0])
    on = cur > 0
    r = np.corrcoef(drive[on, 0], cur[on])[0, 1]
    print(f"seed {seed}: correlation of true drive and delivered current during "
          f"repetitions r = {r:.3f}")
    assert r >= 0.8
    # harder pushes get more current (the proportional law, not just on/off)
    hi, lo = on & (drive[:, 0] > 0.8), on & (drive[:, 0] > 0.25) & (drive[:, 0] < 0.5)
    assert cur[hi].mean() > cur[lo].mean() + 5.0
    assert cur.max() <= program.muscle("biceps").stim.current_ma


def test_stimulation_alone_reads_as_no_effort(program):
    """A passive patient under a 4 s train at 25 mA (a large M-wave, near Mmax): the
    effort read between the pulses stays at its rest level; the M-wave tail does not
    feed back as voluntary effort."""

    class MeasuredAssist(TriggeredAssist):
        uses_effort = True

    config = replace(program, protocol=replace(program.protocol, kind="triggered_assist"))
    script = [Attempt("biceps", 2.0, 6.0, 1.0, 0.04)]
    out, cap, drive, src = run(config, script, 9.0, passive=True,
                               factory=lambda s, m, fs: MeasuredAssist(s, m, fs))
    effort = np.vstack(cap.effort)[:, 0]
    cur = current(cap.commands, "biceps", drive.shape[0])
    assert cur.max() == 25.0
    mwave = max(p.mwave_pp for p in src.pulses)
    assert mwave > 2e-3  # 2 mV: a thousand times the voluntary EMG
    rest = np.nanmedian(effort[: int(1.8 * FS)])
    plateau = (cur == 25.0) & (drive[:, 0] == 0)
    assert plateau.sum() > 3 * FS
    during = effort[plateau]
    print(f"effort at rest {rest:.2f} µV, stimulated passive {np.nanmedian(during):.2f} µV "
          f"(95th percentile {np.nanpercentile(during, 95):.2f})")
    assert np.nanmedian(during) < 1.25 * rest
    assert np.nanpercentile(during, 95) < program.protocol.threshold


def test_a_passive_patient_starts_nothing_and_a_running_repetition_ramps_down(program):
    """The attempt starts a repetition; once stimulated the patient lets go (passive):
    the current is off within 0.5 s of the drive reaching zero, and stimulation alone
    starts no further repetition."""
    script = [Attempt("biceps", t, 2.0, 0.9, 0.04) for t in (2.0, 9.0, 16.0)]
    out, cap, drive, _ = run(program, script, 22.0, passive=True)
    assert out.trials["trials"] == 3  # one per attempt, none from stimulation
    cur = current(cap.commands, "biceps", drive.shape[0])
    for a in script:
        s0 = int(a.onset_s * FS)
        stim_on = s0 + int(np.flatnonzero(cur[s0:] > 0)[0])
        gone = stim_on + int(np.flatnonzero(drive[stim_on:, 0] == 0)[0])
        stop_s = (off_after(cur, gone) - gone) / FS
        print(f"passive: off {1000 * stop_s:.0f} ms after the drive reached zero")
        assert stop_s <= 0.5
        # no current again until the next attempt
        assert not cur[off_after(cur, gone) : int((a.onset_s + 6.0) * FS)].any()


def test_a_patient_who_stops_trying_gets_zero_current_within_500_ms(program):
    script = [Attempt("biceps", t, 4.0, 0.9, 0.04) for t in (2.0, 10.0, 18.0)]
    out, cap, drive, _ = run(program, script, 25.0, quit_after_s=1.0)
    cur = current(cap.commands, "biceps", drive.shape[0])
    assert out.trials["trials"] == 3
    for a in script:
        s0 = int(a.onset_s * FS)
        stim_on = s0 + int(np.flatnonzero(cur[s0:] > 0)[0])
        assert cur[stim_on + int(0.8 * FS)] >= 15.0  # trying hard: well above I_min
        gone = stim_on + int(np.flatnonzero(drive[stim_on:, 0] == 0)[0])
        assert gone < s0 + int(a.duration_s * FS)  # stopped mid-repetition
        stop_ms = 1000 * (off_after(cur, gone) - gone) / FS
        print(f"stopped trying: zero current {stop_ms:.0f} ms after the drive reached zero")
        assert stop_ms <= 500


def test_the_fatigued_m_wave_is_tracked_within_10_percent_over_10_minutes(program):
    """Ten minutes of proportional repetitions on a fatiguing muscle: every M-wave
    record the loop publishes is within 10 % of the true M-wave of its pulses; the
    fatigue rule fires and only ever lowers the current."""
    rng = np.random.default_rng(5)
    script = [Attempt("biceps", round(t, 3), float(rng.uniform(5.0, 5.5)), 0.9, 0.04)
              for t in np.arange(2.0, 594.0, 9.0)]
    config = replace(program, protocol=replace(
        program.protocol, mwave=replace(program.protocol.mwave, fatigue_action="lower")))
    out, cap, drive, src = run(config, script, 600.0, fatigue=FatigueModel(fatigue_s=15.0,
                                                                         recovery_s=100.0))
    pulses = sorted((p for p in src.pulses if p.muscle == "biceps"), key=lambda p: p.time)
    times = np.array([p.time for p in pulses])
    pp = np.array([p.mwave_pp for p in pulses])
    recs = [r for r in cap.mwaves if r.muscle == "biceps" and r.present and r.n_pulses >= 3]
    assert len(recs) > 200
    errors = []
    for r in recs:
        lo = int(np.searchsorted(times, r.first_sample / FS - 1e-6))
        hi = int(np.searchsorted(times, r.last_sample / FS + 1e-6, side="right"))
        mine = [p for p, x in zip(pulses[lo:hi], pp[lo:hi], strict=True)
                if p.current_ma == r.current_ma and x > 0]
        truth = np.mean([p.mwave_pp for p in mine])
        errors.append(abs(r.peak_to_peak / truth - 1.0))
    fitness = [p.fitness for p in pulses]
    print(f"M-wave records: {len(recs)}, largest error {100 * max(errors):.1f} %, "
          f"median {100 * np.median(errors):.1f} %; fitness {min(fitness):.2f}..1")
    assert max(errors) < 0.10
    assert min(fitness) < 0.75  # the muscle did fatigue
    lowered = [(label, f) for label, _, f in cap.markers
               if label == "mwave_warning" and f["kind"] == "fatigue"]
    assert lowered and all(f["action"] == "lower" for _, f in lowered)
    # the session's summary (what the patient record keeps): every record counted
    summary = out.mwave["biceps"]
    assert summary.records == len([r for r in cap.mwaves if r.muscle == "biceps"])
    assert summary.first_pp > 0 and summary.last_pp > 0
    # after the first lowering the current never again reaches the unlowered maximum
    first = min(f["sample"] for _, f in lowered)
    later = [c.current_ma for c in cap.commands if c.muscle == "biceps" and c.sample > first]
    assert max(later) <= 0.9 * program.muscle("biceps").stim.current_ma


@pytest.mark.parametrize("how", ["artifact", "nothing"])
def test_no_response_on_a_detached_electrode_stops_that_channel_within_2_s(program, how):
    script = [Attempt("biceps", 2.0, 5.0, 1.0, 0.04), Attempt("biceps", 12.0, 3.0, 1.0, 0.04)]
    out, cap, drive, _ = run(program, script, 16.0, detached={"biceps": how})
    first_on = min(c.effective_sample for c in cap.commands if c.is_on)
    warned = [f for label, _, f in cap.markers
              if label == "mwave_warning" and f["kind"] == "no_response"]
    stops = [c for c in cap.commands if c.muscle == "biceps" and c.phase == "stop"
             and c.sample < 12 * FS]
    assert warned and stops
    stop_s = (stops[0].sample - first_on) / FS
    print(f"detached ({how}): warned after {(warned[0]['sample'] - first_on) / FS:.2f} s, "
          f"channel stopped after {stop_s:.2f} s of stimulation")
    assert stop_s <= 2.0
    assert any("no evoked response" in m for m in out.issues)
    assert any("check the electrodes" in m for m in out.violations)
    # the channel stays off for the rest of the session, the next attempt included
    assert not any(c.is_on for c in cap.commands if c.sample > stops[0].sample)
    assert out.reason == "duration"


def test_a_working_electrode_is_never_stopped(program):
    script = [Attempt("biceps", t, 3.0, 0.9, 0.04) for t in (2.0, 9.0)]
    out, cap, _, _ = run(program, script, 14.0)
    judged = [r for r in cap.mwaves if r.current_ma >= 10.0 and r.n_pulses >= 3]
    assert len(judged) > 10 and all(r.present for r in judged)
    assert not [m for m in out.issues if "evoked" in m]
    end = max(c.sample for c in cap.commands)
    assert not [c for c in cap.commands if c.phase == "stop" and c.sample < end]


@pytest.fixture(scope="module")
def live(program):
    script = modulated(20.0, np.random.default_rng(3))
    out, cap, _, _ = run(program, script, 20.0, chunk=20)
    assert out.trials["trials"] >= 2
    return out, cap


@pytest.mark.parametrize("sizes", [(1,), (7,), (10000,)])
def test_chunking_changes_no_command(program, live, sizes):
    """The recorded EMG replayed in chunks of 1, 7 or 10,000 (each command taking
    effect where it did live) gives the same commands, to the sample."""
    out, cap = live
    x = np.vstack(cap.emg)
    rec = [c for c in cap.commands if c.effective_sample >= 0]
    src = SplitSource(ArraySource(x, FS, program.muscle_names, sizes),
                      sorted({c.effective_sample for c in rec}))
    again = Capture()
    stim = SimStimulator()
    with src, stim:
        run_loop(program, src, stim, outlets=again, effective_sample=RecordedEffect(rec),
                 options=LoopOptions(watchdog_s=5.0))
    assert len(cap.commands) > 40
    assert [c.decision_key() for c in again.commands] == [c.decision_key() for c in cap.commands]
    key = [(r.sample, r.muscle, r.current_ma, r.n_pulses, r.peak_to_peak) for r in cap.mwaves]
    assert [(r.sample, r.muscle, r.current_ma, r.n_pulses, r.peak_to_peak)
            for r in again.mwaves] == key


def test_the_guard_never_had_to_step_in(program):
    """The protocol keeps to the channel's step and on-time limits by itself: the guard
    never clipped or refused anything in a session of proportional repetitions."""
    out, cap, _, _ = run(program, modulated(60.0, np.random.default_rng(9)), 60.0)
    assert out.n_violations == 0
    assert len(cap.commands) > 200


def test_reciprocal_use_follows_each_muscle_on_its_own(program):
    """``reciprocal_effort``: the triceps' own attempts get their own proportional
    repetitions, never while the biceps is stimulated."""
    config = replace(program, protocol=replace(program.protocol, reciprocal_effort=True))
    script = [Attempt("biceps", 2.0, 3.0, 0.9, 0.04), Attempt("triceps", 9.0, 3.0, 0.5, 0.04),
              Attempt("triceps", 16.0, 3.0, 1.0, 0.04)]
    out, cap, drive, _ = run(config, script, 21.0)
    assert out.n_violations == 0 and out.trials["trials"] == 3
    bi = current(cap.commands, "biceps", drive.shape[0])
    tri = current(cap.commands, "triceps", drive.shape[0])
    assert not (bi * tri).any()  # never both at once
    weak, strong = tri[int(10 * FS) : int(11.5 * FS)], tri[int(17 * FS) : int(18.5 * FS)]
    assert weak.min() > 0 and strong.mean() > weak.mean() + 4.0
