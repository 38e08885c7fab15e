"""The signal core in one object: blanking -> filters -> comb -> detector, chunk by chunk.

``Pipeline.process(samples, timestamps)`` is what every caller uses: the live loop, the
offline ``detect`` command, replay, calibration and the evaluation tools, so they all
make the same decisions from the same samples. The detector is whichever the config's
``[detector] kind`` names (:data:`closedloop.registry.DETECTORS`; the interface is
:class:`~closedloop.core.detectors.base.Detector`). With an
:class:`~closedloop.core.blanking.ArtifactRemover` (the live loop and replay, which know
the stimulation), stimulation pulses are blanked in the raw samples before the filters
and the pulse-locked residual is cancelled after them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop.config import Config, default_config
from closedloop.config.signal import FS_RANGE
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.detectors.base import Detector
from closedloop.core.events import Block
from closedloop.core.filters import FilterBank
from closedloop.errors import InputError
from closedloop.registry import DETECTORS


def build_detector(config: Config, fs: float, channels: Sequence[str]) -> Detector:
    """The detector ``config`` chooses (``[detector] kind``), built for ``fs`` and
    ``channels`` with the config's settings and calibrations."""
    cls = DETECTORS.load(config.detector_kind)
    return cls.from_config(config, fs, channels)


def check_rate(fs: float) -> float:
    """``fs`` as a float, if the signal core works at it (:data:`FS_RANGE`).

    Raises
    ------
    InputError
        An irregular (0 Hz), non-finite or out-of-range rate: before anything is
        allocated (at 1e12 Hz a 15 ms window alone would need 224 GB).
    """
    rate = float(fs)
    if math.isfinite(rate) and FS_RANGE[0] <= rate <= FS_RANGE[1]:
        return rate
    what = ("declares no regular sampling rate (0 Hz: an irregular stream)" if rate == 0
            else f"is sampled at {rate:g} Hz")
    raise InputError(f"the EMG {what}; closedloop's signal core works at "
                     f"{FS_RANGE[0]:g}-{FS_RANGE[1]:g} Hz (surface EMG: 1 kHz or more, 2 kHz "
                     "recommended). Give a recording, stream or file sampled at such a rate")


class Pipeline:
    """Stateful causal EMG pipeline for ``channels`` at ``fs``.

    Parameters
    ----------
    fs : float
        Sampling rate in Hz (100-20000).
    channels : sequence of str
        Channel (muscle) names in column order.
    config : Config, optional
        Filters, detector (kind and settings), envelope and calibrations (one per
        channel, in order); default: the library defaults.
    artifacts : ArtifactRemover, optional
        Stimulation-artifact removal around the filters (its schedule is fed by the
        caller, :meth:`ArtifactRemover.command`).
    """

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        config: Config | None = None,
        *,
        artifacts: ArtifactRemover | None = None,
    ) -> None:
        self.fs = check_rate(fs)
        self.channels = tuple(channels)
        self.config = config if config is not None else default_config(self.channels)
        n = len(self.channels)
        self.filters = FilterBank(self.config.filters, self.fs, n)
        self.detector = build_detector(self.config, self.fs, self.channels)
        self.artifacts = artifacts
        self._restarted: set[int] = set()  # since the last block (Block.restarts)

    def restart_channel(self, channel: int, level: float) -> None:
        """Restart one channel's filters as if its input had always been ``level``.

        For a channel that comes back after a flat, saturated or humming stretch: the
        step from that stretch back to EMG would otherwise ring in the band-pass and
        the mains notch (whose ring lasts ~Q / (pi f0), 0.2 s at Q 30) like a burst of
        activity. Called between chunks, at a sample the caller chose on the sample
        clock, it keeps the pipeline chunk-invariant.

        Everything the channel's past left in the core is forgotten with it: the
        detector's conditioning (an envelope starts from silence: a bad stretch of huge
        values would otherwise leave a rounding residue in the moving RMS's running sum
        for the rest of the session) and the stimulation-blanking template restarts at
        ``level`` (it must not fill a later blanked stretch with what it learnt from the
        bad one). The next block names the channel in its
        :attr:`~closedloop.core.events.Block.restarts`, for what conditions its samples
        outside the core (the report's EMG level).
        """
        self._restarted.add(int(channel))
        self.filters.restart_channel(channel, level)
        self.detector.restart_channel(channel, level)
        if self.artifacts is not None:
            self.artifacts.restart_channel(channel, level)

    @property
    def position(self) -> int:
        """Absolute index of the next sample to be processed."""
        return self.detector.position

    def process(self, samples: np.ndarray, timestamps: np.ndarray | None = None) -> Block:
        """Process one chunk.

        Parameters
        ----------
        samples : ndarray, shape (n, n_channels)
            Raw EMG. Must be finite (the input checks replace bad values first).
        timestamps : ndarray, shape (n,), optional
            Stream times; ``sample / fs`` when omitted.
        """
        start = self.detector.position
        n = samples.shape[0]
        if timestamps is None:
            timestamps = (start + np.arange(n)) / self.fs
        x = np.array(samples.T, dtype=np.float64, order="C")  # channel-major working copy
        if self.artifacts is not None:
            self.artifacts.blank_inplace(x, start)
            stimulating = self.artifacts.stimulating(start, n)
            if stimulating.any():
                self.detector.stimulation(self.artifacts.blank_mask(start, n), stimulating)
        raw = x.copy() if self.detector.wants_raw else x
        filtered = self.filters.process_inplace(x)
        if self.artifacts is not None:
            self.artifacts.comb_inplace(filtered, start)
        d = self.detector.process(filtered, raw, timestamps)
        restarts, self._restarted = tuple(sorted(self._restarted)), set()
        return Block(
            start=start,
            timestamps=timestamps,
            filtered=filtered.T,
            envelope=d.statistic.T,
            above=d.above.T,
            on_threshold=self.detector.on_threshold.copy(),
            off_threshold=self.detector.off_threshold.copy(),
            events=d.events,
            channels=self.channels,
            restarts=restarts,
        )


def detector_pipeline(kind: str, fs: float, channels: Sequence[str], *,
                      config: Config | None = None, **params: Any) -> Pipeline:
    """A pipeline running detector ``kind`` with ``params`` over ``config``'s settings
    (default: the library defaults) for offline use: ``closedloop evaluate``'s
    ``--detector NAME:k=v``, tests and benchmarks.

    ``params`` are keys of the detector's ``[detector]`` table, or of ``[filters]`` and
    ``[envelope]`` (``k_on=5``, ``window_ms=25``, ``bandpass_hz=(30, 450)``...); they are
    validated as a config file's would be.

    Raises
    ------
    ConfigError
        An unknown kind or parameter, or a value out of range.
    """
    from dataclasses import asdict, fields, replace

    from closedloop.config.model import detector_settings_for
    from closedloop.config.schema import parse_table
    from closedloop.config.signal import EnvelopeSettings, FilterSettings
    from closedloop.errors import ConfigError

    base = config or default_config(tuple(channels))
    source = f"detector {kind!r}"
    model = detector_settings_for(kind)
    groups: dict[str, dict[str, Any]] = {"filters": {}, "envelope": {}, "detector": {}}
    own = {f.name for f in fields(model)}
    for key, value in params.items():
        value = list(value) if isinstance(value, tuple) else value
        if key in own:
            groups["detector"][key] = value
        elif key in {f.name for f in fields(FilterSettings)}:
            groups["filters"][key] = value
        elif key in {f.name for f in fields(EnvelopeSettings)}:
            groups["envelope"][key] = value
        else:
            groups["detector"][key] = value  # refused below, naming the detector's keys
    same = base.detector_kind == kind
    detector = parse_table(model, {**(asdict(base.detector) if same else {}),
                                   **groups["detector"]}, source=source)
    filters = parse_table(FilterSettings, {**asdict(base.filters), **groups["filters"]},
                          source=source)
    envelope = parse_table(EnvelopeSettings, {**asdict(base.envelope), **groups["envelope"]},
                           source=source)
    config = replace(base, detector=detector, detector_kind=kind, filters=filters,
                     envelope=envelope)
    lacking = [m.name for m in config.muscles if m.calibration is None]
    if detector.baseline == "calibrated" and lacking:
        raise ConfigError(f"{source}: the detector baseline is 'calibrated' but "
                          f"{', '.join(lacking)} has no calibration; run `closedloop "
                          "calibrate` or use baseline = 'adaptive'")
    return Pipeline(fs, channels, config)


class OfflineDetector:
    """A detector over raw EMG in time-major chunks, for offline use (``evaluate``,
    tests, benchmarks): a :class:`Pipeline` whose :meth:`process` returns the events.

    Attributes
    ----------
    kind : str
        The detector's registered name.
    params : dict
        Its settings (after defaults), JSON-serialisable, for tables and logs.
    pipeline : Pipeline
    detector : Detector
        The detector inside (``pipeline.detector``).
    """

    def __init__(self, pipeline: Pipeline) -> None:
        from dataclasses import asdict

        self.pipeline = pipeline
        self.detector = pipeline.detector
        self.kind = pipeline.config.detector_kind
        self.channels = pipeline.channels
        self.fs = pipeline.fs
        self.params = {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in asdict(pipeline.config.detector).items()}

    @property
    def name(self) -> str:
        """The detector's kind."""
        return self.kind

    @property
    def filter_settings(self):  # noqa: ANN201 - FilterSettings
        """The band-pass and notch the pipeline runs before the detector."""
        return self.pipeline.config.filters

    @property
    def position(self) -> int:
        """Samples processed so far."""
        return self.pipeline.position

    def process(self, samples: np.ndarray, timestamps: np.ndarray | None = None) -> list:
        """Events decided in the next chunk of raw EMG, shape (n, n_channels)."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.channels):
            raise ValueError(
                f"detector {self.kind!r} expects samples of shape (n, {len(self.channels)}), "
                f"got {x.shape}")
        if timestamps is not None and len(timestamps) != x.shape[0]:
            raise ValueError(f"{len(timestamps)} timestamps for {x.shape[0]} samples")
        return self.pipeline.process(x, timestamps).events

    def __repr__(self) -> str:
        return f"<OfflineDetector {self.kind} fs={self.fs:g} ch={len(self.channels)}>"


def make_detector(kind: str, fs: float, channels: Sequence[str], *,
                  config: Config | None = None,
                  calibrations: Sequence[Any] | None = None, **params: Any) -> OfflineDetector:
    """An :class:`OfflineDetector` running detector ``kind`` (any registered name or
    ``module:Class`` spec) with ``params`` over ``config``'s settings (see
    :func:`detector_pipeline`), with per-channel ``calibrations`` when given.

    Raises
    ------
    ConfigError
        Unknown kind or parameter, a value out of range, or no channels.
    """
    from dataclasses import replace

    from closedloop.errors import ConfigError

    if not channels:
        raise ConfigError(f"detector {kind!r}: no channels given")
    base = config or default_config(tuple(channels))
    if calibrations is not None:
        base = replace(base, muscles=tuple(replace(m, calibration=c) for m, c in
                                           zip(base.muscles, calibrations, strict=True)))
    return OfflineDetector(detector_pipeline(kind, fs, channels, config=base, **params))
