"""Typed settings of the signal core: filters, envelope, detector, calibration, artifacts.

Each field declares its type, range and default once (see
:mod:`closedloop.config.schema`); rules across fields of one table are the class's
``_check`` validator. A bad value, from a config file or from code, is a
:class:`~closedloop.errors.ConfigError` naming the key, the value and what is allowed.
"""

import typing
from typing import Annotated, Literal

from pydantic import model_validator
from typing_extensions import Self

from closedloop.config.schema import Check, Flag, Range, invalid, settings

EnvelopeKind = Literal["rms", "lowpass", "tkeo"]
Baseline = Literal["adaptive", "calibrated"]
ENVELOPES: tuple[str, ...] = typing.get_args(EnvelopeKind)
BASELINES: tuple[str, ...] = typing.get_args(Baseline)

BandEdge = Annotated[float, Range(0.1, 5000.0)]


def _mains(hz: float) -> bool:
    return hz in (0.0, 50.0, 60.0)


#: Sampling rates the signal core supports, Hz (inclusive).
FS_RANGE = (100.0, 20000.0)


@settings
class FilterSettings:
    """``[filters]``: causal band-pass and mains notch.

    ``bandpass_hz`` upper edge is capped below Nyquist (at 0.9 x fs/2) for low-rate
    boards; ``notch_hz = 0`` disables the notch; harmonics above the band are skipped.
    """

    bandpass_hz: tuple[BandEdge, BandEdge] = (20.0, 450.0)
    order: Annotated[int, Range(1, 8)] = 4
    notch_hz: Annotated[float, Range(), Check(_mains, "50 or 60 (mains), or 0 to disable")] = 50.0
    notch_harmonics: Annotated[int, Range(1, 10)] = 3
    notch_q: Annotated[float, Range(1.0, 200.0)] = 30.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.bandpass_hz[0] >= self.bandpass_hz[1]:
            raise invalid("bandpass_hz", list(self.bandpass_hz), "[low, high] with low < high")
        return self


@settings
class EnvelopeSettings:
    """``[envelope]``: moving RMS, rectify + low-pass, or Teager-Kaiser energy + low-pass."""

    kind: EnvelopeKind = "rms"
    window_ms: Annotated[float, Range(2.0, 1000.0)] = 15.0
    cutoff_hz: Annotated[float, Range(0.5, 100.0)] = 20.0


@settings
class DetectorBase:
    """What every detector's ``[detector]`` settings have (a detector's own settings class
    subclasses this and adds its fields; ``kind`` chooses the class, see
    :mod:`closedloop.registry`).

    Attributes
    ----------
    baseline : str
        ``adaptive``: the detector learns the rest level from the signal (the stream
        must start at rest); ``calibrated``: every muscle's ``[muscles.calibration]``
        gives it (``closedloop calibrate``).
    """

    baseline: Baseline = "adaptive"


@settings
class DetectorSettings(DetectorBase):
    """``[detector]`` of ``kind = "threshold"`` (the default): onset/offset detection on
    the ``[envelope]`` with hysteresis, timing rules and an adaptive baseline.

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
        (needs >= ``warmup_ms + min_rest_ms`` of rest at the start, steady: blocks that
        agree within 2 x; learnt again, with a notice, if a quieter rest shows within
        ``history_s`` that it was not rest: see :mod:`closedloop.core.detectors.threshold`);
        ``calibrated``: fixed thresholds from each muscle's calibration.
    block_ms, history_s, warmup_ms, min_rest_ms : float
        Adaptive tracker: statistics per block of samples; the floor is the quieter half
        of the idle blocks in the last ``history_s`` (at least ``min_rest_ms`` long); the
        first ``warmup_ms`` are skipped (filter settling); detection starts after
        ``min_rest_ms`` of idle blocks.
    """

    k_on: Annotated[float, Range(0.5, 100.0)] = 6.0
    off_fraction: Annotated[float, Range(0.0, 1.0)] = 0.5
    mvc_fraction: Annotated[float, Range(0.01, 1.0)] | None = None
    min_on_ms: Annotated[float, Range(0.0, 2000.0)] = 3.0
    min_off_ms: Annotated[float, Range(0.0, 5000.0)] = 100.0
    refractory_ms: Annotated[float, Range(0.0, 60000.0)] = 200.0
    block_ms: Annotated[float, Range(5.0, 1000.0)] = 100.0
    history_s: Annotated[float, Range(0.5, 600.0)] = 10.0
    warmup_ms: Annotated[float, Range(0.0, 10000.0)] = 100.0
    min_rest_ms: Annotated[float, Range(10.0, 60000.0)] = 200.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.history_s * 1000.0 < self.min_rest_ms:
            raise invalid("history_s", self.history_s,
                          f">= min_rest_ms / 1000 = {self.min_rest_ms / 1000:g}")
        return self


@settings
class Calibration:
    """``[muscles.calibration]``: one channel's envelope statistics at rest (and at
    maximal effort), in envelope units of the pipeline that measured them."""

    rest_mean: Annotated[float, Range(0.0)]
    rest_sd: Annotated[float, Range(0.0, lo_open=True)]
    mvc: Annotated[float, Range(0.0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.mvc is not None and self.mvc <= self.rest_mean:
            raise invalid("mvc", self.mvc, f"a value above rest_mean = {self.rest_mean:g}")
        return self

    def thresholds(self, settings: DetectorBase) -> tuple[float, float]:
        """(on, off) envelope thresholds from this calibration and the detector settings
        (of the envelope threshold family; for another detector, such as ``cusum``, which
        takes only the rest variance from a calibration, those the threshold detector's
        defaults give: what the calibration means on its RMS envelope)."""
        if not isinstance(settings, DetectorSettings):
            settings = DetectorSettings()
        if settings.mvc_fraction is not None and self.mvc is not None:
            on = self.rest_mean + settings.mvc_fraction * (self.mvc - self.rest_mean)
        else:
            on = self.rest_mean + settings.k_on * self.rest_sd
        off = self.rest_mean + settings.off_fraction * (on - self.rest_mean)
        return on, off


@settings
class ArtifactSettings:
    """``[artifacts]``: stimulation-artifact removal and the mains-hum check.

    Attributes
    ----------
    blank_ms : float
        Samples blanked after every pulse (0 disables blanking and the comb).
    comb : bool
        Cancel the residual pulse-locked component on a stimulated muscle's channel.
    comb_pulses : int
        Averaging length of the comb's template, in pulses.
    hum_db : float
        A channel whose mains-band power exceeds the rest of its EMG band by more than
        this many dB (over a block of ``hum_block_ms``) is hum-dominated: its detector is
        suspended. 0 disables the check. 30 dB (the hum carries 99.9 % of the band's
        power) is far above a usable recording (the simulated patient's default hum is
        ~10 dB above its noise at rest) and far below a loose electrode (40-60 dB).
    hum_block_ms : float
        Length of the blocks the hum check judges (rounded to whole mains periods).
    hum_recover_s : float
        A hum-dominated channel resumes after this long of blocks below the limit.
    impulse_ratio : float
        A raw sample farther than this many times the channel's learnt range (the
        largest peak-to-peak of the last minute, contractions included) from its level
        is out of range: an impulse (a knock, a static discharge, garbage from the
        driver) when the stretch is over within ``impulse_ms``
        (:mod:`closedloop.core.impulses`). 0 disables the check. 20 (26 dB) is above
        every real recording in the project's test data (at most 4.5 x; the simulated
        patient's first strong contraction at 30 dB SNR: 9 x).
    impulse_ms : float
        Out-of-range stretches shorter than this are impulses and never trigger; longer
        ones that swing like EMG are taken as activity (their onset comes this much
        later), other long ones (absurd values, slow excursions) are held until over.
    """

    blank_ms: Annotated[float, Range(0.0, 50.0)] = 15.0
    comb: Flag = True
    comb_pulses: Annotated[int, Range(1, 1000)] = 8
    hum_db: Annotated[float, Range(0.0, 80.0)] = 30.0
    hum_block_ms: Annotated[float, Range(50.0, 2000.0)] = 200.0
    hum_recover_s: Annotated[float, Range(0.0, 60.0)] = 1.0
    impulse_ratio: Annotated[float, Range(0.0, 1e4), Check(
        lambda r: r == 0 or r >= 5,
        "0 (off) or at least 5: closer to the learnt range, strong contractions would be "
        "held back")] = 20.0
    impulse_ms: Annotated[float, Range(10.0, 200.0)] = 30.0


@settings
class TkeoSettings(DetectorSettings):
    """``[detector]`` of ``kind = "tkeo"``: Teager-Kaiser energy conditioning, then the
    threshold detector's rules (:class:`closedloop.core.detectors.threshold.TkeoDetector`,
    which says where the defaults come from).

    Attributes
    ----------
    band_hz : [low, high]
        A band-pass (4th-order Butterworth) applied to the filtered EMG before the
        energy operator, which weights every component by its frequency squared.
    """

    k_on: Annotated[float, Range(0.5, 100.0)] = 10.0
    band_hz: tuple[BandEdge, BandEdge] = (30.0, 300.0)

    @model_validator(mode="after")
    def _check_band(self) -> Self:
        if self.band_hz[0] >= self.band_hz[1]:
            raise invalid("band_hz", list(self.band_hz), "[low, high] with low < high")
        return self


@settings
class DoubleThresholdSettings(DetectorBase):
    """``[detector]`` of ``kind = "double_threshold"``: the causal Bonato double-threshold
    detector (:class:`closedloop.core.detectors.bonato.DoubleThresholdDetector`, which
    documents them). It learns its rest from the signal: ``baseline`` must be
    ``adaptive``.
    """

    p_fa: Annotated[float, Range(1e-9, 0.5)] = 0.05
    window_ms: Annotated[float, Range(0.5, 1000.0)] = 10.0
    r0: Annotated[int, Range(1, 100000)] = 1
    min_on_ms: Annotated[float, Range(0.0, 2000.0)] = 30.0
    min_off_ms: Annotated[float, Range(0.0, 5000.0)] = 100.0
    refractory_ms: Annotated[float, Range(0.0, 60000.0)] = 200.0
    warmup_ms: Annotated[float, Range(0.0, 10000.0)] = 100.0
    rest_ms: Annotated[float, Range(20.0, 60000.0)] = 200.0
    whiten: Flag = True
    ar_order: Annotated[int, Range(1, 64)] = 6

    @model_validator(mode="after")
    def _check_baseline(self) -> Self:
        if self.baseline != "adaptive":
            raise invalid("baseline", self.baseline,
                          "'adaptive' (this detector learns its rest from the signal)")
        return self


Ratio = Annotated[float, Range(1.05, 1e6)]


@settings
class CusumSettings(DetectorBase):
    """``[detector]`` of ``kind = "cusum"``: the sequential likelihood-ratio detector
    (:mod:`closedloop.core.detectors.cusum`, whose docstring says what each does).

    Times in ms (``history_s`` in s); ``h_nats`` and ``off_nats`` in nats of independent
    evidence. The defaults were chosen with ``closedloop evaluate --splice`` on its
    development seeds only (:data:`closedloop.analysis.splice.DEV_SEEDS`).
    """

    h_nats: Annotated[float, Range(0.5, 1000.0)] = 18.0
    highpass_hz: Annotated[float, Range(0.0, 10000.0)] = 30.0
    ratios: Annotated[tuple[Ratio, ...], Check(
        lambda r: 1 <= len(r) == len(set(r)),
        "at least one variance ratio above 1, each once")] = (2.0, 4.0, 8.0)
    clip: Annotated[float, Range(2.0, 1e9)] = 15.0
    dispersion: Flag = True
    whiten: Flag = True
    ar_order: Annotated[int, Range(1, 32)] = 3
    ar_loading: Annotated[float, Range(0.0, 100.0)] = 0.1
    off_ratio: Ratio = 2.0
    off_nats: Annotated[float, Range(0.5, 1000.0)] = 10.0
    refractory_ms: Annotated[float, Range(0.0, 60000.0)] = 300.0
    refractory_gain: Annotated[float, Range(0.0, 100.0)] = 1.0
    block_ms: Annotated[float, Range(5.0, 1000.0)] = 50.0
    warmup_ms: Annotated[float, Range(0.0, 10000.0)] = 100.0
    learn_ms: Annotated[float, Range(20.0, 60000.0)] = 200.0
    quiet_ratio: Annotated[float, Range(1.5, 1000.0)] = 4.0
    history_s: Annotated[float, Range(0.5, 600.0)] = 10.0
    artifact_ratio: Annotated[float, Range(5.0, 1e9)] = 50.0
    artifact_max_ms: Annotated[float, Range(0.0, 1000.0)] = 20.0
    artifact_ring_ms: Annotated[float, Range(0.0, 1000.0)] = 100.0
    rest_skips_ringing: Flag = True
    artifact_mains_lag: Flag = True
    hold_resets_evidence: Flag = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.learn_ms < 2 * self.block_ms:
            raise invalid("learn_ms", self.learn_ms,
                          f">= 2 x block_ms = {2 * self.block_ms:g} (the quiet test compares "
                          "blocks)")
        return self
