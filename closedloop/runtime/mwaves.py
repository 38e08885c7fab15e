"""The evoked response (M-wave) over a session: its first trains, its latest, its fatigue.

The loop measures one :class:`~closedloop.core.evoked.MWave` record per muscle, level
(current and pulse width) and half second of stimulation. What a clinician asks of them
is per muscle: how large is the response now, how large was it at the start of the
session, and did the muscle respond at all. :class:`MWaveTracker` answers from the
records as they come (live view, the session's :class:`~closedloop.runtime.outcome.
Outcome`) or from a whole recording (report), the same way in both:

* **The first trains** of a level (a current to :data:`CURRENT_STEP_MA`, a pulse width
  to :data:`WIDTH_STEP_US`) are its first :data:`FIRST_RECORDS` records that show
  a response (``present``); their peak-to-peak, averaged with the pulses as weights, is
  the level's reference. The M-wave grows with the current (recruitment), so a record
  is compared with the first trains *of its own level*: a ramp step with the same ramp
  step of the first repetitions, the plateau with the plateau. ``percent`` of a record
  is its amplitude in % of that reference (NaN until the level has one).
* **The working level** of a muscle is the level it got the most pulses at (the
  plateau of a triggered assist). The session's summary (:class:`MuscleMWave`) gives
  its first trains' amplitude, its last trains' (the pulse-weighted mean of its last
  :data:`LAST_RECORDS` records) and the drop between them, in %: the fatigue over the
  session.
* **No response** (electrodes off or dry, a dead channel): a record without a response
  counts when a response is expected at its level: at a level whose first trains gave a
  clear response (at least :data:`CLEAR_FRACTION` of the muscle's largest first-trains
  amplitude), or at a level without first trains whose current is at or above the
  lowest current of such a level; and, before the muscle ever responded, at every
  level (a detached electrode from the start). Ramp steps below the motor threshold,
  and levels near it where the response comes and goes, are not counted against the
  electrodes. A record whose noise is not known yet (a single pulse before any group of
  several pulses on that channel: the first ramp steps of a session) says neither: its
  ``present`` is False for want of a noise figure, not for want of a response.

Pure Python on the records' numbers, constant memory per level: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from closedloop.core.evoked import MWave

#: Records of a level (with a response) that make its first trains.
FIRST_RECORDS = 3
#: Records of the working level that make its last trains.
LAST_RECORDS = 3
#: A level's response is clear at this fraction of the muscle's largest first trains (the
#: recruitment a clinician calls the motor threshold: the first visible twitch).
CLEAR_FRACTION = 0.05


#: A level is a current to this step (mA) and a pulse width to this step (µs): records
#: within one step are of the same level (a proportional protocol's current changes
#: continuously; a muscle has at most a few hundred levels).
CURRENT_STEP_MA = 0.5
WIDTH_STEP_US = 10.0


def level_key(current_ma: float, pulse_width_us: float) -> tuple[float, float]:
    """A level as a dict key: the current to :data:`CURRENT_STEP_MA`, the width to
    :data:`WIDTH_STEP_US` (-1 when not known)."""
    return (round(current_ma / CURRENT_STEP_MA) * CURRENT_STEP_MA
            if math.isfinite(current_ma) else -1.0,
            round(pulse_width_us / WIDTH_STEP_US) * WIDTH_STEP_US
            if math.isfinite(pulse_width_us) else -1.0)


@dataclass(frozen=True)
class MWavePoint:
    """One record as shown: the record's figures, its % of its level's first trains and
    whether its lack of response counts (see the module docstring).

    Attributes
    ----------
    muscle : str
    sample : int
    time : float
        Stream time (NaN when the record has none).
    current_ma, pulse_width_us : float
    peak_to_peak : float
        Signal units (volts for EMG in V).
    present : bool
    percent : float
        % of the level's first trains (NaN before the level has them).
    no_response : bool
        No response where one is expected (as far as the records so far tell).
    known : bool
        The record's noise was known (a record without it is neither a response nor
        a missing one).
    """

    muscle: str
    sample: int
    time: float
    current_ma: float
    pulse_width_us: float
    peak_to_peak: float
    present: bool
    percent: float
    no_response: bool
    known: bool = True


@dataclass(frozen=True)
class MuscleMWave:
    """One muscle's evoked response over a session (amplitudes in signal units).

    Attributes
    ----------
    muscle : str
    records, pulses : int
        M-wave records and the pulses they averaged.
    no_response : int
        Records without a response where one is expected (module docstring).
    current_ma, pulse_width_us : float
        The working level (most pulses).
    first_pp : float
        Peak-to-peak of the working level's first trains (NaN: it never responded).
    last_pp : float
        Peak-to-peak of its last trains.
    clear_from_ma : float
        Lowest current that gave a clear response (NaN: none did).
    """

    muscle: str
    records: int
    pulses: int
    no_response: int
    current_ma: float
    pulse_width_us: float
    first_pp: float
    last_pp: float
    clear_from_ma: float

    @property
    def drop_pct(self) -> float:
        """Fall from the first to the last trains, % of the first (NaN when unknown;
        negative when the response grew)."""
        if not (self.first_pp > 0 and math.isfinite(self.last_pp)):
            return math.nan
        return 100.0 * (1.0 - self.last_pp / self.first_pp)


@dataclass
class _Level:
    current_ma: float
    pulse_width_us: float
    pulses: int = 0
    records: int = 0
    absent: int = 0
    first: list[tuple[float, int]] = field(default_factory=list)  # (pp, pulses), present
    ref: float = math.nan  # the first trains' amplitude
    last: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=LAST_RECORDS))

    def reference(self) -> float:
        return _weighted(self.first)


def _weighted(items: Iterable[tuple[float, int]]) -> float:
    items = list(items)
    n = sum(k for _, k in items)
    return sum(v * k for v, k in items) / n if n else math.nan


class MWaveTracker:
    """Per muscle and level, the first and last trains of the M-wave (module docstring).

    Feed it the records in the order they were decided (:meth:`add`); :meth:`summary`
    at any time gives each muscle's :class:`MuscleMWave`.
    """

    def __init__(self) -> None:
        self._levels: dict[str, dict[tuple[float, float], _Level]] = {}
        # per muscle, recomputed when a level's first trains change (at most
        # FIRST_RECORDS times per level): its largest first trains, the lowest current
        # of a level with a clear response
        self._top: dict[str, float] = {}
        self._clear_from: dict[str, float] = {}

    @property
    def muscles(self) -> list[str]:
        """The muscles with records, in the order they first came."""
        return list(self._levels)

    def add(self, records: Sequence[MWave]) -> list[MWavePoint]:
        """Take ``records`` in; each as a :class:`MWavePoint`."""
        out = []
        for r in records:
            levels = self._levels.setdefault(r.muscle, {})
            key = level_key(r.current_ma, r.pulse_width_us)
            lv = levels.get(key)
            if lv is None:
                lv = levels[key] = _Level(r.current_ma, r.pulse_width_us)
            n = max(int(r.n_pulses), 1)
            pp = float(r.peak_to_peak)
            known = bool(r.present) or math.isfinite(r.noise)
            lv.pulses += n
            lv.records += 1
            lv.last.append((pp, n))
            if r.present and len(lv.first) < FIRST_RECORDS:
                lv.first.append((pp, n))
                lv.ref = lv.reference()
                self._refresh(r.muscle)
            elif known and not r.present:
                lv.absent += 1
            point = MWavePoint(
                muscle=r.muscle, sample=int(r.sample), time=float(r.time),
                current_ma=float(r.current_ma), pulse_width_us=float(r.pulse_width_us),
                peak_to_peak=pp, present=bool(r.present),
                percent=100.0 * pp / lv.ref if lv.ref > 0 else math.nan, no_response=False,
                known=known)
            out.append(replace(point, no_response=self.counts(point)))
        return out

    def _refresh(self, muscle: str) -> None:
        levels = self._levels[muscle].values()
        top = max((lv.ref for lv in levels if lv.ref > 0), default=math.nan)
        self._top[muscle] = top
        self._clear_from[muscle] = min(
            (lv.current_ma for lv in levels
             if lv.ref >= CLEAR_FRACTION * top and math.isfinite(lv.current_ma)),
            default=math.nan)

    def clear_from(self, muscle: str) -> float:
        """The lowest current of a level of ``muscle`` with a clear response (NaN:
        none yet)."""
        return self._clear_from.get(muscle, math.nan)

    def expected(self, muscle: str, current_ma: float, pulse_width_us: float) -> bool:
        """Whether a response is expected at this level (module docstring)."""
        top = self._top.get(muscle, math.nan)
        if math.isnan(top):
            return True  # it never responded
        lv = self._levels[muscle].get(level_key(current_ma, pulse_width_us))
        if lv is not None and lv.ref > 0:
            return lv.ref >= CLEAR_FRACTION * top
        return not math.isfinite(current_ma) or current_ma >= self.clear_from(muscle) - 1e-9

    def counts(self, point: MWavePoint) -> bool:
        """Whether ``point`` is a missing response by what the records so far tell."""
        return (not point.present and point.known
                and self.expected(point.muscle, point.current_ma, point.pulse_width_us))

    def summary(self) -> dict[str, MuscleMWave]:
        """Each muscle's summary so far (module docstring)."""
        out = {}
        for muscle, levels in self._levels.items():
            work = max(levels.values(), key=lambda lv: (lv.pulses, lv.current_ma))
            out[muscle] = MuscleMWave(
                muscle=muscle, records=sum(lv.records for lv in levels.values()),
                pulses=sum(lv.pulses for lv in levels.values()),
                no_response=sum(lv.absent for lv in levels.values()
                                if self.expected(muscle, lv.current_ma, lv.pulse_width_us)),
                current_ma=work.current_ma, pulse_width_us=work.pulse_width_us,
                first_pp=work.ref, last_pp=_weighted(work.last),
                clear_from_ma=self.clear_from(muscle))
        return out


def track(records: Sequence[MWave]) -> tuple[list[MWavePoint], dict[str, MuscleMWave]]:
    """Every record of a session as a point, and the session's summary; a point's
    ``no_response`` as the whole session tells (the summary's count is theirs)."""
    tracker = MWaveTracker()
    points = tracker.add(sorted(records, key=lambda r: r.sample))
    return [replace(p, no_response=tracker.counts(p)) for p in points], tracker.summary()


__all__ = ["CLEAR_FRACTION", "CURRENT_STEP_MA", "FIRST_RECORDS", "LAST_RECORDS", "MWavePoint",
           "MWaveTracker", "MuscleMWave", "WIDTH_STEP_US", "level_key", "track"]
