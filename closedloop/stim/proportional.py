"""Proportional stimulation: the current follows the patient's own voluntary effort.

``kind = "proportional"`` (:class:`~closedloop.config.stimulation.ProportionalSettings`).
Triggered protocols give a fixed ramp-plateau-ramp once an onset is detected; here the
onset only starts a *repetition*, during which the current follows the voluntary EMG
measured between the pulses (:class:`~closedloop.core.effort.EffortEstimator`, on the
block as ``effort`` in µV or ``effort_mvc`` in % MVC), so the patient stays in charge
of the movement (MeCFES: Dohring & Daly 2008, Thorsen et al. 2013; IVES/HANDS: Muraoka
2002, Fujiwara et al. 2009).

Every ``ramp_step_s`` from the onset sample (the *updates*), with ``e`` the effort at
that sample (unknown counts as none)::

    I_want = clip(I_min + gain (e - threshold), I_min, I_max x fatigue scale)
    I_s    = I_s + alpha (I_want - I_s)              smoothing, alpha = 1 - exp(-step/smooth_s)
    I      = floor_res(min(I_s, I_prev + rise))     rise = min(slew x step, max_step_ma)

so the current never rises faster than the slew nor by more than the channel's
``max_step_ma`` per update (the guard would clip it), falls at once when the effort
falls, and is a multiple of ``resolution_ma``. ``I_max`` is the muscle's
``[muscles.stim] current_ma``. A repetition starts from 0 and rises to ``I_min`` at the
slew. When the effort has been at or below the threshold for ``stop_hold_s`` (the
patient stopped trying) and the repetition has lasted ``min_on_s``, the current ramps
down to off in ``stop_ramp_s`` (steps of ``ramp_step_s``); a repetition that reaches
``max_on_s`` ramps down so as to be off by then. After the off, onsets are ignored for
the muscle's ``rest_time_s``. A suspended agonist (bad input) switches off at once.

Reciprocal use (``reciprocal_effort``): the antagonist's own onset, while the agonist is
neither stimulated nor in a repetition (unless ``co_stimulation``), starts a repetition
of the antagonist that follows the antagonist's effort by the same law (its own
``current_ma`` as ``I_max``); the agonist's onset waits in the same way for the
antagonist. The co-contraction gate applies to the agonist's onsets.

M-wave notices (:mod:`closedloop.stim.mwave_rules`, given with :meth:`Proportional.notify`
before the block they fall in): fatigue with ``lower`` scales the muscle's ``I_max``
down (never up again), with ``end`` ramps the running repetition down.

Everything is on the sample clock (updates on a grid from the onset sample, effort read
at the update's sample), so any chunking gives the same commands at the same samples.
Every command still goes through the safety guard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from closedloop.config.stimulation import MuscleStim, ProportionalSettings, ProtocolSettings
from closedloop.core.events import ONSET, SUSPEND, Block, Event
from closedloop.errors import ConfigError, InputError
from closedloop.stim.commands import StimCommand
from closedloop.stim.mwave_rules import Notice
from closedloop.stim.protocol import (
    _NEVER,
    ABORTED,
    EARLY_STOP,
    GATED,
    IGNORED,
    TRIGGER,
    Protocol,
)


@dataclass
class _Rep:
    """One muscle's repetition state."""

    rise: float  # largest rise per update, mA
    scale: float = 1.0  # fatigue: I_max is scaled down, never up
    start: int | None = None  # onset sample of the running repetition
    next: int = _NEVER  # next update
    down: list[tuple[int, float, str]] = field(default_factory=list)  # the ramp down
    smooth: float = 0.0
    below: int | None = None  # first sample of the current stretch at/below the threshold
    rest_until: int = -_NEVER


class Proportional(Protocol):
    """An agonist onset starts a repetition whose current follows the agonist's effort
    (see the module docstring); with ``reciprocal_effort`` the antagonist's own onset
    starts one of the antagonist, following its own effort."""

    kind = "proportional"
    settings_type: ClassVar[type[ProtocolSettings]] = ProportionalSettings
    uses_effort: ClassVar[bool] = True

    def __init__(self, settings: ProtocolSettings, muscles: Mapping[str, MuscleStim],
                 fs: float) -> None:
        if not isinstance(settings, ProportionalSettings):
            raise ConfigError(f"protocol 'proportional' needs ProportionalSettings, got "
                              f"{type(settings).__name__}")
        super().__init__(settings, muscles, fs)
        s = self.p = settings
        self._reps: dict[str, _Rep] = {}
        for name in self.stimulated:
            m = self._m[name]
            w = m.stim.where or f"muscle {name!r} [stim]"
            wl = m.limits.where or f"muscle {name!r} [limits]"
            if s.min_current_ma > m.stim.current_ma:
                raise ConfigError(
                    f"[protocol] min_current_ma = {s.min_current_ma:g} mA is above "
                    f"{w}.current_ma = {m.stim.current_ma:g} mA (the most the proportional "
                    "current may reach); lower min_current_ma")
            if s.max_on_s > m.limits.max_on_time_s + 1e-9:
                raise ConfigError(f"[protocol] max_on_s = {s.max_on_s:g} s is longer than "
                                  f"{wl}.max_on_time_s = {m.limits.max_on_time_s:g} s; use "
                                  f"max_on_s <= {m.limits.max_on_time_s:g}")
            rise = min(s.slew_ma_per_s * s.ramp_step_s, m.limits.max_step_ma)
            if rise < s.resolution_ma - 1e-9:
                raise ConfigError(
                    f"[protocol] slew_ma_per_s x ramp_step_s = "
                    f"{s.slew_ma_per_s * s.ramp_step_s:g} mA (at most {wl}.max_step_ma = "
                    f"{m.limits.max_step_ma:g} mA) per update is smaller than resolution_ma "
                    f"= {s.resolution_ma:g} mA: the current could never rise; raise the "
                    "slew or lower the resolution")
            self._reps[name] = _Rep(rise)
            self._level[name] = 0.0
        self._max_on = int(math.floor(s.max_on_s * self.fs + 1e-9))
        self._min_on = int(round(s.min_on_s * self.fs))
        self._hold = int(round(s.stop_hold_s * self.fs))
        self._n_down = max(1, int(round(s.stop_ramp_s / s.ramp_step_s)))
        self._alpha = 1.0 - math.exp(-s.ramp_step_s / s.smooth_s) if s.smooth_s > 0 else 1.0
        self._notices: list[Notice] = []

    # -- public -------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while a repetition runs."""
        return any(r.start is not None for r in self._reps.values())

    def notify(self, notices: Iterable[Notice]) -> None:
        """M-wave notices decided in the next block (acted on at their samples)."""
        self._notices += [n for n in notices if n.action and n.muscle in self._reps]

    def step(self, block: Block) -> list[StimCommand]:
        """Process one block; return the commands wanted (see the module docstring)."""
        if self._next_start is not None and block.start < self._next_start:
            raise InputError(
                f"protocol: block starting at sample {block.start} overlaps the previous "
                f"one (which ended before {self._next_start}); feed blocks in order")
        self._next_start = block.stop
        if block.n == 0:
            return []
        if block.effort is None:
            raise InputError("protocol 'proportional': the block carries no effort (run it "
                             "in the loop, whose chain measures the effort)")
        values = block.effort.get(self.p.effort_unit)
        fast = block.effort.get(self.p.effort_unit, fast=True)
        cols = {m: block.channels.index(m) for m in self._reps}
        events = sorted((e for e in block.events if e.channel in self._reps
                         and e.kind in (ONSET, SUSPEND)), key=lambda e: e.sample)
        notices = sorted((n for n in self._notices if n.sample < block.stop),
                         key=lambda n: n.sample)
        self._notices = [n for n in self._notices if n.sample >= block.stop]
        self._block = block
        self._trues = None
        if self.settings.co_contraction_gate:
            gcol = self._column(block, self.antagonist)
            self._trues = np.flatnonzero(np.asarray(block.above)[:, gcol])
        out: list[StimCommand] = []
        i = j = 0
        try:
            while True:
                t_n = notices[j].sample if j < len(notices) else _NEVER
                t_e = events[i].sample if i < len(events) else _NEVER
                m_u, t_u = min(((m, r.next) for m, r in self._reps.items()),
                               key=lambda x: x[1])
                t = min(t_n, t_e, t_u)
                if t >= block.stop:
                    break
                if t_n == t:
                    self._notice(notices[j], out)
                    j += 1
                elif t_e == t:
                    self._event_at(events[i], out)
                    i += 1
                else:
                    k, c = t - block.start, cols[m_u]
                    self._update(m_u, t, float(values[k, c]), float(fast[k, c]), out)
        finally:
            if self._trues is not None and self._trues.size:
                self._last_above = block.start + int(self._trues[-1])
            self._block = None
        return out

    def _check_train(self, muscle: str) -> None:
        """A repetition lasts at most ``max_on_s`` (checked against ``max_on_time_s`` in
        ``__init__``), not a triggered ramp-plateau-ramp."""

    # -- the repetition -----------------------------------------------------------------
    def _event_at(self, e: Event, out: list[StimCommand]) -> None:
        m, r = e.channel, self._reps[e.channel]
        if e.kind == SUSPEND:  # the agonist's input went bad: everything off
            hit = list(self._reps) if m == self.agonist else [m]
            running = [x for x in hit if self._reps[x].start is not None]
            for x in running:
                if self._level[x] > 0:
                    self._emit(out, x, self._at(e.sample), 0.0, "off")
                self._end(x, self._at(e.sample))
            if running:
                self._log(ABORTED, e.sample)
            return
        others = [x for x in self._reps if x != m]
        busy = any(self._reps[x].start is not None or self._level[x] > 0 for x in others)
        if (r.start is not None or e.sample < max(r.rest_until, self.first_sample)
                or (busy and not self.settings.co_stimulation)):
            if m == self.agonist:
                self._log(IGNORED, e.sample)
        elif m == self.agonist and not self._gate_ok(e.sample):
            self._log(GATED, e.sample)
        else:
            self._log(TRIGGER, e.sample)
            self._counts["trials"] += 1
            self._counts["hits"] += 1
            r.start, r.next = e.sample, e.sample
            r.smooth, r.below, r.down = self.p.min_current_ma, None, []

    def _notice(self, n: Notice, out: list[StimCommand]) -> None:
        r = self._reps[n.muscle]
        if n.action == "lower":
            r.scale *= 1.0 - self.settings.mwave.lower_percent / 100.0
        elif n.action == "end" and r.start is not None and not r.down:
            self._begin_down(n.muscle, self._at(n.sample), out)
            self._log(EARLY_STOP, n.sample)

    def _update(self, m: str, t: int, effort: float, quick: float,
                out: list[StimCommand]) -> None:
        s, r, t = self.p, self._reps[m], self._at(t)
        if r.down:
            self._next_down(m, out)
            return
        assert r.start is not None
        d = self._d
        below = not effort > s.threshold  # NaN (unknown) is no effort
        stopped = not quick > s.threshold
        if not stopped:
            r.below = None
        elif r.below is None:
            r.below = t
        on_for = t - r.start
        if on_for + d + (self._n_down - 1) * d > self._max_on:
            self._begin_down(m, t, out)  # the next update would be too late to be off in time
            return
        if r.below is not None and t - r.below >= self._hold and on_for >= self._min_on:
            self._begin_down(m, t, out)
            self._log(EARLY_STOP, t)
            return
        top = self._m[m].stim.current_ma * r.scale
        want = s.min_current_ma if below else s.min_current_ma + s.gain * (effort - s.threshold)
        if stopped:
            want = s.min_current_ma
        want = min(max(want, s.min_current_ma), top)
        r.smooth += self._alpha * (want - r.smooth)
        level = self._level[m]
        new = self._quantize(min(r.smooth, level + r.rise, top))
        if new == 0 < level:  # the law asks for less than the resolution: end it, an off
            self._begin_down(m, t, out)  # mid-repetition would break the channel's rest
            return
        if new != level:
            self._emit(out, m, t, new, "ramp_up" if level == 0 else "follow")
        r.next = t + d

    def _begin_down(self, m: str, t: int, out: list[StimCommand]) -> None:
        level, n = self._level[m], self._n_down
        self._reps[m].down = [(t + (k - 1) * self._d, self._quantize(level * (n - k) / n),
                               "ramp_down" if k < n else "off") for k in range(1, n + 1)]
        self._next_down(m, out)

    def _next_down(self, m: str, out: list[StimCommand]) -> None:
        r = self._reps[m]
        t, level, phase = r.down.pop(0)
        t = self._at(t)
        if level != self._level[m] or (phase == "off" and self._level[m] > 0):
            self._emit(out, m, t, level, phase)
        if phase == "off":
            self._end(m, t)
        else:
            r.next = r.down[0][0]

    def _end(self, m: str, t: int) -> None:
        r = self._reps[m]
        r.start, r.next, r.down = None, _NEVER, []
        self._level[m] = 0.0
        r.rest_until = t + int(round(self._m[m].stim.rest_time_s * self.fs))

    def _quantize(self, current: float) -> float:
        q = self.p.resolution_ma
        return max(0.0, round(math.floor(current / q + 1e-9) * q, 6))

    def _emit(self, out: list[StimCommand], m: str, t: int, level: float, phase: str) -> None:
        p = self._m[m].stim
        out.append(StimCommand(
            muscle=m, channel=p.channel, current_ma=level, pulse_width_us=p.pulse_width_us,
            frequency_hz=p.frequency_hz, sample=t, stream_time=self._time(t), phase=phase))
        self._level[m] = level
        self._stage[m] = phase


__all__ = ["Proportional"]
