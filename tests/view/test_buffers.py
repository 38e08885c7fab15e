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
    PeakRing,
    QualityTracker,
    RingBuffer,
    StimTrack,
    TimedLog,
    TrialTracker,
    display_units,
    fmt_value,
    mains_fraction,
    nice_step,
    peak_downsample,
    regroup,
    robust_extent,
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


# -- peaks kept as samples arrive -----------------------------------------------------------
@pytest.mark.parametrize("sizes", [[1] * 300, [7, 3, 25, 1, 9] * 12, [600], [13] * 50])
def test_peak_ring_equals_one_pass_over_the_samples(sizes):
    """Any chunking gives the bins of one pass: min and max of every ``bin_size``
    samples counted from the first, the newest ``n_bins`` kept, the bin under way too."""
    rng = np.random.default_rng(1)
    total = sum(sizes)
    x = rng.normal(size=(total, 2))
    t = np.arange(total) / 100.0
    ring = PeakRing(2, 5, 40)
    k = 0
    for n in sizes:
        ring.extend(t[k:k + n], x[k:k + n])
        k += n
    first, bt, lo, hi = ring.since(-np.inf)
    whole = total // 5
    want_first = max(0, whole - 40)
    assert first == want_first and ring.bins == whole
    blocks = x[: whole * 5].reshape(whole, 5, 2)[want_first:]
    n_whole = whole - want_first
    np.testing.assert_array_equal(lo[:n_whole], blocks.min(axis=1))
    np.testing.assert_array_equal(hi[:n_whole], blocks.max(axis=1))
    np.testing.assert_array_equal(bt[:n_whole], t[want_first * 5: whole * 5: 5])
    rest = total - whole * 5
    assert bt.shape[0] == n_whole + (1 if rest else 0)
    if rest:
        np.testing.assert_array_equal(hi[-1], x[whole * 5:].max(axis=0))
    f2, bt2, _, _ = ring.since(bt[3])
    assert f2 == first + 3 and bt2[0] == bt[3]


def test_regroup_aligns_groups_to_bin_numbers():
    """Merging bins k at a time keeps groups on multiples of k, wherever the window
    starts: the same group has the same peaks in every frame (no flicker)."""
    rng = np.random.default_rng(2)
    lo = rng.normal(size=(100, 1))
    hi = lo + rng.random((100, 1))
    t = np.arange(100.0)
    for start in (0, 1, 3, 4):
        gt, glo, ghi = regroup(start + 20, t[start:], lo[start:], hi[start:], 4)
        # a whole group: bins 24..27 (numbers), i.e. indices 4..7
        i = int(np.flatnonzero(gt == 4.0)[0])
        assert glo[i, 0] == lo[4:8, 0].min() and ghi[i, 0] == hi[4:8, 0].max()
        assert glo.min() == lo[start:].min() and ghi.max() == hi[start:].max()
    same = regroup(0, t, lo, hi, 1)
    assert same[0] is t


def test_units_and_scales_for_clinicians():
    assert display_units("V") .emg_factor == 1e6 and display_units("V").emg_unit == "µV"
    assert display_units("mV").stat_factor == 1e3 and display_units("uV").stat_unit == "µV"
    tk = display_units("V", "tkeo")
    assert tk.stat_factor == 1e12 and tk.stat_unit == "µV²"
    cu = display_units("uV", "cusum")
    assert cu.stat_unit == "nats" and cu.stat_factor == 1.0 and "cusum" in cu.stat_name
    assert not cu.statistic.offsets_on_it and not cu.statistic.is_amplitude
    counts = display_units("counts")
    assert counts.emg_factor == 1.0 and counts.emg_unit == "counts"
    assert [nice_step(x) for x in (0.9, 1.0, 3.7, 7.0, 19.0, 450.0)] == [
        0.5, 1.0, 2.0, 5.0, 10.0, 200.0]
    assert nice_step(0.0) == 0.0 and nice_step(float("nan")) == 0.0
    assert [fmt_value(x) for x in (0.0, 250.0, 12.5, 0.05)] == ["0", "250", "12.5", "0.05"]


def test_robust_extent_is_not_flattened_by_artefacts():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 10.0, 20000)
    x[5000:5080] = 5000.0  # stimulation artefact that got through (0.4 %)
    keep = np.ones(x.size, dtype=bool)
    keep[4990:5300] = False
    assert 20 < robust_extent(x, keep) < 35
    assert robust_extent(x) < 100  # even unmasked, the 99.5th percentile ignores it
    assert np.isnan(robust_extent(np.full(10, np.nan)))
