"""Fault injection: shared parts.

Every fault test runs the real loop (:func:`~closedloop.runtime.loop.run_loop`) with real
parts at the edges: the simulated patient or an LSL stream on loopback as the source,
the simulated stimulator or the strict RehaStim2 emulator on a pty, and the session's
LSL outlets recorded by a real LabRecorderCLI. It checks four things for each fault:
the stimulation state at the end (all off), the exit code, the message (what happened
and what to check), and that the recording holds everything up to the fault
(:func:`~closedloop.io.recorder.verify_recording` and
:func:`~closedloop.io.xdf.load_session` on the file, partial or not).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from closedloop.core.stream import Chunk
from closedloop.errors import DeviceLostError
from closedloop.io.outlets import SessionOutlets
from closedloop.io.recorder import RecordingReport, XdfRecorder, verify_recording
from closedloop.io.xdf import Session, load_session
from closedloop.runtime.loop import run_loop
from closedloop.runtime.outcome import Outcome
from closedloop.sources.base import Source
from tests.runtime.conftest import config  # noqa: F401 - the shipped biceps/triceps config

#: ``fault(chunk) -> chunks to deliver instead`` (none: the chunk is dropped).
Fault = Callable[[Chunk], list[Chunk]]


class FaultySource(Source):
    """Wraps an opened source; ``faults[k]`` replaces the k-th chunk it delivers."""

    def __init__(self, inner: Source, faults: dict[int, Fault]) -> None:
        super().__init__()
        self.inner, self.faults = inner, dict(faults)
        self._info = inner.info
        self._k = 0
        self._queue: list[Chunk] = []
        self._delivered = 0

    @property
    def position(self) -> int:
        return self._delivered

    @property
    def exhausted(self) -> bool:
        return not self._queue and self.inner.exhausted

    def read(self, timeout: float) -> Chunk | None:
        while not self._queue:
            chunk = self.inner.read(timeout)
            if chunk is None:
                return None
            fault = self.faults.get(self._k)
            self._k += 1
            self._queue = [chunk] if fault is None else fault(chunk)
        chunk = self._queue.pop(0)
        self._delivered += chunk.n
        return chunk


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Recorded:
    """A session run with outlets and LabRecorderCLI, and what the file holds."""

    out: Outcome
    path: Path
    counts: dict[str, int]
    names: dict[str, str]
    report: RecordingReport
    stop_error: str | None  # XdfRecorder.stop()'s DeviceLostError, if any

    def session(self) -> Session:
        return load_session(self.path)


def run_recorded(tmp_path: Path, cfg, source: Source, stimulator, *,
                 recorder_kwargs: dict | None = None,
                 with_recorder: Callable[[XdfRecorder], dict] | None = None,
                 **loop_kwargs) -> Recorded:
    """Run the loop as ``closedloop run --record`` does, then read the file back.

    ``with_recorder(recorder)`` may return further ``run_loop`` keyword arguments that
    need the recorder (a control callback that kills it, say).
    """
    path = tmp_path / "session.xdf"
    info = replace(source.info, channels=cfg.muscle_names)
    outlets = SessionOutlets(unique("fault"), info, config_text=cfg.text)
    recorder = XdfRecorder(path, outlets.recorder_predicates(), overwrite=True,
                           **(recorder_kwargs or {}))
    stop_error = None
    try:
        recorder.start()
        outlets.announce()
        extra = with_recorder(recorder) if with_recorder else {}
        out = run_loop(cfg, source, stimulator, outlets=outlets, recorder=recorder,
                       **loop_kwargs, **extra)
    finally:
        try:
            recorder.stop()
        except DeviceLostError as exc:
            stop_error = str(exc)
        counts, names = outlets.counts, dict(outlets.names)
        outlets.close()
    return Recorded(out, path, counts, names, verify_recording(path, counts), stop_error)


def assert_prefix(report: RecordingReport) -> None:
    """Every stream in the file is a gap-free prefix of what was sent: what is there is
    exactly samples 0..k-1, once each, in order (the rest, if any, was never written)."""
    assert not report.missing_streams, report.summary()
    for c in report.streams.values():
        assert c.duplicates == 0 and c.out_of_order == 0 and c.unexpected == 0, c.describe()
        assert c.missing_ranges in ((), ((c.found, c.expected - 1),)), c.describe()


def assert_recording_ends_off(session: Session) -> None:
    """The last recorded command of every channel switches it off."""
    last: dict[int, float] = {}
    for c in session.commands:
        last[c.channel] = c.current_ma
    assert last and all(v == 0.0 for v in last.values()), last


def on_samples(commands) -> list[int]:
    """Samples at which a channel was switched on from off (trains starting)."""
    on: dict[int, bool] = {}
    starts = []
    for c in commands:
        if c.is_on and not on.get(c.channel, False):
            starts.append(c.sample)
        on[c.channel] = c.is_on
    return starts


def replaced(chunk: Chunk, samples=None, timestamps=None, counter=None) -> Chunk:
    """A copy of ``chunk`` with some of its arrays replaced."""
    return Chunk(
        np.array(chunk.samples if samples is None else samples, dtype=np.float64),
        np.array(chunk.timestamps if timestamps is None else timestamps, dtype=np.float64),
        chunk.counter if counter is None else np.asarray(counter),
        chunk.arrival_wall,
    )
