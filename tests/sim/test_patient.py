"""The simulated patient answers back: M-wave recruitment, fatigue, cross-talk, passive and
quitting patients, detached electrodes, ground truth; and with none of it switched on it
is the original patient, sample for sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.sim.patient import (
    Attempt,
    FatigueModel,
    MWaveModel,
    PatientSettings,
    Pulse,
    SimulatedPatient,
)

FS = 2000.0
MUSCLES = ("biceps", "triceps")
ANTAGONISTS = {"biceps": "triceps", "triceps": "biceps"}


def trains(*specs: tuple[str, float, float, float, float]):
    """A ``pulses(t0, t1)`` callable: (muscle, frequency, on_s, off_s, current) trains,
    pulse k at ``on + k / f`` (250 us)."""

    def pulses(t0: float, t1: float) -> list[Pulse]:
        out = []
        for m, f, on, off, cur in specs:
            k0 = max(0, math.ceil((t0 - on) * f) - 1)
            for k in range(k0, k0 + int((t1 - t0) * f) + 3):
                t = on + k / f
                if t0 <= t < t1 and t < off:
                    out.append(Pulse(t, m, cur, 250.0))
        return sorted(out, key=lambda p: p.time)

    return pulses


def patient(pulses=None, script=(), seed=3, **kw) -> SimulatedPatient:
    ps = PatientSettings(fs=FS, muscles=MUSCLES, antagonists=ANTAGONISTS, **kw)
    return SimulatedPatient(ps, script, seed=seed, pulses=pulses)


def test_with_the_new_effects_off_stimulation_adds_the_original_artifact_and_mwave():
    """What every shipped config and recording uses, reproduced from the original formula."""
    pulses = trains(("biceps", 35.0, 1.0, 2.5, 20.0), ("triceps", 30.0, 1.7001, 3.0, 12.0))
    script = [Attempt("biceps", 0.5, 2.0, 0.8, 0.05)]
    n = int(4 * FS)
    got = patient(pulses, script).read(n)
    want = patient(None, script).read(n)
    s = PatientSettings()
    t = np.arange(int(0.012 * FS)) / FS
    shape = np.sin(2 * np.pi * t / 0.010) * np.exp(-t / 0.004)
    shape /= np.max(np.abs(shape))
    for p in pulses(0.0, 4.0):
        c = MUSCLES.index(p.muscle)
        k = int(round(p.time * FS))
        for d, sign in ((0, 1.0), (1, -0.6)):
            amp = sign * s.artifact_amplitude * p.current_ma / 10.0
            want[k + d, :] += amp * s.crosstalk
            want[k + d, c] += amp * (1 - s.crosstalk)
        want[k + 2 : k + 2 + shape.size, c] += s.mwave_amplitude * p.current_ma / 10.0 * shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_recruitment_is_a_sigmoid_of_the_pulse_charge():
    m = MWaveModel(threshold_ma=10.0, slope_ma=3.0, reference_width_us=250.0)
    mid = 10.0 + 3.0 * math.log(19)
    assert m.recruitment(10.0, 250.0) == pytest.approx(0.05)
    assert m.recruitment(mid, 250.0) == pytest.approx(0.5)
    assert m.recruitment(mid + 3.0 * math.log(19), 250.0) == pytest.approx(0.95)
    assert m.recruitment(0.0, 250.0) == 0.0
    currents = np.linspace(1, 80, 200)
    r = [m.recruitment(i, 250.0) for i in currents]
    assert np.all(np.diff(r) > 0) and r[-1] > 0.999
    # charge: twice the width is twice the current
    assert m.recruitment(15.0, 500.0) == pytest.approx(m.recruitment(30.0, 250.0))


def test_the_mwave_has_its_latency_duration_amplitude_and_cross_talk():
    mw = MWaveModel(max_pp=4e-3, latency_ms=5.0, duration_ms=15.0, crosstalk=0.2)
    at = 1.00037  # between two samples
    one = trains(("biceps", 1.0, at, at + 0.5, 30.0))
    x, truth = patient(one, mwave=mw).read_truth(int(2 * FS))
    clean = patient(mwave=mw).read(int(2 * FS))
    d = x - clean
    k = int(round(at * FS))
    art = np.zeros(d.shape[0], dtype=bool)
    art[[k, k + 1]] = True
    wave = d[~art, 0]
    idx = np.flatnonzero(~art)
    nz = idx[np.abs(wave) > 0]
    assert (nz[0] - at * FS) / FS >= 0.005 and (nz[-1] - at * FS) / FS <= 0.020
    assert (nz[0] - at * FS) / FS < 0.0056 and (nz[-1] - at * FS) / FS > 0.0194
    r = mw.recruitment(30.0, 250.0)
    assert np.ptp(wave) == pytest.approx(4e-3 * r, rel=0.02)  # sampled, so a hair under
    assert wave[np.flatnonzero(np.abs(wave) > 1e-5)[0]] < 0  # first phase negative
    np.testing.assert_allclose(d[~art, 1], 0.2 * wave, rtol=0, atol=1e-18)
    (p,) = truth.pulses
    assert p.time == at and p.recruitment == pytest.approx(r) and p.fitness == 1.0
    assert p.mwave_pp == pytest.approx(4e-3 * r)


def riener(mu: float, a: float, seconds: float, f: FatigueModel, dt: float = 1e-3) -> float:
    """The fatigue ODE, integrated by small Euler steps (the reference)."""
    for _ in range(int(round(seconds / dt))):
        mu += dt * ((f.floor - mu) * a / f.fatigue_s + (1 - mu) * (1 - a) / f.recovery_s)
    return mu


def test_fatigue_follows_the_riener_veltink_model_and_recovers_at_rest():
    fat = FatigueModel(floor=0.5, fatigue_s=30.0, recovery_s=50.0)
    mw = MWaveModel()
    stim = trains(("biceps", 25.0, 1.0, 61.0, 30.0), ("biceps", 25.0, 121.0, 122.0, 30.0))
    p = patient(stim, mwave=mw, fatigue=fat, hum_rms=0.0)
    pulses = []
    for _ in range(125):
        pulses += p.read_truth(int(FS))[1].pulses
    r = mw.recruitment(30.0, 250.0)
    fit = np.array([q.fitness for q in pulses])
    times = np.array([q.time for q in pulses])
    assert fit[0] == 1.0
    # 60 s of stimulation (the last pulse 40 ms before the end of the train)
    mu_end = riener(1.0, r, 60.0 - 0.04, fat)
    assert fit[times < 61.0][-1] == pytest.approx(mu_end, abs=1e-3)
    assert mu_end < 0.65  # it did fatigue: down most of the way to the floor
    # then 60 s at rest: the first pulse of the probe train has recovered
    mu_rec = riener(riener(mu_end, r, 0.04, fat), 0.0, 60.0, fat)
    assert fit[times >= 121.0][0] == pytest.approx(mu_rec, abs=1e-3)
    assert mu_rec > 0.85
    pp = np.array([q.mwave_pp for q in pulses])
    np.testing.assert_allclose(pp, mw.max_pp * r * fit)


def test_a_passive_patient_stops_trying_while_stimulated():
    attempt = [Attempt("biceps", 1.0, 5.0, 1.0, 0.05)]
    stim = trains(("biceps", 35.0, 2.0, 4.0, 20.0))
    kw = dict(mwave=MWaveModel(), passive=True, relax_s=0.05)
    x, truth = patient(stim, attempt, **kw).read_truth(int(7 * FS))
    t = np.arange(x.shape[0]) / FS
    d = truth.drive[:, 0]
    assert np.all(d[(t > 1.06) & (t < 2.0)] == 1.0)
    assert np.all(d[(t >= 2.05) & (t < 4.0)] == 0.0)  # down within relax_s
    assert np.all(d[(t > 4.2) & (t < 5.95)] == 1.0)  # back after the train
    assert np.all(truth.drive[:, 1] == 0.0)
    # while gated, the EMG is what the same patient gives without the attempt
    resting = patient(stim, (), **kw).read(int(7 * FS))
    gated = (t >= 2.05) & (t < 3.99)
    np.testing.assert_allclose(x[gated], resting[gated], rtol=0, atol=1e-12)
    assert not np.allclose(x[(t > 1.1) & (t < 1.9)], resting[(t > 1.1) & (t < 1.9)])


def test_a_patient_who_quits_stops_until_the_end_of_the_attempt():
    script = [Attempt("biceps", 1.0, 7.0, 1.0, 0.05), Attempt("biceps", 9.0, 1.0, 1.0, 0.05)]
    stim = trains(("biceps", 35.0, 2.0, 6.0, 20.0), ("biceps", 35.0, 9.2, 9.8, 20.0))
    x, truth = patient(stim, script, quit_after_s=1.0, relax_s=0.1).read_truth(int(11 * FS))
    t = np.arange(x.shape[0]) / FS
    d = truth.drive[:, 0]
    assert np.all(d[(t > 1.06) & (t < 3.0)] == 1.0)
    ramp = d[(t >= 3.0) & (t < 3.1)]
    assert ramp[0] == pytest.approx(1.0, abs=0.01) and np.all(np.diff(ramp) < 0)
    assert np.all(d[(t >= 3.1) & (t < 8.0)] == 0.0)  # also after the train ended at 6 s
    assert np.all(d[(t >= 8.1) & (t < 9.0)] == 0.0)  # no attempt
    late = d[(t > 9.06) & (t < 9.94)]  # the next attempt: trying again (quits at 10.2)
    assert np.all(late == 1.0)


@pytest.mark.parametrize("how", ["artifact", "nothing"])
def test_a_detached_electrode_gives_no_mwave(how):
    stim = trains(("biceps", 35.0, 1.0, 2.0, 30.0))
    kw = dict(mwave=MWaveModel(crosstalk=0.1), detached={"biceps": how})
    x, truth = patient(stim, **kw).read_truth(int(3 * FS))
    clean = patient(**kw).read(int(3 * FS))
    d = x - clean
    artifact = np.zeros(x.shape[0], dtype=bool)
    for p in truth.pulses:
        k = int(round(p.time * FS))
        artifact[[k, k + 1]] = True
    np.testing.assert_array_equal(d[~artifact], 0.0)
    if how == "nothing":
        np.testing.assert_array_equal(d, 0.0)
    else:
        assert np.all(np.abs(d[artifact, 0]) > 1e-3)
    assert len(truth.pulses) == 35 and all(p.mwave_pp == 0.0 for p in truth.pulses)


def test_detached_must_name_a_muscle_and_a_mode():
    with pytest.raises(ValueError, match="detached"):
        patient(detached={"biceps": "loose"})
    with pytest.raises(ValueError, match="detached"):
        patient(detached={"deltoid": "nothing"})


ALL_ON = dict(mwave=MWaveModel(crosstalk=0.15), fatigue=FatigueModel(fatigue_s=5.0),
              passive=True, quit_after_s=0.7)
SCRIPT = [Attempt("biceps", 0.3, 2.5, 0.9, 0.05), Attempt("triceps", 2.0, 1.5, 0.6, 0.05),
          Attempt("biceps", 4.0, 1.0, 1.0, 0.05)]
STIM = trains(("biceps", 35.0, 0.5, 1.3, 25.0), ("triceps", 30.0, 2.2, 3.0, 15.0),
              ("biceps", 50.0, 3.9, 4.6, 35.0))
N = int(5 * FS)


def _read_all(sizes: list[int]):
    p = patient(STIM, SCRIPT, **ALL_ON)
    xs, drives, pulses, onsets = [], [], [], []
    i, k = 0, 0
    while i < N:
        n = min(sizes[k % len(sizes)], N - i)
        x, tr = p.read_truth(n)
        assert tr.start == i
        xs.append(x)
        drives.append(tr.drive)
        pulses += tr.pulses
        onsets += tr.onsets
        i, k = i + n, k + 1
    return np.vstack(xs), np.vstack(drives), pulses, onsets


_WHOLE = None


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 2500), min_size=1, max_size=6))
def test_reads_of_any_size_give_the_same_samples_and_truth(sizes):
    global _WHOLE
    if _WHOLE is None:
        _WHOLE = _read_all([N])
    x, drive, pulses, onsets = _read_all(sizes)
    np.testing.assert_array_equal(x, _WHOLE[0])
    np.testing.assert_array_equal(drive, _WHOLE[1])
    assert pulses == _WHOLE[2] and onsets == _WHOLE[3]


def test_the_truth_holds_the_onsets_the_drive_and_every_pulse():
    x, drive, pulses, onsets = _read_all([N])
    assert onsets == [(600, "biceps"), (4000, "triceps"), (8000, "biceps")]
    assert drive.shape == x.shape and drive.max() <= 1.0 and drive.min() >= 0.0
    assert len(pulses) == len(STIM(0.0, N / FS))
    fit = [p.fitness for p in pulses if p.muscle == "biceps"]
    assert fit[0] == 1.0 and min(fit) < 0.9  # the fatigue model is on
    # the drive is the attempt, switched off by the passive patient while stimulated
    t = np.arange(N) / FS
    assert np.all(drive[(t > 0.36) & (t < 0.5), 0] == 0.9)
    assert np.all(drive[(t > 0.56) & (t < 1.3), 0] == 0.0)
    assert np.all(drive[(t > 1.5) & (t < 2.7), 0] == 0.0)  # quit 0.7 s after 0.5 s
