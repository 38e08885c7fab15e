"""The evoked response per pulse train: the averaged M-wave's amplitude, area, latency and
end against the simulated patient's; fatigue followed within 10 % over 10 minutes; a
detached electrode (or a current below the motor threshold) reads as no response within
2 s; chunking changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.config.signal import ArtifactSettings
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.evoked import EvokedResponse, EvokedSettings
from closedloop.sim.patient import Attempt, FatigueModel, MWaveModel, random_script
from tests.core.stimulated import FS, MUSCLES, Command, stimulate, train

MWAVE = MWaveModel(crosstalk=0.1)


def crossings(model: MWaveModel, onset: float, end: float) -> tuple[float, float]:
    """Where the model's wave first reaches ``onset`` x its largest deviation, and last
    ``end`` x it, seconds after the pulse."""
    t = np.linspace(0, model.end_s + 0.001, 200001)
    w = np.abs(model.shape(t))
    return float(t[np.argmax(w >= onset * w.max())]), float(t[w >= end * w.max()][-1])


def truth_of(record, pulses):
    """The true M-wave amplitudes of the pulses a record averaged."""
    mine = [p.mwave_pp for p in pulses if p.muscle == record.muscle
            and record.first_sample <= np.floor(p.time * FS + 1e-6) <= record.last_sample]
    assert len(mine) == record.n_pulses
    return np.array(mine)


@pytest.mark.parametrize("frequency", [25.0, 35.0, 50.0])
def test_records_measure_the_mwave(frequency):
    s = stimulate(train("biceps", 2.0, 6.0, 30.0, frequency), 7.0, evoked=EvokedSettings(),
                  script=[Attempt("biceps", 1.0, 4.0, 0.8, 0.05)], mwave=MWAVE)
    on, end = crossings(MWAVE, 0.1, 0.05)
    window = np.linspace(0, 1, 100001)
    area = np.trapezoid(np.abs(MWAVE.shape(MWAVE.latency_ms / 1000 + window * 0.011)),
                        window * 0.011)
    assert len(s.records) == 8  # every 0.5 s of the sample clock
    for r in s.records:
        pp = truth_of(r, s.pulses)
        assert (r.muscle, r.channel, r.current_ma, r.pulse_width_us) == ("biceps", 1, 30.0, 250.0)
        assert r.present and r.peak_to_peak / r.noise > 100
        assert r.peak_to_peak == pytest.approx(pp.mean(), rel=0.04)
        assert r.latency_s == pytest.approx(on, abs=0.0003)
        assert r.end_s == pytest.approx(end, abs=0.0005)
        assert r.area == pytest.approx(area * pp.mean(), rel=0.05)
        assert r.time == r.sample / FS
    first = s.records[0]
    assert first.first_sample == 4000 and (first.sample - 4000) / FS < 0.6
    gaps = np.diff([r.sample for r in s.records]) / FS
    assert np.all(gaps <= 0.5 + 1e-9)  # at least once per second of stimulation


def test_fatigue_is_followed_within_10_percent_over_10_minutes():
    minutes = 10.0
    schedule = []
    for k in range(int(minutes * 6)):  # 5 s on, 5 s off
        schedule += train("biceps", 10.0 * k + 1.0, 10.0 * k + 6.0, 30.0)
    script = random_script(("biceps",), minutes * 60, np.random.default_rng(2),
                           first_s=1.5, gap_s=(6.0, 9.0), attempt_s=(1.0, 3.0))
    s = stimulate(schedule, minutes * 60, script=script, chunks=(500,), seed=8,
                  evoked=EvokedSettings(), mwave=MWAVE, fatigue=FatigueModel())
    got = np.array([r.peak_to_peak for r in s.records])
    want = np.array([truth_of(r, s.pulses).mean() for r in s.records])
    err = got / want - 1
    print(f"{len(got)} records over {minutes:g} min: amplitude {1e3 * want.max():.2f} -> "
          f"{1e3 * want.min():.2f} mV, error {100 * err.min():+.2f} .. {100 * err.max():+.2f} %")
    assert len(got) >= minutes * 60 / 2  # >= one per second of stimulation
    assert want.min() < 0.75 * want.max()  # the muscle did fatigue
    assert np.all(np.abs(err) <= 0.10)
    assert all(r.present for r in s.records)


@pytest.mark.parametrize("frequency", [25.0, 35.0, 50.0])
@pytest.mark.parametrize("how", ["artifact", "nothing"])
@pytest.mark.parametrize("trying", [True, False])
def test_a_detached_electrode_reads_as_no_response_within_2_s(how, frequency, trying):
    """Also at rest, where the noise of the average is smallest and the mains hum (locked
    to the pulses at 25 and 50 Hz) would read as a response if it were not taken out."""
    script = [Attempt("biceps", 1.0, 5.0, 1.0, 0.05)] if trying else []
    s = stimulate(train("biceps", 2.0, 6.0, 30.0, frequency), 6.5, evoked=EvokedSettings(),
                  script=script, mwave=MWAVE, detached={"biceps": how})
    assert s.records and all(p.mwave_pp == 0.0 for p in s.pulses)
    assert (s.records[0].sample - 4000) / FS <= 2.0
    assert not any(r.present for r in s.records)
    assert all(np.isnan(r.latency_s) for r in s.records)


def test_below_the_motor_threshold_there_is_no_response():
    """Far below the threshold the sigmoid leaves a few uV, lost in the patient's EMG."""
    got = {}
    for current in (2.0, 14.0):
        s = stimulate(train("biceps", 1.0, 3.0, current), 3.5, evoked=EvokedSettings(),
                      script=[Attempt("biceps", 0.5, 3.0, 1.0, 0.05)], mwave=MWAVE)
        assert s.pulses[0].mwave_pp < 20e-6 if current == 2.0 else s.pulses[0].mwave_pp > 0.3e-3
        got[current] = [r.present for r in s.records]
    assert not any(got[2.0]) and all(got[14.0])


def test_each_level_has_its_own_records_on_the_recruitment_curve():
    steps = [Command(int((1 + 0.5 * k) * FS), "biceps", 8.0 + 3.0 * k) for k in range(8)]
    s = stimulate([*steps, Command(int(5 * FS), "biceps", 0.0)], 5.5, evoked=EvokedSettings(),
                  mwave=MWAVE)
    assert [r.current_ma for r in s.records] == [8.0 + 3.0 * k for k in range(8)]
    pp = np.array([r.peak_to_peak for r in s.records])
    want = np.array([MWAVE.max_pp * MWAVE.recruitment(r.current_ma, 250.0) for r in s.records])
    big = want > 0.2e-3
    np.testing.assert_allclose(pp[big], want[big], rtol=0.05)
    assert np.all(np.diff(pp) > 0)


@pytest.mark.parametrize("chunks", [(1,), (7,), (20,), (10000,)])
def test_a_pulse_on_the_sample_of_a_change_carries_the_new_level(chunks):
    """At 35 Hz from sample 4020 the 15th pulse lands on sample 4820, where the current
    changes to 20 mA: its computed time (2.01 + 14 / 35 = 2.4099999999999997 s) rounds a
    hair before the change (2.41 s). The simulated stimulator gives it at 20 mA and the
    M-wave reader averages it at 20 mA: every record averages only pulses given at its
    level, whichever way the clocks round, in any chunking."""
    commands = [Command(4020, "biceps", 30.0), Command(4820, "biceps", 20.0),
                Command(5130, "biceps", 25.0), Command(6020, "biceps", 0.0)]
    s = stimulate(commands, 3.5, chunks=chunks, evoked=EvokedSettings(), mwave=MWAVE)
    given = {int(np.floor(p.time * FS + 1e-6)): p.current_ma
             for p in s.pulses if p.muscle == "biceps"}
    assert given[4020] == 30.0 and given[4820] == 20.0  # the stimulator's side
    assert len(given) == 35
    averaged = 0
    for r in s.records:
        mine = {k: c for k, c in given.items() if r.first_sample <= k <= r.last_sample}
        assert set(mine.values()) == {r.current_ma} and len(mine) == r.n_pulses
        averaged += r.n_pulses
    assert averaged == len(given)  # every pulse in one record
    assert [r.first_sample for r in s.records if r.current_ma == 20.0][0] == 4820


def test_the_wave_end_tells_whether_the_blanking_covers_it():
    blank = ArtifactSettings().blank_ms / 1000
    short = stimulate(train("biceps", 1.0, 3.0, 30.0), 3.5, evoked=EvokedSettings(),
                      mwave=MWAVE)
    model = MWaveModel(latency_ms=5.0, duration_ms=15.0)
    long = stimulate(train("biceps", 1.0, 3.0, 30.0), 3.5, evoked=EvokedSettings(),
                     mwave=model)
    assert all(r.end_s < blank for r in short.records)
    end = crossings(model, 0.1, 0.05)[1]
    assert end > blank + 0.003
    assert all(r.end_s == pytest.approx(end, abs=0.0005) for r in long.records)


SCHEDULE = [Command(1000, "biceps", 20.0, 35.0), Command(1500, "biceps", 26.0, 35.0),
            Command(2111, "biceps", 26.0, 40.0), Command(3001, "biceps", 0.0, 40.0),
            Command(3400, "triceps", 15.0, 50.0), Command(5000, "triceps", 0.0, 50.0)]


def _records(chunks):
    s = stimulate(SCHEDULE, 3.0, script=[Attempt("biceps", 0.4, 1.5, 0.7, 0.05)],
                  chunks=chunks, evoked=EvokedSettings(every_s=0.2), mwave=MWAVE,
                  detached={"triceps": "artifact"})
    return s.records


_WHOLE: list = []


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=5))
def test_chunking_changes_nothing(chunks):
    if not _WHOLE:
        _WHOLE.extend(_records([6000]))
        assert {r.muscle for r in _WHOLE} == {"biceps", "triceps"}
    got = _records(chunks)
    assert got == _WHOLE  # every field but the waveform
    for a, b in zip(got, _WHOLE, strict=True):
        np.testing.assert_array_equal(a.waveform, b.waveform)


def test_chunks_must_follow_each_other_and_settings_are_checked():
    remover = ArtifactRemover(ArtifactSettings(), FS, MUSCLES, 50.0)
    ev = EvokedResponse(EvokedSettings(), FS, MUSCLES, remover, 50.0)
    ev.process(np.zeros((2, 20)), 0)
    with pytest.raises(ValueError, match="expected 20"):
        ev.process(np.zeros((2, 20)), 40)
    for bad in (dict(skip_ms=30.0), dict(every_s=0.0), dict(end_fraction=1.0)):
        with pytest.raises(ValueError, match="EvokedSettings"):
            EvokedSettings(**bad)



def _dehummed(raw: np.ndarray, fs: float, chunk: int) -> tuple[np.ndarray, int]:
    names = [f"m{k}" for k in range(raw.shape[0])]
    ev = EvokedResponse(EvokedSettings(), fs, names,
                        ArtifactRemover(ArtifactSettings(), fs, names, 50.0), mains_hz=50.0)
    n = raw.shape[1]
    parts = [ev._dehum(raw[:, i : i + chunk], i) for i in range(0, n, chunk)]
    return np.concatenate(parts, axis=1), ev.mains_period


@pytest.mark.parametrize("chunk", [7, 10000])
def test_the_hum_template_is_the_documented_recurrence_to_the_bit(chunk):
    """Without pulses every sample teaches its phase ``(1 - w) * hum + w * t``, ``t`` the
    sample minus the mean of the last mains period; the output is the sample minus the
    template before it learnt. Whole periods at once (large chunks, along the periods)
    give the same bits as one sample at a time."""
    from closedloop.core.evoked import _HUM_WEIGHT
    w = _HUM_WEIGHT

    fs, n = 2000.0, 12345
    rng = np.random.default_rng(3)
    t = np.arange(n) / fs
    raw = (rng.standard_normal((2, n)) * 1e-5 + 3e-5 * np.sin(2 * np.pi * 50 * t)
           + np.array([[1e-3], [-2e-4]]))
    one, p = _dehummed(raw, fs, 1)
    got, _ = _dehummed(raw, fs, chunk)
    np.testing.assert_array_equal(got, one)
    hum, want = np.zeros((2, p)), np.empty_like(raw)
    window = np.repeat(raw[:, :1], p, axis=1)  # the last period (the first sample before)
    for i in range(n):
        window = np.concatenate((window[:, 1:], raw[:, i : i + 1]), axis=1)
        ph = i % p
        want[:, i] = raw[:, i] - hum[:, ph]
        hum[:, ph] = (1.0 - w) * hum[:, ph] + w * (raw[:, i] - window.sum(axis=1) / p)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert np.std(got[:, -4000:], axis=1).max() < 1.2e-5  # the hum is gone, noise and DC stay


@pytest.mark.parametrize("restart", [True, False])
def test_a_restart_forgets_an_impulse_the_hum_template_learnt(restart):
    """A knock of 1 V on one channel (the input gate holds the detector and restarts the
    channel after it): with the restart the hum-free signal there is back to the
    noise's size at once; without it, the template gives the knock's echo every mains
    period for tens of seconds, which an M-wave window would read as a response."""
    fs, n = 2000.0, 20000
    rng = np.random.default_rng(5)
    t = np.arange(n) / fs
    raw = rng.standard_normal((2, n)) * 1e-5 + 3e-5 * np.sin(2 * np.pi * 50 * t)
    raw[0, 4000:4010] = 1.0  # the knock, 5 ms
    names = ["m0", "m1"]
    ev = EvokedResponse(EvokedSettings(), fs, names,
                        ArtifactRemover(ArtifactSettings(), fs, names, 50.0), mains_hz=50.0)
    before = ev._dehum(raw[:, :4200], 0)
    assert np.abs(before[0, 4000:4010]).min() > 0.5  # the knock went through
    if restart:  # the chain restarts the channel once the gate let it go
        ev.restart_channel(0, float(raw[0, 4200]))
    after = ev._dehum(raw[:, 4200:], 4200)
    late = np.abs(after[0, 2000:])  # from 1 s after the knock on
    if restart:
        assert late.max() < 2e-4  # noise and the hum being learnt again, nothing more
        np.testing.assert_array_equal(after[1], _dehummed(raw[1:], fs, n)[0][0, 4200:])
    else:
        assert late.max() > 1e-3  # the echo, 100 x the noise (what the restart is for)
