"""What the loop does with the measured M-wave: "no response" and fatigue.

The evoked response of every stimulated muscle is measured per pulse train
(:mod:`closedloop.core.evoked`: one :class:`~closedloop.core.evoked.MWave` record per
muscle, level and half second of stimulation). Two rules read those records
(:class:`~closedloop.config.stimulation.MWaveRules`, ``[protocol.mwave]``):

* **no response**: a record at ``no_response_min_ma`` or more without an M-wave warns
  "no evoked response at this current: check the electrodes"; when the muscle's
  records stay without one from its first absent pulse for ``no_response_s``, the
  safety guard stops that channel for the rest of the session (a :class:`ChannelStop`
  for :meth:`~closedloop.stim.guard.SafetyGuard.filter`). A present record ends the
  stretch; a record of fewer than :data:`MIN_PULSES` pulses, or whose noise is unknown,
  says nothing.
* **fatigue**: the first present record of each level (current and pulse width) is that
  level's reference; a later one below ``fatigue_percent`` of it warns once per
  repetition (a stretch of records without a pause of more than 1 s) and, with
  ``fatigue_action``, asks the protocol to lower that muscle's current or to end the
  repetition (a :class:`Notice`): never to raise anything.

Pure, on the sample clock: every outcome is at the sample its record was decided at,
so the same records give the same stops and notices in any chunking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from closedloop.config.stimulation import MWaveRules
from closedloop.core.evoked import MWave

NO_RESPONSE, FATIGUE = "no_response", "fatigue"
#: A record of fewer pulses says nothing about a missing response: its noise is too
#: uncertain (one pulse at the motor threshold can read as absent).
MIN_PULSES = 3


@dataclass(frozen=True)
class ChannelStop:
    """The guard stops ``muscle``'s channel at ``sample`` for the rest of the session."""

    sample: int
    stream_time: float
    muscle: str
    message: str


@dataclass(frozen=True)
class Notice:
    """What the rules tell the loop (a warning) and, with ``action``, the protocol.

    Attributes
    ----------
    kind : str
        ``no_response`` or ``fatigue``.
    sample : int
        The sample its record was decided at.
    time : float
        Its stream time.
    muscle : str
    action : str
        ``""`` (a warning only), ``"lower"`` or ``"end"`` (fatigue).
    message : str
    """

    kind: str
    sample: int
    time: float
    muscle: str
    action: str
    message: str


@dataclass
class _Muscle:
    absent_since: int | None = None  # first pulse of the current stretch without response
    warned: bool = False
    stopped: bool = False
    reference: dict[tuple[float, float], float] = field(default_factory=dict)
    last_record: int = -(2**62)
    fatigue_warned: bool = False


class ResponseRules:
    """The two M-wave rules of one session (see the module docstring).

    Parameters
    ----------
    settings : MWaveRules
    fs : float
        Sampling rate, Hz (the sample clock).
    """

    def __init__(self, settings: MWaveRules, fs: float) -> None:
        self.settings = settings
        self.fs = float(fs)
        self._muscles: dict[str, _Muscle] = {}
        self._pause = int(round(1.0 * self.fs))

    def feed(self, records: Iterable[MWave]) -> tuple[list[Notice], list[ChannelStop]]:
        """The notices and channel stops the ``records`` (decided in one block) call for,
        in sample order."""
        notices: list[Notice] = []
        stops: list[ChannelStop] = []
        for r in sorted(records, key=lambda r: (r.sample, r.channel, r.current_ma)):
            m = self._muscles.setdefault(r.muscle, _Muscle())
            if not r.current_ma > 0 or m.stopped:
                continue
            if r.sample - m.last_record > self._pause:
                m.fatigue_warned = False  # a new repetition
            m.last_record = r.sample
            self._no_response(r, m, notices, stops)
            self._fatigue(r, m, notices)
        return notices, stops

    def _no_response(self, r: MWave, m: _Muscle, notices: list[Notice],
                     stops: list[ChannelStop]) -> None:
        s = self.settings
        if s.no_response_s is None or r.current_ma < s.no_response_min_ma:
            return
        if r.present:
            m.absent_since, m.warned = None, False
            return
        if r.n_pulses < MIN_PULSES or not math.isfinite(r.noise):
            return  # too few pulses to tell
        if m.absent_since is None:
            m.absent_since = r.first_sample
        if not m.warned:
            m.warned = True
            notices.append(Notice(
                NO_RESPONSE, r.sample, r.time, r.muscle, "",
                f"{r.muscle}: no evoked response at {r.current_ma:g} mA: check the "
                f"electrodes (the channel stops after {s.no_response_s:g} s without one)"))
        if r.sample - m.absent_since >= s.no_response_s * self.fs - 1e-9:
            m.stopped = True
            stops.append(ChannelStop(
                r.sample, r.time, r.muscle,
                f"{r.muscle}: no evoked response for {(r.sample - m.absent_since) / self.fs:.2f}"
                f" s of stimulation at {r.current_ma:g} mA or more: channel {r.channel} "
                "stopped for the rest of the session; check the electrodes"))

    def _fatigue(self, r: MWave, m: _Muscle, notices: list[Notice]) -> None:
        s = self.settings
        if s.fatigue_percent is None or not r.present:
            return
        level = (r.current_ma, r.pulse_width_us)
        ref = m.reference.setdefault(level, r.peak_to_peak)
        pct = 100.0 * r.peak_to_peak / ref
        if pct >= s.fatigue_percent or m.fatigue_warned:
            return
        m.fatigue_warned = True
        action = "" if s.fatigue_action == "warn" else s.fatigue_action
        what = {"": "", "lower": f"; its current is lowered by {s.lower_percent:g} %",
                "end": "; the repetition ends"}[action]
        notices.append(Notice(
            FATIGUE, r.sample, r.time, r.muscle, action,
            f"{r.muscle}: M-wave at {pct:.0f} % of the session's first at {r.current_ma:g} mA"
            f" (fatigue below {s.fatigue_percent:g} %){what}"))


__all__ = ["FATIGUE", "NO_RESPONSE", "ChannelStop", "Notice", "ResponseRules"]
