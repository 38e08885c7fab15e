"""What the signal core hands upward: detector events and the per-chunk output block."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ONSET = "onset"
OFFSET = "offset"
#: A channel's detector was suspended (bad input): nothing it saw may drive stimulation.
SUSPEND = "suspend"


@dataclass(frozen=True)
class Event:
    """A detector decision on one channel.

    Parameters
    ----------
    sample : int
        0-based index (since the stream started) of the sample at which the causal
        detector decided.
    time : float
        Stream time of that sample in seconds (the source's timestamp; ``sample / fs``
        offline).
    channel : str
        Channel (muscle) name.
    kind : str
        ``"onset"``, ``"offset"``, or ``"suspend"`` (the channel's input went bad and its
        detector was suspended at this sample).
    envelope : float
        Envelope value at the deciding sample.
    threshold : float
        The threshold that was crossed (on-threshold for onsets, off-threshold for
        offsets).
    """

    sample: int
    time: float
    channel: str
    kind: str
    envelope: float = float("nan")
    threshold: float = float("nan")


@dataclass(frozen=True)
class Effort:
    """Voluntary effort between the stimulation pulses over one block
    (:class:`~closedloop.core.effort.EffortEstimator`), each shape (n, n_channels), NaN
    where unknown.

    Attributes
    ----------
    uv : ndarray
        In µV (in the source's units when they are not a voltage).
    mvc : ndarray
        In % of the calibrated range (0 at rest, 100 at maximal voluntary effort); NaN
        in the columns of channels without an ``mvc`` calibration.
    fast_uv, fast_mvc : ndarray
        The same with a shorter time constant, for quick decisions (the patient
        stopped trying).
    """

    uv: np.ndarray
    mvc: np.ndarray
    fast_uv: np.ndarray
    fast_mvc: np.ndarray

    def get(self, unit: str, *, fast: bool = False) -> np.ndarray:
        """The effort in ``unit`` (``"uv"`` or ``"mvc"``)."""
        if unit == "mvc":
            return self.fast_mvc if fast else self.mvc
        return self.fast_uv if fast else self.uv


@dataclass
class Block:
    """The signal core's output for one chunk of samples.

    Attributes
    ----------
    start : int
        Absolute 0-based index of the first sample of the chunk.
    timestamps : ndarray, shape (n,)
        Stream time of each sample (seconds).
    filtered : ndarray, shape (n, n_channels)
        Band-passed, notch-filtered EMG.
    envelope : ndarray, shape (n, n_channels)
        Envelope.
    above : ndarray of bool, shape (n, n_channels)
        Envelope above the channel's current on-threshold at each sample (used by the
        co-contraction gate).
    on_threshold, off_threshold : ndarray, shape (n_channels,)
        Thresholds in force at the end of the chunk (NaN while a channel's adaptive
        baseline is still warming up). For display only: decisions inside the core use
        the thresholds in force at each sample.
    events : list of Event
        Onsets and offsets decided in this chunk, in sample order.
    channels : tuple of str
        Channel names, in column order.
    effort : Effort or None
        Voluntary effort between the stimulation pulses, when measured (a protocol
        that follows the patient's effort).
    restarts : tuple of int
        Columns of the channels whose filters and detector state restarted at the
        block's first sample (after a bad stretch:
        :meth:`~closedloop.core.pipeline.Pipeline.restart_channel`). Whatever else
        conditions these samples (the report's EMG level) restarts there too, or a
        huge bad value would echo in it.
    """

    start: int
    timestamps: np.ndarray
    filtered: np.ndarray
    envelope: np.ndarray
    above: np.ndarray
    on_threshold: np.ndarray
    off_threshold: np.ndarray
    events: list[Event] = field(default_factory=list)
    channels: tuple[str, ...] = ()
    effort: Effort | None = None
    restarts: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        """Number of samples in the block."""
        return int(self.timestamps.shape[0])

    @property
    def stop(self) -> int:
        """Absolute index one past the last sample."""
        return self.start + self.n
