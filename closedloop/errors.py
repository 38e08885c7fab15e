"""The closedloop exception family.

Library and device error codes are translated into these at the boundary, so the loop
can decide what to do from the type alone: every one of them that reaches the loop ends
in all stimulation channels off.
"""

from __future__ import annotations


class ClosedLoopError(Exception):
    """Base class of every error closedloop raises on purpose."""


class ConfigError(ClosedLoopError):
    """A configuration file or value is invalid. The message names file, key, value, range."""


class InputError(ClosedLoopError):
    """Input data is unusable (bad file, wrong shape, NaN, wrong channel count...)."""


class RecordingDamagedError(InputError):
    """A recording is cut short or corrupt; the message says what is damaged and what is
    intact. Commands exit with :attr:`exit_code` (9) for it."""

    exit_code = 9


class DeviceError(ClosedLoopError):
    """A device (EMG source or stimulator) reported an error or misbehaved."""


class DeviceLostError(DeviceError):
    """A device stopped answering or disappeared (unplugged, port gone, stream lost)."""


class StimulatorError(DeviceError):
    """The stimulator refused a command or reported a stimulation error."""


class SafetyError(ClosedLoopError):
    """A stimulation request broke a safety rule that requires stopping the session."""


class StallError(ClosedLoopError):
    """The EMG source delivered no data for longer than the watchdog allows."""


class RecordError(ClosedLoopError):
    """The patient record (the sessions database) could not be read or written.

    Never raised into a running session: ``closedloop run`` writes the record after
    stimulation is off and reports this error in its summary.
    """
