"""ReplaySource: a live BrainFlow session recorded by LabRecorder replays sample for sample."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.checks import InputMonitor
from closedloop.core.stream import Chunk
from closedloop.errors import ConfigError, InputError
from closedloop.io.outlets import SessionOutlets
from closedloop.io.recorder import XdfRecorder, verify_recording
from closedloop.sources.brainflow import BrainFlowSource
from closedloop.sources.replay import ReplaySource, parse_speed


@dataclasses.dataclass
class Live:
    path: Path
    samples: np.ndarray
    timestamps: np.ndarray
    counter: np.ndarray
    issues: list
    fs: float
    channels: tuple[str, ...]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Live:
    """1.6 s of the synthetic board, cleaned by the monitor, published and recorded."""
    path = tmp_path_factory.mktemp("replay") / "live.xdf"
    src = BrainFlowSource("synthetic", {}, channels=[1, 2], labels=["biceps", "triceps"])
    chunks: list[Chunk] = []
    issues = []
    with src:
        monitor = InputMonitor(src.info)
        name = f"R{uuid.uuid4().hex[:8]}"
        with SessionOutlets(name, src.info, with_envelope=False) as out:
            with XdfRecorder(path, out.recorder_predicates()) as rec:
                end = time.perf_counter() + 1.6
                while time.perf_counter() < end:
                    c = src.read(0.05)
                    if c is None:
                        continue
                    checked = monitor.check(c)
                    issues += checked.issues
                    out.push_chunk(checked.chunk, start=checked.start)
                    chunks.append(checked.chunk)
                    rec.check()
            counts = out.counts
    report = verify_recording(path, counts)
    assert report.ok, report.summary()
    return Live(
        path=path,
        samples=np.concatenate([c.samples for c in chunks]),
        timestamps=np.concatenate([c.timestamps for c in chunks]),
        counter=np.concatenate([c.counter for c in chunks]),
        issues=issues,
        fs=src.info.fs,
        channels=src.info.channels,
    )


def drain(src: ReplaySource) -> list[Chunk]:
    chunks = []
    while not src.exhausted:
        c = src.read(1.0)
        if c is not None:
            chunks.append(c)
    return chunks


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_fast_replay_gives_back_exactly_what_the_live_session_saw(
    live: Live, chunk_size: int
) -> None:
    with ReplaySource(live.path, chunk_size=chunk_size) as src:
        assert src.info.fs == live.fs and src.info.channels == live.channels
        assert src.info.kind == "replay" and src.info.units == "uV"
        chunks = drain(src)
        assert src.read(0.01) is None  # the end: nothing more, no error
    assert all(c.n <= chunk_size for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), live.samples)
    np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), live.timestamps)
    # the recorded counter is the pipeline's sample index
    np.testing.assert_array_equal(
        np.concatenate([c.counter for c in chunks]), np.arange(live.samples.shape[0])
    )
    # the same checks give the same verdicts
    monitor = InputMonitor(src.info)
    replay_issues = [i for c in chunks for i in monitor.check(c).issues]
    assert [(i.kind, i.sample) for i in replay_issues] == [(i.kind, i.sample) for i in live.issues]


def test_realtime_pacing_follows_the_clock(live: Live) -> None:
    n = live.samples.shape[0]
    speed = 4.0
    with ReplaySource(live.path, speed=speed, chunk_size=25) as src:
        t0 = time.perf_counter()
        first = src.read(1.0)
        assert first is not None
        lags = []
        got = first.n
        while not src.exhausted:
            c = src.read(1.0)
            if c is None:
                continue
            got += c.n
            # each chunk arrives when its last sample is due, never early
            due = got / (live.fs * speed)
            lags.append(time.perf_counter() - t0 - due)
        elapsed = time.perf_counter() - t0
    assert got == n
    assert min(lags) > -0.005
    assert elapsed == pytest.approx(n / (live.fs * speed), abs=0.08)
    # a short timeout does not wait past it: it gives the samples due by then, in order
    with ReplaySource(live.path, speed="realtime", chunk_size=250) as slow:
        t = time.perf_counter()
        part = slow.read(0.05)
        waited = time.perf_counter() - t
        assert part is not None and 0 < part.n < 250 and waited < 0.2
        assert part.n <= (waited + 0.005) * live.fs  # none before it is due
        assert np.array_equal(part.samples, live.samples[: part.n], equal_nan=True)


def test_bad_arguments() -> None:
    assert parse_speed("fast") == float("inf")
    assert parse_speed("realtime") == 1.0
    assert parse_speed("2.5") == 2.5
    for bad in ("slow", "0", "-1", "nan"):
        with pytest.raises(ConfigError, match="fast', 'realtime' or a factor of real time"):
            parse_speed(bad)
    with pytest.raises(ConfigError, match="chunk_size"):
        ReplaySource("x.xdf", chunk_size=0)
    with pytest.raises(InputError, match="does not exist"):
        ReplaySource("/nonexistent/x.xdf").open()


def test_the_recording_reads_as_pyxdf_reads_it(live: Live) -> None:
    """closedloop's XDF reader gives pyxdf's streams bit for bit on this recording."""
    from closedloop.io.xdf import read_xdf
    from tests.io.test_xdf_reader import assert_same, pyxdf_load

    assert_same(read_xdf(live.path).streams, pyxdf_load(live.path))
