"""The one-line live status: time, repetitions, stimulation, each muscle's envelope
against its threshold, in clinical units, as wide as the terminal.

:class:`StatusLine` is built once per session (it knows the muscles, the source's rate
and units, the detector and which stimulator channel stimulates which muscle) and called
with each block. The widest form::

    t 12.3 s | triggers 4 | stim biceps 20 mA 35 Hz | biceps envelope 3.1 µV, on above 6.2 µV | ...

When that does not fit the terminal, the same facts in fewer words (``biceps env 3.1 µV
/ thr 6.2 µV``), then one legend for all muscles with the stimulation beside the muscle
it stimulates (``env/thr µV: biceps 3.1/6.2 stim 20 mA, triceps 3.8/7.3``; beside a
statistic that is not an EMG level, each muscle's level first, with its unit: ``stat/thr
nats: biceps 12 µV 1.5/18, triceps 3.0 µV 0.2/18``, then, narrower, level and statistic
without the threshold: ``µV/nats: biceps 12/1.5, triceps 3.0/0.2``), then muscles left
out (``+2 more``): quiet ones first, a suspended or stimulated one last. Time,
repetitions and stimulation always stay.

EMG is shown in µV when the source reports a voltage (V, mV, uV), as the source names
it otherwise (``counts``), a detector's statistic in its own unit
(:func:`closedloop.units.display_units`: cusum's in nats). A detector whose statistic is
not an EMG level (cusum: it rests at 0 while the muscle is active) gets the muscle's EMG
level beside it where the line has room (``biceps EMG 12 µV, cusum statistic 0.4 nats,
on above 18 nats``): the RMS of the EMG the detector saw over the last
``[envelope] window_ms``. While the filters settle at the start of a
session (the input checks have not yet judged a channel usable; the adaptive baseline
is still learning the rest level) a muscle reads ``settling``: nothing is wrong. A
muscle whose input goes bad later reads ``SUSPENDED`` with the reason, one the impulse
gate holds ``HELD``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence

import numpy as np

from closedloop.core.detectors.base import statistic_of
from closedloop.core.events import Block
from closedloop.core.stream import SourceInfo
from closedloop.stim.base import ChannelOutput, Stimulator
from closedloop.units import display_units, duration

_WHY = {"hum": "mains hum", "signal": "flat, saturated or NaN signal",
        "impulse": "far outside its range", "settling": "signal back, settling"}
#: Narrowest line the status is fitted to (a smaller terminal still gets this many).
MIN_WIDTH = 40
ELLIPSIS = "…"
SEP = " | "


def terminal_width() -> int:
    """Columns for the status line: the terminal's width less one (a line that fills the
    last column makes some terminals wrap), from ``$COLUMNS`` or the terminal; 79 with
    no terminal."""
    return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns - 1)


class StatusLine:
    """The live status line of one session (see the module docstring).

    Parameters
    ----------
    config : Config
        The session's config: detector kind, which channel stimulates which muscle.
    info : SourceInfo
        The EMG source: its rate (the time shown is on the sample clock) and units.
    width : int or callable, optional
        Widest line, or a function returning it (asked at every line, so a resized
        terminal is followed); default :func:`terminal_width`.
    """

    def __init__(self, config, info: SourceInfo, *,
                 width: int | Callable[[], int] | None = None) -> None:
        self.fs = float(info.fs)
        self.units = display_units(info.units, statistic_of(config.detector_kind))
        #: Samples of the EMG level shown beside a statistic that is not one (0: none).
        self.level_n = 0 if self.units.statistic.of_emg else max(
            1, int(round(config.envelope.window_ms * self.fs / 1000.0)))
        self.stim_names = {m.stim.channel: m.name for m in config.muscles if m.stim is not None}
        self._width = terminal_width if width is None else width
        self._judged: set[str] = set()  # muscles judged usable once: their start is over

    @property
    def width(self) -> int:
        """The width the next line is fitted to."""
        w = self._width() if callable(self._width) else self._width
        return max(MIN_WIDTH, int(w))

    def __call__(self, block: Block, stimulator, protocol, why: Sequence[str]) -> str:
        """The line for the latest ``block``; ``why[c]`` is why muscle ``c`` is
        suspended ("" when it is not: :attr:`InputStage.why`)."""
        names = block.channels
        self._judged.update(name for name, w in zip(names, why, strict=True) if not w)
        env = block.envelope[-1] if block.n else block.on_threshold * math.nan
        level = [""] * len(names)
        level_num = [""] * len(names)  # "12": the EMG level in the legend forms
        if self.level_n and block.n:
            rms = np.sqrt(np.mean(np.square(block.filtered[-self.level_n:]), axis=0))
            level = [f"EMG {self.units.emg(float(v))}" for v in rms]
            level_num = [_brief(float(v) * self.units.emg_factor) for v in rms]
        emg_unit = f" {self.units.emg_unit}" if self.units.emg_unit else ""
        states = [self._state(name, w, float(block.on_threshold[c]), float(env[c]))
                  for c, (name, w) in enumerate(zip(names, why, strict=True))]
        head = [f"t {duration((block.start + block.n) / self.fs)}", *self._counts(protocol)]
        on = self._on(stimulator)
        stim, long_stim = ([], []) if stimulator is None else ([_stim(on, hz=False)],
                                                               [_stim(on, hz=True)])
        width = self.width
        u = self.units
        for parts in (
            [*head, *long_stim,
             *(self._long(n, float(e), float(t), s, lv) for n, e, t, s, lv
               in zip(names, env, block.on_threshold, states, level, strict=True))],
            [*head, *stim, *(self._short(n, float(e), float(t), s, lv) for n, e, t, s, lv
                             in zip(names, env, block.on_threshold, states, level,
                                    strict=True))],
        ):
            line = SEP.join(parts)
            if len(line) <= width:
                return line
        # one legend, the stimulation beside its muscle; then muscles left out, the
        # quiet ones first (from the last), a suspended or stimulated one last
        current = {name: o.current_ma for name, o in on}
        # each muscle in the legend form: with the threshold and, beside a statistic that
        # is not an EMG level, that level with its unit; then (that statistic only)
        # level/statistic under one legend of both units, the threshold left out
        items, terse, weight = [], [], []
        for c, (n, s) in enumerate(zip(names, states, strict=True)):
            e, t = _brief(float(env[c]) * u.stat_factor), \
                _brief(float(block.on_threshold[c]) * u.stat_factor)
            lv = f"{level_num[c]}{emg_unit} " if level_num[c] else ""
            text = f"{n} {_brief_state(s)}" if s else f"{n} {lv}{e}/{t}"
            short = (f"{n} {_brief_state(s)}" if s else
                     f"{n} {level_num[c]}/{e}")
            if n in current:
                stim_text = f" stim {current.pop(n):.0f} mA"
                text, short = text + stim_text, short + stim_text
            items.append(text)
            terse.append(short)
            weight.append(2 if n in dict(on) or s[:1].isupper() else 1 if s else 0)
        other = [f"stim {name} {ma:.0f} mA" for name, ma in current.items()]  # no EMG of it
        if stimulator is not None and not on:
            other = ["stim off"]
        head = [head[0], *self._counts(protocol, brief=True)]
        forms = [(f"{u.stat_short}/thr{' ' + u.stat_unit if u.stat_unit else ''}: ", items)]
        if self.level_n and block.n:
            forms.append((f"{u.emg_unit or 'EMG'}/{u.stat_unit or u.stat_short}: ", terse))
        drop = sorted(range(len(items)), key=lambda i: (weight[i], -i))
        for k in range(len(items) - weight.count(2) + 1):
            kept = sorted(drop[k:])
            for legend, texts in forms:
                line = SEP.join([*head, *other, legend + ", ".join(texts[i] for i in kept)
                                 + (f", +{k} more" if k else "")])
                if len(line) <= width:
                    return line
        # narrower still: a suspended muscle first (with why, then without), then a
        # stimulated one, in few words
        suspended = [i for i in range(len(names)) if states[i][:1].isupper()]
        stimulated = [f"{name} stim {o.current_ma:.0f} mA" for name, o in on]
        for reason in (True, False):
            first = [f"{names[i]} {states[i] if reason else states[i].split(' (')[0]}"
                     for i in suspended] + stimulated
            rest = len(items) - len(first)
            for tail in ([f"+{rest} more"] if rest > 0 else [], []):
                line = SEP.join([*head, ", ".join(first + tail)])
                if len(line) <= width:
                    return line
        return line[: width - 1] + ELLIPSIS

    # -- parts ------------------------------------------------------------------------------
    def _on(self, stimulator: Stimulator | None) -> list[tuple[str, ChannelOutput]]:
        """(muscle, output) of every stimulator channel that is on."""
        if stimulator is None:
            return []
        return [(self.stim_names.get(ch, f"channel {ch}"), o)
                for ch, o in sorted(stimulator.outputs.items()) if o.is_on]

    @staticmethod
    def _counts(protocol, *, brief: bool = False) -> list[str]:
        """``triggers 4`` (assist, reciprocal) or ``trials 12: 10 hits, 2 misses``
        (``brief``: ``hits 10/12``), with the attempts the co-contraction gate stopped."""
        if protocol is None:
            return []
        c = protocol.counts
        gated = f", {c.gated} gated" if c.gated else ""
        if getattr(protocol, "kind", "") != "cued_trials":
            return [f"triggers {c.trials}{gated}"]
        if brief:
            return [f"hits {c.hits}/{c.trials}{gated}"]
        return [f"trials {c.trials}: {c.hits} hit{'s' * (c.hits != 1)}, {c.misses} "
                f"miss{'es' * (c.misses != 1)}{gated}"]

    def _state(self, name: str, why: str, threshold: float, value: float = 0.0) -> str:
        """A word on a muscle that is not detecting ("" when it is)."""
        if why == "impulse":  # the impulse gate holds it: no new onset for a moment
            return "HELD (" + _WHY[why] + ")"
        if why == "settling" and name not in self._judged:
            return "settling"  # the start of the session: nothing is wrong
        if why:
            return "SUSPENDED (" + _WHY.get(why, why) + ")"
        if not (math.isfinite(threshold) and math.isfinite(value)):
            return "settling (learning rest)"  # no threshold, or no statistic yet
        return ""

    def _long(self, name: str, env: float, thr: float, state: str, level: str = "") -> str:
        u = self.units
        value = f"{name} {u.stat_name} {u.stat(env)}"
        if state:
            return f"{value}, {state}"
        lv = f"{level}, " if level else ""
        return f"{name} {lv}{u.stat_name} {u.stat(env)}, on above {u.stat(thr)}"

    def _short(self, name: str, env: float, thr: float, state: str, level: str = "") -> str:
        u = self.units
        if state:
            return f"{name} {_brief_state(state)}"
        lv = f"{level} " if level else ""
        return f"{name} {lv}{u.stat_short} {u.stat(env)} / thr {u.stat(thr)}"


def _stim(on: list, *, hz: bool) -> str:
    """``stim biceps 20 mA 35 Hz, triceps 12 mA 35 Hz`` (``hz``: with the rates), or
    ``stim off``."""
    return "stim " + (", ".join(f"{name} {o.current_ma:.0f} mA"
                                + (f" {o.frequency_hz:.0f} Hz" if hz else "")
                                for name, o in on) or "off")


def _brief_state(state: str) -> str:
    """A state in a narrow line: ``settling`` whatever it is learning; a suspension
    keeps its reason."""
    return "settling" if state.startswith("settling") else state


def _brief(x: float) -> str:
    """Two digits are enough to compare a value with its threshold: ``2.6``, ``18``."""
    if not math.isfinite(x):
        return "-"
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


__all__ = ["MIN_WIDTH", "StatusLine", "terminal_width"]
