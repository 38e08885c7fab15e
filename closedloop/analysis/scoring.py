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
        return self.false_detections / (self.duration_s / 60.0) if self.duration_s else float("nan")

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    @property
    def median_latency_s(self) -> float:
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
