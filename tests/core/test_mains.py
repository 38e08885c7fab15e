"""The mains-hum check: a usable recording passes, a hum-dominated channel is flagged
from a block boundary on and recovers after clean blocks; chunking changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.core.blanking import ArtifactSettings
from closedloop.core.mains import HumCheck
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient

FS = 2000.0


CONTRACTION = (Attempt("biceps", 2.0, 2.0),)


def emg(seconds: float, *, hum_rms: float = 10e-6, mains: float = 50.0, seed: int = 1,
        script=CONTRACTION) -> np.ndarray:
    ps = PatientSettings(fs=FS, hum_rms=hum_rms, mains_hz=mains)
    return SimulatedPatient(ps, script, seed=seed).read(int(seconds * FS)).T.copy()


def check(x: np.ndarray, sizes=(37,), mains: float = 50.0, skip=None,
          **kw) -> tuple[np.ndarray, HumCheck]:
    h = HumCheck(ArtifactSettings(**kw), FS, x.shape[0], mains, (20.0, 450.0))
    out, i, k = [], 0, 0
    while i < x.shape[1]:
        n = sizes[k % len(sizes)]
        out.append(h.process(x[:, i : i + n], i, None if skip is None else skip[i : i + n]))
        i, k = i + n, k + 1
    return np.vstack(out), h


def test_a_usable_recording_is_never_flagged_even_during_contraction():
    flags, h = check(emg(6.0))
    assert not flags.any()
    assert np.all(h.last_db < 20.0)


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_a_hum_dominated_channel_is_flagged_from_the_first_block_boundary(mains):
    x = emg(3.0, hum_rms=1e-3, mains=mains)
    flags, h = check(x, mains=mains)
    first = int(np.flatnonzero(flags[:, 0])[0])
    assert first == h.block  # decided at the end of the first block, in force from there
    assert flags[first:].all()
    changes = h.pop_changes()
    assert changes[0][:3] == (h.block, 0, True) and changes[0][3] > 30.0


def test_recovery_after_clean_blocks_and_chunk_invariance():
    loud, quiet = emg(2.0, hum_rms=1e-3), emg(4.0, seed=2)
    x = np.concatenate([loud, quiet], axis=1)  # the electrode is fixed at 2.0 s
    ref, h = check(x, sizes=(x.shape[1],))
    onset = int(np.flatnonzero(~ref[:, 0] & (np.arange(x.shape[1]) > 4000))[0])
    # the first clean block ends after 2.0 s; hum_recover_s (1 s) of clean blocks follow
    assert 2.0 * FS + 1.0 * FS <= onset <= 2.0 * FS + 1.0 * FS + 2 * h.block
    for sizes in [(1,), (7, 400), (1000,)]:
        got, _ = check(x, sizes=sizes)
        np.testing.assert_array_equal(got, ref)


def test_blocks_under_stimulation_are_not_judged():
    x = emg(2.0, hum_rms=1e-3)
    skip = np.zeros(x.shape[1], dtype=bool)
    skip[::57] = True  # a pulse in every block
    flags, _ = check(x, skip=skip)
    assert not flags.any()


def test_disabled_by_zero_limit_or_without_mains():
    x = emg(1.0, hum_rms=1e-3)
    assert not check(x, hum_db=0.0)[0].any()
    assert not check(x, mains=0.0)[0].any()


def test_whole_blocks_judge_as_block_by_block_to_the_bit():
    """A large chunk takes the spectra of all its whole blocks at once: the ratios (dB,
    to the bit), the changes and the flags are the ones block-by-block chunks give,
    with blocks under stimulation left unjudged in both."""
    x = np.concatenate([emg(2.0, hum_rms=1e-3), emg(3.0, seed=2)], axis=1)
    x = np.vstack([x, 0.5 * x[::-1], x * 3.0])  # three channels
    skip = np.zeros(x.shape[1], dtype=bool)
    skip[5000:5300] = True
    runs = []
    for sizes in ((x.shape[1],), (1,), (7, 400), (800, 13)):
        flags, h = check(x, sizes=sizes, skip=skip)
        runs.append((flags, h.pop_changes(), h.last_db))
    assert runs[0][1]  # something changed
    for flags, changes, last in runs[1:]:
        np.testing.assert_array_equal(flags, runs[0][0])
        assert changes == runs[0][1]
        np.testing.assert_array_equal(last, runs[0][2])
