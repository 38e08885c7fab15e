"""Impulse gate: raw samples far outside a channel's own range never trigger.

A knock on an electrode or its cable, a static discharge, or a driver that delivers
garbage (values of 1e10) puts a short burst on a channel far above anything the muscle
produces. Left to the detector it is an onset within ``min_on_ms``; through the filters
it rings for up to a second (the mains notch); in the moving RMS, values of 1e10 leave
a rounding residue larger than any EMG for good. The gate finds such stretches on the
raw samples, before the filters, so the caller can suspend the channel at once and
restart its filters when the stretch is over (:mod:`closedloop.runtime.inputs`).

The range it learns
-------------------
Raw samples are cut into blocks of ``block_ms`` aligned to absolute sample indices. Each
block that the gate did not flag (and in which the caller reported nothing exempt or
bad: stimulation, NaN, a held value) teaches the channel its **level** (the block's
mean, which follows offset and drift) and its **range** (a peak hold of the blocks'
peak-to-peak, decaying with a half-life of ``memory_s``: the largest swing of the last
minute or so, contractions included). A sample is **out of range** when it is more
than ``ratio`` x range away from the level, and **absurd** beyond ``absurd_ratio`` x
range. Until a channel's first unflagged block is complete, nothing is flagged.

Stretches, and what they turn out to be
---------------------------------------
An out-of-range sample starts a stretch, held (the caller suspends the channel) from
that very sample. The stretch lasts while out-of-range samples follow each other within
``gap_ms``. Then:

* it ends within ``impulse_ms`` of its start (shorter than a physiological
  contraction's rise): an **impulse**. ``ended`` marks its last sample: the caller
  restarts the channel's filters after it, and the detector does not see it;
* it is still going ``impulse_ms`` after its start, with every sample in range of the
  stretch's own mean (the signal moves as before, around a new level): a **level
  shift** (an electrode moved, a DC-coupled input stepped). The level is moved there
  and the stretch ends (``ended``: restart at the new level, no ringing from the step);
* it is still going with swings that large: **sustained**, not an impulse. Released at
  once (a contraction far stronger than any in the last minute: its onset comes
  ``impulse_ms`` late) and learnt from when it ends, unless a sample of it is absurd:
  absurd stretches are never taken as activity; they are held until they end.

Samples the caller marks ``exempt`` (stimulation running: its artifacts are far above
the EMG and are blanked later) or ``bad`` (another check has them) never start a
stretch (they may continue one), and their blocks teach nothing.

Pure (numpy in, records out) and chunk-invariant: levels and ranges change only at
block boundaries, and a stretch is decided sample by sample, so the same samples in any
chunking give the same masks and records at the same samples. The common case (no
stretch, every sample of the chunk within range) costs three reductions per block
piece; only channels with a stretch are followed sample by sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: What a finished or decided stretch was (see the module docstring).
IMPULSE, SHIFT, SUSTAINED = "impulse", "shift", "sustained"
ABSURD, ABSURD_END = "absurd", "absurd_end"


@dataclass(frozen=True)
class Stretch:
    """One out-of-range stretch of one channel, reported when it is decided.

    Attributes
    ----------
    sample : int
        Where the record is due: the stretch's last sample for an impulse (or an
        absurd stretch that ended), the sample of the decision otherwise.
    channel : int
        Column of the channel.
    what : str
        ``"impulse"``, ``"shift"`` or ``"sustained"`` (see the module docstring);
        ``"absurd"`` for a stretch with absurd values still going ``impulse_ms`` after
        its start (held until it ends) and ``"absurd_end"`` when such a stretch is over.
    start, last : int
        First and last out-of-range sample so far.
    peak : float
        Largest distance from the level (raw units).
    range : float
        The channel's learnt range when the stretch started (raw units).
    absurd : bool
        Some sample was beyond ``absurd_ratio`` x range.
    level_from, level_to : float
        The level before the stretch and, for a shift, after it.
    """

    sample: int
    channel: int
    what: str
    start: int
    last: int
    peak: float
    range: float
    absurd: bool
    level_from: float
    level_to: float

    @property
    def ratio(self) -> float:
        """How far outside the learnt range the stretch went (peak / range)."""
        return self.peak / self.range if self.range > 0 else math.inf


class ImpulseGate:
    """Out-of-range stretches of every channel; see the module docstring.

    Parameters
    ----------
    fs : float
        Sampling rate, Hz.
    n_channels : int
    ratio : float
        A sample farther than ``ratio`` x the learnt range from the level is out of
        range. 0 disables the gate.
    impulse_ms : float
        A stretch that ends sooner is an impulse.
    absurd_ratio : float
        Beyond ``absurd_ratio`` x range a stretch is never taken as activity.
    block_ms, gap_ms, memory_s : float
        Learning block; longest pause between out-of-range samples of one stretch;
        half-life of the learnt range.
    """

    def __init__(self, fs: float, n_channels: int, ratio: float = 20.0,
                 impulse_ms: float = 25.0, *, absurd_ratio: float = 1e4,
                 block_ms: float = 50.0, gap_ms: float = 5.0, memory_s: float = 60.0) -> None:
        self.fs = float(fs)
        self.n_channels = int(n_channels)
        self.enabled = ratio > 0
        self.ratio = float(ratio)
        self.absurd_ratio = max(float(absurd_ratio), self.ratio)
        ms = self.fs / 1000.0
        self.block = max(2, round(block_ms * ms))
        self.gap = max(1, round(gap_ms * ms))
        self.decide = max(self.gap + 1, round(impulse_ms * ms))
        self._decay = 0.5 ** (self.block / (memory_s * self.fs))
        n = self.n_channels
        #: Per channel: the learnt level and range (NaN until the first good block).
        self.level = np.full(n, np.nan)
        self.range = np.full(n, np.nan)
        self._lo = np.full(n, np.nan)  # level - ratio * range: below is out of range
        self._hi = np.full(n, np.nan)
        # the block being filled
        self._bmax = np.full(n, -np.inf)
        self._bmin = np.full(n, np.inf)
        self._buf = np.empty((self.block, n))  # the block's samples, for an exact mean
        self._bfill = 0
        self._bgood = np.ones(n, dtype=bool)
        # the stretch of each channel (active ones only)
        self._active = np.zeros(n, dtype=bool)
        self._st: dict[int, _State] = {}
        self._records: list[Stretch] = []

    # ------------------------------------------------------------------------------------
    @property
    def holding(self) -> np.ndarray:
        """Per channel: held at the last sample given (a stretch not released)."""
        out = np.zeros(self.n_channels, dtype=bool)
        for c, st in self._st.items():
            out[c] = st.held or st.absurd
        return out

    def pop_records(self) -> list[Stretch]:
        """The stretches decided since the last call, in sample order."""
        out, self._records = self._records, []
        return out

    def process(self, x: np.ndarray, start: int, exempt: np.ndarray | None = None,
                bad: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Judge the next samples.

        Parameters
        ----------
        x : ndarray, shape (n, n_channels)
            Raw, finite samples.
        start : int
            Absolute index of ``x[0]``; calls must be contiguous.
        exempt : ndarray of bool, shape (n,) or (n, 1), optional
            Stimulation running: nothing is flagged, nothing learnt.
        bad : ndarray of bool, shape (n, n_channels), optional
            Samples another check holds: nothing flagged, nothing learnt.

        Returns
        -------
        hold : ndarray of bool, shape (n, n_channels)
            The channel is held (suspend it): inside a stretch not released.
        ended : ndarray of bool, shape (n, n_channels)
            The last sample of an impulse, absurd stretch or level shift: restart the
            channel's filters after it.
        """
        n, nch = x.shape
        hold = np.zeros((n, nch), dtype=bool)
        ended = np.zeros((n, nch), dtype=bool)
        if not self.enabled or n == 0:
            return hold, ended
        ex = None if exempt is None else np.asarray(exempt, dtype=bool).reshape(n, -1)[:, 0]
        a = 0
        while a < n:
            b = min(n, a + self.block - self._bfill)
            self._piece(x, a, b, start, ex, bad, hold, ended)
            self._bfill += b - a
            if self._bfill == self.block:
                self._end_block()
            a = b
        return hold, ended

    # ------------------------------------------------------------------------------------
    def _piece(self, x, a, b, start, ex, bad, hold, ended) -> None:
        """Samples ``a:b`` of the chunk, all in one block (level and range constant)."""
        seg = x[a:b]
        hi = np.maximum.reduce(seg, axis=0)
        lo = np.minimum.reduce(seg, axis=0)
        np.maximum(self._bmax, hi, out=self._bmax)
        np.minimum(self._bmin, lo, out=self._bmin)
        self._buf[self._bfill : self._bfill + (b - a)] = seg
        quiet = None if ex is None else ~ex[a:b]
        if quiet is not None and not quiet.all():
            self._bgood[:] = False
        if bad is not None:
            self._bgood &= ~np.logical_or.reduce(bad[a:b], axis=0)
        # out of range anywhere in the piece? (comparisons with NaN are False: unarmed)
        out = (hi > self._hi) | (lo < self._lo)
        if not (out.any() or self._active.any()):
            return
        seg_bad = None if bad is None else bad[a:b]
        for c in np.flatnonzero(out | self._active).tolist():
            allowed = quiet
            if bad is not None:
                allowed = ~seg_bad[:, c] if allowed is None else allowed & ~seg_bad[:, c]
            h, e = hold[a:b, c], ended[a:b, c]
            self._follow(c, seg[:, c], allowed, start + a, h, e)
            if h.any() or e.any():
                self._bgood[c] = False  # a released (sustained) stretch still teaches

    def _follow(self, c: int, col: np.ndarray, allowed: np.ndarray | None, abs0: int,
                hold: np.ndarray, ended: np.ndarray) -> None:
        """Channel ``c`` sample by sample through one piece (a stretch is active or may
        start in it); fills its ``hold`` and ``ended`` rows."""
        level, rng = float(self.level[c]), float(self.range[c])
        lo, hi = float(self._lo[c]), float(self._hi[c])
        absurd_dev = self.absurd_ratio * rng
        st = self._st.get(c)
        ok = [True] * col.shape[0] if allowed is None else allowed.tolist()
        for i, v in enumerate(col.tolist()):
            k = abs0 + i
            if (v > hi or v < lo) and (ok[i] or st is not None):
                if st is None:
                    st = self._open(c, k, level, rng)
                st.last = k
                dev = abs(v - level)
                if dev > st.peak:
                    st.peak = dev
                if dev > absurd_dev:
                    st.absurd = True
            elif st is None:
                continue
            st.add(v)
            if k - st.last >= self.gap:  # no out-of-range sample for gap_ms: over
                if st.held or st.absurd:
                    hold[i] = ended[i] = True
                    self._record(k, c, IMPULSE if not st.decided else ABSURD_END, st)
                st = self._close(c)
                continue
            if not st.decided and k - st.start + 1 >= self.decide:
                st.decided = True
                if st.absurd:
                    self._record(k, c, ABSURD, st)  # held until it ends
                elif st.smax - st.smin <= self.ratio * rng:  # moves as before: new level
                    level = st.ssum / st.count
                    self._record(k, c, SHIFT, st, level)
                    self.level[c] = level
                    self._bounds(c)
                    lo, hi = float(self._lo[c]), float(self._hi[c])
                    hold[i] = ended[i] = True
                    st = self._close(c)
                    continue
                else:
                    st.held = False
                    self._record(k, c, SUSTAINED, st)
            hold[i] = st.held or st.absurd

    def _open(self, c: int, k: int, level: float, rng: float) -> _State:
        st = _State(k, level, rng)
        self._st[c] = st
        self._active[c] = True
        return st

    def _close(self, c: int) -> None:
        del self._st[c]
        self._active[c] = False
        return None

    def _record(self, k: int, c: int, what: str, st: _State, level_to: float = math.nan) -> None:
        self._records.append(Stretch(k, c, what, st.start, st.last, st.peak, st.range,
                                     st.absurd, st.level, level_to))

    def _bounds(self, c: int) -> None:
        half = self.ratio * self.range[c]
        self._lo[c] = self.level[c] - half
        self._hi[c] = self.level[c] + half

    def _end_block(self) -> None:
        """A block is complete: channels with a good block learn level and range."""
        p2p = self._bmax - self._bmin
        good = self._bgood & (p2p > 0) & np.isfinite(p2p)
        if good.any():
            mean = np.add.reduce(self._buf, axis=0) / self.block
            first = good & np.isnan(self.range)
            np.copyto(self.range, p2p, where=first)
            grown = np.maximum(p2p, self.range * self._decay)
            np.copyto(self.range, grown, where=good & ~first)
            np.copyto(self.level, mean, where=good)
            half = self.ratio * self.range
            np.copyto(self._lo, self.level - half, where=good)
            np.copyto(self._hi, self.level + half, where=good)
        self._bmax.fill(-np.inf)
        self._bmin.fill(np.inf)
        self._bgood.fill(True)
        self._bfill = 0


class _State:
    """An active stretch of one channel."""

    __slots__ = ("start", "last", "peak", "absurd", "held", "decided", "level", "range",
                 "smax", "smin", "ssum", "count")

    def __init__(self, start: int, level: float, rng: float) -> None:
        self.start = start
        self.last = start
        self.peak = 0.0
        self.absurd = False
        self.held = True
        self.decided = False
        self.level = level
        self.range = rng
        self.smax = -math.inf
        self.smin = math.inf
        self.ssum = 0.0
        self.count = 0

    def add(self, v: float) -> None:
        if v > self.smax:
            self.smax = v
        if v < self.smin:
            self.smin = v
        self.ssum += v
        self.count += 1


__all__ = ["ABSURD", "ABSURD_END", "IMPULSE", "SHIFT", "SUSTAINED", "ImpulseGate", "Stretch"]
