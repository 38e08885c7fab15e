"""The closed loop: one source, the signal core, the protocol, the guard, one stimulator.

Read :func:`run_loop` top to bottom; it is the whole product in one function:

1. read a chunk from the source (short timeout, so a stop request is seen at once);
2. check it (NaN, gaps, flat or saturated channels...): bad channels are suspended;
3. run the signal core -> envelopes and onset/offset events (sample clock);
4. the protocol turns events into the stimulation it wants;
5. the safety guard lets through only what is within every limit (it can only lower or
   stop); the stimulator gets exactly that, stamped with wall times for latency;
6. publish everything (LSL outlets, which LabRecorder records);
7. stop when the duration (in samples) is reached, the source ends, or a stop is
   requested (Ctrl-C, SIGTERM, the STOP button).

Every way out goes through one ``finally``: all channels off, the guard told, the
off-commands published. Decisions use only the samples and their timestamps; the wall
clock is read for latency stamps, for the stall watchdog and for the status line.

Exit codes (see :class:`Outcome`): 0 a normal end (duration reached, recording ended),
1 an unexpected error, 2 a bad config, 3 stopped by the clinician (STOP), 4 the source
stalled, 5 a device was lost or refused, 6 a safety stop, 7 unusable input,
130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from closedloop.config import Config
from closedloop.core.pipeline import Pipeline
from closedloop.errors import (
    ConfigError,
    DeviceError,
    InputError,
    SafetyError,
    StallError,
)
from closedloop.runtime.devices import channel_columns, stimulated_muscles
from closedloop.sources.base import Source
from closedloop.sources.checks import InputMonitor
from closedloop.stim.base import Stimulator
from closedloop.stim.commands import StimCommand

EXIT_CODES = {
    "duration": 0, "ended": 0, "error": 1, "config": 2, "stop_button": 3, "stall": 4,
    "device": 5, "safety": 6, "input": 7, "interrupt": 130, "sigterm": 143,
}


class StopRequest:
    """A thread-safe request to end the loop, with the reason (``interrupt``...)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.wall = math.nan

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self.wall = time.perf_counter()
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass
class Outcome:
    """How a session ended, and what it did."""

    reason: str = ""
    message: str = ""
    samples: int = 0
    seconds: float = 0.0
    onsets: dict[str, int] = field(default_factory=dict)
    events: list = field(default_factory=list)
    commands: list[StimCommand] = field(default_factory=list)
    stim_seconds: dict[str, float] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    samples_lost: int = 0
    arrival_to_command_ms: list[float] = field(default_factory=list)
    all_off: bool = True
    off_wall: float = math.nan  # perf_counter when stop_all() returned

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.reason, 1)


@dataclass
class LoopOptions:
    """Run-time options of :func:`run_loop`."""

    duration_s: float | None = None
    watchdog_s: float = 0.1
    read_timeout_s: float = 0.005
    status_every_s: float = 0.5


class Watchdog:
    """Backstop thread: if the loop stops checking in (stuck in a device call), switch
    every channel off from here and request a stop. The loop's own stall check handles
    a source that returns no data; this one handles a loop that does not return."""

    def __init__(self, limit_s: float, on_trip: Callable[[], None]) -> None:
        self.limit_s = limit_s
        self._on_trip = on_trip
        self._last = time.perf_counter()
        self._done = threading.Event()
        self.tripped = False
        self._thread = threading.Thread(target=self._run, name="closedloop-watchdog", daemon=True)

    def start(self) -> None:
        self._last = time.perf_counter()
        self._thread.start()

    def feed(self) -> None:
        self._last = time.perf_counter()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._done.wait(self.limit_s / 4):
            if time.perf_counter() - self._last > self.limit_s:
                self.tripped = True
                self._on_trip()
                return


def run_loop(
    config: Config,
    source: Source,
    stimulator: Stimulator | None,
    *,
    options: LoopOptions | None = None,
    stop: StopRequest | None = None,
    outlets=None,
    recorder=None,
    control: Callable[[], list[str]] | None = None,
    status: Callable[[str], None] | None = None,
    protocol_factory=None,
) -> Outcome:
    """Run one session on an opened source and stimulator; see the module docstring."""
    opts = options or LoopOptions()
    stop = stop or StopRequest()
    out = Outcome()
    info = source.info
    fs = info.fs
    cols = channel_columns(config, info)
    names = config.muscle_names
    pipeline = Pipeline(fs, names, config.filters, config.envelope, config.detector,
                        config.calibrations())
    monitor = InputMonitor(info)
    protocol = guard = None
    if stimulator is not None and config.stimulates:
        from closedloop.stim.guard import SafetyGuard
        from closedloop.stim.protocol import make_protocol

        muscles = stimulated_muscles(config)
        protocol = (protocol_factory or make_protocol)(config.protocol, muscles, fs)
        guard = SafetyGuard.from_muscles(muscles, config.safety, fs, protocol=config.protocol)
    out.onsets = {m: 0 for m in names}
    suspended = np.zeros(len(names), dtype=bool)
    last_data = time.perf_counter()
    last_status = 0.0
    last_counter: int | None = None
    last_time = math.nan
    watchdog = Watchdog(max(2 * opts.watchdog_s, 0.25), lambda: _emergency_off(stimulator, stop))
    watchdog.start()
    try:
        while True:
            # 1. read (short timeout: stop requests and stalls are seen at once)
            if stop.is_set():
                out.reason = stop.reason
                break
            for word in control() if control else ():
                if word == "stop":
                    stop.set("stop_button")
            chunk = source.read(opts.read_timeout_s)
            now = time.perf_counter()
            watchdog.feed()
            if chunk is None:
                if getattr(source, "exhausted", False):
                    out.reason = "ended"
                    break
                if now - last_data > opts.watchdog_s:
                    raise StallError(
                        f"no EMG from {info.name!r} for {1000 * (now - last_data):.0f} ms "
                        f"(watchdog {1000 * opts.watchdog_s:.0f} ms): check the amplifier, "
                        "its cable or the LSL stream"
                    )
                continue
            last_data = now
            if chunk.counter is not None and chunk.n:
                if last_counter is not None and chunk.counter[0] > last_counter + 1:
                    out.samples_lost += int(chunk.counter[0] - last_counter - 1)
                last_counter = int(chunk.counter[-1])

            # 2. check the input; suspend channels that are unusable
            checked = monitor.check(chunk)
            for issue in checked.issues:
                out.issues.append(issue.message)
                if status:
                    status(f"input: {issue.message}")
            if checked.n == 0:
                continue
            bad = checked.bad[:, cols].any(axis=0)
            ended = []  # a suspended channel that was active ends with an offset
            for c in np.flatnonzero(bad != suspended):
                t0 = float(checked.chunk.timestamps[0])
                ended += pipeline.detector.suspend(int(c), bool(bad[c]), pipeline.position, t0)
                suspended[c] = bad[c]

            # 3. the signal core
            block = pipeline.process(checked.chunk.samples[:, cols], checked.chunk.timestamps)
            if ended:
                block.events[:0] = ended
            last_time = float(block.timestamps[-1])
            out.events.extend(block.events)
            for e in block.events:
                if e.kind == "onset":
                    out.onsets[e.channel] += 1

            # 4-5. protocol -> guard -> stimulator
            safe: list[StimCommand] = []
            if protocol is not None:
                wanted = protocol.step(block)
                safe = guard.filter(wanted, block=block)
                for v in guard.pop_violations():
                    out.violations.append(v.message)
                    if status:
                        status(f"safety: {v.message}")
                if safe:
                    handed = time.perf_counter()
                    safe = [replace(c, arrival_wall=chunk.arrival_wall, handed_wall=handed)
                            for c in safe]
                    stimulator.apply(safe)
                    out.commands.extend(safe)
                    out.arrival_to_command_ms.extend(
                        1000 * (handed - chunk.arrival_wall) for c in safe if c.is_on
                    )
                stimulator.check()
                if guard.must_stop:
                    raise SafetyError(guard.stop_violation.message)

            # 6. publish
            if outlets is not None:
                outlets.push_chunk(checked.chunk, start=block.start)
                outlets.push_block(block)
                if safe:
                    outlets.push_commands(safe)
                if protocol is not None:
                    for te in protocol.pop_trial_events():
                        outlets.push_marker(te.kind, te.time, **_fields(te))
            if recorder is not None:
                recorder.check()
            if status and now - last_status >= opts.status_every_s:
                last_status = now
                status(_status_line(block, fs, stimulator, protocol, suspended))

            # 7. duration on the sample clock
            if opts.duration_s is not None and block.stop >= opts.duration_s * fs:
                out.reason = "duration"
                break
    except KeyboardInterrupt:
        out.reason, out.message = "interrupt", "interrupted (Ctrl-C)"
    except StallError as exc:
        out.reason, out.message = "stall", str(exc)
    except SafetyError as exc:
        out.reason, out.message = "safety", f"safety stop: {exc}"
    except DeviceError as exc:
        out.reason, out.message = "device", f"{type(exc).__name__}: {exc}"
    except InputError as exc:
        out.reason, out.message = "input", f"unusable input: {exc}"
    except ConfigError as exc:
        out.reason, out.message = "config", str(exc)
    except Exception as exc:  # noqa: BLE001 - every error must end with stimulation off
        out.reason, out.message = "error", f"unexpected {type(exc).__name__}: {exc}"
        out.error = exc  # type: ignore[attr-defined]
    finally:
        watchdog.stop()
        _all_off(out, stimulator, guard, pipeline.position, last_time, outlets)
        if watchdog.tripped and out.reason in ("", "interrupt"):
            out.reason = "stall"
            out.message = out.message or "the loop stopped responding; watchdog switched stimulation off"
    if not out.message:
        out.message = {
            "duration": "duration reached", "ended": "recording ended",
            "stop_button": "stopped with the STOP button", "interrupt": "interrupted (Ctrl-C)",
            "sigterm": "terminated (SIGTERM)",
        }.get(out.reason, out.reason)
    out.samples = pipeline.position
    out.seconds = pipeline.position / fs
    if protocol is not None:
        c = protocol.counts
        out.trials = {"trials": c.trials, "hits": c.hits, "misses": c.misses, "gated": c.gated}
    out.stim_seconds = _stim_seconds(out.commands, fs, pipeline.position)
    return out


def _emergency_off(stimulator: Stimulator | None, stop: StopRequest) -> None:
    """Called from the watchdog thread when the loop is stuck."""
    stop.set("stall")
    if stimulator is not None:
        try:
            stimulator.stop_all()
        except Exception:  # noqa: BLE001 - the loop reports; the device stops on its own watchdog
            pass


def _all_off(out: Outcome, stimulator, guard, position: int, last_time: float, outlets) -> None:
    """Every exit: switch all channels off, tell the guard, publish the offs."""
    if stimulator is None:
        return
    try:
        stimulator.stop_all()
        out.off_wall = time.perf_counter()
    except Exception as exc:  # noqa: BLE001
        out.all_off = False
        out.message += f"; could NOT confirm all channels off ({type(exc).__name__}: {exc}) - " \
                       "switch the stimulator off by hand"
        if out.reason in ("", "duration", "ended"):
            out.reason = "device"
    if guard is not None:
        offs = guard.all_off(max(position - 1, 0), last_time)
        out.commands.extend(offs)
        if outlets is not None:
            try:
                outlets.push_commands(offs)
            except Exception:  # noqa: BLE001 - publishing must not hide the stop
                pass


def _fields(te) -> dict:
    from dataclasses import asdict

    d = asdict(te)
    d.pop("kind", None)
    d.pop("time", None)
    return d


def _stim_seconds(commands: list[StimCommand], fs: float, end: int) -> dict[str, float]:
    """Seconds each muscle was stimulated, from the commands on the sample clock."""
    on_since: dict[str, int] = {}
    total: dict[str, float] = {}
    for c in commands:
        total.setdefault(c.muscle, 0.0)
        if c.is_on and c.muscle not in on_since:
            on_since[c.muscle] = c.sample
        elif not c.is_on and c.muscle in on_since:
            total[c.muscle] += (c.sample - on_since.pop(c.muscle)) / fs
    for m, s in on_since.items():
        total[m] += (end - s) / fs
    return total


def _status_line(block, fs, stimulator, protocol, suspended) -> str:
    """One line: time, per-channel envelope/threshold, stimulation, trials."""
    parts = [f"t={block.stop / fs:7.1f}s"]
    for c, name in enumerate(block.channels):
        env = float(block.envelope[-1, c])
        thr = float(block.on_threshold[c])
        flag = " SUSPENDED" if suspended[c] else ("" if math.isfinite(thr) else " (learning rest)")
        parts.append(f"{name} {env:.3g}/{thr:.3g}{flag}")
    if stimulator is not None:
        on = [f"ch{ch} {o.current_ma:.0f}mA" for ch, o in sorted(stimulator.outputs.items()) if o.is_on]
        parts.append("stim " + (", ".join(on) if on else "off"))
    if protocol is not None:
        c = protocol.counts
        parts.append(f"trials {c.trials} hits {c.hits} misses {c.misses}")
    return " | ".join(parts)


__all__ = ["EXIT_CODES", "LoopOptions", "Outcome", "StopRequest", "Watchdog", "run_loop"]
