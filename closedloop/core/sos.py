"""Stateful second-order-section filtering with low per-call overhead.

:func:`scipy.signal.sosfilt` spends most of its time on argument checks, axis moves and
array-API dispatch: about 50-70 us per call here against about 4 us for the compiled
recurrence itself, at 20-sample chunks. The live loop calls it hundreds of times a
second per stage, so this module calls scipy's compiled kernel
(``scipy.signal._sosfilt._sosfilt``, which ``sosfilt`` itself uses) directly on
channel-major contiguous arrays, and falls back to the public function if a future scipy
moves the kernel. Both run the same recurrence, so results are identical either way and
identical across chunkings (the state ``zi`` carries over exactly).

The kernel is private, so it is trusted only after a self-check at import: a random
signal filtered by it in three chunks must equal :func:`scipy.signal.sosfilt` over the
whole signal, bit for bit (state included). If a scipy release changes the kernel's
signature or meaning, the check fails and the public function is used instead; the
scipy range in ``pyproject.toml`` is pinned to the releases where the kernel was
checked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

#: scipy's compiled kernel: ``kernel(sos, x, zi)`` filters ``x`` (n_sig, n) in place.
Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _find_kernel() -> Kernel | None:
    """The private kernel of scipy, None when this scipy has none by that name."""
    try:
        from scipy.signal._sosfilt import _sosfilt
    except ImportError:  # pragma: no cover - depends on the scipy version
        return None
    return _sosfilt


_private_kernel = _find_kernel()


def kernel_agrees(kernel: Kernel | None) -> bool:
    """True when ``kernel`` filters like public ``sosfilt``, state carried across chunks.

    Three channels of a fixed pseudo-random signal, from a random state, through a
    4th-order band-pass in chunks of 1, 7 and the rest; output and final state must be
    identical to one public :func:`scipy.signal.sosfilt` call.
    """
    if kernel is None:
        return False
    try:
        rng = np.random.default_rng(12345)
        x = rng.standard_normal((3, 64))
        sos = signal.butter(4, [20, 450], "bandpass", fs=2000, output="sos")
        zi0 = rng.standard_normal((sos.shape[0], 3, 2))
        want, zf = signal.sosfilt(sos, x, axis=-1, zi=zi0)
        got = np.ascontiguousarray(x.copy())
        zi = np.ascontiguousarray(np.moveaxis(zi0, 1, 0).copy())
        for a, b in ((0, 1), (1, 8), (8, 64)):
            part = np.ascontiguousarray(got[:, a:b])
            kernel(np.ascontiguousarray(sos), part, zi)
            got[:, a:b] = part
        return bool(np.array_equal(got, want)
                    and np.array_equal(zi, np.moveaxis(zf, 1, 0)))
    except Exception:  # noqa: BLE001 - any misbehaviour means: do not use it
        return False


#: The compiled kernel when it passed :func:`kernel_agrees` at import, else None.
_kernel = _private_kernel if kernel_agrees(_private_kernel) else None


class SosFilter:
    """A second-order-section cascade applied to (n_channels, n) arrays, state kept.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    n_channels : int
    """

    def __init__(self, sos: np.ndarray, n_channels: int) -> None:
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        self.n_channels = int(n_channels)
        self.zi = np.zeros((self.n_channels, self.sos.shape[0], 2))
        #: State of the cascade after a unit constant input forever, (n_sections, 2):
        #: computed once (``sosfilt_zi`` costs milliseconds, a restart must not).
        self.unit_zi = signal.sosfilt_zi(self.sos)

    def set_steady_state(self, x0: np.ndarray) -> None:
        """Start from the steady state for a constant input ``x0`` (per channel)."""
        self.zi = np.ascontiguousarray(
            self.unit_zi[None, :, :] * np.asarray(x0, float)[:, None, None])

    def restart(self, channel: int, level: float) -> None:
        """One channel's state as if its input had always been ``level``."""
        self.zi[channel] = self.unit_zi * float(level)

    def process_inplace(self, x: np.ndarray) -> np.ndarray:
        """Filter ``x`` (n_channels, n), C-contiguous float64, in place; returns it."""
        if _kernel is not None:
            _kernel(self.sos, x, self.zi)
            return x
        zi = np.moveaxis(self.zi, 0, 1)  # (n_sections, n_channels, 2)
        y, zi = signal.sosfilt(self.sos, x, axis=-1, zi=zi)
        self.zi = np.ascontiguousarray(np.moveaxis(zi, 1, 0))
        x[...] = y
        return x


def one_pole(x: np.ndarray, start: np.ndarray, gain: float, decay: float) -> np.ndarray:
    """Each row's one-pole recurrence after every sample: ``y[n] = decay * y[n - 1] +
    gain * x[n]`` from ``y[-1] = start``, for ``x`` (n_rows, m).

    Evaluated in exactly that form (one rounding of each product, one of the sum), so a
    caller that computes a few steps itself with numpy or Python gets the same bits:
    through the compiled kernel as the section ``[gain, 0, 0, 1, -decay, 0]`` (its other
    products are by 0, exact), about 20 times faster than :func:`scipy.signal.lfilter` on
    short rows; else through ``lfilter``, which evaluates the same recurrence.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    z = np.zeros((x.shape[0], 1, 2))
    z[:, 0, 0] = decay * np.asarray(start, dtype=np.float64)  # the first product
    if _kernel is not None:
        y = x.copy()
        _kernel(np.array([[gain, 0.0, 0.0, 1.0, -decay, 0.0]]), y, z)
        return y
    y, _ = signal.lfilter([gain], [1.0, -decay], x, axis=-1, zi=z[:, 0, :1])
    return y


def exponential_average(x: np.ndarray, start: np.ndarray, weight: float) -> np.ndarray:
    """Each row's exponential average after every sample, ``y[n] = (1 - weight) *
    y[n - 1] + weight * x[n]`` (:func:`one_pole`; exact in ``weight * x`` for a
    power-of-two weight, as the hum templates use)."""
    return one_pole(x, start, weight, 1.0 - weight)


def decaying_sum(x: np.ndarray, start: np.ndarray, decay: float) -> np.ndarray:
    """Each row's decaying sum after every sample, ``y[n] = decay * y[n - 1] + x[n]``
    (:func:`one_pole` with gain 1: its product by 1 is exact)."""
    return one_pole(x, start, 1.0, decay)
