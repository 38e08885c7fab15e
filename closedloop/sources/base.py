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
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from closedloop.core.stream import Chunk, SourceInfo
from closedloop.device import Device


class Source(Device, ABC):
    """Base class of all EMG sources (see the module docstring for the contract)."""

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
