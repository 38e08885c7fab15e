"""The signal core in one object: filters -> envelope -> detector, chunk by chunk.

``Pipeline.process(samples, timestamps)`` is what every caller uses: the live loop, the
offline ``detect`` command, replay and the evaluation tools, so they all make the same
decisions from the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from closedloop.core.detector import OnsetDetector
from closedloop.core.envelope import Envelope
from closedloop.core.events import Block
from closedloop.core.filters import FilterBank
from closedloop.core.settings import (
    Calibration,
    DetectorSettings,
    EnvelopeSettings,
    FilterSettings,
)


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
    """

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        filters: FilterSettings | None = None,
        envelope: EnvelopeSettings | None = None,
        detector: DetectorSettings | None = None,
        calibrations: Sequence[Calibration | None] | None = None,
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
        filtered = self.filters.process_inplace(x)
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
