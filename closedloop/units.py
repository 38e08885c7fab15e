"""Clinical units and numbers: EMG in µV, durations in seconds and minutes.

Sources report their samples in their own units (:attr:`SourceInfo.units
<closedloop.core.stream.SourceInfo.units>`: ``"V"``, ``"mV"``, ``"uV"``, ``"counts"``...);
everything a clinician reads (the status line, the summary, the report) shows a voltage
in µV and anything else as the source names it (closedloop does not know an amplifier's
gain). A detector's statistic is shown in the unit it has (:func:`display_units`), as the
detector declares it (:class:`Statistic`, the
:attr:`~closedloop.core.detectors.base.Detector.statistic_info` of its class): an envelope in
the EMG's unit, the Teager-Kaiser energy in its square, CUSUM's log-likelihood ratio in
nats, Bonato's test statistic without one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Microvolts per unit of the units a source may report (anything else: not a voltage).
MICROVOLTS_PER = {"v": 1e6, "volt": 1e6, "volts": 1e6, "mv": 1e3, "millivolts": 1e3,
                  "uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolts": 1.0}

#: Detectors whose statistic is an envelope of the EMG (in the EMG's unit).
ENVELOPE_DETECTORS = ("threshold", "")

#: :attr:`Statistic.unit` of a statistic in the EMG's own unit (an amplitude envelope).
EMG = "emg"
#: :attr:`Statistic.unit` of a statistic in the square of the EMG's unit (an energy).
EMG_SQUARED = "emg^2"


def microvolts_per(units: str | None) -> float | None:
    """Microvolts per unit of ``units`` (``"V"`` -> 1e6), or None when not a voltage."""
    return MICROVOLTS_PER.get((units or "").strip().lower())


@dataclass(frozen=True)
class Statistic:
    """What a detector's statistic (the values it compares with its thresholds) is, for
    whatever shows it: the live view, the status line, the report, the patient record.

    Attributes
    ----------
    name : str
        What it is called: ``envelope``, ``TKEO energy``, ``cusum statistic``.
    unit : str
        :data:`EMG` (an amplitude in the EMG's own unit: µV for a voltage source),
        :data:`EMG_SQUARED` (its square), or a unit of its own (``nats``; ``""``: none).
    short : str
        Its short name for a narrow line: ``env``, ``tkeo``, ``stat``.
    offsets_on_it : bool
        Offsets are decided on this statistic against the off-threshold. False when
        they are decided on another one (cusum's offset CUSUM): displays then draw no
        off-threshold line and do not place an offset at its event's value.
    """

    name: str
    unit: str = ""
    short: str = "stat"
    offsets_on_it: bool = True

    @property
    def is_amplitude(self) -> bool:
        """The statistic is an amplitude envelope of the EMG, in the EMG's unit (its
        thresholds are EMG levels: µV for a voltage source)."""
        return self.unit == EMG

    @property
    def of_emg(self) -> bool:
        """The statistic is the EMG's envelope or energy (in the EMG's unit or its
        square): it shows the muscle's activity itself. Displays show the EMG level
        beside a statistic that is not (cusum's)."""
        return self.unit in (EMG, EMG_SQUARED)


#: The statistic of the envelope threshold detector (the default).
ENVELOPE = Statistic("envelope", EMG, "env")


def builtin_statistic(detector_kind: str) -> Statistic:
    """What the built-in detectors' statistics were shown as before detectors declared
    theirs (a caller that knows only a kind; prefer the detector class's
    :attr:`~closedloop.core.detectors.base.Detector.statistic_info`)."""
    if detector_kind in ENVELOPE_DETECTORS:
        return ENVELOPE
    if detector_kind == "tkeo":
        return Statistic("TKEO energy", EMG_SQUARED, "tkeo")
    return Statistic(f"{detector_kind} statistic")


def recorded_unit(statistic: Statistic, emg_unit: str | None) -> str:
    """The unit a recording gives the values of ``statistic`` (its envelope and
    thresholds streams) when the EMG is in ``emg_unit`` (the source's own unit, as its
    EMG stream says: ``"V"``, ``"microvolts"``): the EMG's unit for an amplitude, its
    square (``"V^2"``) for an energy, else the statistic's own unit (``"nats"``; ``""``:
    none). Plain ASCII, for any tool that reads the file."""
    emg = (emg_unit or "").strip()
    if statistic.unit == EMG:
        return emg
    if statistic.unit == EMG_SQUARED:
        return f"{emg}^2" if emg else ""
    return statistic.unit


@dataclass(frozen=True)
class DisplayUnits:
    """How a session's numbers are shown: ``value * factor``, followed by ``unit``.

    Attributes
    ----------
    emg_factor, emg_unit : float, str
        The EMG: µV when the source's unit is a voltage, else as the source names it.
    stat_factor, stat_unit : float, str
        The detector's statistic (and its thresholds): µV for an envelope, µV² for the
        Teager-Kaiser energy, no unit (``""``) for a statistic without one.
    stat_name : str
        What the statistic is called: ``envelope``, ``TKEO energy``, ``cusum statistic``.
    stat_short : str
        Its short name for a narrow line: ``env``, ``tkeo``, ``stat``.
    statistic : Statistic
        What the detector declared about it.
    """

    emg_factor: float = 1.0
    emg_unit: str = ""
    stat_factor: float = 1.0
    stat_unit: str = ""
    stat_name: str = "envelope"
    stat_short: str = "env"
    statistic: Statistic = ENVELOPE

    @property
    def is_voltage(self) -> bool:
        """The EMG is in µV (the source's unit is a voltage)."""
        return self.emg_unit == "µV"

    def emg(self, value: float) -> str:
        """An EMG amplitude (source units) as text with its unit: ``"12.5 µV"``."""
        return with_unit(value * self.emg_factor, self.emg_unit)

    def stat(self, value: float) -> str:
        """A statistic or threshold (source units) as text with its unit."""
        return with_unit(value * self.stat_factor, self.stat_unit)


def display_units(units: str | None,
                  detector: Statistic | str = "threshold") -> DisplayUnits:
    """The :class:`DisplayUnits` of a source reporting ``units`` and a detector whose
    statistic is ``detector`` (what its class declares,
    :func:`closedloop.core.detectors.base.statistic_of`; a config's ``[detector] kind``
    gives :func:`builtin_statistic`)."""
    stat = builtin_statistic(detector) if isinstance(detector, str) else detector
    k = microvolts_per(units)
    emg_f, emg_u = (k, "µV") if k is not None else (1.0, (units or "").strip())
    if stat.unit == EMG:
        f, u = emg_f, emg_u
    elif stat.unit == EMG_SQUARED:
        f, u = emg_f**2, f"{emg_u}²" if emg_u else ""
    else:
        f, u = 1.0, stat.unit
    return DisplayUnits(emg_f, emg_u, f, u, stat.name, stat.short, stat)


def number(x: float) -> str:
    """A measured value with the digits that matter and never an exponent:
    ``1234``, ``123``, ``12.3``, ``12``, ``1.23``, ``0.12``, ``0.000022``; ``-`` for NaN
    or infinity."""
    if not math.isfinite(x):
        return "-"
    a = abs(x)
    if a >= 100 or a == 0:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}".removesuffix(".0")
    if a >= 1:
        return f"{x:.3g}"
    return np.format_float_positional(x, precision=2, unique=True, fractional=False, trim="-")


def with_unit(x: float, unit: str) -> str:
    """``number(x)`` followed by ``unit`` (when there is one)."""
    text = number(x)
    return f"{text} {unit}" if unit and text != "-" else text


def duration(seconds: float) -> str:
    """A duration as a clinician reads it: ``45.2 s``, ``12 min 03 s``, ``1 h 02 min``."""
    if not math.isfinite(seconds):
        return "-"
    s = max(seconds, 0.0)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        m, sec = divmod(int(round(s)), 60)
        return f"{m} min {sec:02d} s"
    h, rest = divmod(int(round(s)), 3600)
    return f"{h} h {rest // 60:02d} min"


__all__ = ["EMG", "EMG_SQUARED", "ENVELOPE", "MICROVOLTS_PER", "DisplayUnits", "Statistic",
           "builtin_statistic", "display_units", "duration", "microvolts_per", "number",
           "recorded_unit", "with_unit"]
