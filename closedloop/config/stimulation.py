"""Typed stimulation settings: per-muscle parameters and limits, protocol, session safety.

Each dataclass reads itself from a TOML table with ``from_table`` (through
:class:`~closedloop.config.table.Table`, so every bad value is reported with file, key,
value and allowed range) and checks itself against the absolute ceilings in
:mod:`closedloop.config.ceilings` when constructed, so a value above a ceiling cannot
exist even when a dataclass is built directly in code.

Cross-checks that need several tables at once (a stimulation current above its own
channel limit, two muscles on one stimulator channel, a protocol muscle without
stimulation parameters...) live in :func:`validate_stimulation`, which the config
loader calls once every table has been read.

TOML layout
-----------
::

    [[muscles]]
    name = "biceps"           # name, channel, antagonist: read by closedloop.config
    [muscles.stim]            # StimParams
    channel = 1
    current_ma = 20.0
    [muscles.limits]          # ChannelLimits
    max_current_ma = 40.0
    [protocol]                # ProtocolSettings
    kind = "triggered_assist"
    agonist = "biceps"
    [protocol.reciprocal]     # ReciprocalSettings
    [protocol.trials]         # TrialSettings
    [safety]                  # SafetySettings
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from closedloop.config import ceilings
from closedloop.config.table import Table
from closedloop.errors import ConfigError

PROTOCOL_KINDS = ("triggered_assist", "reciprocal", "cued_trials")
TRIAL_PATTERNS = ("assist", "reciprocal")


def _above(where: str, key: str, value: float, ceiling: float, unit: str) -> None:
    if not (math.isfinite(value) and value <= ceiling):
        raise ConfigError(
            f"{where or '<code>'}: {key} = {value!r} {unit} is above the absolute ceiling "
            f"of {ceiling:g} {unit} (closedloop/config/ceilings.py); use at most {ceiling:g}"
        )


def _positive(where: str, key: str, value: float, lo: float = 0.0, unit: str = "") -> None:
    if not (math.isfinite(value) and value > lo):
        raise ConfigError(f"{where or '<code>'}: {key} = {value!r} {unit} must be > {lo:g}")


@dataclass(frozen=True)
class StimParams:
    """What one muscle's stimulation should be (a clinician's setting per patient).

    Parameters
    ----------
    channel : int
        Stimulator output channel, 1..8.
    current_ma : float
        Plateau current amplitude, mA.
    pulse_width_us : float
        Pulse width (one phase), us.
    frequency_hz : float
        Pulse frequency, Hz.
    ramp_up_s, ramp_down_s : float
        Ramp durations, s. The ramp is a staircase with one step per protocol
        ``ramp_step_s``; a ramp too short for the channel's ``max_step_ma`` is rejected by
        :func:`validate_stimulation`.
    on_time_s : float
        Plateau duration, s.
    rest_time_s : float
        Time after the stimulation ends during which new triggers are ignored, s.
    where : str
        Where the table came from (for error messages); not part of equality.
    """

    channel: int
    current_ma: float
    pulse_width_us: float = 250.0
    frequency_hz: float = 35.0
    ramp_up_s: float = 0.5
    ramp_down_s: float = 0.5
    on_time_s: float = 5.0
    rest_time_s: float = 5.0
    where: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = self.where
        if not 1 <= self.channel <= ceilings.N_CHANNELS:
            raise ConfigError(f"{w or '<code>'}: channel = {self.channel!r} must be 1..8")
        _positive(w, "current_ma", self.current_ma, unit="mA")
        _above(w, "current_ma", self.current_ma, ceilings.MAX_CURRENT_MA, "mA")
        _positive(w, "pulse_width_us", self.pulse_width_us, unit="us")
        _above(w, "pulse_width_us", self.pulse_width_us, ceilings.MAX_PULSE_WIDTH_US, "us")
        _positive(w, "frequency_hz", self.frequency_hz, unit="Hz")
        _above(w, "frequency_hz", self.frequency_hz, ceilings.MAX_FREQUENCY_HZ, "Hz")
        _above(w, "charge per phase (current_ma x pulse_width_us / 1000)", self.charge_uc,
               ceilings.MAX_CHARGE_PER_PHASE_UC, "uC")
        _positive(w, "on_time_s", self.on_time_s, unit="s")
        _above(w, "on_time_s", self.on_time_s, ceilings.MAX_ON_TIME_S, "s")
        for key in ("ramp_up_s", "ramp_down_s", "rest_time_s"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v >= 0.0):
                raise ConfigError(f"{w or '<code>'}: {key} = {v!r} s must be >= 0")

    @property
    def charge_uc(self) -> float:
        """Charge per phase at the plateau current, uC."""
        return self.current_ma * self.pulse_width_us / 1000.0

    @property
    def train_s(self) -> float:
        """Nominal duration of one stimulation: ramp up + plateau + ramp down, s."""
        return self.ramp_up_s + self.on_time_s + self.ramp_down_s

    @classmethod
    def from_table(cls, t: Table) -> StimParams:
        """Read ``[muscles.stim]``. ``channel`` and ``current_ma`` are required."""
        out = cls(
            channel=t.int("channel", lo=1, hi=ceilings.N_CHANNELS),
            current_ma=t.float("current_ma", lo=0.0, lo_open=True, hi=ceilings.MAX_CURRENT_MA),
            pulse_width_us=t.float("pulse_width_us", cls.pulse_width_us,
                                   lo=ceilings.MIN_PULSE_WIDTH_US, hi=ceilings.MAX_PULSE_WIDTH_US),
            frequency_hz=t.float("frequency_hz", cls.frequency_hz,
                                 lo=ceilings.MIN_FREQUENCY_HZ, hi=ceilings.MAX_FREQUENCY_HZ),
            ramp_up_s=t.float("ramp_up_s", cls.ramp_up_s, lo=0.0, hi=10.0),
            ramp_down_s=t.float("ramp_down_s", cls.ramp_down_s, lo=0.0, hi=10.0),
            on_time_s=t.float("on_time_s", cls.on_time_s, lo=0.0, lo_open=True,
                              hi=ceilings.MAX_ON_TIME_S),
            rest_time_s=t.float("rest_time_s", cls.rest_time_s, lo=ceilings.MIN_REST_FLOOR_S,
                                hi=600.0),
            where=t.where(),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class ChannelLimits:
    """Per-channel limits the safety guard enforces (set per patient, below the ceilings).

    Parameters
    ----------
    max_current_ma : float
        Highest current, mA.
    max_pulse_width_us : float
        Longest pulse width, us.
    max_frequency_hz : float
        Highest pulse frequency, Hz.
    max_charge_uc : float
        Highest charge per phase (current x pulse width), uC.
    max_on_time_s : float
        Longest continuous stimulation, s (ramps included).
    min_rest_s : float
        Shortest off-time between two stimulations of the channel, s.
    max_step_ma : float
        Largest current increase between two consecutive commands, mA.
    where : str
        Where the table came from (for error messages); not part of equality.
    """

    max_current_ma: float
    max_pulse_width_us: float = 300.0
    max_frequency_hz: float = 50.0
    max_charge_uc: float = ceilings.MAX_CHARGE_PER_PHASE_UC
    max_on_time_s: float = 10.0
    min_rest_s: float = 3.0
    max_step_ma: float = 2.0
    where: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = self.where
        for key, ceiling, unit in (
            ("max_current_ma", ceilings.MAX_CURRENT_MA, "mA"),
            ("max_pulse_width_us", ceilings.MAX_PULSE_WIDTH_US, "us"),
            ("max_frequency_hz", ceilings.MAX_FREQUENCY_HZ, "Hz"),
            ("max_charge_uc", ceilings.MAX_CHARGE_PER_PHASE_UC, "uC"),
            ("max_on_time_s", ceilings.MAX_ON_TIME_S, "s"),
            ("max_step_ma", ceilings.MAX_STEP_MA, "mA"),
        ):
            v = getattr(self, key)
            _positive(w, key, v, unit=unit)
            _above(w, key, v, ceiling, unit)
        if not (math.isfinite(self.min_rest_s) and self.min_rest_s >= ceilings.MIN_REST_FLOOR_S):
            raise ConfigError(
                f"{w or '<code>'}: min_rest_s = {self.min_rest_s!r} s is below the absolute "
                f"floor of {ceilings.MIN_REST_FLOOR_S:g} s (closedloop/config/ceilings.py)"
            )

    @classmethod
    def from_table(cls, t: Table) -> ChannelLimits:
        """Read ``[muscles.limits]``. ``max_current_ma`` is required.

        ``max_charge_uc`` defaults to ``max_current_ma x max_pulse_width_us / 1000``
        capped at the charge ceiling (i.e. no tighter than the other two limits).
        """
        cur = t.float("max_current_ma", lo=0.0, lo_open=True, hi=ceilings.MAX_CURRENT_MA)
        pw = t.float("max_pulse_width_us", cls.max_pulse_width_us,
                     lo=ceilings.MIN_PULSE_WIDTH_US, hi=ceilings.MAX_PULSE_WIDTH_US)
        charge_default = min(cur * pw / 1000.0, ceilings.MAX_CHARGE_PER_PHASE_UC)
        out = cls(
            max_current_ma=cur,
            max_pulse_width_us=pw,
            max_frequency_hz=t.float("max_frequency_hz", cls.max_frequency_hz,
                                     lo=ceilings.MIN_FREQUENCY_HZ, hi=ceilings.MAX_FREQUENCY_HZ),
            max_charge_uc=t.float("max_charge_uc", charge_default, lo=0.0, lo_open=True,
                                  hi=ceilings.MAX_CHARGE_PER_PHASE_UC),
            max_on_time_s=t.float("max_on_time_s", cls.max_on_time_s, lo=0.0, lo_open=True,
                                  hi=ceilings.MAX_ON_TIME_S),
            min_rest_s=t.float("min_rest_s", cls.min_rest_s, lo=ceilings.MIN_REST_FLOOR_S,
                               hi=600.0),
            max_step_ma=t.float("max_step_ma", cls.max_step_ma, lo=0.0, lo_open=True,
                                hi=ceilings.MAX_STEP_MA),
            where=t.where(),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class ReciprocalSettings:
    """``[protocol.reciprocal]``: timing of the antagonist phase.

    Parameters
    ----------
    gap_s : float
        Time from the agonist's last off to the antagonist's first step, s. Negative
        values (overlap) are only allowed with ``co_stimulation = true``.
    """

    gap_s: float = 0.2

    @classmethod
    def from_table(cls, t: Table, *, co_stimulation: bool) -> ReciprocalSettings:
        gap = t.float("gap_s", cls.gap_s, lo=-ceilings.MAX_ON_TIME_S, hi=10.0)
        if gap < 0.0 and not co_stimulation:
            raise t.error("gap_s", gap, "a number >= 0 (an overlap needs co_stimulation = "
                          "true in [protocol])")
        t.finish()
        return cls(gap_s=gap)


@dataclass(frozen=True)
class TrialSettings:
    """``[protocol.trials]``: the work/rest cycle of cued trials.

    Parameters
    ----------
    n_trials : int
        Number of cues.
    first_cue_s : float
        Delay from the first block the protocol sees to the first cue, s.
    work_s, rest_s : float
        Work period (starts with the cue) and rest period, s. One trial lasts
        ``work_s + rest_s``.
    response_window_s : float
        After the cue, an agonist onset within this time is a hit and triggers
        stimulation; no onset in time is a miss. At most ``work_s``.
    pattern : str
        Stimulation on a hit: ``assist`` (agonist) or ``reciprocal`` (agonist, then
        antagonist, with the ``[protocol.reciprocal]`` gap).
    """

    n_trials: int = 10
    first_cue_s: float = 3.0
    work_s: float = 10.0
    rest_s: float = 10.0
    response_window_s: float = 3.0
    pattern: str = "assist"

    @classmethod
    def from_table(cls, t: Table) -> TrialSettings:
        work = t.float("work_s", cls.work_s, lo=1.0, hi=120.0)
        out = cls(
            n_trials=t.int("n_trials", cls.n_trials, lo=1, hi=1000),
            first_cue_s=t.float("first_cue_s", cls.first_cue_s, lo=0.0, hi=600.0),
            work_s=work,
            rest_s=t.float("rest_s", cls.rest_s, lo=0.0, hi=600.0),
            response_window_s=t.float("response_window_s", cls.response_window_s, lo=0.0,
                                      lo_open=True, hi=work),
            pattern=t.str("pattern", cls.pattern, choices=TRIAL_PATTERNS),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class ProtocolSettings:
    """``[protocol]``: what triggers stimulation and in which pattern.

    Parameters
    ----------
    kind : str
        ``triggered_assist``: an agonist onset triggers one ramp-plateau-ramp of the
        agonist. ``reciprocal``: the same, followed (after ``reciprocal.gap_s``) by one of
        the antagonist. ``cued_trials``: cues on a work/rest cycle; an onset within the
        response window triggers ``trials.pattern``.
    agonist : str
        Muscle whose onset triggers (and which is stimulated first).
    antagonist : str or None
        Its antagonist: stimulated second (reciprocal), watched by the gate.
    co_contraction_gate : bool
        Trigger only if the antagonist's envelope stayed below its on-threshold over
        ``gate_window_s`` up to and including the onset sample.
    gate_window_s : float
        Length of that window, s.
    co_stimulation : bool
        Allow agonist and antagonist to be on at once (negative reciprocal gap; the
        safety guard's antagonist interlock is off). Default false.
    end_on_offset : bool
        An agonist offset during ramp-up or plateau ramps the agonist down early (the
        patient stopped trying).
    ramp_step_s : float
        Interval between two current steps of a ramp, s.
    reciprocal : ReciprocalSettings
    trials : TrialSettings
    """

    kind: str = "triggered_assist"
    agonist: str = ""
    antagonist: str | None = None
    co_contraction_gate: bool = False
    gate_window_s: float = 0.1
    co_stimulation: bool = False
    end_on_offset: bool = False
    ramp_step_s: float = 0.05
    reciprocal: ReciprocalSettings = field(default_factory=ReciprocalSettings)
    trials: TrialSettings = field(default_factory=TrialSettings)
    where: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = self.where or "[protocol]"
        if self.kind not in PROTOCOL_KINDS:
            raise ConfigError(f"{w}: kind = {self.kind!r}; expected one of {PROTOCOL_KINDS}")
        if self.reciprocal.gap_s < 0.0 and not self.co_stimulation:
            raise ConfigError(
                f"{w}: reciprocal.gap_s = {self.reciprocal.gap_s:g} overlaps agonist and "
                f"antagonist; that needs co_stimulation = true"
            )
        if self.trials.pattern not in TRIAL_PATTERNS:
            raise ConfigError(f"{w}: trials.pattern = {self.trials.pattern!r}; expected one "
                              f"of {TRIAL_PATTERNS}")

    @property
    def stimulated(self) -> tuple[str, ...]:
        """Muscles this protocol may stimulate, in order."""
        both = self.kind == "reciprocal" or (
            self.kind == "cued_trials" and self.trials.pattern == "reciprocal"
        )
        if both and self.antagonist:
            return (self.agonist, self.antagonist)
        return (self.agonist,)

    @classmethod
    def from_table(cls, t: Table, muscle_names: Collection[str]) -> ProtocolSettings:
        """Read ``[protocol]``; ``muscle_names`` are the names of all ``[[muscles]]``."""
        names = list(muscle_names)
        kind = t.str("kind", cls.kind, choices=PROTOCOL_KINDS)
        agonist = t.str("agonist", choices=names)
        antagonist = t.str("antagonist", None, choices=names, allow_none=True)
        if antagonist == agonist:
            raise t.error("antagonist", antagonist, f"a muscle other than the agonist "
                          f"{agonist!r}")
        gate = t.bool("co_contraction_gate", cls.co_contraction_gate)
        co_stim = t.bool("co_stimulation", cls.co_stimulation)
        trials = TrialSettings.from_table(t.table("trials", {}))
        recip = ReciprocalSettings.from_table(t.table("reciprocal", {}), co_stimulation=co_stim)
        needs = []
        if kind == "reciprocal":
            needs.append("kind = 'reciprocal'")
        if kind == "cued_trials" and trials.pattern == "reciprocal":
            needs.append("trials.pattern = 'reciprocal'")
        if gate:
            needs.append("co_contraction_gate = true")
        if needs and antagonist is None:
            raise t.error("antagonist", None, "a muscle name: " + " and ".join(needs)
                          + " needs an antagonist; one of " + ", ".join(map(repr, names)))
        out = cls(
            kind=kind,
            agonist=agonist,
            antagonist=antagonist,
            co_contraction_gate=gate,
            gate_window_s=t.float("gate_window_s", cls.gate_window_s, lo=0.005, hi=2.0),
            co_stimulation=co_stim,
            end_on_offset=t.bool("end_on_offset", cls.end_on_offset),
            ramp_step_s=t.float("ramp_step_s", cls.ramp_step_s, lo=0.01, hi=0.5),
            reciprocal=recip,
            trials=trials,
            where=t.where(),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class SafetySettings:
    """``[safety]``: session-wide limits.

    Parameters
    ----------
    session_dose_s : float
        Largest cumulative on-time of any one channel in the session, s. Once a channel
        reaches it, the guard switches everything off and refuses all further
        stimulation (the session is over).
    session_charge_mc : float or None
        Optional: largest cumulative delivered charge of any one channel (mC, one phase
        per pulse). ``None`` (absent) disables this check; the time dose still applies.
    """

    session_dose_s: float = 1800.0
    session_charge_mc: float | None = None

    def __post_init__(self) -> None:
        _positive("", "session_dose_s", self.session_dose_s, unit="s")
        _above("", "session_dose_s", self.session_dose_s, ceilings.MAX_SESSION_DOSE_S, "s")
        if self.session_charge_mc is not None:
            _positive("", "session_charge_mc", self.session_charge_mc, unit="mC")
            _above("", "session_charge_mc", self.session_charge_mc,
                   ceilings.MAX_SESSION_CHARGE_MC, "mC")

    @classmethod
    def from_table(cls, t: Table) -> SafetySettings:
        out = cls(
            session_dose_s=t.float("session_dose_s", cls.session_dose_s, lo=0.0,
                                   lo_open=True, hi=ceilings.MAX_SESSION_DOSE_S),
            session_charge_mc=t.float("session_charge_mc", None, lo=0.0, lo_open=True,
                                      hi=ceilings.MAX_SESSION_CHARGE_MC, allow_none=True),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class MuscleStim:
    """One stimulated muscle: its name, parameters, limits and (optional) antagonist."""

    name: str
    stim: StimParams
    limits: ChannelLimits
    antagonist: str | None = None


def min_ramp_s(current_ma: float, max_step_ma: float, ramp_step_s: float) -> float:
    """Shortest ramp reaching ``current_ma`` in steps of at most ``max_step_ma``."""
    return math.ceil(current_ma / max_step_ma - 1e-9) * ramp_step_s


def validate_stimulation(
    muscles: Mapping[str, MuscleStim],
    protocol: ProtocolSettings,
    safety: SafetySettings,
) -> None:
    """Cross-check stimulation settings that span several tables.

    Parameters
    ----------
    muscles : mapping of str to MuscleStim
        Every muscle that has a ``[muscles.stim]`` table, by name.
    protocol : ProtocolSettings
    safety : SafetySettings

    Raises
    ------
    ConfigError
        Naming the table, the key, the value and what is allowed, when: a stimulation
        parameter is above its own channel limit (current, pulse width, frequency,
        charge per phase); ramp + plateau is longer than ``max_on_time_s``;
        ``rest_time_s`` is shorter than ``min_rest_s``; a ramp is too short for
        ``max_step_ma``; two muscles share a stimulator channel; a muscle the protocol
        stimulates has no ``[muscles.stim]``; cued trials do not fit their work/rest
        cycle; the plateau alone exceeds the session dose.
    """
    by_channel: dict[int, str] = {}
    for name, m in muscles.items():
        p, lim = m.stim, m.limits
        w = p.where or f"muscle {name!r} [stim]"
        wl = lim.where or f"muscle {name!r} [limits]"
        checks = (
            ("current_ma", p.current_ma, "max_current_ma", lim.max_current_ma, "mA"),
            ("pulse_width_us", p.pulse_width_us, "max_pulse_width_us",
             lim.max_pulse_width_us, "us"),
            ("frequency_hz", p.frequency_hz, "max_frequency_hz", lim.max_frequency_hz, "Hz"),
        )
        for key, value, lkey, limit, unit in checks:
            if value > limit:
                raise ConfigError(
                    f"{w}.{key} = {value:g} {unit} is above {wl}.{lkey} = {limit:g} {unit}; "
                    f"lower {key} to at most {limit:g} or raise the limit"
                )
        if p.charge_uc > lim.max_charge_uc + 1e-9:
            raise ConfigError(
                f"{w}: current_ma x pulse_width_us = {p.current_ma:g} mA x "
                f"{p.pulse_width_us:g} us = {p.charge_uc:g} uC per phase is above "
                f"{wl}.max_charge_uc = {lim.max_charge_uc:g} uC; lower the current or the "
                f"pulse width"
            )
        if p.train_s > lim.max_on_time_s + 1e-9:
            raise ConfigError(
                f"{w}: ramp_up_s + on_time_s + ramp_down_s = {p.train_s:g} s is longer than "
                f"{wl}.max_on_time_s = {lim.max_on_time_s:g} s; shorten on_time_s to at "
                f"most {lim.max_on_time_s - p.ramp_up_s - p.ramp_down_s:g} s"
            )
        if p.rest_time_s < lim.min_rest_s - 1e-9:
            raise ConfigError(
                f"{w}.rest_time_s = {p.rest_time_s:g} s is shorter than {wl}.min_rest_s = "
                f"{lim.min_rest_s:g} s; use rest_time_s >= {lim.min_rest_s:g}"
            )
        need = min_ramp_s(p.current_ma, lim.max_step_ma, protocol.ramp_step_s)
        if p.ramp_up_s < need - 1e-9:
            raise ConfigError(
                f"{w}.ramp_up_s = {p.ramp_up_s:g} s is too short to reach current_ma = "
                f"{p.current_ma:g} mA in steps of at most {wl}.max_step_ma = "
                f"{lim.max_step_ma:g} mA every protocol.ramp_step_s = "
                f"{protocol.ramp_step_s:g} s; use ramp_up_s >= {need:g}"
            )
        if p.on_time_s > safety.session_dose_s:
            raise ConfigError(
                f"{w}.on_time_s = {p.on_time_s:g} s is longer than the whole "
                f"[safety] session_dose_s = {safety.session_dose_s:g} s"
            )
        if p.channel in by_channel:
            raise ConfigError(
                f"{w}.channel = {p.channel} is already used by muscle "
                f"{by_channel[p.channel]!r}; every muscle needs its own stimulator channel"
            )
        by_channel[p.channel] = name

    pw = protocol.where or "[protocol]"
    for role, name in (("agonist", protocol.agonist), ("antagonist", protocol.antagonist)):
        if name is not None and name in protocol.stimulated and name not in muscles:
            have = ", ".join(map(repr, muscles)) or "none"
            raise ConfigError(
                f"{pw}.{role} = {name!r} is stimulated by kind = {protocol.kind!r} but has "
                f"no [muscles.stim] table; add one (muscles with stimulation: {have})"
            )
    if protocol.kind == "cued_trials":
        tr = protocol.trials
        trains = [muscles[n].stim.train_s for n in protocol.stimulated]
        stim_s = sum(trains) + (max(protocol.reciprocal.gap_s, 0.0) if len(trains) > 1 else 0.0)
        rest_need = max(muscles[n].limits.min_rest_s for n in protocol.stimulated)
        cycle = tr.work_s + tr.rest_s
        if tr.response_window_s + stim_s + rest_need > cycle + 1e-9:
            raise ConfigError(
                f"{pw}.trials: response_window_s + stimulation ({stim_s:g} s) + min_rest_s "
                f"({rest_need:g} s) = {tr.response_window_s + stim_s + rest_need:g} s does "
                f"not fit in work_s + rest_s = {cycle:g} s, so the guard would refuse the "
                f"next trial's stimulation; lengthen rest_s or shorten the stimulation"
            )
