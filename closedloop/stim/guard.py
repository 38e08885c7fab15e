"""The one safety guard every stimulation command passes: it may only lower or stop.

:class:`SafetyGuard` sits between the protocol (what it *wants*) and the stimulator
driver (what is sent). It keeps, per stimulator channel, the level it let through and
the sample at which that level started, and runs every command through these checks,
on the sample clock (``command.sample / fs`` is time; the wall clock is never read):

==================  ===============================================  ==========
rule                what happens                                     severity
==================  ===============================================  ==========
``current``         current above ``max_current_ma`` (or ceiling)    STOP
``pulse_width``     pulse width above ``max_pulse_width_us``         STOP
``frequency``       frequency above ``max_frequency_hz``             STOP
``charge``          current x pulse width above ``max_charge_uc``    STOP
``interlock``       on-command while the antagonist is on            STOP
``unknown_channel`` muscle/channel the guard was not built with      STOP
``invalid``         NaN, infinite or negative values                 STOP
``session_dose``    a channel's on-time (or charge) dose is spent    STOP
``stopped``         any on-command after a STOP                      STOP
``ramp_step``       increase above ``max_step_ma``: clipped to       LIMIT
                    previous level + ``max_step_ma``
``max_on_time``     on longer than ``max_on_time_s``: forced off     LIMIT
                    at the exact sample the limit is reached; the
                    rest of that train is refused (the channel
                    stays off until the protocol's off-command)
``min_rest``        on-command less than ``min_rest_s`` after the    LIMIT
                    channel went off: refused, and the rest of that
                    train too (the channel stays off until the
                    protocol's off-command)
``rate_unchecked``  on-command before the EMG stream's rate is       LIMIT
                    checked (its first 2 s of samples, ``[safety]
                    wait_for_rate``): refused, and the rest of that
                    train too (the channel stays off until the
                    protocol's off-command)
``no_response``     the M-wave rules found no evoked response        LIMIT
                    (:mod:`~closedloop.stim.mwave_rules`): that
                    channel off at that sample, every later
                    on-command for it refused (the others go on)
==================  ===============================================  ==========

``LIMIT`` is a normal limitation: the guard shaped the output and the session goes on.
A train the guard refused or cut off (``max_on_time``, ``min_rest``, ``rate_unchecked``)
stays off to its end, so it never starts late and half-way, away from the onset that
asked for it: stimulation that comes late teaches the wrong thing.
``STOP`` means the protocol or the config is wrong, or the session dose is spent: the
guard refuses the command, switches every channel off at that sample and refuses every
later on-command (it latches); the loop must end the session (:attr:`must_stop`).
Level rules (current, pulse width, frequency, charge) refuse rather than clip: a
protocol that asks for more than its configured limit is not to be trusted with the
next command either.

Antagonist interlock: the channel that is already on wins; the on-command for its
antagonist is refused (and, being a protocol error, stops the session). Off-commands
are processed before on-commands of the same sample, so "agonist off, antagonist on" at
one sample is a legal hand-over. ``co_stimulation=True`` disables the interlock.

Off-commands always pass (their pulse width and frequency fields are clipped into the
limits). The guard never creates an on-command and never raises a level: every output
is either a requested command with a current no higher than requested, or an off.

Order and chunking: commands must arrive in sample order across calls. Within a call
they are processed by sample, offs before ons; forced offs (on-time, dose) are emitted
at the exact sample their limit is reached, after the offs and before the ons of that
sample. So the same commands give the same output whatever the block sizes, provided
the loop passes each block (``filter(cmds, block=block)``) so forced offs inside
command-free blocks are found in time.

Loop usage::

    guard = SafetyGuard.from_muscles(muscles, safety, fs, protocol=protocol_settings)
    for block in core:
        safe = guard.filter(protocol.step(block), block=block)
        for v in guard.pop_violations():
            log(v)
        if guard.must_stop:                      # outputs in `safe` are already off
            stimulator.apply(safe); stimulator.stop_all(); break
        try:
            stimulator.apply(safe)
        except DeviceError:
            stimulator.stop_all()
            guard.all_off(block.stop - 1, block.timestamps[-1])   # tell the guard
            raise
    stimulator.apply(guard.all_off(last_sample, last_time))

:meth:`filter` assumes its output is applied. When the device did something else (a
driver error after part of a list, an emergency stop), tell the guard with
:meth:`applied` or :meth:`all_off`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from closedloop.config import ceilings
from closedloop.config.stimulation import (
    ChannelLimits,
    MuscleStim,
    ProtocolSettings,
    SafetySettings,
)
from closedloop.core.events import Block
from closedloop.errors import ConfigError, SafetyError
from closedloop.stim.commands import StimCommand
from closedloop.stim.mwave_rules import ChannelStop

#: Increases this small above the allowed step are float noise: clipped, not reported.
_STEP_EPS_MA = 1e-9
#: Relative tolerance on the charge product (mA x us is rounded in floating point).
_CHARGE_RTOL = 1e-9


class Severity(str, Enum):
    """How serious a violation is (see the module docstring)."""

    LIMIT = "limit"
    STOP = "stop"


class Rule(str, Enum):
    """Which safety rule a violation concerns."""

    CURRENT = "current"
    PULSE_WIDTH = "pulse_width"
    FREQUENCY = "frequency"
    CHARGE = "charge"
    RAMP_STEP = "ramp_step"
    MAX_ON_TIME = "max_on_time"
    MIN_REST = "min_rest"
    INTERLOCK = "interlock"
    SESSION_DOSE = "session_dose"
    UNKNOWN_CHANNEL = "unknown_channel"
    INVALID = "invalid"
    STOPPED = "stopped"
    NO_RESPONSE = "no_response"
    RATE_UNCHECKED = "rate_unchecked"


@dataclass(frozen=True)
class Violation:
    """One intervention of the guard.

    Parameters
    ----------
    sample : int
        Sample at which the guard intervened.
    stream_time : float
        Stream time of that sample, s.
    muscle : str
        Muscle concerned (as named in the command).
    channel : int
        Stimulator channel concerned.
    rule : Rule
    requested, allowed : float
        The value concerned and the largest value the rule allows, in ``unit``
        (current: mA; on-time, rest, dose: s; charge: uC or mC).
    unit : str
    severity : Severity
    message : str
        A sentence for the operator's log.
    """

    sample: int
    stream_time: float
    muscle: str
    channel: int
    rule: Rule
    requested: float
    allowed: float
    unit: str
    severity: Severity
    message: str

    @property
    def stops_session(self) -> bool:
        """True when the loop must end the session."""
        return self.severity is Severity.STOP


@dataclass(frozen=True)
class GuardChannel:
    """What the guard knows about one stimulated muscle."""

    muscle: str
    channel: int
    limits: ChannelLimits
    antagonists: tuple[str, ...] = ()


@dataclass
class _State:
    cfg: GuardChannel
    max_on: int  # samples a channel may stay on
    min_rest: int  # samples it must stay off
    on: bool = False
    level: float = 0.0
    pulse_width_us: float = 0.0
    frequency_hz: float = 0.0
    on_since: int = 0
    off_since: int | None = None
    seg_start: int = 0  # start of the current constant-level segment
    dose_samples: int = 0  # completed on-stretches
    charge_uc: float = 0.0  # completed segments
    antagonists: set[str] = field(default_factory=set)
    disabled: bool = False  # stopped for the session (no evoked response)
    refused: bool = False  # a train refused or cut off by a limit, until its off

    @property
    def charge_rate(self) -> float:
        """Charge per second at the current level, uC/s (one phase per pulse)."""
        return self.level * self.pulse_width_us / 1000.0 * self.frequency_hz if self.on else 0.0


def _floor_samples(seconds: float, fs: float) -> int:
    return int(math.floor(seconds * fs + 1e-9))


def _ceil_samples(seconds: float, fs: float) -> int:
    return int(math.ceil(seconds * fs - 1e-9))


class SafetyGuard:
    """Per-channel limits, ramps, on-time, rest, interlock and session dose.

    Parameters
    ----------
    channels : sequence of GuardChannel
        The stimulated muscles: name, stimulator channel, limits and antagonists.
        Interlocks are symmetric: if A names B, B is locked against A too.
    safety : SafetySettings
        Session dose.
    fs : float
        EMG sampling rate in Hz (the sample clock).
    co_stimulation : bool
        Allow antagonists to be on at once (disables the interlock).
    first_sample : int
        On-commands before this sample are refused (``rate_unchecked``): a session
        passes the sample at which its input checks have checked the EMG stream's true
        rate (:func:`~closedloop.core.checks.rate_samples`, when ``[safety]
        wait_for_rate``), so a stream that declares a wrong rate is stopped before it
        could stimulate. 0 (the default): no such wait (a test train on the device's
        own clock, ``stim-test``).

    Raises
    ------
    ConfigError
        If two muscles share a channel or a name, or ``fs`` is not positive.
    """

    def __init__(
        self,
        channels: Sequence[GuardChannel],
        safety: SafetySettings,
        fs: float,
        *,
        co_stimulation: bool = False,
        first_sample: int = 0,
    ) -> None:
        if not (math.isfinite(fs) and fs > 0):
            raise ConfigError(f"SafetyGuard: fs = {fs!r} Hz must be a positive number")
        self.fs = float(fs)
        self.safety = safety
        self.co_stimulation = bool(co_stimulation)
        self._by_channel: dict[int, _State] = {}
        self._by_muscle: dict[str, _State] = {}
        for cfg in channels:
            if cfg.channel in self._by_channel or cfg.muscle in self._by_muscle:
                raise ConfigError(
                    f"SafetyGuard: muscle {cfg.muscle!r} / channel {cfg.channel} appears "
                    f"twice; each stimulated muscle needs its own channel"
                )
            if not 1 <= cfg.channel <= ceilings.N_CHANNELS:
                raise ConfigError(f"SafetyGuard: channel {cfg.channel} of {cfg.muscle!r} must "
                                  f"be 1..{ceilings.N_CHANNELS}")
            st = _State(
                cfg=cfg,
                max_on=_floor_samples(min(cfg.limits.max_on_time_s, ceilings.MAX_ON_TIME_S), fs),
                min_rest=_ceil_samples(max(cfg.limits.min_rest_s, ceilings.MIN_REST_FLOOR_S), fs),
            )
            self._by_channel[cfg.channel] = st
            self._by_muscle[cfg.muscle] = st
        for st in self._by_muscle.values():
            for other in st.cfg.antagonists:
                if other in self._by_muscle and other != st.cfg.muscle:
                    st.antagonists.add(other)
                    self._by_muscle[other].antagonists.add(st.cfg.muscle)
        self._first = max(0, int(first_sample))
        dose_s = min(safety.session_dose_s, ceilings.MAX_SESSION_DOSE_S)
        self._dose_samples = _floor_samples(dose_s, fs)
        self._dose_charge_uc = (
            None if safety.session_charge_mc is None
            else min(safety.session_charge_mc, ceilings.MAX_SESSION_CHARGE_MC) * 1000.0
        )
        self._now = -1  # highest sample processed
        self._ref = (0, 0.0)  # (sample, stream_time) to extrapolate stream times
        self._block: Block | None = None
        self._stop: Violation | None = None
        self._pending: list[Violation] = []
        self._all: list[Violation] = []

    @classmethod
    def from_muscles(
        cls,
        muscles: Mapping[str, MuscleStim],
        safety: SafetySettings,
        fs: float,
        *,
        protocol: ProtocolSettings | None = None,
        first_sample: int = 0,
    ) -> SafetyGuard:
        """Build the guard from the config's stimulated muscles.

        Interlocked pairs are every muscle's ``antagonist`` plus the protocol's
        agonist/antagonist pair; ``co_stimulation`` is taken from the protocol.
        """
        pairs: dict[str, set[str]] = {name: set() for name in muscles}
        for name, m in muscles.items():
            if m.antagonist:
                pairs[name].add(m.antagonist)
        if protocol is not None and protocol.antagonist and protocol.agonist in pairs:
            pairs[protocol.agonist].add(protocol.antagonist)
        chans = [
            GuardChannel(name, m.stim.channel, m.limits, tuple(sorted(pairs[name])))
            for name, m in muscles.items()
        ]
        co = protocol.co_stimulation if protocol is not None else False
        return cls(chans, safety, fs, co_stimulation=co, first_sample=first_sample)

    # -- what the loop reads ------------------------------------------------------------
    @property
    def must_stop(self) -> bool:
        """True once a STOP violation happened: the loop must end the session."""
        return self._stop is not None

    @property
    def stop_violation(self) -> Violation | None:
        """The first STOP violation, if any."""
        return self._stop

    @property
    def violations(self) -> tuple[Violation, ...]:
        """Every violation since the guard was built, in order."""
        return tuple(self._all)

    def pop_violations(self) -> list[Violation]:
        """Violations since the last call (for the loop's log)."""
        out, self._pending = self._pending, []
        return out

    @property
    def next_sample(self) -> int:
        """The earliest sample a new command may carry (commands come in order)."""
        return self._now + 1 if self._now >= 0 else 0

    @property
    def muscles(self) -> tuple[str, ...]:
        """The guarded muscles."""
        return tuple(self._by_muscle)

    def channel_of(self, muscle: str) -> int:
        """Stimulator channel of ``muscle``; KeyError names the known muscles."""
        try:
            return self._by_muscle[muscle].cfg.channel
        except KeyError:
            raise KeyError(f"the guard does not know muscle {muscle!r}; it knows "
                           f"{', '.join(self._by_muscle)}") from None

    def level(self, muscle: str) -> float:
        """Current (mA) the guard last let through for ``muscle`` (0 when off)."""
        st = self._by_muscle[muscle]
        return st.level if st.on else 0.0

    def rest_until(self, muscle: str) -> int:
        """First sample at which ``muscle`` may be switched on again (min rest)."""
        st = self._by_muscle[muscle]
        if st.on or st.off_since is None:
            return self.next_sample
        return max(self.next_sample, st.off_since + st.min_rest)

    def dose_used_s(self, muscle: str, sample: int | None = None) -> float:
        """Cumulative on-time of ``muscle`` up to ``sample`` (default: last processed)."""
        st = self._by_muscle[muscle]
        s = self._now if sample is None else sample
        live = max(0, s - st.on_since) if st.on else 0
        return (st.dose_samples + live) / self.fs

    # -- the filter ---------------------------------------------------------------------
    def filter(
        self, commands: Iterable[StimCommand], block: Block | None = None,
        stops: Iterable[ChannelStop] = (),
    ) -> list[StimCommand]:
        """Run commands through every check; return what may be sent, in sample order.

        Parameters
        ----------
        commands : iterable of StimCommand
            What the protocol wants, with samples not earlier than :attr:`next_sample`
            minus one.
        block : Block, optional
            The block these commands were decided in. The guard then also looks for
            forced offs (on-time, dose) up to ``block.stop - 1`` and stamps them with the
            block's timestamps. Without it, forced offs are found only up to the last
            command's sample and their stream times are extrapolated.
        stops : iterable of ChannelStop
            Channels to stop for the rest of the session (the M-wave's "no response"
            rule), each at its sample, in order with the commands (as an off).

        Returns
        -------
        list of StimCommand
            Commands within every limit. Interventions are recorded as
            :class:`Violation` (see :meth:`pop_violations`).

        Raises
        ------
        SafetyError
            If a command is earlier than a sample already processed (commands must come
            in sample order; replaying out of order would break every timing rule).
        """
        self._block = block
        try:
            items: list[StimCommand | ChannelStop] = [*commands, *stops]
            order = sorted(
                enumerate(items),
                key=lambda ic: (ic[1].sample, isinstance(ic[1], StimCommand)
                                and ic[1].current_ma > 0, ic[0])
            )
            out: list[StimCommand] = []
            for _, cmd in order:
                if isinstance(cmd, ChannelStop):
                    self._expire(cmd.sample - 1, out)
                    self._disable(cmd, out)
                    self._now = max(self._now, cmd.sample)
                    continue
                if cmd.sample < self._now:
                    raise SafetyError(
                        f"stimulation command for {cmd.muscle!r} at sample {cmd.sample} is "
                        f"earlier than sample {self._now} already processed; commands must "
                        f"come in sample order"
                    )
                if math.isfinite(cmd.stream_time):
                    self._ref = (cmd.sample, cmd.stream_time)
                wants_on = cmd.current_ma > 0
                self._expire(cmd.sample if wants_on else cmd.sample - 1, out)
                self._one(cmd, out)
                self._now = max(self._now, cmd.sample)
            if block is not None and block.n > 0:
                self._ref = (block.start, float(block.timestamps[0]))
                self._expire(block.stop - 1, out)
                self._now = max(self._now, block.stop - 1)
            return out
        finally:
            self._block = None

    def all_off(self, sample: int, stream_time: float) -> list[StimCommand]:
        """Off-commands for every channel (phase ``stop``); the guard records them.

        Use them to switch everything off, or call this after the driver's
        ``stop_all()`` so the guard knows the channels are off (rest starts at
        ``sample``). Never raises.
        """
        s = max(int(sample), self._now)
        out = []
        for ch in sorted(self._by_channel):
            st = self._by_channel[ch]
            if st.on:
                self._turn_off(st, s)
            out.append(StimCommand(
                muscle=st.cfg.muscle, channel=ch, current_ma=0.0,
                pulse_width_us=min(st.pulse_width_us, st.cfg.limits.max_pulse_width_us),
                frequency_hz=min(st.frequency_hz, st.cfg.limits.max_frequency_hz),
                sample=int(sample), stream_time=stream_time, phase="stop",
            ))
        self._now = max(self._now, s)
        return out

    def applied(self, commands: Iterable[StimCommand]) -> None:
        """Tell the guard what the device actually applied, when it differs from the output.

        Lower levels and offs are taken over (an off starts the channel's rest).

        Raises
        ------
        SafetyError
            If a command is for an unknown channel or is higher than what the guard let
            through (something bypassed the guard).
        """
        for cmd in commands:
            st = self._by_channel.get(cmd.channel)
            if st is None:
                raise SafetyError(f"applied command for unknown stimulator channel "
                                  f"{cmd.channel} ({cmd.muscle!r}); the guard was not built "
                                  f"with it")
            s = max(cmd.sample, self._now)
            if not cmd.current_ma > 0:
                if st.on:
                    self._turn_off(st, s)
                continue
            if not st.on or cmd.current_ma > st.level + _STEP_EPS_MA:
                raise SafetyError(
                    f"the device applied {cmd.current_ma:g} mA on channel {cmd.channel} "
                    f"({cmd.muscle!r}) at sample {cmd.sample}, more than the guard let "
                    f"through ({self.level(st.cfg.muscle):g} mA); something bypassed the guard"
                )
            if cmd.current_ma < st.level:
                self._set_level(st, s, cmd.current_ma, st.pulse_width_us, st.frequency_hz)

    # -- internals ----------------------------------------------------------------------
    def _time_at(self, sample: int) -> float:
        b = self._block
        if b is not None and b.start <= sample < b.stop:
            return float(b.timestamps[sample - b.start])
        s0, t0 = self._ref
        return t0 + (sample - s0) / self.fs

    def _violate(
        self, sample: int, stream_time: float, st_or_cmd: _State | StimCommand, rule: Rule,
        requested: float, allowed: float, unit: str, severity: Severity, message: str,
    ) -> Violation:
        if isinstance(st_or_cmd, _State):
            muscle, channel = st_or_cmd.cfg.muscle, st_or_cmd.cfg.channel
        else:
            muscle, channel = st_or_cmd.muscle, st_or_cmd.channel
        v = Violation(sample, stream_time, muscle, channel, rule, float(requested),
                      float(allowed), unit, severity, message)
        self._pending.append(v)
        self._all.append(v)
        if severity is Severity.STOP and self._stop is None:
            self._stop = v
        return v

    def _accrue(self, st: _State, sample: int) -> None:
        """Close the current constant-level segment at ``sample`` (charge bookkeeping)."""
        if st.on:
            st.charge_uc += st.charge_rate * (sample - st.seg_start) / self.fs
        st.seg_start = sample

    def _turn_off(self, st: _State, sample: int) -> None:
        self._accrue(st, sample)
        st.dose_samples += sample - st.on_since
        st.on = False
        st.level = 0.0
        st.off_since = sample

    def _set_level(self, st: _State, sample: int, level: float, pw: float, f: float) -> None:
        self._accrue(st, sample)
        if not st.on:
            st.on = True
            st.on_since = sample
        st.level, st.pulse_width_us, st.frequency_hz = level, pw, f

    def _off_command(self, st: _State, sample: int, stream_time: float,
                     phase: str) -> StimCommand:
        lim = st.cfg.limits
        return StimCommand(
            muscle=st.cfg.muscle, channel=st.cfg.channel, current_ma=0.0,
            pulse_width_us=min(st.pulse_width_us, lim.max_pulse_width_us),
            frequency_hz=min(st.frequency_hz, lim.max_frequency_hz),
            sample=sample, stream_time=stream_time, phase=phase,
        )

    def _stop_all(self, sample: int, stream_time: float, out: list[StimCommand]) -> None:
        for ch in sorted(self._by_channel):
            st = self._by_channel[ch]
            if st.on:
                self._turn_off(st, sample)
                out.append(self._off_command(st, sample, stream_time, "stop"))

    def _expiry(self, st: _State) -> tuple[int, str] | None:
        """The first sample at which an on channel must be forced off, and why.

        Why is ``"on_time"`` (max_on_time_s), ``"dose_s"`` (session on-time dose) or
        ``"dose_mc"`` (session charge dose). At equal samples the dose wins.
        """
        if not st.on:
            return None
        best = (st.on_since + st.max_on, "on_time")
        dose_end = st.on_since + self._dose_samples - st.dose_samples
        if dose_end <= best[0]:
            best = (dose_end, "dose_s")
        rate = st.charge_rate
        if self._dose_charge_uc is not None and rate > 0:
            left = self._dose_charge_uc - st.charge_uc
            span = left / rate * self.fs  # may be huge (or inf) for a tiny rate
            if span < best[0] - st.seg_start:
                charge_end = st.seg_start + max(0, int(math.floor(span)))
                if charge_end < best[0]:
                    best = (charge_end, "dose_mc")
        return best

    def _expire(self, upto: int, out: list[StimCommand]) -> None:
        """Force offs whose sample is <= ``upto``, in sample order (then channel order)."""
        while True:
            due = []
            for ch, st in sorted(self._by_channel.items()):
                x = self._expiry(st)
                if x is not None:
                    due.append((x[0], ch, x[1], st))
            if not due:
                return
            e, _, why, st = min(due, key=lambda d: (d[0], d[1]))
            if e > upto:
                return
            e = max(e, st.on_since)
            t = self._time_at(e)
            name = f"{st.cfg.muscle} (channel {st.cfg.channel})"
            if why == "on_time":
                on_s = (e - st.on_since) / self.fs
                self._turn_off(st, e)
                st.refused = True
                out.append(self._off_command(st, e, t, "stop"))
                self._violate(
                    e, t, st, Rule.MAX_ON_TIME, on_s, st.cfg.limits.max_on_time_s, "s",
                    Severity.LIMIT,
                    f"{name} was on for {on_s:g} s = max_on_time_s: switched off; it stays "
                    f"off until the protocol ends this train, then rests "
                    f"{st.cfg.limits.min_rest_s:g} s",
                )
                continue
            if why == "dose_s":
                req, allowed, unit = self.dose_used_s(st.cfg.muscle, e), \
                    self._dose_samples / self.fs, "s"
            else:  # "dose_mc": only ever due when a charge dose is set
                self._accrue(st, e)
                limit_uc = math.nan if self._dose_charge_uc is None else self._dose_charge_uc
                req, allowed, unit = st.charge_uc / 1000.0, limit_uc / 1000.0, "mC"
            self._stop_all(e, t, out)
            self._violate(
                e, t, st, Rule.SESSION_DOSE, req, allowed, unit, Severity.STOP,
                f"session dose spent: {name} reached {req:g} {unit} of {allowed:g} {unit}; "
                f"all stimulation switched off, the session is over",
            )

    def _disable(self, stop: ChannelStop, out: list[StimCommand]) -> None:
        """Stop ``stop.muscle``'s channel at ``stop.sample`` for the rest of the session."""
        st = self._by_muscle.get(stop.muscle)
        if st is None or st.disabled:
            return
        st.disabled = True
        s = max(stop.sample, self._now)
        if st.on:
            self._turn_off(st, s)
            out.append(self._off_command(st, s, stop.stream_time, "stop"))
        self._violate(s, stop.stream_time, st, Rule.NO_RESPONSE, 0.0, 0.0, "mA",
                      Severity.LIMIT, stop.message)

    def _one(self, cmd: StimCommand, out: list[StimCommand]) -> None:
        s, t = cmd.sample, cmd.stream_time
        st = self._by_channel.get(cmd.channel)
        if st is None or st.cfg.muscle != cmd.muscle:
            known = ", ".join(f"{x.cfg.muscle}={c}" for c, x in self._by_channel.items())
            self._violate(
                s, t, cmd, Rule.UNKNOWN_CHANNEL, cmd.current_ma, 0.0, "mA", Severity.STOP,
                f"command for {cmd.muscle!r} on channel {cmd.channel} does not match the "
                f"guard's muscles ({known}); stopping",
            )
            self._stop_all(s, t, out)
            return
        values = (cmd.current_ma, cmd.pulse_width_us, cmd.frequency_hz)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            self._violate(
                s, t, st, Rule.INVALID, cmd.current_ma, 0.0, "mA", Severity.STOP,
                f"command for {cmd.muscle} has invalid values (current {cmd.current_ma!r} mA,"
                f" pulse width {cmd.pulse_width_us!r} us, frequency {cmd.frequency_hz!r} Hz);"
                f" stopping",
            )
            self._stop_all(s, t, out)
            return
        if not cmd.current_ma > 0:
            st.refused = False
            if st.on:
                self._turn_off(st, s)
            lim = st.cfg.limits
            out.append(replace(
                cmd, current_ma=0.0,
                pulse_width_us=min(cmd.pulse_width_us, lim.max_pulse_width_us),
                frequency_hz=min(cmd.frequency_hz, lim.max_frequency_hz),
            ))
            return
        self._on(st, cmd, out)

    def _on(self, st: _State, cmd: StimCommand, out: list[StimCommand]) -> None:
        s, t = cmd.sample, cmd.stream_time
        lim = st.cfg.limits
        name = f"{cmd.muscle} (channel {cmd.channel})"
        if self._stop is not None:
            self._violate(
                s, t, st, Rule.STOPPED, cmd.current_ma, 0.0, "mA", Severity.STOP,
                f"{name}: refused, stimulation was stopped at sample {self._stop.sample} "
                f"({self._stop.rule.value})",
            )
            return
        if st.disabled:  # said once, when it was stopped
            return
        level_checks = (
            (Rule.CURRENT, cmd.current_ma, min(lim.max_current_ma, ceilings.MAX_CURRENT_MA), "mA",
             "max_current_ma"),
            (Rule.PULSE_WIDTH, cmd.pulse_width_us,
             min(lim.max_pulse_width_us, ceilings.MAX_PULSE_WIDTH_US), "us", "max_pulse_width_us"),
            (Rule.FREQUENCY, cmd.frequency_hz, min(lim.max_frequency_hz, ceilings.MAX_FREQUENCY_HZ),
             "Hz", "max_frequency_hz"),
            (Rule.CHARGE, cmd.charge_uc,
             min(lim.max_charge_uc, ceilings.MAX_CHARGE_PER_PHASE_UC) * (1 + _CHARGE_RTOL), "uC",
             "max_charge_uc"),
        )
        for rule, value, allowed, unit, key in level_checks:
            if value > allowed:
                self._violate(
                    s, t, st, rule, value, allowed, unit, Severity.STOP,
                    f"{name}: {value:g} {unit} requested, above {key} = {allowed:g} {unit}; "
                    f"the protocol or config is wrong, stopping all stimulation",
                )
                self._stop_all(s, t, out)
                return
        if not self.co_stimulation:
            busy = sorted(a for a in st.antagonists if self._by_muscle[a].on)
            if busy:
                self._violate(
                    s, t, st, Rule.INTERLOCK, cmd.current_ma, 0.0, "mA", Severity.STOP,
                    f"{name}: refused, its antagonist {busy[0]} is on and co_stimulation is "
                    f"off; the protocol is wrong, stopping all stimulation",
                )
                self._stop_all(s, t, out)
                return
        if st.refused:  # the rest of a train refused or cut off: said once, at the time
            return
        if s < self._first:
            st.refused = True
            self._violate(
                s, t, st, Rule.RATE_UNCHECKED, s / self.fs, self._first / self.fs, "s",
                Severity.LIMIT,
                f"{name}: refused at {s / self.fs:g} s, before the EMG stream's sample rate "
                f"is checked (its first {self._first / self.fs:g} s, [safety] "
                "wait_for_rate); the channel stays off until the protocol ends this train",
            )
            return
        if not st.on and st.off_since is not None and s < st.off_since + st.min_rest:
            st.refused = True
            rested = (s - st.off_since) / self.fs
            self._violate(
                s, t, st, Rule.MIN_REST, rested, lim.min_rest_s, "s", Severity.LIMIT,
                f"{name}: refused, off for only {rested:g} s of min_rest_s = "
                f"{lim.min_rest_s:g} s; the channel stays off until the protocol ends "
                "this train",
            )
            return
        prev = st.level if st.on else 0.0
        allowed = prev + min(lim.max_step_ma, ceilings.MAX_STEP_MA)
        current = cmd.current_ma
        if current > allowed:
            if current - allowed > _STEP_EPS_MA:
                self._violate(
                    s, t, st, Rule.RAMP_STEP, current, allowed, "mA", Severity.LIMIT,
                    f"{name}: step from {prev:g} to {current:g} mA clipped to {allowed:g} mA "
                    f"(max_step_ma = {lim.max_step_ma:g})",
                )
            current = allowed
        self._set_level(st, s, current, cmd.pulse_width_us, cmd.frequency_hz)
        out.append(replace(cmd, current_ma=current))
