"""What a session run returns, and how it is asked to stop.

:class:`StopRequest` is set from outside the loop (a signal handler, the STOP button,
the watchdog thread); :class:`Outcome` says how the session ended and what it did, and
keeps its own books (counts, histories, the dose, latencies) as the loop hands it what
happened; the exit code follows from :attr:`Outcome.reason` alone, through the one table
of :mod:`closedloop.errors` (:data:`~closedloop.errors.EXIT_CODES`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from closedloop.core.events import Event
from closedloop.core.evoked import MWave
from closedloop.errors import EXIT_CODES, ClosedLoopError, exit_code
from closedloop.io.outlets import StimCount, count_stimulation
from closedloop.runtime.mwaves import MuscleMWave, MWaveTracker
from closedloop.stim.commands import StimCommand

#: The summary's sentence for the reasons that carry no message of their own.
MESSAGES = {
    "duration": "duration reached", "ended": "recording ended",
    "stop_button": "stopped with the STOP button", "interrupt": "interrupted (Ctrl-C)",
    "sigterm": "terminated (SIGTERM)", "sighup": "hung up (SIGHUP: the terminal was closed)",
    "sigquit": "quit (SIGQUIT, Ctrl-\\)",
}

class StoppedWhileOpeningError(ClosedLoopError):
    """A stop was requested (a signal) while the session was still opening: it ends
    with the request's reason and exit code, before anything was stimulated.

    Attributes
    ----------
    stop_reason : str
        The request's reason (``sigterm``...).
    """

    def __init__(self, stop_reason: str) -> None:
        super().__init__(f"{MESSAGES.get(stop_reason, stop_reason)} while the session was "
                         "starting; nothing was stimulated")
        self.stop_reason = stop_reason


#: How often :meth:`StopRequest.wait` looks for a request made by a signal handler.
SIGNAL_POLL_S = 0.01


class StopRequest:
    """A thread-safe request to end the loop, with the reason (``interrupt``...).

    The first request wins; :attr:`wall` is the ``time.perf_counter()`` at which it was
    made (to measure how fast stimulation stopped). Requests are appended to a list (one
    atomic step) rather than guarded by a lock, so a signal handler can make one: it runs
    in the main thread between two bytecodes, possibly while that thread holds any lock.
    """

    _MAX_REQUESTS = 16  # the first one counts; a bound against a held-down Ctrl-C

    def __init__(self) -> None:
        self._requests: list[tuple[str, float]] = []
        self._event = threading.Event()

    @property
    def reason(self) -> str:
        """The first request's reason ("" before any)."""
        requests = self._requests
        return requests[0][0] if requests else ""

    @property
    def wall(self) -> float:
        """``time.perf_counter()`` of the first request (NaN before any)."""
        requests = self._requests
        return requests[0][1] if requests else math.nan

    def set(self, reason: str) -> None:
        """Request the stop from any thread (from a signal handler: :meth:`set_from_signal`)."""
        self.set_from_signal(reason)
        self._event.set()

    def set_from_signal(self, reason: str) -> None:
        """Request the stop without taking a lock: safe in a signal handler.
        :meth:`wait` sees it within :data:`SIGNAL_POLL_S`."""
        if len(self._requests) < self._MAX_REQUESTS:
            self._requests.append((reason, time.perf_counter()))

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return bool(self._requests)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a request; True when one was made."""
        deadline = time.monotonic() + timeout
        while not self._requests:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._event.wait(min(left, SIGNAL_POLL_S))
        return True


@dataclass
class LoopOptions:
    """Run-time options of :func:`~closedloop.runtime.loop.run_loop`.

    Attributes
    ----------
    duration_s : float or None
        Stop after this many seconds of samples (sample clock).
    watchdog_s : float
        The source stalls when no sample arrives for this long (wall clock).
    startup_s : float
        Before the first sample, the stall limit is at least this long (a stream may
        take a moment to start flowing).
    read_timeout_s : float
        Longest wait in one ``source.read``: bounds how fast a stop request is seen.
    status_every_s : float
        Interval of the status line (wall clock).
    history : int or None
        How many of the latest events, commands and latency figures the
        :class:`Outcome` keeps (None: all of them, as a replay needs to compare them).
        The counts, the onsets and the stimulation seconds cover the whole session
        either way; the recording holds every event and command. A bound keeps a long
        session's memory flat (an hour of triggered assist makes ~4,500 commands; 1000
        is about the last 13 minutes of them).
    """

    duration_s: float | None = None
    watchdog_s: float = 0.1
    startup_s: float = 2.0
    read_timeout_s: float = 0.005
    status_every_s: float = 0.5
    history: int | None = 1000

    def __post_init__(self) -> None:
        if self.duration_s is not None and not self.duration_s >= 0:  # NaN included
            from closedloop.errors import ConfigError

            raise ConfigError(f"duration = {self.duration_s!r} s; give a number of seconds > 0")

    def end_sample(self, fs: float) -> int | None:
        """The sample at which :attr:`duration_s` is reached (None: no end; so is a
        duration too long to count, such as 1e308 s)."""
        last = math.inf if self.duration_s is None else self.duration_s * fs
        return int(round(last)) if math.isfinite(last) else None


@dataclass
class Outcome:
    """How a session ended, and what it did.

    ``events``, ``commands``, ``arrival_to_command_ms``, ``issues`` and ``violations``
    hold the latest ``history`` items (all of them when it is None: see
    :attr:`LoopOptions.history`); ``n_events``, ``n_commands``, ``n_issues`` and
    ``n_violations`` count the whole session, and so do ``onsets`` and
    ``stim_seconds``. ``restarts`` are where the core restarted a channel after a bad
    stretch, ``(sample, muscle)`` in order (the session's ``channel_restart`` markers;
    ``replay --check`` compares them with a recording's). The loop adds to them with
    the ``add_*`` methods and closes the books with :meth:`finish`. ``mwave`` is each
    stimulated muscle's evoked response over the session
    (:class:`~closedloop.runtime.mwaves.MuscleMWave`: its first and last trains and the
    fatigue between them), from the records handed to :meth:`add_mwaves`, summed up by
    :meth:`finish`; empty when the session measured none.
    """

    reason: str = ""
    message: str = ""
    samples: int = 0
    seconds: float = 0.0
    onsets: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    commands: list[StimCommand] = field(default_factory=list)
    stim_seconds: dict[str, float] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    samples_lost: int = 0
    arrival_to_command_ms: list[float] = field(default_factory=list)
    restarts: list[tuple[int, str]] = field(default_factory=list)
    n_events: int = 0
    n_commands: int = 0
    n_issues: int = 0
    n_violations: int = 0
    all_off: bool = True
    stop_wall: float = math.nan  # perf_counter of the stop request (signal, button)
    off_wall: float = math.nan  # perf_counter when stop_all() returned
    error: BaseException | None = None  # the unexpected exception (reason "error")
    stopped_by: Any = None  # who sent the STOP (a ControlSender), reason "stop_button"
    mwave: dict[str, MuscleMWave] = field(default_factory=dict, compare=False)
    history: int | None = field(default=None, repr=False, compare=False)
    _tally: StimTally | None = field(default=None, init=False, repr=False, compare=False)
    _mwaves: MWaveTracker | None = field(default=None, init=False, repr=False, compare=False)
    _last_counter: int | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def start(cls, muscles: Sequence[str], fs: float, history: int | None) -> Outcome:
        """The empty books of a session on these muscles at ``fs``, keeping the last
        ``history`` items of each list (None: all)."""
        out = cls(onsets={m: 0 for m in muscles}, history=history)
        out._tally = StimTally(fs)
        return out

    @classmethod
    def failed(cls, exc: BaseException) -> Outcome:
        """The outcome of a session that ended before its loop ran."""
        out = cls()
        out.end_with(exc)
        return out

    @property
    def exit_code(self) -> int:
        """The exit code of the way the session ended (:func:`closedloop.errors.exit_code`)."""
        return exit_code(self.reason)

    @property
    def stop_to_off_ms(self) -> float:
        """From the stop request to all channels off, ms (NaN without a request)."""
        return 1000.0 * (self.off_wall - self.stop_wall)

    # -- what the loop hands over -----------------------------------------------------------
    def end_with(self, exc: BaseException) -> None:
        """The session ended with ``exc``: its reason and message (:func:`classify`)."""
        self.reason, self.message = classify(exc)
        self.error = exc if self.reason == "error" else None

    def count_lost(self, counter: np.ndarray | None) -> None:
        """Count the samples the source's own counter says are missing before a chunk."""
        if counter is None or not counter.size:
            return
        if self._last_counter is not None and counter[0] > self._last_counter + 1:
            self.samples_lost += int(counter[0] - self._last_counter - 1)
        self._last_counter = int(counter[-1])

    def add_events(self, events: Sequence[Event]) -> None:
        """Detector events: the history, the count and each muscle's onsets."""
        self.events.extend(events)
        self.n_events += len(events)
        keep_last(self.events, self.history)
        for e in events:
            self.onsets[e.channel] = self.onsets.get(e.channel, 0) + (e.kind == "onset")

    def add_commands(self, commands: Sequence[StimCommand]) -> None:
        """Commands handed to the stimulator: the history, the count and the dose."""
        self.commands.extend(commands)
        self.n_commands += len(commands)
        if self._tally is not None:
            self._tally.add(commands)
        keep_last(self.commands, self.history)

    def add_restarts(self, sample: int, muscles: Sequence[str]) -> None:
        """The channels the core restarted at ``sample`` (the history)."""
        if muscles:
            self.restarts.extend((sample, m) for m in muscles)
            keep_last(self.restarts, self.history)

    def add_mwaves(self, records: Sequence[MWave]) -> None:
        """Evoked-response records (in the order they were decided), for :attr:`mwave`
        (summed up by :meth:`finish`; constant memory per muscle and level, whatever
        ``history``)."""
        if not records:
            return
        if self._mwaves is None:
            self._mwaves = MWaveTracker()
        self._mwaves.add(records)

    def add_latencies(self, ms: Iterable[float]) -> None:
        """Arrival -> command latencies (ms) of on-commands."""
        self.arrival_to_command_ms.extend(ms)
        keep_last(self.arrival_to_command_ms, self.history)

    def add_issue(self, message: str) -> None:
        """Something the input checks said."""
        self.issues.append(message)
        self.n_issues += 1
        keep_last(self.issues, self.history)

    def add_violation(self, message: str) -> None:
        """A safety-guard intervention."""
        self.violations.append(message)
        self.n_violations += 1
        keep_last(self.violations, self.history)

    def finish(self, samples: int, fs: float, trials: dict[str, int] | None = None) -> None:
        """Close the books at ``samples`` processed: duration, dose, trials, the default
        message of the reason, and every history cut to its last ``history`` items."""
        self.message = self.message or MESSAGES.get(self.reason, self.reason)
        self.samples = samples
        self.seconds = samples / fs
        if trials is not None:
            self.trials = trials
        if self._tally is not None:
            self.stim_seconds = self._tally.seconds(samples)
        if self._mwaves is not None:
            self.mwave = self._mwaves.summary()
        if self.history is not None:
            for items in (self.events, self.commands, self.arrival_to_command_ms, self.issues,
                          self.violations):
                del items[: max(0, len(items) - self.history)]


def classify(exc: BaseException) -> tuple[str, str]:
    """``(reason, message)`` for an exception that ended a session: the reason its type
    carries (:data:`~closedloop.errors.EXIT_CODES`), Ctrl-C, or an unexpected error."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupt", MESSAGES["interrupt"]
    if isinstance(exc, StoppedWhileOpeningError):
        return exc.stop_reason, str(exc)
    if isinstance(exc, ClosedLoopError):
        return exc.reason, exc.summary()
    return "error", f"unexpected {type(exc).__name__}: {exc}"


class StimTally:
    """Seconds each muscle was stimulated, counted command by command on the sample
    clock (constant memory, so a bounded command history does not lose the dose), by
    the same rule as the running totals the session publishes
    (:func:`closedloop.io.outlets.count_stimulation`)."""

    def __init__(self, fs: float) -> None:
        self.fs = float(fs)
        self._counts: dict[str, StimCount] = {}

    def add(self, commands: Iterable[StimCommand]) -> None:
        """Count the stimulation time of these commands, per muscle."""
        count_stimulation(self._counts, commands)

    def seconds(self, end: int) -> dict[str, float]:
        """Totals, a channel still on counted up to sample ``end`` (a muscle that was
        only ever switched off, as by the session's final all-off, is not listed)."""
        return {m: st.on_seconds(self.fs, end) for m, st in self._counts.items()
                if st.trains}


def stim_seconds(commands: list[StimCommand], fs: float, end: int) -> dict[str, float]:
    """Seconds each muscle was stimulated, from the commands on the sample clock."""
    tally = StimTally(fs)
    tally.add(commands)
    return tally.seconds(end)


def keep_last(items: list[Any], n: int | None) -> None:
    """Trim ``items`` in place to its last ``n`` (amortised: only once it holds 2n)."""
    if n is not None and len(items) >= 2 * max(n, 1):
        del items[: len(items) - n]


__all__ = ["EXIT_CODES", "MESSAGES", "SIGNAL_POLL_S", "LoopOptions", "Outcome", "StimTally",
           "StopRequest", "StoppedWhileOpeningError", "classify", "keep_last", "stim_seconds"]
