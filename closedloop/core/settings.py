"""Typed settings of the signal core: filters, envelope, detector, calibration.

Each dataclass reads itself from a TOML table with :meth:`from_table`, so every bad
value is reported with the file, the key, the value and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass

from closedloop.validate import Table

ENVELOPES = ("rms", "lowpass", "tkeo")
BASELINES = ("adaptive", "calibrated")
#: Sampling rates the signal core supports, Hz (inclusive).
FS_RANGE = (100.0, 20000.0)


@dataclass(frozen=True)
class FilterSettings:
    """Causal band-pass and mains notch.

    ``bandpass_hz`` upper edge is capped below Nyquist (at 0.9 x fs/2) for low-rate
    boards; ``notch_hz = 0`` disables the notch; harmonics above the band are skipped.
    """

    bandpass_hz: tuple[float, float] = (20.0, 450.0)
    order: int = 4
    notch_hz: float = 50.0
    notch_harmonics: int = 3
    notch_q: float = 30.0

    @classmethod
    def from_table(cls, t: Table) -> FilterSettings:
        band = t.floats("bandpass_hz", list(cls.bandpass_hz), length=2, lo=0.1, hi=5000.0)
        if band[0] >= band[1]:
            raise t.error("bandpass_hz", list(band), "[low, high] with low < high")
        notch = t.float("notch_hz", cls.notch_hz, lo=0.0, hi=70.0)
        if notch not in (0.0, 50.0, 60.0):
            raise t.error("notch_hz", notch, "50 or 60 (mains), or 0 to disable")
        out = cls(
            bandpass_hz=band,
            order=t.int("order", cls.order, lo=1, hi=8),
            notch_hz=notch,
            notch_harmonics=t.int("notch_harmonics", cls.notch_harmonics, lo=1, hi=10),
            notch_q=t.float("notch_q", cls.notch_q, lo=1.0, hi=200.0),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class EnvelopeSettings:
    """Envelope: moving RMS, rectify + low-pass, or Teager-Kaiser energy + low-pass."""

    kind: str = "rms"
    window_ms: float = 15.0
    cutoff_hz: float = 20.0

    @classmethod
    def from_table(cls, t: Table) -> EnvelopeSettings:
        out = cls(
            kind=t.str("kind", cls.kind, choices=ENVELOPES),
            window_ms=t.float("window_ms", cls.window_ms, lo=2.0, hi=1000.0),
            cutoff_hz=t.float("cutoff_hz", cls.cutoff_hz, lo=0.5, hi=100.0),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class DetectorSettings:
    """Onset/offset detection with hysteresis, timing rules and an adaptive baseline.

    Attributes
    ----------
    k_on : float
        On-threshold = baseline mean + ``k_on`` x baseline SD (rest statistics).
    off_fraction : float
        Off-threshold = mean + ``off_fraction`` x (on-threshold - mean): hysteresis.
    mvc_fraction : float or None
        With a calibrated MVC: on-threshold = rest mean + fraction x (MVC - rest mean),
        used instead of ``k_on`` when given.
    min_on_ms : float
        The envelope must stay above the on-threshold this long before an onset is
        declared (minimum on-time; rejects spikes). The onset is decided at the last
        sample of that run.
    min_off_ms : float
        The envelope must stay below the off-threshold this long before an offset.
    refractory_ms : float
        After an offset, no new onset may start counting for this long.
    baseline : str
        ``adaptive``: a noise-floor tracker learns the rest level from the signal
        (needs >= ``warmup_ms + min_rest_ms`` of rest at the start); ``calibrated``: fixed
        thresholds from each muscle's calibration.
    block_ms, history_s, warmup_ms, min_rest_ms : float
        Adaptive tracker: statistics per block of samples; the floor is the quieter half
        of the idle blocks in the last ``history_s``; the first ``warmup_ms`` are skipped
        (filter settling); detection starts after ``min_rest_ms`` of idle blocks.
    """

    k_on: float = 6.0
    off_fraction: float = 0.5
    mvc_fraction: float | None = None
    min_on_ms: float = 3.0
    min_off_ms: float = 100.0
    refractory_ms: float = 200.0
    baseline: str = "adaptive"
    block_ms: float = 100.0
    history_s: float = 10.0
    warmup_ms: float = 100.0
    min_rest_ms: float = 200.0

    @classmethod
    def from_table(cls, t: Table) -> DetectorSettings:
        out = cls(
            k_on=t.float("k_on", cls.k_on, lo=0.5, hi=100.0),
            off_fraction=t.float("off_fraction", cls.off_fraction, lo=0.0, hi=1.0),
            mvc_fraction=t.float("mvc_fraction", None, lo=0.01, hi=1.0, allow_none=True),
            min_on_ms=t.float("min_on_ms", cls.min_on_ms, lo=0.0, hi=2000.0),
            min_off_ms=t.float("min_off_ms", cls.min_off_ms, lo=0.0, hi=5000.0),
            refractory_ms=t.float("refractory_ms", cls.refractory_ms, lo=0.0, hi=60000.0),
            baseline=t.str("baseline", cls.baseline, choices=BASELINES),
            block_ms=t.float("block_ms", cls.block_ms, lo=5.0, hi=1000.0),
            history_s=t.float("history_s", cls.history_s, lo=0.5, hi=600.0),
            warmup_ms=t.float("warmup_ms", cls.warmup_ms, lo=0.0, hi=10000.0),
            min_rest_ms=t.float("min_rest_ms", cls.min_rest_ms, lo=10.0, hi=60000.0),
        )
        if out.history_s * 1000.0 < out.min_rest_ms:
            raise t.error("history_s", out.history_s,
                          f">= min_rest_ms / 1000 = {out.min_rest_ms / 1000:g}")
        t.finish()
        return out


@dataclass(frozen=True)
class Calibration:
    """One channel's calibration: envelope statistics at rest (and at maximal effort).

    Values are in envelope units of the pipeline that measured them.
    """

    rest_mean: float
    rest_sd: float
    mvc: float | None = None

    @classmethod
    def from_table(cls, t: Table) -> Calibration:
        out = cls(
            rest_mean=t.float("rest_mean", lo=0.0),
            rest_sd=t.float("rest_sd", lo=0.0, lo_open=True),
            mvc=t.float("mvc", None, lo=0.0, allow_none=True),
        )
        if out.mvc is not None and out.mvc <= out.rest_mean:
            raise t.error("mvc", out.mvc, f"a value above rest_mean = {out.rest_mean:g}")
        t.finish()
        return out

    def thresholds(self, settings: DetectorSettings) -> tuple[float, float]:
        """(on, off) thresholds from this calibration and the detector settings."""
        if settings.mvc_fraction is not None and self.mvc is not None:
            on = self.rest_mean + settings.mvc_fraction * (self.mvc - self.rest_mean)
        else:
            on = self.rest_mean + settings.k_on * self.rest_sd
        off = self.rest_mean + settings.off_fraction * (on - self.rest_mean)
        return on, off
