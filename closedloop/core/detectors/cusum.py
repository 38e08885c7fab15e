"""Sequential change detection on raw EMG: a CUSUM of the log-likelihood ratio.

A muscle at rest gives the amplifier's noise (and some background); a contraction adds
motor-unit activity, so the variance of the band-passed signal rises. This detector tests,
sample by sample, how much more likely the recent samples are under "the variance rose
by a factor rho" than under "rest": Page's cumulative sum (CUSUM) of the log-likelihood
ratio of a Gaussian variance change, with a small bank of ratios whose maximum
approximates the generalised likelihood ratio over the unknown ratio (Staude, Flachenecker,
Daumer & Wolf 2001; Basseville & Nikiforov 1993, ch. 2). It needs only the rest variance,
which converges in a fraction of a second, and no envelope whose spread the rest must
reveal first.

Per channel, causally, sample by sample:

1. **Impulsive artefacts out** (raw samples, before filtering): a raw sample more than
   ``artifact_ratio`` rest SDs of the raw signal's difference over one mains period
   (``[filters] notch_hz``; with ``artifact_mains_lag``, the default: the hum cancels in
   that difference, as do offset and drift, so the limit stands on the noise and the EMG
   alone; 5 ms, a quarter period that keeps the hum, without it or without a notch) away
   from the sample that period before starts a sample-and-hold of that earlier value,
   which lasts while the signal stays that far from the held value, so the band-pass
   never rings on the knock itself. The evidence (steps 5-6) is frozen during the hold
   and for ``artifact_ring_ms`` (100 ms, at least one period) after it, while the filters
   ring on the edges the hold let in; with ``hold_resets_evidence`` the evidence the
   knock's rise gave before the hold started is dropped when it starts (the CUSUM
   restarts from 0), and during the freeze a new hold is judged against the level held,
   not against the knock's own flanks one period before. On the simulated patient at 10
   dB (10 uV of hum), 5 ms knocks of 30 x its voluntary EMG RMS and more decide no onset
   (``tests/core/test_cusum.py``); before these keys, knocks up to about 100 x did; smaller
   knocks are the size of strong EMG and still can (``docs/safety.md``). With
   ``rest_skips_ringing`` (the default) the blocks the freeze touches stay out of the rest
   estimate too, as the hold's own blocks do (step 8). Holds lasting ``artifact_max_ms``
   in all (holds that start while the evidence is still frozen continue the same
   episode) are given up: the signal is let through and no new
   hold starts for as long again, because what lasts that long is not an impulse and a
   strong contraction must not be hidden. No hold starts while the channel is active.
2. **Causal band-pass and notch** (:class:`~closedloop.core.filters.FilterBank`): the
   config's ``[filters]``, with the low edge raised to ``highpass_hz`` (30 Hz) when it is
   lower. Voluntary surface EMG has most of its power at 50-150 Hz; below 30 Hz lie
   electrode and cable movement, ECG and the slow single deflections of real rest. On the
   spliced benchmark (``closedloop evaluate --splice``, report seeds) the 30 Hz edge took
   the false detections in the trials' rest from 0.55-0.64 to 0.09-0.18 per minute with
   the same sensitivity, and delays the simulated patient's decisions by 0.5-1 ms; 40 Hz
   removes more but no longer precedes one of the knee movements (``docs/detection.md``).
   The display and the other detectors keep ``[filters]`` as it is.
3. **Partial prewhitening**: an autoregressive prediction-error filter of order
   ``ar_order`` fitted on rest (Yule-Walker, with the zero-lag autocorrelation loaded by
   ``1 + ar_loading``). Full whitening would amplify the band-pass's empty stop bands;
   the loading keeps it partial. At rest the whitened samples are closer to independent,
   and where rest has most of its power (hum residue, low-frequency background) it counts
   less, so the test weighs the bands where a contraction stands out.
4. **Normalised energy** ``u = e**2 / sigma2`` (``sigma2`` the whitened rest variance),
   capped at ``clip``.
5. **CUSUM bank**: for each ratio ``rho`` in ``ratios``, ``g = max(0, g + kappa * 0.5 *
   ((1 - 1/rho) u - ln rho))``; an **onset** when ``max over rho of g`` exceeds the
   threshold ``h_nats``. ``kappa`` is the rest spectrum's effective number of independent
   samples per sample: ``1 / (1 + 2 sum_tau r(tau)**2)`` from the whitened rest's
   autocorrelation ``r`` (the variance of a sum of squares of correlated Gaussian samples
   grows by that factor), so ``g`` counts nats of *independent* evidence and one
   threshold gives about the same false-alarm rate on every source. With ``dispersion``
   it is further divided by the rest energy's **dispersion**: the variance of the idle
   blocks' mean ``u`` over what ``kappa`` predicts for it (``2 / (kappa x block)``),
   pooled with a prior of 1 worth 20 blocks (a quasi-likelihood correction: real rest,
   whose energy fluctuates more than Gaussian noise's, with weak activity, spikes and
   drifts of its level, counts less per sample; stationary noise, whose dispersion is
   about 1, counts as ``kappa`` says).
6. **Offset**: while active, a CUSUM for the way back, ``g_off = max(0, g_off + kappa *
   0.5 * (ln r - (1 - 1/r) u))`` with ``r = off_ratio`` (evidence for rest against a
   variance ``off_ratio`` times rest); an offset when it exceeds ``off_nats``.
7. **Refractory rise**: after an offset the onset threshold is ``h_nats x (1 +
   refractory_gain)``, falling linearly back to ``h_nats`` over ``refractory_ms``, so the
   tail of a contraction does not re-trigger while a new contraction still can.
8. **Rest**: learnt from the first ``learn_ms`` after ``warmup_ms`` (filters settling),
   in blocks of ``block_ms`` aligned to absolute sample indices. The window must be quiet:
   its block variances within a factor ``quiet_ratio`` of each other (and, with a
   calibration, its variance at most ``quiet_ratio`` times the calibrated rest); otherwise a
   ``rest_not_quiet`` notice is issued and the window slides on, one block at a time, until
   it is quiet. The window gives the rest's autocorrelation (of the filtered signal, up to
   the whitener's order plus 10 ms of lags), from which the whitener, ``kappa`` and
   ``sigma2`` follow. After that, every idle block (no activity, no artefact hold nor its
   ringing, the CUSUM below half its threshold) adds its autocorrelation to that estimate: a
   running mean of all of them at first, an exponential average with a time constant of
   ``history_s`` once that many blocks were seen (symmetric: an average that falls faster
   than it rises sits below the mean, and a rest variance biased low is a positive drift of
   the CUSUM), and the whitener, ``kappa`` and ``sigma2`` are fitted again from it. So the
   first fifth of a second (which can hold the filters' ringing on the stream's start, or an
   electrode settling) does not decide the whole session: on the simulated patient, fitting
   once on it gave a median decision 15 ms later. The tracking pauses while the channel is
   active. If two idle blocks in a row fall below ``1 / quiet_ratio`` of the rest variance
   first learnt, the rest that was learnt was not rest (the patient was contracting when the
   session began): a ``rest_not_quiet`` notice is issued and rest is learnt again. A
   **calibrated** channel uses the calibration's rest variance (kept fixed) and learns only
   the spectrum shape (the whitener, ``kappa``) from the signal. (The calibration measures
   rest on ``[filters]``'s band; real rest has 2-6 % less variance from 30 Hz, so a
   calibrated channel counts a hair less evidence than an adaptive one.)

Chunking changes nothing: every state change happens at a block boundary or at a sample
the data decide (an event, an artefact), the running sums are carried as sequential
``cumsum`` results and reset only there, so chunks of 1, 7 or 10,000 samples give the
same events to the bit. A large chunk is filtered at once, and runs of whole blocks where
nothing happens are taken together (their CUSUMs over all samples at once, their rest
fits in one batch) with the same operations on the same values as block by block, so
the speed-up changes no bit either. No wall clock, no I/O: numpy in, events and notices
out.

References
----------
* Page ES (1954). Continuous inspection schemes. Biometrika 41(1/2):100-115.
* Staude G, Flachenecker C, Daumer M, Wolf W (2001). Onset detection in surface
  electromyographic signals: a systematic comparison of methods. EURASIP J Appl Signal
  Process 2001(2):67-81.
* Basseville M, Nikiforov IV (1993). Detection of Abrupt Changes: Theory and
  Application. Prentice Hall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from closedloop.config.signal import Calibration, CusumSettings, FilterSettings
from closedloop.core.detectors.base import Detection, Detector, RestNote
from closedloop.core.events import OFFSET, ONSET, SUSPEND, Event
from closedloop.core.filters import NYQUIST_CAP, FilterBank
from closedloop.core.sos import decaying_sum
from closedloop.errors import ConfigError
from closedloop.units import Statistic

IDLE = 0
ACTIVE = 1
#: Per-channel learning phases.
WARMUP, LEARNING, READY = 0, 1, 2
#: Notice kind: the rest at the start was not quiet (see the module docstring).
REST_NOT_QUIET = "rest_not_quiet"
#: Weight (in blocks) of the prior dispersion 1 in the rest energy's dispersion.
DISPERSION_PRIOR = 20.0
#: Whole blocks :meth:`CusumDetector._span` first tries together, and at most.
SPAN_START, SPAN_MAX = 8, 64


@dataclass
class _Segment:
    """The rest of a chunk from sample ``a`` on, prepared at once (``CusumDetector._segment``).

    ``x`` the raw samples (n_channels, m); ``xlag`` the ``lag`` raw samples before; ``dd``
    and ``jump`` the square and magnitude of ``x[k] - x[k - lag]``; ``xf`` the filtered
    samples and ``xfe`` the whitener's ``p`` filtered samples before, then ``xf``;
    ``state`` the filters' state before ``xf``.
    """

    a: int
    x: np.ndarray
    xlag: np.ndarray
    dd: np.ndarray
    jump: np.ndarray
    xf: np.ndarray
    xfe: np.ndarray
    state: tuple[bool, np.ndarray]


@dataclass(frozen=True)
class Notice:
    """Something the operator should know that is not a detection (e.g. rest not quiet).

    Attributes
    ----------
    sample : int
        Absolute sample index at which it was found (a block boundary).
    time : float
        Stream time of that sample.
    channel : str
    kind : str
        :data:`REST_NOT_QUIET`.
    message : str
        What was found and what the detector does about it.
    """

    sample: int
    time: float
    channel: str
    kind: str
    message: str


def detector_filters(filters: FilterSettings, settings: CusumSettings,
                     fs: float) -> FilterSettings:
    """The band-pass and notch the detector runs: ``filters`` with the low edge raised to
    ``settings.highpass_hz`` where it is lower (module docstring, step 2).

    Raises
    ------
    ConfigError
        The raised edge does not fit below the band's upper edge at ``fs``.
    """
    lo, hi = filters.bandpass_hz
    if settings.highpass_hz <= lo:
        return filters
    top = min(hi, NYQUIST_CAP * fs / 2.0)
    if settings.highpass_hz >= top:
        raise ConfigError(
            f"detector 'cusum': highpass_hz = {settings.highpass_hz:g} Hz is not below the "
            f"band-pass's upper edge ({top:g} Hz at {fs:g} Hz); lower [detector] "
            "highpass_hz (0 keeps the [filters] band as it is)")
    return replace(filters, bandpass_hz=(settings.highpass_hz, hi))


def calibrated_variance(cal: Calibration) -> float:
    """Rest variance of the filtered signal from a calibration's envelope statistics.

    For the moving-RMS envelope the calibration measures, the mean of the squared
    envelope is the filtered signal's variance: ``rest_mean**2 + rest_sd**2``.
    """
    return float(cal.rest_mean) ** 2 + float(cal.rest_sd) ** 2


class CusumDetector(Detector):
    """``kind = "cusum"``: multichannel sequential onset/offset detector on the raw EMG
    (module docstring).

    It reads the blanked raw samples (``wants_raw``): its artefact hold works before its
    own band-pass and notch (the config's ``[filters]``), so the filters never ring on an
    impulse it holds. The statistic it reports is the onset CUSUM (the bank's maximum,
    0 while active), in nats; its threshold ``h_nats`` with the refractory rise.

    Parameters
    ----------
    settings : CusumSettings
    fs, channels, calibrations
        See :class:`~closedloop.core.detectors.base.Detector`; a calibrated channel uses
        its rest variance (required for every channel when ``settings.baseline`` is
        ``"calibrated"``).
    filters : FilterSettings, optional
        The band-pass and notch it runs on the raw samples (default: the library's).
    """

    kind = "cusum"
    settings_type = CusumSettings
    wants_raw = True
    #: Displays: the onset CUSUM in nats; offsets are decided on the offset CUSUM.
    statistic_info = Statistic("cusum statistic", "nats", "stat", offsets_on_it=False)

    def __init__(
        self,
        settings: CusumSettings,
        fs: float,
        channels: Sequence[str],
        calibrations: Sequence[Calibration | None] | None = None,
        *,
        filters: FilterSettings | None = None,
    ) -> None:
        super().__init__(settings, fs, channels, calibrations)
        s = settings
        n = len(self.channels)
        ms = self.fs / 1000.0
        self.block = max(1, int(round(s.block_ms * ms)))
        self.warmup_blocks = int(math.ceil(s.warmup_ms * ms / self.block))
        self.learn_blocks = max(2, int(math.ceil(s.learn_ms * ms / self.block)))
        self.n_refr = int(round(s.refractory_ms * ms))
        self.n_art_max = int(round(s.artifact_max_ms * ms))
        self.p = s.ar_order if s.whiten else 0
        self.lag_max = max(self.p + 1, int(round(0.01 * self.fs)))
        need = self.lag_max + self.p + 1  # the block autocorrelation's lags (n_lags)
        if self.block < need:
            raise ConfigError(
                f"detector 'cusum': block_ms = {s.block_ms:g} is {self.block} samples at "
                f"{self.fs:g} Hz, fewer than the {need} lags of the rest autocorrelation a "
                f"block must hold (10 ms plus ar_order + 1); use block_ms >= "
                f"{math.ceil(need / ms):g}")
        rho = np.asarray(sorted(set(s.ratios)), dtype=np.float64)
        self._gain = (1.0 - 1.0 / rho)[None, :, None]  # (1, K, 1)
        self._lnrho = np.log(rho)[None, :, None]
        self._off_gain = 1.0 - 1.0 / s.off_ratio
        self._off_ln = math.log(s.off_ratio)
        self._alpha = min(1.0, self.block / (s.history_s * self.fs))

        self.cal_var = np.full(n, np.nan)
        for c, cal in enumerate(self.calibrations):
            if cal is not None:
                self.cal_var[c] = calibrated_variance(cal)
            elif s.baseline == "calibrated":
                raise ValueError(
                    f"channel {self.channels[c]!r} has no calibration but the detector "
                    "baseline is 'calibrated'; run `closedloop calibrate` or use "
                    "baseline = 'adaptive'"
                )
        self.adaptive = np.isnan(self.cal_var)

        self.filters = FilterBank(detector_filters(filters or FilterSettings(), s, self.fs),
                                  self.fs, n)
        self.phase = np.full(n, WARMUP, dtype=np.int8)
        self.state = np.zeros(n, dtype=np.int8)
        self.suspended = np.zeros(n, dtype=bool)
        self.held = np.zeros(n, dtype=bool)
        self._stat: np.ndarray | None = None  # the onset statistic of the chunk being run
        self._thr: np.ndarray | None = None  # ... and the onset threshold at each sample
        #: Per channel: prediction-error filter ``[1, a1, ..., ap]``.
        self.whitener = np.zeros((n, self.p + 1))
        self.whitener[:, 0] = 1.0
        #: Per channel: variance of the whitened rest (NaN until learnt).
        self.sigma2 = np.full(n, np.nan)
        #: Per channel: effective independent samples per sample of the whitened rest.
        self.kappa = np.ones(n)
        #: Samples between the raw values the artefact test compares: one period of the
        #: mains (``[filters] notch_hz``) with ``artifact_mains_lag``, else 5 ms (docstring 1).
        mains = (filters or FilterSettings()).notch_hz
        lag_s = 1.0 / mains if s.artifact_mains_lag and mains > 0 else 0.005
        self.lag = max(1, int(round(lag_s * self.fs)))
        self._sd_d = np.full(n, np.nan)  # rest SD of x[k] - x[k - lag]
        self._xlag = np.zeros((n, self.lag))  # last `lag` raw samples (after the hold)
        self._started = False
        self._art_on = np.zeros(n, dtype=bool)
        self._art_held = np.zeros(n)
        self._art_start = np.zeros(n, dtype=np.int64)
        self._art_quiet_until = np.zeros(n, dtype=np.int64)
        self._freeze_until = np.zeros(n, dtype=np.int64)
        #: Samples the evidence stays frozen after a hold, at least ``lag`` (the artefact
        #: test looks back that far: until then it sees the hold's edges).
        self.n_ring = max(self.lag, int(round(s.artifact_ring_ms * ms)))
        self._xhist = np.zeros((n, self.p))  # last p filtered samples
        k = rho.size
        self._S = np.zeros((n, k))  # bank running sums since the last reset
        self._M = np.zeros((n, k))  # their running minimum (starts at -g)
        self._Sd = np.zeros(n)  # offset CUSUM likewise
        self._Md = np.zeros(n)
        self._off_sample = np.full(n, -(2**62), dtype=np.int64)
        #: Per channel: the onset statistic (max over the bank) at the last sample.
        self.statistic = np.zeros(n)
        # block accounting
        self._blk_fill = 0
        self._blk_buf = np.zeros((n, self.block))  # filtered samples of the current block
        self._prev_buf = np.zeros((n, self.block))  # ... and of the block before
        self._prev_dd = np.zeros(n)
        # per-sample values of the current block, summed once at its end (sums of pieces
        # would round differently for different chunkings)
        self._blk_u = np.zeros((n, self.block))
        self._blk_dd = np.zeros((n, self.block))
        self._hold_ok = np.ones(n, dtype=bool)  # idle at the last block boundary
        self._blk_busy = np.zeros(n, dtype=bool)
        self._blk_stim = False  # the current block was touched by stimulation
        self._stim: tuple[np.ndarray, np.ndarray] | None = None  # masks for the next chunk
        self._learn: list[list[tuple[np.ndarray, float, float]]] = [[] for _ in range(n)]
        self._noticed = np.zeros(n, dtype=bool)  # a notice was issued in this learning
        self._low_blocks = np.zeros(n, dtype=np.int64)
        self._n_rest = np.zeros(n, dtype=np.int64)  # blocks in the rest estimate
        #: Lags of the rest autocorrelation kept (the whitener's and kappa's).
        self.n_lags = self.lag_max + self.p + 1
        self._acf = np.zeros((n, self.n_lags))  # rest autocorrelation of the filtered signal
        self._learnt_var = np.full(n, np.nan)  # the filtered rest variance as first learnt
        p = self.p
        self._toep = np.abs(np.arange(p)[:, None] - np.arange(p)[None, :])  # Toeplitz lags
        #: r lags |t + i - j| giving the whitened autocorrelation r_e(t), t = 0..lag_max
        self._re_lags = np.abs(np.arange(self.lag_max + 1)[:, None, None]
                               + np.arange(p + 1)[None, :, None] - np.arange(p + 1)[None, None, :])
        self._disp_s = np.zeros(n)  # forgetting sums of (block mean of u - 1)**2 / model var
        self._disp_w = np.zeros(n)
        self._phi = np.ones(n)
        #: Per channel: kappa over the rest energy's dispersion (what the CUSUMs use).
        self.kappa_eff = np.ones(n)
        self.notices: list[Notice] = []

    @classmethod
    def from_config(cls, config, fs: float, channels: Sequence[str]) -> CusumDetector:
        """The detector of a config's ``[detector]`` and calibrations."""
        return cls(config.detector, fs, channels, config.calibrations(), filters=config.filters)

    # -- public state -------------------------------------------------------------------
    @property
    def ready(self) -> np.ndarray:
        """Per channel: the rest is learnt, the channel can trigger."""
        return self.phase == READY

    @property
    def active(self) -> np.ndarray:
        """Per channel: between an onset and its offset."""
        return self.state == ACTIVE

    def threshold(self, sample: int | None = None) -> np.ndarray:
        """Per channel: the onset threshold (nats) in force at ``sample`` (default: the
        next sample), with the refractory rise; NaN while the channel is not ready."""
        k = self.position if sample is None else int(sample)
        h = self._h_from(k, 1)
        return np.where(self.ready, h[:, 0] if isinstance(h, np.ndarray) else h, np.nan)

    def _h(self, since_off: np.ndarray) -> np.ndarray:
        s = self.settings
        if self.n_refr <= 0 or s.refractory_gain == 0.0 or np.min(since_off) >= self.n_refr:
            return np.full(np.shape(since_off), s.h_nats)
        frac = np.clip(1.0 - since_off / self.n_refr, 0.0, 1.0)
        return s.h_nats * (1.0 + s.refractory_gain * frac)

    def drain_notices(self) -> list[Notice]:
        """The notices issued since the last call, oldest first."""
        out, self.notices = self.notices, []
        return out

    def stimulation(self, blanked: np.ndarray, stimulating: np.ndarray) -> None:
        """Where the next chunk was touched by stimulation (see
        :meth:`~closedloop.core.detectors.base.Detector.stimulation`): blanked samples
        carry no evidence, and no block touched by a train teaches the rest."""
        self._stim = (np.asarray(blanked, dtype=bool), np.asarray(stimulating, dtype=bool))

    def pop_notes(self) -> list[RestNote]:
        """The notices as the session shows them (:class:`RestNote` with the message)."""
        index = {name: i for i, name in enumerate(self.channels)}
        return [RestNote(n.sample, index[n.channel], "not_quiet", n.sample, math.nan,
                         message=n.message) for n in self.drain_notices()]

    def hold(self, channel: int, held: bool) -> None:
        """No new onset while held (an onset under way goes on)."""
        self.held[channel] = held

    def restart_channel(self, channel: int, level: float) -> None:
        """After a bad stretch: the own filters restart at ``level``, the evidence at 0."""
        self.filters.restart_channel(channel, level)
        self._xlag[channel] = level
        self._xhist[channel] = 0.0
        self._S[channel] = 0.0
        self._M[channel] = 0.0

    def suspend(self, channel: int, suspended: bool, sample: int, time: float) -> list[Event]:
        """Suspend (or resume) a channel's detection (bad input): like
        :meth:`closedloop.core.detectors.threshold.OnsetDetector.suspend`, an offset (when active)
        and a ``suspend`` event; on resume the evidence starts from zero."""
        events: list[Event] = []
        if suspended and self.state[channel] == ACTIVE:
            self.state[channel] = IDLE
            self._off_sample[channel] = sample
            events.append(Event(sample, time, self.channels[channel], OFFSET))
        if suspended and not self.suspended[channel]:
            events.append(Event(sample, time, self.channels[channel], SUSPEND))
        if not suspended and self.suspended[channel]:
            self._S[channel] = 0.0
            self._M[channel] = 0.0
        self.suspended[channel] = suspended
        return events

    # -- processing ---------------------------------------------------------------------
    def process(self, filtered: np.ndarray, raw: np.ndarray,
                timestamps: np.ndarray) -> Detection:
        """Process one chunk of the raw EMG, channel-major ``(n_channels, n)`` (the
        pipeline's ``filtered`` is not used: see the class docstring); notices go to
        :attr:`notices`.

        The chunk is prepared at once (:meth:`_segment`: filters, differences) and walked
        block by block (:meth:`_fast_piece`); runs of whole blocks where nothing happens
        are taken together (:meth:`_span`); a piece where the artefact hold may act goes
        through the exact per-sample path (:meth:`_piece`) and the rest of the chunk is
        prepared again after it. Every path computes the same values with the same
        operations, so the results do not depend on which one ran (nor on the chunking).
        """
        x = np.asarray(raw, dtype=np.float64)
        n = x.shape[1]
        start = self.position
        self._stat = np.full(x.shape, np.nan)
        self._thr = np.full(x.shape, np.inf)
        blanked, stimulating = self._stim or (None, None)
        self._stim = None
        events: list[Event] = []
        # NaN (channels not learnt) compared with thresholds: False, quietly
        with np.errstate(invalid="ignore"):
            seg: _Segment | None = None
            span, cool = SPAN_START, 0  # blocks to try together; blocks before trying again
            # samples touched by stimulation: no run of blocks takes one in
            touched = np.zeros(0, dtype=np.int64)
            if blanked is not None or stimulating is not None:
                touched = np.flatnonzero((np.zeros(n, dtype=bool) if blanked is None
                                          else blanked)
                                         | (False if stimulating is None else stimulating))
            a = 0
            while a < n:
                if seg is None:
                    seg = self._segment(x, a)
                free = n  # the first sample from a on touched by stimulation
                if touched.size:
                    t = int(np.searchsorted(touched, a))
                    free = int(touched[t]) if t < touched.size else n
                if (self._blk_fill == 0 and free - a >= 2 * self.block and cool == 0
                        and self._may_span(start + a)):
                    want = min(span, (free - a) // self.block)
                    done = self._span(seg, a, want, start)
                    a += done * self.block
                    if done == want:
                        span = min(SPAN_MAX, 2 * span)
                        continue
                    span = max(2, done)
                    cool = 0 if done else 1
                elif cool:
                    cool -= 1
                if a >= n:
                    break
                b = min(n, a + self.block - self._blk_fill)
                if stimulating is not None and stimulating[a:b].any():
                    self._blk_stim = True
                bl = None if blanked is None or not blanked[a:b].any() else blanked[a:b]
                if not self._fast_piece(seg, a, b, start, timestamps, events, bl):
                    self._leave(seg, a)
                    seg = None
                    self._piece(np.array(x[:, a:b], order="C"), start + a, timestamps[a:b],
                                events, bl)
                a = b
                if self._blk_fill == self.block:
                    self._end_block(start + a, float(timestamps[a - 1]))
            if seg is not None:
                self._leave(seg, n)
            self.position = start + n
            if len(events) > 1:
                events.sort(key=lambda e: e.sample)
            stat, self._stat = self._stat, None
            thr, self._thr = self._thr, None
            self.on_threshold[:] = self.threshold()
            self.off_threshold[:] = self.on_threshold
            above = stat > thr  # each sample against the threshold it met
        return Detection(stat, above, events)

    def _segment(self, x: np.ndarray, a: int) -> _Segment:
        """Prepare samples ``a:`` of the chunk ``x`` at once, as :meth:`_piece` would
        piece by piece while no artefact hold changes them: the ``lag``-sample
        differences, the filtered samples (the filters' state before is kept, to go back
        to), and the samples before each (the artefact test's and the whitener's)."""
        if not self._started:
            self._xlag[:] = x[:, a : a + 1]
            self._started = True
        xs = x[:, a:]
        m, lag = xs.shape[1], self.lag
        d = np.empty_like(xs)  # x[k] - x[k - lag]: the samples before come from _xlag
        k = min(m, lag)
        np.subtract(xs[:, :k], self._xlag[:, :k], out=d[:, :k])
        if m > lag:
            np.subtract(xs[:, lag:], xs[:, : m - lag], out=d[:, lag:])
        state = (self.filters._started, self.filters._filter.zi.copy())
        xf = self.filters.process_inplace(np.array(xs, order="C"))
        xfe = np.concatenate((self._xhist, xf), axis=1) if self.p else xf
        return _Segment(a, xs, self._xlag, d * d, np.abs(d), xf, xfe, state)

    def _leave(self, seg: _Segment, a: int) -> None:
        """Stop using ``seg`` at chunk sample ``a``: the samples before ``a`` are the
        history, and the filters' state is the one at ``a``."""
        j, lag = a - seg.a, self.lag
        self._xlag = (seg.x[:, j - lag : j].copy() if j >= lag
                      else np.concatenate((seg.xlag[:, j:], seg.x[:, :j]), axis=1))
        if self.p:
            self._xhist = seg.xfe[:, j : j + self.p].copy()
        if j < seg.x.shape[1]:  # the filters ran on to the chunk's end: run them to a
            self.filters._started, zi = seg.state
            self.filters._filter.zi = zi.copy()
            if j:
                self.filters.process_inplace(np.array(seg.x[:, :j], order="C"))

    def _fast_piece(self, seg: _Segment, a: int, b: int, start: int, timestamps: np.ndarray,
                    events: list[Event], blanked: np.ndarray | None) -> bool:
        """:meth:`_piece` over chunk samples ``a:b`` from the prepared ``seg``; False
        (and nothing done) where the artefact hold may act: that piece needs
        :meth:`_piece`."""
        i0, i1 = a - seg.a, b - seg.a
        p0 = start + a
        ready = self.phase == READY
        any_ready = bool(ready.any())
        if any_ready:
            lim = self.settings.artifact_ratio * self._sd_d  # NaN (never) while not learnt
            jump = np.max(seg.jump[:, i0:i1], axis=1) > lim
            if (ready & (self._art_on | (jump & self._hold_ok)
                         | (self._freeze_until > p0))).any():
                return False
        n = i1 - i0
        f0 = self._blk_fill
        self._blk_dd[:, f0 : f0 + n] = seg.dd[:, i0:i1]
        xf = seg.xf[:, i0:i1]
        self._blk_buf[:, f0 : f0 + n] = xf
        self._blk_fill += n
        if not any_ready:
            return True
        p = self.p
        if p:  # e[k] = sum_j a[j] xf[k - j], as in _piece
            e = self.whitener[:, :1] * xf
            for j in range(1, p + 1):
                e += self.whitener[:, j : j + 1] * seg.xfe[:, p - j + i0 : p - j + i1]
        else:
            e = xf.copy()
        u = np.multiply(e, e, out=e)
        np.divide(u, self.sigma2[:, None], out=u)
        np.minimum(u, self.settings.clip, out=u)
        np.copyto(self._blk_u[:, f0 : f0 + n], u, where=ready[:, None])
        frozen = None if blanked is None else np.broadcast_to(blanked, u.shape)
        self._detect(u, frozen, ready & ~self.suspended, p0, timestamps[a:b], events)
        return True

    def _may_span(self, p0: int) -> bool:
        """Whether whole blocks from sample ``p0`` (a block boundary) may be taken
        together: every channel learnt, none suspended or held, no artefact hold or
        freeze under way."""
        return bool((self.phase == READY).all() and not self.suspended.any()
                    and not self.held.any() and not self._art_on.any()
                    and (self._freeze_until <= p0).all() and self.n_lags - 1 <= self.block)

    def _span(self, seg: _Segment, a: int, blocks: int, start: int) -> int:
        """Whole blocks from chunk sample ``a`` (a block boundary) taken together, on the
        guess that nothing happens in them: no channel's artefact test fires, no
        channel's rest is learnt again (a second low block in a row), no idle channel's
        CUSUM reaches half its threshold (so every idle block teaches the rest and no
        onset is decided) and no active channel's offset CUSUM crosses. The rest
        estimate's recursions run block by block (cheap), the whitener, kappa and rest
        variance of every block are fitted in one batch, and the CUSUMs run over all
        samples at once, with the same operations on the same values as block by block.
        The blocks before the first where the guess fails are kept (that block, and what
        follows, run the ordinary way); returns how many.
        """
        n, m, nb = self.block, self.n_lags - 1, blocks
        nn = nb * n
        i = a - seg.a
        p0 = start + a
        nch = len(self.channels)
        st = self.settings
        idle = self.state == IDLE
        I = np.flatnonzero(idle)  # noqa: E741 - the idle channels
        A = np.flatnonzero(~idle)
        xf = seg.xf[:, i : i + nn]
        xb = xf.reshape(nch, nb, n)
        var = self._block_var(xb)
        ddm = np.add.reduce(seg.dd[:, i : i + nn].reshape(nch, nb, n), axis=2) / n
        jmax = np.max(seg.jump[:, i : i + nn].reshape(nch, nb, n), axis=2)
        ext = np.concatenate((self._prev_buf[:, n - m :], xf), axis=1)
        windows = np.lib.stride_tricks.sliding_window_view(ext, m + n, axis=1)[:, : nn : n]
        fail = np.zeros(nb, dtype=bool)  # blocks where the guess fails
        # the rest estimate of the idle channels after each block, then its fits
        whit = np.repeat(self.whitener[:, None, :], nb, axis=1)  # in force in each block
        sig = np.repeat(self.sigma2[:, None], nb, axis=1)
        keff = np.repeat(self.kappa_eff[:, None], nb, axis=1)
        ni = I.size
        if ni:
            ad = self.adaptive[I]
            # the weight each block's autocorrelation gets, and the artefact scale before
            # each block (Python's floats and pow, as _rest_step): the artefact test of
            # every block and the low-block test need nothing else, so the guess is cut
            # there before anything costly
            alphas = np.maximum(self._alpha, 1.0 / (self._n_rest[I][:, None]
                                                    + np.arange(1, nb + 1)[None, :]))
            sd_before = np.repeat(self._sd_d[I][:, None], nb, axis=1)  # (ni, nb)
            sd_after = sd_before.copy()
            for j in np.flatnonzero(ad).tolist():
                v, out, ok = float(self._sd_d[I[j]]), [], nb
                for k, (al, d2) in enumerate(zip(alphas[j].tolist(), ddm[I[j]].tolist(),
                                                 strict=True)):
                    w = v ** 2 + al * (d2 - v ** 2)
                    if not w >= 0.0:
                        ok = k
                        break
                    v = math.sqrt(w)
                    out.append(v)
                fail[ok:] = True
                sd_after[j, : len(out)] = out
                sd_before[j, 1 : len(out) + 1] = out[: nb - 1]
            # a low block counts; the second in a row makes the rest be learnt again
            low = ad[:, None] & (var[I] < (self._learnt_var[I] / st.quiet_ratio)[:, None])
            low_before = np.concatenate(((self._low_blocks[I] >= 1)[:, None], low[:, :-1]),
                                        axis=1)
            fail |= (low & low_before).any(axis=0)
            fail |= (jmax[I] > st.artifact_ratio * sd_before).any(axis=0)
            nb = int(np.argmax(fail)) if fail.any() else nb
            if nb == 0:
                return 0
            nn = nb * n
            xb, fail = xb[:, :nb], fail[:nb]
            whit, sig, keff = whit[:, :nb], sig[:, :nb], keff[:, :nb]
            # the rest estimate after each block, then its fits in one batch
            r = self._block_acf(windows[I, :nb])  # (ni, nb, n_lags)
            acf = self._acf[I].copy()
            acfs = np.empty((nb, ni, self.n_lags))
            for k in range(nb):
                acf += alphas[:, k, None] * (r[:, k] - acf)
                acfs[k] = acf
            fa, fk, fv, fg = self._fit_rows(acfs.reshape(nb * ni, self.n_lags), ni == 1)
            fa = fa.reshape(nb, ni, self.p + 1)
            fk, fv, fg = fk.reshape(nb, ni), fv.reshape(nb, ni), fg.reshape(nb, ni)
            fs2 = np.where(self.adaptive[I], fv, self.cal_var[I] * fg)  # (nb, ni)
            whit[I, 1:] = fa[:-1].transpose(1, 0, 2)
            sig[I, 1:] = fs2[:-1].T
        # the whitened, normalised energy of every block
        p = self.p
        if p:
            e = whit[:, :, :1] * xb
            for j in range(1, p + 1):
                e += whit[:, :, j : j + 1] * seg.xfe[:, p - j + i : p - j + i + nn].reshape(
                    nch, nb, n)
        else:
            e = xb.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.minimum(e * e / sig[:, :, None], st.clip)
        stop = nb
        if ni:
            # the dispersion after each block (Python's floats and pow, as _rest_step)
            phis = np.repeat(self._phi[I][:, None], nb, axis=1)  # (ni, nb)
            dss = np.repeat(self._disp_s[I][:, None], nb, axis=1)
            dws = np.repeat(self._disp_w[I][:, None], nb, axis=1)
            if st.dispersion:
                u_mean = np.add.reduce(u[I], axis=2) / n  # (ni, nb)
                kap = np.concatenate((self.kappa[I][:, None], fk[:-1].T), axis=1)  # in force
                sq = np.array([v ** 2 for v in (u_mean - 1.0).ravel().tolist()])
                z = sq.reshape(ni, nb) * kap * n / 2.0
                b1 = 1.0 - self._alpha  # (1 - a) * s + z, block after block
                dss = decaying_sum(z, self._disp_s[I], b1)
                dws = decaying_sum(np.ones((ni, nb)), self._disp_w[I], b1)
                phis = (DISPERSION_PRIOR + dss) / (DISPERSION_PRIOR + dws)
            if nb > 1:
                keff[I, 1:] = np.minimum(1.0, fk[:-1] / phis[:, :-1].T).T
        nn = stop * n  # the CUSUMs over the blocks still guessed right
        u = u[:, :stop].reshape(nch, nn)
        kap05 = np.repeat(keff[:, :stop] * 0.5, n, axis=1)
        h = self._h_from(p0, nn)
        hI = h[I] if isinstance(h, np.ndarray) else h
        if ni:
            uI, kI = (u, kap05) if ni == nch else (u[I], kap05[I])
            S = np.multiply(self._gain, uI[:, None, :])
            np.subtract(S, self._lnrho, out=S)
            np.multiply(kI[:, None, :], S, out=S)
            S[:, :, 0] += self._S[I]
            np.cumsum(S, axis=2, out=S)
            # the running minimum from the one carried (min is exact in any grouping)
            S0 = S[:, :, 0].copy()
            S[:, :, 0] = np.minimum(S0, self._M[I])
            M = np.minimum.accumulate(S, axis=2)
            S[:, :, 0] = S0
            gmax = np.max(S - M, axis=1)  # (ni, nn)
            busy = (gmax > 0.5 * hI).reshape(ni, stop, n).any(axis=2).any(axis=0)
            fail[:stop] |= busy
        if A.size:
            so = kap05[A] * (self._off_ln - self._off_gain * u[A])
            so[:, 0] += self._Sd[A]
            So = np.cumsum(so, axis=1)
            Mo = np.minimum(np.minimum.accumulate(So, axis=1), self._Md[A][:, None])
            off = (So - Mo > st.off_nats).reshape(A.size, stop, n).any(axis=2).any(axis=0)
            fail[:stop] |= off
        keep = int(np.argmax(fail[:stop])) if fail[:stop].any() else stop
        if keep == 0:
            return 0
        last = keep * n - 1
        assert self._stat is not None and self._thr is not None
        if ni:
            self._stat[I, a : a + last + 1] = gmax[:, : last + 1]
            self._thr[I, a : a + last + 1] = (hI[:, : last + 1] if isinstance(hI, np.ndarray)
                                                 else hI)
            self._S[I], self._M[I] = S[:, :, last], M[:, :, last]
            self.statistic[I] = gmax[:, last]
            k = keep - 1
            self._n_rest[I] += keep
            self._acf[I] = acfs[k]
            self.whitener[I] = fa[k]
            self.kappa[I] = fk[k]
            self.sigma2[I] = fs2[k]
            self._phi[I], self._disp_s[I], self._disp_w[I] = phis[:, k], dss[:, k], dws[:, k]
            self.kappa_eff[I] = np.minimum(1.0, fk[k] / phis[:, k])
            self._sd_d[I] = sd_after[:, k]
            self._low_blocks[I[ad]] = low[ad, k]
        if A.size:
            self._stat[A, a : a + last + 1] = 0.0
            self._Sd[A], self._Md[A] = So[:, last], Mo[:, last]
            self._low_blocks[A] = 0
        self._prev_buf[:] = xb[:, keep - 1]
        self._prev_dd = ddm[:, keep - 1].copy()
        self._blk_u.fill(0.0)
        return keep

    def _piece(self, x: np.ndarray, p0: int, ts: np.ndarray, events: list[Event],
               blanked: np.ndarray | None = None) -> None:
        """Samples ``p0 .. p0 + n`` (all inside one block): artefacts, filters, detection;
        ``blanked``: the samples the pipeline filled in over stimulation pulses (no
        evidence either way from them)."""
        n = x.shape[1]
        ready = self.phase == READY
        if not self._started:
            self._xlag[:] = x[:, :1]
            self._started = True
        frozen, starts = self._artifacts(x, p0, ready) if ready.any() else (None, {})
        if frozen is not None and self.settings.rest_skips_ringing:
            self._blk_busy |= np.logical_or.reduce(frozen, axis=1)  # held, or ringing
        if blanked is not None:  # every channel alike (frozen[c] is read per channel)
            frozen = np.broadcast_to(blanked, x.shape) | (False if frozen is None else frozen)
        ext = np.concatenate((self._xlag, x), axis=1)
        d = x - ext[:, :n]  # x[k] - x[k - lag], after the hold
        self._xlag = ext[:, n:].copy()
        f0 = self._blk_fill
        np.multiply(d, d, out=self._blk_dd[:, f0 : f0 + n])
        xf = self.filters.process_inplace(x)
        self._blk_buf[:, f0 : f0 + n] = xf
        self._blk_fill += n
        # partial prewhitening: e[k] = sum_j a[j] xf[k - j], the same operations in any chunking
        p = self.p
        if p:
            ext = np.concatenate((self._xhist, xf), axis=1)
            e = self.whitener[:, :1] * xf
            for j in range(1, p + 1):
                e += self.whitener[:, j : j + 1] * ext[:, p - j : p - j + n]
            self._xhist = ext[:, n:].copy()
        else:
            e = xf.copy()
        if not ready.any():
            return
        with np.errstate(invalid="ignore"):
            u = np.minimum(e * e / self.sigma2[:, None], self.settings.clip)
        if self._art_on.any():
            self._blk_busy |= self._art_on
        np.copyto(self._blk_u[:, f0 : f0 + n], u, where=ready[:, None])
        live = ready & ~self.suspended
        a = 0
        for k, chans in sorted(starts.items()):  # hold_resets_evidence
            if k > a:
                self._detect(u[:, a:k], None if frozen is None else frozen[:, a:k], live,
                             p0 + a, ts[a:k], events)
            for c in chans:
                if self.state[c] == IDLE:  # what the rise before the hold gave goes
                    self._S[c] = 0.0
                    self._M[c] = 0.0
                    self.statistic[c] = 0.0
            a = k
        self._detect(u[:, a:], None if frozen is None else frozen[:, a:], live, p0 + a,
                     ts[a:], events)

    def _artifacts(self, x: np.ndarray, p0: int,
                   ready: np.ndarray) -> tuple[np.ndarray | None, dict[int, list[int]]]:
        """Sample-and-hold over impulsive artefacts, in place on raw ``x`` (docstring 1).

        A hold starts where the raw signal moved more than ``artifact_ratio`` rest SDs of
        its ``lag``-sample difference (a mains period, or 5 ms) away from where it was
        ``lag`` samples before (during a freeze: from the level held), and holds that
        earlier value. Returns where the evidence is frozen (during a hold and for
        ``n_ring`` samples after it, while the band-pass rings on the hold's edges), or
        None when nowhere, and where holds started with ``hold_resets_evidence``
        (piece sample: the channels whose hold starts there)."""
        lag = self.lag
        n = x.shape[1]
        lim = self.settings.artifact_ratio * self._sd_d  # NaN (never) while not learnt
        ext = np.concatenate((self._xlag, x), axis=1)
        with np.errstate(invalid="ignore"):
            jump = np.abs(ext[:, lag:] - ext[:, :n]) > lim[:, None]
        # an active channel starts no hold: an artefact cannot start anything there, and
        # a very strong contraction must not be chopped into holds
        cand = ready & (self._art_on | (np.logical_or.reduce(jump, axis=1) & self._hold_ok)
                        | (self._freeze_until > p0))
        starts: dict[int, list[int]] = {}
        if not cand.any():
            return None, starts
        frozen = np.zeros(x.shape, dtype=bool)
        resets = self.settings.hold_resets_evidence
        echo_free = self.settings.artifact_mains_lag
        for c in np.flatnonzero(cand).tolist():
            freeze_until = int(self._freeze_until[c])
            held = float(self._art_held[c])
            on = bool(self._art_on[c])
            start = int(self._art_start[c])
            quiet_until = int(self._art_quiet_until[c])
            limit = float(lim[c])
            may_start = bool(self._hold_ok[c])
            row = ext[c]  # row[lag + k] is sample k of the piece; holds are written into it
            for k in range(n):
                v = float(row[lag + k])
                k_abs = p0 + k
                if on:
                    if k_abs - start >= self.n_art_max:
                        on = False  # too long for an impulse: let it through
                        freeze_until, quiet_until = k_abs, k_abs + self.n_art_max
                    elif abs(v - held) <= limit:
                        on = False  # back near the held level: the impulse is over
                        freeze_until = k_abs + self.n_ring
                    else:
                        row[lag + k] = held
                        self._blk_busy[c] = True
                else:
                    # where the signal was: ``lag`` samples before; within an episode's
                    # freeze (echo_free) the level held, not the flanks of the knock a lag
                    # before (which would start a hold again one lag after it)
                    was = held if echo_free and k_abs < freeze_until else float(row[k])
                    if may_start and k_abs >= quiet_until and abs(v - was) > limit:
                        if k_abs >= freeze_until:
                            start = k_abs  # a new episode (holds within a freeze continue one)
                        if k_abs - start >= self.n_art_max:
                            freeze_until, quiet_until = k_abs, k_abs + self.n_art_max
                        else:
                            on, held = True, was
                            row[lag + k] = held
                            self._blk_busy[c] = True
                            if resets:  # the rise before it gave evidence: it goes
                                starts.setdefault(k, []).append(c)
                frozen[c, k] = on or k_abs < freeze_until
            x[c] = row[lag:]
            self._freeze_until[c] = freeze_until
            self._art_on[c] = on
            self._art_held[c] = held
            self._art_start[c] = start
            self._art_quiet_until[c] = quiet_until
        return frozen, starts

    def _detect(self, u: np.ndarray, frozen: np.ndarray | None, live: np.ndarray, p0: int, ts,
                events) -> None:
        """The CUSUMs over one piece: vectorised while nothing crosses, exact per channel
        where something does."""
        n = u.shape[1]
        idle = live & (self.state == IDLE) & ~self.held  # held: no new onset
        h = self._h_from(p0, n)  # the threshold, or per channel and sample while it is raised
        active = live & (self.state == ACTIVE)
        slow: list[int] = active.nonzero()[0].tolist() if active.any() else []
        if idle.any():
            S = np.multiply(self._gain, u[:, None, :])  # (n_ch, K, n)
            np.subtract(S, self._lnrho, out=S)
            np.multiply(self.kappa_eff[:, None, None] * 0.5, S, out=S)
            if frozen is not None:
                S *= ~frozen[:, None, :]
            S[:, :, 0] += self._S
            np.cumsum(S, axis=2, out=S)
            M = np.minimum(np.minimum.accumulate(S, axis=2), self._M[:, :, None])
            gmax = np.max(S - M, axis=1)  # (n_ch, n)
            crossed = np.logical_or.reduce(gmax > h, axis=1) & idle
            half = np.logical_or.reduce(gmax > 0.5 * h, axis=1)
            done = idle & ~crossed
            a = p0 - self.position
            if done.all():
                self._S, self._M, self.statistic = S[:, :, -1].copy(), M[:, :, -1].copy(), \
                    gmax[:, -1].copy()
                if self._stat is not None and self._thr is not None:
                    self._stat[:, a : a + n] = gmax
                    self._thr[:, a : a + n] = h
            else:
                self._S = np.where(done[:, None], S[:, :, -1], self._S)
                self._M = np.where(done[:, None], M[:, :, -1], self._M)
                self.statistic = np.where(done, gmax[:, -1], self.statistic)
                if self._stat is not None and self._thr is not None and done.any():
                    self._stat[done, a : a + n] = gmax[done]
                    self._thr[done, a : a + n] = h[done] if isinstance(h, np.ndarray) else h
            self._blk_busy |= done & half
            if crossed.any():
                slow.extend(crossed.nonzero()[0].tolist())
        if slow:
            hh = np.broadcast_to(h, u.shape)
            for c in sorted(slow):
                self._blk_busy[c] = True
                self._channel(int(c), u[c], None if frozen is None else frozen[c], hh[c], p0,
                              ts, events)

    def _h_from(self, p0: int, n: int) -> float | np.ndarray:
        """The onset threshold at samples ``p0 .. p0 + n``: ``h_nats`` when no channel's
        is raised there, else per channel and sample (:meth:`_h`)."""
        if (self.n_refr <= 0 or self.settings.refractory_gain == 0.0
                or p0 - self._off_sample.max() >= self.n_refr):
            return self.settings.h_nats
        return self._h((p0 + np.arange(n))[None, :] - self._off_sample[:, None])

    def _put(self, c: int, p0: int, i: int, values: np.ndarray,
             thresholds: np.ndarray | None = None) -> None:
        """Record the onset statistic of channel ``c`` from sample ``p0 + i`` on, and the
        onset threshold in force at each of those samples (none while active)."""
        if self._stat is not None and self._thr is not None:
            a = p0 - self.position + i
            self._stat[c, a : a + values.shape[0]] = values
            if thresholds is not None:
                self._thr[c, a : a + values.shape[0]] = thresholds[: values.shape[0]]

    def _channel(self, c: int, u: np.ndarray, frozen: np.ndarray | None, h: np.ndarray, p0: int,
                 ts, events) -> None:
        """The exact per-sample state machine of one channel over one piece."""
        n = u.shape[0]
        kap = float(self.kappa_eff[c])
        i = 0
        while i < n:
            if self.state[c] == IDLE:
                s = kap * 0.5 * (self._gain[0] * u[None, i:] - self._lnrho[0])  # (K, m)
                if frozen is not None:
                    s *= ~frozen[None, i:]
                s[:, 0] += self._S[c]
                S = np.cumsum(s, axis=1)
                M = np.minimum(np.minimum.accumulate(S, axis=1), self._M[c][:, None])
                gmax = np.max(S - M, axis=0)
                hh = h if i == 0 else self._h(p0 + np.arange(i, n) - self._off_sample[c])
                hit = np.flatnonzero(gmax > hh)
                if not hit.size:
                    self._S[c], self._M[c] = S[:, -1], M[:, -1]
                    self.statistic[c] = gmax[-1]
                    self._put(c, p0, i, gmax, hh)
                    return
                k = i + int(hit[0])
                self._put(c, p0, i, gmax[: hit[0] + 1], hh)
                thr = float(hh[hit[0]])
                events.append(Event(p0 + k, float(ts[k]), self.channels[c], ONSET,
                                    float(gmax[hit[0]]), thr))
                self.state[c] = ACTIVE
                self._Sd[c] = self._Md[c] = 0.0
                self._S[c] = 0.0
                self._M[c] = 0.0
                self.statistic[c] = 0.0
            else:
                s = kap * 0.5 * (self._off_ln - self._off_gain * u[i:])
                if frozen is not None:
                    s *= ~frozen[i:]
                s[0] += self._Sd[c]
                S = np.cumsum(s)
                M = np.minimum(np.minimum.accumulate(S), self._Md[c])
                g = S - M
                hit = np.flatnonzero(g > self.settings.off_nats)
                if not hit.size:
                    self._Sd[c], self._Md[c] = S[-1], M[-1]
                    self._put(c, p0, i, np.zeros(n - i))
                    return
                k = i + int(hit[0])
                self._put(c, p0, i, np.zeros(hit[0] + 1))
                events.append(Event(p0 + k, float(ts[k]), self.channels[c], OFFSET,
                                    float(g[hit[0]]), self.settings.off_nats))
                self.state[c] = IDLE
                self._off_sample[c] = p0 + k
                self._S[c] = 0.0
                self._M[c] = 0.0
            i = k + 1

    # -- blocks: learning and tracking the rest -----------------------------------------
    def _end_block(self, block_end: int, time: float) -> None:
        block_index = block_end // self.block - 1
        n = self.block
        buf = self._blk_buf
        var = self._block_var(buf[:, None, :])[:, 0]
        dd = np.add.reduce(self._blk_dd, axis=1) / n
        busy = self._blk_busy | (self.state == ACTIVE) | self._blk_stim
        ready = (self.phase == READY) & ~self.suspended
        learning = (self.phase != READY) & ~self.suspended
        self._low_blocks[ready & busy] = 0
        idle = ready & ~busy
        track = np.flatnonzero(idle)
        relearn = np.zeros(len(self.channels), dtype=bool)
        if track.size:
            u_mean = np.add.reduce(self._blk_u, axis=1) / n
            alpha, again = self._rest_step(track, u_mean[track], var[track], dd[track])
            if again.any():
                relearn[track[again]] = True
                track, alpha = track[~again], alpha[~again]
        # channel by channel, in order (the notices they issue keep that order)
        for c in np.flatnonzero(learning | relearn).tolist():
            if relearn[c]:
                self._relearn(c, float(var[c]) / self._learnt_var[c], buf[c], float(dd[c]),
                              block_end, time)
            elif self.phase[c] == WARMUP:
                if block_index + 1 >= self.warmup_blocks:
                    self.phase[c] = LEARNING
            elif not self._blk_stim:
                self._learn_block(c, buf[c].copy(), float(var[c]), float(dd[c]), block_end,
                                  time)
        if track.size:
            self._track(track, alpha)
        self._prev_buf, self._blk_buf = self._blk_buf, self._prev_buf
        self._prev_dd = dd
        self._blk_fill = 0
        self._blk_u.fill(0.0)
        self._blk_busy.fill(False)
        self._blk_stim = False
        self._hold_ok = self.state == IDLE

    @staticmethod
    def _block_var(blocks: np.ndarray) -> np.ndarray:
        """Mean square of each block, (c, B, block) -> (c, B); one block or many at once
        give the same bits."""
        return np.einsum("cbn,cbn->cb", blocks, blocks) / blocks.shape[2]

    def _rest_step(self, idx: np.ndarray, u_mean: np.ndarray, var: np.ndarray,
                   dd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scalar part of an idle block's end for channels ``idx``: the block count
        and the weight ``alpha`` its autocorrelation gets, the dispersion, the low-block
        test and the artefact scale. Returns ``alpha`` and where the low-block test asks
        for the rest to be learnt again (those channels' artefact scale is not updated).

        Squares are taken as Python's ``x ** 2`` (the C library's ``pow``), as this
        update was first written, so its results stay bit for bit what they were."""
        self._n_rest[idx] += 1  # a cumulative mean first, then exponential
        alpha = np.maximum(self._alpha, 1.0 / self._n_rest[idx])
        if self.settings.dispersion:
            sq = np.array([v ** 2 for v in (u_mean - 1.0).tolist()])
            z = sq * self.kappa[idx] * self.block / 2.0
            a = self._alpha
            self._disp_s[idx] = (1.0 - a) * self._disp_s[idx] + z
            self._disp_w[idx] = (1.0 - a) * self._disp_w[idx] + 1.0
            self._phi[idx] = ((DISPERSION_PRIOR + self._disp_s[idx])
                              / (DISPERSION_PRIOR + self._disp_w[idx]))
        relearn = np.zeros(idx.size, dtype=bool)
        adaptive = self.adaptive[idx]
        if adaptive.any():
            low = adaptive & (var < self._learnt_var[idx] / self.settings.quiet_ratio)
            lows = self._low_blocks[idx]
            lows = np.where(low, lows + 1, np.where(adaptive, 0, lows))
            self._low_blocks[idx] = lows
            relearn = low & (lows >= 2)
            upd = adaptive & ~relearn
            if upd.any():
                c = idx[upd]
                sd2 = np.array([v ** 2 for v in self._sd_d[c].tolist()])
                self._sd_d[c] = np.sqrt(sd2 + alpha[upd] * (dd[upd] - sd2))
        return alpha, relearn

    def _learn_block(self, c: int, xb: np.ndarray, var: float, dd: float, block_end: int,
                     time: float) -> None:
        win = self._learn[c]
        win.append((xb, var, dd))
        if len(win) < self.learn_blocks:
            return
        v = np.array([w[1] for w in win])
        q = self.settings.quiet_ratio
        why = ""
        if not (v.min() > 0.0 and np.isfinite(v).all()):
            why = "the signal is flat or not finite"
        elif v.max() / v.min() > q:
            why = (f"its power changed {v.max() / v.min():.1f}-fold within "
                   f"{len(win) * self.block / self.fs * 1000:.0f} ms")
        elif not self.adaptive[c] and v.mean() > q * self.cal_var[c]:
            why = f"it is {v.mean() / self.cal_var[c]:.1f} times the calibrated rest"
        if why:
            if not self._noticed[c]:
                self._notice(c, block_end, time,
                             f"rest was not quiet on {self.channels[c]!r} ({why}); "
                             "waiting for quiet rest before detecting")
                self._noticed[c] = True
            win.pop(0)
            return
        self._fit(c, win)
        self._learn[c] = []
        self.phase[c] = READY
        self._S[c] = 0.0
        self._M[c] = 0.0
        self.state[c] = IDLE

    def _fit(self, c: int, win) -> None:
        """Start the rest estimate from a quiet window: its autocorrelation, then the
        whitener, kappa and rest variance from it (:meth:`_refit`); the artefact scale."""
        x = np.concatenate([w[0] for w in win])
        x = x - x.mean()
        length = x.size
        self._acf[c] = np.array([x[: length - k] @ x[k:] for k in range(self.n_lags)]) / length
        self._learnt_var[c] = self._acf[c, 0]
        self._n_rest[c] = len(win)
        self._disp_s[c] = self._disp_w[c] = 0.0
        self._phi[c] = 1.0
        self._refit(np.array([c]))
        self._sd_d[c] = math.sqrt(float(np.mean([w[2] for w in win])))

    def _refit(self, idx: np.ndarray) -> None:
        """Whitening filter, whitened rest variance and kappa of channels ``idx`` from
        their rest autocorrelation (:meth:`_fit_rows`)."""
        a, kappa, var_e, gain = self._fit_rows(self._acf[idx], idx.size == 1)
        self.whitener[idx] = a
        self.kappa[idx] = kappa
        self.kappa_eff[idx] = np.minimum(1.0, kappa / self._phi[idx])
        self.sigma2[idx] = np.where(self.adaptive[idx], var_e, self.cal_var[idx] * gain)

    def _fit_rows(self, r: np.ndarray, alone: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                          np.ndarray]:
        """Whitener, kappa, whitened variance and whitening gain of each row of rest
        autocorrelations ``r`` (m, n_lags) (Yule-Walker with the zero lag loaded; the
        whitened rest's autocorrelation follows exactly: ``r_e(t) = sum_ij a_i a_j r(t + i
        - j)``). Row by row: a row's result does not depend on the others, so the rows of
        one block or of many blocks at once give the same bits; ``alone``: the rows are
        of one channel (see the kappa sum below)."""
        p = self.p
        a = np.zeros((r.shape[0], p + 1))
        a[:, 0] = 1.0
        if p:
            ok = r[:, 0] > 0.0
            rr = r[:, : p + 1].copy()
            rr[:, 0] *= 1.0 + self.settings.ar_loading + 1e-9
            toeplitz = rr[:, self._toep]  # (m, p, p)
            if ok.all():
                a[:, 1:] = -np.linalg.solve(toeplitz, rr[:, 1 : p + 1, None])[:, :, 0]
            else:
                a[ok, 1:] = -np.linalg.solve(toeplitz[ok], rr[ok, 1 : p + 1, None])[:, :, 0]
        re = np.einsum("ci,cj,ctij->ct", a, a, r[:, self._re_lags])  # (m, lag_max + 1)
        var_e = re[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(var_e[:, None] > 0, re[:, 1:] / var_e[:, None], 0.0)
            gain = np.where(r[:, 0] > 0, var_e / r[:, 0], 1.0)
        # numpy sums the squares of one channel's row in its contiguous kernel, and of
        # several channels' (the layout np.where gives them) lag by lag: which depends on
        # how many channels were fitted together; kept as first written, so the results
        # stay bit for bit what they were
        rho = np.ascontiguousarray(rho) if alone else np.asfortranarray(rho)
        kappa = 1.0 / (1.0 + 2.0 * np.einsum("ct,ct->c", rho, rho))
        return a, kappa, var_e, gain

    def _track(self, idx: np.ndarray, alpha: np.ndarray) -> None:
        """Fold the idle block's autocorrelation of channels ``idx`` (lags reaching into
        the block before) into their rest estimates and refit them."""
        n, m = self.block, self.n_lags - 1
        ext = np.concatenate((self._prev_buf[idx, n - m :], self._blk_buf[idx]), axis=1)
        r = self._block_acf(ext[:, None, :])[:, 0]
        self._acf[idx] += alpha[:, None] * (r - self._acf[idx])
        self._refit(idx)

    def _block_acf(self, ext: np.ndarray) -> np.ndarray:
        """Autocorrelation, lags 0..n_lags - 1, of blocks ``ext[:, b, m:]`` (each preceded
        by the ``m = n_lags - 1`` samples before it), shape (c, B, m + block) -> (c, B,
        n_lags). Each block's sums run alone, so one block or many at once give the same
        bits."""
        n = self.block
        m = ext.shape[2] - n
        # windows[:, :, j] = the block shifted back by m - j samples (a read-only view)
        s0, s1, s2 = ext.strides
        windows = np.lib.stride_tricks.as_strided(
            ext, (ext.shape[0], ext.shape[1], m + 1, n), (s0, s1, s2, s2), writeable=False)
        return np.einsum("cbn,cbkn->cbk", ext[:, :, m:], windows[:, :, ::-1]) / n

    def _relearn(self, c: int, um: float, xb: np.ndarray, dd: float, block_end: int,
                 time: float) -> None:
        """Two idle blocks far below the learnt rest: what was learnt was activity. The
        rest is fitted again on those two quiet blocks (no blind time) and the operator
        told."""
        self._notice(
            c, block_end, time,
            f"rest was not quiet on {self.channels[c]!r}: the signal fell to "
            f"{um:.2f} of the rest learnt before (the muscle was active then); "
            "rest learnt again from the quiet signal",
        )
        prev = (self._prev_buf[c].copy(), 0.0, float(self._prev_dd[c]))
        self._fit(c, [prev, (xb.copy(), 0.0, dd)])
        self._low_blocks[c] = 0
        self._S[c] = 0.0
        self._M[c] = 0.0

    def _notice(self, c: int, block_end: int, time: float, message: str) -> None:
        self.notices.append(Notice(int(block_end) - 1, float(time), self.channels[c],
                                   REST_NOT_QUIET, message))
