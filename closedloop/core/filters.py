"""Causal band-pass + mains-notch filter bank whose state survives chunk boundaries.

All sections (band-pass and every notch) form one second-order-section cascade run by a
single call per chunk (see :mod:`closedloop.core.sos`), because per-call overhead, not
arithmetic, dominates at 20-sample chunks. Arrays are channel-major (n_channels, n). The
state ``zi`` is carried from chunk to chunk, so filtering in chunks of any size is
bit-identical to one pass over the whole signal (the same recurrence in the same order).
The state starts at the steady state for the first sample, so a DC offset (e.g. raw ADC
counts) causes no start-up transient.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from closedloop.config.signal import FS_RANGE, FilterSettings
from closedloop.core.sos import SosFilter

#: The upper band edge is capped at this fraction of Nyquist.
NYQUIST_CAP = 0.9


def effective_band(settings: FilterSettings, fs: float) -> tuple[float, float]:
    """The band actually used at ``fs``: the upper edge capped below Nyquist."""
    lo, hi = settings.bandpass_hz
    hi = min(hi, NYQUIST_CAP * fs / 2.0)
    if lo >= hi:
        raise ValueError(
            f"band-pass {settings.bandpass_hz} Hz does not fit below Nyquist at fs={fs:g} Hz; "
            f"lower the low edge below {hi:g} Hz"
        )
    return lo, hi


def notch_frequencies(settings: FilterSettings, fs: float) -> list[float]:
    """Mains frequency and harmonics that lie below the capped upper band edge."""
    if settings.notch_hz <= 0:
        return []
    _, hi = effective_band(settings, fs)
    freqs = [settings.notch_hz * k for k in range(1, settings.notch_harmonics + 1)]
    return [f for f in freqs if f < hi]


def design_sos(settings: FilterSettings, fs: float) -> np.ndarray:
    """The whole cascade (band-pass, then notches) as second-order sections."""
    if not FS_RANGE[0] <= fs <= FS_RANGE[1]:
        raise ValueError(f"sampling rate {fs:g} Hz is outside the supported "
                         f"{FS_RANGE[0]:g}-{FS_RANGE[1]:g} Hz")
    lo, hi = effective_band(settings, fs)
    parts = [signal.butter(settings.order, [lo, hi], btype="bandpass", fs=fs, output="sos")]
    for f0 in notch_frequencies(settings, fs):
        b, a = signal.iirnotch(f0, settings.notch_q, fs=fs)
        parts.append(signal.tf2sos(b, a))
    return np.ascontiguousarray(np.vstack(parts))


class FilterBank:
    """Stateful multichannel causal filter on channel-major (n_channels, n) arrays."""

    def __init__(self, settings: FilterSettings, fs: float, n_channels: int) -> None:
        self.settings = settings
        self.fs = float(fs)
        self.n_channels = int(n_channels)
        self.sos = design_sos(settings, fs)
        self._filter = SosFilter(self.sos, n_channels)
        self._started = False

    def reset(self) -> None:
        """Forget the state; the next chunk starts a new signal."""
        self._started = False

    def restart_channel(self, channel: int, level: float) -> None:
        """Restart one channel as if its input had always been ``level`` (after a bad
        stretch: no ringing from the step back to EMG)."""
        self._filter.restart(channel, level)

    def process_inplace(self, x: np.ndarray) -> np.ndarray:
        """Filter ``x`` (n_channels, n), C-contiguous float64, in place; returns it."""
        if x.shape[1] == 0:
            return x
        if not self._started:
            self._filter.set_steady_state(x[:, 0])
            self._started = True
        return self._filter.process_inplace(x)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Filter samples (n, n_channels); returns a new (n, n_channels) array."""
        x = np.array(samples.T, dtype=np.float64, order="C")
        return self.process_inplace(x).T
