"""A simulated stimulator: remembers every command and knows when each pulse went out.

:class:`SimStimulator` is a complete :class:`~closedloop.stim.base.Stimulator` without
hardware. It logs what it was told, keeps the channel outputs, and reconstructs the
pulse train in stream time so the simulated patient can add stimulation artifacts and
M-waves to the simulated EMG (:meth:`SimStimulator.pulses`).

Pulse timing: a channel switched on at stream time ``T0`` pulses at ``T0 + k / f``
(k = 0, 1, ...) while it stays on. ``T0`` is the value of the injected ``clock()``
when :meth:`~SimStimulator.apply` is called, or, without a clock, the command's
``stream_time``. A change of current or pulse width keeps the pulse grid (a pulse from
the change on carries the new level; one less than :data:`TIE_S` before it is taken as
at it, since the grid ``T0 + k / f`` and the change's time round apart: 2.01 + 14 / 35
is 2.4099999999999997, not 2.41); a change of frequency starts the new grid at the
first pulse of the old grid at or after the change, so no two pulses come closer than
the old period. Switching off at ``T1`` ends the train: pulses at or after ``T1`` are
not delivered.

For tests, :meth:`~SimStimulator.fail_next` makes the next ``apply``, ``stop_all`` or
``check`` raise a given exception.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from closedloop.errors import ConfigError, StimulatorError
from closedloop.stim.base import ChannelOutput, Stimulator, StimulatorContext
from closedloop.stim.commands import StimCommand

#: A pulse this little (s) before a change of its channel's output is at the change.
TIE_S = 1e-9
#: Record layout of :meth:`SimStimulator.pulses`.
PULSE_DTYPE = np.dtype(
    [("time", "f8"), ("channel", "i4"), ("current_ma", "f8"), ("pulse_width_us", "f8")]
)

_FAULT_POINTS = ("apply", "stop_all", "check")


@dataclass(frozen=True)
class AppliedCommand:
    """One log entry: a command as the simulated device took it.

    Parameters
    ----------
    command : StimCommand
        The command (for ``stop_all``: a synthesized off-command with phase ``stop``
        and sample -1).
    stream_time : float
        Stream time at which it took effect (``clock()`` or the command's stream time).
    wall : float
        Wall time it was handed over: the command's ``handed_wall`` when set, else the
        injected ``wall_clock()`` at the call (latency measurement only).
    """

    command: StimCommand
    stream_time: float
    wall: float


@dataclass
class _Segment:
    """A stretch of constant output of one channel, in stream time [start, end)."""

    channel: int
    start: float
    anchor: float  # pulses at anchor + k / frequency
    current_ma: float
    pulse_width_us: float
    frequency_hz: float
    end: float = math.inf


class SimStimulator(Stimulator):
    """A stimulator that only exists in memory.

    Parameters
    ----------
    clock : callable, optional
        Returns the current stream time (s); called once per ``apply``/``stop_all``.
        Without it, each command takes effect at its own ``stream_time`` and
        ``stop_all`` at the latest stream time seen.
    wall_clock : callable
        Wall time for the log (default ``time.perf_counter``); never used to decide.
    n_channels : int
        Number of output channels (1..n_channels).
    log_limit : int or None
        :attr:`log` keeps the last this many applied commands (None: all), so an
        hour-long simulated session does not grow; the session's recording keeps all.
    rates : mapping of float to float, optional
        Pulse rate delivered for a commanded frequency, to play a device whose timer
        has coarse steps (a replay gives the recorded device's); others run exactly.
    """

    kind = "sim"
    spec_form = "sim  (the simulated stimulator: no patient attached)"
    label = "the simulated stimulator"

    @classmethod
    def from_spec(cls, spec: str, arg: str, context: StimulatorContext) -> SimStimulator:
        """The stimulator of a ``sim`` spec."""
        if arg:
            raise ConfigError(f"stimulator spec {spec!r}: sim takes no argument")
        return cls()

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.perf_counter,
        n_channels: int = 8,
        log_limit: int | None = 1000,
        rates: Mapping[float, float] | None = None,
    ) -> None:
        super().__init__()
        self._rates = dict(rates or {})
        self.n_channels = n_channels
        self._clock = clock
        self._wall = wall_clock
        self._log: deque[AppliedCommand] = deque(maxlen=log_limit)
        self._segments: list[_Segment] = []
        self._open_seg: dict[int, _Segment] = {}
        self._muscle: dict[int, str] = {}
        self._last_time = -math.inf
        self._faults: dict[str, BaseException] = {}

    # -- the stream's clock -----------------------------------------------------------------
    @property
    def clock(self) -> Callable[[], float] | None:
        """The stream clock the pulses follow (None: each command's own stream time)."""
        return self._clock

    def follow(self, clock: Callable[[], float]) -> None:
        """Take the source's stream clock (e.g. :meth:`SimSource.now
        <closedloop.sources.sim.SimSource.now>`: the time of the next sample), so a
        command's pulses start where the simulated patient's next samples are, as a real
        stimulator's start when the command arrives. A session built by
        :mod:`closedloop.runtime.session` does this for the simulated pair."""
        self._clock = clock

    # -- test hooks -----------------------------------------------------------------------
    def fail_next(self, exc: BaseException, *, on: str = "apply") -> None:
        """Make the next call of ``on`` (``apply``, ``stop_all``, ``check``) raise ``exc``.

        The failing call changes nothing (the device "did not hear" it).
        """
        if on not in _FAULT_POINTS:
            raise ValueError(f"fail_next(on={on!r}): expected one of {_FAULT_POINTS}")
        self._faults[on] = exc

    def _maybe_fail(self, point: str) -> None:
        exc = self._faults.pop(point, None)
        if exc is not None:
            raise exc

    # -- what was applied -------------------------------------------------------------------
    @property
    def log(self) -> tuple[AppliedCommand, ...]:
        """The commands applied (and every ``stop_all``), in order: the last
        ``log_limit`` of them."""
        return tuple(self._log)

    @property
    def commands(self) -> list[StimCommand]:
        """The logged commands alone."""
        return [a.command for a in self._log]

    def pulses(self, t_start: float, t_end: float) -> np.ndarray:
        """Pulses delivered in stream time ``[t_start, t_end)`` (a pulse less than
        :data:`TIE_S` before ``t_end`` is at it: in the next range, after the commands
        acting at ``t_end`` were applied).

        Returns
        -------
        ndarray of PULSE_DTYPE
            Fields ``time`` (s), ``channel``, ``current_ma``, ``pulse_width_us``; sorted by
            time, then channel. Adjacent half-open ranges never share or lose a pulse.
        """
        parts = []
        t_start, t_end = t_start - TIE_S, t_end - TIE_S  # a pulse a hair before t is at t
        for seg in self._segments:
            lo, hi = max(seg.start - TIE_S, t_start), min(seg.end - TIE_S, t_end)
            f = seg.frequency_hz
            if not lo < hi or not f > 0 or not seg.current_ma > 0:
                continue
            k0 = max(0, math.floor((lo - seg.anchor) * f) - 1)
            k1 = math.ceil((hi - seg.anchor) * f) + 1
            times = seg.anchor + np.arange(k0, k1 + 1, dtype=np.int64) / f
            times = times[(times >= lo) & (times < hi)]
            if times.size:
                rec = np.empty(times.size, dtype=PULSE_DTYPE)
                rec["time"] = times
                rec["channel"] = seg.channel
                rec["current_ma"] = seg.current_ma
                rec["pulse_width_us"] = seg.pulse_width_us
                parts.append(rec)
        if not parts:
            return np.empty(0, dtype=PULSE_DTYPE)
        out = np.concatenate(parts)
        return out[np.lexsort((out["channel"], out["time"]))]

    def forget_before(self, t: float) -> None:
        """Drop finished pulse segments that ended at or before stream time ``t``."""
        self._segments = [s for s in self._segments if s.end > t]

    # -- Stimulator ---------------------------------------------------------------------
    def apply(self, commands: Sequence[StimCommand]) -> None:
        """Set the listed channels (see the module docstring for pulse timing).

        Raises
        ------
        StimulatorError
            If the stimulator is not open or a channel is outside 1..n_channels
            (nothing is applied then).
        """
        self._maybe_fail("apply")
        if not self.is_open:
            raise StimulatorError("SimStimulator is not open; call open() first")
        for c in commands:
            if not 1 <= c.channel <= self.n_channels:
                raise StimulatorError(
                    f"SimStimulator has channels 1..{self.n_channels}; got channel "
                    f"{c.channel} for {c.muscle!r}"
                )
        now = self._clock() if self._clock is not None else None
        wall = self._wall()
        for c in commands:
            t = now if now is not None else c.stream_time
            self._log.append(AppliedCommand(c, t, c.handed_wall if math.isfinite(
                c.handed_wall) else wall))
            self._set(c.channel, t, c.current_ma, c.pulse_width_us,
                      self.delivered_hz(c.frequency_hz))
            self._muscle[c.channel] = c.muscle

    def stop_all(self) -> None:
        """Switch every channel off (logged as phase ``stop``). Safe when closed."""
        self._maybe_fail("stop_all")
        t = self._clock() if self._clock is not None else self._last_time
        wall = self._wall()
        for ch in sorted(self._outputs):
            out = self._outputs[ch]
            cmd = StimCommand(
                muscle=self._muscle.get(ch, ""), channel=ch, current_ma=0.0,
                pulse_width_us=out.pulse_width_us, frequency_hz=out.frequency_hz,
                sample=-1, stream_time=t, phase="stop",
            )
            self._log.append(AppliedCommand(cmd, t, wall))
            self._set(ch, t, 0.0, out.pulse_width_us, out.frequency_hz)

    def check(self) -> None:
        """Raise the fault planned for ``check``, if any."""
        self._maybe_fail("check")

    def delivered_hz(self, frequency_hz: float) -> float:
        """The rate a pulse train of ``frequency_hz`` really has on this device."""
        return self._rates.get(frequency_hz, frequency_hz)

    def _set(self, ch: int, t: float, current: float, pw: float, f: float) -> None:
        if math.isfinite(t):
            self._last_time = max(self._last_time, t)
        seg = self._open_seg.pop(ch, None)
        anchor = t
        if seg is not None:
            t = max(t, seg.start)  # a clock going back must not reorder segments
            seg.end = t
            anchor = t
            if seg.frequency_hz == f and f > 0:
                anchor = seg.anchor
            elif seg.frequency_hz > 0:
                k = math.ceil((t - seg.anchor) * seg.frequency_hz - 1e-9)
                anchor = seg.anchor + k / seg.frequency_hz
        self._outputs[ch] = ChannelOutput(current, pw, f)
        if current > 0:
            new = _Segment(ch, t, anchor, current, pw, f)
            self._segments.append(new)
            self._open_seg[ch] = new
