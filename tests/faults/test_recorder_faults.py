"""The recording fails mid-session: LabRecorderCLI dies, the disk fills up, or the
file cannot grow. Each stops the session (exit 5, stimulation off) with a message that
says what happened and what to check, and the file holds everything up to the fault.

LabRecorderCLI itself does not stop when its writes fail: it goes on running and the
file stops growing. :meth:`XdfRecorder.check` watches the disk for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from closedloop.io.recorder import find_labrecorder_cli
from closedloop.io.xdf import load_session
from closedloop.runtime.loop import LoopOptions
from closedloop.sim.patient import Attempt
from tests.conftest import CONFIGS, ROOT
from tests.faults.conftest import assert_prefix, assert_recording_ends_off, run_recorded
from tests.runtime.conftest import assert_all_off, sim_session

#: From 2.2 s: no trial starts in the stream's first 2 s (``[safety] wait_for_rate``).
SCRIPT = [Attempt("biceps", 2.2, 1.5, 1.0, 0.04)]


def test_labrecorder_dies_mid_session(tmp_path, config):
    src, stim = sim_session(config, SCRIPT)
    src.realtime = True  # LabRecorderCLI has pulled (every 0.5 s) what came before

    def killer(recorder):
        def control():
            if src.position >= 2.7 * src.settings.fs and recorder.alive:
                os.kill(recorder.pid, signal.SIGKILL)
            return []
        return {"control": control}

    rec = run_recorded(tmp_path, config, src, stim, with_recorder=killer,
                       options=LoopOptions(duration_s=7.0, watchdog_s=2.0))
    out = rec.out
    assert (out.reason, out.exit_code) == ("device", 5)
    assert "LabRecorderCLI died (exit code -9)" in out.message
    assert "the file may be cut short (read it with closedloop.io.xdf.read_xdf)" in out.message
    assert 2.7 <= out.seconds < 3.2  # stopped at once
    assert stim.commands[0].is_on  # it was stimulating
    assert_all_off(stim)
    assert out.all_off
    assert "had died" in rec.stop_error
    # a readable file without footers: a gap-free prefix of what was sent
    assert not rec.report.complete
    assert_prefix(rec.report)
    emg = rec.report.streams[rec.names["emg"]]
    assert emg.found >= 0.5 * src.settings.fs  # what LabRecorderCLI had pulled and written
    s = load_session(rec.path)
    assert s.n == emg.found and not s.complete
    np.testing.assert_array_equal(s.counter, np.arange(s.n))


def _size_limited_labrecorder(tmp_path: Path, kib: int) -> Path:
    """LabRecorderCLI under ``ulimit -f`` with SIGXFSZ ignored: writes past the limit
    fail with EFBIG, as a full disk's fail with ENOSPC (it keeps running either way)."""
    wrapper = tmp_path / "LabRecorderCLI-limited"
    wrapper.write_text(f"#!/bin/sh\ntrap '' XFSZ\nulimit -f {kib}\n"
                       f"exec '{find_labrecorder_cli()}' \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_writes_that_fail_stop_the_session(tmp_path, config):
    src, stim = sim_session(config, SCRIPT)
    src.realtime = True
    rec = run_recorded(tmp_path, config, src, stim,
                       recorder_kwargs={"cli_path": _size_limited_labrecorder(tmp_path, 200),
                                        "stall_s": 1.5},
                       options=LoopOptions(duration_s=30.0, watchdog_s=2.0))
    out = rec.out
    assert (out.reason, out.exit_code) == ("device", 5), out.message
    assert "the file has not grown for" in out.message
    assert "disk full, file-size limit or a failing disk" in out.message
    assert out.seconds < 10.0
    assert_all_off(stim)
    assert out.all_off
    assert_prefix(rec.report)  # what could be written is there, in order
    assert rec.path.stat().st_size <= 200 * 1024


def _mount_tmpfs(path: Path, size: str) -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("mounting a 2 MB tmpfs needs root (the file-size-limit test covers the "
                    "failing writes without it)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_full_disk_stops_the_session_before_anything_is_lost(small_disk):
    path = small_disk / "session.xdf"
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "run", "--config",
         str(CONFIGS / "biceps_triceps.toml"), "--no-gui", "--record", str(path),
         "--duration", "60", "--json", "--quiet"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 5 and summary["reason"] == "device", proc.stdout
    assert "the disk is nearly full" in summary["message"]
    assert "Free disk space or record to another disk" in summary["message"]
    assert summary["all_off"] and summary["channels_on_at_end"] == []
    assert summary["samples"] < 30 * 2000  # stopped long before the 60 s
    # stopped while everything still fitted: the file is complete, footers included
    assert f"recording       : {path} - recording session.xdf: complete" in proc.stdout
    s = load_session(path)
    assert s.complete and s.n == summary["samples"]
    np.testing.assert_array_equal(s.counter, np.arange(s.n))
    assert len(s.commands) == summary["commands"]
    assert_recording_ends_off(s)


def test_interleaved_labrecorder_output_still_starts(tmp_path):
    """LabRecorderCLI's stream threads print at once: two 'Started data collection'
    lines can come out mixed into one (seen in this suite). The start must not wait
    for its timeout then."""
    fake = tmp_path / "LabRecorderCLI-interleaved"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "preds = sys.argv[2:]\n"
        "for i, p in enumerate(preds):\n"
        "    print(f\"Found S{i}@host matching '{p}'\")\n"
        "print('Starting the recording, press Enter to quit')\n"
        "print('Started data collection for stream Started data collection for stream S0.')\n"
        "print('S1.')\n"
        "sys.stdout.flush()\n"
        "sys.stdin.readline()\n")
    fake.chmod(0o755)
    from closedloop.io.recorder import XdfRecorder

    rec = XdfRecorder(tmp_path / "x.xdf", ["name='a'", "name='b'"], cli_path=fake,
                      start_timeout=5.0, drain_seconds=0.0)
    t0 = time.monotonic()
    rec.start()
    assert time.monotonic() - t0 < 3.0 and rec.streams == {"name='a'": "S0", "name='b'": "S1"}
    rec.stop()
