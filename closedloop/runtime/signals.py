r"""Every way a terminal session can end: the four stop signals, and output that is gone.

Every command that can stimulate (``closedloop run``, ``closedloop stim-test``) runs
inside :func:`stop_on_signals`. SIGINT (Ctrl-C), SIGTERM (the system or a supervisor),
SIGHUP (the terminal was closed) and SIGQUIT (Ctrl-\) each make a stop request with
their own reason, so the command ends the way every stop ends: all channels off, the
summary, the recording closed, and the exit code of
:data:`~closedloop.errors.EXIT_CODES` (129, 130, 131, 143: 128 + the signal's
number, as a shell reports it). The handlers stay in place until the command has
finished (the device closed, the recording verified, the summary printed), so a second
signal, or the SIGHUP that follows a closed terminal, cannot cut that short. A handler
only records the request (:meth:`StopRequest.set_from_signal`, no lock, no I/O): the
loop or the test train sees it at its next step and stops.

After SIGHUP the terminal is gone: writing to it fails with EIO (EPIPE for a pipe whose
reader went away). :func:`say` writes a line and, when its stream is gone, points the
stream at the null device, so neither the summary nor the interpreter's final flush
turns a clean stop into an error.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TextIO

from closedloop.runtime.outcome import SIGNAL_POLL_S, StoppedWhileOpeningError, StopRequest

#: A Python signal handler (what :func:`signal.signal` installs besides SIG_DFL/SIG_IGN).
Handler = Callable[[int, FrameType | None], Any]

#: The signals that end a session, and the reason each gives (see EXIT_CODES).
STOP_SIGNALS = {"SIGINT": "interrupt", "SIGTERM": "sigterm", "SIGHUP": "sighup",
                "SIGQUIT": "sigquit"}


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest | None = None) -> Iterator[StopRequest]:
    """Turn SIGINT, SIGTERM, SIGHUP and SIGQUIT into requests on ``stop`` (a new one by
    default) while the block runs; restore the previous handlers after it.

    Signals this platform lacks (Windows: SIGHUP, SIGQUIT) are skipped. Outside the main
    thread, where Python cannot install handlers (and signals are not delivered), the
    block runs without them.
    """
    stop = stop if stop is not None else StopRequest()
    previous: dict[int, Handler | int | None] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for name, reason in STOP_SIGNALS.items():
                number = getattr(signal, name, None)
                if number is not None:
                    previous[number] = signal.signal(number, _handler(stop, reason))
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def _handler(stop: StopRequest, reason: str) -> Handler:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set_from_signal(reason)

    return handle


def stoppable_input(stop: StopRequest, *, stdin: TextIO | None = None,
                    stdout: TextIO | None = None) -> Callable[[str], str]:
    """An ``input()`` for questions asked while the stop signals are handled.

    The handlers only record a request, and ``input()`` goes on waiting after one (the
    system call is resumed): Ctrl-C at a question did nothing until every question was
    answered. This one waits for the line in short slices and ends as soon as ``stop``
    is requested, raising :class:`~closedloop.runtime.outcome.StoppedWhileOpeningError`. End
    of input raises EOFError, as ``input()`` does. Lines typed ahead are kept for the
    next question. Where a terminal cannot be waited on in slices (Windows), it is
    ``input()``.
    """
    if os.name != "posix":  # pragma: no cover - select() takes no console there
        return input
    pending = bytearray()

    def read(prompt: str) -> str:
        out, inp = stdout or sys.stdout, stdin or sys.stdin
        out.write(prompt)
        out.flush()
        fd = inp.fileno()
        while b"\n" not in pending:
            if stop.is_set():
                out.write("\n")  # what follows starts on a line of its own
                out.flush()
                raise StoppedWhileOpeningError(stop.reason)
            ready, _, _ = select.select([fd], [], [], SIGNAL_POLL_S)
            if ready:
                got = os.read(fd, 1024)
                if not got:
                    if pending:
                        break
                    raise EOFError
                pending.extend(got)
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        return line.decode(errors="replace").rstrip("\r")

    return read


def say(text: str = "", *, file: TextIO | None = None, end: str = "\n") -> bool:
    """Print ``text`` to ``file`` (stdout by default) and flush; False if it is gone.

    A stream that fails (EIO from a closed terminal, EPIPE from a closed pipe, a full
    disk) is pointed at the null device, so later writes and the interpreter's final
    flush succeed silently. Output must never stand between a stop and its summary.
    """
    stream = sys.stdout if file is None else file
    try:
        print(text, file=stream, end=end, flush=True)
        return True
    except OSError:  # BrokenPipeError included
        _to_null(stream)
        return False


def _to_null(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (a test capture)
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


__all__ = ["STOP_SIGNALS", "say", "stop_on_signals", "stoppable_input"]
