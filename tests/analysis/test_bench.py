"""``closedloop bench``: the figures it prints exist for every detector (speed itself is
measured by the command, not asserted)."""

from __future__ import annotations

import json
import subprocess

import pytest

from closedloop.analysis.bench import run_bench


@pytest.mark.parametrize("detector", ["threshold", "cusum"])
def test_bench_measures_each_detector(detector):
    r = run_bench(channels=2, fs=1000.0, minutes=0.25, large=5000, detector=detector)
    assert r["detector"] == detector and r["events"] > 0
    assert r["chunk20_p50_us"] > 0 and r["realtime_x_chunk20"] > 0


def test_bench_command_prints_the_detector_and_json():
    r = subprocess.run(
        ["closedloop", "bench", "--detector", "cusum", "--channels", "2", "--minutes", "0.2",
         "--json"], capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "detector cusum" in r.stdout.splitlines()[0]
    assert json.loads(r.stdout.strip().splitlines()[-1])["detector"] == "cusum"


def test_bench_without_detector_measures_the_built_in_default():
    """What ``closedloop bench`` measures is what the live loop runs without a ``[detector]
    kind``: the built-in default (cusum), its per-chunk cost printed."""
    from closedloop.config.model import DEFAULT_DETECTOR

    r = subprocess.run(["closedloop", "bench", "--channels", "2", "--minutes", "0.1", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"detector {DEFAULT_DETECTOR}" in r.stdout.splitlines()[0]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["detector"] == DEFAULT_DETECTOR == "cusum" and got["chunk20_p50_us"] > 0
