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
* Chunks own their arrays (copies), so a consumer may keep them.
"""

from __future__ import annotations

from closedloop.core.stream import Chunk, SourceInfo
from closedloop.device import Device


class Source(Device):
    """Base class of all EMG sources."""

    def __init__(self) -> None:
        super().__init__()
        self._info: SourceInfo | None = None

    @property
    def info(self) -> SourceInfo:
        """What this source delivers; available after :meth:`open`."""
        if self._info is None:
            raise RuntimeError(f"{type(self).__name__}: open() the source before asking for info")
        return self._info

    def read(self, timeout: float) -> Chunk | None:
        """Next chunk, or None when nothing arrived within ``timeout`` seconds."""
        raise NotImplementedError
