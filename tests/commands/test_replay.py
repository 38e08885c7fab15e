"""``closedloop replay --speed``: what a speed may be, checked before any recording is read.

A speed so slow that no sample fell due before the replay's watchdog ran until the
watchdog called it a stall (exit 4, after 5 s); now a speed below 0.01 is refused at once
with the rule (a usage error, exit 2), as 0, negative numbers, NaN and words are. A slow
replay source delivers what is due by each read's timeout, so a session's watchdog sees
data (``run --source replay:FILE?speed=...``).
"""

from __future__ import annotations

import subprocess

import pytest

from closedloop.errors import ConfigError
from closedloop.runtime.replay import WATCHDOG_S
from closedloop.sources.replay import MIN_SPEED, SPEED_RULE, parse_speed
from tests.conftest import ROOT

RECORDING = str(ROOT / "recordings" / "sim_biceps_triceps.xdf")


def replay(*args: str) -> subprocess.CompletedProcess:
    """The installed command, output to a pipe."""
    return subprocess.run(["closedloop", "replay", RECORDING, "--quiet", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("speed", ["1e-300", "0.001", "0", "-1", "nan", "-inf", "slow", " "])
def test_a_speed_that_cannot_be_meant_or_would_stall_is_refused_at_once(speed):
    r = replay(f"--speed={speed}")
    assert r.returncode == 2, r.stdout + r.stderr  # argparse's usage error, as every option
    assert f"argument --speed: replay speed {speed!r} is not allowed" in r.stderr
    assert SPEED_RULE in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
    if speed in ("1e-300", "0.001"):  # too slow: says why
        assert "takes absurdly long" in r.stderr


@pytest.mark.parametrize("speed", ["fast", "FAST", "inf"])
def test_fast_and_infinite_speeds_replay_the_recording(speed):
    r = replay("--speed", speed, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check passed" in r.stdout


def test_the_slowest_speed_keeps_a_default_chunk_within_the_watchdog():
    """At :data:`MIN_SPEED` a chunk of the default 20 ms waits 2 s, within the 5 s the
    replay's watchdog allows (and the help says the bound)."""
    assert parse_speed(str(MIN_SPEED)) == MIN_SPEED
    assert 0.02 / MIN_SPEED < WATCHDOG_S
    with pytest.raises(ConfigError, match="is not allowed: slower than 0.01"):
        parse_speed(MIN_SPEED / 2)
    said = subprocess.run(["closedloop", "replay", "--help"], capture_output=True, text=True,
                          timeout=60).stdout
    assert "from 0.01 (100 times slower)" in " ".join(said.split())


def test_a_slow_replay_source_keeps_a_session_fed(tmp_path):
    """``run --source replay:FILE?speed=0.05``: a 20 ms chunk of samples is due only every
    0.4 s, longer than a session's 100 ms watchdog; the source delivers what is due by
    each read's timeout instead, so the session runs its duration (it stopped as a stall,
    exit 4, after the first chunk)."""
    r = subprocess.run(
        ["closedloop", "run", "--config", str(ROOT / "configs" / "biceps_triceps.toml"),
         "--source", f"replay:{RECORDING}?speed=0.05", "--no-gui", "--no-outlets",
         "--duration", "0.3"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "samples lost    : 0 of 600" in r.stdout and "all channels off: yes" in r.stdout


def test_a_slow_replay_source_delivers_every_sample_in_order_as_it_falls_due():
    import numpy as np

    from closedloop.sources.replay import ReplaySource

    src = ReplaySource(RECORDING, speed=0.05, chunk_size=40)  # 40 samples: due in 0.4 s
    got, sizes = [], []
    with src:
        while src.position < 200:
            chunk = src.read(0.05)
            if chunk is not None:
                got.append(chunk.samples)
                sizes.append(len(chunk.samples))
        want = np.asarray(src.session.received[: src.position], dtype=np.float64)
    assert np.array_equal(np.concatenate(got), want, equal_nan=True)
    assert max(sizes) < 40 and len(sizes) >= 200 // 40 * 2  # parts of chunks, as due
