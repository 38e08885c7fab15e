"""What the loop processed, kept while a recording is replayed through it.

:class:`Processed` stands in for a live session's outlets
(:func:`~closedloop.runtime.replay.replay_session` hands it everything the loop
publishes) and keeps, in constant memory whatever the session's length:

* each muscle's **envelope** (the detector's statistic) as the detector saw it, after
  stimulation pulses were blanked, as the lowest and highest value in each of about
  :data:`BINS` bins over the session, with the on-threshold in force at each bin's end:
  enough to draw an hour at a page's resolution;
* for a detector whose statistic is not an EMG amplitude (cusum: nats), each muscle's
  **EMG level** likewise: the amplitude envelope of the same filtered, blanked EMG
  (:func:`~closedloop.core.envelope.level_settings`), in the source's units,
  restarted where the pipeline restarted the channel after a bad stretch
  (:attr:`Block.restarts <closedloop.core.events.Block.restarts>`);
* the **voluntary effort of every attempt**, from each onset to the muscle's offset (at
  most :data:`MAX_ATTEMPT_S`): the mean (RMS of the filtered EMG over the samples that
  were not blanked, nor within the effort guard after a blanked stretch) and the peak
  of the voluntary effort (:class:`~closedloop.core.effort.EffortEstimator`, which
  measures the EMG between the pulses), both in the source's units. Before the onset
  is the rest that was; during stimulation the artefacts and M-waves are blanked, so
  what is measured is the patient's own EMG;
* the markers the loop published (input checks, trial events).

Everything is on the replay's sample clock: row ``k`` of the recording is sample ``k``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from closedloop.config import Config
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.detectors.base import statistic_of
from closedloop.core.effort import EffortEstimator, EffortSettings
from closedloop.core.envelope import Envelope, level_settings
from closedloop.core.events import OFFSET, ONSET, SUSPEND, Block

#: About this many bins over the session for the envelope plot (a page's width).
BINS = 1000
#: An attempt is measured for at most this long after its onset, s.
MAX_ATTEMPT_S = 10.0


@dataclass
class Attempt:
    """One attempt of one muscle (an onset up to its offset), measured.

    Attributes
    ----------
    muscle : str
    onset, end : int
        Samples of the onset and of the end of the measurement (the offset, a
        suspension, :data:`MAX_ATTEMPT_S` or the end of the recording).
    mean : float
        RMS of the filtered EMG over the samples not blanked (source units; NaN when
        every sample was blanked).
    peak : float
        Highest voluntary effort during the attempt (source units; NaN when unknown).
    counted : int
        Samples that were not blanked.
    stimulated : bool
        Stimulation ran during some of it.
    """

    muscle: str
    onset: int
    end: int = -1
    mean: float = math.nan
    peak: float = math.nan
    counted: int = 0
    stimulated: bool = False
    _sumsq: float = field(default=0.0, repr=False)


@dataclass
class Marker:
    """A marker the loop published (label, stream time, sample, fields)."""

    label: str
    time: float
    sample: int | None
    fields: dict[str, Any]


class Processed:
    """Keeps what the loop processed (see the module docstring); a publisher for
    :func:`~closedloop.runtime.loop.run_loop`.

    Parameters
    ----------
    config : Config
        The config the replay runs with (muscles, blanking).
    fs : float
    n : int
        Samples the replay will process (sets the bins).
    bins : int
        About this many bins over the ``n`` samples.
    """

    def __init__(self, config: Config, fs: float, n: int, *, bins: int = BINS) -> None:
        self.fs = float(fs)
        self.muscles = config.muscle_names
        k = len(self.muscles)
        self.bin_size = max(1, -(-int(n) // max(1, bins)))
        n_bins = max(1, -(-int(n) // self.bin_size))
        self.env_min = np.full((n_bins, k), np.inf)
        self.env_max = np.full((n_bins, k), -np.inf)
        self.on_threshold = np.full((n_bins, k), np.nan)
        #: The EMG level's bins (None when the detector's statistic is that level).
        self.level_min: np.ndarray | None = None
        self.level_max: np.ndarray | None = None
        self._level: Envelope | None = None
        if not statistic_of(config.detector_kind).of_emg:
            self._level = Envelope(level_settings(config.envelope), self.fs, k)
            self.level_min = np.full((n_bins, k), np.inf)
            self.level_max = np.full((n_bins, k), -np.inf)
        self.processed = 0  # samples the loop processed
        self.markers: list[Marker] = []
        self.attempts: list[Attempt] = []
        # the pulse schedule of the commands the loop handed over: which samples were
        # blanked (a pure query), for the effort
        self._remover = ArtifactRemover(config.artifacts, self.fs, self.muscles,
                                        config.filters.notch_hz)
        self._effort = EffortEstimator(EffortSettings(), self.fs, k, self._remover)
        self._open: dict[int, Attempt] = {}
        self._longest = int(MAX_ATTEMPT_S * self.fs)

    # -- the publisher interface ------------------------------------------------------------
    def push_emg(self, samples: np.ndarray, timestamps: np.ndarray, *, start: int | None = None,
                 source_counter: Any = False) -> None:
        """The raw samples: not kept (the recording has them)."""

    def push_mwaves(self, records: Sequence[Any]) -> None:
        """The evoked-response (M-wave) records: not kept (the recording has them)."""

    def push_commands(self, commands: Sequence[Any]) -> None:
        """The commands handed to the stimulator: their pulses are blanked from their
        effective sample (the final offs of the session carry none, and change none)."""
        for c in commands:
            if c.effective_sample >= 0:
                self._remover.command(c.muscle, c.channel, c.is_on, c.pulse_rate_hz,
                                      c.effective_sample)

    def push_marker(self, label: str, time: float, *, sample: int | None = None,
                    **fields: Any) -> None:
        """A marker (input checks, trial events): kept."""
        self.markers.append(Marker(label, float(time), sample, dict(fields)))

    def push_block(self, block: Block) -> None:
        """One block of the signal core: its envelope into the bins, its attempts
        measured."""
        a, m = block.start, block.n
        if m == 0:
            return
        self._bins(block)
        effort = self._effort.process(block.filtered, a)
        counted = self._effort.counted(a, m)
        stimulating = self._remover.stimulating(a, m) if self._remover.enabled else None
        square = block.filtered * block.filtered
        for c, name in enumerate(self.muscles):
            pos = a
            for e in (e for e in block.events if e.channel == name):
                self._measure(c, pos, e.sample, a, effort, counted, square, stimulating)
                pos = e.sample
                if e.kind == ONSET and c not in self._open:
                    self._open[c] = Attempt(name, e.sample)
                elif e.kind in (OFFSET, SUSPEND):
                    self._close(c, e.sample)
            self._measure(c, pos, a + m, a, effort, counted, square, stimulating)
        self.processed = a + m

    def finish(self) -> None:
        """The end of the replay: attempts still under way end with it."""
        for c in list(self._open):
            self._close(c, self.processed)

    # -- parts ------------------------------------------------------------------------------
    def _bins(self, block: Block) -> None:
        a, m, b = block.start, block.n, self.bin_size
        first, last = a // b, (a + m - 1) // b
        edges = np.arange(first + 1, last + 1) * b - a  # block rows where a new bin starts
        starts = np.r_[0, edges].astype(np.intp)
        rows = slice(first, last + 1)
        series = [(block.envelope, self.env_min, self.env_max)]
        if self._level is not None and self.level_min is not None \
                and self.level_max is not None:
            for c in block.restarts:  # after a bad stretch, as the core's own envelope
                self._level.restart_channel(c)
            series.append((self._level.process(block.filtered), self.level_min,
                           self.level_max))
        for values, low, high in series:
            x = np.asarray(values, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                lo = np.fmin.reduceat(x, starts, axis=0)
                hi = np.fmax.reduceat(x, starts, axis=0)
            low[rows] = np.fmin(low[rows], lo)
            high[rows] = np.fmax(high[rows], hi)
        self.on_threshold[rows] = block.on_threshold  # in force at the block's end

    def _measure(self, c: int, lo: int, hi: int, a: int, effort: np.ndarray,
                 counted: np.ndarray, square: np.ndarray, stimulating) -> None:
        """Add samples ``lo .. hi - 1`` (of the block starting at ``a``) to muscle
        ``c``'s attempt under way, if any."""
        att = self._open.get(c)
        if att is None:
            return
        hi = min(hi, att.onset + self._longest)
        if hi > lo:
            keep = counted[lo - a : hi - a]
            att._sumsq += float(square[lo - a : hi - a, c][keep].sum())
            att.counted += int(keep.sum())
            seg = effort[lo - a : hi - a, c]
            if np.isfinite(seg).any():
                att.peak = float(np.fmax(np.nanmax(seg), att.peak))
            if stimulating is not None:
                att.stimulated |= bool(stimulating[lo - a : hi - a].any())
        if hi >= att.onset + self._longest:
            self._close(c, hi)

    def _close(self, c: int, end: int) -> None:
        att = self._open.pop(c, None)
        if att is None:
            return
        att.end = end
        att.mean = math.sqrt(att._sumsq / att.counted) if att.counted else math.nan
        self.attempts.append(att)


__all__ = ["BINS", "MAX_ATTEMPT_S", "Attempt", "Marker", "Processed"]
