import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.config.signal import Calibration, DetectorSettings
from closedloop.core.detectors.threshold import OnsetDetector
from closedloop.core.pipeline import Pipeline
from closedloop.sim.patient import PatientSettings, SimulatedPatient, random_script


def threshold_config(muscles):
    """The default config with the threshold detector (the built-in default is cusum)."""
    from dataclasses import replace

    from closedloop.config import default_config

    return replace(default_config(tuple(muscles)), detector=DetectorSettings(),
                   detector_kind="threshold")

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
    assert np.array_equal(np.vstack(env), whole.envelope, equal_nan=True)  # NaN: not ready
    assert np.array_equal(np.vstack(above), whole.above)


# -- rest must be quiet (issue 12, item 7e) ---------------------------------------------------
def _rest_env(levels, seconds_each, seed=0):
    """An envelope that sits at each level in turn (10 % noise), 1 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds_each * FS)
    return np.concatenate([np.abs(rng.normal(v, 0.1 * v, n)) for v in levels])


def _feed(det, env, sizes=(20,)):
    events, notes, a, k = [], [], 0, 0
    while a < env.shape[0]:
        b = min(env.shape[0], a + sizes[k % len(sizes)])
        events += det.process(env[None, a:b])[1]
        notes += det.pop_notes()
        a, k = b, k + 1
    return events, notes


def test_a_clean_rest_is_learnt_from_the_first_two_idle_blocks_as_before():
    """Golden: the floor is the pooled statistics of blocks 1 and 2 (block 0 is the
    warm-up), computed here independently."""
    env = _rest_env([1.0], 1.0)
    det = OnsetDetector(DetectorSettings(), FS, ["m"])
    _, notes = _feed(det, env)
    assert notes == []
    b1, b2 = env[100:200], env[200:300]
    m = np.array([b1.mean(), b2.mean()])
    v = np.array([b1.var(), b2.var()])
    mean, var = m.mean(), v.mean() + m.var()
    # then tracked over 7 more idle blocks: the seed itself is what was learnt at 0.3 s
    det2 = OnsetDetector(DetectorSettings(), FS, ["m"])
    det2.process(env[None, :300])
    assert det2.on_threshold[0] == pytest.approx(mean + 6.0 * np.sqrt(var), rel=1e-12)


def test_rest_is_not_learnt_while_the_level_rises_and_the_wait_is_said():
    """A contraction building up from the start (the level growing 2.5x per 0.1 s
    block): no two blocks agree within 2x, so nothing is learnt as rest; after 2 s the
    detector says it is waiting; once the level is steady it learns it and says so."""
    rise = 2.5 ** (np.arange(2500) / 100.0)
    env = np.concatenate([rise * _rest_env([1.0], 2.5), np.full(2000, rise[-1])
                          * _rest_env([1.0], 2.0, seed=1)])
    det = OnsetDetector(DetectorSettings(), FS, ["m"])
    _, notes = _feed(det, env)
    assert [(n.what, n.sample) for n in notes] == [("waiting", 1999), ("learnt", 2599)]
    assert notes[0].since == 0 and notes[0].ratio == pytest.approx(2.5, rel=0.1)
    assert np.isfinite(det.on_threshold[0])


def test_a_level_well_below_what_was_learnt_means_it_was_not_rest():
    """Learnt at 4 (the patient contracting), then the envelope drops to 1: the first
    block at 1 says the learnt rest was not quiet, the thresholds are forgotten (no
    trigger from a wrong floor) and learnt again from the quiet blocks."""
    env = _rest_env([4.0, 1.0, 1.0], 1.0)
    det = OnsetDetector(DetectorSettings(), FS, ["m"])
    events, notes = _feed(det, env[:1000])
    assert det.on_threshold[0] > 4.0 and notes == []
    events, notes = _feed(det, env[1000:1100])  # one block at the quiet level
    assert [(n.what, n.sample, n.since) for n in notes] == [("not_quiet", 1099, 299)]
    assert notes[0].ratio == pytest.approx(0.25, rel=0.05)
    assert not det.ready[0]
    events, notes = _feed(det, env[1100:])
    assert [(n.what, n.sample) for n in notes] == [("learnt", 1199)]
    assert det.on_threshold[0] == pytest.approx(1.0 + 6 * 0.1, rel=0.1)
    # a real attempt now triggers at the usual threshold
    events, _ = _feed(det, np.full(200, 3.0))
    assert [e.kind for e in events] == ["onset"]


def test_a_small_drop_and_a_drop_long_after_learning_are_just_tracked():
    """Rest that falls to 60 % (the electrode settling) is tracked, not doubted; and
    after ``history_s`` the rest learnt is no longer doubted at all."""
    det = OnsetDetector(DetectorSettings(), FS, ["m"])
    assert _feed(det, _rest_env([1.0, 0.6], 1.0))[1] == []
    det = OnsetDetector(DetectorSettings(history_s=2.0), FS, ["m"])
    assert _feed(det, _rest_env([4.0, 4.0, 4.0, 1.0], 1.0))[1] == []


REST_CASE = np.concatenate([2.5 ** (np.arange(2500) / 100.0) * _rest_env([1.0], 2.5),
                            _rest_env([1e9, 1e8], 1.0, seed=3)])
REST_REF = _feed(OnsetDetector(DetectorSettings(), FS, ["m"]), REST_CASE, (REST_CASE.size,))


def test_the_rest_case_has_every_note():
    assert [n.what for n in REST_REF[1]] == ["waiting", "learnt", "not_quiet", "learnt"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=8))
def test_rest_notes_and_events_are_chunk_invariant(sizes):
    events, notes = _feed(OnsetDetector(DetectorSettings(), FS, ["m"]), REST_CASE, sizes)
    assert events == REST_REF[0] and notes == REST_REF[1]


@pytest.mark.parametrize("sizes", [(1,), (7,), (199, 3), (4096,)])
def test_quiet_blocks_of_a_large_chunk_track_the_floor_to_the_bit(sizes):
    """A large chunk takes the statistics of its quiet whole blocks at once: the
    noise floor, the thresholds it sets and every event and note after it are those of
    small chunks (block by block), to the bit, on eight channels of varied levels."""
    ps = PatientSettings(fs=1000.0, muscles=tuple(f"m{k}" for k in range(8)), snr_db=6.0)
    script = random_script(ps.muscles, 40.0, np.random.default_rng(2), gap_s=(3.0, 6.0),
                           attempt_s=(0.3, 1.0))
    x = SimulatedPatient(ps, script, seed=4).read(40000) * np.geomspace(0.1, 50.0, 8)

    def run(chunks):
        pipe = Pipeline(1000.0, ps.muscles, threshold_config(ps.muscles))
        events, notes, i, k = [], [], 0, 0
        while i < x.shape[0]:
            b = pipe.process(x[i : i + chunks[k % len(chunks)]])
            events += b.events
            notes += pipe.detector.pop_notes()
            i, k = i + b.n, k + 1
        rules = pipe.detector.rules
        return events, notes, rules.on_threshold.copy(), rules._floor_var.copy()

    ref, got = run([x.shape[0]]), run(list(sizes))
    assert sum(e.kind == "onset" for e in ref[0]) >= 5
    assert got[0] == ref[0] and got[1] == ref[1]
    np.testing.assert_array_equal(got[2], ref[2])
    np.testing.assert_array_equal(got[3], ref[3])
