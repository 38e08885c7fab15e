"""``kind = "double_threshold"``: Bonato, D'Alessio & Knaflitz (1998), made causal.

References
----------
* Bonato P, D'Alessio T, Knaflitz M (1998). A statistical method for the measurement of
  muscle activation intervals from surface myoelectric signal during gait. IEEE Trans
  Biomed Eng 45(3):287-299.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import linalg, stats

from closedloop.config.signal import Calibration, DoubleThresholdSettings
from closedloop.core.detectors.base import Detection, Detector, first_run
from closedloop.core.events import OFFSET, ONSET, SUSPEND, Event
from closedloop.errors import ConfigError


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
    settings : DoubleThresholdSettings
        ``p_fa``, ``window_ms``, ``r0``, ``min_on_ms``, ``min_off_ms``,
        ``refractory_ms``, ``warmup_ms``, ``rest_ms``, ``whiten``, ``ar_order``.
    fs, channels, calibrations
        See :class:`~closedloop.core.detectors.base.Detector` (calibrations are not
        used: the method calibrates itself on the first rest segment). Band-pass and
        notch are the pipeline's ``[filters]``.

    The statistic it reports is the auxiliary sequence ``z``; its thresholds are
    ``zeta`` (the first threshold, on and off alike).
    """

    kind = "double_threshold"
    settings_type = DoubleThresholdSettings

    def __init__(self, settings: DoubleThresholdSettings, fs: float, channels: Sequence[str],
                 calibrations: Sequence[Calibration | None] | None = None) -> None:
        super().__init__(settings, fs, channels, calibrations)
        own = settings
        self.p_fa = own.p_fa
        self.window_ms = own.window_ms
        self.r0 = own.r0
        self.min_on_ms = own.min_on_ms
        self.min_off_ms = own.min_off_ms
        self.refractory_ms = own.refractory_ms
        self.warmup_ms = own.warmup_ms
        self.rest_ms = own.rest_ms
        self.whiten = own.whiten
        self.ar_order = own.ar_order
        ms = self.fs / 1000.0
        self.m = max(1, int(round(self.window_ms * ms)))
        if self.r0 > self.m:
            raise ConfigError(
                f"detector 'double_threshold': r0 = {self.r0} is more than the {self.m} "
                f"samples of window_ms = {self.window_ms:g} at {self.fs:g} Hz"
            )
        self.n_on = max(1, int(round(self.min_on_ms * ms)))
        self.n_off = max(1, int(round(self.min_off_ms * ms)))
        self.n_refr = int(round(self.refractory_ms * ms))
        self.cal_start = int(round(self.warmup_ms * ms))
        self.cal_end = self.cal_start + max(4 * (self.ar_order + 1), int(round(self.rest_ms * ms)))
        self.p_zeta = bonato_p_zeta(self.p_fa, self.m, self.r0)

        n = len(self.channels)
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
        self._active = np.zeros(n, dtype=bool)
        self._blocked = np.zeros(n, dtype=bool)  # suspended or held: no new onset
        self._suspended = np.zeros(n, dtype=bool)
        self._held = np.zeros(n, dtype=bool)
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
    def process(self, filtered: np.ndarray, raw: np.ndarray,
                timestamps: np.ndarray) -> Detection:
        """Decide the next chunk (see :meth:`Detector.process`)."""
        start = self.position
        n = filtered.shape[1]
        self.position = start + n
        if n == 0:
            return Detection(np.empty_like(filtered), np.zeros(filtered.shape, bool), [])
        xf = filtered
        if self.calibrated or start + n <= self.cal_start:
            z, events = self._segment(xf, start, timestamps)
        else:
            lo = max(self.cal_start - start, 0)
            hi = min(self.cal_end - start, n)
            if hi > lo:
                self._rest.append(xf[:, lo:hi].copy())
            if start + n < self.cal_end:
                z, events = self._segment(xf, start, timestamps)
            else:
                # the calibration ends inside this chunk: samples before it use the old state
                cut = self.cal_end - start
                z1, events = self._segment(xf[:, :cut], start, timestamps[:cut])
                self._calibrate(np.concatenate(self._rest, axis=1))
                self._rest = []
                z2, more = self._segment(xf[:, cut:], start + cut, timestamps[cut:])
                z, events = np.concatenate((z1, z2), axis=1), events + more
        self.on_threshold[:] = self.zeta
        self.off_threshold[:] = self.zeta
        with np.errstate(invalid="ignore"):
            above = z > self.zeta[:, None]
        return Detection(z, above, events)

    def suspend(self, channel: int, suspended: bool, sample: int, time: float) -> list[Event]:
        """Suspend or resume one channel; an active channel ends with an offset."""
        events: list[Event] = []
        if suspended and self._active[channel]:
            self._active[channel] = False
            self._run[channel] = 0
            self._refr_until[channel] = sample + 1 + self.n_refr
            events.append(Event(sample, time, self.channels[channel], OFFSET))
        if suspended and not self._suspended[channel]:
            events.append(Event(sample, time, self.channels[channel], SUSPEND))
        self._suspended[channel] = suspended
        self._blocked[:] = self._suspended | self._held
        return events

    def hold(self, channel: int, held: bool) -> None:
        """Hold one channel (no new onsets) or release it."""
        self._held[channel] = held
        self._blocked[:] = self._suspended | self._held

    @property
    def active(self) -> np.ndarray:
        """Which channels are active now (a copy)."""
        return self._active.copy()

    def _segment(self, xf: np.ndarray, start: int,
                 timestamps: np.ndarray) -> tuple[np.ndarray, list[Event]]:
        """Detection over filtered samples ``xf`` (n_ch, n) starting at sample ``start``:
        the auxiliary sequence ``z`` and the events."""
        n = xf.shape[1]
        if n == 0:
            return np.empty_like(xf), []
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
        return z, events

    def _channel(self, c, det, start, timestamps, z, events) -> None:
        """The per-channel state machine over one chunk (exact across chunks)."""
        n = det.shape[0]
        i = 0
        while i < n:
            if not self._active[c]:
                if self._blocked[c]:  # suspended or held: no new onset
                    self._run[c] = 0
                    return
                mask = det[i:]
                blocked = self._refr_until[c] - (start + i)
                if blocked > 0:
                    mask = mask.copy()
                    mask[:blocked] = False
                j, tail = first_run(mask, int(self._run[c]), self.n_on)
                if j < 0:
                    self._run[c] = tail
                    return
                k = i + j
                events.append(Event(start + k, float(timestamps[k]), self.channels[c], ONSET,
                                    float(z[k]), float(self.zeta[c])))
                self._active[c] = True
            else:
                j, tail = first_run(~det[i:], int(self._run[c]), self.n_off)
                if j < 0:
                    self._run[c] = tail
                    return
                k = i + j
                events.append(Event(start + k, float(timestamps[k]), self.channels[c], OFFSET,
                                    float(z[k]), float(self.zeta[c])))
                self._active[c] = False
                self._refr_until[c] = start + k + 1 + self.n_refr
            self._run[c] = 0
            i = k + 1
