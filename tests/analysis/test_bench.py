"""``closedloop bench``: the figures it prints exist for every detector (speed itself is
measured by the command, not asserted)."""

from __future__ import annotations

import json
import subprocess

import pytest

from closedloop.analysis.bench import run_bench
from closedloop.errors import InputError, RecordingDamagedError


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


def test_bench_replay_records_a_session_and_times_its_exact_replay(tmp_path):
    """``closedloop bench --replay``: a simulated session recorded for it replays with
    --check passing; the figures and the JSON last line say how fast (not asserted)."""
    keep = tmp_path / "bench.xdf"
    r = subprocess.run(
        ["closedloop", "bench", "--replay", "--minutes", "0.2", "--channels", "3",
         "--keep", str(keep), "--json"], capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["check_passed"] and last["recording_s"] == 12.0
    assert last["replay_x_realtime"] > 0 and last["load_mb_per_s"] > 0
    assert "x real time" in r.stdout and "\r" not in r.stdout + r.stderr
    assert keep.stat().st_size == int(round(last["file_mb"] * 1e6))
    again = subprocess.run(["closedloop", "bench", "--replay", "--minutes", "0.1", "--keep",
                            str(keep)], capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already exists" in again.stderr  # never replaced
    assert "Traceback" not in again.stderr


def test_bench_replay_of_a_cusum_session_replays_exactly():
    """The replay figure of cusum sessions (docs/detection.md) comes from this path: a
    stimulated session decided by cusum, recorded, then replayed in large chunks (runs of
    whole blocks taken together beside stimulation) with --check passing."""
    r = subprocess.run(
        ["closedloop", "bench", "--replay", "--minutes", "0.2", "--channels", "3",
         "--detector", "cusum", "--json"], capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "detector cusum" in r.stdout + r.stderr  # the session's detector is named
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["check_passed"] and last["recording_s"] == 12.0


def test_bench_replay_takes_a_recording(tmp_path):
    from tests.conftest import ROOT

    r = subprocess.run(
        ["closedloop", "bench", "--replay", "--file",
         str(ROOT / "recordings" / "sim_biceps_triceps.xdf"), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["check_passed"] and last["recording_s"] == 20.0


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


@pytest.mark.parametrize("detector", [None, "cusum", "threshold"])
def test_latency_bench_runs_the_detector_it_names(detector):
    from closedloop.analysis.latency import latency_config
    from closedloop.config.model import DEFAULT_DETECTOR

    config = latency_config(detector)
    assert config.detector_kind == (detector or DEFAULT_DETECTOR)


@pytest.mark.slow
def test_latency_bench_command_measures_cusum_when_asked():
    # the documented closed-loop figure of cusum (docs/detection.md) comes from this path
    r = subprocess.run(
        ["closedloop", "bench", "--latency", "--seconds", "5", "--detector", "cusum", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "detector cusum" in r.stdout.splitlines()[0]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["detector"] == "cusum" and out["triggered"] >= 1
    # the garbage collector's pauses in the loop are measured and printed
    assert out["gc_collections"] >= out["gc_full_collections"] >= 0
    assert f"garbage collections during the session: {out['gc_collections']} " in r.stdout


def test_bench_replay_times_this_closedloop_from_a_folder_holding_another(tmp_path):
    """Run from a checkout of another closedloop, ``bench --replay`` times the installed
    one (its timed child processes used to import the folder's)."""
    from tests.conftest import ROOT
    from tests.test_children import other_closedloop

    other_closedloop(tmp_path)
    r = subprocess.run(
        ["closedloop", "bench", "--replay", "--file",
         str(ROOT / "recordings" / "sim_biceps_triceps.xdf"), "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["check_passed"]


def test_bench_replay_file_refuses_a_folder_saying_to_give_one_recording(tmp_path):
    """``--file FOLDER`` is not "no such recording": it is a folder, and the message says
    to give one .xdf file (naming what the folder holds)."""
    (tmp_path / "monday.xdf").write_bytes(b"")
    r = subprocess.run(["closedloop", "bench", "--replay", "--file", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == InputError.exit_code, r.stderr
    assert "is a folder" in r.stderr and "give one recording file (.xdf)" in r.stderr
    assert "monday.xdf" in r.stderr and "no such" not in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_bench_replay_of_a_damaged_recording_exits_as_replay_does(tmp_path):
    """A cut-short recording: ``closedloop replay`` refuses it with exit 9 (damaged), and
    ``bench --replay --file`` exits 9 too, saying it is damaged (TRUNCATED, with what
    replay says of it), not 7 as if the file could not be read."""
    from tests.conftest import ROOT

    whole = (ROOT / "recordings" / "sim_biceps_triceps.xdf").read_bytes()
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    replay = subprocess.run(["closedloop", "replay", str(cut)], capture_output=True,
                            text=True, timeout=120)
    bench = subprocess.run(["closedloop", "bench", "--replay", "--file", str(cut)],
                           capture_output=True, text=True, timeout=120)
    assert replay.returncode == RecordingDamagedError.exit_code, replay.stdout + replay.stderr
    assert bench.returncode == replay.returncode, bench.stderr
    for said in (replay.stdout + replay.stderr, bench.stderr):
        assert "TRUNCATED" in said and "Traceback" not in said
    assert "is damaged" in bench.stderr and "give a complete recording" in bench.stderr
