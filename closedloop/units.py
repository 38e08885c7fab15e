"""Clinical units and numbers: EMG in µV, durations in seconds and minutes.

Sources report their samples in their own units (:attr:`SourceInfo.units
<closedloop.core.stream.SourceInfo.units>`: ``"V"``, ``"mV"``, ``"uV"``, ``"counts"``...);
everything a clinician reads (the status line, the summary, the report) shows a voltage
in µV and anything else as the source names it (closedloop does not know an amplifier's
gain). A detector's statistic is shown in the unit it has: an envelope in the EMG's
unit, the Teager-Kaiser energy in its square, and CUSUM's or Bonato's test statistic
without one (:func:`display_units`).
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


def microvolts_per(units: str | None) -> float | None:
    """Microvolts per unit of ``units`` (``"V"`` -> 1e6), or None when not a voltage."""
    return MICROVOLTS_PER.get((units or "").strip().lower())


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
    """

    emg_factor: float = 1.0
    emg_unit: str = ""
    stat_factor: float = 1.0
    stat_unit: str = ""
    stat_name: str = "envelope"
    stat_short: str = "env"

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


def display_units(units: str | None, detector_kind: str = "threshold") -> DisplayUnits:
    """The :class:`DisplayUnits` of a source reporting ``units`` and a detector of
    ``detector_kind`` (a config's ``[detector] kind``)."""
    k = microvolts_per(units)
    emg_f, emg_u = (k, "µV") if k is not None else (1.0, (units or "").strip())
    if detector_kind in ENVELOPE_DETECTORS:
        return DisplayUnits(emg_f, emg_u, emg_f, emg_u, "envelope", "env")
    if detector_kind == "tkeo":
        return DisplayUnits(emg_f, emg_u, emg_f**2, f"{emg_u}²" if emg_u else "",
                            "TKEO energy", "tkeo")
    return DisplayUnits(emg_f, emg_u, 1.0, "", f"{detector_kind} statistic", "stat")


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


__all__ = ["MICROVOLTS_PER", "DisplayUnits", "display_units", "duration", "microvolts_per",
           "number", "with_unit"]
