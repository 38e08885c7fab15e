import numpy as np
import pytest

from closedloop.config.signal import EnvelopeSettings
from closedloop.core.envelope import Envelope


def test_rms_matches_direct_moving_rms():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 3))
    env = Envelope(EnvelopeSettings(kind="rms", window_ms=15.0), 2000.0, 3)
    got = np.vstack([env.process(x[i : i + 37]) for i in range(0, 4000, 37)])
    w = 30
    sq = np.vstack([np.zeros((w - 1, 3)), x**2])
    ref = np.sqrt(np.stack([np.convolve(sq[:, c], np.ones(w) / w, "valid") for c in range(3)], 1))
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["rms", "lowpass", "tkeo"])
def test_envelope_chunk_invariant_to_the_bit(kind):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 2)) * 1e-4
    whole = Envelope(EnvelopeSettings(kind=kind), 1000.0, 2).process(x)
    env = Envelope(EnvelopeSettings(kind=kind), 1000.0, 2)
    sizes = rng.integers(1, 300, size=200)
    parts, i = [], 0
    for s in sizes:
        parts.append(env.process(x[i : i + s]))
        i += s
    parts.append(env.process(x[i:]))
    assert np.array_equal(np.vstack(parts), whole)


def test_tkeo_is_causal_teager_kaiser():
    x = np.sin(np.linspace(0, 20, 500))[:, None]
    env = Envelope(EnvelopeSettings(kind="tkeo", cutoff_hz=50.0), 1000.0, 1)
    env._lp.process_inplace = lambda a: a  # look at the operator itself, unfiltered
    got = env.process(x)[:, 0]
    ref = np.abs(x[1:-1, 0] ** 2 - x[:-2, 0] * x[2:, 0])
    np.testing.assert_allclose(got[2:], ref, rtol=1e-12, atol=1e-15)
