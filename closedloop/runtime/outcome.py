"""What a session run returns, and how it is asked to stop.

:class:`StopRequest` is set from outside the loop (a signal handler, the STOP button,
the watchdog thread); :class:`Outcome` says how the session ended and what it did; the
exit code follows from :attr:`Outcome.reason` alone (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from closedloop.stim.commands import StimCommand

#: Exit code of every way a session can end (a signal: 128 + its number, as a shell
#: reports it).
EXIT_CODES = {
    "duration": 0, "ended": 0, "error": 1, "config": 2, "stop_button": 3, "stall": 4,
    "device": 5, "safety": 6, "input": 7, "sighup": 129, "interrupt": 130, "sigquit": 131,
    "sigterm": 143,
}

#: The summary's sentence for the reasons that carry no message of their own.
MESSAGES = {
    "duration": "duration reached", "ended": "recording ended",
    "stop_button": "stopped with the STOP button", "interrupt": "interrupted (Ctrl-C)",
    "sigterm": "terminated (SIGTERM)", "sighup": "hung up (SIGHUP: the terminal was closed)",
    "sigquit": "quit (SIGQUIT, Ctrl-\\)",
}

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


@dataclass
class Outcome:
    """How a session ended, and what it did.

    ``events``, ``commands``, ``arrival_to_command_ms``, ``issues`` and ``violations``
    hold the latest :attr:`LoopOptions.history` items (all of them when it is None);
    ``n_events``, ``n_commands``, ``n_issues`` and ``n_violations`` count the whole
    session.
    """

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
    n_events: int = 0
    n_commands: int = 0
    n_issues: int = 0
    n_violations: int = 0
    all_off: bool = True
    stop_wall: float = math.nan  # perf_counter of the stop request (signal, button)
    off_wall: float = math.nan  # perf_counter when stop_all() returned
    error: BaseException | None = None  # the unexpected exception (reason "error")
    stopped_by: Any = None  # who sent the STOP (a ControlSender), reason "stop_button"

    @property
    def exit_code(self) -> int:
        """The exit code of the way the session ended (:data:`EXIT_CODES`)."""
        return EXIT_CODES.get(self.reason, 1)

    @property
    def stop_to_off_ms(self) -> float:
        """From the stop request to all channels off, ms (NaN without a request)."""
        return 1000.0 * (self.off_wall - self.stop_wall)


def classify(exc: BaseException) -> tuple[str, str]:
    """``(reason, message)`` for an exception that ended a session (see EXIT_CODES)."""
    from closedloop.errors import ConfigError, DeviceError, InputError, SafetyError, StallError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupt", MESSAGES["interrupt"]
    if isinstance(exc, StallError):
        return "stall", str(exc)
    if isinstance(exc, SafetyError):
        return "safety", f"safety stop: {exc}"
    if isinstance(exc, DeviceError):
        return "device", f"{type(exc).__name__}: {exc}"
    if isinstance(exc, InputError):
        return "input", f"unusable input: {exc}"
    if isinstance(exc, ConfigError):
        return "config", str(exc)
    return "error", f"unexpected {type(exc).__name__}: {exc}"


class StimTally:
    """Seconds each muscle was stimulated, summed command by command on the sample
    clock (constant memory, so a bounded command history does not lose the dose)."""

    def __init__(self, fs: float) -> None:
        self.fs = float(fs)
        self._on_since: dict[str, int] = {}
        self._total: dict[str, float] = {}

    def add(self, commands) -> None:
        """Count the stimulation time of these commands, per muscle."""
        for c in commands:
            self._total.setdefault(c.muscle, 0.0)
            if c.is_on and c.muscle not in self._on_since:
                self._on_since[c.muscle] = c.sample
            elif not c.is_on and c.muscle in self._on_since:
                self._total[c.muscle] += (c.sample - self._on_since.pop(c.muscle)) / self.fs

    def seconds(self, end: int) -> dict[str, float]:
        """Totals, a channel still on counted up to sample ``end``."""
        total = dict(self._total)
        for m, s in self._on_since.items():
            total[m] += (end - s) / self.fs
        return total


def stim_seconds(commands: list[StimCommand], fs: float, end: int) -> dict[str, float]:
    """Seconds each muscle was stimulated, from the commands on the sample clock."""
    tally = StimTally(fs)
    tally.add(commands)
    return tally.seconds(end)


def keep_last(items: list, n: int | None) -> None:
    """Trim ``items`` in place to its last ``n`` (amortised: only once it holds 2n)."""
    if n is not None and len(items) >= 2 * max(n, 1):
        del items[: len(items) - n]


__all__ = ["EXIT_CODES", "MESSAGES", "SIGNAL_POLL_S", "LoopOptions", "Outcome", "StimTally",
           "StopRequest", "classify", "keep_last", "stim_seconds"]
