"""The simulated source hands out the patient's ground truth with every chunk: the same for
any chunk size, and the pulses it reports are the ones the simulated stimulator gave."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.sim.patient import Attempt, MWaveModel, PatientSettings
from closedloop.sources.sim import SimChunk, SimSource
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.sim import SimStimulator

FS = 2000.0


def session(chunk: int, seconds: float = 3.0):
    """Chunks of a source whose stimulator switches the biceps on at sample 2100 and off
    at 4200 (each command at the source's clock, as the live loop does)."""
    stim = SimStimulator()
    ps = PatientSettings(fs=FS, mwave=MWaveModel(), passive=True)
    src = SimSource(ps, [Attempt("biceps", 0.5, 2.0, 0.8, 0.05)], seed=4, realtime=False,
                    chunk_size=chunk, stimulator=stim, stim_channels={1: "biceps"})
    chunks = []
    with stim, src:
        while src.position < seconds * FS:
            if src.position in (2100, 4200):
                on = src.position == 2100
                stim.apply([StimCommand("biceps", 1, 25.0 if on else 0.0, 250.0, 35.0,
                                        src.position - 1, src.now(), "plateau")])
            chunks.append(src.read(1.0))
    return src, chunks


@pytest.mark.parametrize("chunk", [7, 20])
def test_every_chunk_carries_its_truth(chunk):
    src, chunks = session(chunk)
    assert all(isinstance(c, SimChunk) and c.truth is not None for c in chunks)
    for c in chunks:
        assert c.truth.start == c.counter[0]
        assert c.truth.drive.shape == c.samples.shape
    got = [p for c in chunks for p in c.truth.pulses]
    sent = src.t0 + 2100 / FS + np.arange(37) / 35.0  # where the stimulator put them
    np.testing.assert_allclose([src.t0 + p.time for p in got], sent, rtol=0, atol=1e-9)
    assert all(p.muscle == "biceps" and p.current_ma == 25.0 and p.mwave_pp > 0 for p in got)
    assert [o for c in chunks for o in c.truth.onsets] == [(1000, "biceps")]
    drive = np.vstack([c.truth.drive for c in chunks])[:, 0]
    assert drive[1500] == 0.8 and drive[2300] == 0.0  # the passive patient stops trying


def test_the_truth_is_the_same_whatever_the_chunk_size():
    _, a = session(7)
    _, b = session(20)
    n = min(sum(c.n for c in a), sum(c.n for c in b))
    np.testing.assert_array_equal(np.vstack([c.samples for c in a])[:n],
                                  np.vstack([c.samples for c in b])[:n])
    np.testing.assert_array_equal(np.vstack([c.truth.drive for c in a])[:n],
                                  np.vstack([c.truth.drive for c in b])[:n])
    assert [p for c in a for p in c.truth.pulses] == [p for c in b for p in c.truth.pulses]
