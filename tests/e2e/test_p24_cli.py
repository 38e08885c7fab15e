"""The P24 through the user's commands: ``closedloop stim-test`` and ``closedloop run``
with ``--stimulator p24:PTY`` driving the strict P24 emulator (``python -m
tests.emulators.p24``) as separate processes; the per-channel-frequency program on the
P24 and its refusal on the RehaStim2; the message when the extra is not installed.

The emulator's state file shows what the "device" did: every command it answered, the
channels it ran and their periods, keep-alive timeouts and protocol violations.
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

import pytest

from closedloop.errors import ConfigError
from tests.conftest import CONFIGS, ROOT

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pty"),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="science-mode-4 needs Python 3.11"),
]

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
TWO_RATES = str(CONFIGS / "programs" / "reciprocal_two_rates.toml")
BICEPS_TRICEPS = str(CONFIGS / "biceps_triceps.toml")


def closedloop(*args: str) -> list[str]:
    """The installed ``closedloop`` command (as a user types it), else ``python -m``."""
    exe = shutil.which("closedloop")
    return [exe, *args] if exe else [sys.executable, "-m", "closedloop", *args]


class P24Process:
    """The P24 emulator script on a pty, with its state file."""

    def __init__(self, tmp_path: Path) -> None:
        self.state_path = tmp_path / "p24.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.emulators.p24", "--state", str(self.state_path)],
            cwd=ROOT, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pty = self.proc.stdout.readline().strip()
        assert self.pty.startswith("/dev/"), self.pty

    def state(self) -> dict:
        for _ in range(100):
            try:
                return json.loads(self.state_path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        raise AssertionError("no emulator state file")

    def wait(self, predicate, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.state_path.exists():
                state = self.state()
                if predicate(state):
                    return state
            time.sleep(0.05)
        raise AssertionError(f"emulator state never matched; events: {self.state()['events']}")

    def send(self, word: str) -> None:
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def close(self) -> dict:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc.stdin.close()
        self.proc.stdout.close()
        return self.state()


@pytest.fixture
def p24(tmp_path):
    emu = P24Process(tmp_path)
    yield emu
    emu.close()


def stimulating(state: dict) -> bool:
    return bool(state["any_running"])


def all_off(state: dict) -> bool:
    return not state["any_running"] and state["level"] == "none"


def updates(state: dict) -> list[dict]:
    """The Ml_update packets the emulator answered, decoded per enabled channel."""
    out = []
    for r in state["received"]:
        if r["name"] != "Ml_update" or r["result"] != 0:
            continue
        data, i, chans = bytes.fromhex(r["data"]), 1, {}
        for ch in range(1, 9):
            if data[0] >> (ch - 1) & 1:
                n = (data[i] >> 4) + 1
                period = ((data[i + 1] << 8 | data[i + 2]) >> 1) / 2.0
                b0, b1, b2 = data[i + 3:i + 6]
                chans[ch] = {"pw": b0 << 4 | b1 >> 4,
                             "ma": (((b1 & 0x0F) << 6 | b2 >> 2) - 300) / 2.0,
                             "period_ms": period}
                i += 3 + 4 * n
        out.append(chans)
    return out


def assert_device_clean(state: dict) -> None:
    """No rejected frame, no refused command, no keep-alive timeout, no violation."""
    answered = [r for r in state["received"] if r["answer"]]
    assert answered and all(r["result"] == 0 for r in answered), \
        [r for r in answered if r["result"]][:3]
    assert not [e for e in state["events"] if "damaged" in e]
    assert state["keepalive_timeouts"] == 0
    assert state["violations"] == []


# --- stim-test ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_stim_test_on_the_p24_ramps_holds_and_ends_all_off(p24):
    done = subprocess.run(
        closedloop("stim-test", "--config", BICEPS_TRICEPS, "--stimulator", f"p24:{p24.pty}",
                   "--muscle", "biceps", "--current", "8", "--duration", "1",
                   "--confirm-checklist"),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "peak 8 mA" in done.stdout and "completed" in done.stdout
    assert "science_mode_4" not in done.stderr  # the library's console log stays quiet
    state = p24.close()
    currents = [u[1]["ma"] for u in updates(state)]
    assert len(currents) >= 4 and max(currents) == 8.0  # ramp steps, not one jump
    assert max(b - a for a, b in zip(currents, currents[1:], strict=False)) <= 2.0
    assert all(u[1]["pw"] == 250 and u[1]["period_ms"] == 29.0 for u in updates(state))
    assert all_off(state)
    assert_device_clean(state)


# --- run ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_25_s_session_on_the_p24_each_muscle_at_its_own_rate(p24):
    """The simulated patient drives the emulated P24 for 25 s with the two-rate
    reciprocal program: both muscles are stimulated within their limits, each at its
    own period, with no refused command, no keep-alive timeout, and all off at the end."""
    done = subprocess.run(
        closedloop("run", "--config", TWO_RATES, "--stimulator", f"p24:{p24.pty}",
                   "--duration", "25", "--no-gui", "--no-outlets", "--confirm-checklist",
                   "--quiet", "--json"),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["reason"] == "duration" and summary["all_off"]
    assert summary["channels_on_at_end"] == [] and summary["violations"] == 0
    assert summary["trials"]["trials"] >= 2
    state = p24.close()
    seen = updates(state)
    biceps = [u[1] for u in seen if 1 in u]
    triceps = [u[2] for u in seen if 2 in u]
    assert biceps and triceps, "both muscles were stimulated"
    assert {u["period_ms"] for u in biceps} == {29.0}  # 35 Hz
    assert {u["period_ms"] for u in triceps} == {50.0}  # 20 Hz, at the same session
    for u in biceps + triceps:  # within the config's limits (40 mA, 400 us, 50 Hz)
        assert 0 < u["ma"] <= 20.0 and u["pw"] == 250 and 1000 / u["period_ms"] <= 50
    assert all_off(state)
    assert_device_clean(state)
    assert [r["name"] for r in state["received"] if r["name"].startswith("Ml_")][-1] == "Ml_stop"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("fault", "words", "confirmed"), [
    ("electrode 1", "channel 1 (biceps, yellow cable)", True),
    ("silent", "did not answer", False),
])
def test_an_electrode_error_or_a_silent_p24_ends_the_session_exit_5(p24, fault, words,
                                                                    confirmed):
    run = subprocess.Popen(
        closedloop("run", "--config", TWO_RATES, "--stimulator", f"p24:{p24.pty}",
                   "--duration", "40", "--no-gui", "--no-outlets", "--confirm-checklist",
                   "--quiet", "--json"),
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p24.wait(stimulating, timeout=40)
        t0 = time.monotonic()
        p24.send(fault)
        out, err = run.communicate(timeout=40)
        ended_s = time.monotonic() - t0
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            run.wait(timeout=10)
    assert run.returncode == 5, out + err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["reason"] == "device" and words in summary["message"]
    assert summary["channels_on_at_end"] == []  # the driver holds every channel off
    print(f"\n{fault}: session ended {ended_s:.2f} s after the fault")
    if confirmed:  # the device heard the stop and confirmed it
        assert "electrodes" in summary["message"] and summary["all_off"]
        assert all_off(p24.wait(all_off, timeout=5))
    else:  # a silent device cannot confirm: the clinician is told; it stops by itself
        assert not summary["all_off"]
        assert "switch the stimulator off by hand" in summary["message"]
        assert not stimulating(p24.wait(lambda s: not stimulating(s), timeout=5))
        assert p24.state()["keepalive_timeouts"] == 1


# --- what the RehaStim2 cannot run, and a missing extra ---------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["run", "stim-test"])
def test_the_two_rate_program_is_refused_on_the_rehastim2(command):
    args = ["--config", TWO_RATES, "--stimulator", "rehastim2:/dev/ttyUSB-not-opened"]
    if command == "stim-test":
        args += ["--muscle", "biceps", "--current", "5", "--confirm-checklist"]
    else:
        args += ["--no-gui", "--no-outlets", "--confirm-checklist", "--quiet"]
    done = subprocess.run(closedloop(command, *args), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=60)
    # a program the stimulator cannot run is a config error: 2 from both (one table)
    assert done.returncode == ConfigError.exit_code, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert "biceps 35 Hz, triceps 20 Hz" in text and "runs all channels at one frequency" in text
    assert "p24:PORT" in text
    assert "Traceback" not in text and "cannot open" not in text  # refused before opening


@pytest.mark.timeout(60)
def test_without_the_extra_stim_test_says_what_to_install(p24):
    script = ("import sys\n"
              "sys.modules['science_mode_4'] = None  # as if the extra were not installed\n"
              "from closedloop.cli import main\n"
              f"sys.exit(main({['stim-test', '--config', BICEPS_TRICEPS, '--stimulator', 'p24:' + p24.pty, '--muscle', 'biceps', '--current', '5', '--confirm-checklist']!r}))\n")  # noqa: E501
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "pip install 'closedloop[p24]'" in done.stderr and "Traceback" not in done.stderr
    assert not [r for r in p24.close()["received"]]  # nothing was sent
