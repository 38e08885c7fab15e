"""The one interface every onset detector implements.

The live loop, replay, ``closedloop detect``, ``closedloop evaluate`` and calibration
all run a detector the same way: inside :class:`~closedloop.core.pipeline.Pipeline`,
which blanks stimulation pulses in the raw samples, band-passes and notch-filters them,
cancels the pulse-locked residual, and hands each chunk to the detector. Any class that
implements :class:`Detector` can therefore run live, be replayed exactly and be scored,
and is chosen in a config's ``[detector]`` table by its ``kind``.

A detector
----------
* is built by :meth:`Detector.from_config` (from the whole config: its own settings are
  ``config.detector``, an instance of its :attr:`~Detector.settings_type`) with the
  sampling rate, the channel names and the per-channel calibrations;
* gets each chunk as :meth:`Detector.process` ``(filtered, raw, timestamps)``, both
  arrays channel-major (n_channels, n) and read-only, and returns a :class:`Detection`:
  the statistic it thresholds (for the view, the report and the recording), where it
  is above the on-threshold, and the onset/offset events decided in this chunk (every
  event's sample lies inside the chunk);
* is **causal and chunk-invariant**: a decision at sample ``k`` depends on samples
  ``0..k`` only, and the same samples in any chunking give the same events to the
  sample (the tests feed random chunkings);
* keeps ``on_threshold`` / ``off_threshold`` per channel in the statistic's units (NaN
  until it has learnt enough rest to trigger) and ``position``, the absolute index of
  the next sample;
* lets the input checks switch a channel off: :meth:`Detector.suspend` (a bad
  electrode: an active channel gets an offset and a ``suspend`` event, so the protocol
  aborts what it may have triggered) and :meth:`Detector.hold` (an out-of-range stretch
  that may still be a contraction: no new onset, an onset under way goes on);
* forgets a channel's conditioning state on :meth:`Detector.restart_channel` (after a
  bad stretch the filters restart; what the detector integrated from it must go too);
* hears, before a chunk touched by stimulation, where (:meth:`Detector.stimulation`:
  the blanked samples, and the span of each train): a detector that learns its rest
  from the signal must not learn it from the blanking's fill or a train's M-waves;
* may say what its rest learning found (:meth:`Detector.pop_notes`, as
  :class:`RestNote` records the session shows and records);
* declares what its statistic is (:attr:`Detector.statistic_info`: name, unit, whether its
  offsets are decided on it), so the view, the status line, the report and the patient
  record show it in its own unit (:func:`statistic_of`).

How to add one is in ``docs/architecture.md``; the built-in ones are
:mod:`~closedloop.core.detectors.threshold` (``threshold``, ``tkeo``),
:mod:`~closedloop.core.detectors.bonato` (``double_threshold``) and
:mod:`~closedloop.core.detectors.cusum` (``cusum``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from closedloop.config.signal import Calibration, DetectorBase
from closedloop.core.events import Event
from closedloop.errors import ClosedLoopError
from closedloop.units import Statistic


@dataclass(frozen=True)
class RestNote:
    """What a detector's rest learning has to say about one channel.

    Attributes
    ----------
    sample : int
        The last sample of the block that decided it.
    channel : int
    what : str
        ``"waiting"``: no steady rest yet; ``"not_quiet"``: what was learnt as rest was
        not (a quieter rest showed it), learning again; ``"learnt"``: rest learnt after
        one of those.
    since : int
        Where learning started (waiting, learnt) or where the doubted rest was learnt.
    ratio : float
        not_quiet: the quieter level over the rest learnt; waiting: the spread (max /
        min) of the latest blocks' levels.
    message : str
        The detector's own sentence, when it has one (the session then says that).
    """

    sample: int
    channel: int
    what: str
    since: int
    ratio: float
    message: str = ""


@dataclass(frozen=True)
class Detection:
    """What a detector made of one chunk.

    Attributes
    ----------
    statistic : ndarray, shape (n_channels, n)
        What it thresholds (an envelope, an energy, a log-likelihood sum), in the units
        of its thresholds.
    above : ndarray of bool, shape (n_channels, n)
        The statistic above the on-threshold in force at each sample.
    events : list of Event
        Onsets and offsets decided in the chunk, in sample order.
    """

    statistic: np.ndarray
    above: np.ndarray
    events: list[Event]


class Detector(ABC):
    """Base class and interface of every onset detector (see the module docstring).

    Parameters
    ----------
    settings
        The detector's own settings, an instance of :attr:`settings_type`.
    fs : float
        Sampling rate, Hz.
    channels : sequence of str
        Channel (muscle) names, in column order.
    calibrations : sequence of Calibration or None, optional
        Per channel (rest and maximal-effort statistics of an RMS envelope, from
        ``closedloop calibrate``); what a detector makes of them is its own business.
    """

    #: The name a config's ``[detector] kind`` gives (the registry's key).
    kind: ClassVar[str] = ""
    #: The settings class of its ``[detector]`` table (a subclass of DetectorBase).
    settings_type: ClassVar[type[DetectorBase]] = DetectorBase
    #: True when :meth:`process` reads ``raw`` (the pipeline then keeps a copy of the
    #: blanked raw samples; otherwise ``raw`` may already hold the filtered samples).
    wants_raw: ClassVar[bool] = False
    #: What :attr:`Detection.statistic` and the thresholds are, for the displays (name,
    #: unit, whether offsets are decided on it): by default a statistic without a unit.
    statistic_info: ClassVar[Statistic] = Statistic("detector statistic")

    def __init__(self, settings: Any, fs: float, channels: Sequence[str],
                 calibrations: Sequence[Calibration | None] | None = None) -> None:
        self.settings = settings
        self.fs = float(fs)
        self.channels = tuple(str(c) for c in channels)
        n = len(self.channels)
        cals: list[Calibration | None] = (list(calibrations) if calibrations is not None
                                          else [None] * n)
        if len(cals) != n:
            raise ValueError(f"{len(cals)} calibrations for {n} channels")
        self.calibrations: list[Calibration | None] = cals
        self.on_threshold = np.full(n, np.nan)
        self.off_threshold = np.full(n, np.nan)
        self.position = 0

    @classmethod
    def from_config(cls, config: Any, fs: float, channels: Sequence[str]) -> Detector:
        """Build from a whole :class:`~closedloop.config.Config` (its ``detector``
        settings and its muscles' calibrations); a detector that needs more of the
        config (the threshold detector's ``[envelope]``) overrides this."""
        return cls(config.detector, fs, channels, config.calibrations())

    # -- per chunk --------------------------------------------------------------------
    @abstractmethod
    def process(self, filtered: np.ndarray, raw: np.ndarray,
                timestamps: np.ndarray) -> Detection:
        """Decide on the next chunk (see the module docstring); advances ``position``."""

    # -- what the input checks may do -------------------------------------------------
    @abstractmethod
    def suspend(self, channel: int, suspended: bool, sample: int, time: float) -> list[Event]:
        """Suspend (or resume) a channel; suspending an active channel returns its
        offset, and every suspension a ``suspend`` event."""

    @abstractmethod
    def hold(self, channel: int, held: bool) -> None:
        """Hold (or release) a channel: no new onset, an onset under way goes on."""

    def restart_channel(self, channel: int, level: float) -> None:  # noqa: B027 - optional
        """Forget the channel's conditioning state: the pipeline's filters restarted as if
        the raw input had always been ``level``."""

    def stimulation(self, blanked: np.ndarray, stimulating: np.ndarray) -> None:  # noqa: B027
        """Where the next chunk was touched by stimulation (1-D bools over its samples,
        all channels alike): ``blanked``, the samples the pipeline filled in over the
        pulses; ``stimulating``, from a train's start to just after its end (M-wave
        tails, the comb's residue). Called by the pipeline before :meth:`process` when a
        chunk has any; a detector that learns its rest from the signal should not learn
        it there. Ignored by default."""

    def pop_notes(self) -> list[RestNote]:
        """What the rest learning found since the last call (none by default)."""
        return []

    # -- state --------------------------------------------------------------------------
    @property
    def ready(self) -> np.ndarray:
        """Per channel: thresholds are known (calibrated, or enough rest was seen)."""
        return np.isfinite(self.on_threshold)

    @property
    @abstractmethod
    def active(self) -> np.ndarray:
        """Per channel: between an onset and its offset."""

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} kind={self.kind!r} fs={self.fs:g} "
                f"channels={len(self.channels)}>")


def statistic_of(kind: str) -> Statistic:
    """What the statistic of detector ``kind`` (a config's ``[detector] kind``) is, as
    its class declares (:attr:`Detector.statistic_info`); for a kind that cannot be loaded
    here (a recording of another installation's add-on), a statistic named after it,
    without a unit."""
    from closedloop.registry import DETECTORS

    try:
        cls = DETECTORS.load(kind or "threshold")
    except (ClosedLoopError, ImportError):
        return Statistic(f"{kind} statistic")
    stat = getattr(cls, "statistic_info", None)
    if not isinstance(stat, Statistic):
        return Statistic(f"{kind} statistic")
    if stat == Detector.statistic_info:  # the base's default: name it after the kind
        return Statistic(f"{kind} statistic", stat.unit, stat.short, stat.offsets_on_it)
    return stat


def first_run(b: np.ndarray, run0: int, need: int) -> tuple[int, int]:
    """First index where a run of True in ``b`` reaches ``need`` (counting ``run0`` True
    samples before index 0), or -1; and the run length at the last sample.

    The building block of every minimum on-time / off-time rule: exact across chunks
    when the caller carries the returned run length into the next chunk.
    """
    n = b.shape[0]
    idx = np.arange(n)
    last_false = np.maximum.accumulate(np.where(b, -(run0 + 1), idx))
    run = idx - last_false
    hits = np.flatnonzero(run >= need)
    return (int(hits[0]) if hits.size else -1), int(run[-1])
