"""Onset detectors behind one small interface, for evaluation and comparison.

A detector is a small class with one documented interface (:class:`Detector`):

* it is constructed from the sampling rate, the channel names and its own settings
  (keyword parameters, validated with the same range checks as a TOML config);
* ``process(samples, timestamps=None) -> list[Event]`` takes the next chunk of raw EMG,
  shape (n, n_channels), and returns the onset and offset events decided in that chunk,
  in sample order. ``Event.sample`` is the absolute 0-based index of the deciding
  sample, which always lies inside the chunk just given (decisions are never back-dated
  to an earlier chunk);
* it is **stateful and causal**: a decision at sample ``k`` depends only on samples
  ``0..k``, so cutting the future off never changes a past decision;
* it is **chunk-invariant**: the same samples in any chunking give the same events (the
  tests prove it with hypothesis over random chunkings);
* its baseline comes from the signal itself (the first rest segment, then adaptively
  for the threshold detectors) or from a calibration; until it is known, a channel
  cannot trigger. Every detector therefore needs a few hundred milliseconds of rest at
  the start of the stream (see each class).

:func:`make_detector` builds one by name, without any registry:

``threshold``
    :class:`ThresholdDetector`, the product's detector: Hodges & Bui style threshold
    (rest mean + k x SD) on a moving-RMS envelope with hysteresis, a minimum on-time
    and the adaptive noise floor of :mod:`closedloop.core.detector`.
``double_threshold``
    :class:`DoubleThresholdDetector`: Bonato, D'Alessio & Knaflitz (1998), made causal.
``tkeo``
    :class:`TkeoDetector`: Teager-Kaiser energy conditioning (Li, Zhou & Aruin 2007;
    Solnik et al. 2010) followed by the same threshold rules.
``cusum``
    :class:`SequentialDetector`: Page's CUSUM of the log-likelihood ratio of a variance
    increase on the partially prewhitened band-passed EMG, an approximate GLR over the
    ratio (Staude et al. 2001); see :mod:`closedloop.core.cusum`.

References
----------
* Hodges PW, Bui BH (1996). A comparison of computer-based methods for the determination
  of onset of muscle contraction using electromyography. Electroencephalogr Clin
  Neurophysiol 101(6):511-519.
* Bonato P, D'Alessio T, Knaflitz M (1998). A statistical method for the measurement of
  muscle activation intervals from surface myoelectric signal during gait. IEEE Trans
  Biomed Eng 45(3):287-299.
* Li X, Zhou P, Aruin AS (2007). Teager-Kaiser energy operation of surface EMG improves
  muscle activity onset detection. Ann Biomed Eng 35(9):1532-1538.
* Solnik S, Rider P, Steinweg K, DeVita P, Hortobagyi T (2010). Teager-Kaiser energy
  operator signal conditioning improves EMG onset detection. Eur J Appl Physiol
  110(3):489-498.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy import linalg, stats

from closedloop.core.cusum import CusumDetector, CusumSettings, Notice
from closedloop.core.events import OFFSET, ONSET, Event
from closedloop.core.filters import FilterBank
from closedloop.core.pipeline import Pipeline
from closedloop.core.settings import (
    Calibration,
    DetectorSettings,
    EnvelopeSettings,
    FilterSettings,
)
from closedloop.errors import ConfigError
from closedloop.validate import Table

#: Names :func:`make_detector` accepts.
DETECTOR_NAMES = ("threshold", "double_threshold", "tkeo", "cusum")


class Detector:
    """Base class and interface of every detector (see the module docstring).

    Subclasses set :attr:`name`, build their state in ``__init__(fs, channels, **params)``
    and implement :meth:`_process`.

    Attributes
    ----------
    name : str
        Short name (``make_detector`` uses it).
    fs : float
        Sampling rate, Hz.
    channels : tuple of str
        Channel names, in column order of the samples.
    params : dict
        The effective settings (after defaults), JSON-serialisable, for tables and logs.
    position : int
        Absolute index of the next sample to be processed.
    """

    name: ClassVar[str] = ""

    def __init__(self, fs: float, channels: Sequence[str]) -> None:
        self.fs = float(fs)
        self.channels = tuple(str(c) for c in channels)
        if not self.channels:
            raise ConfigError(f"detector {self.name!r}: no channels given")
        self.params: dict[str, Any] = {}
        self.position = 0

    def process(self, samples: np.ndarray, timestamps: np.ndarray | None = None) -> list[Event]:
        """Process the next chunk; return the events decided in it, in sample order.

        Parameters
        ----------
        samples : ndarray, shape (n, n_channels)
            Raw EMG, finite.
        timestamps : ndarray, shape (n,), optional
            Stream time of each sample (events carry it); ``sample / fs`` when omitted.
        """
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.channels):
            raise ValueError(
                f"detector {self.name!r} expects samples of shape (n, {len(self.channels)}), "
                f"got {x.shape}"
            )
        start = self.position
        n = x.shape[0]
        if timestamps is None:
            timestamps = (start + np.arange(n)) / self.fs
        elif len(timestamps) != n:
            raise ValueError(f"{len(timestamps)} timestamps for {n} samples")
        events = self._process(x, np.asarray(timestamps, dtype=np.float64)) if n else []
        self.position = start + n
        return events

    def _process(self, x: np.ndarray, timestamps: np.ndarray) -> list[Event]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<{type(self).__name__} {self.name} fs={self.fs:g} ch={len(self.channels)} {args}>"


# -- parameters ------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Settings values as TOML-like plain values (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def _settings_with(cls: type, base: Any, overrides: Mapping[str, Any], source: str) -> Any:
    """``base`` (a settings dataclass) with ``overrides`` applied and range-checked by the
    class's own ``from_table`` (so a bad value is reported like a bad config value)."""
    data = {f.name: _plain(getattr(base, f.name)) for f in dataclasses.fields(cls)}
    data = {k: v for k, v in data.items() if v is not None}
    data.update({k: _plain(v) for k, v in overrides.items()})
    return cls.from_table(Table(data, source=source))


def _split(params: Mapping[str, Any], groups: Mapping[str, tuple[str, ...]], who: str):
    """Split flat keyword parameters into groups by field name; unknown keys are errors."""
    out: dict[str, dict[str, Any]] = {g: {} for g in groups}
    for key, value in params.items():
        for g, names in groups.items():
            if key in names:
                out[g][key] = value
                break
        else:
            known = sorted(n for names in groups.values() for n in names)
            raise ConfigError(
                f"detector {who}: unknown parameter {key!r}; known: {', '.join(known)}"
            )
    return out


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# -- threshold on an envelope (the product's pipeline) ----------------------------------------
class ThresholdDetector(Detector):
    """Threshold on the EMG envelope: the product's detector (:class:`Pipeline`).

    Band-pass and notch (causal IIR), moving-RMS envelope, on-threshold at rest mean +
    ``k_on`` x rest SD (Hodges & Bui 1996, here with a minimum on-time, hysteresis and a
    refractory time), with the rest statistics from the adaptive noise floor (seeded
    from the first ``warmup_ms + min_rest_ms`` of rest) or from per-channel
    calibrations.

    Parameters
    ----------
    fs, channels
        See :class:`Detector`.
    filters, envelope, detector : settings dataclasses, optional
        Base settings (default: the library defaults, as in a config without those
        sections); a config's settings for a TOML spec.
    calibrations : sequence of Calibration or None, optional
        Per channel; fixed thresholds for those channels.
    **params
        Any field of :class:`FilterSettings`, :class:`EnvelopeSettings` or
        :class:`DetectorSettings` (``k_on=5``, ``window_ms=25``, ``bandpass_hz=(30,
        450)``...), applied over the base settings and range-checked.
    """

    name = "threshold"
    #: Defaults of this detector that differ from the settings' own defaults.
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        *,
        filters: FilterSettings | None = None,
        envelope: EnvelopeSettings | None = None,
        detector: DetectorSettings | None = None,
        calibrations: Sequence[Calibration | None] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(fs, channels)
        groups = {
            "filters": _fields(FilterSettings),
            "envelope": _fields(EnvelopeSettings),
            "detector": _fields(DetectorSettings),
        }
        merged = {**self.DEFAULTS, **params}
        parts = _split(merged, groups, repr(self.name))
        src = f"detector {self.name!r}"
        self.filter_settings = _settings_with(
            FilterSettings, filters or FilterSettings(), parts["filters"], src)
        self.envelope_settings = _settings_with(
            EnvelopeSettings, envelope or EnvelopeSettings(), parts["envelope"], src)
        self.detector_settings = _settings_with(
            DetectorSettings, detector or DetectorSettings(), parts["detector"], src)
        self.pipeline = Pipeline(
            self.fs, self.channels, self.filter_settings, self.envelope_settings,
            self.detector_settings, calibrations,
        )
        for s in (self.filter_settings, self.envelope_settings, self.detector_settings):
            self.params.update({k: _plain(v) for k, v in dataclasses.asdict(s).items()})

    def _process(self, x: np.ndarray, timestamps: np.ndarray) -> list[Event]:
        return self.pipeline.process(x, timestamps).events


class TkeoDetector(ThresholdDetector):
    """Teager-Kaiser energy conditioning, then the threshold rules.

    The band-passed EMG goes through the Teager-Kaiser energy operator
    ``psi[n] = x[n]**2 - x[n-1] * x[n+1]`` (evaluated one sample late to stay causal),
    is rectified and low-pass filtered, and the result is thresholded at rest mean +
    ``k_on`` x rest SD with the same minimum on-time, hysteresis, refractory time and
    adaptive noise floor as :class:`ThresholdDetector` (Li, Zhou & Aruin 2007; Solnik et
    al. 2010). The operator weights each sample by its instantaneous frequency as well as
    its amplitude, so motor-unit action potentials stand out against low-frequency
    background noise.

    Defaults that differ from the threshold detector's: ``kind = "tkeo"``,
    ``bandpass_hz = (30, 300)`` and ``k_on = 10``. The operator weights each component
    by its frequency squared, so broadband amplifier noise above the EMG band would
    dominate its output: band-limiting before the operator, as the TKEO conditioning
    studies do, matters more here than for the RMS envelope (at 0 dB on the simulated
    patient, 30-450 Hz found no attempt, 30-300 Hz some). The TKEO output at rest is far
    from Gaussian, with a long upper tail, so more SDs are needed for the same
    false-detection rate (the papers compare several multiples of the baseline SD).
    ``k_on = 10``, the 300 Hz band edge and the low-pass ``cutoff_hz = 20`` (the library
    default; 50 Hz re-triggered within attempts) were chosen with ``closedloop
    evaluate`` on the simulated patient, not taken from a paper. Any of them can be
    overridden like the threshold detector's parameters.
    """

    name = "tkeo"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "kind": "tkeo",
        "bandpass_hz": (30.0, 300.0),
        "k_on": 10.0,
    }


# -- Bonato double threshold ------------------------------------------------------------------
def _first_run(b: np.ndarray, run0: int, need: int) -> tuple[int, int]:
    """First index where a run of True in ``b`` reaches ``need`` samples (``run0`` True
    samples precede index 0), or -1; and the length of the run at the last sample."""
    idx = np.arange(b.shape[0])
    last_false = np.maximum.accumulate(np.where(b, -(run0 + 1), idx))
    run = idx - last_false
    hits = np.flatnonzero(run >= need)
    return (int(hits[0]) if hits.size else -1), int(run[-1])


def bonato_p_zeta(p_fa: float, m: int, r0: int) -> float:
    """Per-sample exceedance probability ``P_zeta`` such that at least ``r0`` of ``m``
    independent samples exceed with probability ``p_fa`` (Bonato et al. 1998, eq. 7)."""
    if not 0.0 < p_fa < 1.0 or not 1 <= r0 <= m:
        raise ValueError(f"need 0 < p_fa < 1 and 1 <= r0 <= m, got {p_fa}, {r0}, {m}")
    lo, hi = 0.0, 1.0
    for _ in range(100):  # bisection: the binomial tail grows with P_zeta
        mid = 0.5 * (lo + hi)
        if stats.binom.sf(r0 - 1, m, mid) < p_fa:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class DoubleThresholdDetector(Detector):
    """Bonato, D'Alessio & Knaflitz (1998) double-threshold detector, causal version.

    Per channel, on the band-passed (and notch-filtered) EMG:

    1. **Whitening** (Bonato et al. assume white Gaussian background noise): an
       autoregressive model of order ``ar_order`` is fitted to the first rest segment
       (Yule-Walker), and its prediction-error filter whitens the signal from then on.
       ``whiten = false`` skips this. Whitening is only partial here: the band-pass
       leaves spectral nulls (below 20 Hz, above the upper edge, at the notches) that
       no AR prediction-error filter can fill, so on band-passed white noise the lag-1
       autocorrelation falls from about 0.65 to 0.35-0.5, not to 0.
    2. **Auxiliary sequence** ``z[k] = (e[k]**2 + e[k-1]**2)``, the sum of two successive
       squared (whitened) samples, which at rest is ``sigma**2`` times a chi-square
       variable with 2 degrees of freedom; ``sigma**2`` is the variance of the whitened
       rest segment.
    3. **First threshold** ``zeta = -2 sigma**2 ln(P_zeta)``: each ``z[k]`` exceeds it
       with probability ``P_zeta`` at rest.
    4. **Second threshold**: a sample is "detected" when at least ``r0`` of the last
       ``m`` samples (``window_ms``) exceed ``zeta``. ``P_zeta`` is chosen so that this
       happens at rest with probability ``p_fa`` (the paper's false-alarm probability).
    5. **Causal activation rule.** The paper then removes active and silent phases
       shorter than 30 ms from the detected sequence, looking at the whole record. A
       causal detector cannot look ahead, so here an onset is declared when the
       detected state has lasted ``min_on_ms`` (decided at the last sample of that run,
       like the threshold detector), an offset when the undetected state has lasted
       ``min_off_ms``, and no onset may start within ``refractory_ms`` of an offset.

    The baseline is calibrated once from the first rest segment: samples
    ``warmup_ms .. warmup_ms + rest_ms`` (after the filters settle). The stream must
    start at rest; until the segment is complete, channels cannot trigger. There is no
    adaptive update afterwards (the paper's method assumes a stationary background).
    Because of the partial whitening and the short segment (a 200 ms estimate of
    ``sigma**2`` is within about +-20 %), the per-sample exceedance rate at rest is
    within a few times ``P_zeta`` rather than equal to it, and ``p_fa`` is nominal: the
    minimum on-time is what keeps false detections rare in practice.

    Defaults: ``p_fa = 0.05``, ``window_ms = 10`` and ``r0 = 1`` follow the common
    parameterisation of the method (m = 5 samples at 500 Hz, e.g. R biosignalEMG's
    ``onoff_bonato``); ``min_on_ms = 30`` is the paper's 30 ms minimum phase length,
    here as the on-time that must elapse before an onset is declared.

    Parameters
    ----------
    fs, channels
        See :class:`Detector`.
    filters : FilterSettings, optional
        Band-pass and notch before the detector (default: the library defaults).
    **params
        ``p_fa``, ``window_ms``, ``r0``, ``min_on_ms``, ``min_off_ms``,
        ``refractory_ms``, ``warmup_ms``, ``rest_ms``, ``whiten``, ``ar_order``, and any
        :class:`FilterSettings` field.
    """

    name = "double_threshold"

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        *,
        filters: FilterSettings | None = None,
        **params: Any,
    ) -> None:
        super().__init__(fs, channels)
        own = ("p_fa", "window_ms", "r0", "min_on_ms", "min_off_ms", "refractory_ms",
               "warmup_ms", "rest_ms", "whiten", "ar_order")
        parts = _split(params, {"own": own, "filters": _fields(FilterSettings)},
                       repr(self.name))
        src = f"detector {self.name!r}"
        self.filter_settings = _settings_with(
            FilterSettings, filters or FilterSettings(), parts["filters"], src)
        t = Table(parts["own"], source=src)
        self.p_fa = t.float("p_fa", 0.05, lo=1e-9, hi=0.5)
        self.window_ms = t.float("window_ms", 10.0, lo=0.5, hi=1000.0)
        self.r0 = t.int("r0", 1, lo=1, hi=100000)
        self.min_on_ms = t.float("min_on_ms", 30.0, lo=0.0, hi=2000.0)
        self.min_off_ms = t.float("min_off_ms", 100.0, lo=0.0, hi=5000.0)
        self.refractory_ms = t.float("refractory_ms", 200.0, lo=0.0, hi=60000.0)
        self.warmup_ms = t.float("warmup_ms", 100.0, lo=0.0, hi=10000.0)
        self.rest_ms = t.float("rest_ms", 200.0, lo=20.0, hi=60000.0)
        self.whiten = t.bool("whiten", True)
        self.ar_order = t.int("ar_order", 6, lo=1, hi=64)
        t.finish()
        ms = self.fs / 1000.0
        self.m = max(1, int(round(self.window_ms * ms)))
        if self.r0 > self.m:
            raise ConfigError(
                f"{src}: r0 = {self.r0} is more than the {self.m} samples of window_ms = "
                f"{self.window_ms:g} at {self.fs:g} Hz"
            )
        self.n_on = max(1, int(round(self.min_on_ms * ms)))
        self.n_off = max(1, int(round(self.min_off_ms * ms)))
        self.n_refr = int(round(self.refractory_ms * ms))
        self.cal_start = int(round(self.warmup_ms * ms))
        self.cal_end = self.cal_start + max(4 * (self.ar_order + 1), int(round(self.rest_ms * ms)))
        self.p_zeta = bonato_p_zeta(self.p_fa, self.m, self.r0)
        self.params = {
            "p_fa": self.p_fa, "window_ms": self.window_ms, "r0": self.r0,
            "min_on_ms": self.min_on_ms, "min_off_ms": self.min_off_ms,
            "refractory_ms": self.refractory_ms, "warmup_ms": self.warmup_ms,
            "rest_ms": self.rest_ms, "whiten": self.whiten, "ar_order": self.ar_order,
            **{k: _plain(v) for k, v in dataclasses.asdict(self.filter_settings).items()},
        }

        n = len(self.channels)
        self._filters = FilterBank(self.filter_settings, self.fs, n)
        self._rest: list[np.ndarray] = []  # filtered rest segment, until calibrated
        self.calibrated = False
        order = self.ar_order if self.whiten else 0
        self.whitener = np.zeros((n, order + 1))  # prediction-error filter a[0]=1, a[1..]
        self.whitener[:, 0] = 1.0
        self.sigma2 = np.full(n, np.nan)
        self.zeta = np.full(n, np.nan)
        self._x_hist = np.zeros((n, order))  # last `order` filtered samples, oldest first
        self._e_prev = np.zeros(n)  # last whitened sample
        self._b_hist = np.zeros((n, self.m - 1), dtype=np.int64)  # last m-1 exceedances
        self.active = np.zeros(n, dtype=bool)
        self._run = np.zeros(n, dtype=np.int64)
        self._refr_until = np.zeros(n, dtype=np.int64)

    # -- calibration ----------------------------------------------------------------------
    def _calibrate(self, rest: np.ndarray) -> None:
        """Fit the whitening filter and the noise variance on the rest segment (n_ch, L)."""
        n_ch, length = rest.shape
        p = self.whitener.shape[1] - 1
        for c in range(n_ch):
            x = rest[c] - rest[c].mean()
            if p:
                r = np.array([x[: length - k] @ x[k:] for k in range(p + 1)]) / length
                if r[0] <= 0.0:
                    continue
                r[0] *= 1.0 + 1e-6  # diagonal loading: a stable, well-conditioned fit
                phi = linalg.solve_toeplitz(r[:p], r[1 : p + 1])
                self.whitener[c, 1:] = -phi
            e = np.convolve(rest[c], self.whitener[c])[p:length]
            var = float(np.mean(e * e))
            if var > 0.0 and math.isfinite(var):
                self.sigma2[c] = var
                self.zeta[c] = -2.0 * var * math.log(self.p_zeta)
        self.calibrated = True

    # -- processing -----------------------------------------------------------------------
    def _process(self, x: np.ndarray, timestamps: np.ndarray) -> list[Event]:
        start = self.position
        n = x.shape[0]
        xf = self._filters.process_inplace(np.array(x.T, dtype=np.float64, order="C"))
        if self.calibrated:
            return self._segment(xf, start, timestamps)
        lo = max(self.cal_start - start, 0)
        hi = min(self.cal_end - start, n)
        if hi > lo:
            self._rest.append(xf[:, lo:hi].copy())
        if start + n < self.cal_end:
            return self._segment(xf, start, timestamps)
        # the calibration ends inside this chunk: samples before it use the old state
        cut = self.cal_end - start
        events = self._segment(xf[:, :cut], start, timestamps[:cut]) if cut > 0 else []
        self._calibrate(np.concatenate(self._rest, axis=1))
        self._rest = []
        return events + self._segment(xf[:, cut:], start + cut, timestamps[cut:])

    def _segment(self, xf: np.ndarray, start: int, timestamps: np.ndarray) -> list[Event]:
        """Detection over filtered samples ``xf`` (n_ch, n) starting at sample ``start``."""
        n = xf.shape[1]
        if n == 0:
            return []
        # whitening: e[k] = sum_j a[j] x[k-j], the same operations for any chunking
        p = self._x_hist.shape[1]
        ext = np.concatenate((self._x_hist, xf), axis=1)
        e = self.whitener[:, :1] * xf
        for j in range(1, p + 1):
            e += self.whitener[:, j : j + 1] * ext[:, p - j : p - j + n]
        if p:
            self._x_hist = ext[:, n:].copy()
        e_ext = np.concatenate((self._e_prev[:, None], e), axis=1)
        z = e_ext[:, 1:] ** 2 + e_ext[:, :-1] ** 2
        self._e_prev = e[:, -1].copy()
        with np.errstate(invalid="ignore"):
            exceed = (z > self.zeta[:, None]).astype(np.int64)  # NaN zeta: never
        b_ext = np.concatenate((self._b_hist, exceed), axis=1)
        cs = np.cumsum(b_ext, axis=1)
        m = self.m
        count = cs[:, m - 1 :] - np.concatenate(
            (np.zeros((cs.shape[0], 1), dtype=np.int64), cs[:, : cs.shape[1] - m]), axis=1)
        self._b_hist = b_ext[:, b_ext.shape[1] - (m - 1) :].copy()
        detected = count >= self.r0
        events: list[Event] = []
        for c in range(len(self.channels)):
            self._channel(c, detected[c], start, timestamps, z[c], events)
        events.sort(key=lambda ev: ev.sample)
        return events

    def _channel(self, c, det, start, timestamps, z, events) -> None:
        """The per-channel state machine over one chunk (exact across chunks)."""
        n = det.shape[0]
        i = 0
        while i < n:
            if not self.active[c]:
                mask = det[i:]
                blocked = self._refr_until[c] - (start + i)
                if blocked > 0:
                    mask = mask.copy()
                    mask[:blocked] = False
                j, tail = _first_run(mask, int(self._run[c]), self.n_on)
                if j < 0:
                    self._run[c] = tail
                    return
                k = i + j
                events.append(Event(start + k, float(timestamps[k]), self.channels[c], ONSET,
                                    float(z[k]), float(self.zeta[c])))
                self.active[c] = True
            else:
                j, tail = _first_run(~det[i:], int(self._run[c]), self.n_off)
                if j < 0:
                    self._run[c] = tail
                    return
                k = i + j
                events.append(Event(start + k, float(timestamps[k]), self.channels[c], OFFSET,
                                    float(z[k]), float(self.zeta[c])))
                self.active[c] = False
                self._refr_until[c] = start + k + 1 + self.n_refr
            self._run[c] = 0
            i = k + 1


# -- sequential likelihood (CUSUM) --------------------------------------------------------------
class SequentialDetector(Detector):
    """Page's CUSUM of the log-likelihood ratio of a variance increase, live-ready.

    The whole method (artefact hold, causal band-pass, partial prewhitening, the CUSUM
    bank with its threshold in nats of independent evidence, the offset CUSUM, the
    refractory rise and the rest learning and tracking) is
    :class:`closedloop.core.cusum.CusumDetector`; this class gives it the
    :class:`Detector` interface.

    Parameters
    ----------
    fs, channels
        See :class:`Detector`.
    filters : FilterSettings, optional
        Band-pass and notch (default: the library defaults).
    cusum : CusumSettings, optional
        Base settings (a config's ``[detector]`` with ``kind = "cusum"``).
    calibrations : sequence of Calibration or None, optional
        Per channel: the calibration's rest variance is used (see
        :func:`closedloop.core.cusum.calibrated_variance`).
    **params
        Any field of :class:`CusumSettings` (``h_nats=10``, ``ratios=[2, 8, 32]``...) or
        :class:`FilterSettings`, range-checked.

    Attributes
    ----------
    core : CusumDetector
        The live detector (``ready``, ``active``, ``suspend()``, ``threshold()``).
    notices : list of Notice
        What the detector found that is not a detection ("rest was not quiet"), oldest
        first; :meth:`drain_notices` takes them.
    """

    name = "cusum"

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        *,
        filters: FilterSettings | None = None,
        cusum: CusumSettings | None = None,
        calibrations: Sequence[Calibration | None] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(fs, channels)
        parts = _split(params, {"own": _fields(CusumSettings), "filters": _fields(FilterSettings)},
                       repr(self.name))
        src = f"detector {self.name!r}"
        self.filter_settings = _settings_with(
            FilterSettings, filters or FilterSettings(), parts["filters"], src)
        self.settings = _settings_with(CusumSettings, cusum or CusumSettings(), parts["own"], src)
        try:
            self.core = CusumDetector(self.settings, self.filter_settings, self.fs,
                                      self.channels, calibrations)
        except ValueError as exc:
            raise ConfigError(f"{src}: {exc}") from None
        for st in (self.settings, self.filter_settings):
            self.params.update({k: _plain(v) for k, v in dataclasses.asdict(st).items()})

    @property
    def notices(self) -> list[Notice]:
        return self.core.notices

    def drain_notices(self) -> list[Notice]:
        """The notices issued since the last call, oldest first."""
        return self.core.drain_notices()

    def _process(self, x: np.ndarray, timestamps: np.ndarray) -> list[Event]:
        return self.core.process(np.array(x.T, dtype=np.float64, order="C"), timestamps)


# -- factory -----------------------------------------------------------------------------------
def make_detector(name: str, fs: float, channels: Sequence[str], **params: Any) -> Detector:
    """Build the detector called ``name`` (one of :data:`DETECTOR_NAMES`).

    Parameters
    ----------
    name : str
        ``threshold``, ``double_threshold``, ``tkeo`` or ``cusum``.
    fs : float
        Sampling rate, Hz.
    channels : sequence of str
        Channel names in column order.
    **params
        The detector's settings (see each class); unknown or out-of-range values raise
        :class:`~closedloop.errors.ConfigError` naming the parameter and the range.
    """
    if name == "threshold":
        return ThresholdDetector(fs, channels, **params)
    if name == "tkeo":
        return TkeoDetector(fs, channels, **params)
    if name == "double_threshold":
        return DoubleThresholdDetector(fs, channels, **params)
    if name == "cusum":
        return SequentialDetector(fs, channels, **params)
    raise ConfigError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
