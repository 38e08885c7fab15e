"""The private scipy kernel is used only when it filters exactly like public sosfilt."""

import numpy as np
import pytest
from scipy import signal

from closedloop.core import sos


def test_the_installed_kernel_passes_its_self_check():
    # on the pinned scipy range the compiled kernel is there and agrees
    assert sos._private_kernel is not None
    assert sos.kernel_agrees(sos._private_kernel)
    assert sos._kernel is sos._private_kernel


@pytest.mark.parametrize("broken", [
    None,
    lambda s, x, zi: None,  # does nothing
    lambda s, x, zi: x.__setitem__(Ellipsis, 0.0),  # wrong output
    lambda s, x, zi: (_ for _ in ()).throw(TypeError("new signature")),
])
def test_a_kernel_that_disagrees_is_refused(broken):
    assert not sos.kernel_agrees(broken)


def test_a_kernel_that_forgets_its_state_is_refused():
    def stateless(s, x, zi):
        y = signal.sosfilt(s, x, axis=-1)
        x[...] = y

    assert not sos.kernel_agrees(stateless)


def test_fallback_filters_identically(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 500))
    coeffs = signal.butter(4, [20, 450], "bandpass", fs=2000, output="sos")
    fast = sos.SosFilter(coeffs, 2)
    a = np.ascontiguousarray(x.copy())
    fast.process_inplace(a)
    monkeypatch.setattr(sos, "_kernel", None)  # as when the self-check failed
    slow = sos.SosFilter(coeffs, 2)
    b = np.ascontiguousarray(x.copy())
    slow.process_inplace(b[:, :7])
    rest = np.ascontiguousarray(b[:, 7:])
    slow.process_inplace(rest)
    b[:, 7:] = rest
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_exponential_average_is_the_numpy_step_to_the_bit(use_kernel, monkeypatch):
    """The compiled path and the lfilter fallback both give, bit for bit, what one
    numpy step after another gives (the hum templates mix the two)."""
    if not use_kernel:
        monkeypatch.setattr(sos, "_kernel", None)
    rng = np.random.default_rng(7)
    for w in (1.0 / 32.0, 1.0 / 16.0, 0.3):
        x = rng.standard_normal((50, 97)) * 1e-5 + 1e-3
        start = rng.standard_normal(50) * 1e-4
        want, y = np.empty_like(x), start.copy()
        for j in range(x.shape[1]):
            y = (1.0 - w) * y + w * x[:, j]
            want[:, j] = y
        np.testing.assert_array_equal(sos.exponential_average(x, start, w), want)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_decaying_sum_is_the_python_step_to_the_bit(use_kernel, monkeypatch):
    """``y = decay * y + x`` through the compiled kernel and through the fallback gives,
    bit for bit, what Python's floats give step by step (the cusum detector's dispersion
    is computed both ways, in runs of blocks and block by block)."""
    if not use_kernel:
        monkeypatch.setattr(sos, "_kernel", None)
    rng = np.random.default_rng(11)
    for decay in (1.0 - 1.0 / 200.0, 0.9, 1.0 - 0.05 / 3.0):
        x = np.abs(rng.standard_normal((6, 301))) * 10.0 ** rng.uniform(-3, 3, (6, 301))
        start = np.abs(rng.standard_normal(6)) * 50.0
        want = np.empty_like(x)
        for i in range(x.shape[0]):
            y = float(start[i])
            for j in range(x.shape[1]):
                y = decay * y + float(x[i, j])
                want[i, j] = y
        np.testing.assert_array_equal(sos.decaying_sum(x, start, decay), want)
