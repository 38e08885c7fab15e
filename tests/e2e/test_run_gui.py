"""``closedloop run`` with its live view: STOP from the view's control stream, checklist."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from closedloop.runtime.control import ControlOutlet

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "biceps_triceps.toml")


def _start(*extra, env=None):
    e = dict(os.environ, QT_QPA_PLATFORM="offscreen", **(env or {}))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "closedloop",
            "run",
            "--config",
            CONFIG,
            "--quiet",
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=e,
    )


def _session_name(proc, timeout=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stderr.readline()
        m = re.search(r"session (closedloop-\S+);", line)
        if m:
            return m.group(1)
    raise AssertionError("closedloop run never announced its session")


@pytest.mark.timeout(120)
def test_stop_from_the_view_control_stream_ends_the_session_all_off():
    proc = _start("--duration", "120")  # GUI on (offscreen): the view runs in its own process
    try:
        name = _session_name(proc)
        with ControlOutlet(name) as ctl:
            t0 = time.monotonic()
            while not ctl.has_listener and time.monotonic() - t0 < 20:
                time.sleep(0.05)
            assert ctl.has_listener, "the session does not listen to the STOP stream"
            ctl.stop()
            for _ in range(100):
                ctl.tick()
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out
    assert f"stopped with STOP from view@{socket.gethostname()} on host" in out
    assert f"control stream source_id {ctl.source_id}, stream uid {ctl.uid}" in out
    assert '"all_off": true' in out


@pytest.mark.timeout(60)
def test_real_stimulator_needs_the_checklist():
    # an LSL stimulator stands for a real device: without a terminal or the flag, refuse
    proc = _start("--no-gui", "--duration", "1", "--stimulator", "lsl")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6  # a safety stop, before anything was stimulated
    assert "checklist" in out and '"samples": 0' in out
    proc = _start("--no-gui", "--duration", "1", "--stimulator", "lsl", "--confirm-checklist")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_view_attached_to_a_session_ends_on_sigterm_without_a_traceback(tmp_path):
    """A session ends its live view with SIGTERM (and a closed terminal sends SIGHUP):
    the view's window closes and the process ends at once, quietly. Raised from the
    signal handler inside Qt's event loop, the stop was printed by Qt as a traceback and
    swallowed, and the view went on showing a finished session."""
    import shutil
    import signal

    exe = shutil.which("closedloop")
    assert exe, "the closedloop command is not installed (pip install -e .)"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.Popen([exe, "run", "--config", os.path.abspath(CONFIG),
                            "--duration", "40", "--no-gui"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGTERM):
            view = subprocess.Popen([exe, "view"], cwd=tmp_path, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(5.0)  # attached, its window drawing
            view.send_signal(sig)
            try:
                _, err = view.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                view.kill()
                pytest.fail(f"closedloop view did not end within 15 s of {sig.name}")
            assert "Traceback" not in err, err
            assert view.returncode == 0, err
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(timeout=30)
