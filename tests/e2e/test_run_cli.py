"""``closedloop run`` end to end, as a process: every stop path ends with the
stimulator's channels off and the documented exit code.

Real parts only: the command runs as a subprocess; EMG comes from the simulated patient
or from another process streaming it over LSL on loopback
(``python -m closedloop.analysis.latency serve``); the stimulator is the simulated one or the
strict RehaStim2 emulator on a pty (``python -m tests.emulators.rehastim2``), whose
state file shows what the "device" did. Times printed here (Ctrl-C to all off) are
measurements, not assertions.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from closedloop.analysis.latency import Streamer
from closedloop.io.xdf import load_session
from tests.conftest import CONFIGS, ROOT

CONFIG = str(CONFIGS / "biceps_triceps.toml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed


class Run:
    """``closedloop run ...`` as a child process; stderr (status lines) is collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "closedloop", "run", "--config", CONFIG, "--no-gui", *args],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(f, sink), daemon=True)
            for f, sink in ((self.proc.stderr, self.stderr), (self.proc.stdout, self.stdout))
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            if sink is self.stderr:
                self._lines.put(line)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """The first status line containing ``text``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"no status line with {text!r}; stderr:\n{''.join(self.stderr)}")

    def finish(self, timeout: float = 60.0) -> tuple[int, dict, str]:
        """Exit code, the JSON summary (last stdout line), the whole stdout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"closedloop run did not end:\n{''.join(self.stderr)}") from None
        for t in self._readers:
            t.join(timeout=5)
        out = "".join(self.stdout)
        lines = out.strip().splitlines()
        summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        return self.proc.returncode, summary, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Emulator:
    """The RehaStim2 emulator script on a pty, with its state file."""

    def __init__(self, tmp_path: Path) -> None:
        self.state_path = tmp_path / "rehastim2.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.emulators.rehastim2", "--state", str(self.state_path)],
            cwd=ROOT,
            env=ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pty = self.proc.stdout.readline().strip()
        assert self.pty.startswith("/dev/"), self.pty

    def state(self) -> dict:
        for _ in range(50):
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
        raise AssertionError(f"emulator state never matched; last: {self.state()['events']}")

    def send(self, word: str) -> None:
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def emulator(tmp_path):
    emu = Emulator(tmp_path)
    yield emu
    emu.close()


@pytest.fixture
def streamer():
    """Simulated EMG over LSL from another process: a biceps attempt every 3 s."""
    with Streamer(
        f"closedloop-test-{uuid.uuid4().hex[:8]}", "--seconds", "120", "--every", "3"
    ) as s:
        yield s


@pytest.fixture
def resting_streamer():
    """As ``streamer``, but the patient rests for the first 7 s, then tries every 3 s:
    the session starts at rest (the adaptive detector learns rest in its first second;
    a session that started during an attempt learnt it from activity and missed the
    next attempts, which made the recorded tests below fail now and then)."""
    attempts = [a for t in range(7, 40, 3) for a in ("--attempt", f"biceps:{t}:0.5")]
    with Streamer(f"closedloop-test-{uuid.uuid4().hex[:8]}", "--seconds", "120",
                  *attempts) as s:
        yield s


def stimulating(state: dict) -> bool:
    return bool(state["any_running"])


def all_off(state: dict) -> bool:
    return not state["any_running"] and all(
        ch["current_ma"] == 0 and not ch["running"] for ch in state["channels"].values()
    )


# -- normal end, signals, bad config ---------------------------------------------------------------
def test_duration_reached_while_stimulating_exit_0():
    run = Run("--duration", "3", "--no-outlets", "--json", "--quiet")
    code, summary, out = run.finish()
    assert code == 0 and summary["reason"] == "duration"
    assert summary["samples"] == 6000
    assert summary["trials"]["trials"] == 1  # the seed-0 patient tries at 2.0 s
    assert summary["all_off"] and summary["channels_on_at_end"] == []
    assert "all channels off: yes" in out


def test_sigterm_exit_143_all_off():
    run = Run("--no-outlets", "--json")
    run.wait_for(" 20 mA")  # stimulating the biceps at its plateau (a status line)
    run.proc.send_signal(signal.SIGTERM)
    code, summary, _ = run.finish()
    assert code == 143 and summary["reason"] == "sigterm"
    assert summary["all_off"] and summary["channels_on_at_end"] == []
    print(f"\nSIGTERM -> all off (sim stimulator): {summary['stop_to_off_ms']:.2f} ms")


def test_ctrl_c_exit_130_and_the_device_is_off(emulator):
    run = Run(
        "--stimulator",
        f"rehastim2:{emulator.pty}",
        "--confirm-checklist",
        "--no-outlets",
        "--json",
        "--quiet",
    )
    try:
        emulator.wait(stimulating)
        run.proc.send_signal(signal.SIGINT)
        code, summary, out = run.finish()
    finally:
        run.kill()
    assert code == 130 and summary["reason"] == "interrupt"
    assert summary["all_off"] and summary["channels_on_at_end"] == []
    assert all_off(emulator.wait(all_off, timeout=5))
    assert "stop -> all off" in out
    print(
        f"\nCtrl-C -> all off (RehaStim2 emulator, StopChannelListMode acknowledged): "
        f"{summary['stop_to_off_ms']:.2f} ms"
    )


def test_bad_config_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(CONFIG).read_text().replace("h_nats = 18.0", "h_nats = -1.0"))
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "run", "--config", str(bad), "--json"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "detector.h_nats = -1.0" in proc.stdout


# -- the source ------------------------------------------------------------------------------------
def test_source_stalls_exit_4(streamer):
    run = Run("--source", f"lsl:name={streamer.name}", "--no-outlets", "--json")
    try:
        run.wait_for("| triggers ")  # samples are flowing (the status line)
        streamer.send("stall")
        code, summary, _ = run.finish()
    finally:
        run.kill()
    assert code == 4 and summary["reason"] == "stall"
    assert "check the amplifier" in summary["message"]
    assert "watchdog 100 ms" in summary["message"]
    assert summary["all_off"] and summary["channels_on_at_end"] == []


def test_source_lost_ends_non_zero(streamer):
    run = Run("--source", f"lsl:name={streamer.name}", "--no-outlets", "--json")
    try:
        run.wait_for("| triggers ")
        streamer.proc.kill()  # the amplifier application crashes
        code, summary, _ = run.finish()
    finally:
        run.kill()
    assert code in (4, 5) and summary["reason"] in ("stall", "device")
    assert summary["all_off"] and summary["channels_on_at_end"] == []


# -- the stimulator --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("emergency", "emergency"),
        ("busy always", "answered busy (-8)"),
        ("vanish", "RehaStim2"),
        ("silent", "did not answer"),
    ],
)
def test_stimulator_lost_or_emergency_exit_5(emulator, fault, words):
    run = Run(
        "--stimulator",
        f"rehastim2:{emulator.pty}",
        "--confirm-checklist",
        "--no-outlets",
        "--json",
        "--quiet",
    )
    try:
        emulator.wait(stimulating)
        emulator.send(fault)
        code, summary, out = run.finish()
    finally:
        run.kill()
    assert code == 5 and summary["reason"] == "device"
    assert words in summary["message"]
    assert summary["channels_on_at_end"] == []  # the driver holds every channel off
    if fault in ("emergency", "busy always"):  # the device confirmed the stop
        assert summary["all_off"]
        assert all_off(emulator.wait(all_off, timeout=5))
    else:  # a device that is gone or hung cannot confirm: the clinician is told
        assert not summary["all_off"]
        assert "switch the stimulator off by hand" in summary["message"]
        assert "all channels off: NOT CONFIRMED" in out


# -- the whole chain -------------------------------------------------------------------------------
def check_recording(path: Path, streamer: Streamer) -> None:
    """Stimulation happened, every onset answers a true attempt, all ends off."""
    session = load_session(path)
    on = [c for c in session.commands if c.is_on]
    assert on, "no stimulation in the recording"
    last: dict[int, float] = {}
    for c in session.commands:
        last[c.channel] = c.current_ma
    assert all(v == 0.0 for v in last.values())
    t0, t1 = session.timestamps[0], session.timestamps[-1]
    truth = [t for t, m in streamer.onsets if m == "biceps" and t0 + 0.5 < t < t1]
    onsets = [e.time for e in session.events if e.kind == "onset" and e.channel == "biceps"]
    answers = lambda e: any(0.0 <= e - t < 0.15 for t in truth)  # noqa: E731 - within 150 ms
    assert onsets and all(answers(e) for e in onsets)  # no onset the patient did not make
    assert all(any(0.0 <= e - t < 0.15 for e in onsets) for t in truth if t < t1 - 0.15)
    assert answers(on[0].stream_time)  # stimulation started on a true attempt


@pytest.mark.slow
def test_lsl_stream_to_rehastim2_recorded(tmp_path, resting_streamer, emulator):
    xdf = tmp_path / "session.xdf"
    run = Run(
        "--source",
        f"lsl:name={resting_streamer.name}",
        "--stimulator",
        f"rehastim2:{emulator.pty}",
        "--confirm-checklist",
        "--record",
        str(xdf),
        "--duration",
        "12",
        "--json",
        "--quiet",
    )
    try:
        emulator.wait(stimulating, timeout=40)  # the device stimulated
        code, summary, out = run.finish()
    finally:
        run.kill()
    assert code == 0, out
    assert all_off(emulator.wait(all_off, timeout=5))  # and ended with every channel off
    assert "recording" in out and summary["all_off"]
    check_recording(xdf, resting_streamer)


@pytest.mark.slow
def test_lsl_stream_to_sim_recorded_and_replayed(tmp_path, resting_streamer):
    xdf = tmp_path / "session.xdf"
    run = Run(
        "--source",
        f"lsl:name={resting_streamer.name}",
        "--stimulator",
        "sim",
        "--record",
        str(xdf),
        "--duration",
        "12",
        "--json",
        "--quiet",
    )
    code, summary, out = run.finish()
    assert code == 0, out
    assert summary["all_off"] and summary["channels_on_at_end"] == []
    check_recording(xdf, resting_streamer)
    replay = subprocess.run(
        [sys.executable, "-m", "closedloop", "replay", str(xdf), "--check", "--quiet"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "check passed" in replay.stdout
