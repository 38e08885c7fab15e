import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.config.signal import Calibration, DetectorSettings
from closedloop.core.onset import OnsetDetector
from closedloop.core.pipeline import Pipeline
from closedloop.sim.patient import PatientSettings, SimulatedPatient, random_script

FS = 1000.0


def _calibrated(**kw):
    s = DetectorSettings(baseline="calibrated", k_on=2.0, off_fraction=0.5, **kw)
    # rest mean 1, sd 1 -> on = 3, off = 2
    return OnsetDetector(s, FS, ["m"], [Calibration(rest_mean=1.0, rest_sd=1.0)])


def _run(det, env):
    above, events = det.process(np.asarray(env, float)[None, :])
    return above[0], [(e.sample, e.kind) for e in events]


def test_min_on_time_rejects_short_excursions_and_decides_at_end_of_run():
    det = _calibrated(min_on_ms=5, min_off_ms=5, refractory_ms=0)
    env = [0] * 10 + [5] * 4 + [0] * 10 + [5] * 5 + [0] * 20
    _, ev = _run(det, env)
    assert ev[0] == (24 + 4, "onset")  # the 4-sample excursion never counted
    assert ev[1] == (29 + 4, "offset")


def test_hysteresis_keeps_channel_on_between_thresholds():
    det = _calibrated(min_on_ms=1, min_off_ms=3, refractory_ms=0)
    env = [0] * 5 + [4] * 3 + [2.5] * 50 + [1.5] * 3 + [0] * 5
    _, ev = _run(det, env)
    assert ev == [(5, "onset"), (58 + 2, "offset")]  # 2.5 is between off (2) and on (3)


def test_refractory_blocks_new_onsets():
    det = _calibrated(min_on_ms=1, min_off_ms=1, refractory_ms=10)
    env = [4] * 3 + [0] * 2 + [4] * 20
    _, ev = _run(det, env)
    # offset at 3; samples 4..13 cannot count; next onset at 14
    assert ev == [(0, "onset"), (3, "offset"), (14, "onset")]


def test_mvc_fraction_threshold():
    s = DetectorSettings(baseline="calibrated", mvc_fraction=0.1, off_fraction=0.5)
    on, off = Calibration(rest_mean=1.0, rest_sd=0.1, mvc=21.0).thresholds(s)
    assert on == pytest.approx(3.0) and off == pytest.approx(2.0)


def test_adaptive_floor_warms_up_then_detects_without_calibration():
    rng = np.random.default_rng(0)
    env = np.abs(rng.normal(1.0, 0.05, size=3000))
    env[2000:2300] += 3.0
    env[20:80] += 3.0  # activity during the warm-up (filter settling): must never trigger
    det = OnsetDetector(DetectorSettings(), FS, ["m"])
    above, events = det.process(env[None, :])
    onsets = [e.sample for e in events if e.kind == "onset"]
    assert len(onsets) == 1 and 2000 <= onsets[0] <= 2010
    assert not above[0, :300].any()  # nothing above before the floor is known
    assert np.isfinite(det.on_threshold[0])


def test_uncalibrated_channel_refused_in_calibrated_mode():
    with pytest.raises(ValueError, match="calibrate"):
        OnsetDetector(DetectorSettings(baseline="calibrated"), FS, ["m"], [None])


def test_suspended_channel_cannot_trigger_and_ends_activation():
    det = _calibrated(min_on_ms=1, min_off_ms=1, refractory_ms=0)
    _, ev = _run(det, [4] * 5)
    assert ev == [(0, "onset")]
    off = det.suspend(0, True, sample=5, time=0.005)
    assert [(e.sample, e.kind) for e in off] == [(5, "offset"), (5, "suspend")]
    _, ev = _run(det, [4] * 50)
    assert ev == []


# -- chunk invariance: property-based ---------------------------------------------------
_SIM = PatientSettings(fs=1000.0, muscles=("biceps", "triceps"), snr_db=6.0)
_SCRIPT = random_script(_SIM.muscles, 20.0, np.random.default_rng(5), gap_s=(1.0, 2.0),
                        attempt_s=(0.3, 1.0))
_X = SimulatedPatient(_SIM, _SCRIPT, seed=9).read(20000)


def _events(chunks):
    pipe = Pipeline(1000.0, _SIM.muscles)
    out, i = [], 0
    for n in chunks:
        b = pipe.process(_X[i : i + n])
        out.extend(b.events)
        i += n
    b = pipe.process(_X[i:])
    out.extend(b.events)
    return out


_REFERENCE = _events([20000])


def test_reference_has_events():
    assert sum(e.kind == "onset" for e in _REFERENCE) >= 8


@pytest.mark.parametrize("size", [1, 7, 10000])
def test_fixed_chunk_sizes_give_identical_events(size):
    assert _events([size] * (20000 // size)) == _REFERENCE


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2500), min_size=1, max_size=60))
def test_random_chunkings_give_identical_events(sizes):
    assert _events(sizes) == _REFERENCE


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=5, max_size=40))
def test_random_chunkings_identical_envelope_and_above(sizes):
    whole = Pipeline(1000.0, _SIM.muscles).process(_X[:8000])
    pipe = Pipeline(1000.0, _SIM.muscles)
    env, above, i = [], [], 0
    while i < 8000:
        for n in sizes:
            b = pipe.process(_X[i : min(8000, i + n)])
            env.append(b.envelope)
            above.append(b.above)
            i += b.n
            if i >= 8000:
                break
    assert np.array_equal(np.vstack(env), whole.envelope)
    assert np.array_equal(np.vstack(above), whole.above)
