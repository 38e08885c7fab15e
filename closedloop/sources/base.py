"""The one interface every EMG source implements.

A source delivers :class:`Chunk` objects: samples with their stream timestamps (and,
when the source has one, its own sample counter, which lets a test or the recorder
prove that nothing was dropped or reordered). Sources never process the signal.

Contract
--------
* ``open()`` connects (and fills :attr:`Source.info`); errors say what to check.
* ``read(timeout)`` returns the next chunk, or ``None`` if nothing arrived within
  ``timeout`` seconds (the loop's watchdog decides what a stall means). It raises
  :class:`~closedloop.errors.DeviceLostError` when the device or stream is gone.
* ``position`` is the number of samples delivered since ``open()`` (the index of the
  next sample ``read`` returns); ``exhausted`` is True once the source has delivered
  everything it ever will (a file played to its end). A live device is never
  exhausted: its silence is a stall, for the watchdog to judge. The loop ends a session
  on ``exhausted``; progress displays read ``position``. Every source implements all
  three (they are abstract), so no caller has to guess.
* Chunks own their arrays (copies), so a consumer may keep them.

Built from a spec
-----------------
``--source NAME[:TARGET][?key=value&...]`` names a registered source
(:data:`closedloop.registry.SOURCES`, or a ``package.module:Class`` spec). Its class
checks the target and options (:meth:`Source.parse_spec`) and builds itself
(:meth:`Source.from_spec`) with what the session can give it (:class:`SourceContext`);
:mod:`closedloop.sources.spec` does the generic part (splitting, percent-decoding).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from closedloop.core.stream import Chunk, SourceInfo
from closedloop.device import Device
from closedloop.errors import ConfigError


@dataclass(frozen=True)
class SourceContext:
    """What the session can give a source built from a spec.

    Attributes
    ----------
    config : Config or None
        The session's config (the simulated patient reads its muscles and ``[sim]``).
    seed : int or None
        ``--seed``: the simulated patient's seed.
    realtime : bool
        Pace a simulated or replayed stream in real time.
    stimulator : Stimulator or None
        The session's stimulator (the simulated patient answers its pulses).
    script : sequence of Attempt or None
        What the simulated patient does (default: attempts at random; calibration gives
        its cues).
    """

    config: Any = None
    seed: int | None = None
    realtime: bool = True
    stimulator: Any = None
    script: Any = None


class Source(Device, ABC):
    """Base class of all EMG sources (see the module docstring for the contract)."""

    #: Its registered name (``--source NAME...``).
    kind: ClassVar[str] = ""
    #: Its spec form, for help and error messages.
    spec_form: ClassVar[str] = ""

    @classmethod
    def parse_spec(cls, spec: str, target: str, options: dict[str, str]) -> dict[str, str]:
        """Check the ``TARGET`` and ``?options`` of a spec; return the parameters
        :meth:`from_spec` takes. Default: no target, no options.

        Raises
        ------
        ConfigError
            Naming the spec and what is wrong.
        """
        if target or options:
            raise ConfigError(f"source spec {spec!r}: {cls.kind or cls.__name__} takes no "
                              "target and no options")
        return {}

    @classmethod
    def from_spec(cls, spec: str, params: dict[str, str], context: SourceContext) -> Source:
        """Build the (not yet opened) source from :meth:`parse_spec`'s parameters."""
        return cls()

    def __init__(self) -> None:
        super().__init__()
        self._info: SourceInfo | None = None

    @property
    def info(self) -> SourceInfo:
        """What this source delivers; available after :meth:`open`."""
        if self._info is None:
            raise RuntimeError(f"{type(self).__name__}: open() the source before asking for info")
        return self._info

    @property
    @abstractmethod
    def position(self) -> int:
        """Samples delivered since :meth:`open` (the index of the next one)."""

    @property
    @abstractmethod
    def exhausted(self) -> bool:
        """True once every sample the source will ever deliver has been delivered."""

    @abstractmethod
    def read(self, timeout: float) -> Chunk | None:
        """Next chunk, or None when nothing arrived within ``timeout`` seconds."""
