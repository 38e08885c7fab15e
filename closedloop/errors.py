"""The closedloop exception family, and the one table of exit codes.

Library and device error codes are translated into these at the boundary, so the loop
can decide what to do from the type alone: every one of them that reaches the loop ends
in all stimulation channels off.

Each class carries the ``reason`` a session or command ends with and the ``exit_code``
every command exits with for it (:data:`EXIT_CODES` adds the ways to end that are not
errors: the duration reached, a signal, the STOP button). ``closedloop`` prints an error
of this family as one message, without a traceback, and exits with its code: the same
cause gives the same code from every command.
"""

from __future__ import annotations

from typing import ClassVar


class ClosedLoopError(Exception):
    """Base class of every error closedloop raises on purpose.

    Attributes
    ----------
    reason : str
        How a session ended because of it (a key of :data:`EXIT_CODES`).
    exit_code : int
        The exit code of every command it ends.
    """

    reason: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1

    def summary(self) -> str:
        """The sentence a session summary and a command's last line say about it."""
        return str(self)


class ConfigError(ClosedLoopError):
    """A configuration file or value is invalid. The message names file, key, value, range.

    Also a file a command may not write (it exists, or it is one of the inputs) and a
    command-line choice that cannot be met.
    """

    reason = "config"
    exit_code = 2


class InputError(ClosedLoopError):
    """Input data is unusable (bad file, wrong shape, NaN, wrong channel count...)."""

    reason = "input"
    exit_code = 7

    def summary(self) -> str:
        """One line for the terminal."""
        return f"unusable input: {self}"


class RecordingDamagedError(InputError):
    """A recording is cut short or corrupt; the message says what is damaged and what is
    intact. Commands exit with :attr:`exit_code` (9) for it."""

    reason = "damaged"
    exit_code = 9


class DeviceError(ClosedLoopError):
    """A device (EMG source or stimulator) reported an error or misbehaved."""

    reason = "device"
    exit_code = 5

    def summary(self) -> str:
        """One line for the terminal."""
        return f"{type(self).__name__}: {self}"


class DeviceLostError(DeviceError):
    """A device stopped answering or disappeared (unplugged, port gone, stream lost)."""


class StimulatorError(DeviceError):
    """The stimulator refused a command or reported a stimulation error."""


class SafetyError(ClosedLoopError):
    """A stimulation request broke a safety rule that requires stopping the session."""

    reason = "safety"
    exit_code = 6

    def summary(self) -> str:
        """One line for the terminal."""
        return f"safety stop: {self}"


class StallError(ClosedLoopError):
    """The EMG source delivered no data for longer than the watchdog allows."""

    reason = "stall"
    exit_code = 4


class RecordError(ClosedLoopError):
    """The patient record (the sessions database) could not be read or written.

    Never raised into a running session: ``closedloop run`` writes the record after
    stimulation is off and reports this error in its summary.
    """

    reason = "record"
    exit_code = 10


#: Every error class that carries its own reason, in the order the table lists them.
ERRORS: tuple[type[ClosedLoopError], ...] = (
    ClosedLoopError, ConfigError, StallError, DeviceError, SafetyError, InputError,
    RecordingDamagedError, RecordError,
)

#: The ways to end that are not errors: a session that ran its course, a stop asked for
#: (the STOP button; a signal: 128 + its number, as a shell reports it), a replay whose
#: ``--check`` found a difference.
ENDINGS: dict[str, int] = {
    "duration": 0, "ended": 0, "stop_button": 3, "mismatch": 8, "sighup": 129,
    "interrupt": 130, "sigquit": 131, "sigterm": 143,
}

#: The one table: reason -> exit code, for every way a session or command ends.
EXIT_CODES: dict[str, int] = {
    **ENDINGS, **{cls.reason: cls.exit_code for cls in ERRORS},
}


def exit_code(reason: str) -> int:
    """The exit code of ``reason`` (an unknown reason: 1, as an unexpected error)."""
    return EXIT_CODES.get(reason, ClosedLoopError.exit_code)


__all__ = [
    "ENDINGS", "ERRORS", "EXIT_CODES", "ClosedLoopError", "ConfigError", "DeviceError",
    "DeviceLostError", "InputError", "RecordError", "RecordingDamagedError", "SafetyError",
    "StallError", "StimulatorError", "exit_code",
]
