import numpy as np
import pytest
from scipy import signal

from closedloop.config.signal import FilterSettings
from closedloop.core.filters import FilterBank, design_sos, effective_band


def _response(sos, fs, freqs):
    _, h = signal.sosfreqz(sos, worN=freqs, fs=fs)
    return np.abs(h)


@pytest.mark.parametrize("fs", [200.0, 250.0, 1000.0, 2000.0, 4000.0, 10000.0])
@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_response_matches_scipy_design(fs, mains):
    st = FilterSettings(notch_hz=mains)
    lo, hi = effective_band(st, fs)
    assert hi < fs / 2
    # an independent reference: scipy's own band-pass times its own notches
    ref = [signal.butter(4, [lo, hi], btype="bandpass", fs=fs, output="sos")]
    for k in (1, 2, 3):
        if mains * k < hi:
            ref.append(signal.tf2sos(*signal.iirnotch(mains * k, 30.0, fs=fs)))
    freqs = np.linspace(1, fs / 2 * 0.99, 400)
    expected = np.prod([_response(s, fs, freqs) for s in ref], axis=0)
    got = _response(design_sos(st, fs), fs, freqs)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    # and the filter behaves as specified: mains gone, pass-band passed
    assert _response(design_sos(st, fs), fs, [mains])[0] < 0.05
    mid = np.sqrt(lo * hi)
    if abs(mid - mains) > 10 and abs(mid - 2 * mains) > 10 and abs(mid - 3 * mains) > 10:
        assert _response(design_sos(st, fs), fs, [mid])[0] > 0.7


def test_low_rate_board_caps_upper_edge():
    lo, hi = effective_band(FilterSettings(), 250.0)
    assert lo == 20.0 and hi == pytest.approx(0.9 * 125.0)


def test_band_that_cannot_fit_is_refused():
    with pytest.raises(ValueError, match="Nyquist"):
        effective_band(FilterSettings(bandpass_hz=(120.0, 450.0)), 250.0)


def test_filtering_equals_scipy_sosfilt_one_pass():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 4)) + 100.0  # DC offset: no start-up transient expected
    fb = FilterBank(FilterSettings(), 2000.0, 4)
    y = np.vstack([fb.process(x[i : i + 13]) for i in range(0, 3000, 13)])
    sos = design_sos(FilterSettings(), 2000.0)
    zi = signal.sosfilt_zi(sos)[:, :, None] * x[0][None, None, :]
    ref, _ = signal.sosfilt(sos, x, axis=0, zi=zi)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    assert np.abs(y[:50]).max() < 10.0  # no 100-unit step transient
