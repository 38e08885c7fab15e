"""The evoked-response (M-wave) stream: every record a session measures is published on
its own stream, recorded, and read back by :func:`~closedloop.io.xdf.load_session`
exactly (the averaged waveform included, NaN kept as NaN)."""

from __future__ import annotations

import math

import numpy as np

from closedloop.core.events import Block
from closedloop.core.evoked import MWave
from closedloop.core.stream import SourceInfo
from closedloop.io.outlets import SessionOutlets, decode_mwave, encode_mwave
from closedloop.io.xdf import load_session, read_xdf
from closedloop.io.xdfwrite import SessionFile

FS = 1000.0


def mwave(k: int, present: bool = True) -> MWave:
    wave = np.sin(np.arange(30) / 3.0) * (100e-6 + k * 1e-6)
    return MWave(sample=1000 * (k + 1) + 25, time=100.0 + (1000 * (k + 1) + 25) / FS,
                 muscle="biceps", channel=1, first_sample=1000 * k,
                 last_sample=1000 * k + 960, n_pulses=35, current_ma=20.0 + k,
                 pulse_width_us=250.0, peak_to_peak=float(np.ptp(wave)),
                 area=float(np.abs(wave).sum() / FS),
                 latency_s=0.004 if present else math.nan,
                 end_s=0.021 if present else math.nan, noise=2e-6, present=present,
                 offset_s=0.002, waveform=wave)


def same(a: MWave, b: MWave) -> bool:
    return a == b and np.array_equal(a.waveform, b.waveform, equal_nan=True)


def test_a_record_survives_its_json_with_nan_and_the_waveform():
    m = mwave(3, present=False)
    m = MWave(**{**m.__dict__, "waveform": np.r_[m.waveform[:5], np.nan, m.waveform[6:]]})
    seq, back = decode_mwave(encode_mwave(m, 7))
    assert seq == 7 and same(back, m) and math.isnan(back.latency_s)


def test_the_session_records_its_mwaves_and_load_session_reads_them(tmp_path):
    info = SourceInfo("amp", FS, ("biceps", "triceps"), "V", "lsl")
    records = [mwave(k, present=k != 2) for k in range(5)]
    path = tmp_path / "s.xdf"
    with SessionFile(path) as file:
        out = SessionOutlets("S", info, outlet_factory=file.outlet, with_filtered=False)
        x = np.random.default_rng(0).normal(0.0, 1e-5, (6000, 2))
        for a in range(0, x.shape[0], 500):
            seg, ts = x[a:a + 500], 100.0 + (a + np.arange(500)) / FS
            out.push_emg(seg, ts, start=a)
            out.push_block(Block(a, ts, seg, np.abs(seg), np.zeros(seg.shape, bool),
                                 np.ones(2), np.ones(2), [], ("biceps", "triceps")))
            out.push_mwaves([m for m in records if a <= m.sample < a + 500])
    names = {s["info"]["name"][0]: s["info"]["type"][0] for s in read_xdf(path).streams}
    assert names["S-MWave"] == "MWave"
    s = load_session(path)
    assert s.complete and len(s.mwaves) == len(records)
    assert all(same(a, b) for a, b in zip(s.mwaves, records, strict=True))
