"""What the live view keeps between screen refreshes: pure data structures, no Qt, no LSL.

The LSL client thread writes into these and the window reads copies of them on a timer
(see :mod:`closedloop.view.lsl_client`), so everything here is plain numpy and Python,
testable without a display:

* :class:`RingBuffer` — the last ``capacity`` samples of a multichannel stream with
  their timestamps;
* :func:`peak_downsample` — min/max decimation, so a 2 kHz trace drawn on a few hundred
  pixels keeps every spike (the same idea as pyqtgraph's ``mode='peak'``);
* :class:`PeakRing` — the same decimation done once, as samples arrive: the minimum and
  maximum of every bin of a few samples, so a screen refresh copies a few thousand
  numbers instead of the window's raw samples; :func:`regroup` merges bins further
  (aligned to the bin count, so peaks do not flicker from frame to frame);
* :func:`display_units`, :func:`nice_step`, :func:`robust_extent` — clinical units and
  amplitude scales that stimulation artefacts do not flatten;
* :class:`StimTrack` — stimulation commands turned into on-bands with their current;
* :class:`TrialTracker` — trial markers turned into what the trial panel shows (the
  cue and the trial number; the counts come from the session's running totals,
  :class:`closedloop.io.outlets.SessionTally`);
* :class:`QualityTracker` — per-channel flat / saturated / mains checks on raw EMG,
  plus issues the session reports in its markers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.core.detectors.base import statistic_of
from closedloop.units import DisplayUnits
from closedloop.units import display_units as clinical_units


# -- ring buffer --------------------------------------------------------------------------
class RingBuffer:
    """The last ``capacity`` samples of an ``n_channels`` stream, with timestamps.

    Parameters
    ----------
    n_channels : int
    capacity : int
        Samples kept; older ones are overwritten.

    Notes
    -----
    Not thread-safe by itself: the owner holds a lock around :meth:`extend` and the
    reads, and the reads return copies, so a reader never sees a half-written chunk.
    """

    def __init__(self, n_channels: int, capacity: int) -> None:
        if n_channels < 1 or capacity < 1:
            raise ValueError(f"n_channels={n_channels} and capacity={capacity} must be >= 1")
        self.n_channels = int(n_channels)
        self.capacity = int(capacity)
        self._x = np.zeros((self.capacity, self.n_channels))
        self._t = np.zeros(self.capacity)
        self._pos = 0  # next write index
        self.total = 0  # samples ever written

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def clear(self) -> None:
        """Forget every sample."""
        self._pos = 0
        self.total = 0

    def extend(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Append ``values`` (n, n_channels) stamped ``timestamps`` (n,)."""
        values = np.asarray(values, dtype=np.float64)
        ts = np.asarray(timestamps, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.n_channels or ts.shape != values.shape[:1]:
            raise ValueError(
                f"expected values (n, {self.n_channels}) and n timestamps, "
                f"got {values.shape} and {ts.shape}"
            )
        n = values.shape[0]
        if n == 0:
            return
        if n >= self.capacity:
            values, ts = values[-self.capacity :], ts[-self.capacity :]
            self._x[:] = values
            self._t[:] = ts
            self._pos = 0
            self.total += n
            return
        first = min(n, self.capacity - self._pos)
        self._x[self._pos : self._pos + first] = values[:first]
        self._t[self._pos : self._pos + first] = ts[:first]
        rest = n - first
        if rest:
            self._x[:rest] = values[first:]
            self._t[:rest] = ts[first:]
        self._pos = (self._pos + n) % self.capacity
        self.total += n

    def latest(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the last ``n`` (default: all kept) timestamps and samples, oldest first."""
        have = len(self)
        n = have if n is None else max(0, min(int(n), have))
        if n == 0:
            return np.zeros(0), np.zeros((0, self.n_channels))
        idx = (self._pos - n + np.arange(n)) % self.capacity
        return self._t[idx], self._x[idx]

    def since(self, t_from: float) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the samples stamped at or after ``t_from`` (timestamps increase)."""
        t, x = self.latest()
        k = int(np.searchsorted(t, t_from, side="left"))
        return t[k:], x[k:]

    @property
    def last_time(self) -> float:
        """Timestamp of the newest sample (NaN when empty)."""
        if self.total == 0:
            return math.nan
        return float(self._t[(self._pos - 1) % self.capacity])


# -- peak downsampling ----------------------------------------------------------------------
def peak_downsample(
    t: np.ndarray, x: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation of ``x`` (n,) or (n, k) to at most ``max_points`` points per column.

    Samples are grouped in bins of ``ceil(n / (max_points // 2))``; each bin becomes two
    points, its minimum then its maximum (per column), both at the bin's first timestamp,
    so every peak of the original trace is still drawn. A trailing partial bin is kept.
    Short inputs are returned unchanged (as copies).
    """
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n = t.shape[0]
    if x.shape[0] != n:
        raise ValueError(f"{n} timestamps but {x.shape[0]} samples")
    if max_points < 2:
        raise ValueError(f"max_points={max_points} must be >= 2")
    if n <= max_points:
        return t.copy(), x.copy()
    factor = math.ceil(n / (max_points // 2))
    n_bins = math.ceil(n / factor)
    pad = n_bins * factor - n
    squeeze = x.ndim == 1
    xx = x[:, None] if squeeze else x
    if pad:
        # repeat the last sample: it changes neither the min nor the max of its bin
        xx = np.concatenate([xx, np.repeat(xx[-1:], pad, axis=0)])
    blocks = xx.reshape(n_bins, factor, xx.shape[1])
    out = np.empty((2 * n_bins, xx.shape[1]))
    out[0::2] = blocks.min(axis=1)
    out[1::2] = blocks.max(axis=1)
    tt = np.repeat(t[::factor][:n_bins], 2)
    return tt, (out[:, 0] if squeeze else out)


class PeakRing:
    """Min/max of consecutive bins of ``bin_size`` samples, for the last ``n_bins`` bins.

    Bins are counted from the first sample given (bin ``i`` holds samples
    ``i * bin_size .. (i + 1) * bin_size - 1``), so a bin never changes once complete and
    the drawn peaks stay where they are while the trace scrolls. The bin still filling
    is returned too (:meth:`since`), so the newest samples are drawn at once.

    Parameters
    ----------
    n_channels, bin_size, n_bins : int
    """

    def __init__(self, n_channels: int, bin_size: int, n_bins: int) -> None:
        if n_channels < 1 or bin_size < 1 or n_bins < 2:
            raise ValueError(f"n_channels={n_channels}, bin_size={bin_size} and "
                             f"n_bins={n_bins} must be >= 1, 1 and 2")
        self.n_channels, self.bin_size, self.n_bins = int(n_channels), int(bin_size), int(n_bins)
        self._lo = np.zeros((self.n_bins, self.n_channels))
        self._hi = np.zeros((self.n_bins, self.n_channels))
        self._t = np.zeros(self.n_bins)
        self.bins = 0  # complete bins ever written
        self._part_lo = np.full(self.n_channels, np.inf)
        self._part_hi = np.full(self.n_channels, -np.inf)
        self._part_t = math.nan
        self._part_n = 0
        self.total = 0  # samples ever given

    def _put(self, t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Append complete bins (first-sample times ``t``)."""
        n = t.shape[0]
        if n >= self.n_bins:
            t, lo, hi = t[-self.n_bins:], lo[-self.n_bins:], hi[-self.n_bins:]
            skipped = n - self.n_bins
            self.bins += skipped
            n = self.n_bins
        pos = self.bins % self.n_bins
        first = min(n, self.n_bins - pos)
        for dst, src in ((self._t, t), (self._lo, lo), (self._hi, hi)):
            dst[pos:pos + first] = src[:first]
            if n > first:
                dst[:n - first] = src[first:]
        self.bins += n

    def extend(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Add samples ``values`` (n, n_channels) stamped ``timestamps`` (n,)."""
        x = np.asarray(values, dtype=np.float64)
        ts = np.asarray(timestamps, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_channels or ts.shape != x.shape[:1]:
            raise ValueError(f"expected values (n, {self.n_channels}) and n timestamps, "
                             f"got {x.shape} and {ts.shape}")
        n = x.shape[0]
        if n == 0:
            return
        self.total += n
        b = self.bin_size
        i = 0
        if self._part_n:  # finish the bin under way
            take = min(b - self._part_n, n)
            np.minimum(self._part_lo, x[:take].min(axis=0), out=self._part_lo)
            np.maximum(self._part_hi, x[:take].max(axis=0), out=self._part_hi)
            self._part_n += take
            i = take
            if self._part_n == b:
                self._put(np.array([self._part_t]), self._part_lo[None], self._part_hi[None])
                self._part_n = 0
        whole = (n - i) // b
        if whole:
            blocks = x[i:i + whole * b].reshape(whole, b, self.n_channels)
            self._put(ts[i:i + whole * b:b], blocks.min(axis=1), blocks.max(axis=1))
            i += whole * b
        if i < n:  # start a new bin
            self._part_t = float(ts[i])
            self._part_lo[:] = x[i:].min(axis=0)
            self._part_hi[:] = x[i:].max(axis=0)
            self._part_n = n - i

    def since(self, t_from: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Bins whose first sample is at or after ``t_from``, oldest first, and the bin
        under way: ``(index of the first bin, times, minima, maxima)`` (copies)."""
        have = min(self.bins, self.n_bins)
        idx = (self.bins - have + np.arange(have)) % self.n_bins
        t = self._t[idx]
        k = int(np.searchsorted(t, t_from, side="left"))
        t, lo, hi = t[k:], self._lo[idx[k:]], self._hi[idx[k:]]
        if self._part_n:
            t = np.append(t, self._part_t)
            lo = np.vstack([lo, self._part_lo[None]])
            hi = np.vstack([hi, self._part_hi[None]])
        return self.bins - have + k, t, lo, hi


def regroup(first: int, t: np.ndarray, lo: np.ndarray, hi: np.ndarray, factor: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge bins ``factor`` at a time (groups aligned to bin numbers that are multiples
    of ``factor``, ``first`` being the number of the first bin given); a partial group
    at either end is kept. Returns ``(times, minima, maxima)``."""
    factor = max(1, int(factor))
    n = t.shape[0]
    if factor == 1 or n == 0:
        return t, lo, hi
    head = (-first) % factor
    head = min(head, n)
    whole = (n - head) // factor
    end = head + whole * factor
    parts_t, parts_lo, parts_hi = [], [], []
    if head:
        parts_t.append(t[:1])
        parts_lo.append(lo[:head].min(axis=0, keepdims=True))
        parts_hi.append(hi[:head].max(axis=0, keepdims=True))
    if whole:
        parts_t.append(t[head:end:factor])
        parts_lo.append(lo[head:end].reshape(whole, factor, -1).min(axis=1))
        parts_hi.append(hi[head:end].reshape(whole, factor, -1).max(axis=1))
    if end < n:
        parts_t.append(t[end:end + 1])
        parts_lo.append(lo[end:].min(axis=0, keepdims=True))
        parts_hi.append(hi[end:].max(axis=0, keepdims=True))
    return np.concatenate(parts_t), np.concatenate(parts_lo), np.concatenate(parts_hi)


# -- units and scales -----------------------------------------------------------------------
def display_units(units: str, detector_kind: str = "threshold") -> DisplayUnits:
    """Units for the EMG stream's ``units`` and the statistic of the detector
    ``detector_kind`` (as its class declares it:
    :func:`~closedloop.core.detectors.base.statistic_of`).

    A voltage (V, mV, uV) is shown in µV. Anything else (``counts``, an unknown or
    empty unit) is shown as it is, named as the stream names it: closedloop does not
    know the amplifier's gain.
    """
    return clinical_units(units, statistic_of(detector_kind))


def nice_step(x: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above ``x`` (0 for x <= 0 or not finite)."""
    if not (x > 0 and math.isfinite(x)):
        return 0.0
    e = math.floor(math.log10(x))
    for m in (5.0, 2.0, 1.0):
        v = m * 10.0**e
        if v <= x * (1 + 1e-12):
            return v
    return 10.0 ** (e - 1) * 5.0


def fmt_value(x: float) -> str:
    """A tick label: few digits, no exponent for the usual EMG ranges."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 1:
        return f"{x:.3g}"
    return f"{x:.2g}"


def robust_extent(values: np.ndarray, keep: np.ndarray | None = None,
                  q: float = 99.5) -> float:
    """The ``q``-th percentile of ``|values|`` (one channel) where ``keep`` is True (all
    of them when ``keep`` is None or keeps too few); NaN ignored.

    A scale fitted to it is not flattened by a few samples of stimulation artefact or
    by stretches the caller leaves out (``keep``: outside stimulation).
    """
    v = np.abs(np.asarray(values, dtype=np.float64))
    if keep is not None and keep.sum() >= max(8, 0.05 * keep.size):
        v = v[keep]
    if v.size == 0 or not np.isfinite(v).any():
        return math.nan
    return float(np.nanpercentile(v, q))


def step_xy(
    t: np.ndarray, values: np.ndarray, t_end: float, t_from: float = -math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """A step trace: ``values[i]`` holds from ``t[i]`` until ``t[i+1]`` (the last until ``t_end``).

    Returns x and y with two points per value (the corners of the step), times clipped
    to ``[t_from, t_end]``, ready for a plain ``setData`` (no ``stepMode``).
    """
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape:
        raise ValueError(f"{t.shape[0]} times but {v.shape[0]} values")
    if t.size == 0:
        return np.zeros(0), np.zeros(0)
    ends = np.append(t[1:], t_end)
    x = np.empty(2 * t.size)
    x[0::2] = t
    x[1::2] = ends
    return np.clip(x, t_from, t_end), np.repeat(v, 2)


# -- stimulation bands ------------------------------------------------------------------------
@dataclass(frozen=True)
class StimBand:
    """One period of stimulation on a muscle: from ``start`` to ``end`` (NaN: still on)."""

    muscle: str
    start: float
    end: float
    peak_ma: float


class StimTrack:
    """Stimulation commands (level changes) per muscle, as on-bands with their current.

    A command sets a channel's level until the next command; ``current_ma == 0`` is off.
    A band runs from the first non-zero command to the next zero one and remembers its
    largest current (ramps go up in steps).
    """

    def __init__(self, keep_s: float = 60.0) -> None:
        self.keep_s = float(keep_s)
        self._bands: dict[str, deque[StimBand]] = {}
        self._open: dict[str, StimBand] = {}
        self.current: dict[str, float] = {}
        #: per muscle: (pulse width in µs, frequency in Hz) of its last command
        self.params: dict[str, tuple[float, float]] = {}

    def add(self, muscle: str, time: float, current_ma: float,
            pulse_width_us: float = math.nan, frequency_hz: float = math.nan) -> None:
        """One command: ``muscle`` goes to ``current_ma`` at stream time ``time``."""
        cur = float(current_ma) if math.isfinite(current_ma) else 0.0
        self.current[muscle] = cur
        self.params[muscle] = (float(pulse_width_us), float(frequency_hz))
        band = self._open.get(muscle)
        if cur > 0.0:
            if band is None:
                self._open[muscle] = StimBand(muscle, float(time), math.nan, cur)
            elif cur > band.peak_ma:
                self._open[muscle] = StimBand(muscle, band.start, math.nan, cur)
        elif band is not None:
            del self._open[muscle]
            q = self._bands.setdefault(muscle, deque())
            q.append(StimBand(muscle, band.start, float(time), band.peak_ma))
            while q and q[0].end < time - self.keep_s:
                q.popleft()

    def stop_all(self, time: float) -> None:
        """Every muscle off at ``time`` (e.g. the session's stream ended)."""
        for muscle in list(self._open):
            self.add(muscle, time, 0.0)

    def bands(self, t_from: float) -> list[StimBand]:
        """Bands that end at or after ``t_from`` (open bands included), by start time."""
        out = [b for q in self._bands.values() for b in q if b.end >= t_from]
        out.extend(self._open.values())
        return sorted(out, key=lambda b: b.start)


# -- trials -----------------------------------------------------------------------------------
#: Marker labels the trial panel understands (the protocol's TrialEvent kinds).
TRIAL_LABELS = ("cue", "hit", "miss", "trigger", "gated", "ignored", "early_stop", "done")


@dataclass
class TrialState:
    """What the trial panel shows.

    Attributes
    ----------
    cue : str
        Text of the current cue (``""`` between cues).
    cue_time : float
        Stream time of the last cue (NaN before the first).
    trial : int
        0-based number of the current or last trial (-1 before the first).
    n_trials : int or None
        Planned number of trials, when the session's config says so.
    hits, misses, triggers : int
    done : bool
        All trials are over.
    last : str
        The last trial marker's label.
    """

    cue: str = ""
    cue_time: float = math.nan
    trial: int = -1
    n_trials: int | None = None
    hits: int = 0
    misses: int = 0
    triggers: int = 0
    done: bool = False
    last: str = ""
    window_end: float = math.nan
    session_end: float = math.nan

    def time_left(self, now: float) -> float | None:
        """Seconds left in the response window, or of the planned session; None if unknown."""
        if math.isfinite(self.window_end) and now <= self.window_end and self.cue:
            return self.window_end - now
        if math.isfinite(self.session_end):
            return max(0.0, self.session_end - now)
        return None


class TrialTracker:
    """Folds trial markers (``label``, ``time``, ``fields``) into a :class:`TrialState`.

    Parameters
    ----------
    n_trials : int, optional
        Planned trials (from the session's ``[protocol.trials]``).
    response_window_s : float, optional
        How long after a cue an onset counts as a hit (shows the time left to respond).
    trial_period_s : float, optional
        ``work_s + rest_s``: with ``n_trials`` it gives the planned end of the session.
    """

    def __init__(
        self,
        n_trials: int | None = None,
        response_window_s: float | None = None,
        trial_period_s: float | None = None,
    ) -> None:
        self.response_window_s = response_window_s
        self.trial_period_s = trial_period_s
        self.state = TrialState(n_trials=n_trials)

    def add(self, label: str, time: float, fields: Mapping[str, Any] | None = None) -> bool:
        """Take one marker; True when it was a trial marker."""
        if label not in TRIAL_LABELS:
            return False
        f = dict(fields or {})
        s = self.state
        s.last = label
        trial = f.get("trial")
        if isinstance(trial, int) and trial >= 0:
            s.trial = trial
        if label == "cue":
            muscle = str(f.get("muscle") or "")
            s.cue = f"move {muscle}" if muscle else "move"
            s.cue_time = float(time)
            if self.response_window_s is not None:
                s.window_end = float(time) + self.response_window_s
            if s.n_trials is not None and self.trial_period_s is not None and s.trial >= 0:
                s.session_end = float(time) + (s.n_trials - s.trial) * self.trial_period_s
        elif label == "hit":
            s.hits += 1
            s.cue = ""
        elif label == "miss":
            s.misses += 1
            s.cue = ""
        elif label == "trigger":
            s.triggers += 1
        elif label == "done":
            s.done = True
            s.cue = ""
            s.session_end = float(time)
        return True

    def snapshot(self) -> TrialState:
        """A copy of the current state."""
        return TrialState(**vars(self.state))


# -- channel quality ----------------------------------------------------------------------------
OK, FLAT, SATURATED, MAINS, NO_DATA = "ok", "flat", "saturated", "mains", "no data"
#: Worst first: the one shown when a channel has several problems.
SEVERITY = (FLAT, SATURATED, MAINS, NO_DATA, OK)


@dataclass(frozen=True)
class ChannelQuality:
    """One channel's state: ``status`` (one of :data:`SEVERITY`) and why."""

    status: str
    detail: str = ""


def mains_fraction(x: np.ndarray, fs: float, mains_hz: float, harmonics: int = 3) -> np.ndarray:
    """Fraction of each column's power (above 10 Hz) within +-2 Hz of mains and harmonics.

    ``x`` is (n, k) raw EMG. The mean is removed and a Hann window applied; power below
    10 Hz (drift, motion) is left out of the total. Columns without power give 0.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 16:
        return np.zeros(x.shape[1])
    w = np.hanning(n)[:, None]
    spec = np.abs(np.fft.rfft((x - x.mean(axis=0)) * w, axis=0)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    above = freqs >= 10.0
    near = np.zeros_like(above)
    for k in range(1, harmonics + 1):
        near |= np.abs(freqs - k * mains_hz) <= 2.0
    total = spec[above].sum(axis=0)
    hum = spec[near & above].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, hum / total, 0.0)
    return frac


class QualityTracker:
    """Per-channel quality from the raw EMG of the last ``window_s``, plus reported issues.

    Checks on the newest ``window_s`` of raw samples (called on a timer, not per chunk):

    * **flat**: the channel did not change at all (peak-to-peak 0): disconnected lead or
      a dead channel;
    * **saturated**: at least ``saturation_fraction`` of the samples sit exactly at the
      window's maximum or minimum: the amplifier is at its rail;
    * **mains**: more than ``mains_limit`` of the power above 10 Hz is mains hum: poor
      electrode contact (the notch filter hides it from the detector, not from the skin).

    Issues the session reports (marker ``input_issue`` with ``kind`` and ``channel``)
    are shown for ``report_hold_s`` of stream time even when the local checks pass, and
    instead of the local finding when that is no worse.
    """

    def __init__(
        self,
        channels: Sequence[str],
        fs: float,
        *,
        mains_hz: float = 50.0,
        mains_limit: float = 0.9,
        saturation_fraction: float = 0.02,
        report_hold_s: float = 3.0,
    ) -> None:
        self.channels = tuple(channels)
        self.fs = float(fs)
        self.mains_hz = float(mains_hz) if mains_hz > 0 else 50.0
        self.mains_limit = float(mains_limit)
        self.saturation_fraction = float(saturation_fraction)
        self.report_hold_s = float(report_hold_s)
        self._reported: dict[str, tuple[str, str, float]] = {}

    def report(self, channel: str | None, kind: str, time: float, message: str = "") -> None:
        """An issue the session reported; ``channel=None`` applies it to every channel."""
        # a held (pinned or frozen) or non-finite channel shows as "no signal change"
        kind = {"saturation": SATURATED, "held": FLAT, "nonfinite": FLAT}.get(kind, kind)
        if kind not in (FLAT, SATURATED, MAINS):
            return
        for ch in self.channels if channel is None else (channel,):
            if ch in self.channels:
                self._reported[ch] = (kind, message or f"reported by the session: {kind}", time)

    def assess(self, raw: np.ndarray, now: float) -> dict[str, ChannelQuality]:
        """Quality of every channel from ``raw`` (n, n_channels), the newest samples."""
        raw = np.asarray(raw, dtype=np.float64)
        out: dict[str, ChannelQuality] = {}
        if raw.shape[0] < max(16, int(0.1 * self.fs)):
            for ch in self.channels:
                out[ch] = ChannelQuality(NO_DATA, "waiting for EMG")
            return self._merge(out, now)
        finite = np.isfinite(raw)
        ptp = np.where(finite.any(axis=0), np.nanmax(raw, axis=0) - np.nanmin(raw, axis=0), 0.0)
        frac = mains_fraction(np.where(finite, raw, 0.0), self.fs, self.mains_hz)
        n = raw.shape[0]
        hi, lo = np.nanmax(raw, axis=0), np.nanmin(raw, axis=0)
        at_rail = ((raw == hi) | (raw == lo)).sum(axis=0) / n
        for k, ch in enumerate(self.channels):
            if not finite[:, k].all():
                out[ch] = ChannelQuality(FLAT, "non-finite samples: check the amplifier")
            elif ptp[k] == 0.0:
                out[ch] = ChannelQuality(FLAT, "no signal change: check the lead and electrode")
            elif at_rail[k] >= self.saturation_fraction:
                out[ch] = ChannelQuality(
                    SATURATED, f"{100 * at_rail[k]:.0f}% of samples at the rail: check gain/skin"
                )
            elif frac[k] > self.mains_limit:
                out[ch] = ChannelQuality(
                    MAINS, f"{100 * frac[k]:.0f}% mains hum: check electrode contact"
                )
            else:
                out[ch] = ChannelQuality(OK, "")
        return self._merge(out, now)

    def _merge(self, local: dict[str, ChannelQuality], now: float) -> dict[str, ChannelQuality]:
        for ch, (kind, msg, t) in list(self._reported.items()):
            if not (now - t <= self.report_hold_s):
                del self._reported[ch]
                continue
            # as bad or worse than the view's own check: the session's message, which
            # names the sample and what to check
            if SEVERITY.index(kind) <= SEVERITY.index(local[ch].status):
                local[ch] = ChannelQuality(kind, msg)
        return local


# -- timed log ----------------------------------------------------------------------------------
class TimedLog:
    """The last ``capacity`` ``(time, item)`` pairs (detector events, markers), oldest first."""

    def __init__(self, capacity: int = 500) -> None:
        self.capacity = int(capacity)
        self._items: deque[tuple[float, Any]] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, time: float, item: Any) -> None:
        """Keep ``item`` stamped ``time``."""
        self._items.append((float(time), item))

    def clear(self) -> None:
        """Forget every item."""
        self._items.clear()

    def since(self, t_from: float) -> list[tuple[float, Any]]:
        """Pairs stamped at or after ``t_from`` (a new list)."""
        return [it for it in self._items if it[0] >= t_from]
