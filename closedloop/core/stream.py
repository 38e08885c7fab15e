"""What a stream delivers: :class:`SourceInfo` (name, rate, channels, units) and
:class:`Chunk` (samples, stream timestamps, the source's own counter).

Plain data shared by the signal core (input checks), the sources that make chunks
and the recordings that store them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SourceInfo:
    """What a source delivers.

    Parameters
    ----------
    name : str
        Human-readable name (board name, LSL stream name, file name).
    fs : float
        Nominal sampling rate in Hz.
    channels : tuple of str
        EMG channel labels, in column order.
    units : str
        Units of the samples (``"V"``, ``"uV"``, ``"mV"``, ``"counts"``...).
    kind : str
        Source kind: ``sim``, ``brainflow``, ``lsl``, ``replay``.
    sample_format : {"float32", "double64"}
        The narrowest format that holds every value the source delivers exactly (see
        :func:`sample_format`): a recording keeps the EMG in it, so nothing is widened
        on disk and nothing the session saw is rounded.
    """

    name: str
    fs: float
    channels: tuple[str, ...]
    units: str = "V"
    kind: str = "sim"
    sample_format: str = "double64"

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.channels)


#: Channel formats (XDF/LSL names) whose every value a float32 holds exactly.
_FLOAT32_EXACT = frozenset({"float32", "int16", "int8"})


def sample_format(channel_format: str) -> str:
    """The recording format for samples delivered in ``channel_format`` (an XDF/LSL
    channel format name): ``"float32"`` when float32 holds every value exactly
    (float32, int16, int8: most amplifiers stream float32), else ``"double64"``."""
    return "float32" if str(channel_format) in _FLOAT32_EXACT else "double64"


@dataclass(frozen=True)
class Chunk:
    """Samples and their stream timestamps.

    Attributes
    ----------
    samples : ndarray, shape (n, n_channels), float64
    timestamps : ndarray, shape (n,), float64, stream time in seconds
    counter : ndarray, shape (n,), int64, or None
        The source's own running sample number, when it has one.
    arrival_wall : float
        ``time.perf_counter()`` when the chunk was received (latency measurement only).
    """

    samples: np.ndarray
    timestamps: np.ndarray
    counter: np.ndarray | None = None
    arrival_wall: float = float("nan")

    @property
    def n(self) -> int:
        """Samples in the chunk."""
        return int(self.samples.shape[0])
