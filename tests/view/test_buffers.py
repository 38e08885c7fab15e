"""Pure display buffers: ring buffer, peak decimation, steps, stimulation bands, trials,
channel quality (no Qt, no LSL)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.view.buffers import (
    FLAT,
    MAINS,
    NO_DATA,
    OK,
    SATURATED,
    QualityTracker,
    RingBuffer,
    StimTrack,
    TimedLog,
    TrialTracker,
    mains_fraction,
    peak_downsample,
    step_xy,
)


@pytest.mark.parametrize("sizes", [[1] * 50, [7, 3, 25, 1, 9], [100], [33, 33, 33, 33]])
def test_ring_buffer_keeps_the_newest_in_order(sizes):
    rb = RingBuffer(2, 40)
    k = 0
    for n in sizes:
        t = np.arange(k, k + n, dtype=float)
        rb.extend(t, np.column_stack([t, -t]))
        k += n
    t, x = rb.latest()
    want = np.arange(max(0, k - 40), k, dtype=float)
    np.testing.assert_array_equal(t, want)
    np.testing.assert_array_equal(x[:, 1], -want)
    assert rb.total == k and rb.last_time == k - 1
    t5, _ = rb.latest(5)
    np.testing.assert_array_equal(t5, want[-5:])
    ts, _ = rb.since(k - 3.5)
    np.testing.assert_array_equal(ts, want[-3:])


def test_ring_buffer_returns_copies_and_checks_shapes():
    rb = RingBuffer(1, 10)
    rb.extend(np.arange(3.0), np.ones((3, 1)))
    _, x = rb.latest()
    x[:] = 99
    assert rb.latest()[1].max() == 1.0
    with pytest.raises(ValueError):
        rb.extend(np.arange(3.0), np.ones((3, 2)))
    assert math.isnan(RingBuffer(1, 5).last_time)


def test_peak_downsample_keeps_every_extreme():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20001, 3))
    x[12345, 1] = 50.0  # a single-sample spike
    x[777, 2] = -40.0
    t = np.arange(x.shape[0]) / 2000.0
    td, xd = peak_downsample(t, x, 1000)
    assert xd.shape[0] <= 1000 and td.shape[0] == xd.shape[0]
    np.testing.assert_array_equal(xd.max(axis=0), x.max(axis=0))
    np.testing.assert_array_equal(xd.min(axis=0), x.min(axis=0))
    assert np.all(np.diff(td) >= 0)
    assert td[0] == t[0] and td[-1] <= t[-1]
    # 1-D and short inputs
    t1, x1 = peak_downsample(t, x[:, 1], 10)
    assert x1.max() == 50.0 and x1.shape[0] <= 10
    t2, x2 = peak_downsample(t[:5], x[:5, 0], 10)
    np.testing.assert_array_equal(x2, x[:5, 0])


def test_step_xy_draws_each_value_until_the_next():
    x, y = step_xy(np.array([1.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0]), 6.0, 2.0)
    np.testing.assert_array_equal(x, [2.0, 3.0, 3.0, 4.0, 4.0, 6.0])
    np.testing.assert_array_equal(y, [10.0, 10.0, 20.0, 20.0, 30.0, 30.0])


def test_stim_track_bands_with_peak_current():
    st = StimTrack(keep_s=100.0)
    for t, ma in [(1.0, 5.0), (1.1, 10.0), (1.2, 20.0), (3.0, 10.0), (3.2, 0.0), (5.0, 8.0)]:
        st.add("biceps", t, ma)
    st.add("triceps", 2.0, 0.0)  # off while off: no band
    bands = st.bands(0.0)
    assert [(b.muscle, b.start, b.end, b.peak_ma) for b in bands[:1]] == [
        ("biceps", 1.0, 3.2, 20.0)
    ]
    assert bands[1].start == 5.0 and math.isnan(bands[1].end) and bands[1].peak_ma == 8.0
    assert st.current == {"biceps": 8.0, "triceps": 0.0}
    assert [b.start for b in st.bands(4.0)] == [5.0]
    st.stop_all(6.0)
    assert st.bands(0.0)[-1].end == 6.0 and st.current["biceps"] == 0.0


def test_trial_tracker_counts_and_time_left():
    tt = TrialTracker(n_trials=3, response_window_s=2.0, trial_period_s=10.0)
    assert not tt.add("input_issue", 0.0, {})
    tt.add("cue", 100.0, {"trial": 0, "muscle": "biceps"})
    s = tt.snapshot()
    assert s.cue == "move biceps" and s.trial == 0
    assert s.time_left(100.5) == pytest.approx(1.5)  # response window
    tt.add("hit", 100.8, {"trial": 0})
    tt.add("cue", 110.0, {"trial": 1, "muscle": "biceps"})
    tt.add("miss", 112.0, {"trial": 1})
    s = tt.snapshot()
    assert (s.hits, s.misses, s.cue, s.trial) == (1, 1, "", 1)
    assert s.time_left(113.0) == pytest.approx(110.0 + 2 * 10.0 - 113.0)
    tt.add("done", 130.0, {})
    assert tt.snapshot().done and tt.snapshot().time_left(131.0) == 0.0


def test_timed_log_window():
    log = TimedLog(3)
    for t in range(5):
        log.add(float(t), t)
    assert [x for _, x in log.since(0.0)] == [2, 3, 4]
    assert [x for _, x in log.since(3.5)] == [4]


FS = 2000.0


def emg(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 20e-6, n)


def test_quality_flags_flat_saturated_mains_and_ok():
    n = int(FS)
    t = np.arange(n) / FS
    ok = emg(n)
    flat = np.full(n, 1.5e-3)
    clipped = np.clip(emg(n, 1) * 5, -30e-6, 30e-6)
    hum = 200e-6 * np.sin(2 * np.pi * 50 * t) + emg(n, 2) * 0.5
    q = QualityTracker(("a", "b", "c", "d"), FS, mains_hz=50.0)
    res = q.assess(np.column_stack([ok, flat, clipped, hum]), now=10.0)
    assert [res[c].status for c in "abcd"] == [OK, FLAT, SATURATED, MAINS]
    assert mains_fraction(hum[:, None], FS, 50.0)[0] > 0.9
    assert mains_fraction(ok[:, None], FS, 50.0)[0] < 0.1
    # too little data
    assert q.assess(np.zeros((10, 4)), 0.0)["a"].status == NO_DATA


def test_quality_reported_issues_hold_for_a_while():
    q = QualityTracker(("a", "b"), FS, report_hold_s=3.0)
    x = np.column_stack([emg(4000), emg(4000, 3)])
    q.report("a", "saturated", time=100.0, message="amplifier at rail")
    q.report(None, "gap", time=100.0)  # not a channel-quality kind: ignored
    r = q.assess(x, now=101.0)
    assert r["a"].status == SATURATED and r["a"].detail == "amplifier at rail"
    assert r["b"].status == OK
    assert q.assess(x, now=104.5)["a"].status == OK


def test_held_and_nonfinite_reports_show_as_no_signal_change():
    """The session's held-value and NaN checks report kinds ``held`` and ``nonfinite``."""
    q = QualityTracker(("a", "b", "c"), FS)
    x = np.column_stack([emg(4000), emg(4000, 3), emg(4000, 4)])
    q.report("a", "held", time=10.0, message="channel a: the same value ...")
    q.report("b", "nonfinite", time=10.0)
    r = q.assess(x, now=10.5)
    assert (r["a"].status, r["b"].status, r["c"].status) == (FLAT, FLAT, OK)
    assert r["a"].detail.startswith("channel a: the same value")
