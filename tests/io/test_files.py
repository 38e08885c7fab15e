"""The offline EMG readers (:mod:`closedloop.io.files`) on broken files: each refusal is
an :class:`~closedloop.errors.InputError` whose message names what is wrong, never
another exception and never data quietly made up (a complex part dropped, a transposed
array read as thousands of channels, two channels of one name)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.errors import InputError
from closedloop.io.files import load_emg

RNG = np.random.default_rng(0)
EMG = RNG.normal(0, 1e-5, (200, 2))

#: name -> (arrays given to numpy.savez, or raw bytes), words the message must hold
NPZ = {
    "an empty file": (b"", "cannot read as .npz"),
    "a PNG renamed": (b"\x89PNG\r\n\x1a\n" + bytes(64), "cannot read as .npz"),
    "a 0-d emg": ({"emg": np.array(1.0), "fs": 2000.0}, "shape ()"),
    "a 3-d emg": ({"emg": np.ones((10, 2, 2)), "fs": 2000.0}, "shape (10, 2, 2)"),
    "a complex emg": ({"emg": EMG.astype(complex), "fs": 2000.0}, "complex128"),
    "a boolean emg": ({"emg": EMG > 0, "fs": 2000.0}, "bool"),
    "a text emg": ({"emg": np.array([["a", "b"]] * 10), "fs": 2000.0}, "<U1"),
    "fs an array": ({"emg": EMG, "fs": np.ones(3)}, "'fs' is an array of shape (3,)"),
    "fs negative": ({"emg": EMG, "fs": -5.0}, "'fs' = -5.0, not a sampling rate"),
    "fs NaN": ({"emg": EMG, "fs": np.nan}, "'fs' = nan, not a sampling rate"),
    "fs text": ({"emg": EMG, "fs": "abc"}, "'fs' = 'abc'"),
    "a single sample": ({"emg": EMG[:1], "fs": 2000.0}, "got shape (1, 2)"),
    "transposed": ({"emg": np.ones((2, 5000)), "fs": 2000.0}, "looks transposed"),
    "NaN-filled": ({"emg": np.full((100, 2), np.nan), "fs": 2000.0}, "NaN or infinite"),
    "duplicate channels": ({"emg": EMG, "fs": 2000.0, "channels": np.array(["a", "a"])},
                           "a appear more than once"),
    "an empty channel name": ({"emg": EMG, "fs": 2000.0, "channels": np.array(["a", " "])},
                              "channel 1 has an empty name"),
    "channels 2-d": ({"emg": EMG, "fs": 2000.0, "channels": np.array([["a", "b"]])},
                     "'channels' has shape (1, 2)"),
}


@pytest.mark.parametrize("case", list(NPZ))
def test_a_broken_npz_is_refused_with_what_is_wrong(tmp_path, case):
    content, words = NPZ[case]
    path = tmp_path / "emg.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    with pytest.raises(InputError) as info:
        load_emg(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def test_integer_counts_and_one_channel_are_read(tmp_path):
    np.savez(tmp_path / "counts.npz", emg=(EMG * 1e6).astype(np.int16), fs=np.int64(1000))
    d = load_emg(tmp_path / "counts.npz")
    assert d.samples.dtype == np.float64 and d.samples.shape == (200, 2) and d.fs == 1000.0
    np.savez(tmp_path / "one.npz", emg=EMG[:, 0], fs=2000.0)
    assert load_emg(tmp_path / "one.npz").channels == ("ch0",)


def test_a_text_header_naming_two_columns_alike_is_refused(tmp_path):
    path = tmp_path / "emg.csv"
    path.write_text("a,a\n" + "".join(f"{x:.3g},{y:.3g}\n" for x, y in EMG))
    with pytest.raises(InputError, match="a appear more than once"):
        load_emg(path, fs=1000.0)
