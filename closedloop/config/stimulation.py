"""Typed stimulation settings: per-muscle parameters and limits, protocol, session safety.

Every field declares its range once (:mod:`closedloop.config.schema`); the bounds that
are absolute ceilings or floors come from :mod:`closedloop.config.ceilings` and the
messages say so. The check runs whenever an object is built, from a config file or
in code, so a value above a ceiling cannot exist.

Rules that need several tables at once (a stimulation current above its own channel
limit, two muscles on one stimulator channel, a protocol muscle without stimulation
parameters...) live in :func:`validate_stimulation`, which the config loader calls once
every table has been read.

TOML layout
-----------
::

    [[muscles]]
    name = "biceps"           # name, channel, antagonist: closedloop.config.model
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

import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ValidationInfo, model_validator
from typing_extensions import Self

from closedloop.config import ceilings
from closedloop.config.schema import Flag, Range, Text, invalid, problem, settings
from closedloop.errors import ConfigError

TrialPattern = Literal["assist", "reciprocal"]
TRIAL_PATTERNS: tuple[str, ...] = typing.get_args(TrialPattern)

#: Stimulation amplitude and timing, bounded by the absolute ceilings.
Current = Annotated[float, Range(0.0, ceilings.MAX_CURRENT_MA, lo_open=True, limit="ceiling")]
PulseWidth = Annotated[float, Range(ceilings.MIN_PULSE_WIDTH_US, ceilings.MAX_PULSE_WIDTH_US,
                                    limit="ceiling")]
Frequency = Annotated[float, Range(ceilings.MIN_FREQUENCY_HZ, ceilings.MAX_FREQUENCY_HZ,
                                   limit="ceiling")]
OnTime = Annotated[float, Range(0.0, ceilings.MAX_ON_TIME_S, lo_open=True, limit="ceiling")]
Rest = Annotated[float, Range(ceilings.MIN_REST_FLOOR_S, 600.0, limit="floor")]
Ramp = Annotated[float, Range(0.0, 10.0)]


@settings
class StimParams:
    """``[muscles.stim]``: what one muscle's stimulation should be (a clinician's setting
    per patient).

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

    Attributes
    ----------
    where : str
        Where the table was read (``file: muscles[0].stim``), for messages; empty for
        settings built in code. Not a field: not in a config file, equality or ``asdict``.
    """

    channel: Annotated[int, Range(1, ceilings.N_CHANNELS)]
    current_ma: Current
    pulse_width_us: PulseWidth = 250.0
    frequency_hz: Frequency = 35.0
    ramp_up_s: Ramp = 0.5
    ramp_down_s: Ramp = 0.5
    on_time_s: OnTime = 5.0
    rest_time_s: Rest = 5.0
    where: ClassVar[str] = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.charge_uc > ceilings.MAX_CHARGE_PER_PHASE_UC:
            raise problem("", f"charge per phase (current_ma x pulse_width_us / 1000) = "
                          f"{self.charge_uc:g} uC is above the absolute ceiling of "
                          f"{ceilings.MAX_CHARGE_PER_PHASE_UC:g} uC "
                          f"(closedloop/config/ceilings.py); lower the current or the "
                          f"pulse width")
        return self

    @property
    def charge_uc(self) -> float:
        """Charge per phase at the plateau current, uC."""
        return self.current_ma * self.pulse_width_us / 1000.0

    @property
    def train_s(self) -> float:
        """Nominal duration of one stimulation: ramp up + plateau + ramp down, s."""
        return self.ramp_up_s + self.on_time_s + self.ramp_down_s


@settings
class ChannelLimits:
    """``[muscles.limits]``: per-channel limits the safety guard enforces (set per
    patient, below the ceilings).

    Parameters
    ----------
    max_current_ma : float
        Highest current, mA.
    max_pulse_width_us : float
        Longest pulse width, us.
    max_frequency_hz : float
        Highest pulse frequency, Hz.
    max_charge_uc : float
        Highest charge per phase (current x pulse width), uC. In a config file it
        defaults to ``max_current_ma x max_pulse_width_us / 1000`` capped at the ceiling
        (no tighter than the other two limits); in code, to the ceiling.
    max_on_time_s : float
        Longest continuous stimulation, s (ramps included).
    min_rest_s : float
        Shortest off-time between two stimulations of the channel, s.
    max_step_ma : float
        Largest current increase between two consecutive commands, mA.

    Attributes
    ----------
    where : str
        Where the table was read, for messages (see :class:`StimParams`).
    """

    max_current_ma: Current
    max_pulse_width_us: PulseWidth = 300.0
    max_frequency_hz: Frequency = 50.0
    max_charge_uc: Annotated[float, Range(0.0, ceilings.MAX_CHARGE_PER_PHASE_UC, lo_open=True,
                                          limit="ceiling")] = ceilings.MAX_CHARGE_PER_PHASE_UC
    max_on_time_s: OnTime = 10.0
    min_rest_s: Rest = 3.0
    max_step_ma: Annotated[float, Range(0.0, ceilings.MAX_STEP_MA, lo_open=True,
                                        limit="ceiling")] = 2.0
    where: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _charge_from_current_and_width(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "max_charge_uc" not in data:
            cur = data.get("max_current_ma")
            pw = data.get("max_pulse_width_us", cls.__dataclass_fields__[
                "max_pulse_width_us"].default)
            if _finite(cur) and _finite(pw):
                charge = min(cur * pw / 1000.0, ceilings.MAX_CHARGE_PER_PHASE_UC)
                data = {**data, "max_charge_uc": charge}
        return data


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@settings
class ReciprocalSettings:
    """``[protocol.reciprocal]``: timing of the antagonist phase.

    Parameters
    ----------
    gap_s : float
        Time from the agonist's last off to the antagonist's first step, s. Negative
        values (overlap) are only allowed with ``co_stimulation = true`` in
        ``[protocol]``.
    """

    gap_s: Annotated[float, Range(-ceilings.MAX_ON_TIME_S, 10.0)] = 0.2


@settings
class TrialSettings:
    """``[protocol.trials]``: the work/rest cycle of cued trials.

    Parameters
    ----------
    n_trials : int
        Number of cues.
    first_cue_s : float
        Delay from the first block the protocol sees to the first cue, s. Onsets in the
        stream's first 2 s start nothing (``[safety] wait_for_rate``), so a cue sooner
        than that has a shorter response window in practice.
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

    n_trials: Annotated[int, Range(1, 1000)] = 10
    first_cue_s: Annotated[float, Range(0.0, 600.0)] = 3.0
    work_s: Annotated[float, Range(1.0, 120.0)] = 10.0
    rest_s: Annotated[float, Range(0.0, 600.0)] = 10.0
    response_window_s: Annotated[float, Range(0.0, 120.0, lo_open=True)] = 3.0
    pattern: TrialPattern = "assist"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.response_window_s > self.work_s:
            raise invalid("response_window_s", self.response_window_s,
                          f"a number > 0 and <= work_s = {self.work_s:g}")
        return self


FatigueAction = Literal["warn", "lower", "end"]


@settings
class MWaveRules:
    """``[protocol.mwave]``: what the loop does with the evoked response (M-wave) it
    measures on every stimulated muscle (:mod:`closedloop.stim.mwave_rules`). Both rules
    are off by default: a program that stimulates below the motor threshold (sensory)
    has no M-wave by design.

    Parameters
    ----------
    no_response_s : float or None
        A channel stimulated at ``no_response_min_ma`` or more whose M-wave stays absent
        for this long is stopped by the safety guard for the rest of the session ("no
        evoked response at this current: check the electrodes"; the warning comes with
        the first absent record). None: off.
    no_response_min_ma : float
        Records at lower currents (below the motor threshold found with ``stim-test``)
        neither count as absent nor as present.
    fatigue_percent : float or None
        An M-wave amplitude below this % of the session's first record at the same
        level (current and pulse width) is fatigue: warn, and ``fatigue_action``.
        None: off.
    fatigue_action : str
        ``warn`` only; ``lower``: the protocol lowers that muscle's current by
        ``lower_percent`` (each time, never raising it again); ``end``: the protocol
        ends the running repetition (ramps down).
    lower_percent : float
        How much ``lower`` takes off, % of the current.
    skip_ms, window_ms, baseline_ms, every_s, present_snr : float
        How the M-wave is measured, for every stimulating session (rules on or off;
        :class:`closedloop.core.evoked.EvokedSettings`, whose defaults these are): the
        window from ``skip_ms`` after each pulse (the stimulus artifact comes first) to
        ``window_ms`` (or the next pulse), the level over ``baseline_ms`` before the
        pulse subtracted, one averaged record per muscle and level every ``every_s``,
        and a response present when its peak-to-peak is ``present_snr`` times the
        noise of the average. A distal muscle or a long nerve path answers later:
        widen ``window_ms``.
    """

    no_response_s: Annotated[float, Range(0.5, 60.0)] | None = None
    no_response_min_ma: Annotated[float, Range(0.0, ceilings.MAX_CURRENT_MA)] = 0.0
    fatigue_percent: Annotated[float, Range(10.0, 100.0, lo_open=True)] | None = None
    fatigue_action: FatigueAction = "warn"
    lower_percent: Annotated[float, Range(1.0, 50.0)] = 10.0
    skip_ms: Annotated[float, Range(0.0, 20.0)] = 2.0
    window_ms: Annotated[float, Range(2.0, 100.0)] = 25.0
    baseline_ms: Annotated[float, Range(0.5, 20.0)] = 2.0
    every_s: Annotated[float, Range(0.1, 60.0)] = 0.5
    present_snr: Annotated[float, Range(2.0, 1000.0)] = 15.0

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        if self.skip_ms >= self.window_ms:
            raise invalid("skip_ms", self.skip_ms,
                          f"a number below window_ms = {self.window_ms:g} (the window "
                          "starts skip_ms after the pulse and ends at window_ms)")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any rule is on."""
        return self.no_response_s is not None or self.fatigue_percent is not None


@settings(kw_only=True)
class ProtocolSettings:
    """``[protocol]``: what triggers stimulation and in which pattern.

    Parameters
    ----------
    kind : str
        ``triggered_assist``: an agonist onset triggers one ramp-plateau-ramp of the
        agonist. ``reciprocal``: the same, followed (after ``reciprocal.gap_s``) by one of
        the antagonist. ``cued_trials``: cues on a work/rest cycle; an onset within the
        response window triggers ``trials.pattern``. ``proportional``: an onset starts a
        repetition whose current follows the patient's effort
        (:class:`ProportionalSettings`).
    agonist : str
        Muscle whose onset triggers (and which is stimulated first); one of the config's
        ``[[muscles]]``.
    antagonist : str or None
        Its antagonist: stimulated second (reciprocal), watched by the gate. Needed by
        ``kind = "reciprocal"``, ``trials.pattern = "reciprocal"`` and the gate.
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
    mwave : MWaveRules
        What the measured M-wave may do (off by default).

    Attributes
    ----------
    where : str
        Where the table was read, for messages (see :class:`StimParams`).
    """

    kind: Text = "triggered_assist"
    agonist: Text
    antagonist: Text | None = None
    co_contraction_gate: Flag = False
    gate_window_s: Annotated[float, Range(0.005, 2.0)] = 0.1
    co_stimulation: Flag = False
    end_on_offset: Flag = False
    ramp_step_s: Annotated[float, Range(0.01, 0.5)] = 0.05
    reciprocal: ReciprocalSettings = field(default_factory=ReciprocalSettings)
    trials: TrialSettings = field(default_factory=TrialSettings)
    mwave: MWaveRules = field(default_factory=MWaveRules)
    where: ClassVar[str] = ""

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Self:
        # the muscle names, when the config loader gives them
        names = list((info.context or {}).get("muscles", ()))
        choices = ", ".join(map(repr, names))
        from closedloop.registry import PROTOCOLS  # the registered kinds, imported lazily

        if not (PROTOCOLS.knows(self.kind) or PROTOCOLS.is_spec(self.kind)):
            raise invalid("kind", self.kind, "one of " + ", ".join(map(repr, PROTOCOLS.names()))
                          + ", or a module:Class spec of a protocol")
        if names and self.agonist not in names:
            raise invalid("agonist", self.agonist, f"one of {choices}")
        if names and self.antagonist is not None and self.antagonist not in names:
            raise invalid("antagonist", self.antagonist, f"one of {choices}")
        if self.antagonist is not None and self.antagonist == self.agonist:
            raise invalid("antagonist", self.antagonist,
                          f"a muscle other than the agonist {self.agonist!r}")
        if self.reciprocal.gap_s < 0.0 and not self.co_stimulation:
            raise invalid("reciprocal.gap_s", self.reciprocal.gap_s,
                          "a number >= 0 (an overlap needs co_stimulation = true in [protocol])")
        needs = []
        if self.kind == "reciprocal":
            needs.append("kind = 'reciprocal'")
        if self.kind == "cued_trials" and self.trials.pattern == "reciprocal":
            needs.append("trials.pattern = 'reciprocal'")
        if self.co_contraction_gate:
            needs.append("co_contraction_gate = true")
        if needs and self.antagonist is None:
            raise invalid("antagonist", None, "a muscle name: " + " and ".join(needs)
                          + " needs an antagonist" + (f"; one of {choices}" if names else ""))
        return self

    @property
    def stimulated(self) -> tuple[str, ...]:
        """Muscles this protocol may stimulate, in order."""
        both = self.kind == "reciprocal" or (
            self.kind == "cued_trials" and self.trials.pattern == "reciprocal"
        )
        if both and self.antagonist:
            return (self.agonist, self.antagonist)
        return (self.agonist,)


EffortUnit = Literal["uv", "mvc"]


@settings(kw_only=True)
class ProportionalSettings(ProtocolSettings):
    """``[protocol]`` of ``kind = "proportional"``: the current follows the patient's
    voluntary effort (:class:`closedloop.stim.proportional.Proportional`).

    An agonist onset starts a repetition; every ``ramp_step_s`` the current is
    ``I = min_current_ma + gain x (effort - threshold)``, clipped to
    ``[min_current_ma, I_max]`` (``I_max``: the muscle's ``[muscles.stim] current_ma``),
    smoothed over ``smooth_s``, rising by at most ``slew_ma_per_s`` (and the channel's
    ``max_step_ma`` per update), in steps of ``resolution_ma``. Effort at or below the
    threshold for ``stop_hold_s`` (the patient stopped trying) ramps the current down
    to off in ``stop_ramp_s`` (once ``min_on_s`` is over); a repetition ends by
    ``max_on_s`` at the latest.

    Parameters
    ----------
    effort_unit : str
        ``uv``: effort, threshold and gain in µV (RMS of the filtered EMG between the
        pulses); ``mvc``: in % of the calibrated range (needs ``mvc`` in every
        stimulated muscle's ``[muscles.calibration]``).
    effort_tau_s : float
        Time constant of the effort estimate (the exponential RMS between the pulses,
        :class:`~closedloop.core.effort.EffortSettings`): longer is steadier and slower.
    stop_tau_s : float
        The same for the stop rule only (stopped trying is seen this fast, whatever
        ``effort_tau_s``).
    threshold : float
        Effort below which the patient is not trying, in ``effort_unit``.
    gain : float
        mA per ``effort_unit`` above the threshold.
    min_current_ma : float
        The current at the threshold (``I_min``), at most each muscle's ``current_ma``.
    smooth_s : float
        Time constant of the smoothing of the wanted current (0: none).
    slew_ma_per_s : float
        Fastest rise of the current; a fall is never slowed (lowering is always safe).
    stop_hold_s, stop_ramp_s : float
        Stopped trying: effort at or below the threshold this long; then off within
        ``stop_ramp_s``.
    min_on_s, max_on_s : float
        Shortest and longest repetition (``max_on_s`` at most each muscle's
        ``max_on_time_s``; the ramp down is inside it).
    resolution_ma : float
        Currents are multiples of this (rounded down): a stimulator's resolution, and
        repeated levels let the M-wave be averaged per level.
    reciprocal_effort : bool
        Reciprocal use: the antagonist's own onset (while the agonist is not stimulated)
        starts a repetition of the antagonist that follows the antagonist's effort, by
        the same law (its ``current_ma`` as its ``I_max``). Never both at once unless
        ``co_stimulation``. Needs ``antagonist``.
    """

    effort_unit: EffortUnit = "uv"
    effort_tau_s: Annotated[float, Range(0.02, 1.0)] = 0.1
    stop_tau_s: Annotated[float, Range(0.02, 1.0)] = 0.1
    threshold: Annotated[float, Range(0.0, 1e4)] = 5.0
    gain: Annotated[float, Range(0.0, 100.0, lo_open=True)] = 1.5
    min_current_ma: Annotated[float, Range(0.0, ceilings.MAX_CURRENT_MA)] = 8.0
    smooth_s: Annotated[float, Range(0.0, 2.0)] = 0.05
    slew_ma_per_s: Annotated[float, Range(0.0, 1000.0, lo_open=True)] = 40.0
    stop_hold_s: Annotated[float, Range(0.0, 1.0)] = 0.05
    stop_ramp_s: Annotated[float, Range(0.0, 2.0)] = 0.2
    min_on_s: Annotated[float, Range(0.0, 10.0)] = 0.25
    max_on_s: OnTime = 8.0
    resolution_ma: Annotated[float, Range(0.1, 5.0)] = 1.0
    reciprocal_effort: Flag = False

    @model_validator(mode="after")
    def _check_times(self) -> Self:
        if self.min_on_s + self.stop_ramp_s > self.max_on_s:
            raise invalid("max_on_s", self.max_on_s,
                          f"a number >= min_on_s + stop_ramp_s = "
                          f"{self.min_on_s + self.stop_ramp_s:g} s")
        if self.reciprocal_effort and self.antagonist is None:
            raise invalid("antagonist", None, "a muscle name: reciprocal_effort = true needs "
                          "an antagonist")
        return self

    @property
    def stimulated(self) -> tuple[str, ...]:
        """Muscles this protocol may stimulate, in order."""
        if self.reciprocal_effort and self.antagonist:
            return (self.agonist, self.antagonist)
        return (self.agonist,)


@settings
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
    wait_for_rate : bool
        No stimulation starts before the EMG stream's true sample rate has been checked
        against the one it declares, over its first 2 s of samples
        (:data:`closedloop.core.checks.RATE_MEASURE_S`): a stream that declares the wrong
        rate puts every time on the sample clock (ramps, on-times, rests) off by as much,
        and is stopped at that check before it could stimulate. Onsets before then start
        no trial (the protocol logs them ``ignored``) and the guard refuses any
        on-command (``rate_unchecked``, a limit: the channel stays off). Default true;
        recordings made before the setting existed are replayed with it false, as they
        ran. (``stim-test``, which reads no EMG, does not wait.)
    """

    session_dose_s: Annotated[float, Range(0.0, ceilings.MAX_SESSION_DOSE_S, lo_open=True,
                                           limit="ceiling")] = 1800.0
    session_charge_mc: Annotated[float, Range(0.0, ceilings.MAX_SESSION_CHARGE_MC,
                                              lo_open=True, limit="ceiling")] | None = None
    wait_for_rate: Flag = True


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
    for role, who in (("agonist", protocol.agonist), ("antagonist", protocol.antagonist)):
        if who is not None and who in protocol.stimulated and who not in muscles:
            have = ", ".join(map(repr, muscles)) or "none"
            raise ConfigError(
                f"{pw}.{role} = {who!r} is stimulated by kind = {protocol.kind!r} but has "
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
