"""The Source contract: every source says where it is (``position``) and whether it has
delivered all it ever will (``exhausted``), honestly, with real parts.

``position`` is the number of samples delivered since ``open()``; ``exhausted`` is True
only for a source with an end (a recording, a BrainFlow playback file) once it is there.
A source class that does not say cannot be built at all.
"""

from __future__ import annotations

import time

import pytest

from closedloop.sim.patient import PatientSettings
from closedloop.sources.base import Source
from closedloop.sources.brainflow import BrainFlowSource
from closedloop.sources.lsl import LslSource
from closedloop.sources.replay import ReplaySource
from closedloop.sources.sim import SimSource
from tests.conftest import ROOT
from tests.sources.test_brainflow import _record_synthetic
from tests.sources.test_lsl import expected_block, make_outlet, unique


def _drain(source: Source, until, seconds: float = 20.0) -> int:
    """Read until ``until(delivered)`` or the deadline; return the samples delivered by
    this call (``position`` must count every one of them)."""
    start, delivered, deadline = source.position, 0, time.monotonic() + seconds
    while not until(delivered) and time.monotonic() < deadline:
        chunk = source.read(0.05)
        if chunk is not None:
            delivered += chunk.n
            assert source.position == start + delivered
    return delivered


def test_a_source_that_does_not_say_where_it_is_cannot_be_built():
    class Silent(Source):
        def read(self, timeout):
            return None

    with pytest.raises(TypeError, match="exhausted.*position|position.*exhausted"):
        Silent()


def test_a_recording_is_exhausted_at_its_end_and_not_before():
    with ReplaySource(ROOT / "recordings" / "sim_biceps_triceps.xdf") as src:
        assert src.position == 0 and not src.exhausted
        n = _drain(src, lambda k: k >= 1000)
        assert not src.exhausted and src.position == n
        _drain(src, lambda k: src.exhausted)
        assert src.exhausted and src.position == src.session.n
        assert src.read(0.01) is None


def test_the_simulated_patient_never_ends():
    src = SimSource(PatientSettings(fs=2000.0, muscles=("a", "b")), realtime=False,
                    chunk_size=50)
    with src:
        assert _drain(src, lambda k: k >= 4000) == 4000
        assert not src.exhausted


def test_a_live_lsl_stream_counts_what_it_delivered_and_never_ends():
    name = unique("contract")
    outlet = make_outlet(name)
    with LslSource(name=name, resolve_timeout=10.0) as src:
        outlet.push_chunk(expected_block(0, 500).tolist())
        assert _drain(src, lambda k: k >= 500) == 500
        assert not src.exhausted
    del outlet


def test_a_brainflow_playback_file_is_exhausted_once_delivered(tmp_path):
    path = tmp_path / "synthetic.csv"
    data = _record_synthetic(path, 0.5)
    src = BrainFlowSource("playback", {"file": str(path), "master_board": "synthetic"})
    with src:
        assert not src.exhausted
        _drain(src, lambda k: src.exhausted)
        assert src.exhausted and src.position == data.shape[1]


def test_a_live_brainflow_board_never_ends():
    with BrainFlowSource("synthetic") as src:
        assert _drain(src, lambda k: k >= 100) >= 100
        assert not src.exhausted
