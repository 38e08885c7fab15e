"""Input checks: what is wrong with the samples a source delivers, and where.

:class:`InputMonitor` inspects every :class:`~closedloop.sources.base.Chunk` before the
signal core sees it. It is pure (numpy in, numpy out, no I/O, no clock) and
chunk-invariant: feeding the same samples in any chunking gives the same cleaned
samples, the same "bad" mask and the same issues at the same sample indices, so a
replay reports exactly what the live session reported.

What it finds
-------------
* **Wrong channel count** or inconsistent array shapes: unusable, raises
  :class:`~closedloop.errors.InputError`.
* **NaN / inf values**, and values beyond ``±ABSURD_LIMIT`` (1e100: no amplifier's unit
  comes near, and below it squares and sums stay finite in float64, so nothing
  downstream overflows): replaced (hold the last finite value, or zero) and the channel
  is marked bad from the first such sample until ``recover_seconds`` of usable samples
  have passed, so its detector can be suspended. (Smaller values far outside a
  channel's range are the impulse gate's, :mod:`closedloop.core.impulses`.)
* **Non-finite timestamps**: replaced by the previous timestamp plus ``1/fs``.
* **Duplicated samples** (same counter value, or without a counter the same timestamp
  and the same values as the previous sample): dropped.
* **Gaps**: from the source's counter when it has one, else from timestamps that run
  ahead of the stream's own clock by more than the jitter tolerance (``gap_tolerance``
  sample periods, at least ``jitter_seconds``). The stream's clock is the running
  minimum of ``t[k] - k * (1 + RATE_SLACK) / fs``: late stamps (jitter, a sender that
  stamps its chunks when it sends them) only raise the difference for a moment, lost
  samples raise it for good; the slack lets the clock follow a stream up to 6 %
  slower than declared without a false gap.
* **Non-monotonic timestamps or counter**: flagged (samples are kept). Timestamps that
  go back by no more than the jitter tolerance are jitter and not reported.
* **True rate far from nominal**: over the first ``rate_measure_seconds`` of samples,
  the slope of a least-squares line through the timestamps against the sample index
  (lost samples counted; see :meth:`InputMonitor._measure_rate`) gives the rate the
  stream really has, and the spread of the timestamps around that line widens the
  jitter tolerance if they jitter more than it allows; more than
  ``rate_stop`` (5 %) from the declared one raises :class:`~closedloop.errors.InputError`
  naming both: every time on the sample clock (windows, refractory periods, ramps,
  on-times) would be off by as much. Later, over a sliding window of
  ``rate_window_seconds`` of samples evaluated every ``rate_check_seconds``, a drift
  beyond ``rate_tolerance`` is reported.
* **Flat channels**: ``flat_seconds`` of identical values.
* **Saturated channels**: ``saturation_seconds`` of a value repeated at the largest or
  smallest value seen so far on that channel (amplifier rail or pinned input).

Every issue names the channel, the sample index (0-based, counted on the cleaned output,
so it matches :attr:`closedloop.core.events.Event.sample`) and what to check.
Issues that can repeat quickly (gaps, duplicates, non-monotonic or non-finite
timestamps) are reported at most once per ``report_holdoff_seconds`` of samples: the
ones that come sooner are folded into one summary, given at the sample where the
hold-off ends (it repeats the latest of them, so it says what to check, and how many
there were), or by :meth:`InputMonitor.flush` when the stream ends first. A folded
issue is never left unsaid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from closedloop.core.stream import Chunk, SourceInfo
from closedloop.errors import InputError


class IssueKind(str, Enum):
    """What kind of input problem an :class:`InputIssue` reports."""

    NONFINITE = "nonfinite"
    BAD_TIMESTAMP = "bad_timestamp"
    JITTER = "jitter"
    DUPLICATE = "duplicate"
    GAP = "gap"
    NON_MONOTONIC = "non_monotonic"
    RATE = "rate"
    FLAT = "flat"
    SATURATED = "saturated"
    HELD = "held"
    MAINS = "mains"  # the mains-hum check's (closedloop.core.mains)
    IMPULSE = "impulse"  # the impulse gate's (closedloop.core.impulses) ...
    ABSURD = "absurd"
    LEVEL_SHIFT = "level_shift"
    STRONG = "strong"
    BAND = "band"  # the EMG band left at a low sampling rate (closedloop.runtime.inputs)
    REST = "rest"  # the detector's rest learning (closedloop.core.detectors)
    RECOVERED = "recovered"


_KIND_ORDER = {kind: i for i, kind in enumerate(IssueKind)}

#: Sample values beyond this magnitude are treated as non-finite (see the module
#: docstring).
ABSURD_LIMIT = 1e100

#: How much slower than declared the timestamps may run without false gaps (the gap
#: check's clock rises at most this much faster than the nominal one).
RATE_SLACK = 0.06
#: Seconds of samples (from a stream's first) over which its true rate is measured and
#: checked against the declared one (:meth:`InputMonitor._measure_rate`); a session's
#: guard lets no stimulation start before they are checked (``[safety] wait_for_rate``).
RATE_MEASURE_S = 2.0


def rate_samples(fs: float, seconds: float = RATE_MEASURE_S) -> int:
    """How many samples from a stream's first its true rate is measured over, at ``fs``
    (0: it is not measured); when the rate is wrong, the check of the last one raises."""
    return max(0, round(seconds * fs))


def absurd_limit(dtype: np.dtype) -> float:
    """:data:`ABSURD_LIMIT` for samples of ``dtype``: infinity for a float type that cannot
    reach it (float32: comparing with 1e100 would overflow in the cast; finite is usable)."""
    if dtype.kind == "f" and float(np.finfo(dtype).max) < ABSURD_LIMIT:
        return math.inf
    return ABSURD_LIMIT


def usable(x: np.ndarray) -> np.ndarray:
    """Where ``x`` is finite and within ``±ABSURD_LIMIT`` (NaN compares False)."""
    return np.abs(x) < absurd_limit(x.dtype)


@dataclass(frozen=True)
class InputIssue:
    """One problem found in the input.

    Parameters
    ----------
    kind : IssueKind
        What was found.
    channel : str or None
        Channel label, or None for stream-wide issues (gaps, timestamps, rate).
    sample : int
        0-based index, on the cleaned output stream, of the sample where the issue was
        found (for a gap: the first sample after it; for a duplicate: the kept sample).
    message : str
        What happened and what to check.
    """

    kind: IssueKind
    channel: str | None
    sample: int
    message: str


def _issue_order(issue: InputIssue) -> tuple[int, int, str]:
    """Sort key of the issues of one chunk: sample, then kind, then channel."""
    return (issue.sample, _KIND_ORDER[issue.kind], issue.channel or "")


@dataclass(frozen=True)
class CheckedChunk:
    """The monitor's output for one chunk.

    Attributes
    ----------
    chunk : Chunk
        The cleaned chunk (duplicates dropped, non-finite values replaced).
    issues : tuple of InputIssue
        Issues found in this chunk, in sample order.
    bad : ndarray of bool, shape (n, n_channels)
        True where a channel's sample is unreliable (non-finite and replaced, flat,
        saturated). A detector should be suspended on those samples.
    start : int
        Absolute 0-based index of the chunk's first cleaned sample.
    breaks : tuple of int
        Absolute indices of the samples that do not continue the sample before them:
        samples were lost just before (a gap), or the counter went back (a restart or
        a retransmission). The signal jumps there on every channel.
    received : ndarray or None
        The kept samples as they came, NaN/inf included, when some were replaced (else
        None: they equal ``chunk.samples``). A recording keeps these, so that a replay
        sees the same input.
    """

    chunk: Chunk
    issues: tuple[InputIssue, ...]
    bad: np.ndarray
    start: int
    breaks: tuple[int, ...] = ()
    received: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of cleaned samples."""
        return self.chunk.n

    def suspended(self, channels: tuple[str, ...]) -> tuple[str, ...]:
        """Labels of the channels that are bad at the chunk's last sample."""
        if self.bad.shape[0] == 0:
            return ()
        return tuple(c for c, b in zip(channels, self.bad[-1], strict=True) if b)


def _fit_rate(x: np.ndarray, t: np.ndarray, groups: np.ndarray | None = None
              ) -> tuple[float, np.ndarray]:
    """Samples per second of the least-squares line ``t ~ x`` (-1 if time does not
    advance) and the residuals around it; with ``groups``, one slope and an intercept
    per group."""
    if groups is None:
        xc, tc = x - x.mean(), t - t.mean()
    else:
        count = np.bincount(groups).astype(np.float64)
        count[count == 0] = 1.0
        xc = x - (np.bincount(groups, x) / count)[groups]
        tc = t - (np.bincount(groups, t) / count)[groups]
    sxx = float(np.dot(xc, xc))
    slope = float(np.dot(xc, tc)) / sxx if sxx > 0 else math.nan
    return (1.0 / slope if slope > 0 else -1.0), tc - slope * xc


def _part(chunk: Chunk, a: int, b: int) -> Chunk:
    """Rows ``a:b`` of a chunk."""
    c = None if chunk.counter is None else np.asarray(chunk.counter)[a:b]
    return Chunk(np.asarray(chunk.samples)[a:b], np.asarray(chunk.timestamps)[a:b], c,
                 chunk.arrival_wall)


def _joined(a: CheckedChunk, b: CheckedChunk) -> CheckedChunk:
    """Two consecutive checked chunks as one."""
    ca, cb = a.chunk, b.chunk
    counter = None
    if ca.counter is not None and cb.counter is not None:
        counter = np.concatenate((ca.counter, cb.counter))
    elif ca.n == 0 or cb.n == 0:
        counter = ca.counter if cb.n == 0 else cb.counter
    received = None
    if a.received is not None or b.received is not None:
        received = np.vstack([a.received if a.received is not None else ca.samples,
                              b.received if b.received is not None else cb.samples])
    out = Chunk(np.vstack((ca.samples, cb.samples)), np.concatenate((ca.timestamps,
                cb.timestamps)), counter, ca.arrival_wall)
    return CheckedChunk(out, tuple(sorted(a.issues + b.issues, key=_issue_order)),
                        np.vstack((a.bad, b.bad)), a.start if ca.n else b.start,
                        a.breaks + b.breaks, received)


def hold_nonfinite(x: np.ndarray, last: np.ndarray | None = None) -> np.ndarray:
    """``x`` (n, n_channels) with every NaN/inf (and value beyond ``±ABSURD_LIMIT``)
    replaced by its channel's last usable value (``last`` before the first one, default
    0), as the monitor cleans them.

    Returns ``x`` itself when every value is usable, else a new array.
    """
    fin = usable(x)
    if fin.all():
        return x
    n, nch = x.shape
    idx = np.maximum.accumulate(np.where(fin, np.arange(n)[:, None], -1), axis=0)
    held = np.take_along_axis(x, np.maximum(idx, 0), axis=0)
    before = np.zeros(nch) if last is None else np.asarray(last, dtype=np.float64)
    return np.where(idx >= 0, held, before)


def _run_lengths(cond: np.ndarray, carry: int) -> np.ndarray:
    """Length of the run of True values ending at each index (0 where False).

    ``carry`` is the length of the run that ended just before ``cond[0]``.
    """
    n = cond.shape[0]
    idx = np.arange(n, dtype=np.int64)
    last_false = np.maximum.accumulate(np.where(cond, -1, idx))
    lengths = idx - last_false
    lengths[last_false == -1] += carry
    lengths[~cond] = 0
    return lengths


def _edges(active: np.ndarray, was_active: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices where ``active`` switches on and where it switches off."""
    prev = np.empty_like(active)
    prev[0] = was_active
    prev[1:] = active[:-1]
    return np.flatnonzero(active & ~prev), np.flatnonzero(~active & prev)


class InputMonitor:
    """Checks every chunk of one source; see the module docstring.

    Parameters
    ----------
    info : SourceInfo
        What the source said it delivers (channel labels, nominal rate).
    nonfinite : {"hold", "zero"}
        Replace NaN/inf by the channel's last finite value, or by 0.
    gap_tolerance, jitter_seconds : float
        Jitter tolerance of the timestamps: ``max(gap_tolerance / fs, jitter_seconds)``.
        Without a counter, timestamps that run ahead of the stream's clock by more are
        a gap; timestamps that go back by more are reported.
    flat_seconds : float
        Identical consecutive values for this long make a channel flat.
    saturation_seconds : float
        A value repeated at the channel's extreme for this long makes it saturated.
    recover_seconds : float
        A channel with NaN/inf stays bad until this long of finite samples.
    rate_window_seconds, rate_check_seconds : float
        The effective rate is measured over ``rate_window_seconds`` of samples, every
        ``rate_check_seconds`` of samples.
    rate_tolerance : float
        Relative deviation from the nominal rate that is reported (0.02 = 2 %).
    rate_measure_seconds, rate_stop : float
        The true rate is measured over the first ``rate_measure_seconds`` of samples;
        a relative difference from the declared rate beyond ``rate_stop`` (as printed,
        to 0.1 %) stops the stream. ``rate_measure_seconds = 0`` disables it.
    report_holdoff_seconds : float
        Repeating stream-wide issues are reported at most this often (in samples).
    fast_path : bool
        Check chunks that are plainly clean (see :meth:`_check_clean`) with a few
        whole-chunk operations instead of the exact per-channel path. The result is
        identical either way; False forces the exact path (tests, benchmarks).

    Raises
    ------
    ValueError
        On nonsensical settings (a programming error: validate user settings at the
        config boundary).
    """

    def __init__(
        self,
        info: SourceInfo,
        *,
        nonfinite: str = "hold",
        gap_tolerance: float = 8.0,
        jitter_seconds: float = 0.004,
        flat_seconds: float = 0.5,
        saturation_seconds: float = 0.05,
        recover_seconds: float = 0.1,
        rate_window_seconds: float = 5.0,
        rate_check_seconds: float = 1.0,
        rate_tolerance: float = 0.02,
        rate_measure_seconds: float = RATE_MEASURE_S,
        rate_stop: float = 0.05,
        report_holdoff_seconds: float = 1.0,
        fast_path: bool = True,
    ) -> None:
        if nonfinite not in ("hold", "zero"):
            raise ValueError(f"nonfinite={nonfinite!r}: expected 'hold' or 'zero'")
        if not (info.fs > 0 and math.isfinite(info.fs)):
            raise ValueError(f"{info.name}: nominal rate {info.fs!r} must be a positive number")
        if gap_tolerance < 0 or jitter_seconds < 0 or rate_tolerance <= 0:
            raise ValueError("gap_tolerance and jitter_seconds must be >= 0, "
                             "rate_tolerance > 0")
        if not 0 < rate_stop < RATE_SLACK:
            raise ValueError(f"rate_stop must be in (0, {RATE_SLACK})")
        self.info = info
        fs = float(info.fs)
        self._fs = fs
        self._nch = info.n_channels
        self._hold = nonfinite == "hold"
        self._jitter0 = max(gap_tolerance / fs, jitter_seconds)
        self._u_step = (1.0 + RATE_SLACK) / fs
        self._rate_n = rate_samples(fs, rate_measure_seconds)
        self._rate_stop = rate_stop
        self._flat_n = max(2, round(flat_seconds * fs))
        self._sat_n = max(2, round(saturation_seconds * fs))
        self._recover_n = max(1, round(recover_seconds * fs))
        self._rate_step = max(1, round(rate_check_seconds * fs))
        n_steps = max(1, round(rate_window_seconds / rate_check_seconds))
        self._rate_window = self._rate_step * n_steps
        self._rate_tol = rate_tolerance
        self._holdoff = max(1, round(report_holdoff_seconds * fs))
        self._fast_path = fast_path
        # a flat or saturated run this long or longer needs the exact path
        self._run_limit = min(self._flat_n, self._sat_n) - 1
        self._idx = np.zeros((0, 1), dtype=np.int64)  # column of 0..n-1, grown on demand
        self.reset()

    # -- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (start of a new stream)."""
        nch = self._nch
        self._n_out = 0
        self._last_ts: float | None = None
        self._last_counter: int | None = None
        self._last_raw = np.full(nch, np.nan)  # last kept raw sample (NaN = unknown)
        self._last_clean = np.zeros(nch)
        self._finite_run = np.full(nch, 1 << 60, dtype=np.int64)
        self._nonfinite_start = np.zeros(nch, dtype=np.int64)
        # Rows of shared blocks, so that the fast path tests or clears them in one call;
        # update them in place (element or slice assignment), never rebind them.
        self._active = np.zeros((3, nch), dtype=bool)
        self._nonfinite_active, self._flat_active, self._sat_active = self._active
        self._runs = np.zeros((2, nch), dtype=np.int64)
        self._flat_run, self._sat_run = self._runs
        self._run_max = np.full(nch, np.nan)
        self._run_min = np.full(nch, np.nan)
        self._checkpoints: dict[int, float] = {}
        self._rate_active = False
        self._ts_floor: float | None = None  # the stream clock of the gap check
        self._jitter = self._jitter0  # jitter tolerance (widened to the jitter seen)
        self._rate_x: list[np.ndarray] = []  # first samples: index (counted losses in),
        self._rate_e: list[np.ndarray] = []  # estimated losses before them, the stretch
        self._rate_g: list[np.ndarray] = []  # between estimated gaps, and time
        self._rate_t: list[np.ndarray] = []
        self._lost_exact = self._lost_est = self._rate_seg = 0
        self._rate_done = self._rate_n == 0
        self._last_report: dict[IssueKind, int] = {}
        self._suppressed: dict[IssueKind, int] = {}
        self._folded: dict[IssueKind, tuple[int, str]] = {}  # latest folded (sample, message)

    @property
    def samples_out(self) -> int:
        """Number of cleaned samples delivered so far."""
        return self._n_out

    # -- main entry ------------------------------------------------------------------------
    def check(self, chunk: Chunk) -> CheckedChunk:
        """Inspect one chunk; return the cleaned chunk, its issues and its bad mask.

        Raises
        ------
        InputError
            If the chunk cannot be used at all (wrong channel count, shapes that do
            not match).
        """
        samples, ts, counter = self._validate(chunk)
        issues: list[InputIssue] = []
        if samples.shape[0] == 0:
            return CheckedChunk(chunk, (), np.zeros((0, self._nch), dtype=bool), self._n_out)
        cut = self._rate_n - self._n_out
        if not self._rate_done and 0 < cut < samples.shape[0]:
            # The jitter tolerance may widen after the rate measurement's last sample:
            # check the samples up to it apart, so the chunking does not matter.
            return _joined(self.check(_part(chunk, 0, cut)),
                           self.check(_part(chunk, cut, samples.shape[0])))
        if self._fast_path:
            fast = self._check_clean(samples, ts, counter, chunk.arrival_wall)
            if fast is not None:
                return fast

        ts, bad_ts = self._fix_timestamps(ts)
        samples, ts, counter, keep = self._drop_duplicates(samples, ts, counter, issues)
        start = self._n_out
        if bad_ts.any():
            out_index = start + np.cumsum(keep) - 1
            for i in np.flatnonzero(bad_ts):
                k = int(max(out_index[i], start))
                self._report(
                    issues,
                    IssueKind.BAD_TIMESTAMP,
                    k,
                    f"{self.info.name}: non-finite timestamp at sample {k}, replaced by the "
                    "previous one + 1/fs; check the source's clock",
                )
        n = samples.shape[0]
        breaks: list[int] = []
        if n:
            losses: list[tuple[int, int, bool]] = []
            breaks = self._check_order(ts, counter, start, issues, losses)
            if not self._rate_done:
                self._measure_rate(ts, start, losses, issues)
            clean, bad = self._check_values(samples, start, issues)
            self._check_rate(ts, start, issues)
            self._flush_folded(issues, start + n)
            self._last_ts = float(ts[-1])
            if counter is not None:
                self._last_counter = int(counter[-1])
            self._n_out += n
        else:
            clean, bad = samples, np.zeros((0, self._nch), dtype=bool)
        issues.sort(key=_issue_order)
        out = Chunk(samples=clean, timestamps=ts, counter=counter, arrival_wall=chunk.arrival_wall)
        received = samples if clean is not samples and not usable(samples).all() else None
        return CheckedChunk(out, tuple(issues), bad, start, tuple(breaks), received)

    # -- fast path -------------------------------------------------------------------------
    def _check_clean(
        self, x: np.ndarray, ts: np.ndarray, counter: np.ndarray | None, arrival_wall: float
    ) -> CheckedChunk | None:
        """Check a plainly clean chunk with whole-chunk operations, or return None.

        The chunk is taken only when the exact path would provably report nothing but
        the rate check and mark nothing bad:

        * the previous timestamp is known (and the previous counter value, with a counter);
        * every timestamp is finite and none goes back by more than the jitter
          tolerance; without a counter, none equals the one before and none runs ahead
          of the stream's clock (:meth:`_clock_gaps`): no non-finite timestamp,
          duplicate, gap or reportable non-monotonic time;
        * with a counter, it goes up by exactly 1 per sample from the previous value: no
          duplicate, gap or non-monotonic counter;
        * every value is finite and no channel is bad now (NaN/inf not yet recovered,
          flat, saturated);
        * no run of repeated values (the run carried over from the previous chunk
          included) reaches the flat or the saturation length in this chunk.

        The state is then updated to exactly what the exact path leaves. Nothing is
        changed before the decision, so None leaves the chunk wholly to the exact path.
        """
        n, nch = x.shape
        last_ts = self._last_ts
        if last_ts is None or self._suppressed:  # folded issues: the exact path says them
            return None
        # -- timestamps and counter --------------------------------------------------------
        # Strictly increasing from a finite previous one to a finite last one means all
        # finite (comparisons with NaN are False), no step back and no time twice: the
        # usual case, two calls. Otherwise (jittering stamps) check finiteness before
        # subtracting (inf - inf would warn), then the steps.
        t0, t_end = float(ts[0]), float(ts[-1])
        d = None
        if not (t0 > last_ts and t_end < math.inf
                and np.count_nonzero(ts[1:] > ts[:-1]) == n - 1):
            if not (math.isfinite(float(np.minimum.reduce(ts)))
                    and math.isfinite(float(np.maximum.reduce(ts)))):
                return None
            d = ts[1:] - ts[:-1]
            if not (t0 - last_ts >= -self._jitter
                    and (n == 1 or np.minimum.reduce(d) >= -self._jitter)):
                return None  # gone back by more than the jitter: the exact path reports it
            if counter is None and (t0 == last_ts or np.count_nonzero(d) != n - 1):
                return None  # the same time twice: maybe a duplicate
        floor = None
        if counter is None:
            # No gap while the stamps never outrun the gap check's clock (then its
            # ``u`` only falls, and the first sample decides); else the whole check.
            step = self._u_step
            if d is None:
                d = ts[1:] - ts[:-1]
            if self._ts_floor is not None and t0 - last_ts <= step and (
                    n == 1 or np.maximum.reduce(d) <= step):
                u0 = t0 - float(self._n_out) * step
                if u0 - self._ts_floor > self._jitter:
                    return None
                floor = min(self._ts_floor, t_end - float(self._n_out + n - 1) * step)
            else:
                gaps, floor = self._clock_gaps(ts, self._n_out)
                if gaps:
                    return None
        else:
            last_c = self._last_counter
            if last_c is None:
                return None
            c0 = int(counter[0])
            # strictly increasing and spanning n - 1: consecutive
            if c0 != last_c + 1 or int(counter[-1]) - c0 != n - 1:
                return None
            if np.count_nonzero(counter[1:] > counter[:-1]) != n - 1:
                return None
        # -- values ---------------------------------------------------------------------
        if np.count_nonzero(self._active) or not (
                np.maximum.reduce(np.abs(x), axis=None) < absurd_limit(x.dtype)):  # NaN: False
            return None
        tail = None
        rep_in = x[1:] == x[:-1]  # value equal to the one before
        rep_0 = x[0] == self._last_raw
        if np.count_nonzero(rep_in) or np.count_nonzero(rep_0):
            rep = np.concatenate((rep_0[None], rep_in))
            # A flat or saturated run is a run of repeats, so the run of repeats bounds
            # it; the run carried in is at most flat_run + sat_run (one of them is 0).
            carry = np.add.reduce(self._runs, axis=0)
            idx = self._index_column(n)
            last_break = np.where(rep, -1, idx)  # index of the latest non-repeat so far
            if not np.count_nonzero(carry + n >= self._run_limit):
                last_break = np.maximum.reduce(last_break, axis=0)
            else:
                np.maximum.accumulate(last_break, axis=0, out=last_break)
                runs = idx - last_break + np.where(last_break == -1, carry, 0)
                if np.maximum.reduce(runs, axis=None) >= self._run_limit:
                    return None
                last_break = last_break[-1]
            tail = (n - 1) - last_break  # trailing repeats per channel (n: all of them)
        # -- commit: the state the exact path would leave -------------------------------
        start = self._n_out
        np.fmax(self._run_max, np.maximum.reduce(x, axis=0), out=self._run_max)
        np.fmin(self._run_min, np.minimum.reduce(x, axis=0), out=self._run_min)
        if tail is None:
            self._runs.fill(0)
        else:
            # Within a run of repeats the running extremes do not move, so the whole
            # trailing run is flat, or saturated, like its last sample.
            last = x[-1]
            rail = ((last == self._run_max) | (last == self._run_min)) & (
                self._run_max > self._run_min
            )
            tail += np.where(tail == n, np.where(rail, self._sat_run, self._flat_run), 0)
            self._sat_run[...] = np.where(rail, tail, 0)
            self._flat_run[...] = np.where(rail, 0, tail)
        np.add(self._finite_run, n, out=self._finite_run)
        np.minimum(self._finite_run, 1 << 60, out=self._finite_run)
        self._last_clean[...] = x[-1]
        self._last_raw[...] = x[-1]
        issues: list[InputIssue] = []
        if -(-start // self._rate_step) * self._rate_step < start + n:  # a rate checkpoint
            self._check_rate(ts, start, issues)
            issues.sort(key=_issue_order)
        if not self._rate_done:
            self._measure_rate(ts, start, [], issues)
            issues.sort(key=_issue_order)
        self._ts_floor = floor
        self._last_ts = t_end
        if counter is not None:
            self._last_counter = int(counter[-1])
        self._n_out += n
        out = Chunk(samples=x, timestamps=ts, counter=counter, arrival_wall=arrival_wall)
        return CheckedChunk(out, tuple(issues), np.zeros((n, nch), dtype=bool), start)

    def _index_column(self, n: int) -> np.ndarray:
        """0..n-1 as an (n, 1) int64 column (kept between calls, grown when needed)."""
        if self._idx.shape[0] < n:
            self._idx = np.arange(max(n, 2 * self._idx.shape[0]), dtype=np.int64)[:, None]
        return self._idx[:n]

    # -- steps -----------------------------------------------------------------------------
    def _validate(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        name = self.info.name
        samples = np.asarray(chunk.samples)
        if samples.ndim != 2:
            raise InputError(
                f"{name}: a chunk must be a 2-D array (samples x channels), got shape "
                f"{samples.shape}; check the source's read()"
            )
        if samples.shape[1] != self._nch:
            raise InputError(
                f"{name}: chunk has {samples.shape[1]} channels but the source announced "
                f"{self._nch} ({', '.join(self.info.channels)}); check the channel "
                "selection of the device or stream, or restart it"
            )
        n = samples.shape[0]
        ts = np.asarray(chunk.timestamps, dtype=np.float64)
        if ts.shape != (n,):
            raise InputError(
                f"{name}: {n} samples but timestamps of shape {ts.shape}; the source must "
                "give one timestamp per sample"
            )
        counter = None
        if chunk.counter is not None:
            c = np.asarray(chunk.counter)
            if c.shape != (n,):
                raise InputError(
                    f"{name}: {n} samples but a counter of shape {c.shape}; the source must "
                    "give one counter value per sample"
                )
            counter = c.astype(np.int64, copy=True)
        return samples.astype(np.float64, copy=True), ts.copy(), counter

    def _report(self, issues: list[InputIssue], kind: IssueKind, sample: int, message: str) -> None:
        """Report a repeating stream-wide issue, folding repeats within the hold-off."""
        self._flush_folded(issues, sample + 1, kind)
        last = self._last_report.get(kind)
        if last is not None and sample - last < self._holdoff:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            self._folded[kind] = (sample, message)
            return
        self._last_report[kind] = sample
        issues.append(InputIssue(kind, None, sample, message))

    def _flush_folded(self, issues: list[InputIssue], end: int,
                      only: IssueKind | None = None) -> None:
        """Summarise the folded issues whose hold-off ends before sample ``end``, at the
        sample where it ends (so the summary does not depend on the chunking)."""
        for kind in [k for k in self._suppressed if only is None or k is only]:
            due = self._last_report[kind] + self._holdoff
            if due < end:
                self._summary(issues, kind, due)

    def _summary(self, issues: list[InputIssue], kind: IssueKind, at: int) -> None:
        count = self._suppressed.pop(kind)
        last = self._last_report[kind]
        sample, message = self._folded.pop(kind)
        self._last_report[kind] = at
        issues.append(InputIssue(kind, None, at, (
            f"{message} ({count} like this from sample {last + 1} to {sample}, not listed "
            "singly)")))

    def flush(self) -> list[InputIssue]:
        """The folded issues not yet summarised (call at the end of the stream)."""
        issues: list[InputIssue] = []
        for kind in list(self._suppressed):
            self._summary(issues, kind, max(self._n_out - 1, self._last_report[kind]))
        return issues

    def _fix_timestamps(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Replace non-finite timestamps by the previous one + 1/fs; return the mask."""
        bad = ~np.isfinite(ts)
        if bad.any():
            prev = self._last_ts
            for i in range(ts.shape[0]):
                if bad[i]:
                    ts[i] = (prev + 1.0 / self._fs) if prev is not None else 0.0
                prev = float(ts[i])
        return ts, bad

    def _drop_duplicates(
        self,
        samples: np.ndarray,
        ts: np.ndarray,
        counter: np.ndarray | None,
        issues: list[InputIssue],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Drop samples that repeat the previous one; return the kept arrays and mask."""
        n = samples.shape[0]
        if counter is not None:
            prev_c = np.empty(n, dtype=np.int64)
            prev_c[1:] = counter[:-1]
            prev_c[0] = counter[0] - 1 if self._last_counter is None else self._last_counter
            dup = counter == prev_c
        else:
            prev_ts = np.empty(n)
            prev_ts[1:] = ts[:-1]
            prev_ts[0] = np.nan if self._last_ts is None else self._last_ts
            prev_x = np.empty_like(samples)
            prev_x[1:] = samples[:-1]
            prev_x[0] = self._last_raw
            same = (samples == prev_x) | (np.isnan(samples) & np.isnan(prev_x))
            dup = (ts == prev_ts) & same.all(axis=1)
        keep = ~dup
        if not dup.any():
            return samples, ts, counter, keep
        out_index = self._n_out + np.cumsum(keep) - 1
        for i in np.flatnonzero(dup):
            k = int(out_index[i])
            what = f"counter {int(counter[i])}" if counter is not None else f"time {ts[i]:.6f}"
            self._report(
                issues,
                IssueKind.DUPLICATE,
                k,
                f"{self.info.name}: sample {k} ({what}) was delivered twice; the copy was "
                "dropped. Check the device link or the sender for retransmissions",
            )
        counter = counter[keep] if counter is not None else None
        return samples[keep], ts[keep], counter, keep

    def _check_order(
        self, ts: np.ndarray, counter: np.ndarray | None, start: int, issues: list[InputIssue],
        losses: list[tuple[int, int, bool]],
    ) -> list[int]:
        """Report gaps and order problems; return the breaks (see CheckedChunk.breaks)
        and add every gap to ``losses`` (see :meth:`_measure_rate`)."""
        name = self.info.name
        breaks: list[int] = []
        fs = self._fs
        prev_ts = np.empty_like(ts)
        prev_ts[1:] = ts[:-1]
        prev_ts[0] = np.nan if self._last_ts is None else self._last_ts
        dt = ts - prev_ts  # NaN at the very first sample
        if counter is not None:
            self._ts_floor = None  # the gap check's clock restarts without a counter
            prev_c = np.empty_like(counter)
            prev_c[1:] = counter[:-1]
            prev_c[0] = counter[0] - 1 if self._last_counter is None else self._last_counter
            dc = counter - prev_c
            for i in np.flatnonzero(dc != 1).tolist():
                k = start + i
                breaks.append(k)
                a, b = int(prev_c[i]), int(counter[i])
                if dc[i] > 1:
                    losses.append((k, b - a - 1, True))
                    self._report(
                        issues,
                        IssueKind.GAP,
                        k,
                        f"{name}: {b - a - 1} sample(s) lost before sample {k} (counter "
                        f"jumped from {a} to {b}); check the device link (radio range, "
                        "USB, CPU load)",
                    )
                else:
                    self._report(
                        issues,
                        IssueKind.NON_MONOTONIC,
                        k,
                        f"{name}: counter went back from {a} to {b} at sample {k}; the "
                        "device restarted or samples arrive out of order",
                    )
        else:
            gaps, self._ts_floor = self._clock_gaps(ts, start)
            for i, ahead in gaps:
                k = start + i
                breaks.append(k)
                missing = max(1, round(ahead * fs))
                losses.append((k, missing, False))
                self._report(
                    issues,
                    IssueKind.GAP,
                    k,
                    f"{name}: timestamps jump by {dt[i] * 1e3:.1f} ms before sample {k} "
                    f"(~{missing} sample(s) at {fs:g} Hz, beyond the jitter tolerance of "
                    f"{self._jitter * 1e3:g} ms); samples were lost or the sender stamps "
                    "its chunks irregularly",
                )
        for i in np.flatnonzero(dt < -self._jitter).tolist():
            k = start + i
            self._report(
                issues,
                IssueKind.NON_MONOTONIC,
                k,
                f"{name}: timestamp at sample {k} is {-dt[i] * 1e3:.3f} ms before (or equal "
                "to) the previous one; check the source's clock and its timestamping",
            )
        return breaks

    def _clock_gaps(self, ts: np.ndarray, start: int) -> tuple[list[tuple[int, float]], float]:
        """Gaps without a counter: ``[(index in chunk, seconds ahead)]`` and the stream
        clock after the chunk (see the module docstring).

        ``u[k] = t[k] - k * (1 + RATE_SLACK) / fs``; the clock is the running minimum of
        ``u`` since the last gap; a sample more than the jitter tolerance above it is a
        gap, and the clock restarts there. Pure given the state: the same float
        operations at the same absolute indices in any chunking.
        """
        n = ts.shape[0]
        u = ts - np.arange(start, start + n, dtype=np.float64) * self._u_step
        floor = float(u[0]) if self._ts_floor is None else self._ts_floor
        gaps: list[tuple[int, float]] = []
        pos = 0
        while pos < n:
            seg = u[pos:]
            clock = np.minimum.accumulate(np.concatenate(([floor], seg)))
            ahead = seg - clock[:-1]
            hits = np.flatnonzero(ahead > self._jitter)
            if hits.size == 0:
                floor = float(clock[-1])
                break
            i = pos + int(hits[0])
            gaps.append((i, float(ahead[hits[0]]) + 1.0 / self._fs * RATE_SLACK))
            floor = float(u[i])
            pos = i + 1
        return gaps, floor

    def _measure_rate(self, ts: np.ndarray, start: int, losses: list[tuple[int, int, bool]],
                      issues: list[InputIssue]) -> None:
        """Collect the first ``rate_measure_seconds`` of timestamps; at the last of them,
        stop if the stream's true rate is too far from the declared one, and widen the
        jitter tolerance to the jitter seen.

        ``losses`` are the chunk's gaps: ``(sample, samples lost, counted)``, counted
        from the source's counter (exact) or estimated from the timestamps. The rate is
        the slope of a least-squares line through the timestamps against the sample
        index (losses from the counter counted); it stops the stream only if it is too
        far off both over the whole and within the stretches between the gaps found
        from timestamps (each its own intercept): a real gap without a counter biases
        the first, jitter taken for gaps the second, a wrong rate both.
        """
        n = ts.shape[0]
        take = min(n, self._rate_n - start)
        if take <= 0:
            self._rate_done = True
            return
        exact = np.full(take, float(self._lost_exact))
        est = np.full(take, float(self._lost_est))
        seg = np.full(take, self._rate_seg, dtype=np.int64)
        for k, m, counted in losses:
            if counted:
                self._lost_exact += m
            else:
                self._lost_est += m
                self._rate_seg += 1
            if k - start < take:
                (exact if counted else est)[k - start :] += m
                if not counted:
                    seg[k - start :] += 1
        x = np.arange(start, start + take, dtype=np.float64) + exact
        self._rate_x.append(x)
        self._rate_e.append(est)
        self._rate_g.append(seg)
        self._rate_t.append(ts[:take].copy())
        if start + take < self._rate_n:
            return
        x, e = np.concatenate(self._rate_x), np.concatenate(self._rate_e)
        g, t = np.concatenate(self._rate_g), np.concatenate(self._rate_t)
        self._rate_x, self._rate_e, self._rate_g, self._rate_t = [], [], [], []
        self._rate_done = True
        (rate, resid), (_, resid_est) = _fit_rate(x, t), _fit_rate(x + e, t)
        rate_apart, _ = _fit_rate(x, t, g)
        rate_est = rate_apart
        fs = self._fs
        if not (rate > 0 and rate_est > 0):
            return  # time does not advance: the order checks say so
        # the jitter: around whichever line fits better (with the estimated losses when
        # they were real gaps, without when they were jitter taken for gaps)
        lo, hi = min((np.percentile(r, [1.0, 99.0]) for r in (resid, resid_est)),
                     key=lambda q: q[1] - q[0])
        if 1.5 * float(hi - lo) > self._jitter:
            self._jitter = 1.5 * float(hi - lo)
            k = self._rate_n - 1
            issues.append(InputIssue(IssueKind.JITTER, None, k, (
                f"{self.info.name}: its timestamps jitter by {(hi - lo) * 1e3:.1f} ms over "
                f"its first {self._rate_n / fs:g} s (sample {k}); the gap check now "
                f"tolerates {self._jitter * 1e3:.1f} ms, so shorter gaps are not seen "
                "without a sample counter. Decisions use sample counts and are not "
                "affected; a source that sends a counter has every gap found")))
        limit = round(self._rate_stop * 100, 1)
        rel = rate / fs - 1.0
        if round(abs(rel) * 100, 1) > limit and round(abs(rate_est / fs - 1) * 100, 1) > limit:
            raise InputError(
                f"{self.info.name}: its timestamps advance at {rate:.1f} samples per second "
                f"over its first {self._rate_n / fs:g} s, but it declares {fs:g} Hz "
                f"({abs(rel):.1%} {'faster' if rel > 0 else 'slower'}, more than "
                f"{self._rate_stop:.0%}): every time on the sample clock (onset timing, "
                "refractory periods, stimulation ramps and on-times) would be off by as "
                "much. Set the device's sample rate to what the stream declares, or make "
                "the sender declare its true rate (LSL: nominal_srate)"
            )

    def _check_values(
        self, samples: np.ndarray, start: int, issues: list[InputIssue]
    ) -> tuple[np.ndarray, np.ndarray]:
        n, nch = samples.shape
        fs = self._fs
        labels = self.info.channels
        units = self.info.units
        finite = usable(samples)
        clean = samples.copy()
        bad = np.zeros((n, nch), dtype=bool)
        per_channel: list[InputIssue] = []
        last_raw = self._last_raw
        for c in range(nch):
            x = samples[:, c]
            label = labels[c]
            # -- non-finite values ------------------------------------------------------
            fin = finite[:, c]
            if not fin.all() or self._nonfinite_active[c]:
                run = _run_lengths(fin, int(self._finite_run[c]))
                active = run < self._recover_n
                on, off = _edges(active, bool(self._nonfinite_active[c]))
                events = sorted([(int(i), True) for i in on] + [(int(i), False) for i in off])
                for i, starts in events:
                    k = start + i
                    if starts:
                        self._nonfinite_start[c] = k
                        what = ("NaN/inf" if not np.isfinite(x[i]) else
                                f"values beyond ±{ABSURD_LIMIT:g} ({x[i]:.3g} {units})")
                        per_channel.append(
                            InputIssue(
                                IssueKind.NONFINITE,
                                label,
                                k,
                                f"channel {label}: {what} from sample {k}, replaced by "
                                f"{'the last finite value' if self._hold else '0'} and the "
                                "channel suspended; check the amplifier driver and the cable",
                            )
                        )
                    else:
                        dur = (k - int(self._nonfinite_start[c])) / fs
                        per_channel.append(
                            InputIssue(
                                IssueKind.RECOVERED,
                                label,
                                k,
                                f"channel {label}: finite again at sample {k} after "
                                f"{dur:.2f} s of NaN/inf",
                            )
                        )
                self._finite_run[c] = run[-1]
                self._nonfinite_active[c] = active[-1]
                bad[:, c] |= active
                if not fin.all():
                    if self._hold:
                        clean[:, c] = hold_nonfinite(x[:, None], self._last_clean[c : c + 1])[:, 0]
                    else:
                        clean[~fin, c] = 0.0
            else:
                self._finite_run[c] = min(int(self._finite_run[c]) + n, 1 << 60)
            self._last_clean[c] = clean[-1, c]
            # -- flat and saturated -----------------------------------------------------
            prev = np.empty(n)
            prev[0] = last_raw[c]
            prev[1:] = x[:-1]
            rep = (x == prev) & fin  # non-finite values are reported above, not here
            xf = np.where(fin, x, np.nan)  # extremes ignore NaN and inf
            seq_max = np.fmax.accumulate(np.concatenate(([self._run_max[c]], xf)))[1:]
            seq_min = np.fmin.accumulate(np.concatenate(([self._run_min[c]], xf)))[1:]
            at_rail = ((x == seq_max) | (x == seq_min)) & (seq_max > seq_min)
            sat_cond = rep & at_rail
            flat_cond = rep & ~at_rail
            for kind, cond, n_thr, run_attr, act_attr in (
                (IssueKind.SATURATED, sat_cond, self._sat_n, "_sat_run", "_sat_active"),
                (IssueKind.FLAT, flat_cond, self._flat_n, "_flat_run", "_flat_active"),
            ):
                runs_state = getattr(self, run_attr)
                act_state = getattr(self, act_attr)
                run = _run_lengths(cond, int(runs_state[c]))
                active = run >= n_thr - 1
                on, off = _edges(active, bool(act_state[c]))
                for i in on:
                    k = start + int(i)
                    if kind is IssueKind.FLAT:
                        msg = (
                            f"channel {label}: flat (identical values) for {n_thr / fs:.2f} s "
                            f"at sample {k}; check the electrode contact and the cable"
                        )
                    else:
                        side = "largest" if x[i] == seq_max[i] else "smallest"
                        msg = (
                            f"channel {label}: pinned at the {side} value seen "
                            f"({x[i]:g} {units}) for {n_thr / fs:.2f} s at sample {k}; the "
                            "amplifier is saturated: check the electrode contact, the "
                            "reference electrode and stimulation artefacts"
                        )
                    per_channel.append(InputIssue(kind, label, k, msg))
                for i in off:
                    k = start + int(i)
                    per_channel.append(
                        InputIssue(
                            IssueKind.RECOVERED,
                            label,
                            k,
                            f"channel {label}: no longer {kind.value} at sample {k}",
                        )
                    )
                runs_state[c] = run[-1]
                act_state[c] = active[-1]
                bad[:, c] |= active
            self._run_max[c] = seq_max[-1]
            self._run_min[c] = seq_min[-1]
        self._last_raw = samples[-1].copy()
        issues.extend(per_channel)
        return clean, bad

    def _check_rate(self, ts: np.ndarray, start: int, issues: list[InputIssue]) -> None:
        step, window = self._rate_step, self._rate_window
        n = ts.shape[0]
        first = -(-start // step) * step  # first multiple of step >= start
        for k in range(first, start + n, step):
            t_k = float(ts[k - start])
            self._checkpoints[k] = t_k
            t_old = self._checkpoints.pop(k - window, None)
            if t_old is None or t_k <= t_old:
                continue
            rate = window / (t_k - t_old)
            rel = rate / self._fs - 1.0
            active = abs(rel) > self._rate_tol
            if active and not self._rate_active:
                issues.append(
                    InputIssue(
                        IssueKind.RATE,
                        None,
                        k,
                        f"{self.info.name}: effective rate {rate:.1f} Hz is "
                        f"{abs(rel) * 100:.1f} % {'above' if rel > 0 else 'below'} the nominal "
                        f"{self._fs:g} Hz over the last {window / self._fs:g} s (sample {k}); "
                        "check the device's sample-rate setting and the sender's timestamps",
                    )
                )
            elif not active and self._rate_active:
                issues.append(
                    InputIssue(
                        IssueKind.RECOVERED,
                        None,
                        k,
                        f"{self.info.name}: effective rate {rate:.1f} Hz back within "
                        f"{self._rate_tol * 100:g} % of nominal at sample {k}",
                    )
                )
            self._rate_active = active
