"""The stimulator interface every driver implements (sim, rehastim2, lsl).

A driver is a device edge: it owns its threads and its link, and it translates device
and library errors into :class:`~closedloop.errors.StimulatorError` (the device refused
or reported a fault) or :class:`~closedloop.errors.DeviceLostError` (no answer, link
gone). It never decides anything about safety: every command it receives has already
passed the one safety guard.

Contract
--------
* ``apply(commands)`` sets the listed channels; others keep their level.
* ``stop_all()`` switches every channel off. It is safe to call at any time, more than
  once, after an error and on a closed driver; it tries everything it can and only
  then raises, if the device could not be told.
* ``close()`` always calls ``stop_all()`` first.
* ``check()`` raises, in the caller's thread, any error a driver thread saw (for
  example an unsolicited StimulationError when the emergency switch is pressed).

Built from a spec
-----------------
``--stimulator NAME[:ARG]`` (or ``[session] stimulator``) names a registered driver
(:data:`closedloop.registry.STIMULATORS`, or a ``package.module:Class`` spec); the class
builds itself (:meth:`Stimulator.from_spec`) from ``ARG`` (a port, a stream name) and
what the session gives it (:class:`StimulatorContext`). What it can do is declared on
the class (``per_channel_frequency``) and checked against the program before any port
is opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from closedloop.device import Device
from closedloop.stim.commands import StimCommand


@dataclass(frozen=True)
class ChannelOutput:
    """What one stimulator channel is currently set to."""

    current_ma: float = 0.0
    pulse_width_us: float = 0.0
    frequency_hz: float = 0.0

    @property
    def is_on(self) -> bool:
        """Whether the command stimulates (current above 0)."""
        return self.current_ma > 0.0


@dataclass(frozen=True)
class StimulatorContext:
    """What the session gives a stimulator built from a spec.

    Attributes
    ----------
    config : Config
        The session's config.
    channels : tuple of int
        The stimulator channels the config's muscles use, sorted.
    session : SessionId or None
        The session's identity (a stimulator that publishes uses it: ``lsl``).
    """

    config: Any
    channels: tuple[int, ...] = ()
    session: Any = None


class Stimulator(Device):
    """Base class of all stimulator drivers."""

    #: Number of output channels (1-based channel numbers 1..n_channels).
    n_channels: int = 8
    #: True if each channel can pulse at its own frequency at the same time (P24, sim);
    #: False for a device with one timer for all channels (RehaStim2), which cannot run a
    #: program that gives its muscles different frequencies.
    per_channel_frequency: bool = True
    #: Its registered name (``--stimulator NAME...``).
    kind: ClassVar[str] = ""
    #: Its spec form, for help and error messages.
    spec_form: ClassVar[str] = ""
    #: What to call it in a message ("the RehaStim2").
    label: ClassVar[str] = "this stimulator"

    def __init__(self) -> None:
        super().__init__()
        self._outputs: dict[int, ChannelOutput] = {}

    @classmethod
    def from_spec(cls, spec: str, arg: str, context: StimulatorContext) -> Stimulator:
        """Build the (not yet opened) driver from the ``ARG`` of ``NAME:ARG``.

        Raises
        ------
        ConfigError
            The argument is missing or malformed (naming the spec and what to give).
        """
        raise NotImplementedError

    @property
    def outputs(self) -> dict[int, ChannelOutput]:
        """A copy of the levels the device was last told, by channel number."""
        return dict(self._outputs)

    @property
    def any_on(self) -> bool:
        """True if any channel was last told to output current."""
        return any(o.is_on for o in self._outputs.values())

    def apply(self, commands: Sequence[StimCommand]) -> None:
        """Set the listed channels. Raises StimulatorError or DeviceLostError."""
        raise NotImplementedError

    def stop_all(self) -> None:
        """Switch every channel off now (see the module docstring)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise any error a driver thread has seen since the last call."""

    def delivered_hz(self, frequency_hz: float) -> float:
        """The pulse rate this device really runs at when asked for ``frequency_hz``
        (a driver whose timer has coarse steps says so here; the default: exactly)."""
        return frequency_hz

    def close(self) -> None:
        """All channels off, then close. Idempotent."""
        try:
            if self.is_open:
                self.stop_all()
        finally:
            super().close()
