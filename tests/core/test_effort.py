"""Voluntary effort between the pulses: it follows the patient's drive during stimulation,
and stimulation of a passive patient reads as no effort (the M-wave and the artifact do
not come back as "voluntary"), on the stimulated muscle and its antagonist; the one-pass
reference without pulses; chunking changes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from closedloop.config.signal import ArtifactSettings
from closedloop.core.effort import EffortEstimator, EffortSettings, percent_mvc
from closedloop.sim.patient import Attempt, MWaveModel
from tests.core.stimulated import FS, Command, stimulate, train

TAU = EffortSettings().tau_s
MWAVE = MWaveModel(crosstalk=0.1)  # ends 14.5 ms after the pulse: inside the 15 ms blanking


def smoothed_drive(drive: np.ndarray) -> np.ndarray:
    """The drive as the estimator would see it: RMS through the same smoother."""
    lam = math.exp(-1.0 / (TAU * FS))
    return np.sqrt(signal.lfilter([1 - lam], [1, -lam], drive**2, axis=0))


def attempts(seconds: float, seed: int = 5) -> list[Attempt]:
    """Both muscles, overlapping attempts at random levels every 2.3 s."""
    rng = np.random.default_rng(seed)
    out, t = [], 1.0
    while t < seconds - 2:
        out.append(Attempt("biceps", t, 1.6, float(rng.uniform(0.2, 1.0)), 0.3))
        out.append(Attempt("triceps", t + 0.4, 1.0, float(rng.uniform(0.2, 1.0)), 0.3))
        t += 2.3
    return out


def test_without_pulses_it_is_the_exponential_rms():
    y = np.random.default_rng(1).normal(0, 1e-5, size=(3, 5000))
    got = EffortEstimator(EffortSettings(tau_s=0.05), FS, 3).process_inplace(y, 0)
    lam = math.exp(-1.0 / (0.05 * FS))
    want = np.sqrt(signal.lfilter([1 - lam], [1, -lam], y**2, axis=1))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


SECONDS = 20.0
STIM = slice(int(3 * FS), int(19 * FS))  # from 1 s after the train starts to its end


@pytest.fixture(scope="module")
def unstimulated():
    """Effort of the same patient without stimulation (the reference) and at rest."""
    active = stimulate([], SECONDS, script=attempts(SECONDS), effort=EffortSettings(),
                       mwave=MWAVE)
    rest = stimulate([], SECONDS, effort=EffortSettings(), mwave=MWAVE)
    return active.effort, rest.effort


@pytest.mark.parametrize("frequency", [25.0, 35.0, 50.0])
@pytest.mark.parametrize("current", [15.0, 40.0])
def test_effort_tracks_the_voluntary_drive_during_stimulation(unstimulated, frequency, current):
    reference, _ = unstimulated
    s = stimulate(train("biceps", 2.0, 19.0, current, frequency), SECONDS,
                  script=attempts(SECONDS), effort=EffortSettings(), mwave=MWAVE)
    truth = smoothed_drive(s.drive)
    for c, muscle in enumerate(("biceps", "triceps")):
        e = s.effort[STIM, c]
        r = np.corrcoef(e, truth[STIM, c])[0, 1]
        bias = e.mean() / reference[STIM, c].mean() - 1
        print(f"{frequency:g} Hz {current:g} mA {muscle}: r = {r:.3f}, bias {100 * bias:+.1f} %")
        assert r >= 0.9
        assert abs(bias) <= 0.2


@pytest.mark.parametrize("frequency", [25.0, 35.0, 50.0])
def test_stimulating_a_passive_patient_reads_as_no_effort(unstimulated, frequency):
    """The patient attempts with the biceps (onsets), then goes passive while it is
    stimulated: whatever the current, once the patient's own effort has died away the
    effort stays at rest level on the biceps and on its antagonist (at rest); and the
    first pulses of a train (before the comb has learned them) do not read as effort."""
    reference, rest = unstimulated
    biceps = [a for a in attempts(SECONDS) if a.muscle == "biceps"]
    floor, top = rest[STIM].mean(axis=0), np.percentile(rest[STIM], 99, axis=0)
    mvc = reference[STIM].max(axis=0)
    steady = slice(int(2.5 * FS), int(19 * FS))  # the drive is 0 from 2.05 s: 4 tau later
    seen = []
    for current in (10.0, 20.0, 30.0, 45.0):
        s = stimulate(train("biceps", 2.0, 19.0, current, frequency), SECONDS,
                      script=biceps, effort=EffortSettings(), mwave=MWAVE, passive=True)
        assert np.all(s.drive[int(2.05 * FS) : int(19 * FS), 0] == 0.0)
        e = s.effort[steady]
        pct = percent_mvc(np.percentile(e, 99, axis=0), floor, mvc)
        seen.append(e.mean(axis=0))
        print(f"{frequency:g} Hz {current:g} mA passive: mean {1e6 * e.mean(axis=0)} uV, "
              f"p99 {pct} % MVC (rest {1e6 * floor} uV)")
        assert np.all(e.mean(axis=0) <= 1.1 * floor)
        assert np.all(np.percentile(e, 99, axis=0) <= 1.25 * top)
    seen = np.array(seen)
    assert np.all(seen.max(axis=0) - seen.min(axis=0) <= 0.05 * floor)  # not with current
    alone = stimulate(train("biceps", 2.0, 4.0, 45.0, frequency), 4.0,
                      effort=EffortSettings(), mwave=MWAVE)
    assert np.all(alone.effort[int(2 * FS) : int(2.5 * FS)].max(axis=0) <= 1.25 * top)


def test_an_mwave_that_outlasts_the_blanking_reads_as_effort_that_grows_with_current():
    """Why ``blank_ms`` must cover the M-wave: a tail the blanking leaves is spread over
    the whole interval by the band-pass and, with pulses falling between samples, the
    comb cannot cancel it; the evoked response measures the wave's end to check it."""
    long = MWaveModel(latency_ms=5.0, duration_ms=15.0)  # over 20 ms after the pulse
    rest = stimulate([], 6.0, effort=EffortSettings(), mwave=long).effort[4000:].mean(axis=0)

    def passive(current, blank_ms):
        s = stimulate(train("biceps", 2.0, 6.0, current), 6.0, effort=EffortSettings(),
                      artifacts=ArtifactSettings(blank_ms=blank_ms), mwave=long, passive=True)
        return s.effort[int(3 * FS) :, 0].mean()

    low, high = passive(15.0, 15.0), passive(40.0, 15.0)
    assert high > 5 * rest[0] and high > 1.5 * low
    assert passive(40.0, 21.0) <= 1.1 * rest[0]


def test_the_antagonist_needs_the_comb_on_every_channel():
    """At a pulse rate locked to the mains the blanking leaves a residue on channels the
    comb does not treat: on the antagonist it reads as effort unless every channel is
    combed."""
    rest = stimulate([], 6.0, effort=EffortSettings(), mwave=MWAVE).effort[4000:].mean(axis=0)
    got = {}
    for comb_all in (False, True):
        s = stimulate(train("biceps", 2.0, 6.0, 30.0, 50.0), 6.0, effort=EffortSettings(),
                      mwave=MWAVE, passive=True, comb_all=comb_all)
        got[comb_all] = s.effort[int(3 * FS) :, 1].mean()
    assert got[False] > 1.5 * rest[1]
    assert got[True] <= 1.1 * rest[1]


def test_effort_is_unknown_where_the_blanking_leaves_nothing():
    s = stimulate(train("biceps", 1.0, 3.0, 30.0, 50.0), 4.0, effort=EffortSettings(),
                  artifacts=ArtifactSettings(blank_ms=21.0), mwave=MWAVE)
    assert np.all(np.isfinite(s.effort[: int(1 * FS)]))
    # what counted before fades with tau: below 10 % after tau ln 10 = 0.23 s
    assert np.all(np.isnan(s.effort[int(1.25 * FS) : int(3 * FS)]))
    assert np.all(np.isfinite(s.effort[int(3.2 * FS) :]))


SCHEDULE = [Command(1000, "biceps", 20.0, 35.0), Command(1700, "biceps", 26.0, 35.0),
            Command(2111, "biceps", 26.0, 40.0), Command(3000, "biceps", 0.0, 40.0),
            Command(3400, "triceps", 15.0, 25.0), Command(5000, "triceps", 0.0, 25.0)]


def _effort(chunks, comb_all):
    return stimulate(SCHEDULE, 3.0, script=[Attempt("biceps", 0.4, 1.5, 0.7, 0.05)],
                     chunks=chunks, effort=EffortSettings(), mwave=MWAVE,
                     comb_all=comb_all).effort


_WHOLE: dict[bool, np.ndarray] = {}


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=5), st.booleans())
def test_chunking_changes_nothing(chunks, comb_all):
    if comb_all not in _WHOLE:
        _WHOLE[comb_all] = _effort([6000], comb_all)
    np.testing.assert_array_equal(_effort(chunks, comb_all), _WHOLE[comb_all])


def test_percent_mvc_and_the_settings_are_checked():
    np.testing.assert_allclose(percent_mvc(np.array([1.0, 3.0, 6.0]), 2.0, 6.0), [0, 25, 100])
    with pytest.raises(ValueError, match="mvc"):
        percent_mvc(1.0, 2.0, 2.0)
    for bad in (dict(tau_s=0.0), dict(guard_ms=-1.0), dict(min_fraction=1.0)):
        with pytest.raises(ValueError, match="EffortSettings"):
            EffortSettings(**bad)
