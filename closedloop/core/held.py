"""A channel that stops moving: recognised within a few samples, before it can trigger.

A live EMG channel never holds one value: at rest its noise, in activity the muscle,
change every sample. When the amplifier is pinned at its rail (an electrode coming
off, a step the input cannot follow) or the signal freezes, the same value comes again
and again. The input monitor (:mod:`closedloop.core.checks`) calls that flat or
saturated after ``flat_seconds`` / ``saturation_seconds`` (0.5 s / 0.05 s), long enough
not to mistake a coarse ADC's repeats for a fault. But the step onto the rail passes
the band-pass as a burst, and the detector decides an onset after ``min_on_ms`` (3 ms):
the step would start stimulation before the monitor has spoken.

:class:`HeldValueCheck` closes that gap. It learns how long each channel ever holds a
value (a float amplifier: never more than a sample or two; a 12-bit ADC: a few samples;
a stream upsampled by repetition: a whole hold period), and marks the channel bad as
soon as a value is held for ``min_repeats`` repeats *and* more than twice as long as
the channel ever held one before (``2 * longest + 1``). The mark lasts while the value
is held; the loop's settling time follows it (:mod:`closedloop.runtime.inputs`).

It is apart from :class:`~closedloop.core.checks.InputMonitor` because it must know
when the loop stimulates: a stimulation pulse can pin the amplifier for a few samples,
which must neither mark the channel nor teach it a longer hold. Samples the caller
marks ``exempt`` (stimulation running, or already bad for the monitor) never trigger
the mark, and a hold that ends on one is not learnt; nor is a hold that reached the
mark. The check is armed after ``arm_seconds``, so that a hold at the very start of a
stream (before the channel's usual hold is known) is the monitor's to judge.

Pure and chunk-invariant like the monitor: the same samples and exemptions in any
chunking give the same marks and issues, at the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from closedloop.core.checks import InputIssue, IssueKind


class HeldValueCheck:
    """Marks channels that hold one value far longer than they ever did (see above).

    Parameters
    ----------
    fs : float
        Sampling rate, Hz.
    channels : sequence of str
        Channel labels, in column order (for messages).
    units : str
        Units of the samples (for messages).
    min_repeats : int
        Never mark a hold shorter than this many repeats (``min_repeats + 1`` identical
        samples).
    arm_seconds : float
        The check marks nothing before this many seconds of samples.
    """

    def __init__(self, fs: float, channels: Sequence[str], units: str = "", *,
                 min_repeats: int = 3, arm_seconds: float = 0.2) -> None:
        if min_repeats < 1:
            raise ValueError(f"min_repeats={min_repeats}: must be at least 1")
        self.fs = float(fs)
        self.channels = tuple(channels)
        self.units = units
        self.min_repeats = int(min_repeats)
        self._arm = max(0, round(arm_seconds * self.fs))
        nch = len(self.channels)
        self._last = np.full(nch, np.nan)  # the last sample
        self._run = np.zeros(nch, dtype=np.int64)  # repeats ending at the last sample
        self._active = np.zeros(nch, dtype=bool)  # marked at the last sample
        self._last_exempt = np.ones(nch, dtype=bool)  # the last sample was exempt
        self._longest = np.zeros(nch, dtype=np.int64)  # longest hold learnt (repeats)
        self._n = 0

    def longest(self) -> np.ndarray:
        """Per channel, the longest hold learnt so far, in repeats."""
        return self._longest.copy()

    def check(self, x: np.ndarray, exempt: np.ndarray | None = None
              ) -> tuple[np.ndarray, list[InputIssue]]:
        """Check the next ``(n, n_channels)`` samples.

        ``exempt`` (``(n,)`` or ``(n, n_channels)`` bool) marks samples that must not
        trigger the mark nor teach a hold. Returns the ``(n, n_channels)`` mask of
        marked samples and the issues (a mark starting, a mark ending), in sample order.
        """
        n, nch = x.shape
        start = self._n
        ex = np.zeros((n, 1), dtype=bool) if exempt is None else \
            np.asarray(exempt, dtype=bool).reshape(n, -1)
        if n == 0 or (not self._active.any() and not self._repeats(x)):
            return self._no_repeats(x, ex)
        prev = np.empty_like(x)
        prev[0] = self._last
        prev[1:] = x[:-1]
        rep = x == prev  # NaN never repeats
        idx = np.arange(n)[:, None]
        armed = (start + idx) >= self._arm
        new_at = np.maximum.accumulate(np.where(rep, -1, idx), axis=0)  # -1: carried run
        run = idx - new_at + np.where(new_at < 0, self._run, 0)
        # -- learn: holds longer than any before that ended (rare) -------------------------
        run_before = np.vstack((self._run[None, :], run[:-1]))
        ends = ~rep & (run_before > self._longest)
        longest = np.broadcast_to(self._longest, (n, nch))
        if ends.any():
            ex_before = np.vstack((self._last_exempt[None, :],
                                   np.broadcast_to(ex[:-1], (n - 1, nch))))
            ends &= ~ex_before
            longest = longest.copy()
            for c in np.flatnonzero(ends.any(axis=0)).tolist():
                value = int(self._longest[c])
                for i in np.flatnonzero(ends[:, c]).tolist():
                    held = int(run_before[i, c])
                    if held > value and not self._was_marked(c, i, value, run, ex, armed,
                                                             new_at):
                        value = held
                        longest[i:, c] = value
        # -- mark: held beyond what the channel does ---------------------------------------
        need = np.maximum(self.min_repeats, 2 * longest + 1)
        hit = run >= need
        if self._active.any() or hit.any():
            hit &= ~ex & armed
            last_hit = np.maximum.accumulate(np.where(hit, idx, -1), axis=0)
            active = (last_hit >= new_at) & (last_hit >= 0)
            active |= (new_at < 0) & self._active  # a carried run that was marked
            issues = self._edges(x, run, active, start)
        else:
            active, issues = np.zeros((n, nch), dtype=bool), []
        self._last = x[-1].copy()
        self._run = run[-1].copy()
        self._active = active[-1].copy()
        self._last_exempt = np.broadcast_to(ex[-1], (nch,)).copy()
        self._longest = longest[-1].copy()
        self._n += n
        return active, issues

    def _repeats(self, x: np.ndarray) -> bool:
        """Whether any sample repeats the one before it."""
        return bool(np.count_nonzero(x[0] == self._last)
                    or np.count_nonzero(x[1:] == x[:-1]))

    def _no_repeats(self, x: np.ndarray, ex: np.ndarray
                    ) -> tuple[np.ndarray, list[InputIssue]]:
        """The common case, nothing repeats and nothing is marked: only the hold that
        ended at the first sample can be learnt. The same state as the general path."""
        n, nch = x.shape
        if n:
            learn = (self._run > self._longest) & ~self._last_exempt
            self._longest[learn] = self._run[learn]
            self._run.fill(0)
            self._last[...] = x[-1]
            self._last_exempt[...] = ex[-1]
            self._n += n
        return np.zeros((n, nch), dtype=bool), []

    def _was_marked(self, c: int, end: int, longest: int, run: np.ndarray, ex: np.ndarray,
                    armed: np.ndarray, new_at: np.ndarray) -> bool:
        """Whether the hold of channel ``c`` that ended at row ``end`` (exclusive) was
        marked, judged with the ``longest`` hold learnt before it."""
        first = int(new_at[end - 1, c]) if end > 0 else -1
        if first < 0 and self._active[c]:
            return True  # carried in, marked in an earlier chunk
        rows = slice(max(first, 0), end)
        need = max(self.min_repeats, 2 * longest + 1)
        exempt = ex[rows, c if ex.shape[1] > 1 else 0]
        return bool(((run[rows, c] >= need) & ~exempt & armed[rows, 0]).any())

    def _edges(self, x: np.ndarray, run: np.ndarray, active: np.ndarray, start: int
               ) -> list[InputIssue]:
        prev = np.vstack((self._active[None, :], active[:-1]))
        issues = []
        for i, c in zip(*np.nonzero(active != prev), strict=True):
            k, label = start + int(i), self.channels[c]
            if active[i, c]:
                held = int(run[i, c]) + 1
                issues.append(InputIssue(IssueKind.HELD, label, k, (
                    f"channel {label}: the same value ({x[i, c]:g} {self.units}) "
                    f"{held} times in a row at sample {k}, far longer than this channel "
                    "ever holds a value: the amplifier is pinned at its rail or the signal "
                    "froze; detector suspended. Check the electrode contact, the cable and "
                    "the amplifier")))
            else:
                issues.append(InputIssue(IssueKind.RECOVERED, label, k,
                                         f"channel {label}: moving again at sample {k}"))
        issues.sort(key=lambda issue: issue.sample)
        return issues


__all__ = ["HeldValueCheck"]
