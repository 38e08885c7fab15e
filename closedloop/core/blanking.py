"""Stimulation artifacts out of the EMG: blank every pulse, then cancel what is left.

Electrical stimulation puts a large artifact on every EMG channel at each pulse (the
stimulated muscle's own channel most, the others by cross-talk) and an M-wave on the
stimulated muscle's channel for ~10 ms after it. Left in, they would trigger the
detector on every channel and hide the patient's own (voluntary) EMG. Two stages, both
causal, pure and chunk-invariant to the bit:

1. **Blanking** (raw samples, before filtering): from each pulse, ``blank_ms`` of samples
   on every channel are replaced by the channel's level just before the pulse
   (sample-and-hold) with the mains hum carried on through the stretch (see
   :meth:`ArtifactRemover.blank_inplace`), so the band-pass never sees the artifact or
   the M-wave, and the end of the stretch leaves no step to ring on.
2. **Comb** (filtered samples, while a channel's muscle is stimulated): what remains
   locked to the pulses (M-wave tail, the filter's response to the held stretch) is
   estimated as a template, one value per sample offset after a pulse, averaged over
   recent pulses (exponential average with weight ``1 / comb_pulses``), and subtracted.
   Voluntary EMG is not locked to the pulses, so it stays; subtracting the averaged
   template adds the template's own noise (a power factor ``2 / (2 - a)`` for weight
   ``a``), which the output is scaled down by, so voluntary EMG keeps its level.

Pulse times come from the commands that passed the safety guard, on the sample clock:
a command takes effect at its **effective sample** (see
:attr:`closedloop.stim.commands.StimCommand.effective_sample`; the live loop uses the
first sample after the block in which it was decided, which is where the simulated
stimulator starts its pulses) and a channel that is on pulses at
``anchor + k * fs / frequency`` (k = 0, 1, ...) until a command switches it off, with the
anchor rules of :class:`~closedloop.stim.drivers.sim.SimStimulator`: switching on sets the anchor
to the effective sample, a change of level keeps it, a change of frequency moves it to
the first pulse of the old grid at or after the change. A pulse at fractional position
``p`` is blanked from sample ``floor(p)`` for ``blank_ms`` plus one sample (so the
artifact, which the amplifier smears over two samples, is covered whichever way ``p``
rounds). A command must be given before any sample at or after its effective sample is
processed. With a real stimulator the device's own pulse clock decides the exact pulse
times, which the commands only approximate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from closedloop.config.signal import ArtifactSettings
from closedloop.core.sos import exponential_average


@dataclass
class PulseTrain:
    """One stimulator channel's pulses at one frequency, in samples.

    Pulses at ``anchor + k * period`` for integer k, from sample ``start`` (inclusive)
    to ``end`` (exclusive; ``inf`` while the channel is on).
    """

    channel: int
    column: int  # pipeline column of the stimulated muscle (-1: not an EMG channel)
    start: int
    anchor: float
    period: float
    end: float = math.inf
    template: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def k_range(self, lo: float, hi: float) -> range:
        """Indices k of the pulses with ``lo <= floor(anchor + k * period) < hi``."""
        lo, hi = max(lo, self.start), min(hi, self.end)
        if not lo < hi:
            return range(0)
        return range(self._first_at(lo), self._first_at(hi))

    def _first_at(self, t: float) -> int:
        """The first k >= 0 with ``pulse(k) >= t`` (pulse() is non-decreasing in k)."""
        k = max(0, math.ceil((t - self.anchor) / self.period) - 1)
        while self.pulse(k) < t:
            k += 1
        while k > 0 and self.pulse(k - 1) >= t:
            k -= 1
        return k

    def pulse(self, k: int) -> int:
        """First sample blanked for pulse ``k`` (the same formula at every call)."""
        return math.floor(self.anchor + k * self.period)


#: Weight of one mains period in the hum average of the blanking stage.
_HUM_WEIGHT = 1.0 / 16.0
#: The fill joins the mean of this long of samples before a blanked stretch, s.
_OFFSET_S = 0.005


def mains_period(fs: float, mains_hz: float) -> int:
    """Samples in the shortest whole number of mains cycles (up to 10) that is a whole
    number of samples to within 1 %; 0 without a mains frequency.

    50 Hz at 2000 Hz: 40 (one cycle); 60 Hz at 2000 Hz: 100 (three cycles).
    """
    if not mains_hz > 0:
        return 0
    for cycles in range(1, 11):
        m = cycles * fs / mains_hz
        if abs(m - round(m)) < 0.01:
            return int(round(m))
    return int(round(fs / mains_hz))


class ArtifactRemover:
    """Blanking and comb for the pipeline's channels; see the module docstring.

    Parameters
    ----------
    settings : ArtifactSettings
    fs : float
        Sampling rate, Hz.
    channels : sequence of str
        The pipeline's channel (muscle) names, in column order.
    mains_hz : float
        Mains frequency whose hum the blanking carries on (0: plain sample-and-hold).
    comb_all : bool
        Comb every channel, not only the stimulated muscle's: what is locked to the
        pulses on the other channels (the antagonist's cross-talk M-wave, the blanking's
        residue at pulse rates locked to the mains) goes too, which measuring voluntary
        effort on a channel that is not stimulated needs (see
        :mod:`closedloop.core.effort`). Each train then combs every channel.
    """

    def __init__(self, settings: ArtifactSettings, fs: float, channels: Sequence[str],
                 mains_hz: float = 0.0, *, comb_all: bool = False) -> None:
        self.settings = settings
        self.comb_all = bool(comb_all)
        self.fs = float(fs)
        self.channels = tuple(channels)
        self.mains_period = mains_period(self.fs, mains_hz)
        self.enabled = settings.blank_ms > 0
        self.width = int(math.ceil(settings.blank_ms * self.fs / 1000.0 - 1e-9)) + 1
        self._alpha = 1.0 / settings.comb_pulses
        self._gain = math.sqrt((2.0 - self._alpha) / 2.0)
        self._trains: list[PulseTrain] = []
        self._open: dict[int, PulseTrain] = {}
        nch = len(self.channels)
        self._hum = np.zeros((nch, max(self.mains_period, 1)))  # raw signal by mains phase
        self._resid = np.zeros((nch, max(1, round(_OFFSET_S * self.fs))))  # x - template
        self._offset = np.zeros(nch)  # fill = hum template + offset
        self._started = False
        self._last_blanked = False
        self._latest = 0  # latest effective sample seen (commands must come in order)

    # -- the schedule -----------------------------------------------------------------------
    def command(self, muscle: str, channel: int, on: bool, frequency_hz: float,
                effective_sample: int) -> None:
        """A stimulator channel changes at ``effective_sample`` (see the module docstring).

        Raises
        ------
        ValueError
            If effective samples go back in time.
        """
        if not self.enabled:
            return
        e = int(effective_sample)
        if e < self._latest:
            raise ValueError(f"artifact schedule: effective sample {e} is before {self._latest}")
        self._latest = e
        old = self._open.get(channel)
        on = on and frequency_hz > 0
        period = self.fs / frequency_hz if on else 0.0
        if old is not None and on and old.period == period:
            return  # a new level on the same pulse grid
        anchor = float(e)
        if old is not None:
            old.end = e
            del self._open[channel]
            if on:  # new frequency: first pulse of the old grid at or after the change
                anchor = old.anchor + math.ceil((e - old.anchor) / old.period - 1e-9) * old.period
        if on:
            col = self.channels.index(muscle) if muscle in self.channels else -1
            rows = (len(self.channels),) if self.comb_all else ()
            train = PulseTrain(channel, col, e, anchor, period,
                               template=np.zeros((*rows, int(math.ceil(period)) + 2)))
            self._trains.append(train)
            self._open[channel] = train

    def pulses(self, start: int, stop: int) -> list[int]:
        """First blanked sample of every pulse with one in ``[start, stop)``, sorted."""
        out = []
        for tr in self._trains:
            out += [tr.pulse(k) for k in tr.k_range(start, stop)]
        return sorted(out)

    def scheduled(self, start: int, stop: int) -> list[tuple[float, int, int, float]]:
        """``(position, channel, column, period)`` of every pulse whose first blanked
        sample is in ``[start, stop)``, by position then channel (a pure query).

        ``position`` is the pulse's exact place on the sample clock (``anchor + k *
        period``; its first blanked sample is ``floor(position)``), ``channel`` the
        stimulator channel, ``column`` the stimulated muscle's pipeline column (-1: not
        an EMG channel) and ``period`` its train's pulse interval in samples.
        """
        out = []
        for tr in self._trains:
            out += [(tr.anchor + k * tr.period, tr.channel, tr.column, tr.period)
                    for k in tr.k_range(start, stop)]
        return sorted(out)

    def blank_mask(self, start: int, n: int, extra: int = 0) -> np.ndarray:
        """Samples ``start .. start + n - 1`` that are blanked (a pure query); with
        ``extra``, also that many samples after every blanked stretch."""
        mask = np.zeros(n, dtype=bool)
        if not self._trains or n == 0:
            return mask
        width = self.width + max(int(extra), 0)
        for p in self.pulses(start - width + 1, start + n):
            mask[max(p - start, 0) : max(p + width - start, 0)] = True
        return mask

    def stimulating(self, start: int, n: int) -> np.ndarray:
        """Samples ``start .. start + n - 1`` from a train's start to ``blank_ms`` after
        its end: where stimulation artifacts can be, wherever its pulses really fall
        (a pure query)."""
        mask = np.zeros(n, dtype=bool)
        for tr in self._trains:
            a, b = tr.start - start, tr.end + self.width - start
            if a < n and b > 0:
                mask[max(a, 0) : int(min(b, n))] = True
        return mask

    def restart_channel(self, channel: int, level: float) -> None:
        """Forget what one channel's raw signal taught the blanking: its template
        restarts flat at ``level`` (see :meth:`Pipeline.restart_channel
        <closedloop.core.pipeline.Pipeline.restart_channel>`)."""
        self._hum[channel] = float(level)
        self._resid[channel] = 0.0

    # -- the two stages ---------------------------------------------------------------------
    def blank_inplace(self, x: np.ndarray, start: int) -> np.ndarray:
        """Stage 1 on raw ``x`` (n_channels, n), in place: fill every blanked stretch.

        A blanked sample is held at the level just before its stretch (sample-and-hold,
        the level being the mean over the last 5 ms, so one sample's noise does not
        offset the whole stretch), with the mains hum carried on: the hum is read from
        a per-phase average of the raw signal over past mains periods (exponential,
        weight 1/16, updated only from samples that are not blanked). Plain hold would
        freeze the hum for the whole stretch and leave a step at its end, which the
        band-pass turns into a transient at every pulse. Without a mains frequency the
        level is held as it is.
        """
        n = x.shape[1]
        if n == 0 or not self.enabled:
            return x
        self._forget(start)
        if not self._started:
            self._hum[:] = x[:, :1]
            self._started = True
        mask = self.blank_mask(start, n)
        edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
        bounds = [0, *edges.tolist(), n]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):  # runs, in order
            if mask[a]:
                if not self._last_blanked:  # a stretch starts: join the samples before it
                    self._offset = self._resid.mean(axis=1)
                self._fill(x, a, b, start)
            else:
                self._follow(x, a, b, start)
            self._last_blanked = bool(mask[a])
        return x

    def _fill(self, x: np.ndarray, a: int, b: int, start: int) -> None:
        """Samples ``a:b`` are blanked: the hum read by phase, plus the held offset."""
        p = self._hum.shape[1]
        phases = np.arange(start + a, start + b) % p
        x[:, a:b] = self._hum[:, phases] + self._offset[:, None]

    def _follow(self, x: np.ndarray, a: int, b: int, start: int) -> None:
        """Samples ``a:b`` are not blanked: each teaches the hum average of its phase
        (``hum = (1 - weight) * hum + weight * x``, one mains period after the other, as
        the recurrence it is) and the residual ``x - hum`` keeps the last 5 ms."""
        hum, p = self._hum, self._hum.shape[1]
        d = np.empty((x.shape[0], b - a))
        i = a if self.mains_period else b
        if not self.mains_period:  # plain sample-and-hold: nothing to learn
            np.subtract(x[:, a:b], hum[:, :1], out=d)
        while i < b:  # pieces never cross a period boundary: a phase once per piece
            ph0 = (start + i) % p
            j = min(b, i + p - ph0)
            if j - i == p and b - i >= 2 * p:  # whole periods: one piece each
                whole = (b - i) // p
                self._periods(x[:, i : i + whole * p])
                i += whole * p  # (their residuals: only the last period's can be kept)
                np.subtract(x[:, i - p : i], self._last_hum, out=d[:, i - a - p : i - a])
                continue
            phase = slice(ph0, ph0 + j - i)
            np.subtract(x[:, i:j], hum[:, phase], out=d[:, i - a : j - a])
            if self.mains_period:  # the same arithmetic as _periods' lfilter
                hum[:, phase] = (1.0 - _HUM_WEIGHT) * hum[:, phase] + _HUM_WEIGHT * x[:, i:j]
            i = j
        k = self._resid.shape[1]
        self._resid = np.concatenate((self._resid, d[:, -k:]), axis=1)[:, -k:]

    def _periods(self, x: np.ndarray) -> None:
        """Whole mains periods of ``x`` (n_channels, m * period, m >= 2) from phase 0
        through the hum average: per phase, one period after the other, ``hum = (1 - w)
        * hum + w * x`` (:func:`~closedloop.core.sos.exponential_average` evaluates exactly
        that, element by element, so a piece at a time in :meth:`_follow` gives the same
        bits); :attr:`_last_hum` is the average before the last period."""
        nch, p = self._hum.shape
        w = _HUM_WEIGHT
        m = x.shape[1] // p
        along = x.reshape(nch, m, p).transpose(0, 2, 1).reshape(nch * p, m)
        after = exponential_average(along, self._hum.ravel(), w).reshape(nch, p, m)
        self._last_hum = after[:, :, -2].copy()
        self._hum[...] = after[:, :, -1]  # in place: _follow holds it

    def comb_inplace(self, y: np.ndarray, start: int) -> np.ndarray:
        """Stage 2 on filtered ``y`` (n_channels, n), in place, on stimulated channels."""
        if not (self.enabled and self.settings.comb) or y.shape[1] == 0:
            return y
        stop = start + y.shape[1]
        a, g = self._alpha, self._gain
        for tr in self._trains:
            if self.comb_all:
                self._comb_all(tr, y, start, stop)
                continue
            if tr.column < 0:
                continue
            row = y[tr.column]
            # every pulse whose period (to the next pulse) overlaps the chunk
            for k in tr.k_range(start - tr.period - 1, stop):
                p0 = tr.pulse(k)
                p1 = tr.pulse(k + 1)
                lo, hi = max(p0, start), min(p1, stop)
                if lo >= hi:
                    continue
                d0, d1 = lo - p0, hi - p0
                seg = row[lo - start : hi - start]
                tmpl = tr.template[d0:d1]
                resid = seg - tmpl
                tmpl += a * resid
                seg[:] = g * resid
        return y

    def _comb_all(self, tr: PulseTrain, y: np.ndarray, start: int, stop: int) -> None:
        """The comb of one train on every channel (``comb_all``)."""
        a, g = self._alpha, self._gain
        for k in tr.k_range(start - tr.period - 1, stop):
            p0, p1 = tr.pulse(k), tr.pulse(k + 1)
            lo, hi = max(p0, start), min(p1, stop)
            if lo >= hi:
                continue
            seg = y[:, lo - start : hi - start]
            tmpl = tr.template[:, lo - p0 : hi - p0]
            resid = seg - tmpl
            tmpl += a * resid
            seg[:] = g * resid

    def _forget(self, position: int) -> None:
        """Drop trains whose last pulse and comb period end before ``position``."""
        keep = [t for t in self._trains if t.end + t.period + self.width + 2 > position]
        if len(keep) != len(self._trains):
            self._trains = keep


__all__ = ["ArtifactRemover", "ArtifactSettings", "PulseTrain"]
