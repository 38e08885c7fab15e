"""The detector interface: quality on the simulated patient, causality, chunk invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from closedloop.analysis.scoring import score_onsets
from closedloop.core.detectors import Detector
from closedloop.core.detectors.bonato import DoubleThresholdDetector, bonato_p_zeta
from closedloop.core.detectors.cusum import CusumDetector
from closedloop.core.detectors.threshold import ThresholdDetector, TkeoDetector
from closedloop.core.events import OFFSET, ONSET
from closedloop.core.pipeline import OfflineDetector, Pipeline, make_detector
from closedloop.errors import ConfigError
from closedloop.registry import DETECTORS
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient, random_script

FS = 2000.0
MUSCLES = ("biceps", "triceps")
DETECTOR_KINDS = tuple(DETECTORS.builtins)


def _run(det: OfflineDetector, x: np.ndarray, chunk: int) -> list:
    events = []
    for i in range(0, x.shape[0], chunk):
        events.extend(det.process(x[i : i + chunk]))
    return events


@pytest.fixture(scope="module")
def patient_10db():
    ps = PatientSettings(fs=FS, muscles=MUSCLES, snr_db=10.0)
    dur = 5 * 60.0
    script = random_script(ps.muscles, dur, np.random.default_rng(5))
    pat = SimulatedPatient(ps, script, seed=6)
    return pat, pat.read(int(dur * FS)), dur


@pytest.mark.parametrize("name", DETECTOR_KINDS)
def test_each_detector_finds_the_attempts_at_10db(patient_10db, name):
    pat, x, dur = patient_10db
    events = _run(make_detector(name, FS, MUSCLES), x, 200)
    s = score_onsets(pat.true_onsets(), events, FS, dur)
    print(f"{name}: sensitivity {s.sensitivity:.3f}, false {s.false_detections}, "
          f"median latency {s.median_latency_s * 1000:.1f} ms")
    assert s.n_reference >= 30
    assert s.sensitivity >= 0.9
    assert s.false_detections <= 2
    # decisions come after the true onset (causal), within the matching window
    assert 0.0 < s.median_latency_s < 0.2


@pytest.mark.parametrize("name", DETECTOR_KINDS)
def test_rest_only_gives_at_most_one_false_detection(name):
    ps = PatientSettings(fs=FS, muscles=MUSCLES, snr_db=10.0)
    x = SimulatedPatient(ps, [], seed=9).read(int(120 * FS))
    events = _run(make_detector(name, FS, MUSCLES), x, 4000)
    assert sum(e.kind == ONSET for e in events) <= 1


# -- chunk invariance and causality -----------------------------------------------------------
_SHORT_FS = 1000.0
_N = 12000


def _short_signal() -> np.ndarray:
    ps = PatientSettings(fs=_SHORT_FS, muscles=MUSCLES, snr_db=6.0)
    script = [Attempt("biceps", 1.5, 1.0, ramp_s=0.03), Attempt("triceps", 3.0, 0.6),
              Attempt("biceps", 4.2, 2.0, level=0.5), Attempt("triceps", 7.0, 0.3),
              Attempt("biceps", 7.5, 1.0), Attempt("triceps", 9.5, 1.5)]
    return SimulatedPatient(ps, script, seed=2).read(_N)


_X = _short_signal()
#: Each detector with its defaults, and "hair-trigger" settings under which every single
#: sample can change a decision, so that any state lost between chunks shows.
_HAIR = {"min_on_ms": 0.0, "min_off_ms": 1.0, "refractory_ms": 0.0}
_CONFIGS = {
    **{name: (name, {}) for name in DETECTOR_KINDS},
    "threshold_hair": ("threshold", {**_HAIR, "k_on": 3.0}),
    "tkeo_hair": ("tkeo", {**_HAIR, "k_on": 3.0}),
    "double_threshold_hair": ("double_threshold", {**_HAIR, "p_fa": 0.3}),
    "cusum_hair": ("cusum", {"h_nats": 3.0, "off_nats": 1.0, "refractory_ms": 0.0}),
}


def _make(config: str) -> OfflineDetector:
    name, params = _CONFIGS[config]
    return make_detector(name, _SHORT_FS, MUSCLES, **params)


_WHOLE = {config: _make(config).process(_X) for config in _CONFIGS}


def test_the_short_signal_has_events_for_every_detector():
    for config, events in _WHOLE.items():
        assert sum(e.kind == ONSET for e in events) >= 4, config
        assert any(e.kind == OFFSET for e in events), config
        if config.endswith("_hair"):  # many decisions: sensitive to every sample
            assert len(events) > 100, config


_cuts = st.one_of(
    st.lists(st.integers(min_value=1, max_value=_N - 1), max_size=400, unique=True),
    st.integers(min_value=1, max_value=64).map(lambda k: list(range(k, _N, k))),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.sampled_from(sorted(_CONFIGS)), cuts=_cuts)
def test_chunking_changes_nothing(config, cuts):
    det = _make(config)
    bounds = [0, *sorted(cuts), _N]
    events = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        got = det.process(_X[a:b])
        # every decision is reported in the chunk that holds its deciding sample
        assert all(a <= e.sample < b for e in got)
        events.extend(got)
    assert events == _WHOLE[config]
    assert det.position == _N


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.sampled_from(sorted(_CONFIGS)), stop=st.integers(min_value=1, max_value=_N))
def test_the_future_never_changes_a_past_decision(config, stop):
    events = _make(config).process(_X[:stop])
    assert events == [e for e in _WHOLE[config] if e.sample < stop]


# -- the interface contract -------------------------------------------------------------------
@pytest.mark.parametrize("name", DETECTOR_KINDS)
def test_interface_contract(name):
    det = make_detector(name, _SHORT_FS, MUSCLES)
    assert isinstance(det.detector, Detector)
    assert det.name == name == det.detector.kind
    assert det.fs == _SHORT_FS and det.channels == MUSCLES
    assert det.params and all(isinstance(k, str) for k in det.params)
    ts = 100.0 + np.arange(_N) / _SHORT_FS
    events = det.process(_X, ts)
    assert det.position == _N
    assert events == sorted(events, key=lambda e: e.sample)
    for e in events:
        assert e.channel in MUSCLES and e.kind in (ONSET, OFFSET)
        assert e.time == ts[e.sample]  # the stream time of the deciding sample
    for ch in MUSCLES:  # onsets and offsets alternate per channel
        kinds = [e.kind for e in events if e.channel == ch]
        assert kinds[::2] == [ONSET] * len(kinds[::2])
        assert kinds[1::2] == [OFFSET] * len(kinds[1::2])
    assert det.process(np.empty((0, 2))) == [] and det.position == _N
    with pytest.raises(ValueError, match="shape"):
        det.process(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="timestamps"):
        det.process(np.zeros((10, 2)), np.zeros(9))


def test_factory_and_parameter_errors():
    assert type(make_detector("threshold", FS, ["a"]).detector) is ThresholdDetector
    assert type(make_detector("tkeo", FS, ["a"]).detector) is TkeoDetector
    assert type(make_detector("double_threshold", FS, ["a"]).detector) is DoubleThresholdDetector
    assert type(make_detector("cusum", FS, ["a"]).detector) is CusumDetector
    with pytest.raises(ConfigError, match="unknown detector 'nope'"):
        make_detector("nope", FS, ["a"])
    with pytest.raises(ConfigError, match="unknown key.*k_of"):
        make_detector("threshold", FS, ["a"], k_of=3)
    with pytest.raises(ConfigError, match="k_on = 0.1"):
        make_detector("tkeo", FS, ["a"], k_on=0.1)
    with pytest.raises(ConfigError, match="p_fa"):
        make_detector("double_threshold", FS, ["a"], p_fa=2.0)
    with pytest.raises(ConfigError, match="r0 = 50"):
        make_detector("double_threshold", FS, ["a"], r0=50, window_ms=10)
    with pytest.raises(ConfigError, match="no channels"):
        make_detector("threshold", FS, [])


def test_threshold_detector_is_the_product_pipeline():
    det = make_detector("threshold", _SHORT_FS, MUSCLES, k_on=5.0, min_on_ms=5.0)
    from dataclasses import replace

    from closedloop.config import default_config
    from closedloop.config.signal import DetectorSettings

    base = default_config(MUSCLES)
    config = replace(base, detector=DetectorSettings(k_on=5.0, min_on_ms=5.0),
                     detector_kind="threshold")
    pipe = Pipeline(_SHORT_FS, MUSCLES, config)
    assert det.process(_X) == pipe.process(_X).events
    assert det.params["k_on"] == 5.0 and det.pipeline.config.envelope.kind == "rms"


def test_tkeo_defaults_and_overrides():
    det = make_detector("tkeo", FS, ["a"])
    assert det.detector.envelope_settings.kind == "tkeo" and det.params["k_on"] == 10.0
    assert det.params["band_hz"] == [30.0, 300.0]
    det = make_detector("tkeo", FS, ["a"], k_on=7, band_hz=[20, 400])
    assert det.params["k_on"] == 7.0 and det.params["band_hz"] == [20.0, 400.0]


# -- Bonato's statistics ------------------------------------------------------------------------
@pytest.mark.parametrize(("p_fa", "m", "r0"), [(0.05, 5, 1), (0.05, 20, 1), (1e-3, 50, 10)])
def test_bonato_first_threshold_gives_the_false_alarm_probability(p_fa, m, r0):
    pz = bonato_p_zeta(p_fa, m, r0)
    assert stats.binom.sf(r0 - 1, m, pz) == pytest.approx(p_fa, rel=1e-6)
    if r0 == 1:  # closed form: 1 - (1 - pz)**m = p_fa
        assert pz == pytest.approx(1 - (1 - p_fa) ** (1 / m), rel=1e-6)


def test_double_threshold_calibrates_on_the_first_rest_and_whitens():
    from closedloop.core.filters import FilterBank

    rng = np.random.default_rng(1)
    fs = 2000.0
    x = rng.standard_normal((int(4 * fs), 1)) * 3e-6  # white noise: rest only
    off = make_detector("double_threshold", fs, ["m"])
    det = off.detector
    off.process(x[: det.cal_end - 1])
    assert not det.calibrated and np.isnan(det.zeta).all()
    off.process(x[det.cal_end - 1 :])
    assert det.calibrated and det.cal_end == 600  # 100 ms warm-up + 200 ms rest at 2 kHz
    # sigma^2 is the variance of the whitened rest segment, zeta Bonato's first threshold
    xf = FilterBank(off.filter_settings, fs, 1).process(x)[:, 0]
    p = det.ar_order
    rest = xf[det.cal_start : det.cal_end]
    e_rest = np.convolve(rest, det.whitener[0])[p : rest.size]
    assert det.sigma2[0] == pytest.approx(np.mean(e_rest**2), rel=1e-9)
    assert det.zeta[0] == pytest.approx(-2 * det.sigma2[0] * np.log(det.p_zeta), rel=1e-12)
    # the band-passed rest is coloured; the prediction-error filter decorrelates it
    e = np.convolve(xf, det.whitener[0])[p : xf.size]

    def lag1(v):
        return float(np.corrcoef(v[:-1], v[1:])[0, 1])

    print(f"lag-1 autocorrelation: filtered {lag1(xf[1000:]):.2f}, whitened {lag1(e[1000:]):.2f}")
    assert lag1(xf[1000:]) > 0.5
    assert lag1(e[1000:]) < lag1(xf[1000:]) - 0.1
    # z = e[k]^2 + e[k-1]^2 exceeds zeta at rest at a rate of the order of P_zeta
    z = e[1:] ** 2 + e[:-1] ** 2
    rate = float(np.mean(z[1000:] > det.zeta[0]))
    print(f"exceedance rate at rest {rate:.4f}, P_zeta {det.p_zeta:.4f}")
    assert det.p_zeta / 3 < rate < det.p_zeta * 10
