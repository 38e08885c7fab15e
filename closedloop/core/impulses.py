"""Impulse gate: raw samples far outside a channel's own range never trigger.

A knock on an electrode or its cable, a static discharge, or a driver that delivers
garbage (values of 1e10) puts a short burst on a channel far above anything the muscle
produces. Left to the detector it is an onset within ``min_on_ms``; through the filters
it rings for up to a second (the mains notch); in the moving RMS, values of 1e10 leave
a rounding residue larger than any EMG for good. The gate finds such stretches on the
raw samples, before the filters, so the caller can hold the channel's detector from
the first sample (no new onset) and restart its filters when the stretch is over
(:mod:`closedloop.runtime.inputs`).

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
An out-of-range sample starts a stretch, **held** from that very sample (the caller
holds the channel: no new onset). The stretch lasts while samples farther than ``continue_ratio`` x
range from the level (hysteresis: a strong contraction's swings are not all out of
range; an impulse's return to rest is far inside) follow each other within ``gap_ms``.
Then:

* it ends within ``impulse_ms`` of its start (shorter than a physiological
  contraction's rise): an **impulse**. ``ended`` marks its last sample: the caller
  restarts the channel's filters after it, and the detector never sees it;
* ``impulse_ms`` after its start (and every ``impulse_ms`` after that while it is
  held), if every sample of that window lies within ``ratio`` x range of the window's
  mean (the signal moves as before, around a new level), it is a **level shift** (an
  electrode moved, a DC-coupled input stepped): the level moves there and the stretch
  ends (``ended``: restart at the new level, no ringing from the step);
* otherwise, if its first ``impulse_ms`` swing like EMG (faster than ``ACTIVITY_HZ``)
  and no sample was absurd, it is **sustained** activity: released at once (a
  contraction far stronger than any in the last minute: its onset comes up to
  ``impulse_ms`` late, or on time if it was decided before the first sample out of
  range), and its swing is learnt as the range there and then;
* otherwise (absurd values, or a slow excursion: a knock's tail, a movement of the
  cable) it stays **held** until it ends or settles at a new level, and is then
  restarted like an impulse (``over``).

Samples the caller marks ``exempt`` (stimulation running: its artifacts are far above
the EMG and are blanked later) or ``bad`` (another check has them) never start a
stretch (they may continue one), and their blocks teach nothing.

Pure (numpy in, records out) and chunk-invariant: levels and ranges change at block
boundaries or at the sample a stretch is decided, and a stretch is followed sample by
sample, so the same samples in any chunking give the same masks and records at the
same samples. The common case (no stretch, every sample of the chunk within range)
costs a copy, two reductions and two comparisons per block piece; only channels with a
stretch are followed sample by sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: What a finished or decided stretch was (see the module docstring).
IMPULSE, SHIFT, SUSTAINED, HELD, OVER = "impulse", "shift", "sustained", "held", "over"

#: A stretch whose swings are at least this fast (Hz) is activity; slower is an
#: excursion (the band-pass starts at 20 Hz: surface EMG lives above it).
ACTIVITY_HZ = 20.0


@dataclass(frozen=True)
class Stretch:
    """One out-of-range stretch of one channel, reported when it is decided.

    Attributes
    ----------
    sample : int
        Where the record is due: the sample where an impulse or a held stretch ended
        (``impulse``, ``over``), the sample of the decision otherwise.
    channel : int
        Column of the channel.
    what : str
        ``"impulse"``, ``"shift"``, ``"sustained"`` or ``"held"`` (see the module
        docstring); ``"over"`` when a held stretch ended.
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
    continue_ratio : float
        A stretch goes on while samples farther than ``continue_ratio * ratio`` x range
        from the level come within ``gap_ms`` of each other.
    block_ms, gap_ms, memory_s : float
        Learning block; longest pause in a stretch; half-life of the learnt range.
    """

    def __init__(self, fs: float, n_channels: int, ratio: float = 20.0,
                 impulse_ms: float = 30.0, *, absurd_ratio: float = 1e4,
                 continue_ratio: float = 0.25, block_ms: float = 50.0, gap_ms: float = 10.0,
                 memory_s: float = 60.0) -> None:
        self.fs = float(fs)
        self.n_channels = int(n_channels)
        self.enabled = ratio > 0
        self.ratio = float(ratio)
        self.absurd_ratio = max(float(absurd_ratio), self.ratio)
        self.continue_ratio = float(continue_ratio)
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
        # the block being filled (its samples: exact statistics whatever the chunking)
        self._buf = np.empty((self.block, n))
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
            out[c] = st.held
        return out

    def pop_records(self) -> list[Stretch]:
        """The stretches decided since the last call, in sample order (then channel)."""
        out, self._records = self._records, []
        out.sort(key=lambda r: (r.sample, r.channel))
        return out

    def process(self, x: np.ndarray, start: int, exempt: np.ndarray | None = None,
                bad: np.ndarray | None = None
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
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
        hold : ndarray of bool, shape (n, n_channels), or None
            The channel is held: inside a stretch not released. None: nowhere in this
            chunk (the common case, nothing allocated).
        ended : ndarray of bool, shape (n, n_channels), or None
            The last sample of an impulse, a held stretch or a level shift: restart the
            channel's filters after it. None together with ``hold``.
        """
        n = x.shape[0]
        if not self.enabled or n == 0:
            return None, None
        ex = None if exempt is None else np.asarray(exempt, dtype=bool).reshape(n, -1)[:, 0]
        masks: list[np.ndarray] = []  # hold, ended: made when a stretch is followed
        a = 0
        while a < n:
            if self._bfill == 0 and not self._st and n - a >= self.block:
                a = self._quiet_blocks(x, a, n, ex, bad)  # the common case, block by block
                if a == n:
                    break
            b = min(n, a + self.block - self._bfill)
            self._piece(x, a, b, start, ex, bad, masks)
            self._bfill += b - a
            if self._bfill == self.block:
                self._end_block()
            a = b
        return (masks[0], masks[1]) if masks else (None, None)

    # ------------------------------------------------------------------------------------
    def _piece(self, x, a, b, start, ex, bad, masks) -> None:
        """Samples ``a:b`` of the chunk, all in one block (level and range constant).
        The common case (no stretch, nothing out of range) is a copy, two reductions
        and two comparisons."""
        seg = x[a:b]
        self._buf[self._bfill : self._bfill + (b - a)] = seg
        quiet = None
        if ex is not None and np.count_nonzero(ex[a:b]):
            quiet = ~ex[a:b]
            self._bgood[:] = False
        if bad is not None:
            self._bgood &= ~np.logical_or.reduce(bad[a:b], axis=0)
        # out of range anywhere in the piece? (comparisons with NaN are False: unarmed)
        hi = np.maximum.reduce(seg, axis=0)
        lo = np.minimum.reduce(seg, axis=0)
        if not (self._st or np.count_nonzero(hi > self._hi) or np.count_nonzero(lo < self._lo)):
            return
        out = (hi > self._hi) | (lo < self._lo) | self._active
        if not masks:
            masks += [np.zeros(x.shape, dtype=bool), np.zeros(x.shape, dtype=bool)]
        hold, ended = masks
        seg_bad = None if bad is None else bad[a:b]
        for c in np.flatnonzero(out).tolist():
            allowed = quiet
            if seg_bad is not None:
                allowed = ~seg_bad[:, c] if allowed is None else allowed & ~seg_bad[:, c]
            h, e = hold[a:b, c], ended[a:b, c]
            self._follow(c, seg[:, c], allowed, start + a, h, e)
            if h.any() or e.any():
                self._bgood[c] = False  # a released (sustained) stretch still teaches

    def _quiet_blocks(self, x, a, n, ex, bad) -> int:
        """Whole blocks from ``a`` (a block boundary, no stretch active) that are quiet:
        nothing exempt or bad, every sample within the range in force. They only teach
        level and range, as :meth:`_piece` and :meth:`_end_block` would, with the same
        IEEE operations in the same order (the block sums too: row by row), so the
        result is the same to the bit; their statistics are taken for all blocks at once.
        Returns where the first block that is not quiet starts (or the last whole one
        ends)."""
        blk = self.block
        m = (n - a) // blk
        stop = a + m * blk
        if ex is not None:
            flagged = np.flatnonzero(ex[a:stop].reshape(m, blk).any(axis=1))
            m = int(flagged[0]) if flagged.size else m
        if bad is not None and m:
            flagged = np.flatnonzero(bad[a:a + m * blk].reshape(m, -1).any(axis=1))
            m = int(flagged[0]) if flagged.size else m
        if m == 0:
            return a
        blocks = x[a:a + m * blk].reshape(m, blk, self.n_channels)
        tops = np.maximum.reduce(blocks, axis=1).T.tolist()
        bottoms = np.minimum.reduce(blocks, axis=1).T.tolist()
        sums = np.add.reduce(blocks, axis=1).T.tolist()
        ratio, decay = self.ratio, self._decay
        state = []
        for c in range(self.n_channels):  # channels are independent: one at a time
            level, rng = float(self.level[c]), float(self.range[c])
            lo, hi = float(self._lo[c]), float(self._hi[c])
            top, bottom, total = tops[c], bottoms[c], sums[c]
            done = m
            for k in range(m):
                if top[k] > hi or bottom[k] < lo:  # out of range: not quiet from here
                    done = k
                    break
                p2p = top[k] - bottom[k]
                if p2p > 0.0 and p2p < math.inf:
                    rng = p2p if rng != rng else max(p2p, rng * decay)
                    level = total[k] / blk
                    half = ratio * rng
                    lo, hi = level - half, level + half
            state.append((done, level, rng, lo, hi))
            if done < m:  # the others' blocks after this one are not taken: do them again
                m = done
                state = [self._rerun(cc, tops[cc], bottoms[cc], sums[cc], m)
                         for cc in range(c + 1)]
        for c, (_, level, rng, lo, hi) in enumerate(state):
            self.level[c], self.range[c], self._lo[c], self._hi[c] = level, rng, lo, hi
        return a + m * blk

    def _rerun(self, c: int, top: list, bottom: list, total: list, m: int) -> tuple:
        """Channel ``c``'s level and range after its first ``m`` quiet blocks."""
        level, rng = float(self.level[c]), float(self.range[c])
        lo, hi = float(self._lo[c]), float(self._hi[c])
        for k in range(m):
            p2p = top[k] - bottom[k]
            if p2p > 0.0 and p2p < math.inf:
                rng = p2p if rng != rng else max(p2p, rng * self._decay)
                level = total[k] / self.block
                half = self.ratio * rng
                lo, hi = level - half, level + half
        return (m, level, rng, lo, hi)

    def _follow(self, c: int, col: np.ndarray, allowed: np.ndarray | None, abs0: int,
                hold: np.ndarray, ended: np.ndarray) -> None:
        """Channel ``c`` sample by sample through one piece (a stretch is active or may
        start in it); fills its ``hold`` and ``ended`` rows."""
        level, rng = float(self.level[c]), float(self.range[c])
        lo, hi = float(self._lo[c]), float(self._hi[c])
        absurd_dev = self.absurd_ratio * rng
        near = self.continue_ratio * self.ratio * rng  # far enough out to go on
        st = self._st.get(c)
        ok = [True] * col.shape[0] if allowed is None else allowed.tolist()
        for i, v in enumerate(col.tolist()):
            k = abs0 + i
            dev = abs(v - level)
            if (dev > near if st is not None else (ok[i] and (v > hi or v < lo))):
                if st is None:
                    st = self._open(c, k, level, rng)
                st.last = k
                if dev > st.peak:
                    st.peak = dev
                if dev > absurd_dev:
                    st.absurd = True
            elif st is None:
                continue
            st.add(v)
            if k - st.last >= self.gap:  # nothing far out for gap_ms: over
                if st.held:
                    hold[i] = ended[i] = True
                    self._record(k, c, OVER if st.decided else IMPULSE, st)
                self._close(c)
                st = None
                continue
            if k - st.wstart + 1 >= self.decide:  # impulse_ms of it: what is it?
                first = not st.decided
                st.decided = True
                if st.held and not st.absurd and st.smax - st.smin <= self.ratio * rng:
                    level = st.ssum / st.count  # it moves as before, around a new level
                    self._record(k, c, SHIFT, st, level)
                    self.level[c] = level
                    self._bounds(c)
                    lo, hi = float(self._lo[c]), float(self._hi[c])
                    hold[i] = ended[i] = True
                    self._close(c)
                    st = None
                    continue
                if first:
                    if not st.absurd and st.frequency(self.fs) >= ACTIVITY_HZ:
                        st.held = False  # it swings like EMG: activity, learnt at once
                        self._record(k, c, SUSTAINED, st)
                        self.range[c] = max(rng, st.smax - st.smin)
                        self._bounds(c)
                        rng = float(self.range[c])
                        lo, hi = float(self._lo[c]), float(self._hi[c])
                        absurd_dev = self.absurd_ratio * rng
                        near = self.continue_ratio * self.ratio * rng
                    else:  # absurd, or a slow excursion: held until it ends or settles
                        self._record(k, c, HELD, st)
                st.next_window(k + 1)
            hold[i] = st.held

    def _open(self, c: int, k: int, level: float, rng: float) -> _State:
        st = _State(k, level, rng)
        self._st[c] = st
        self._active[c] = True
        return st

    def _close(self, c: int) -> None:
        del self._st[c]
        self._active[c] = False

    def _record(self, k: int, c: int, what: str, st: _State, level_to: float = math.nan) -> None:
        self._records.append(Stretch(k, c, what, st.start, st.last, st.peak, st.range,
                                     st.absurd, st.level, level_to))

    def _bounds(self, c: int) -> None:
        half = self.ratio * self.range[c]
        self._lo[c] = self.level[c] - half
        self._hi[c] = self.level[c] + half

    def _end_block(self) -> None:
        """A block is complete: channels with a good block learn level and range."""
        buf = self._buf
        p2p = np.maximum.reduce(buf, axis=0) - np.minimum.reduce(buf, axis=0)
        good = self._bgood & (p2p > 0) & np.isfinite(p2p)
        if good.any():
            mean = np.add.reduce(buf, axis=0) / self.block
            first = good & np.isnan(self.range)
            np.copyto(self.range, p2p, where=first)
            grown = np.maximum(p2p, self.range * self._decay)
            np.copyto(self.range, grown, where=good & ~first)
            np.copyto(self.level, mean, where=good)
            half = self.ratio * self.range
            np.copyto(self._lo, self.level - half, where=good)
            np.copyto(self._hi, self.level + half, where=good)
        self._bgood.fill(True)
        self._bfill = 0


class _State:
    """An active stretch of one channel, and its current window of ``impulse_ms``."""

    __slots__ = ("start", "last", "peak", "absurd", "held", "decided", "level", "range",
                 "wstart", "smax", "smin", "ssum", "count", "prev", "sum_step", "sum_dev")

    def __init__(self, start: int, level: float, rng: float) -> None:
        self.start = start
        self.last = start
        self.peak = 0.0
        self.absurd = False
        self.held = True
        self.decided = False
        self.level = level
        self.range = rng
        self.prev = math.nan
        self.next_window(start)

    def next_window(self, k: int) -> None:
        self.wstart = k
        self.smax = -math.inf
        self.smin = math.inf
        self.ssum = self.sum_step = self.sum_dev = 0.0
        self.count = 0

    def add(self, v: float) -> None:
        if v > self.smax:
            self.smax = v
        if v < self.smin:
            self.smin = v
        self.ssum += v
        self.count += 1
        self.sum_dev += abs(v - self.level)
        if self.prev == self.prev:  # not NaN: not the first sample
            self.sum_step += abs(v - self.prev)
        self.prev = v

    def frequency(self, fs: float) -> float:
        """A rough frequency of the window's swings (Hz): mean step over mean distance
        from the level (a sine of frequency f gives f)."""
        return fs * self.sum_step / (2.0 * math.pi * self.sum_dev) if self.sum_dev else 0.0


__all__ = ["ACTIVITY_HZ", "HELD", "IMPULSE", "OVER", "SHIFT", "SUSTAINED", "ImpulseGate",
           "Stretch"]
