"""BrainFlowSource against BrainFlow's real synthetic and playback-file boards."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams
from brainflow.data_filter import DataFilter

from closedloop.core.checks import InputMonitor
from closedloop.errors import ConfigError, DeviceLostError
from closedloop.sources.brainflow import BrainFlowSource, make_input_params, resolve_board

SYNTH = BoardIds.SYNTHETIC_BOARD.value


def read_for(src: BrainFlowSource, seconds: float) -> list:
    chunks = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        c = src.read(0.05)
        if c is not None:
            chunks.append(c)
    return chunks


def test_board_names_and_ids() -> None:
    assert resolve_board("synthetic") is BoardIds.SYNTHETIC_BOARD
    assert resolve_board("Cyton") is BoardIds.CYTON_BOARD
    assert resolve_board("cyton_daisy") is BoardIds.CYTON_DAISY_BOARD
    assert resolve_board("GANGLION_BOARD") is BoardIds.GANGLION_BOARD
    assert resolve_board("playback") is BoardIds.PLAYBACK_FILE_BOARD
    assert resolve_board(-1) is BoardIds.SYNTHETIC_BOARD
    assert resolve_board("-1") is BoardIds.SYNTHETIC_BOARD
    with pytest.raises(ConfigError, match="unknown; use one of: .*cyton"):
        resolve_board("cytn")
    with pytest.raises(ConfigError, match="id 999 is unknown"):
        resolve_board(999)


def test_parameters_are_checked() -> None:
    p = make_input_params(
        {
            "serial_port": "/dev/ttyUSB0",
            "ip_port": "6677",
            "timeout": "3",
            "master_board": "synthetic",
            "ip_protocol": "tcp",
        }
    )
    assert (p.serial_port, p.ip_port, p.timeout, p.master_board) == ("/dev/ttyUSB0", 6677, 3, -1)
    assert p.ip_protocol == 2
    with pytest.raises(ConfigError, match="'serial' is unknown; allowed: serial_port"):
        make_input_params({"serial": "x"})
    with pytest.raises(ConfigError, match="ip_port = 'abc'.*integer"):
        make_input_params({"ip_port": "abc"})
    with pytest.raises(ConfigError, match="needs master_board"):
        BrainFlowSource("playback", {"file": "x.csv"})
    with pytest.raises(ConfigError, match="channels \\[9\\] not allowed"):
        BrainFlowSource("cyton", {}, channels=[9])
    with pytest.raises(ConfigError, match="2 labels"):
        BrainFlowSource("cyton", {}, channels=[1], labels=["a", "b"])


def test_unreachable_board_is_a_clear_device_error() -> None:
    src = BrainFlowSource("cyton", {"serial_port": "/dev/ttyNONEXISTENT"})
    with pytest.raises(DeviceLostError, match="ttyNONEXISTENT.*UNABLE_TO_OPEN_PORT.*plugged in"):
        src.open()
    assert not src.is_open
    src.close()  # safe after a failed open


def test_synthetic_board() -> None:
    src = BrainFlowSource("synthetic", {}, channels=[1, 2, 3], labels=["biceps", "triceps", "fcr"])
    with src:
        info = src.info
        assert info.fs == BoardShim.get_sampling_rate(SYNTH) == 250
        assert info.channels == ("biceps", "triceps", "fcr")
        assert info.units == "uV" and info.kind == "brainflow"
        chunks = read_for(src, 0.8)
    assert not src.is_open
    n = sum(c.n for c in chunks)
    assert 100 < n < 300
    samples = np.concatenate([c.samples for c in chunks])
    ts = np.concatenate([c.timestamps for c in chunks])
    counter = np.concatenate([c.counter for c in chunks])
    assert samples.shape == (n, 3) and np.isfinite(samples).all()
    # stream time from sample counts: exactly t0 + i / fs, whatever the chunking
    np.testing.assert_array_equal(ts, ts[0] + np.arange(n) / 250.0)
    # the package number is unwrapped into a counter without gaps
    np.testing.assert_array_equal(counter, np.arange(n))
    # the synthetic board is clean input
    monitor = InputMonitor(src.info)
    assert [i for c in chunks for i in monitor.check(c).issues] == []


def test_default_labels_come_from_the_board_description() -> None:
    src = BrainFlowSource("synthetic", {})
    names = BoardShim.get_board_descr(SYNTH)["eeg_names"].split(",")
    assert list(src._labels) == names  # read without opening the board
    cyton = BrainFlowSource("cyton", {})
    assert cyton._labels[:2] == ("Fp1", "Fp2")


def _record_synthetic(path: Path, seconds: float) -> np.ndarray:
    board = BoardShim(SYNTH, BrainFlowInputParams())
    board.prepare_session()
    try:
        board.start_stream()
        time.sleep(seconds)
        data = board.get_board_data()
        board.stop_stream()
    finally:
        board.release_session()
        del board
    DataFilter.write_file(data, str(path), "w")
    return data


def test_playback_board_delivers_the_file(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.csv"
    _record_synthetic(path, 1.0)
    expected = DataFilter.read_file(str(path))  # what the file holds (rounded on write)
    emg_rows = BoardShim.get_emg_channels(SYNTH)
    n_file = expected.shape[1]
    src = BrainFlowSource("playback", {"file": str(path), "master_board": "synthetic"})
    chunks = []
    with src:
        assert src.info.fs == 250.0 and src.info.n_channels == len(emg_rows)
        deadline = time.perf_counter() + 10.0
        while not src.finished and time.perf_counter() < deadline:
            c = src.read(0.2)
            if c is not None:
                chunks.append(c)
        assert src.finished
        assert src.read(0.05) is None  # the end of the file is not a lost board
    samples = np.concatenate([c.samples for c in chunks])
    counter = np.concatenate([c.counter for c in chunks])
    assert samples.shape == (n_file, len(emg_rows))
    np.testing.assert_allclose(samples, expected[emg_rows].T, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.diff(counter), 1)  # no gap, no repeat
    pkg = expected[BoardShim.get_package_num_channel(SYNTH)]
    np.testing.assert_array_equal(counter % 256, (pkg - pkg[0]) % 256)


def test_playback_file_errors(tmp_path: Path) -> None:
    missing = BrainFlowSource(
        "playback", {"file": str(tmp_path / "nope.csv"), "master_board": "synthetic"}
    )
    with pytest.raises(ConfigError, match="does not exist"):
        missing.open()
    path = tmp_path / "synthetic.csv"
    DataFilter.write_file(np.zeros((32, 10)), str(path), "w")
    wrong = BrainFlowSource("playback", {"file": str(path), "master_board": "cyton"})
    with pytest.raises(ConfigError, match="32 columns but CYTON_BOARD data has 24"):
        wrong.open()


def test_silent_board_is_lost_and_closed_read_fails(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    _record_synthetic(path, 0.3)
    src = BrainFlowSource(
        "playback", {"file": str(path), "master_board": "synthetic"}, chunk_timeout=0.3
    )
    src.open()
    src._file_samples = None  # pretend the file is endless: its end is then silence
    with pytest.raises(DeviceLostError, match="no data for .*chunk_timeout = 0.3 s"):
        deadline = time.perf_counter() + 5.0
        while time.perf_counter() < deadline:
            src.read(0.1)
    src.close()
    with pytest.raises(DeviceLostError, match="closed source"):
        src.read(0.01)
