"""The loop's front end: check each chunk and say, to the sample, which channels to trust.

:class:`InputStage` runs the input monitor (:mod:`closedloop.core.checks`: NaN, gaps,
flat or saturated channels), the held-value check (:mod:`closedloop.core.held`: a
channel pinned or frozen, within a few samples, exempt while stimulation runs) and the
mains-hum check (:mod:`closedloop.core.mains`) on every chunk, takes the config's muscle
columns, and cuts the chunk into :class:`Segment` s inside which no channel's usability
changes. At the start of each segment it lists the detectors to suspend or resume, so
the loop switches them at the exact sample the checks decided: the same samples in any
chunking give the same events (the checks and the core are chunk-invariant, and so is
where they meet).

Stretches the impulse gate (:mod:`closedloop.core.impulses`) is still judging only
*hold* a channel (no new onset; an onset already under way goes on, so a genuine sharp
contraction keeps its train): when a stretch turns out to be an artefact, its last
sample is bad like any other and the channel is suspended from there.

A channel is suspended while a check finds it bad and for ``settle_s`` after (the loop
restarts the channel's filters at the first good sample, so the step back to EMG does
not ring, and the settling time lets the envelope and the notch forget the bad
stretch), and at the start of the session until every check has judged it once (so the
detector never learns its rest level from a channel that is bad from the start).
Where the stream breaks (samples lost, or the counter going back: the monitor's
``breaks``) every channel is treated as bad at that sample: the jump in the signal (and
in the mains hum's phase) would otherwise ring through the filters and look like an
onset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from closedloop.config.signal import FilterSettings
from closedloop.core import impulses
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.checks import InputIssue, InputMonitor, IssueKind
from closedloop.core.detectors.base import RestNote
from closedloop.core.detectors.threshold import REST_DROP, SEED_SPREAD
from closedloop.core.filters import effective_band
from closedloop.core.held import HeldValueCheck
from closedloop.core.impulses import ImpulseGate, Stretch
from closedloop.core.mains import HumCheck
from closedloop.core.stream import Chunk, SourceInfo
from closedloop.errors import InputError

#: Sessions refuse EMG sampled slower than this (see :func:`rate_check`).
MIN_FS = 200.0
#: Below this rate a session warns that part of the surface-EMG band is lost.
FULL_BAND_FS = 1000.0
#: The fastest rate the signal core is designed for.
MAX_FS = 20000.0


def rate_check(info: SourceInfo, filters: FilterSettings) -> InputIssue | None:
    """What a session must say about the source's sampling rate, before anything runs.

    Surface EMG carries power up to 400-500 Hz (most of it at 50-150 Hz). Below
    ``FULL_BAND_FS`` the configured band-pass is cut at 0.9 x Nyquist
    (:func:`~closedloop.core.filters.effective_band`): the returned issue (at sample 0)
    says which band is left and what that costs. Below ``MIN_FS`` the session is
    refused: at 100 Hz the band left is 20-45 Hz, under the mains frequency and a small
    fraction of the EMG's power, and the timing rules shrink to a sample or two (the
    3 ms minimum on-time and the 15 ms RMS window become 1 and 2 samples of 10 ms).

    Raises
    ------
    InputError
        The rate is below ``MIN_FS`` or above ``MAX_FS``, or the band-pass does not fit
        below Nyquist at this rate.
    """
    fs, lo_cfg, hi_cfg = float(info.fs), *filters.bandpass_hz
    if not MIN_FS <= fs <= MAX_FS:
        raise InputError(
            f"{info.name} delivers {fs:g} Hz; closedloop needs {MIN_FS:g}-{MAX_FS:g} Hz "
            f"(surface EMG carries power up to 400-500 Hz: 1 kHz or more, 2 kHz "
            "recommended). Set the amplifier's sampling rate, or pick its EMG stream")
    try:
        lo, hi = effective_band(filters, fs)
    except ValueError as exc:
        raise InputError(f"{info.name} at {fs:g} Hz: {exc}") from exc
    if fs >= FULL_BAND_FS:
        return None
    return InputIssue(IssueKind.BAND, None, 0, (
        f"{info.name}: sampled at {fs:g} Hz, so only {lo:g}-{hi:g} Hz of the configured "
        f"{lo_cfg:g}-{hi_cfg:g} Hz band is left (Nyquist {fs / 2:g} Hz). Surface EMG has "
        "power up to 400-500 Hz: onsets may come later and weak attempts be missed, and "
        "an amplifier without an anti-alias filter folds the rest of the EMG (and any "
        "stimulation artifacts) into this band. Use 1 kHz or more (2 kHz recommended)"))


@dataclass(frozen=True)
class Notice:
    """Something the input checks said: the message, and the sample (and its stream
    time) it concerns, so a recording can keep it where it happened.

    ``kind`` is the :class:`~closedloop.core.checks.IssueKind` value (``"flat"``,
    ``"saturated"``, ``"held"``, ``"nonfinite"``, ``"gap"``, ... ``"recovered"``) or
    ``"mains"``; ``channel`` the channel it is about (None: the whole stream).
    """

    sample: int
    time: float
    message: str
    kind: str = ""
    channel: str | None = None


@dataclass(frozen=True)
class Segment:
    """Consecutive cleaned samples of the muscles' channels, usability constant.

    Attributes
    ----------
    start : int
        Absolute index of the first sample (the pipeline's sample clock).
    samples : ndarray, shape (n, n_muscles)
    timestamps : ndarray, shape (n,)
    changes : tuple of (int, bool)
        ``(column, suspended)``: detectors to suspend or resume from ``start`` on.
    restarts : tuple of int
        Columns whose bad data (flat, saturated, NaN, hum) ended just before ``start``:
        their filters should restart there.
    raw : ndarray or None
        The samples as received, NaN/inf included, where they differ from ``samples``.
    counter : ndarray of int or None
        The source's own counter of these samples (None: it gave none).
    holds : tuple of (int, bool)
        ``(column, held)``: detectors to hold or release from ``start`` on (the impulse
        gate: no new onset, an onset under way goes on; see
        :meth:`~closedloop.core.detectors.threshold.OnsetDetector.hold`).
    """

    start: int
    samples: np.ndarray
    timestamps: np.ndarray
    changes: tuple[tuple[int, bool], ...] = ()
    restarts: tuple[int, ...] = ()
    raw: np.ndarray | None = None
    counter: np.ndarray | None = None
    holds: tuple[tuple[int, bool], ...] = ()

    @property
    def stop(self) -> int:
        """The sample after the chunk's last one."""
        return self.start + int(self.samples.shape[0])

    @property
    def received(self) -> np.ndarray:
        """The samples as received (what a recording keeps, so a replay sees them too)."""
        return self.samples if self.raw is None else self.raw


class InputStage:
    """Input monitor + hum check -> segments (see the module docstring).

    Parameters
    ----------
    info : SourceInfo
    columns : sequence of int
        Source column of each muscle, in muscle order.
    names : sequence of str
        Muscle names (for messages).
    hum : HumCheck
    artifacts : ArtifactRemover, optional
        Its blanking schedule tells the hum check which blocks hold stimulation.
    settle_s : float
        A channel resumes only after this long of usable samples.
    flat_s : float
        The input monitor's flat time; with one hum block, how long every channel is
        held at the start.
    impulses : ImpulseGate, optional
        Finds raw stretches far outside each channel's range (see
        :mod:`closedloop.core.impulses`): the channel is held from their first sample
        and, when they were impulses, absurd values or a level shift, restarted and
        settled after them. None: no such check.
    holdoff_s : float
        Impulses of one channel are reported at most this often; the ones between are
        counted and said with the next (or at the end of the session).
    filters : FilterSettings, optional
        The band-pass: below 1 kHz the first notice says which band is left
        (:func:`rate_check`).
    """

    def __init__(self, info: SourceInfo, columns: Sequence[int], names: Sequence[str],
                 hum: HumCheck, artifacts: ArtifactRemover | None = None,
                 settle_s: float = 0.5, flat_s: float = 0.5,
                 impulses: ImpulseGate | None = None, holdoff_s: float = 1.0,
                 filters: FilterSettings | None = None) -> None:
        self.monitor = InputMonitor(info, flat_seconds=flat_s)
        self.columns = list(columns)
        self.names = tuple(names)
        self.units = info.units
        self.held = HeldValueCheck(info.fs, self.names, info.units)
        self.hum = hum
        self.artifacts = artifacts
        self.impulses = impulses if impulses is not None and impulses.enabled else None
        n = len(self.names)
        self.settle_s = float(settle_s)
        self.settle = max(0, round(settle_s * info.fs))
        self._holdoff = max(1, round(holdoff_s * info.fs))
        self._said: dict[int, int] = {}  # column -> sample of its last impulse notice
        self._folded: dict[int, tuple[int, int, Stretch]] = {}  # column -> (count, first, latest)
        startup = max(round(flat_s * info.fs), hum.block if hum.enabled else 0)
        self._usable_run = np.full(n, self.settle - startup, dtype=np.int64)
        self._dirty = np.zeros(n, dtype=bool)  # bad data at the last sample given out
        #: Per muscle: suspended at the last sample given out.
        self.suspended = np.zeros(n, dtype=bool)
        #: Per muscle: held by the impulse gate at the last sample given out.
        self.holding = np.zeros(n, dtype=bool)
        #: Per muscle: why it is suspended at the last sample (``"signal"``: the input
        #: monitor's flat/saturated/NaN, ``"hum"``, ``"impulse"``: the impulse gate holds
        #: it, ``"settling"`` after any of them or at the start), or "".
        self.why = [""] * n
        self.position = 0  # absolute index of the next cleaned sample
        self._fs = float(info.fs)
        self._clock = (0, np.zeros(1))  # first sample of the last chunk, its timestamps
        self._notices: list[Notice] = []
        self._first: list[InputIssue] = []  # said with the first chunk (its timestamps)
        if filters is not None:
            band = rate_check(info, filters)
            self._first = [] if band is None else [band]

    def pop_notices(self) -> list[Notice]:
        """What the checks found since the last call (each names channel and sample)."""
        out, self._notices = self._notices, []
        return out

    def finish(self) -> list[Notice]:
        """At the end of the session: what the checks found and had not said yet (the
        issues folded into a summary that was still due)."""
        self._say(self._first + self.monitor.flush())
        self._first = []
        for c in sorted(self._folded):
            self._say([self._fold_summary(c, max(self.position - 1, 0))])
        return self.pop_notices()

    def _say(self, issues) -> None:
        """Keep input issues as notices, with the stream time of their sample (counted
        on at the nominal rate for a sample outside the last chunk)."""
        k0, ts = self._clock
        for issue in issues:
            k = issue.sample
            i = min(max(k - k0, 0), ts.shape[0] - 1)
            self._notices.append(Notice(k, float(ts[i]) + (k - k0 - i) / self._fs,
                                        issue.message, str(issue.kind.value), issue.channel))

    def _hum_issue(self, sample: int, c: int, on: bool, db: float) -> InputIssue:
        """The mains-hum check's change of column ``c`` as an input issue."""
        name = self.names[c]
        if on:
            return InputIssue(IssueKind.MAINS, name, sample, (
                f"channel {name}: mains hum {db:.0f} dB above the rest of its EMG band at "
                f"sample {sample}; detector suspended. Check the electrode contact, the "
                "reference electrode and mains cables near the patient"))
        return InputIssue(IssueKind.RECOVERED, name, sample, (
            f"channel {name}: mains hum down to {db:.0f} dB at sample {sample}; detector "
            "resumed"))

    def _stretch_issue(self, r: Stretch) -> InputIssue:
        """The impulse gate's record ``r`` as an input issue."""
        name, u, fs = self.names[r.channel], self.units, self.monitor.info.fs
        ms = (r.last - r.start + 1) / fs * 1e3
        size = f"up to {r.peak:.3g} {u} from its level, {r.ratio:.3g} x the largest swing of " \
               "its last minute"
        back = f"filters restarted, detector suspended and back after {self.settle_s:g} s"
        check = ("Check the amplifier, its driver and the stream's scaling" if r.absurd else
                 "Check the electrode and its cable (a knock, a loose lead, static, movement)")
        what = "absurd values" if r.absurd else "impulsive artefact"
        if r.what == impulses.IMPULSE:
            return InputIssue(IssueKind.ABSURD if r.absurd else IssueKind.IMPULSE, name,
                              r.start, (
                f"channel {name}: {what} at sample {r.start}, {ms:.0f} ms {size}; not taken "
                f"as an attempt, {back}. {check}"))
        if r.what == impulses.HELD:
            what = "absurd values" if r.absurd else "a slow excursion far outside its range"
            return InputIssue(IssueKind.ABSURD if r.absurd else IssueKind.IMPULSE, name,
                              r.sample, (
                f"channel {name}: {what} since sample {r.start} ({size}), still going at "
                f"sample {r.sample}: not EMG, detector suspended until it is over. {check}"))
        if r.what == impulses.OVER:
            return InputIssue(IssueKind.RECOVERED, name, r.sample, (
                f"channel {name}: back in range at sample {r.sample} after "
                f"{(r.sample - r.start + 1) / fs:.2f} s; {back}"))
        if r.what == impulses.SHIFT:
            return InputIssue(IssueKind.LEVEL_SHIFT, name, r.start, (
                f"channel {name}: its level jumped by {r.level_to - r.level_from:+.3g} {u} at "
                f"sample {r.start} ({abs(r.level_to - r.level_from) / r.range:.3g} x the "
                f"largest swing of its last minute); {back}. Check the electrode contact "
                "(an electrode moved or came loose)"))
        return InputIssue(IssueKind.STRONG, name, r.sample, (
            f"channel {name}: from sample {r.start}, swings {r.ratio:.3g} x the largest of its "
            f"last minute for more than {(r.sample - r.start + 1) / fs * 1e3:.0f} ms: taken as "
            "activity (a contraction far stronger than any in the last minute), its onset "
            "held back that long. If the patient did not contract, check the electrode "
            "and its cable"))

    def say_rest(self, notes: list[RestNote]) -> None:
        """Keep what the detector's rest learning found (samples of the last chunk fed)
        as notices."""
        self._say(self._rest_issue(r) for r in notes)

    def _rest_issue(self, r: RestNote) -> InputIssue:
        name, fs = self.names[r.channel], self.monitor.info.fs
        if r.message:  # the detector's own words
            kind = IssueKind.RECOVERED if r.what == "learnt" else IssueKind.REST
            return InputIssue(kind, name, r.sample, f"channel {name}: {r.message}")
        if r.what == "not_quiet":
            return InputIssue(IssueKind.REST, name, r.sample, (
                f"channel {name}: what it learnt as rest at sample {r.since} was not quiet: "
                f"its level has dropped to {r.ratio:.0%} of that (below "
                f"{REST_DROP:.0%}) at sample {r.sample}, so its thresholds were too high "
                "(the patient was contracting while it learnt, or the electrode settled). "
                "Learning rest again: the detector waits for a moment of quiet rest"))
        if r.what == "waiting":
            return InputIssue(IssueKind.REST, name, r.sample, (
                f"channel {name}: no steady rest to learn from since sample {r.since} "
                f"({(r.sample + 1 - r.since) / fs:.1f} s): its level keeps changing by more "
                f"than {SEED_SPREAD:g} x from one block to the next. The detector cannot "
                f"trigger until the muscle rests: ask the patient to relax the {name}"))
        return InputIssue(IssueKind.RECOVERED, name, r.sample, (
            f"channel {name}: rest learnt at sample {r.sample}; detector ready"))

    def _say_stretches(self, records: list[Stretch], end: int) -> None:
        """Say the gate's records; impulses of one channel at most once per hold-off,
        the ones between folded into the next notice (or one said when it is due)."""
        for r in records:
            c = r.channel
            self._flush_fold(c, r.start)
            if r.what == impulses.IMPULSE:
                last = self._said.get(c)
                if last is not None and r.start - last < self._holdoff:
                    count, first, _ = self._folded.get(c, (0, r.start, r))
                    self._folded[c] = (count + 1, first, r)
                    continue
                self._said[c] = r.start
            self._say([self._stretch_issue(r)])
        for c in list(self._folded):
            self._flush_fold(c, end)

    def _flush_fold(self, c: int, end: int) -> None:
        """Say channel ``c``'s folded impulses if their hold-off ended before ``end``."""
        if c in self._folded:
            due = self._said[c] + self._holdoff
            if due < end:
                self._say([self._fold_summary(c, due)])

    def _fold_summary(self, c: int, at: int) -> InputIssue:
        count, first, r = self._folded.pop(c)
        self._said[c] = at
        issue = self._stretch_issue(r)
        return InputIssue(issue.kind, issue.channel, at, (
            f"{issue.message} ({count} like this from sample {first} to {r.start}, not "
            "listed singly)"))

    def feed(self, chunk: Chunk, until: int | None = None) -> list[Segment]:
        """Check one chunk; return its segments (none when every sample was dropped),
        cut at sample ``until`` when given (the end of the session).

        Raises
        ------
        InputError
            The chunk is unusable (wrong channel count...).
        """
        checked = self.monitor.check(chunk)
        n = checked.n
        if n:
            self._clock = (checked.start, checked.chunk.timestamps)
            if self._first:
                self._say(self._first)
                self._first = []
        self._say(checked.issues)
        if n == 0:
            return []
        start = checked.start
        raw = checked.chunk.samples[:, self.columns]
        received = None if checked.received is None else checked.received[:, self.columns]
        ts = checked.chunk.timestamps
        counter = checked.chunk.counter
        bad = checked.bad[:, self.columns]
        skip = stimulating = None
        if self.artifacts is not None:
            skip = self.artifacts.blank_mask(start, n)
            stimulating = self.artifacts.stimulating(start, n)[:, None]
        held, issues = self.held.check(raw, bad if stimulating is None else bad | stimulating)
        self._say(issues)
        bad = bad | held
        hold = ended = None
        if self.impulses is not None:
            hold, ended = self.impulses.process(raw, start, stimulating,
                                                bad if np.count_nonzero(bad) else None)
            records = self.impulses.pop_records()
            if records or self._folded:
                self._say_stretches(records, start + n)
        hum = self.hum.process(np.ascontiguousarray(raw.T), start, skip)
        self._say(self._hum_issue(*change) for change in self.hum.pop_changes())
        dirty = bad | hum
        if hold is not None:
            dirty = dirty | ended
        for k in checked.breaks:  # the signal jumps: restart and settle every channel
            dirty[k - start, :] = True
        self.position = start + n
        settled = bool((self._usable_run >= self.settle).all())
        if settled and hold is None and not (dirty.any() or self.suspended.any()
                                             or self._dirty.any() or self.holding.any()):
            # the common case, all good: one segment (the usable runs only grow)
            self._usable_run += n
            return _cut([Segment(start, raw, ts, raw=received, counter=counter)], until)
        # unusable while bad, and until ``settle`` usable samples followed (carried over)
        idx = np.arange(1, n + 1)[:, None]
        last_bad = np.maximum.accumulate(np.where(dirty, idx, 0), axis=0)
        run = np.where(last_bad > 0, idx - last_bad, idx + self._usable_run[None, :])
        self._usable_run = run[-1].copy()
        unusable = dirty | (run < self.settle)
        if hold is None:
            hold = np.zeros_like(dirty)
        rows = np.vstack((np.hstack((self.suspended, self._dirty, self.holding))[None, :],
                          np.hstack((unusable, dirty, hold))))
        cuts = np.flatnonzero((rows[1:] != rows[:-1]).any(axis=1))
        bounds = [0, *[int(i) for i in cuts if i > 0], n]
        segments = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            now, held_now = unusable[a], hold[a]
            changes = tuple((int(c), bool(now[c])) for c in np.flatnonzero(now != self.suspended))
            holds = tuple((int(c), bool(held_now[c]))
                          for c in np.flatnonzero(held_now != self.holding))
            restarts = tuple(int(c) for c in np.flatnonzero(self._dirty & ~dirty[a]))
            self.suspended, self._dirty = now.copy(), dirty[b - 1].copy()
            self.holding = held_now.copy()
            segments.append(Segment(start + a, raw[a:b], ts[a:b], changes, restarts,
                                    None if received is None else received[a:b],
                                    None if counter is None else counter[a:b], holds))
        self.why = [("hum" if h else "signal" if b else "settling") if u else
                    "impulse" if g else ""
                    for b, h, g, u in zip(bad[-1], hum[-1], hold[-1], unusable[-1],
                                          strict=True)]
        return _cut(segments, until)


def _cut(segments: list[Segment], until: int | None) -> list[Segment]:
    """The segments up to sample ``until`` (exclusive)."""
    if until is None or segments[-1].stop <= until:
        return segments
    out = [s for s in segments if s.stop <= until]
    last = next((s for s in segments if s.start < until < s.stop), None)
    if last is not None:
        k = until - last.start
        out.append(replace(last, samples=last.samples[:k], timestamps=last.timestamps[:k],
                           raw=None if last.raw is None else last.raw[:k],
                           counter=None if last.counter is None else last.counter[:k]))
    return out


__all__ = ["FULL_BAND_FS", "MIN_FS", "InputStage", "Notice", "Segment", "rate_check"]
