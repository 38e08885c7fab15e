"""The sequential (CUSUM) detector: its statistic against a plain reference, chunk
invariance to the sample, artefacts, a contracting start, calibration, settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.config.schema import parse_table
from closedloop.config.signal import Calibration, CusumSettings, FilterSettings
from closedloop.core.detectors.cusum import REST_NOT_QUIET, calibrated_variance
from closedloop.core.events import OFFSET, ONSET, SUSPEND
from closedloop.core.filters import FilterBank
from closedloop.core.pipeline import OfflineDetector, make_detector
from closedloop.errors import ConfigError
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient

FS = 1000.0
REST_SD = 2e-6


def _rest(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * FS)) * REST_SD


def _burst(n: int, snr_db: float, seed: int = 1, ramp_ms: float = 30.0) -> np.ndarray:
    """Gaussian activity ``snr_db`` above REST_SD, with a linear ramp."""
    amp = REST_SD * 10 ** (snr_db / 20.0)
    env = np.minimum(1.0, np.arange(n) / (ramp_ms * FS / 1000.0))
    return np.random.default_rng(seed).standard_normal(n) * amp * env


def _run(det, x: np.ndarray, chunk: int) -> list:
    out = []
    for i in range(0, x.shape[0], chunk):
        out.extend(det.process(x[i : i + chunk]))
    return out


def _onsets(events) -> list[int]:
    return [e.sample for e in events if e.kind == ONSET]


# -- the statistic against a plain per-sample reference ------------------------------------
def test_the_statistic_is_pages_cusum_of_the_likelihood_ratio():
    """The vectorised, chunked CUSUM bank decides exactly where a plain per-sample loop of
    Page's recursion on the same normalised energies crosses the threshold."""
    x = np.concatenate((_rest(3.0), _rest(2.0, 5) + _burst(2000, 6.0)))[:, None]
    det = make_detector("cusum", FS, ["m"], whiten=False, refractory_gain=0.0)
    events = _run(det, x, 37)
    core = det.detector
    assert core.ready[0] and det.params["whiten"] is False
    # reference: filter the whole signal at once, then Page's recursion sample by sample
    xf = FilterBank(core.filters.settings, FS, 1).process(x)[:, 0]  # the detector's own band
    s = det.detector.settings
    first = None
    g = dict.fromkeys(s.ratios, 0.0)
    # the rest estimate moves only at block boundaries; replay it from a second detector
    ref = make_detector("cusum", FS, ["m"], whiten=False, refractory_gain=0.0)
    ready_at = None
    for k in range(x.shape[0]):
        if k % ref.detector.block == 0:
            sigma2, kappa = ref.detector.sigma2[0], ref.detector.kappa[0]
            if ready_at is None and ref.detector.ready[0]:
                ready_at = k
        ref.process(x[k : k + 1])
        if ready_at is None:
            continue
        u = min(xf[k] ** 2 / sigma2, s.clip)
        for rho in s.ratios:
            g[rho] = max(0.0, g[rho] + kappa * 0.5 * ((1 - 1 / rho) * u - math.log(rho)))
        if max(g.values()) > s.h_nats:
            first = k
            break
    assert first is not None and 3000 <= first < 3150
    assert _onsets(events)[0] == first


def test_the_detectors_band_starts_at_highpass_hz():
    """The detector's own band-pass starts at ``highpass_hz`` (30 Hz) unless ``[filters]``
    starts higher; 0 keeps ``[filters]``; the display's band stays the config's; an edge
    that does not fit below the band's top is refused, naming the setting."""
    det = make_detector("cusum", FS, ["m"])
    assert det.detector.filters.settings.bandpass_hz == (30.0, 450.0)
    assert det.filter_settings.bandpass_hz == (20.0, 450.0)  # what the pipeline shows
    assert make_detector("cusum", FS, ["m"], bandpass_hz=[50, 450]).detector.filters \
        .settings.bandpass_hz == (50.0, 450.0)
    assert make_detector("cusum", FS, ["m"], highpass_hz=0).detector.filters \
        .settings.bandpass_hz == (20.0, 450.0)
    with pytest.raises(ConfigError,
                       match=r"highpass_hz = 95 Hz is not below .* \(90 Hz at 200 Hz\)"):
        make_detector("cusum", 200.0, ["m"], highpass_hz=95)


def test_a_slow_deflection_rarely_triggers_but_a_contraction_does():
    """A 60 ms swing at 22 Hz of 4.5 rest SDs (a cable or electrode movement, like the
    slow deflections of real rest) on ten noise seeds: through a 20 Hz edge the CUSUM
    crosses its threshold on at least 9, through the default 30 Hz edge on at most 3;
    a 10 dB contraction is found on every seed through both, at most 5 ms apart."""
    t = np.arange(60) / FS
    swings = {0: 0, 30: 0}
    for seed in range(10):
        rest = _rest(6.0, seed)
        swing = rest.copy()
        swing[3000:3060] += 4.5 * REST_SD * np.sin(2 * np.pi * 22.0 * t) * np.hanning(60)
        contraction = rest.copy()
        contraction[3000:4000] += _burst(1000, 10.0, seed + 10)
        first = {}
        for hp in (0, 30):
            det = make_detector("cusum", FS, ["m"], highpass_hz=hp)
            on = _onsets(_run(det, swing[:, None], 20))
            assert all(3000 <= k < 3150 for k in on)
            swings[hp] += bool(on)
            det = make_detector("cusum", FS, ["m"], highpass_hz=hp)
            on = _onsets(_run(det, contraction[:, None], 20))
            assert len(on) == 1 and 3000 <= on[0] < 3100
            first[hp] = on[0]
        assert abs(first[30] - first[0]) <= 5
    print(f"swings found: 20 Hz edge {swings[0]} of 10, 30 Hz edge {swings[30]} of 10")
    assert swings[0] >= 9 and swings[30] <= 3


def test_kappa_counts_independent_samples():
    """White rest: about one independent sample per sample; strongly coloured rest left
    unwhitened: far fewer, so the same threshold needs more samples of evidence."""
    white = make_detector("cusum", FS, ["m"], whiten=False, bandpass_hz=[20, 450], notch_hz=0,
                          highpass_hz=0)
    white.process(_rest(1.0)[:, None])
    coloured = make_detector("cusum", FS, ["m"], whiten=False, bandpass_hz=[20, 60], notch_hz=0,
                             highpass_hz=0)
    coloured.process(_rest(1.0)[:, None])
    assert white.detector.ready[0] and coloured.detector.ready[0]
    print(f"kappa white-ish {white.detector.kappa[0]:.2f}, "
          f"20-60 Hz {coloured.detector.kappa[0]:.2f}")
    assert white.detector.kappa[0] > 0.5
    assert coloured.detector.kappa[0] < 0.5 * white.detector.kappa[0]
    # whitening learnt at rest gives back most of the independent samples
    whitened = make_detector("cusum", FS, ["m"], bandpass_hz=[20, 60], notch_hz=0, ar_order=6,
                             highpass_hz=0)
    whitened.process(_rest(1.0)[:, None])
    assert whitened.detector.kappa[0] > coloured.detector.kappa[0]


def test_rest_alone_gives_no_onset_and_bursts_are_found():
    x = _rest(60.0, 3)
    det = make_detector("cusum", FS, ["m"])
    assert _onsets(_run(det, x[:, None], 500)) == []
    assert det.detector.notices == []
    for snr in (20.0, 10.0):
        y = x.copy()
        starts = [5000, 15000, 25000]
        for s in starts:
            y[s : s + 800] += _burst(800, snr, seed=s)
        ev = _run(make_detector("cusum", FS, ["m"]), y[:, None], 500)
        ons = _onsets(ev)
        assert len(ons) == 3, (snr, ons)
        lat = [o - s for o, s in zip(ons, starts, strict=True)]
        print(f"{snr} dB latencies (ms): {lat}")
        assert all(0 <= v <= 60 for v in lat)
        assert [e.kind for e in ev] == [ONSET, OFFSET] * 3


# -- chunking changes nothing ---------------------------------------------------------------
def _busy_signal() -> np.ndarray:
    """Two channels exercising every path: a contraction at the start (relearning), a
    spike artefact, bursts at several levels, a long and a short one."""
    n = 12000
    a = _rest(n / FS, 11)
    a[:1500] += _burst(1500, 20.0, seed=2, ramp_ms=0.1)  # contracting when the session starts
    a[3000:3004] += 2000 * REST_SD  # impulsive artefact
    for s, snr, ln in ((4000, 10.0, 900), (6000, 3.0, 1500), (8500, 20.0, 200), (9500, 6.0, 700)):
        a[s : s + ln] += _burst(ln, snr, seed=s)
    b = _rest(n / FS, 12) * 3 + 1e-3  # an offset, another level
    for s in (2500, 5200, 7300, 10100):
        b[s : s + 600] += 3 * _burst(600, 12.0, seed=s + 1)
    return np.column_stack((a, b))


_X = _busy_signal()
_N = _X.shape[0]
_HAIR = {"h_nats": 3.0, "off_nats": 1.0, "refractory_ms": 0.0}


def _make(hair: bool) -> OfflineDetector:
    return make_detector("cusum", FS, ["a", "b"], **(_HAIR if hair else {}))


def _whole(hair: bool):
    det = _make(hair)
    return det.process(_X), det.detector.notices


_WHOLE = {hair: _whole(hair) for hair in (False, True)}


def test_the_busy_signal_exercises_every_path():
    events, notices = _WHOLE[False]
    assert sum(e.kind == ONSET for e in events) >= 8
    assert any(n.kind == REST_NOT_QUIET and n.channel == "a" for n in notices)
    assert len(_WHOLE[True][0]) > 100  # hair-trigger: many decisions


@pytest.mark.parametrize("chunk", [1, 7, 10000])
def test_fixed_chunks_give_the_same_events_to_the_sample(chunk):
    for hair in (False, True):
        det = _make(hair)
        assert _run(det, _X, chunk) == _WHOLE[hair][0]
        assert det.detector.notices == _WHOLE[hair][1]
        assert det.position == _N


_cuts = st.one_of(
    st.lists(st.integers(min_value=1, max_value=_N - 1), max_size=300, unique=True),
    st.integers(min_value=1, max_value=64).map(lambda k: list(range(k, _N, k))),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hair=st.booleans(), cuts=_cuts)
def test_random_chunks_give_the_same_events_to_the_sample(hair, cuts):
    det = _make(hair)
    bounds = [0, *sorted(cuts), _N]
    events = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        got = det.process(_X[a:b])
        assert all(a <= e.sample < b for e in got)  # decided inside the chunk given
        events.extend(got)
    assert events == _WHOLE[hair][0]
    assert det.detector.notices == _WHOLE[hair][1]


# -- bedside robustness ----------------------------------------------------------------------
@pytest.mark.parametrize(("ms", "height"), [(2, 3000.0), (4, 1000.0), (10, 500.0)])
def test_an_impulsive_artefact_does_not_trigger(ms, height):
    x = _rest(8.0, 4)
    k = 4000
    n = int(ms * FS / 1000)
    x[k : k + n] += height * REST_SD * np.hanning(n + 2)[1:-1]
    det = make_detector("cusum", FS, ["m"])
    assert _onsets(_run(det, x[:, None], 20)) == []
    # without the artefact hold the same spike does trigger (the test can fail)
    plain = make_detector("cusum", FS, ["m"], artifact_ratio=1e9)
    assert len(_onsets(_run(plain, x[:, None], 20))) == 1
    # and a real contraction right after it is still found
    y = x.copy()
    y[5000:5800] += _burst(800, 20.0, seed=9)
    ons = _onsets(_run(make_detector("cusum", FS, ["m"]), y[:, None], 20))
    assert len(ons) == 1 and 5000 <= ons[0] <= 5060


def test_the_ringing_after_a_hold_stays_out_of_the_rest_estimate():
    """The evidence stays frozen for ``artifact_ring_ms`` after an artefact hold while the
    band-pass rings on its edges; with ``rest_skips_ringing`` the blocks those ms touch stay
    out of the rest estimate too (here, with 50 ms, the hold's block and the next), without
    it only the hold's."""
    x = _rest(8.0, 4)
    knocked = x.copy()
    n = 5  # a 5 ms knock from 4.0 s: held within block 80, rings into block 81 (50 ms each)
    knocked[4000 : 4000 + n] += 300 * REST_SD * np.hanning(n + 2)[1:-1]
    rested = {}
    for skips in (True, False):
        for name, sig in (("clean", x), ("knock", knocked)):
            det = make_detector("cusum", FS, ["m"], rest_skips_ringing=skips,
                                artifact_ring_ms=50.0)
            assert _onsets(_run(det, sig[:, None], 7)) == []
            rested[skips, name] = int(det.detector._n_rest[0])
    assert rested[True, "clean"] == rested[False, "clean"]
    assert rested[True, "clean"] - rested[True, "knock"] == 2
    assert rested[False, "clean"] - rested[False, "knock"] == 1


#: What cusum's artefact hold did before the keys of the tests below (as
#: io.recorded.LEGACY_CUSUM reads a recording made then).
HOLD_BEFORE = {"artifact_mains_lag": False, "hold_resets_evidence": False,
               "artifact_ring_ms": 50.0}


def _knocked_rest(size: float) -> tuple[float, np.ndarray]:
    """16 s of the simulated patient's rest (10 dB, with its 10 uV of mains hum) with a
    5 ms half-sine knock of ``size`` x its voluntary EMG RMS every 2 s from 2.3 s."""
    fs = 2000.0
    ps = PatientSettings(fs=fs, muscles=("m",), snr_db=10.0)
    x = SimulatedPatient(ps, (), seed=5).read(int(16.0 * fs))[:, 0]
    voluntary = ps.noise_rms * 10 ** (ps.snr_db / 20.0)
    n = int(0.005 * fs)
    knock = size * voluntary * np.sin(np.pi * (np.arange(n) + 0.5) / n)
    for k in range(int(2.3 * fs), x.size - int(fs), int(2.0 * fs)):
        x[k : k + n] += knock
    return fs, x[:, None]


@pytest.mark.parametrize("size", [30.0, 40.0, 100.0])
def test_knocks_far_above_the_voluntary_emg_start_nothing_on_a_humming_rest(size):
    """Knocks of 30, 40 and 100 x the voluntary EMG RMS on rest, in 7-sample chunks: no
    onset. As cusum did before (a 5 ms lag, whose difference keeps the hum and put the
    hold's limit above 40 x; a 50 ms freeze after it): an onset on most knocks."""
    fs, x = _knocked_rest(size)
    assert _onsets(_run(make_detector("cusum", fs, ["m"]), x, 7)) == []
    assert len(_onsets(_run(make_detector("cusum", fs, ["m"], **HOLD_BEFORE), x, 7))) >= 4


@pytest.mark.parametrize("key", sorted(HOLD_BEFORE))
def test_each_part_of_the_artefact_hold_keeps_30x_knocks_from_deciding_onsets(key):
    """At 30 x, each key as before alone lets some knocks through: the test on a mains
    period's difference (the hum cancels: the limit falls below 30 x), the evidence of
    the rise before the hold reset when it starts, the 100 ms freeze after it (the
    filters ring on the edges the hold let in)."""
    fs, x = _knocked_rest(30.0)
    det = make_detector("cusum", fs, ["m"], **{key: HOLD_BEFORE[key]})
    assert _onsets(_run(det, x, 7))


def test_a_strong_sharp_contraction_is_not_held_as_an_artefact():
    """A contraction whose first samples jump far above rest is let through after at
    most artifact_max_ms: found, at most that much later."""
    x = _rest(6.0, 6)
    x[3000:3600] += _burst(600, 45.0, seed=3, ramp_ms=0.1)  # 45 dB, no ramp
    det = make_detector("cusum", FS, ["m"])
    ons = _onsets(_run(det, x[:, None], 20))
    assert len(ons) == 1 and 3000 <= ons[0] <= 3000 + det.detector.settings.artifact_max_ms + 25


def test_a_contracting_start_warns_and_waits_for_quiet_rest():
    """The patient contracts for the first 2 s: a notice says rest was not quiet, the
    contraction is not learnt as rest (no onset when it ends, none in the rest after),
    and the next contraction is found."""
    x = _rest(8.0, 7)
    x[:2000] += _burst(2000, 20.0, seed=5, ramp_ms=0.1)
    x[5000:5800] += _burst(800, 10.0, seed=6)
    det = make_detector("cusum", FS, ["m"])
    ev = _run(det, x[:, None], 20)
    notices = det.detector.notices
    assert notices and all(n.kind == REST_NOT_QUIET for n in notices)
    print([n.message for n in notices])
    drop = [n for n in notices if "fell to" in n.message]
    assert drop and 2000 <= drop[0].sample <= 2300  # found when the contraction ended
    assert all(n.sample < 5000 for n in notices)  # none about the rest after it
    assert _onsets(ev) and all(5000 <= s <= 5100 for s in _onsets(ev))
    assert det.detector.sigma2[0] < 3 * REST_SD**2  # the rest now is the quiet rest


def test_a_contraction_inside_the_first_rest_window_is_not_learnt():
    x = _rest(6.0, 8)
    x[250:1200] += _burst(950, 15.0, seed=4, ramp_ms=20)  # starts while rest is learnt
    x[3000:3600] += _burst(600, 10.0, seed=5)
    det = make_detector("cusum", FS, ["m"])
    ev = _run(det, x[:, None], 20)
    assert any("not quiet" in n.message for n in det.detector.notices)
    assert det.detector.sigma2[0] < 3 * REST_SD**2
    assert _onsets(ev) and all(3000 <= s <= 3100 for s in _onsets(ev))


def test_a_calibrated_channel_uses_the_calibrations_rest_variance():
    x = _rest(6.0, 9)
    xf = FilterBank(FilterSettings(), FS, 1).process(x[:, None])[300:, 0]
    sd = float(np.std(xf))
    # RMS-envelope statistics of a calibration that found twice this rest's variance
    cal = Calibration(rest_mean=sd * 0.94 * 2**0.5, rest_sd=sd * 0.34 * 2**0.5)
    assert calibrated_variance(cal) == pytest.approx(2 * sd**2, rel=0.01)
    det = make_detector("cusum", FS, ["m"], calibrations=[cal], baseline="calibrated")
    det.process(x[:, None])
    core = det.detector
    assert core.ready[0] and not core.adaptive[0]
    # the whitened rest variance is the calibrated one times the whitening's power gain
    a = core.whitener[0]
    e = np.convolve(xf, a)[a.size - 1 : xf.size]
    gain = float(np.mean(e**2) / np.mean(xf**2))
    assert core.sigma2[0] == pytest.approx(calibrated_variance(cal) * gain, rel=0.15)
    adaptive = make_detector("cusum", FS, ["m"])
    adaptive.process(x[:, None])
    assert core.sigma2[0] == pytest.approx(2 * adaptive.detector.sigma2[0], rel=0.2)
    # a calibration 25 x quieter than what the session starts with: rest was not quiet
    quiet = Calibration(rest_mean=sd * 0.94 / 5, rest_sd=sd * 0.34 / 5)
    det = make_detector("cusum", FS, ["m"], calibrations=[quiet])
    det.process(x[:, None])
    assert not det.detector.ready[0]
    assert "calibrated rest" in det.detector.notices[0].message
    with pytest.raises(ConfigError, match="baseline is 'calibrated'"):
        make_detector("cusum", FS, ["m", "n"], calibrations=[cal, None], baseline="calibrated")


# -- the live interface ---------------------------------------------------------------------
def test_refractory_rise_suspend_and_ready():
    x = _rest(5.0, 10)
    x[2000:2500] += _burst(500, 20.0, seed=7)
    det = make_detector("cusum", FS, ["m"])
    core = det.detector
    assert not core.ready[0] and np.isnan(core.threshold()[0])
    ev = det.process(x[:, None])
    (on,) = [e for e in ev if e.kind == ONSET]
    (off,) = [e for e in ev if e.kind == OFFSET]
    s = det.detector.settings
    assert on.threshold == s.h_nats and on.envelope > s.h_nats
    assert core.threshold(off.sample)[0] == pytest.approx(s.h_nats * (1 + s.refractory_gain))
    half = off.sample + core.n_refr // 2
    assert core.threshold(half)[0] == pytest.approx(s.h_nats * (1 + s.refractory_gain / 2),
                                                    rel=0.01)
    assert core.threshold(off.sample + core.n_refr)[0] == s.h_nats
    # suspend while active: an offset and a suspend event; nothing while suspended
    det2 = make_detector("cusum", FS, ["m"])
    det2.process(x[:2100, None])
    assert det2.detector.active[0]
    got = det2.detector.suspend(0, True, 2100, 2.1)
    assert [e.kind for e in got] == [OFFSET, SUSPEND]
    assert _onsets(det2.process(x[2100:, None])) == []


def test_settings_are_validated_like_a_config():
    s = parse_table(CusumSettings, {"h_nats": 15, "ratios": [3], "learn_ms": 400},
                    source="c.toml", path="detector")
    assert s.h_nats == 15.0 and s.ratios == (3.0,) and s.learn_ms == 400.0
    with pytest.raises(ConfigError, match=r"c.toml: detector.h_nats = 0.1"):
        parse_table(CusumSettings, {"h_nats": 0.1}, source="c.toml", path="detector")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_table(CusumSettings, {"h_nat": 3}, source="c.toml", path="detector")
    with pytest.raises(ConfigError, match="ratios"):
        make_detector("cusum", FS, ["m"], ratios=[0.5])
    with pytest.raises(ConfigError, match="learn_ms"):
        make_detector("cusum", FS, ["m"], learn_ms=60, block_ms=50)
    with pytest.raises(ConfigError, match="unknown key.*k_on"):
        make_detector("cusum", FS, ["m"], k_on=3)


def test_runs_on_the_simulated_patient_at_2khz():
    ps = PatientSettings(fs=2000.0, muscles=("biceps", "triceps"), snr_db=10.0)
    script = [Attempt("biceps", 2.0, 1.0), Attempt("triceps", 4.5, 1.0),
              Attempt("biceps", 7.0, 0.5)]
    pat = SimulatedPatient(ps, script, seed=1)
    x = pat.read(int(9.0 * 2000))
    ev = _run(make_detector("cusum", 2000.0, ps.muscles), x, 40)
    ons = [(e.sample, e.channel) for e in ev if e.kind == ONSET]
    truth = pat.true_onsets()
    assert len(ons) == len(truth) == 3
    for (s, ch), (t, tch) in zip(ons, truth, strict=True):
        assert ch == tch and 0 <= s - t <= 0.15 * 2000


# -- stimulation: blanked samples carry no evidence, trains teach no rest --------------------
STIM_FS = 2000.0
STIM_CHANNELS = {"biceps": 1, "triceps": 2}


@pytest.fixture(scope="module")
def stimulated():
    """10 s of the simulated patient (2 kHz): biceps trains at rest (1-4 s and 6-6.6 s),
    biceps attempts at 5 s and 8 s, and the trains' commands."""
    from tests.core.stimulated import stimulate, train

    commands = train("biceps", 1.0, 4.0, 20.0) + train("biceps", 6.0, 6.6, 20.0)
    script = [Attempt("biceps", 5.0, 0.6), Attempt("biceps", 8.0, 0.6)]
    return stimulate(commands, 10.0, script=script).raw, commands


def _stimulated_run(x: np.ndarray, commands, chunks, *, hook: bool = True, path: str = "auto",
                    taken: list | None = None):
    """The cusum pipeline with the artifact remover fed the commands before their samples
    (as the live loop does): its events, the onset statistic, sigma2 after every chunk,
    the blanked samples and where the statistic was above its threshold."""
    from dataclasses import replace

    from closedloop.config import default_config
    from closedloop.config.signal import ArtifactSettings
    from closedloop.core.blanking import ArtifactRemover
    from closedloop.core.pipeline import Pipeline

    muscles = tuple(STIM_CHANNELS)
    config = replace(default_config(muscles), detector=CusumSettings(), detector_kind="cusum")
    remover = ArtifactRemover(ArtifactSettings(), STIM_FS, muscles, 50.0, comb_all=True)
    pipe = Pipeline(STIM_FS, muscles, config, artifacts=remover)
    _force_path(pipe.detector, path, taken)
    if not hook:  # as before the hook: the detector never hears of the stimulation
        pipe.detector.stimulation = lambda blanked, stimulating: None  # type: ignore[method-assign]
    pending = sorted(commands, key=lambda c: c.sample)
    events, stat, above, sigma2, blanked = [], [], [], [], []
    i = k = 0
    while i < x.shape[0]:
        size = min(chunks[k % len(chunks)], x.shape[0] - i)
        while pending and pending[0].sample < i + size:
            c = pending.pop(0)
            remover.command(c.muscle, STIM_CHANNELS[c.muscle], c.current_ma > 0,
                            c.frequency_hz, c.sample)
        blanked.append(remover.blank_mask(i, size))
        block = pipe.process(x[i : i + size])
        events += block.events
        stat.append(block.envelope)
        above.append(block.above)
        sigma2.append((i + size, pipe.detector.sigma2.copy()))
        i, k = i + size, k + 1
    return events, np.vstack(stat), sigma2, np.concatenate(blanked), np.vstack(above)


@pytest.mark.parametrize("chunks", [[1], [7], [10000]])
def test_with_stimulation_chunks_give_the_same_events_to_the_sample(stimulated, chunks):
    x, commands = stimulated
    ref = _stimulated_run(x, commands, [x.shape[0]])
    got = _stimulated_run(x, commands, chunks)
    assert [e.kind for e in ref[0]].count(ONSET) == 2
    assert got[0] == ref[0]
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[4], ref[4])  # above: each sample against its threshold
    assert ref[4].any()


def test_stimulation_teaches_no_rest_and_blanked_samples_carry_no_evidence(stimulated):
    """Over a 3 s train at rest the rest variance stays what it was (without the hook the
    blanking's smooth fill, learnt as rest, halves it: the triceps' cross-talk of the next
    attempt then triggers and offsets come late); inside every blanked stretch the onset
    statistic stands still; the events are the two attempts' onsets and offsets."""
    x, commands = stimulated
    events, stat, sigma2, blanked, _ = _stimulated_run(x, commands, [20])

    def sigma_at(t: float) -> np.ndarray:
        return next(s for end, s in sigma2 if end >= t * STIM_FS)

    np.testing.assert_allclose(sigma_at(3.95), sigma_at(0.95), rtol=0.15)
    assert [(e.channel, e.kind) for e in events] == [("biceps", ONSET), ("biceps", OFFSET)] * 2
    inside = blanked[1:] & blanked[:-1]  # sample k and the one before it both blanked
    moved = np.diff(stat[:, 0])[inside]
    assert inside.sum() > 1000 and np.any(stat[1:, 0][inside] > 0)
    np.testing.assert_array_equal(moved[np.isfinite(moved)], 0.0)
    # without the hook: rest learnt from the train, and the statistic moves while blanked
    events0, stat0, sigma0, *_ = _stimulated_run(x, commands, [20], hook=False)
    late = next(s for end, s in sigma0 if end >= 3.95 * STIM_FS)
    assert np.all(late < 0.7 * sigma_at(0.95))
    assert np.any(np.diff(stat0[:, 0])[inside] != 0)
    assert events0 != events


# -- the fast paths against the per-sample one, to the bit ------------------------------------
_STATE = ("whitener", "sigma2", "kappa", "kappa_eff", "_acf", "_phi", "_disp_s", "_disp_w",
          "_sd_d", "_S", "_M", "_Sd", "_Md", "_n_rest", "_low_blocks", "statistic",
          "_prev_buf", "_xlag", "_xhist")


def _force_path(core, path: str, taken: list[int] | None = None) -> list[int]:
    """Make cusum detector ``core`` take ``path`` (see :func:`_traced`); returns the list
    (``taken``, or a new one) the span path appends the blocks it took to."""
    taken = [] if taken is None else taken
    if path in ("blocks", "samples"):
        core._may_span = lambda p0: False
    else:
        span = core._span

        def counted(*args):
            k = span(*args)
            taken.append(k)
            return k

        core._span = counted
    if path == "samples":
        core._fast_piece = lambda *args: False
    return taken


def _traced(x: np.ndarray, chunk: int, path: str, fs: float, channels, **params):
    """Run the cusum pipeline over ``x`` in chunks of ``chunk`` along ``path``: "auto"
    (as shipped), "blocks" (no run of whole blocks taken together) or "samples" (every
    piece through :meth:`_piece`, the path with the artefact hold's per-sample loop,
    which prepares nothing ahead).
    Returns everything it decided and its state, and how many blocks spans took."""
    det = make_detector("cusum", fs, channels, **params)
    core = det.detector
    taken = _force_path(core, path)
    events, stat, above, thr = [], [], [], []
    for i in range(0, x.shape[0], chunk):
        block = det.pipeline.process(x[i : i + chunk])
        events += block.events
        stat.append(block.envelope)
        above.append(block.above)
        thr.append(block.on_threshold)
    out = {"events": events, "notices": list(core.notices), "stat": np.vstack(stat),
           "above": np.vstack(above), "thr": np.vstack(thr)}
    out.update({k: np.array(getattr(core, k)) for k in _STATE})
    return out, sum(taken)


def _assert_same_bits(got: dict, want: dict) -> None:
    assert got["events"] == want["events"]
    assert got["notices"] == want["notices"]
    for key in ("stat", "above", "thr", *_STATE):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.fixture(scope="module")
def patient4():
    """20 s of the simulated patient, 4 muscles at 2 kHz, with attempts on each."""
    muscles = ("a", "b", "c", "d")
    ps = PatientSettings(fs=2000.0, muscles=muscles, snr_db=10.0)
    script = [Attempt(m, 3.0 + 4.0 * k + 0.7 * j, 1.2) for k in range(4)
              for j, m in enumerate(muscles) if (k + j) % 2 == 0]
    return SimulatedPatient(ps, script, seed=3).read(int(20.0 * 2000))


@pytest.mark.parametrize("chunk", [20, 1000, 10000])
@pytest.mark.parametrize("hair", [False, True])
def test_whole_blocks_together_decide_as_the_per_sample_path_to_the_bit(chunk, hair):
    """The busy two-channel signal (a contracting start that is relearnt, an artefact held,
    bursts at several levels): runs of whole blocks taken together (large chunks), block
    by block (the prepared per-piece path) and every piece through the per-sample path
    give the same events, notices, statistic, thresholds and state, bit for
    bit; and large chunks do take runs of blocks together."""
    params = _HAIR if hair else {}
    want, _ = _traced(_X, chunk, "samples", FS, ["a", "b"], **params)
    got, taken = _traced(_X, chunk, "auto", FS, ["a", "b"], **params)
    _assert_same_bits(got, want)
    blocks, _ = _traced(_X, chunk, "blocks", FS, ["a", "b"], **params)
    _assert_same_bits(blocks, want)
    if chunk >= 1000:  # blocks went through the span path: most, at the default threshold
        assert taken > (0 if hair else 0.5 * _N / 50)
    else:
        assert taken == 0  # a 20-sample chunk never holds two whole blocks


@pytest.mark.parametrize("params", [{}, {"dispersion": False, "whiten": False},
                                    {"refractory_gain": 3.0, "h_nats": 8.0}])
def test_whole_blocks_together_on_the_simulated_patient_to_the_bit(patient4, params):
    """Four channels at 2 kHz, some contracting while others rest (each block's fits are
    then a batch of a few channels): the span path matches the per-sample path to the bit."""
    muscles = ["a", "b", "c", "d"]
    want, _ = _traced(patient4, 10000, "samples", 2000.0, muscles, **params)
    got, taken = _traced(patient4, 10000, "auto", 2000.0, muscles, **params)
    assert sum(e.kind == ONSET for e in want["events"]) >= 4
    _assert_same_bits(got, want)
    assert taken > 0.5 * patient4.shape[0] / 100


@pytest.mark.parametrize("chunk", [7, 10000])
def test_knocks_held_and_their_evidence_reset_decide_alike_in_every_chunking(chunk):
    """Knocks of 25 x on a humming rest (holds, resets of the evidence the rise gave,
    freezes, and onsets where a knock still gets through): every path decides to the bit
    as the per-sample one, and 7-sample chunks as one of 10,000."""
    fs, x = _knocked_rest(25.0)
    want, _ = _traced(x, chunk, "samples", fs, ["m"])
    assert want["events"]  # some knocks of this size do decide onsets
    _assert_same_bits(_traced(x, chunk, "auto", fs, ["m"])[0], want)
    _assert_same_bits(_traced(x, chunk, "blocks", fs, ["m"])[0], want)
    other, _ = _traced(x, 10007 - chunk, "auto", fs, ["m"])
    assert other["events"] == want["events"]
    np.testing.assert_array_equal(other["stat"], want["stat"])


def test_fits_and_autocorrelations_of_many_blocks_at_once_match_one_at_a_time():
    """What lets a run of blocks be fitted in one batch: each row's whitener, kappa and
    rest variance (fitted with the channels fitted with it per block: one, or several) and
    each block's autocorrelation do not depend on the other rows of the batch."""
    det = make_detector("cusum", 2000.0, ["a", "b", "c"]).detector
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 40 * det.block + det.n_lags)) * 1e-5
    m, n = det.n_lags - 1, det.block
    ext = np.lib.stride_tricks.sliding_window_view(x, m + n, axis=1)[:, : 40 * n : n]
    many = det._block_acf(np.ascontiguousarray(ext))
    for b in range(40):
        np.testing.assert_array_equal(many[:, b], det._block_acf(ext[:, b : b + 1])[:, 0])
    r = many.transpose(1, 0, 2)  # (blocks, channels, lags): the rows a span fits at once
    for channels in (1, 3):
        rows = np.ascontiguousarray(r[:, :channels]).reshape(-1, det.n_lags)
        batch = det._fit_rows(rows, channels == 1)
        for b in range(40):
            one = det._fit_rows(np.ascontiguousarray(r[b, :channels]), channels == 1)
            for got, want in zip(batch, one, strict=True):
                np.testing.assert_array_equal(got.reshape(40, channels, *want.shape[1:])[b],
                                              want)


def test_with_stimulation_whole_blocks_together_match_the_per_sample_path(stimulated):
    """Stimulated chunks: the whole blocks no train or blanked sample touches are still
    taken together, and decide as the per-sample path, to the bit."""
    x, commands = stimulated
    taken: list[int] = []
    want = _stimulated_run(x, commands, [10000], path="samples")
    got = _stimulated_run(x, commands, [10000], taken=taken)
    assert got[0] == want[0] and [e.kind for e in want[0]].count(ONSET) == 2
    for g, w in zip(got[1:], want[1:], strict=True):
        if isinstance(g, list):  # sigma2 after every chunk
            for (eg, sg), (ew, sw) in zip(g, w, strict=True):
                assert eg == ew
                np.testing.assert_array_equal(sg, sw)
        else:
            np.testing.assert_array_equal(g, w)
    assert sum(taken) > 0.5 * x.shape[0] / 100  # most 50 ms blocks: no train touches them


def test_a_block_too_short_for_its_lags_is_refused_naming_block_ms():
    """A block must hold the rest autocorrelation's lags (10 ms plus ar_order + 1): a
    shorter ``block_ms`` is refused with what to set (it used to fail with a numpy
    broadcast error on the first block); the least block that does runs."""
    from closedloop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"block_ms = 5 is 5 samples at 1000 Hz.*"
                                          r"use block_ms >= 14"):
        make_detector("cusum", 1000.0, ["m"], block_ms=5, learn_ms=20)
    det = make_detector("cusum", 1000.0, ["m"], block_ms=14, learn_ms=28)
    x = np.random.default_rng(0).standard_normal((3000, 1)) * 1e-5
    det.process(x)
