"""Soak: a long simulated session with recording, measured.

Runs the simulated patient and the simulated stimulator through the session
``closedloop run --record`` builds (:mod:`closedloop.runtime.session`: the live loop,
the session's LSL outlets recorded by a real LabRecorderCLI, the STOP inlet), and
prints:

* **samples lost**: what the recording lacks, proved from the file by
  :func:`~closedloop.io.recorder.verify_recording` (every stream's counter or ``seq``),
  plus what the loop saw missing from the source's counter; it must be 0;
* **resident memory** (psutil) when the loop starts, at every window and at the end;
  it must stay flat;
* **triggers** (trials) and stimulation commands;
* **latency**: arrival -> command p50/p99 (ms) of the on-commands of every window of
  ``--window`` minutes of stream time, to see whether it drifts;
* the speed (stream seconds per wall second).

The default is 60 minutes at fast speed: the sim source is not paced and the loop runs
as fast as it can. ``--speed X`` paces the source at X times real time and
``--realtime`` at 1x. LabRecorderCLI pulls each stream every 0.5 s from liblsl's
buffers (closedloop's outlets keep 360 s of samples), so a fast run records losslessly
as long as 0.5 s of wall time holds less than 360 s of stream time; the figures say
whether it did. The last line is one JSON object.

Usage (from the repository root; PYTHONPATH makes sure this checkout is measured)::

    PYTHONPATH=. python tools/soak.py [--minutes 60] [--realtime | --speed X]
                                      [--config C] [--record FILE [--overwrite]] [--window 5]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil

from closedloop.config import load_config
from closedloop.core.stream import Chunk
from closedloop.errors import ClosedLoopError
from closedloop.io.recorder import verify_recording
from closedloop.runtime.outcome import LoopOptions
from closedloop.runtime.session import Session, SessionPlan
from closedloop.sources.base import Source
from closedloop.sources.sim import SimSource, patient_settings
from closedloop.stim.drivers.sim import SimStimulator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "biceps_triceps.toml"


class Paced(Source):
    """Delivers another source's chunks no faster than ``speed`` x real time (each chunk
    when its last sample is due, counted from the first read: no drift builds up)."""

    def __init__(self, inner: Source, speed: float) -> None:
        super().__init__()
        self.inner, self.speed = inner, float(speed)
        self._info = inner.info
        self._wall0: float | None = None
        self._done = 0

    @property
    def position(self) -> int:
        return self._done

    @property
    def exhausted(self) -> bool:
        return self.inner.exhausted

    def read(self, timeout: float) -> Chunk | None:
        now = time.perf_counter()
        if self._wall0 is None:
            self._wall0 = now
        chunk = self.inner.read(timeout)
        if chunk is None:
            return None
        self._done += chunk.n
        wait = self._wall0 + self._done / (self._info.fs * self.speed) - now
        if wait > 0:
            time.sleep(wait)
        return chunk


class Windows:
    """Per window of stream time: on-command latencies and the resident memory."""

    def __init__(self, fs: float, window_s: float) -> None:
        self.size = max(1, int(round(window_s * fs)))
        self.latency: dict[int, list[float]] = {}
        self.rss_mb: dict[int, float] = {}
        self.commands: dict[int, int] = {}

    def add(self, commands) -> None:
        for c in commands:
            w = c.sample // self.size
            self.commands[w] = self.commands.get(w, 0) + 1
            if c.is_on and math.isfinite(c.handed_wall) and math.isfinite(c.arrival_wall):
                self.latency.setdefault(w, []).append(1000.0 * (c.handed_wall - c.arrival_wall))

    def table(self, fs: float) -> list[dict]:
        rows = []
        for w in sorted(set(self.commands) | set(self.rss_mb)):
            lat = np.asarray(self.latency.get(w, []))
            rows.append({
                "minute": round(w * self.size / fs / 60.0, 3),
                "commands": self.commands.get(w, 0),
                "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
                "rss_mb": self.rss_mb.get(w),
            })
        return rows


class TappedStimulator(SimStimulator):
    """The simulated stimulator, handing every command it applies to :class:`Windows`."""

    def __init__(self, windows: Windows, **kwargs) -> None:
        super().__init__(**kwargs)
        self.windows = windows

    def apply(self, commands) -> None:
        super().apply(commands)
        self.windows.add(commands)


def soak(minutes: float = 60.0, *, speed: float = math.inf,
         config_path: str | Path = DEFAULT_CONFIG, record: str | Path | None = None,
         overwrite: bool = False, window_min: float = 5.0, seed: int = 0,
         progress=None) -> dict:
    """Run the soak (see the module docstring); return the figures. ``record`` is
    refused when it exists, unless ``overwrite``."""
    config = load_config(config_path)
    fs = config.session.fs
    windows = Windows(fs, window_min * 60.0)
    stim = TappedStimulator(windows)
    chans = {m.stim.channel: m.name for m in config.muscles if m.stim is not None}
    chunk = max(1, int(round(config.session.chunk_ms * fs / 1000.0)))
    sim = SimSource(patient_settings(config), seed=seed, realtime=speed == 1.0,
                    chunk_size=chunk, stimulator=stim if config.sim.artifacts else None,
                    stim_channels=chans, gap_s=config.sim.gap_s, attempt_s=config.sim.attempt_s,
                    script_hours=minutes / 60.0 + 1.0)
    stim.follow(sim.now)  # pulses start at the next sample, as in closedloop run
    source: Source = Paced(sim, speed) if math.isfinite(speed) and speed != 1.0 else sim
    tmp = None
    if record is None:
        tmp = tempfile.TemporaryDirectory(prefix="closedloop-soak-")
        record = Path(tmp.name) / "soak.xdf"
    path = Path(record)
    # the session closedloop run --record builds, with these devices
    session = Session(SessionPlan(config, source=source, stimulator=stim, record=path,
                                  overwrite=overwrite, publish=True,
                                  name=f"closedloop-soak-{uuid.uuid4().hex[:6]}",
                                  metadata={"tool": "soak"}))
    proc = psutil.Process()
    size = windows.size

    def control() -> list:  # once per chunk: memory at each window's start; STOP as ever
        w = sim.position // size
        if w not in windows.rss_mb:
            windows.rss_mb[w] = proc.memory_info().rss / 1e6
            if progress is not None:
                progress(w, windows)
        return session.poll()

    session.open()  # the recording is claimed first: a refused file starts nothing
    rss_start = proc.memory_info().rss / 1e6
    t0 = time.perf_counter()
    try:
        out = session.run(LoopOptions(duration_s=minutes * 60.0,
                                      watchdog_s=config.session.watchdog_ms / 1000.0),
                          control=control)
    finally:
        wall = time.perf_counter() - t0
        rss_end = proc.memory_info().rss / 1e6
        closed = session.close()
    assert session.outlets is not None
    counts = session.outlets.counts
    report = closed.report if closed.report is not None else verify_recording(path, counts)
    missing = sum(c.missing + c.unexpected + c.duplicates for c in report.streams.values())
    missing += sum(counts.get(n, 0) for n in report.missing_streams)
    figures = {
        "minutes": minutes,
        "speed": "fast" if not math.isfinite(speed) else speed,
        "exit_code": out.exit_code,
        "reason": out.reason,
        "samples": out.samples,
        "samples_lost": int(missing + out.samples_lost),
        "recording_ok": report.ok,
        "recording_complete": report.complete,
        "recorder_error": closed.recorder_error,
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "triggers": out.trials.get("trials", 0),
        "commands": out.n_commands,
        "events": out.n_events,
        "input_warnings": out.n_issues,
        "all_off": out.all_off,
        "wall_s": round(wall, 1),
        "x_realtime": round(out.seconds / wall, 1) if wall > 0 else None,
        "windows": windows.table(fs),
        "recording_bytes": path.stat().st_size if path.exists() else 0,
        "recording_summary": report.summary(),
    }
    if tmp is not None:
        tmp.cleanup()
    return figures


def _print(f: dict) -> None:
    print(f"soak: {f['minutes']:g} min at {f['speed']} speed ({f['x_realtime']}x real time, "
          f"{f['wall_s']} s wall): exit {f['exit_code']} ({f['reason']})")
    print(f"  samples lost   : {f['samples_lost']} of {f['samples']} "
          f"(recording {'complete' if f['recording_ok'] else 'INCOMPLETE'})")
    print(f"  resident memory: {f['rss_start_mb']} MB at the start, {f['rss_end_mb']} MB at "
          "the end")
    print(f"  triggers       : {f['triggers']} ({f['commands']} commands, {f['events']} events)")
    print("  window  commands  p50 ms   p99 ms   rss MB")
    for w in f["windows"]:
        p50 = "-" if w["p50_ms"] is None else f"{w['p50_ms']:.3f}"
        p99 = "-" if w["p99_ms"] is None else f"{w['p99_ms']:.3f}"
        rss = "-" if w["rss_mb"] is None else f"{w['rss_mb']:.1f}"
        print(f"  {w['minute']:6.1f}  {w['commands']:8d}  {p50:>7}  {p99:>7}  {rss:>7}")
    if f["recorder_error"]:
        print(f"  recorder: {f['recorder_error']}")
    if not f["recording_ok"]:
        print("  " + f["recording_summary"].replace("\n", "\n  "))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/soak.py", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="session length (stream time)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="pace the source at 1x")
    pace.add_argument("--speed", type=float, help="pace the source at this multiple of 1x")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--record", help="keep the recording here (default: a temporary file)")
    p.add_argument("--overwrite", action="store_true", help="replace --record if it exists")
    p.add_argument("--window", type=float, default=5.0, help="minutes per latency window")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    speed = 1.0 if args.realtime else (args.speed if args.speed else math.inf)

    def progress(w: int, windows: Windows) -> None:
        print(f"  ... minute {w * args.window:g}: rss {windows.rss_mb[w]:.1f} MB",
              file=sys.stderr, flush=True)

    try:
        figures = soak(args.minutes, speed=speed, config_path=args.config, record=args.record,
                       overwrite=args.overwrite, window_min=args.window, seed=args.seed,
                       progress=progress)
    except ClosedLoopError as exc:
        print(f"tools/soak.py: {exc}", file=sys.stderr)
        return exc.exit_code
    _print(figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "recording_summary"}))
    return 0 if figures["samples_lost"] == 0 and figures["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
