"""``closedloop view`` without ``--session``: the running sessions listed (patient, host,
started) and the choice (the only one; a numbered choice in a terminal; refused with the
list without one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from closedloop.core.stream import SourceInfo
from closedloop.errors import ConfigError
from closedloop.io.outlets import SessionOutlets
from closedloop.view.sessions import RunningSession, choose_session, running_sessions

ROOT = Path(__file__).resolve().parents[2]
CONFIG = 'name = "listing_test"\n[[muscles]]\nname = "biceps"\n'


@pytest.fixture
def two_sessions():
    info = SourceInfo("amp", 1000.0, ("biceps",), "uV", "sim")
    tag = uuid.uuid4().hex[:8]
    a = SessionOutlets(f"listing-{tag}-a", info, config_text=CONFIG,
                       metadata={"patient": "P101", "started": "2026-11-21T10:02:00+00:00"})
    b = SessionOutlets(f"listing-{tag}-b", info, config_text=CONFIG)
    yield a, b
    a.close()
    b.close()


def test_running_sessions_lists_patient_host_and_start(two_sessions):
    a, b = two_sessions
    found = {s.name: s for s in running_sessions(timeout=3.0)}
    assert a.session_name in found and b.session_name in found
    sa, sb = found[a.session_name], found[b.session_name]
    host = socket.gethostname()
    assert sa.patient == "P101" and sa.host == host and sa.uid == a.session_uid
    assert sa.started.startswith("2026-11-21")
    assert sa.program == "listing_test"
    assert sb.patient == "" and sb.started  # no metadata: when its stream was created
    line = sa.describe()
    assert "patient P101" in line and host in line and a.session_name in line
    assert "no patient id" in sb.describe()


def _s(name: str) -> RunningSession:
    return RunningSession(name=name, uid=name, host="lab-pc", patient="P1",
                          started="2026-11-21 10:02")


def test_choice_one_several_none():
    only = [_s("one")]
    assert choose_session(only, interactive=False) is only[0]
    assert choose_session([], interactive=True) is None
    several = [_s("first"), _s("second"), _s("third")]
    said: list[str] = []
    answers = iter(["x", "7", "2"])
    got = choose_session(several, interactive=True, ask=lambda _: next(answers),
                         say=said.append)
    assert got is several[1]
    assert "1) first" in said[0] and "3) third" in said[0]
    assert any("'7' is not one of 1-3" in s for s in said)
    with pytest.raises(ConfigError, match="--session NAME") as err:
        choose_session(several, interactive=False)
    assert "first" in str(err.value) and "third" in str(err.value)

    def eof(_: str) -> str:
        raise EOFError

    with pytest.raises(ConfigError, match="no session chosen"):
        choose_session(several, interactive=True, ask=eof, say=said.append)


@pytest.mark.timeout(60)
def test_view_without_a_terminal_refuses_with_the_list(two_sessions):
    """The documented path: ``closedloop view`` in a pipe, two sessions running (and
    maybe other helpers' on this network): refused, both listed, how to choose said."""
    a, b = two_sessions
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "closedloop", "view", "--duration", "5"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=50)
    assert proc.returncode == 2, proc.stderr[-2000:]  # a command-line choice to make: 2
    err = proc.stderr
    assert "sessions are running" in err and "--session NAME" in err
    assert f"{a.session_name} (listing_test): patient P101, on {socket.gethostname()}" in err
    assert b.session_name in err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_the_view_process_yields_the_processor_to_the_loop():
    """``closedloop view`` lowers its own priority (nice 5), before its threads start, so
    a busy computer serves the session's loop first."""
    import time

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    proc = subprocess.Popen([sys.executable, "-m", "closedloop", "view", "--demo", "1",
                             "--session", f"nice-{uuid.uuid4().hex[:8]}", "--duration", "8"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen: set[int] = set()
        end = time.monotonic() + 20.0
        while time.monotonic() < end and proc.poll() is None:
            tasks = os.listdir(f"/proc/{proc.pid}/task")
            if len(tasks) > 4:  # the demo, LSL and Qt threads are running
                time.sleep(0.5)
                for tid in os.listdir(f"/proc/{proc.pid}/task"):
                    # field 19 of /proc/PID/task/TID/stat: the thread's nice value
                    with open(f"/proc/{proc.pid}/task/{tid}/stat") as f:
                        seen.add(int(f.read().rsplit(")", 1)[1].split()[16]))
                break
            time.sleep(0.1)
    finally:
        proc.wait(timeout=30)
    assert seen == {min(mine + 5, 19)}, seen


def test_a_stream_with_metadata_that_is_not_an_object_is_listed_not_a_crash():
    """Another program's stream shaped like a session's, whose metadata is JSON but not
    an object: 'closedloop view' (listing the sessions) ended in an AttributeError."""
    import pylsl

    uid = uuid.uuid4().hex[:12]
    info = pylsl.StreamInfo(f"odd-{uid}-Session", "SessionInfo", 1, pylsl.IRREGULAR_RATE,
                            pylsl.cf_string, f"closedloop.{uid}.session")
    cl = info.desc().append_child("closedloop")
    cl.append_child_value("role", "session")
    cl.append_child_value("metadata", "[1, 2]")
    cl.append_child_value("config", "name = 3")
    outlet = pylsl.StreamOutlet(info)
    try:
        found = {s.uid: s for s in running_sessions(timeout=3.0)}
    finally:
        del outlet
    assert found[uid].patient == "" and found[uid].name == f"odd-{uid}"
