"""ImpulseGate: raw stretches far outside a channel's learnt range, found from their
first sample, told apart (impulse, level shift, activity, held excursions and absurd
values), and chunk-invariant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.core.impulses import ImpulseGate

FS = 2000.0
REST = 5e-6  # volts, white noise: range (largest 50 ms peak-to-peak) ~ 35 uV


def rest(seconds: float, nch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, REST, size=(int(seconds * FS), nch))


def feed(gate: ImpulseGate, x: np.ndarray, sizes=(20,), exempt=None, bad=None):
    """Hold and ended masks and every record, for ``x`` fed in chunks of ``sizes``."""
    holds, ends, records = [], [], []
    a = k = 0
    while a < x.shape[0]:
        b = min(x.shape[0], a + sizes[k % len(sizes)])
        h, e = gate.process(x[a:b], a, None if exempt is None else exempt[a:b],
                            None if bad is None else bad[a:b])
        if h is None:  # nothing held or ended in this chunk
            h = e = np.zeros((b - a, x.shape[1]), dtype=bool)
        holds.append(h)
        ends.append(e)
        records += gate.pop_records()
        a, k = b, k + 1
    return np.vstack(holds), np.vstack(ends), records


def at(t: float) -> int:
    return int(round(t * FS))


def test_a_short_transient_is_held_from_its_first_sample_and_ended_after_it():
    x = rest(2.0)
    a = at(1.0)
    x[a : a + 20, 0] += 2e-3  # 10 ms at ~60x the range
    hold, ended, records = feed(ImpulseGate(FS, 2), x)
    gap = ImpulseGate(FS, 2).gap
    assert not hold[:a].any() and not hold[:, 1].any()
    assert hold[a : a + 20 + gap, 0].all() and not hold[a + 20 + gap :, 0].any()
    assert np.flatnonzero(ended[:, 0]).tolist() == [a + 19 + gap]  # restart after it
    (r,) = records
    assert (r.what, r.channel, r.start, r.last, r.absurd) == ("impulse", 0, a, a + 19, False)
    assert 30 < r.ratio < 120


@pytest.mark.parametrize("value", [5.0, 1e10, 1e99])
def test_absurd_values_are_an_impulse_that_says_so(value):
    """1e6 times the noise, 1e10, 1e99: never activity, whatever their length."""
    x = rest(2.0)
    a = at(1.0)
    x[a : a + 20, 1] = value
    _, ended, records = feed(ImpulseGate(FS, 2), x)
    (r,) = records
    assert (r.what, r.channel, r.start, r.absurd) == ("impulse", 1, a, True)
    assert ended[:, 1].sum() == 1
    # ... and 0.2 s of them, swinging: never activity, held throughout, said when it is
    # decided and when over
    x = rest(2.0)
    x[a : a + 400, 1] = value * np.sign(np.random.default_rng(1).standard_normal(400))
    hold, ended, records = feed(ImpulseGate(FS, 2), x)
    assert [(r.what, r.absurd) for r in records] == [("held", True), ("over", True)]
    assert hold[a : a + 400, 1].all() and ended[:, 1].sum() == 1


def test_a_slow_excursion_is_held_until_it_is_over():
    """A knock with a slow tail (2 mV decaying with 30 ms): not EMG (it swings slower
    than 20 Hz), held past ``impulse_ms`` until it is back near the level."""
    x = rest(2.0)
    a = at(1.0)
    t = np.arange(at(0.5)) / FS
    x[a : a + t.size, 0] += 2e-3 * np.exp(-t / 0.03)
    gate = ImpulseGate(FS, 2)
    hold, ended, records = feed(gate, x)
    assert [(r.what, r.absurd) for r in records][0] == ("held", False)
    assert [r.what for r in records][1:] in (["over"], ["shift"])  # or it settled first
    end = np.flatnonzero(ended[:, 0]).tolist()
    assert len(end) == 1 and hold[a : end[0] + 1, 0].all() and not hold[end[0] + 1 :, 0].any()
    assert 0.05 < (end[0] - a) / FS < 0.2


def test_a_level_shift_restarts_at_the_new_level_and_is_learnt():
    x = rest(2.0)
    a = at(1.0)
    x[a:, 0] += 3e-3  # the electrode moved: 3 mV of offset, the same noise on top
    gate = ImpulseGate(FS, 2)
    hold, ended, records = feed(gate, x)
    (r,) = records
    assert (r.what, r.start) == ("shift", a)
    assert r.level_to - r.level_from == pytest.approx(3e-3, rel=0.05)
    k = np.flatnonzero(ended[:, 0]).tolist()
    assert k == [a + gate.decide - 1]
    assert hold[a : k[0] + 1, 0].all() and not hold[k[0] + 1 :, 0].any()
    assert gate.level[0] == pytest.approx(3e-3, abs=3e-5)


@pytest.mark.parametrize("strength", [60, 100, 300])
def test_a_contraction_far_above_the_range_is_released_and_learnt(strength):
    """A first contraction 60-300x stronger than rest noise, at once (no ramp), is
    activity, not an impulse: held for ``impulse_ms`` only (never chopped into
    impulses), then learnt, so the next one is not held at all. (30x: its samples stay
    within 20x the range, nothing is held.)"""
    x = rest(6.0, nch=1)
    rng = np.random.default_rng(2)
    for t in (2.0, 4.0):
        x[at(t) : at(t + 1.0), 0] += rng.normal(0.0, strength * REST, at(1.0))
    gate = ImpulseGate(FS, 1)
    hold, ended, records = feed(gate, x)
    assert [r.what for r in records] == ["sustained"]
    held = np.flatnonzero(hold[:, 0])
    assert held[0] >= at(2.0) and held.size == gate.decide - 1
    assert np.array_equal(held, np.arange(held[0], held[0] + held.size))
    assert not ended.any()
    assert gate.range[0] > strength * 4 * REST  # learnt from the contraction


def test_stimulation_and_bad_samples_never_start_a_stretch():
    x = rest(2.0)
    a = at(1.0)
    x[a : a + 20, :] += 2e-3
    exempt = np.zeros(x.shape[0], dtype=bool)
    exempt[a - 10 : a + 40] = True  # a stimulation pulse and its blanking
    bad = np.zeros(x.shape, dtype=bool)
    hold, ended, records = feed(ImpulseGate(FS, 2), x, exempt=exempt, bad=bad)
    assert records == [] and not hold.any() and not ended.any()
    bad[a - 10 : a + 40, 1] = True  # another check holds the triceps
    hold, _, records = feed(ImpulseGate(FS, 2), x, bad=bad)
    assert [r.channel for r in records] == [0] and not hold[:, 1].any()


def test_nothing_before_the_range_is_known_nor_when_disabled():
    x = rest(1.0)
    x[10:30, 0] = 1e10  # in the first block: nothing learnt yet
    hold, ended, records = feed(ImpulseGate(FS, 2), x)
    assert records == [] and not hold.any()
    x[at(0.5) : at(0.5) + 20, 0] = 1e10
    assert feed(ImpulseGate(FS, 2, ratio=0.0), x)[2] == []


# -- chunk invariance -----------------------------------------------------------------------
def _troubled() -> tuple[np.ndarray, np.ndarray]:
    x = rest(4.0, nch=3, seed=5)
    rng = np.random.default_rng(6)
    x[at(0.6) : at(0.6) + 20, 0] += 2e-3  # impulse
    x[at(0.9) : at(0.9) + 3, 1] = 1e10  # absurd
    x[at(1.3) :, 2] += 4e-3  # level shift
    x[at(2.0) : at(2.6), 0] += rng.normal(0.0, 80 * REST, at(0.6))  # strong contraction
    x[at(2.2) : at(2.2) + 400, 1] = -1e9  # long absurd stretch
    x[at(3.0) : at(3.0) + 6, 2] -= 1e-3  # impulse at the new level
    exempt = np.zeros(x.shape[0], dtype=bool)
    exempt[at(3.5) : at(3.6)] = True
    x[at(3.52) : at(3.53), :] += 5e-3  # under stimulation: never flagged
    return x, exempt


X, EXEMPT = _troubled()
WHOLE = feed(ImpulseGate(FS, 3), X, sizes=(X.shape[0],), exempt=EXEMPT)


def test_the_troubled_stream_has_every_kind_of_stretch():
    assert [(r.what, r.channel) for r in WHOLE[2]] == [
        ("impulse", 0), ("impulse", 1), ("shift", 2), ("sustained", 0), ("held", 1),
        ("over", 1), ("impulse", 2)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=12))
def test_random_chunkings_give_identical_results(sizes):
    hold, ended, records = feed(ImpulseGate(FS, 3), X, sizes=sizes, exempt=EXEMPT)
    np.testing.assert_array_equal(hold, WHOLE[0])
    np.testing.assert_array_equal(ended, WHOLE[1])
    assert records == WHOLE[2]


def test_whole_quiet_blocks_learn_as_block_by_block_to_the_bit():
    """Large chunks learn the level and range of their quiet blocks all at once; a long
    stream with drift, offsets and a few stretches leaves the gate in exactly the state
    that 1- and 37-sample chunks (block by block, sample by sample) leave it in."""
    rng = np.random.default_rng(11)
    n = at(30.0)
    x = rng.normal(0.0, REST, (n, 4)) * rng.uniform(0.5, 3.0, 4)
    x += np.linspace(0.0, 3e-4, n)[:, None] + np.array([1e-3, -2.0, 0.0, 5e2])  # offsets
    x[at(7.0) : at(7.0) + 10, 1] += 3e-3  # an impulse between quiet stretches
    x[at(19.0) :, 3] += 1e-2  # a level shift
    exempt = np.zeros(n, dtype=bool)
    exempt[at(12.0) : at(12.3)] = True
    gates = []
    for sizes in ((n,), (1,), (37,), (4000, 3, 999)):
        gate = ImpulseGate(FS, 4)
        gates.append((gate, feed(gate, x, sizes=sizes, exempt=exempt)))
    (ref, out), others = gates[0], gates[1:]
    for gate, got in others:
        np.testing.assert_array_equal(gate.level, ref.level)
        np.testing.assert_array_equal(gate.range, ref.range)
        np.testing.assert_array_equal(got[0], out[0])
        assert got[2] == out[2]
    assert [r.what for r in out[2]] == ["impulse", "shift"]
