"""``closedloop replay --speed``: what a speed may be, checked before any recording is read.

A speed so slow that a chunk's wait outlasts the replay's watchdog ran until the watchdog
called it a stall (exit 4, after 5 s); now it is refused at once with the rule (a usage
error, exit 2), as 0, negative numbers, NaN and words are.
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
        assert "its watchdog calls it a stall" in r.stderr


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
