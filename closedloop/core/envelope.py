"""Stateful causal envelopes: moving RMS, rectify + low-pass, Teager-Kaiser + low-pass.

Arrays are channel-major, (n_channels, n). Every envelope is a recurrence whose state is
carried across chunks, so chunking never changes a value, to the bit:

* moving RMS: a running sum of squares ``S[k] = S[k-1] + x[k]**2 - x[k-W]**2`` evaluated
  with :func:`numpy.cumsum` (sequential, so the same additions happen in the same order
  whatever the chunking), then ``sqrt(S / W)``. A cumsum restarted at each chunk, or an
  FIR filter call, rounds differently depending on where a chunk begins and is not
  chunk-invariant to the bit. Rounding drift of the running sum is far below any EMG
  level over hours of samples; the sum is clamped at zero before the square root.
* rectify + low-pass: ``|x|`` through a 2nd-order Butterworth low-pass.
* Teager-Kaiser: made causal by evaluating it one sample late,
  ``psi[n] = x[n-1]**2 - x[n-2] * x[n]``, then ``|psi|`` through the same low-pass.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from closedloop.config.signal import EnvelopeSettings
from closedloop.core.sos import SosFilter


class Envelope:
    """Multichannel envelope. ``process_inplace`` takes the filtered (n_channels, n)."""

    def __init__(self, settings: EnvelopeSettings, fs: float, n_channels: int) -> None:
        self.settings = settings
        self.fs = float(fs)
        self.n_channels = int(n_channels)
        self.kind = settings.kind
        if self.kind == "rms":
            self.window = max(1, int(round(settings.window_ms * fs / 1000.0)))
            self._hist = np.zeros((n_channels, self.window))  # last W squared samples
            self._sum = np.zeros(n_channels)
            self._scale = 1.0 / self.window
        else:
            cutoff = min(settings.cutoff_hz, 0.45 * fs)
            sos = signal.butter(2, cutoff, btype="lowpass", fs=fs, output="sos")
            self._lp = SosFilter(sos, n_channels)
            self._prev = np.zeros((n_channels, 2))  # x[n-2], x[n-1] for the TKEO

    def restart_channel(self, channel: int) -> None:
        """Forget one channel's past: its envelope starts again from silence.

        Called with a restart of the channel's filters (see
        :meth:`~closedloop.core.pipeline.Pipeline.restart_channel`). It also clears what
        a bad stretch left in the moving RMS's running sum: after samples of 1e10, the
        sum of squares keeps a rounding residue far above any EMG level (``1e20``
        loses every digit of ``1e-10``), which never leaves the sum on its own.
        """
        if self.kind == "rms":
            self._hist[channel] = 0.0
            self._sum[channel] = 0.0
        else:
            self._lp.restart(channel, 0.0)
            self._prev[channel] = 0.0

    def process_inplace(self, x: np.ndarray) -> np.ndarray:
        """Envelope of ``x`` (n_channels, n); returns a new array (``x`` is kept)."""
        n = x.shape[1]
        if n == 0:
            return np.empty_like(x)
        if self.kind == "rms":
            sq = x * x
            ext = np.concatenate((self._hist, sq), axis=1)
            d = sq - ext[:, :n]
            d[:, 0] += self._sum
            s = np.cumsum(d, axis=1)
            self._sum = s[:, -1].copy()
            self._hist = ext[:, n:].copy() if n > self.window else ext[:, n:]
            np.maximum(s, 0.0, out=s)
            s *= self._scale
            return np.sqrt(s, out=s)
        if self.kind == "lowpass":
            rect = np.abs(x)
        else:
            ext = np.concatenate((self._prev, x), axis=1)
            rect = np.abs(ext[:, 1:-1] ** 2 - ext[:, :-2] * ext[:, 2:])
            self._prev = ext[:, -2:].copy()
        return self._lp.process_inplace(rect)

    def process(self, filtered: np.ndarray) -> np.ndarray:
        """Envelope of (n, n_channels) samples; returns (n, n_channels)."""
        x = np.array(filtered.T, dtype=np.float64, order="C")
        return self.process_inplace(x).T


def level_settings(settings: EnvelopeSettings) -> EnvelopeSettings:
    """The envelope that shows a muscle's activity as an EMG amplitude (in the EMG's
    unit) whatever the detector decides on: the config's ``[envelope]`` when it is an
    amplitude (``rms``, ``lowpass``: what a calibration measures, so a level in % MVC
    means what it says), else a moving RMS over its window.

    For the displays of a detector whose statistic is not an amplitude (cusum's
    log-likelihood ratio in nats): the view, the status line and the report show this
    level beside it.
    """
    if settings.kind in ("rms", "lowpass"):
        return settings
    from dataclasses import replace

    return replace(settings, kind="rms")
