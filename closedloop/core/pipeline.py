"""The signal core in one object: filters -> envelope -> detector, chunk by chunk.

``Pipeline.process(samples, timestamps)`` is what every caller uses: the live loop, the
offline ``detect`` command, replay and the evaluation tools, so they all make the same
decisions from the same samples. With an :class:`~closedloop.core.blanking.ArtifactRemover`
(the live loop and replay, which know the stimulation), stimulation pulses are blanked
in the raw samples before the filters and the pulse-locked residual is cancelled after
them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from closedloop.config.signal import (
    Calibration,
    DetectorSettings,
    EnvelopeSettings,
    FilterSettings,
)
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.envelope import Envelope
from closedloop.core.events import Block
from closedloop.core.filters import FilterBank
from closedloop.core.onset import OnsetDetector


class Pipeline:
    """Stateful causal EMG pipeline for ``n_channels`` channels at ``fs``.

    Parameters
    ----------
    fs : float
        Sampling rate in Hz (100-20000).
    channels : sequence of str
        Channel names (muscle names), in column order.
    filters, envelope, detector : settings dataclasses, optional
        Defaults apply when omitted.
    calibrations : sequence of Calibration or None, optional
        Per-channel calibrations (fixed thresholds for those channels).
    artifacts : ArtifactRemover, optional
        Stimulation-artifact removal around the filters (its schedule is fed by the
        caller, :meth:`ArtifactRemover.command`).
    """

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        filters: FilterSettings | None = None,
        envelope: EnvelopeSettings | None = None,
        detector: DetectorSettings | None = None,
        calibrations: Sequence[Calibration | None] | None = None,
        artifacts: ArtifactRemover | None = None,
    ) -> None:
        self.fs = float(fs)
        self.channels = tuple(channels)
        n = len(self.channels)
        self.filter_settings = filters or FilterSettings()
        self.envelope_settings = envelope or EnvelopeSettings()
        self.detector_settings = detector or DetectorSettings()
        self.filters = FilterBank(self.filter_settings, self.fs, n)
        self.envelope = Envelope(self.envelope_settings, self.fs, n)
        self.detector = OnsetDetector(self.detector_settings, self.fs, self.channels, calibrations)
        self.artifacts = artifacts

    def restart_channel(self, channel: int, level: float) -> None:
        """Restart one channel's filters as if its input had always been ``level``.

        For a channel that comes back after a flat, saturated or humming stretch: the
        step from that stretch back to EMG would otherwise ring in the band-pass and
        the mains notch (whose ring lasts ~Q / (pi f0), 0.2 s at Q 30) like a burst of
        activity. Called between chunks, at a sample the caller chose on the sample
        clock, it keeps the pipeline chunk-invariant.

        Everything the channel's past left in the core is forgotten with it: the
        envelope starts from silence (a bad stretch of huge values would otherwise
        leave a rounding residue in the moving RMS's running sum for the rest of the
        session) and the stimulation-blanking template restarts at ``level`` (it must
        not fill a later blanked stretch with what it learnt from the bad one).
        """
        self.filters._filter.restart(channel, level)
        self.envelope.restart_channel(channel)
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
        filtered = self.filters.process_inplace(x)
        if self.artifacts is not None:
            self.artifacts.comb_inplace(filtered, start)
        env = self.envelope.process_inplace(filtered)
        above, events = self.detector.process(env, timestamps)
        return Block(
            start=start,
            timestamps=timestamps,
            filtered=filtered.T,
            envelope=env.T,
            above=above.T,
            on_threshold=self.detector.on_threshold.copy(),
            off_threshold=self.detector.off_threshold.copy(),
            events=events,
            channels=self.channels,
        )
