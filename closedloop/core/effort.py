"""Voluntary effort during stimulation: the RMS of the EMG between the pulses.

While a muscle is stimulated its EMG holds, at every pulse, the stimulus artifact and
the evoked M-wave (both far larger than the patient's own EMG), and between them the
voluntary EMG, which is what proportional stimulation must follow. The pipeline blanks
every pulse and cancels what is left locked to the pulses (the comb of
:mod:`closedloop.core.blanking`); what comes out is voluntary EMG wherever a sample was
not blanked. :class:`EffortEstimator` measures it there:

``effort^2[k] = sum_j h[k - j] m[j] x[j]^2 / sum_j h[k - j] m[j]``

with ``x`` the filtered (and comb-cancelled) EMG, ``m`` 1 for a sample that was not
blanked (nor within ``guard_ms`` after a blanked stretch) and 0 otherwise, and ``h`` a
causal first-order smoother with time constant ``tau_s`` (an exponential average).
Numerator and denominator go through the same filter, so the estimate is the smoothed
mean square of the samples that count, whatever fraction of the time is blanked: the
same muscle activity reads the same with and without stimulation. Without any pulse
it is the exponential RMS of the filtered EMG. Where almost nothing counts (the
denominator, the recent fraction of counted samples, below ``min_fraction``) the effort
is NaN: unknown, which a protocol must take as no effort (``effort > threshold`` is
False for NaN).

What it needs from the rest of the core: ``blank_ms`` covering the M-wave (a tail the
blanking leaves is spread by the band-pass over the whole interval between pulses, and
sub-sample jitter of the pulses against the samples keeps the comb from cancelling it:
it then reads as effort that grows with the current); and, on a channel that is not the
stimulated one, the comb on every channel (``ArtifactRemover(comb_all=True)``): at pulse
rates locked to the mains (25, 50 Hz at 50 Hz mains) the blanking leaves a residue there
that only the comb removes.

The effort is in the signal's units (RMS of the filtered EMG, e.g. volts); the caller
turns it into uV or % MVC with the channel's calibration (``100 * (effort - rest) /
(mvc - rest)``; see :func:`percent_mvc`). Pure and chunk-invariant to the bit: both
filters are one second-order-section recurrence whose state is carried across chunks,
and the mask is a pure query of the pulse schedule on the sample clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from closedloop.core.blanking import ArtifactRemover
from closedloop.core.sos import SosFilter


@dataclass(frozen=True)
class EffortSettings:
    """How voluntary effort is measured (see the module docstring).

    Attributes
    ----------
    tau_s : float
        Time constant of the causal smoother. 0.1 s follows a change of effort within
        ~0.3 s (95 %) and averages ~3 inter-pulse windows at 30 Hz.
    guard_ms : float
        Also leave out this long after every blanked stretch: the band-pass output
        there still carries the blanking's fill (less noise than the signal), which
        would read low. It does not make up for an M-wave that outlasts the blanking:
        the band-pass spreads such a tail over the whole inter-pulse interval, so
        ``blank_ms`` must cover the M-wave (:mod:`closedloop.core.evoked` measures its
        end).
    min_fraction : float
        Where fewer than this fraction of the recent samples count (blanking that
        leaves almost nothing between the pulses) the effort is unknown: NaN.
    """

    tau_s: float = 0.1
    guard_ms: float = 1.5
    min_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not self.tau_s > 0:
            raise ValueError(f"EffortSettings.tau_s = {self.tau_s!r}: must be > 0 seconds")
        if not self.guard_ms >= 0:
            raise ValueError(f"EffortSettings.guard_ms = {self.guard_ms!r}: must be >= 0 ms")
        if not 0 < self.min_fraction < 1:
            raise ValueError(f"EffortSettings.min_fraction = {self.min_fraction!r}: must be "
                             "between 0 and 1")


class EffortEstimator:
    """Per-channel voluntary effort from the filtered, comb-cancelled EMG.

    Parameters
    ----------
    settings : EffortSettings
    fs : float
        Sampling rate, Hz.
    n_channels : int
    artifacts : ArtifactRemover, optional
        The pipeline's remover, whose pulse schedule says which samples were blanked.
        Without it every sample counts.
    """

    def __init__(self, settings: EffortSettings, fs: float, n_channels: int,
                 artifacts: ArtifactRemover | None = None) -> None:
        self.settings = settings
        self.fs = float(fs)
        self.n_channels = int(n_channels)
        self.artifacts = artifacts
        self.guard = int(math.ceil(settings.guard_ms * self.fs / 1000.0 - 1e-9))
        lam = math.exp(-1.0 / (settings.tau_s * self.fs))
        sos = np.array([[1.0 - lam, 0.0, 0.0, 1.0, -lam, 0.0]])
        # rows 0..n-1: weighted squares, rows n..2n-1: weights; it starts as after a
        # long quiet stretch (effort 0, every sample counted)
        self._smooth = SosFilter(sos, 2 * self.n_channels)
        self._smooth.set_steady_state(np.r_[np.zeros(self.n_channels), np.ones(self.n_channels)])
        #: Fraction of the recent samples that counted, at each sample of the last chunk.
        self.fraction = np.ones(0)

    def counted(self, start: int, n: int) -> np.ndarray:
        """Which of samples ``start .. start + n - 1`` count (not blanked), shape (n,)."""
        if self.artifacts is None or not self.artifacts.enabled:
            return np.ones(n, dtype=bool)
        return ~self.artifacts.blank_mask(start, n, extra=self.guard)

    def process_inplace(self, y: np.ndarray, start: int) -> np.ndarray:
        """Effort for filtered ``y`` (n_channels, n) whose first sample is ``start``;
        returns a new (n_channels, n) array (``y`` is kept)."""
        n = y.shape[1]
        if n == 0:
            return np.empty_like(y)
        m = self.counted(start, n).astype(np.float64)
        z = np.empty((2 * self.n_channels, n))
        np.multiply(y, y, out=z[: self.n_channels])
        z[: self.n_channels] *= m
        z[self.n_channels :] = m
        self._smooth.process_inplace(z)
        num, den = z[: self.n_channels], z[self.n_channels :]
        self.fraction = den[0].copy()
        out = np.full_like(num, np.nan)
        np.divide(num, den, out=out, where=den >= self.settings.min_fraction)
        np.maximum(out, 0.0, out=out, where=den >= self.settings.min_fraction)
        return np.sqrt(out, out=out)

    def process(self, filtered: np.ndarray, start: int) -> np.ndarray:
        """Effort for filtered (n, n_channels) samples; returns (n, n_channels)."""
        y = np.ascontiguousarray(filtered.T, dtype=np.float64)
        return self.process_inplace(y, start).T


def percent_mvc(effort: np.ndarray | float, rest: np.ndarray | float,
                mvc: np.ndarray | float) -> np.ndarray:
    """Effort as % of the calibrated range: 0 at rest, 100 at maximal voluntary effort.

    ``rest`` and ``mvc`` (per channel, or one for all) are the same measure (effort RMS)
    taken at rest and at maximal effort in calibration; values below rest read 0.
    """
    rest, mvc = np.asarray(rest, dtype=float), np.asarray(mvc, dtype=float)
    if not np.all(mvc > rest):
        raise ValueError(f"percent_mvc: mvc = {mvc} must be above rest = {rest}")
    return np.maximum(100.0 * (np.asarray(effort, dtype=float) - rest) / (mvc - rest), 0.0)


__all__ = ["EffortEstimator", "EffortSettings", "percent_mvc"]
