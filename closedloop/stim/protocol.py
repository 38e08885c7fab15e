"""Stimulation protocols on the sample clock: detector events in, wanted commands out.

A protocol turns the signal core's :class:`~closedloop.core.events.Block` stream into
the stimulation it *wants*; the safety guard decides what is sent. Everything is timed
in samples (absolute indices), so the same samples in chunks of any size give the same
commands at the same samples, and a replay gives what the live run gave.

Protocols
---------
``triggered_assist``
    An agonist onset starts one stimulation of the agonist: a ramp-up staircase (one
    step every ``ramp_step_s``, steps no larger than the channel's ``max_step_ma``),
    a plateau of ``on_time_s``, a ramp-down staircase, off. Onsets are ignored while it
    runs and for ``rest_time_s`` after it ended.
``reciprocal``
    The same, followed ``reciprocal.gap_s`` after the agonist's off by one stimulation
    of the antagonist (never both at once unless ``co_stimulation``).
``cued_trials``
    Cues on a work/rest cycle; an agonist onset in the response window after a cue is a
    hit and starts the ``trials.pattern`` stimulation; no onset in time is a miss.

Options: ``co_contraction_gate`` (an onset triggers only if the antagonist's ``above``
mask was False over ``gate_window_s`` ending at the onset sample, with history kept
across blocks) and ``end_on_offset`` (an agonist offset during ramp-up or plateau ramps
the agonist down at once; a following antagonist phase is re-timed from the new end).

Timing of one stimulation of a muscle triggered at sample ``t0`` (``d`` = ramp step in
samples, ``n_up`` = ramp-up steps, ``n_down`` = ramp-down steps)::

    t0 + (k-1) d        level k/n_up x current   k = 1..n_up (the last is "plateau")
    t_rd = t0 + (n_up-1) d + on_time             first ramp-down step
    t_rd + (j-1) d      level (n_down-j)/n_down  j = 1..n_down (the last is "off")

so the first current flows at the onset sample itself.

Ordering within a sample: timers (cue, end of response window) first, so an onset at
the cue sample is a hit and one at the window's end is not; then detector events, so an
offset at a ramp step's sample ramps down from the level already reached instead of
also taking that step; then scheduled level changes (off before on).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from closedloop.config.stimulation import MuscleStim, ProtocolSettings
from closedloop.core.events import OFFSET, ONSET, SUSPEND, Block, Event
from closedloop.errors import ConfigError, InputError
from closedloop.stim.commands import StimCommand
from closedloop.stim.mwave_rules import Notice

_NEVER = 2**62
#: Trial events a protocol keeps for :attr:`trial_events` (an hour-long session must
#: not grow without bound; the loop publishes every event as it comes).
EVENT_HISTORY = 1000

#: TrialEvent kinds.
CUE, HIT, MISS, TRIGGER, GATED, IGNORED, EARLY_STOP, DONE, ABORTED = (
    "cue", "hit", "miss", "trigger", "gated", "ignored", "early_stop", "done", "aborted"
)


@dataclass(frozen=True)
class TrialEvent:
    """Something the protocol decided, for the log and the display.

    Parameters
    ----------
    kind : str
        ``cue`` (a work period starts), ``hit`` (onset in the response window
        triggered stimulation), ``miss`` (window ended without one), ``trigger`` (an
        onset triggered stimulation, assist and reciprocal), ``gated`` (an onset
        rejected by the co-contraction gate), ``ignored`` (an onset during stimulation,
        rest, outside a response window, or before the stream's rate was checked:
        ``first_sample``), ``early_stop`` (agonist offset ramped the
        stimulation down early), ``done`` (all cued trials are over), ``aborted`` (the
        agonist's input went bad: everything switched off at once, nothing more planned).
    sample : int
        Sample at which it was decided.
    time : float
        Stream time of that sample, s.
    trial : int
        0-based trial number for cued trials; -1 otherwise.
    muscle : str
        The muscle concerned (the agonist), or ``""``.
    """

    kind: str
    sample: int
    time: float
    trial: int = -1
    muscle: str = ""


@dataclass(frozen=True)
class TrialCounts:
    """Counts so far. For assist and reciprocal every trigger is a trial and a hit."""

    trials: int = 0
    hits: int = 0
    misses: int = 0
    gated: int = 0
    ignored: int = 0


class Protocol:
    """Base class: staircase trains, the gate, early stop and event bookkeeping.

    Parameters
    ----------
    settings : ProtocolSettings
    muscles : mapping of str to MuscleStim
        Must contain every muscle the protocol stimulates.
    fs : float
        EMG sampling rate, Hz.

    Notes
    -----
    Call :meth:`step` once per block, in order. Blocks may have gaps (dropped samples)
    but must not overlap or go back.
    """

    #: The name a config's ``[protocol] kind`` gives (the registry's key).
    kind: ClassVar[str] = ""
    #: The settings class of its ``[protocol]`` table (ProtocolSettings or a subclass).
    settings_type: ClassVar[type[ProtocolSettings]] = ProtocolSettings
    #: Whether :meth:`step` reads the block's voluntary effort (``Block.effort``); the
    #: chain then measures it with the comb on every channel.
    uses_effort: ClassVar[bool] = False

    def __init__(
        self, settings: ProtocolSettings, muscles: Mapping[str, MuscleStim], fs: float
    ) -> None:
        if not (math.isfinite(fs) and fs > 0):
            raise ConfigError(f"protocol: fs = {fs!r} Hz must be a positive number")
        missing = [m for m in settings.stimulated if m not in muscles]
        if missing:
            raise ConfigError(
                f"protocol {settings.kind!r} stimulates {', '.join(missing)} but no "
                f"[muscles.stim] was given for it"
            )
        self.settings = settings
        self.fs = float(fs)
        #: Onsets before this sample start nothing (logged ``ignored``): a session's
        #: chain sets it to the sample at which its input checks have checked the EMG
        #: stream's true rate (``[safety] wait_for_rate``; the guard refuses any
        #: on-command before it too), so no trial starts on a clock that may be wrong.
        self.first_sample = 0
        self.agonist = settings.agonist
        self.antagonist = settings.antagonist
        self._m = {name: muscles[name] for name in settings.stimulated}
        self._d = max(1, int(round(settings.ramp_step_s * fs)))
        self._gate_w = max(1, int(round(settings.gate_window_s * fs)))
        self._plan: list[tuple[int, int, int, str, float, str]] = []
        self._seq = 0
        self._level = {m: 0.0 for m in self._m}
        self._stage = {m: "off" for m in self._m}
        self._train: tuple[str, ...] = ()
        self._train_started: set[str] = set()
        self._refractory_until = -_NEVER
        self._last_above = -_NEVER
        self._next_start: int | None = None
        self._first: int | None = None
        self._block: Block | None = None
        self._trues: np.ndarray | None = None
        self._events: deque[TrialEvent] = deque(maxlen=EVENT_HISTORY)
        self._pending: list[TrialEvent] = []
        self._counts = {"trials": 0, "hits": 0, "misses": 0, "gated": 0, "ignored": 0}
        for name in settings.stimulated:
            self._check_train(name)

    # -- public -------------------------------------------------------------------------
    @property
    def stimulated(self) -> tuple[str, ...]:
        """Muscles this protocol may stimulate."""
        return tuple(self._m)

    @property
    def active(self) -> bool:
        """True while a stimulation train is planned or running."""
        return bool(self._plan)

    @property
    def finished(self) -> bool:
        """True when the protocol has nothing more to do (cued trials all done)."""
        return False

    @property
    def counts(self) -> TrialCounts:
        """The trial counts so far."""
        return TrialCounts(**self._counts)

    @property
    def trial_events(self) -> tuple[TrialEvent, ...]:
        """The trial events so far (the last :data:`EVENT_HISTORY`), in order."""
        return tuple(self._events)

    def pop_trial_events(self) -> list[TrialEvent]:
        """Trial events since the last call."""
        out, self._pending = self._pending, []
        return out

    def notify(self, notices: Iterable[Notice]) -> None:
        """M-wave notices (:mod:`closedloop.stim.mwave_rules`) decided in the next block.
        The triggered protocols take them as warnings only; a protocol that can lower
        its current or end a repetition overrides this."""

    def train_samples(self, muscle: str) -> int:
        """Samples from a muscle's first step to its off (its on-time per train)."""
        _, end = self._envelope(muscle, 0)
        return end

    def step(self, block: Block) -> list[StimCommand]:
        """Process one block; return the commands wanted, with samples in the block.

        Raises
        ------
        InputError
            If blocks overlap or go back, an event lies outside its block, or a channel
            the protocol needs is missing from the block.
        """
        if self._next_start is not None and block.start < self._next_start:
            raise InputError(
                f"protocol: block starting at sample {block.start} overlaps the previous "
                f"one (which ended before {self._next_start}); feed blocks in order"
            )
        self._next_start = block.stop
        if block.n == 0:
            return []
        if self._first is None:
            self._first = block.start
            self._begin(block.start)
        events = sorted(
            (e for e in block.events
             if e.channel == self.agonist and e.kind in (ONSET, OFFSET, SUSPEND)),
            key=lambda e: e.sample,
        )
        for e in events:
            if not block.start <= e.sample < block.stop:
                raise InputError(
                    f"protocol: {e.kind} of {e.channel!r} at sample {e.sample} lies outside "
                    f"its block [{block.start}, {block.stop})"
                )
        self._block = block
        self._trues = None
        if self.settings.co_contraction_gate:
            col = self._column(block, self.antagonist)
            self._trues = np.flatnonzero(np.asarray(block.above)[:, col])
        out: list[StimCommand] = []
        i = 0
        try:
            while True:
                t_item = self._plan[0][0] if self._plan else _NEVER
                t_timer = self._next_timer()
                t_ev = events[i].sample if i < len(events) else _NEVER
                t = min(t_item, t_timer, t_ev)
                if t >= block.stop:
                    break
                if t_timer == t:
                    self._fire_timer(t)
                elif t_ev == t:
                    self._event(events[i])
                    i += 1
                else:
                    self._run_item(out)
        finally:
            if self._trues is not None and self._trues.size:
                self._last_above = block.start + int(self._trues[-1])
            self._block = None
        return out

    # -- hooks for subclasses -----------------------------------------------------------
    def _begin(self, start: int) -> None:
        """Called with the first block's start sample."""

    def _next_timer(self) -> int:
        return _NEVER

    def _fire_timer(self, t: int) -> None:
        raise AssertionError("no timers in this protocol")

    def _on_onset(self, e: Event) -> None:
        if self._plan:
            self._log(IGNORED, e.sample)
        elif e.sample < self._refractory_until:
            self._log(IGNORED, e.sample)
        elif not self._gate_ok(e.sample):
            self._log(GATED, e.sample)
        else:
            self._log(TRIGGER, e.sample)
            self._counts["trials"] += 1
            self._counts["hits"] += 1
            self._start_train(e.sample, self.stimulated)

    def _train_done(self, t: int) -> None:
        rest = max(self._m[m].stim.rest_time_s for m in self._train)
        self._refractory_until = t + int(round(rest * self.fs))

    # -- machinery ----------------------------------------------------------------------
    def _column(self, block: Block, name: str | None) -> int:
        try:
            return block.channels.index(name)
        except ValueError:
            raise InputError(
                f"protocol: the co-contraction gate needs channel {name!r} but the block has "
                f"{', '.join(block.channels) or 'no channel names'}"
            ) from None

    def _at(self, sample: int) -> int:
        """``sample``, or the block's first sample if it fell into a gap (dropped samples)."""
        assert self._block is not None
        return max(sample, self._block.start)

    def _time(self, sample: int) -> float:
        b = self._block
        assert b is not None
        return float(b.timestamps[sample - b.start])

    def _log(self, kind: str, sample: int, trial: int = -1) -> None:
        sample = self._at(sample)
        event = TrialEvent(kind, sample, self._time(sample), trial, self.agonist)
        self._events.append(event)
        self._pending.append(event)
        if kind == GATED:
            self._counts["gated"] += 1
        elif kind == IGNORED:
            self._counts["ignored"] += 1

    def _gate_ok(self, s: int) -> bool:
        """No antagonist ``above`` sample in [s - window + 1, s]."""
        if not self.settings.co_contraction_gate:
            return True
        b = self._block
        assert b is not None and self._trues is not None
        k = int(np.searchsorted(self._trues, s - b.start, side="right")) - 1
        last = b.start + int(self._trues[k]) if k >= 0 else self._last_above
        return last < s - self._gate_w + 1

    def _push(self, sample: int, muscle: str, level: float, phase: str) -> None:
        heapq.heappush(self._plan, (sample, 1 if level > 0 else 0, self._seq, muscle,
                                    level, phase))
        self._seq += 1

    def _envelope(self, muscle: str, t0: int) -> tuple[list[tuple[int, float, str]], int]:
        """Ramp-up, plateau and ramp-down of ``muscle`` from ``t0``; and its off sample."""
        m = self._m[muscle]
        p, d, st = m.stim, self._d, self.settings.ramp_step_s
        cur = p.current_ma
        n_up = max(1, int(round(p.ramp_up_s / st)),
                   math.ceil(cur / m.limits.max_step_ma - 1e-9))
        items = [(t0 + (k - 1) * d, cur * k / n_up, "ramp_up" if k < n_up else "plateau")
                 for k in range(1, n_up + 1)]
        t_rd = t0 + (n_up - 1) * d + int(round(p.on_time_s * self.fs))
        n_down = max(1, int(round(p.ramp_down_s / st)))
        items += [(t_rd + (j - 1) * d, cur * (n_down - j) / n_down,
                   "ramp_down" if j < n_down else "off") for j in range(1, n_down + 1)]
        return items, t_rd + (n_down - 1) * d

    def _ramp_down(self, muscle: str, t0: int) -> tuple[list[tuple[int, float, str]], int]:
        """Ramp ``muscle`` down from its current level, same step size as a full ramp."""
        p = self._m[muscle].stim
        n_full = max(1, int(round(p.ramp_down_s / self.settings.ramp_step_s)))
        level = self._level[muscle]
        n = max(1, math.ceil(level / (p.current_ma / n_full) - 1e-9))
        items = [(t0 + (j - 1) * self._d, level * (n - j) / n, "ramp_down" if j < n else "off")
                 for j in range(1, n + 1)]
        return items, t0 + (n - 1) * self._d

    def _start_train(self, t0: int, seq: tuple[str, ...]) -> None:
        self._train = seq
        self._train_started = set()
        start = t0
        for i, muscle in enumerate(seq):
            items, end = self._envelope(muscle, start)
            for s, level, phase in items:
                self._push(s, muscle, level, phase)
            if i + 1 < len(seq):
                start = max(t0, end + int(round(self.settings.reciprocal.gap_s * self.fs)))

    def _early_stop(self, s: int) -> None:
        ag = self.agonist
        keep = [it for it in self._plan if it[3] != ag]
        self._plan = []
        items, end = self._ramp_down(ag, s)
        for t, level, phase in items:
            self._push(t, ag, level, phase)
        later = self._train[self._train.index(ag) + 1:]
        for it in keep:
            if it[3] in later and it[3] not in self._train_started:
                continue  # re-planned below
            heapq.heappush(self._plan, it)
        start = end
        for muscle in later:
            if muscle in self._train_started:
                continue
            start = max(s, start + int(round(self.settings.reciprocal.gap_s * self.fs)))
            m_items, start = self._envelope(muscle, start)
            for t, level, phase in m_items:
                self._push(t, muscle, level, phase)
        self._log(EARLY_STOP, s)

    def _abort(self, s: int) -> None:
        """The agonist's signal went bad: whatever it triggered may be an artifact of the
        fault, so every channel that is on goes off at ``s`` and nothing more is planned
        (no ramp: the trigger itself is in doubt)."""
        if not self._plan and not any(level > 0 for level in self._level.values()):
            return
        self._plan = []
        on = [m for m, level in self._level.items() if level > 0]
        for muscle in on:
            self._push(s, muscle, 0.0, "off")
        if not on and self._train:
            self._train_done(s)
        self._log(ABORTED, s)

    def _run_item(self, out: list[StimCommand]) -> None:
        s, _, _, muscle, level, phase = heapq.heappop(self._plan)
        s = self._at(s)
        p = self._m[muscle].stim
        out.append(StimCommand(
            muscle=muscle, channel=p.channel, current_ma=level,
            pulse_width_us=p.pulse_width_us, frequency_hz=p.frequency_hz,
            sample=s, stream_time=self._time(s), phase=phase,
        ))
        self._level[muscle] = level
        self._stage[muscle] = phase
        self._train_started.add(muscle)
        if not self._plan:
            self._train_done(s)

    def _event(self, e: Event) -> None:
        if e.kind == SUSPEND:
            self._abort(e.sample)
        elif e.kind == ONSET:
            if e.sample < self.first_sample:  # the stream's rate is not checked yet
                self._log(IGNORED, e.sample)
            else:
                self._on_onset(e)
        elif (
            self.settings.end_on_offset
            and self._plan
            and self._stage.get(self.agonist) in ("ramp_up", "plateau")
        ):
            self._early_stop(e.sample)

    def _check_train(self, muscle: str) -> None:
        m = self._m[muscle]
        n = self.train_samples(muscle)
        limit = int(math.floor(m.limits.max_on_time_s * self.fs + 1e-9))
        if n > limit:
            raise ConfigError(
                f"muscle {muscle!r}: one stimulation lasts {n / self.fs:g} s at fs = "
                f"{self.fs:g} Hz (ramps rounded to ramp_step_s = "
                f"{self.settings.ramp_step_s:g} s and to steps of at most max_step_ma = "
                f"{m.limits.max_step_ma:g} mA), longer than max_on_time_s = "
                f"{m.limits.max_on_time_s:g} s; shorten on_time_s or the ramps"
            )


class TriggeredAssist(Protocol):
    """An agonist onset triggers one ramp-plateau-ramp of the agonist."""

    kind = "triggered_assist"


class Reciprocal(Protocol):
    """An agonist onset triggers the agonist, then (after ``gap_s``) the antagonist."""

    kind = "reciprocal"


class CuedTrials(Protocol):
    """Cues on a work/rest cycle; an onset in the response window is a hit.

    The cue schedule is anchored at the first block the protocol sees: cue ``k`` is at
    ``first + round((first_cue_s + k (work_s + rest_s)) fs)``. :attr:`finished` becomes
    True at the end of the last trial's rest (a ``done`` event) once no stimulation runs.
    """

    kind = "cued_trials"

    def __init__(self, settings: ProtocolSettings, muscles: Mapping[str, MuscleStim],
                 fs: float) -> None:
        super().__init__(settings, muscles, fs)
        self._tr = settings.trials
        self._k = 0  # next trial to cue
        self._cue_at = _NEVER
        self._window_end: int | None = None
        self._done_at = _NEVER
        self._done = False

    @property
    def finished(self) -> bool:
        """Whether every trial is done and nothing is planned."""
        return self._done and not self._plan

    def _cue_sample(self, k: int) -> int:
        assert self._first is not None
        tr = self._tr
        return self._first + int(round((tr.first_cue_s + k * (tr.work_s + tr.rest_s)) * self.fs))

    def _begin(self, start: int) -> None:
        self._cue_at = self._cue_sample(0)
        self._done_at = self._cue_sample(self._tr.n_trials)

    def _next_timer(self) -> int:
        t = self._window_end if self._window_end is not None else _NEVER
        if self._k < self._tr.n_trials:
            t = min(t, self._cue_at)
        elif not self._done:
            t = min(t, self._done_at)
        return t

    def _fire_timer(self, t: int) -> None:
        if self._window_end is not None and t == self._window_end:
            self._log(MISS, t, self._k - 1)
            self._counts["misses"] += 1
            self._window_end = None
        elif self._k < self._tr.n_trials and t == self._cue_at:
            self._log(CUE, t, self._k)
            self._counts["trials"] += 1
            self._window_end = t + max(1, int(round(self._tr.response_window_s * self.fs)))
            self._k += 1
            self._cue_at = self._cue_sample(self._k)
        else:
            self._log(DONE, t)
            self._done = True

    def _on_onset(self, e: Event) -> None:
        if self._window_end is None or self._plan:
            self._log(IGNORED, e.sample, self._k - 1)
        elif not self._gate_ok(e.sample):
            self._log(GATED, e.sample, self._k - 1)
        else:
            self._log(HIT, e.sample, self._k - 1)
            self._counts["hits"] += 1
            self._window_end = None
            self._start_train(e.sample, self.stimulated)

    def _train_done(self, t: int) -> None:
        """Trials are timed by the cue cycle, not by a refractory period."""


def make_protocol(
    settings: ProtocolSettings, muscles: Mapping[str, MuscleStim], fs: float
) -> Protocol:
    """Build the protocol ``settings.kind`` names (a registered protocol:
    :data:`closedloop.registry.PROTOCOLS`).

    Raises
    ------
    ConfigError
        If a muscle it stimulates has no stimulation settings, or one stimulation lasts
        longer than the channel's ``max_on_time_s`` once ramps are rounded to whole
        steps and samples at this ``fs``.
    """
    from closedloop.registry import PROTOCOLS

    return PROTOCOLS.load(settings.kind)(settings, muscles, fs)
