"""The held-value check: a channel that stops moving is marked within a few samples,
while coarse ADCs, streams upsampled by repetition and stimulation artifacts are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.core.held import HeldValueCheck
from closedloop.io.files import load_emg

FS = 2000.0
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def noise(n: int, nch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1e-5, size=(n, nch))


def marks(check: HeldValueCheck, x: np.ndarray, exempt=None, size: int | None = None):
    """Feed ``x`` in chunks of ``size``; return the mask and the issues as tuples."""
    size = size or x.shape[0]
    masks, issues = [], []
    for a in range(0, x.shape[0], size):
        ex = None if exempt is None else exempt[a : a + size]
        m, found = check.check(x[a : a + size], ex)
        masks.append(m)
        issues += [(i.kind.value, i.channel, i.sample) for i in found]
    return np.vstack(masks), issues


def test_a_rail_step_is_marked_after_four_identical_samples():
    x = noise(4000)
    x[2000:2300, 0] = 5e-3
    check = HeldValueCheck(FS, ("biceps", "triceps"), "V")
    m, found = check.check(x)
    assert [(i.kind.value, i.channel, i.sample) for i in found] == [
        ("held", "biceps", 2003), ("recovered", "biceps", 2300)]
    assert "the same value (0.005 V) 4 times in a row at sample 2003" in found[0].message
    assert "electrode contact" in found[0].message
    assert np.flatnonzero(m[:, 0]).tolist() == list(range(2003, 2300))
    assert not m[:, 1].any()


def test_a_freeze_at_an_ordinary_value_is_marked_too():
    x = noise(4000)
    x[3000:3500, 1] = x[3000, 1]
    assert marks(HeldValueCheck(FS, ("a", "b")), x)[1] == [
        ("held", "b", 3003), ("recovered", "b", 3500)]


def test_a_stream_upsampled_by_repetition_teaches_its_hold():
    """Every value 5 times: holds of 4 repeats are normal, so a mark needs 9."""
    x = np.repeat(noise(1000, 1), 5, axis=0)
    check = HeldValueCheck(FS, ("a",))
    assert marks(check, x)[1] == []
    assert check.longest().tolist() == [4]
    y = np.repeat(noise(1000, 1, seed=1), 5, axis=0)
    y[3000:3100, 0] = 1.0
    assert marks(check, y)[1] == [("held", "a", 8009), ("recovered", "a", 8100)]  # 5000 on


def test_a_coarse_adc_is_not_marked():
    """12-bit counts at rest repeat often; the check learns how often."""
    x = np.round(np.random.default_rng(2).normal(2048.0, 1.5, size=(20000, 1)))
    check = HeldValueCheck(1000.0, ("a",), "counts")
    assert marks(check, x, size=20)[1] == []
    assert check.longest()[0] >= 2


def test_nothing_is_marked_before_it_is_armed_but_the_hold_is_learnt():
    x = noise(1000, 1)
    x[100:110, 0] = x[100, 0]  # 9 repeats, before the check is armed at 0.2 s (400)
    x[600:610, 0] = 1.0  # 9 repeats again: no longer than learnt
    x[800:820, 0] = 2.0  # 19 repeats: marked at the 19th (2 * 9 + 1)
    check = HeldValueCheck(FS, ("a",), arm_seconds=0.2)
    assert marks(check, x)[1] == [("held", "a", 819), ("recovered", "a", 820)]
    assert check.longest().tolist() == [9]  # the marked hold was not learnt


def test_exempt_samples_neither_mark_nor_teach():
    """Stimulation pins the amplifier for a few samples at each pulse: exempt, so no
    mark and nothing learnt; a hold that goes on past the exemption is marked at once."""
    x = noise(6000, 1)
    exempt = np.zeros(6000, dtype=bool)
    for p in range(1000, 3000, 57):  # pulses, each pinning the input for 6 samples
        x[p : p + 6, 0] = 3e-3
        exempt[p : p + 8] = True
    x[4000:4200, 0] = 3e-3  # pinned at 4000, exempt until 4050
    exempt[3990:4050] = True
    check = HeldValueCheck(FS, ("a",))
    m, found = marks(check, x, exempt, size=7)
    assert found == [("held", "a", 4050), ("recovered", "a", 4200)]
    assert check.longest().tolist() == [0]


def test_a_marked_hold_stays_marked_when_exemption_starts():
    x = noise(3000, 1)
    x[1000:1500, 0] = 1.0
    exempt = np.zeros(3000, dtype=bool)
    exempt[1100:1200] = True
    m, found = marks(HeldValueCheck(FS, ("a",)), x, exempt)
    assert found == [("held", "a", 1003), ("recovered", "a", 1500)]
    assert m[1003:1500, 0].all()


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    quantum=st.sampled_from([0.0, 0.5, 2.0]),
    hold=st.integers(1, 4),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=8),
)
def test_any_chunking_gives_the_same_marks(seed, quantum, hold, sizes):
    rng = np.random.default_rng(seed)
    n = 1500
    x = np.repeat(rng.normal(0.0, 3.0, size=(n // hold + 1, 2)), hold, axis=0)[:n]
    if quantum:
        x = np.round(x / quantum) * quantum
    exempt = np.zeros((n, 2), dtype=bool)
    for _ in range(4):
        a, length, c = int(rng.integers(0, n)), int(rng.integers(1, 80)), int(rng.integers(2))
        if rng.random() < 0.5:
            x[a : a + length, c] = rng.choice([x[a, c], 99.0, np.nan])
        else:
            exempt[a : a + length, c] = True
    whole = marks(HeldValueCheck(FS, ("a", "b"), arm_seconds=0.05), x, exempt)
    check = HeldValueCheck(FS, ("a", "b"), arm_seconds=0.05)
    masks, issues, a, k = [], [], 0, 0
    while a < n:
        b = min(n, a + sizes[k % len(sizes)])
        m, found = check.check(x[a:b], exempt[a:b])
        masks.append(m)
        issues += [(i.kind.value, i.channel, i.sample) for i in found]
        a, k = b, k + 1
    np.testing.assert_array_equal(np.vstack(masks), whole[0])
    assert issues == whole[1]


FILES = [
    ("bmc_emg.csv", {"fs": 1000.0, "columns": [1]}),
    ("biosppy_emg.txt", {"fs": 1000.0}),
    ("biosppy_emg_1.txt", {"fs": 1000.0}),
    ("uci_lowerlimb_5Npie.txt", {"fs": 1000.0, "columns": [0, 1, 2, 3]}),
    ("uci_gestures_s10_1_raw_data_11-08_21.03.16.txt",
     {"fs": 1000.0, "columns": list(range(1, 9))}),
]


@pytest.mark.parametrize(("name", "kw"), FILES, ids=[f[0] for f in FILES])
def test_real_recordings_are_never_marked(name, kw):
    """Float amplifiers, 12-bit counts, 1-µV steps and an 8-bit armband upsampled ~9x."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is missing (the shared data beside the project)")
    d = load_emg(DATA / name, **kw)
    m, found = marks(HeldValueCheck(d.fs, d.channels), d.samples, size=20)
    assert found == [] and not m.any()


def test_a_real_recording_that_freezes_at_its_end_is_marked():
    """uci_lowerlimb_5Nsen.txt ends with the same row 15 times (the logger stopped)."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is missing (the shared data beside the project)")
    d = load_emg(DATA / "uci_lowerlimb_5Nsen.txt", fs=1000.0, columns=[0, 1, 2, 3])
    m, found = marks(HeldValueCheck(d.fs, d.channels), d.samples, size=20)
    assert {c for _, c, _ in found} == set(d.channels)
    assert min(s for _, _, s in found) >= d.samples.shape[0] - 15
