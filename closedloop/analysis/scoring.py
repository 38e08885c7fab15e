"""Scoring detections against reference onsets: sensitivity, false detections, latency.

Pure functions, used by tests, ``closedloop evaluate`` and the benchmarks. A detected
onset matches a reference onset on the same channel when it falls within
``[ref - early_s, ref + late_s]``; each reference matches at most one detection (the
first) and vice versa. Latency is detection minus reference, in seconds.

A :class:`Score` also keeps where each reference and each false detection lay (sample
indices), so a recording's figures can be resampled trial by trial
(:func:`closedloop.analysis.results.trial_units`); pooled scores drop them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from closedloop.core.events import ONSET, Event


@dataclass(frozen=True)
class Score:
    """How detected onsets compare with reference onsets."""

    n_reference: int
    n_detected: int
    hits: int
    false_detections: int
    latencies_s: tuple[float, ...]
    duration_s: float
    fs: float = float("nan")
    reference_samples: tuple[int, ...] = ()
    reference_hit: tuple[bool, ...] = ()
    false_samples: tuple[int, ...] = ()

    @property
    def sensitivity(self) -> float:
        """Hits / references (NaN without references)."""
        return self.hits / self.n_reference if self.n_reference else float("nan")

    @property
    def precision(self) -> float:
        """Hits / scored detections (hits and false ones); NaN without detections."""
        n = self.hits + self.false_detections
        return self.hits / n if n else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of sensitivity and precision, ``2 hits / (refs + detections)``
        (NaN when there is neither a reference nor a detection)."""
        n = self.n_reference + self.hits + self.false_detections
        return 2 * self.hits / n if n else float("nan")

    @property
    def false_per_min(self) -> float:
        """False detections per minute (NaN without a duration)."""
        return self.false_detections / (self.duration_s / 60.0) if self.duration_s else float("nan")

    def latency_percentile(self, q: float) -> float:
        """The ``q``-th percentile of the hits' latencies, s (NaN without a hit)."""
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    @property
    def median_latency_s(self) -> float:
        """Median latency of the hits, s (NaN without a hit)."""
        return self.latency_percentile(50)


def score_onsets(
    reference: Iterable[tuple[int, str]],
    detected: Iterable[Event],
    fs: float,
    duration_s: float,
    *,
    early_s: float = 0.1,
    late_s: float = 0.5,
) -> Score:
    """Match detected onsets to reference ``(sample, channel)`` onsets (module docstring)."""
    refs = sorted(reference)
    dets = sorted((e.sample, e.channel) for e in detected if e.kind == ONSET)
    used = [False] * len(dets)
    lat: list[float] = []
    hit: list[bool] = []
    early, late = int(round(early_s * fs)), int(round(late_s * fs))
    for r, ch in refs:
        hit.append(False)
        for i, (d, dch) in enumerate(dets):
            if used[i] or dch != ch:
                continue
            if r - early <= d <= r + late:
                used[i] = True
                lat.append((d - r) / fs)
                hit[-1] = True
                break
            if d > r + late:
                break
    return Score(
        n_reference=len(refs),
        n_detected=len(dets),
        hits=len(lat),
        false_detections=used.count(False),
        latencies_s=tuple(lat),
        duration_s=float(duration_s),
        fs=float(fs),
        reference_samples=tuple(int(r) for r, _ in refs),
        reference_hit=tuple(hit),
        false_samples=tuple(int(d) for (d, _), u in zip(dets, used, strict=True) if not u),
    )


def merge_scores(scores: Sequence[Score]) -> Score:
    """Pool several scores (per-recording -> overall); where the references and false
    detections lay is not kept (their sample indices belong to different recordings)."""
    return Score(
        n_reference=sum(s.n_reference for s in scores),
        n_detected=sum(s.n_detected for s in scores),
        hits=sum(s.hits for s in scores),
        false_detections=sum(s.false_detections for s in scores),
        latencies_s=tuple(x for s in scores for x in s.latencies_s),
        duration_s=sum(s.duration_s for s in scores),
    )


# -- spliced trials ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialScore:
    """How one detector did on one trial of known bursts (:func:`score_trial`).

    Attributes
    ----------
    n_bursts, hits : int
        Bursts in the trial; bursts whose first onset lies in the hit window.
    latencies_s : tuple of float
        First detected onset minus burst onset, for every hit.
    retriggers : int
        Further onsets inside a burst's span (after its first).
    late : int
        Bursts whose first onset came after the hit window but inside the burst (a miss).
    false_detections : int
        Onsets outside every burst's span.
    rest_s : float
        Time outside the bursts' spans (where every onset is false).
    """

    n_bursts: int
    hits: int
    latencies_s: tuple[float, ...]
    retriggers: int
    late: int
    false_detections: int
    rest_s: float

    @property
    def misses(self) -> int:
        """Bursts without a hit."""
        return self.n_bursts - self.hits

    def meets_criterion(
        self, *, max_false: float = 0.2, max_misses: float = 0.2, max_latency_s: float = 0.05
    ) -> bool:
        """The per-trial criterion of Yuvaraj et al.: false detections and misses each at
        most 20 % of the bursts, median latency at most 50 ms."""
        if not self.n_bursts or not self.latencies_s:
            return False
        return (
            self.false_detections <= max_false * self.n_bursts
            and self.misses <= max_misses * self.n_bursts
            and float(np.median(self.latencies_s)) <= max_latency_s
        )


def score_trial(
    onsets: Sequence[int],
    ends: Sequence[int],
    detected: Iterable[int],
    fs: float,
    duration_s: float,
    *,
    early_s: float = 0.05,
    late_s: float = 0.15,
) -> TrialScore:
    """Score detected onset samples against bursts ``[onset, end)`` of one trial.

    A burst is hit when its first detected onset in ``[onset - early_s, end + late_s]``
    (its span) lies within ``[onset - early_s, onset + late_s]``; later onsets in the span
    are re-triggers; onsets outside every span are false detections. Spans must not
    overlap.
    """
    early, late = int(round(early_s * fs)), int(round(late_s * fs))
    dets = sorted(int(d) for d in detected)
    spans = [(o - early, e + late) for o, e in zip(onsets, ends, strict=True)]
    hits = retrig = n_late = 0
    lat: list[float] = []
    inside = 0
    for (a, b), onset in zip(spans, onsets, strict=True):
        mine = [d for d in dets if a <= d <= b]
        inside += len(mine)
        if not mine:
            continue
        retrig += len(mine) - 1
        if mine[0] <= onset + late:
            hits += 1
            lat.append((mine[0] - onset) / fs)
        else:
            n_late += 1
    covered = sum(min(b, int(round(duration_s * fs))) - max(a, 0) for a, b in spans)
    return TrialScore(
        n_bursts=len(spans), hits=hits, latencies_s=tuple(lat), retriggers=retrig,
        late=n_late, false_detections=len(dets) - inside,
        rest_s=max(0.0, duration_s - covered / fs),
    )
