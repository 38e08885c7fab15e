"""Python child processes (the live view, the benchmarks' timed replays, the latency
streamer) import the same closedloop as the process that starts them, even when started
from a folder that holds another closedloop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import closedloop
from closedloop.children import python_command

WHERE = "import closedloop; print(closedloop.__file__)"


def other_closedloop(folder: Path) -> Path:
    """A folder holding another ``closedloop`` package (a checkout of another version)."""
    pkg = folder / "closedloop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("raise SystemExit('the other closedloop')\n")
    return pkg


def test_a_child_imports_this_closedloop_from_a_folder_holding_another(tmp_path):
    other = other_closedloop(tmp_path)
    plain = subprocess.run([sys.executable, "-c", WHERE], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert Path(plain.stdout.strip()).parent == other  # what a bare child would import
    argv, env = python_command("-c", WHERE)
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == Path(closedloop.__file__).resolve()
    argv, env = python_command("-m", "closedloop", "replay", "--help")
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: closedloop replay" in r.stdout, r.stderr


def test_the_child_keeps_the_caller_s_python_path(tmp_path):
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "my_detector.py").write_text("NAME = 'mine'\n")
    argv, env = python_command("-c", "import my_detector; print(my_detector.NAME)",
                               env={"PYTHONPATH": str(extra)})
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "mine", r.stderr
