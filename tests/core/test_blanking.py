"""Stimulation-artifact removal: the schedule matches the simulated stimulator's pulses,
blanking covers every artifact and leaves the rest untouched, the comb removes what is
locked to the pulses and keeps voluntary EMG's level, and chunking changes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.config.schema import parse_table
from closedloop.core.blanking import ArtifactRemover, ArtifactSettings, mains_period
from closedloop.core.pipeline import Pipeline
from closedloop.errors import ConfigError
from closedloop.sim.patient import Attempt, PatientSettings, Pulse, SimulatedPatient
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.sim import SimStimulator

FS = 2000.0
MUSCLES = ("biceps", "triceps")


def command(current: float, sample: int, freq: float) -> StimCommand:
    """A command that takes effect at ``sample`` (the stimulator has no clock here)."""
    return StimCommand("biceps", 1, current, 250.0, freq, sample - 1, sample / FS, "x",
                       effective_sample=sample)


#: (effective sample, current, frequency): on, level change, frequency change, off, on again
SCHEDULE = [(2000, 10.0, 35.0), (2500, 20.0, 35.0), (3111, 20.0, 40.0), (5000, 0.0, 40.0),
            (7003, 8.0, 30.0), (9000, 0.0, 30.0)]


def scheduled(settings: ArtifactSettings | None = None, mains: float = 50.0) -> ArtifactRemover:
    r = ArtifactRemover(settings or ArtifactSettings(), FS, MUSCLES, mains)
    for e, cur, f in SCHEDULE:
        r.command("biceps", 1, cur > 0, f, e)
    return r


def sim_pulse_samples(t_end: float) -> np.ndarray:
    """Pulse times of the simulated stimulator given the same commands, in samples."""
    stim = SimStimulator()
    stim.open()
    for e, cur, f in SCHEDULE:
        stim.apply([command(cur, e, f)])
    return stim.pulses(0.0, t_end)["time"] * FS


def test_schedule_follows_the_simulated_stimulators_pulses():
    # the simulated stimulator, its clock at each command's effective sample
    got = np.asarray(scheduled().pulses(0, 10000))
    want = np.floor(sim_pulse_samples(5.0) + 1e-9).astype(int)
    assert got.size == want.size > 80
    np.testing.assert_array_equal(got, want)


def test_effective_samples_must_not_go_back():
    r = ArtifactRemover(ArtifactSettings(), FS, MUSCLES, 50.0)
    r.command("biceps", 1, True, 35.0, 100)
    with pytest.raises(ValueError, match="before"):
        r.command("biceps", 1, False, 35.0, 99)


def stimulated_emg(seconds: float, *, seed: int = 3, hum_rms: float = 10e-6,
                   script=()) -> tuple[np.ndarray, np.ndarray]:
    """(with stimulation, without) from the same simulated patient, SCHEDULE's pulses."""
    stim = SimStimulator()
    stim.open()
    pending = list(SCHEDULE)
    settings = PatientSettings(fs=FS, muscles=MUSCLES, hum_rms=hum_rms)

    def pulses(t0: float, t1: float):
        rec = stim.pulses(t0, t1)
        return [Pulse(float(r["time"]), "biceps", float(r["current_ma"]), 250.0) for r in rec]

    with_stim = SimulatedPatient(settings, script, seed=seed, pulses=pulses)
    out = []
    n = int(seconds * FS)
    for i in range(0, n, 50):  # as a live loop: each command applied before its sample
        while pending and pending[0][0] <= i:
            e, cur, f = pending.pop(0)
            stim.apply([command(cur, e, f)])
        out.append(with_stim.read(50))
    clean = SimulatedPatient(settings, script, seed=seed).read(n)
    return np.vstack(out), clean


def test_blanking_covers_every_artifact_and_touches_nothing_else():
    x, clean = stimulated_emg(5.0)
    r = scheduled()
    mask = r.blank_mask(0, x.shape[0])
    assert 0.3 < mask[2000:5000].mean() < 0.7  # 15 ms of every 25-29 ms pulse period
    y = x.T.copy()
    for i in range(0, y.shape[1], 20):
        r.blank_inplace(y[:, i : i + 20], i)
    err = y - clean.T
    np.testing.assert_array_equal(err[:, ~mask], 0.0)  # outside the stretches: untouched
    # inside: the fill follows the hum; what is left is about the noise (5 uV rms)
    rms = np.sqrt(np.mean(err[:, mask] ** 2, axis=1))
    assert np.all(rms < 10e-6), rms
    # a plain sample-and-hold (no mains frequency) cannot follow the 10 uV hum
    r0 = scheduled(mains=0.0)
    y0 = x.T.copy()
    r0.blank_inplace(y0, 0)
    assert np.all(np.sqrt(np.mean((y0 - clean.T)[:, mask] ** 2, axis=1)) > rms)


@pytest.mark.parametrize("sizes", [[1], [7], [20, 3, 400], [4096]])
def test_pipeline_with_artifact_removal_is_chunk_invariant(sizes):
    script = [Attempt("triceps", 1.6, 1.0), Attempt("biceps", 2.9, 0.5)]
    x, _ = stimulated_emg(5.0, script=script)

    def run(chunks):
        p = Pipeline(FS, MUSCLES, artifacts=scheduled())
        blocks, i, k = [], 0, 0
        while i < x.shape[0]:
            n = chunks[k % len(chunks)]
            blocks.append(p.process(x[i : i + n]))
            i, k = i + n, k + 1
        return (np.vstack([b.filtered for b in blocks]), np.vstack([b.envelope for b in blocks]),
                [e for b in blocks for e in b.events])

    ref = run([x.shape[0]])
    got = run(sizes)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert got[2] == ref[2]


def test_comb_removes_the_pulse_locked_part_and_keeps_voluntary_level():
    rng = np.random.default_rng(0)
    n = 40000

    def comb(y: np.ndarray) -> np.ndarray:
        r = ArtifactRemover(ArtifactSettings(blank_ms=1.0, comb_pulses=8), FS, MUSCLES, 50.0)
        r.command("biceps", 1, True, 35.0, 0)
        y = y.copy()
        for i in range(0, n, 20):
            r.comb_inplace(y[:, i : i + 20], i)
        return y

    r = ArtifactRemover(ArtifactSettings(blank_ms=1.0), FS, MUSCLES, 50.0)
    r.command("biceps", 1, True, 35.0, 0)
    locked = np.zeros(n)
    shape = 50e-6 * np.sin(np.linspace(0, 3 * np.pi, 40)) * np.exp(-np.arange(40) / 15)
    for p in r.pulses(0, n):  # an M-wave-like response after every pulse
        locked[p : p + 40] += shape[: n - p]
    voluntary = 20e-6 * rng.standard_normal(n)
    settled = slice(8000, None)  # after ~140 pulses the template has converged
    rms = lambda v: float(np.sqrt(np.mean(v**2)))  # noqa: E731
    # the comb is linear: the locked part and voluntary EMG can be looked at one by one
    assert rms(comb(np.vstack([locked, locked]))[0, settled]) < 1e-3 * rms(locked[settled])
    y = comb(np.vstack([voluntary, voluntary]))
    assert rms(y[0, settled]) / rms(voluntary[settled]) == pytest.approx(1.0, abs=0.03)
    np.testing.assert_array_equal(y[1], voluntary)  # only on the stimulated muscle's channel


def test_mains_period_is_whole_cycles_and_samples():
    assert mains_period(2000.0, 50.0) == 40
    assert mains_period(2000.0, 60.0) == 100
    assert mains_period(250.0, 60.0) == 25
    assert mains_period(2000.0, 0.0) == 0


def test_settings_from_table_name_the_bad_key():
    t = {"blank_ms": 15.0, "comb": False, "hum_db": 35.0}
    s = parse_table(ArtifactSettings, t, source="x.toml", path="artifacts")
    assert (s.blank_ms, s.comb, s.hum_db) == (15.0, False, 35.0)
    with pytest.raises(ConfigError, match=r"x.toml: artifacts.blank_ms = 80.0"):
        parse_table(ArtifactSettings, {"blank_ms": 80.0}, source="x.toml", path="artifacts")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_table(ArtifactSettings, {"blank": 1.0}, source="x.toml", path="artifacts")


def test_the_schedule_gives_each_pulse_its_exact_place_channel_column_and_period():
    r = scheduled()
    got = r.scheduled(0, 10000)
    assert [math.floor(p) for p, *_ in got] == r.pulses(0, 10000)
    np.testing.assert_allclose([p for p, *_ in got], sim_pulse_samples(5.0), rtol=0, atol=1e-6)
    assert {(ch, col) for _, ch, col, _ in got} == {(1, 0)}
    periods = {round(period, 6) for *_, period in got}
    assert periods == {round(FS / 35.0, 6), round(FS / 40.0, 6), round(FS / 30.0, 6)}
    # and the blanked stretches, with extra samples after each
    mask, wider = r.blank_mask(0, 10000), r.blank_mask(0, 10000, extra=4)
    assert np.all(wider[mask]) and wider.sum() - mask.sum() == 4 * len(got)


def test_comb_all_cancels_what_is_locked_on_every_channel_and_keeps_voluntary_level():
    rng = np.random.default_rng(0)
    n = 40000

    def comb(y: np.ndarray, comb_all: bool) -> np.ndarray:
        r = ArtifactRemover(ArtifactSettings(blank_ms=1.0, comb_pulses=8), FS, MUSCLES, 50.0,
                            comb_all=comb_all)
        r.command("biceps", 1, True, 35.0, 0)
        y = y.copy()
        for i in range(0, n, 20):
            r.comb_inplace(y[:, i : i + 20], i)
        return y

    r = ArtifactRemover(ArtifactSettings(blank_ms=1.0), FS, MUSCLES, 50.0)
    r.command("biceps", 1, True, 35.0, 0)
    locked = np.zeros(n)
    shape = 50e-6 * np.sin(np.linspace(0, 3 * np.pi, 40)) * np.exp(-np.arange(40) / 15)
    for p in r.pulses(0, n):  # on the antagonist too: cross-talk of an M-wave
        locked[p : p + 40] += shape[: n - p]
    voluntary = 20e-6 * rng.standard_normal((2, n))
    settled = slice(8000, None)
    rms = lambda v: float(np.sqrt(np.mean(v**2)))  # noqa: E731
    both = np.vstack([locked, 0.3 * locked])
    assert rms(comb(both, True)[1, settled]) < 1e-3 * rms(0.3 * locked[settled])
    np.testing.assert_array_equal(comb(both, False)[1], both[1])  # by default: untouched
    y = comb(voluntary, True)
    for c in (0, 1):
        assert rms(y[c, settled]) / rms(voluntary[c, settled]) == pytest.approx(1.0, abs=0.03)
    np.testing.assert_array_equal(comb(both, True)[0], comb(both, False)[0])


@pytest.mark.parametrize("sizes", [[7], [20, 3, 400]])
def test_comb_all_is_chunk_invariant(sizes):
    script = [Attempt("triceps", 1.6, 1.0), Attempt("biceps", 2.9, 0.5)]
    x, _ = stimulated_emg(5.0, script=script)

    def run(chunks):
        p = Pipeline(FS, MUSCLES, artifacts=ArtifactRemover(ArtifactSettings(), FS, MUSCLES,
                                                            50.0, comb_all=True))
        for e, cur, f in SCHEDULE:
            p.artifacts.command("biceps", 1, cur > 0, f, e)
        out, i, k = [], 0, 0
        while i < x.shape[0]:
            n = chunks[k % len(chunks)]
            out.append(p.process(x[i : i + n]).filtered)
            i, k = i + n, k + 1
        return np.vstack(out)

    np.testing.assert_array_equal(run(sizes), run([x.shape[0]]))


@pytest.mark.parametrize("mains", [50.0, 60.0, 0.0])
def test_blanking_in_large_chunks_is_blanking_in_small_ones_to_the_bit(mains):
    """Long unblanked runs go through whole mains periods at a time: the filled
    samples, the hum it learnt and the residual it keeps are those of 1-, 7- and
    33-sample chunks (periods piece by piece)."""
    x, _ = stimulated_emg(4.0)
    runs = []
    for size in (x.shape[0], 1, 7, 33, 4096):
        r = scheduled(mains=mains)
        y = x.T.copy()
        for i in range(0, y.shape[1], size):
            r.blank_inplace(y[:, i : i + size], i)
        runs.append((y, r._hum.copy(), r._resid.copy()))
    for y, hum, resid in runs[1:]:
        np.testing.assert_array_equal(y, runs[0][0])
        np.testing.assert_array_equal(hum, runs[0][1])
        np.testing.assert_array_equal(resid, runs[0][2])
