"""Recordings keep the EMG in the source's own sample format (float32 for most
amplifiers, double64 where the source delivers double), the envelope in float32, and a
float32 stream's counter modulo 2**24, which every reader unwraps to the exact index."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.core.events import Block
from closedloop.core.stream import SourceInfo, sample_format
from closedloop.io.outlets import COUNTER_WRAP, SessionOutlets, unwrap_counter
from closedloop.io.recorder import verify_recording
from closedloop.io.xdf import load_session, read_xdf
from closedloop.io.xdfwrite import SessionFile
from closedloop.sim.patient import PatientSettings
from closedloop.sources.sim import SimSource

FS = 1000.0


def info(fmt: str) -> SourceInfo:
    return SourceInfo("amp", FS, ("biceps", "triceps"), "uV", "lsl", sample_format=fmt)


def record(path, fmt: str, x: np.ndarray, start: int = 0) -> dict[str, int]:
    """``x`` pushed as a session's EMG (and its envelope), from pipeline index ``start``,
    written straight into ``path``; the counts pushed per stream."""
    with SessionFile(path) as file:
        out = SessionOutlets("S", info(fmt), outlet_factory=file.outlet)
        for a in range(0, x.shape[0], 50):
            k = start + a
            seg = x[a:a + 50]
            ts = 100.0 + (k + np.arange(seg.shape[0])) / FS
            out.push_emg(seg, ts, start=k)
            out.push_block(Block(k, ts, seg, np.abs(seg), np.zeros(seg.shape, bool),
                                 np.ones(2), np.ones(2), [], ("biceps", "triceps")))
        return out.counts


@pytest.mark.parametrize("channel_format, fmt", [
    ("float32", "float32"), ("int16", "float32"), ("int8", "float32"),
    ("double64", "double64"), ("int32", "double64"), ("int64", "double64")])
def test_the_recording_format_holds_every_value_of_the_source_exactly(channel_format, fmt):
    assert sample_format(channel_format) == fmt


@pytest.mark.parametrize("fmt", ["float32", "double64"])
def test_emg_is_recorded_in_the_sources_format_and_read_back_exactly(tmp_path, fmt):
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 30.0, (2000, 2))
    if fmt == "float32":
        x = x.astype(np.float32).astype(np.float64)  # what a float32 amplifier delivers
    x[700, 1] = np.nan  # kept as received
    counts = record(tmp_path / "s.xdf", fmt, x)
    formats = {s["info"]["name"][0]: s["info"]["channel_format"][0]
               for s in read_xdf(tmp_path / "s.xdf").streams}
    assert formats["S-EMG"] == fmt and formats["S-Envelope"] == "float32"
    s = load_session(tmp_path / "s.xdf")
    assert s.complete and s.sample_format == fmt and s.source_info.sample_format == fmt
    assert s.received.dtype == np.dtype(np.float32 if fmt == "float32" else np.float64)
    np.testing.assert_array_equal(s.received, x)  # bit for bit, NaN where it was
    np.testing.assert_array_equal(s.counter, np.arange(2000))
    assert verify_recording(tmp_path / "s.xdf", counts).ok


def test_a_float32_counter_wraps_and_reads_back_as_the_exact_index(tmp_path):
    start = COUNTER_WRAP - 1234  # the session is 2.3 h old at 2 kHz
    x = np.random.default_rng(2).normal(0.0, 1.0, (3000, 2)).astype(np.float32)
    record(tmp_path / "s.xdf", "float32", x.astype(np.float64), start=start)
    raw = read_xdf(tmp_path / "s.xdf").streams[0]["time_series"][:, 2]
    assert raw.max() < COUNTER_WRAP and raw[1234] == 0.0  # stored modulo 2**24, exactly
    s = load_session(tmp_path / "s.xdf")
    assert s.complete, s.damage_report
    np.testing.assert_array_equal(s.counter, start + np.arange(3000))


def test_samples_lost_across_the_wrap_are_still_found():
    k = np.arange(COUNTER_WRAP - 5, COUNTER_WRAP + 5, dtype=np.int64)
    stored = (k % COUNTER_WRAP).astype(np.float32)
    np.testing.assert_array_equal(unwrap_counter(stored, "float32"), k)
    lost = np.delete(stored, 6)  # one sample lost just after the wrap
    got = unwrap_counter(lost, "float32")
    assert np.flatnonzero(np.diff(got) != 1).tolist() == [5]
    back = np.concatenate([stored[:5], stored[:5]])  # the counter went back: no new lap
    assert unwrap_counter(back, "float32")[5] == k[0]
    assert unwrap_counter(stored, "double64")[5] == 0.0  # double counters are as stored


def test_the_simulated_patient_streams_float32_like_an_amplifier():
    src = SimSource(PatientSettings(fs=2000.0, muscles=("a", "b")), realtime=False)
    with src:
        chunk = src.read(1.0)
        assert src.info.sample_format == "float32"
    assert chunk.samples.dtype == np.float64
    np.testing.assert_array_equal(chunk.samples.astype(np.float32), chunk.samples)
