"""A proportional session through the installed ``closedloop`` command, output to a pipe:
recorded (``closedloop run --config configs/programs/proportional_assist.toml --duration
20 --record F.xdf``), then replayed with ``--check``, which must find every event and
command identical."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from closedloop.io.xdf import load_session
from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
EXE = shutil.which("closedloop")
CL = [EXE] if EXE else [sys.executable, "-m", "closedloop"]


def cl(*args: object, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*CL, *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_a_recorded_proportional_session_replays_exactly(tmp_path):
    program = ROOT / "configs" / "programs" / "proportional_assist.toml"
    r = cl("run", "--config", program, "--duration", 20, "--record", "F.xdf", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "biceps up to 25 mA following the effort" in r.stdout + r.stderr  # not a plateau
    session = load_session(tmp_path / "F.xdf")
    follow = [c for c in session.commands if c.phase == "follow"]
    assert len(follow) > 20  # the current followed the effort
    assert len({c.current_ma for c in follow}) > 5
    assert session.mwaves  # the evoked response was recorded
    r = cl("replay", "F.xdf", "--check", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check passed" in r.stdout
