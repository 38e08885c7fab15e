"""Every way a terminal session can end stops stimulation, and the port is exclusive.

Each command that can stimulate (``closedloop run``, ``closedloop stim-test``; ``calibrate``
never drives a stimulator) runs as a real process in its own process group and drives the
strict RehaStim2 emulator (``python -m tests.emulators.rehastim2``) over a pseudo-terminal,
as it would a RehaStim2 on ``/dev/ttyUSB0``. While the emulator reports a channel on, the
process group gets SIGINT, SIGTERM, SIGHUP or SIGQUIT, as a terminal sends them (Ctrl-C,
Ctrl-\\ and a closed window reach the whole foreground job). Each must end with the
device's channels switched off *by the command* (a StopChannelListMode the device
acknowledged, before its own 1.2 s watchdog could have done it), the summary printed,
the signal's exit code (128 + its number) and, for ``run --record``, a complete
recording. Closing the terminal itself (the pty the command runs on) is tested too: the
command gets SIGHUP and every later write to its terminal fails with EIO.

The signal -> all-off times printed here are measurements (device side: the signal sent
to the Stop the emulator executed), not assertions.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from closedloop.io.xdf import load_session
from tests.conftest import CONFIGS, ROOT
from tests.e2e.test_run_cli import Emulator, all_off, stimulating
from tests.faults.conftest import assert_recording_ends_off

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty") or not hasattr(signal, "SIGHUP"),
                                reason="needs POSIX signals and a pty")

CONFIG = str(CONFIGS / "biceps_triceps.toml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

#: (signal, exit code, reason in the JSON summary, words of the summary's first line)
SIGNALS = [
    pytest.param(signal.SIGINT, 130, "interrupt", "interrupted (Ctrl-C)", id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, "sigterm", "terminated (SIGTERM)", id="SIGTERM"),
    pytest.param(signal.SIGHUP, 129, "sighup", "hung up (SIGHUP: the terminal was closed)",
                 id="SIGHUP"),
    pytest.param(signal.SIGQUIT, 131, "sigquit", "quit (SIGQUIT, Ctrl-\\)", id="SIGQUIT"),
]


def as_a_shell_starts_a_foreground_job() -> None:
    """In the child before it runs closedloop: Ctrl-C and Ctrl-\\ at their defaults, as a
    shell starts a foreground job. A suite started in the background by a script has
    them ignored (POSIX), the children inherit that, and Python then leaves Ctrl-C
    ignored (as it must under ``nohup`` or ``&``): calibrate and replay, which end on
    Ctrl-C as Python's KeyboardInterrupt, would not see the signal these tests send."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


class Command:
    """``closedloop ARGS`` as a process group of its own (a terminal's foreground job);
    stdout and stderr are collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "closedloop", *args], cwd=ROOT, env=ENV,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            preexec_fn=as_a_shell_starts_a_foreground_job,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=sink.extend, args=(stream,), daemon=True)
                         for stream, sink in ((self.proc.stdout, self.out),
                                              (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    def signal(self, sig: int) -> float:
        """Send ``sig`` to the whole process group; the monotonic time it was sent."""
        sent = time.monotonic()
        os.killpg(self.proc.pid, sig)
        return sent

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """Exit code, stdout, stderr."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"closedloop did not end:\n{''.join(self.err)}") from None
        for t in self._readers:
            t.join(timeout=5)
        return self.proc.returncode, "".join(self.out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def emulator(tmp_path):
    emu = Emulator(tmp_path)
    yield emu
    emu.close()


def rehastim2(emulator: Emulator) -> list[str]:
    return ["--stimulator", f"rehastim2:{emulator.pty}", "--confirm-checklist"]


def run_args(emulator: Emulator, *extra: str) -> list[str]:
    return ["run", "--config", CONFIG, "--no-gui", *rehastim2(emulator), *extra]


def stim_test_args(emulator: Emulator, current: float = 30.0, hold: float = 5.0) -> list[str]:
    return ["stim-test", "--config", CONFIG, "--muscle", "biceps", "--current", f"{current:g}",
            "--duration", f"{hold:g}", *rehastim2(emulator)]


def switched_off_by_the_command(emulator: Emulator, sent: float) -> float:
    """Assert that after ``sent`` (monotonic) the device executed a StopChannelListMode
    from the command and was all off before its own watchdog fired; return the time
    from ``sent`` to that Stop, in seconds."""
    state = emulator.wait(all_off, timeout=5)
    t0 = state["t0_monotonic"]
    stops = [t0 + r["t"] for r in state["received"]
             if r["name"] == "StopChannelListMode" and r["result"] == 0 and t0 + r["t"] >= sent]
    assert stops, f"no StopChannelListMode after the signal; events: {state['events']}"
    expiries = [t0 + float(e.split()[0]) for e in state["events"] if "watchdog expired" in e]
    assert all(t > stops[0] for t in expiries), "the device's watchdog stopped it, not closedloop"
    assert state["violations"] == []
    return stops[0] - sent


# -- every signal on every command that can stimulate ----------------------------------------------
@pytest.mark.parametrize(("sig", "code", "reason", "words"), SIGNALS)
def test_run_stops_on_the_signal_all_off_summary_and_recording(tmp_path, emulator, sig, code,
                                                               reason, words):
    xdf = tmp_path / "session.xdf"
    run = Command(*run_args(emulator, "--record", str(xdf), "--json"))  # status lines too
    try:
        emulator.wait(stimulating)
        sent = run.signal(sig)
        rc, out, err = run.finish()
    finally:
        run.kill()
    assert rc == code, out + err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["reason"] == reason and summary["exit_code"] == code
    assert summary["all_off"] and summary["channels_on_at_end"] == []
    assert f"session ended: {words} (exit code {code})" in out
    assert "all channels off: yes" in out and "stop -> all off" in out
    device_s = switched_off_by_the_command(emulator, sent)
    # the recording was closed: LabRecorderCLI, which has its own session, finished it
    assert f"recording       : {xdf} - recording session.xdf: complete" in out, out
    session = load_session(xdf)
    assert session.complete and not session.truncated
    assert any(c.is_on for c in session.commands)
    assert_recording_ends_off(session)
    print(f"\nrun, {signal.Signals(sig).name} -> all off: {summary['stop_to_off_ms']:.1f} ms "
          f"from the handler to the acknowledged Stop; {1000 * device_s:.1f} ms from the "
          "signal to the Stop executed by the emulated device")


@pytest.mark.parametrize(("sig", "code", "reason", "words"), SIGNALS)
def test_stim_test_stops_on_the_signal_all_off_and_summary(emulator, sig, code, reason, words):
    test = Command(*stim_test_args(emulator, current=30.0, hold=5.0))
    try:
        emulator.wait(lambda s: s["channels"]["1"]["current_ma"] >= 30 and stimulating(s))
        sent = test.signal(sig)
        rc, out, err = test.finish()
    finally:
        test.kill()
    assert rc == code, out + err
    assert "stim-test biceps (channel 1): peak 30 mA" in out
    assert f"NOT completed ({words}); all channels off\n" in out
    assert "stop -> all off:" in out
    device_s = switched_off_by_the_command(emulator, sent)
    stop_ms = float(out.split("stop -> all off:")[1].split("ms")[0])
    print(f"\nstim-test, {signal.Signals(sig).name} -> all off: {stop_ms:.1f} ms from the "
          f"handler to the acknowledged Stop; {1000 * device_s:.1f} ms from the signal to "
          "the Stop executed by the emulated device")


#: Run by the test as the child on a new pty: make the pty its controlling terminal (as a
#: terminal window does for its shell), then become ``python -m closedloop ...``.
_ON_A_TERMINAL = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                  "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


def test_closing_the_terminal_stops_run_and_finishes_the_recording(tmp_path, emulator):
    """The terminal window is closed: the kernel hangs up the pty, sends SIGHUP, and every
    later write to the terminal (status lines, the summary) fails with EIO."""
    xdf = tmp_path / "session.xdf"
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", _ON_A_TERMINAL, "-m", "closedloop",
         *run_args(emulator, "--record", str(xdf))],  # status lines on the terminal
        cwd=ROOT, env=ENV, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=as_a_shell_starts_a_foreground_job)
    os.close(slave)
    shown: list[bytes] = []
    closing = threading.Event()

    def terminal() -> None:  # the window shows what is written to it
        while not closing.is_set():
            if select.select([master], [], [], 0.05)[0]:
                try:
                    shown.append(os.read(master, 4096))
                except OSError:
                    return

    reader = threading.Thread(target=terminal, daemon=True)
    reader.start()
    try:
        emulator.wait(stimulating)
        closing.set()
        reader.join(timeout=5)
        sent = time.monotonic()
        os.close(master)  # the window closes
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert b"closedloop run:" in b"".join(shown)  # it was writing to this terminal
    assert rc == 129
    device_s = switched_off_by_the_command(emulator, sent)
    session = load_session(xdf)
    assert session.complete and not session.truncated
    assert any(c.is_on for c in session.commands)
    assert_recording_ends_off(session)
    print(f"\nterminal closed -> all off: {1000 * device_s:.1f} ms from the hang-up to the "
          "Stop executed by the emulated device")


# -- the port is exclusive -------------------------------------------------------------------------
@pytest.mark.parametrize(("first", "second"), [("run", "stim-test"), ("stim-test", "run"),
                                               ("run", "run")])
def test_a_second_session_on_the_port_is_refused_and_the_first_goes_on(emulator, first,
                                                                       second):
    def args(which: str) -> list[str]:
        if which == "run":
            return run_args(emulator, "--no-outlets", "--quiet", "--duration", "10", "--json")
        return stim_test_args(emulator, current=20.0, hold=6.0)

    one = Command(*args(first))
    try:
        emulator.wait(stimulating)
        two = Command(*args(second))
        rc2, out2, err2 = two.finish(timeout=30)
        still, alive = emulator.state(), one.proc.poll() is None
        rc1, out1, err1 = one.finish()
    finally:
        one.kill()
    assert rc2 == 5, out2 + err2
    assert f"the RehaStim2 port {emulator.pty} is in use by another program" in err2 + out2
    assert "nothing was sent" in err2 + out2
    assert alive  # refused while the first session ran
    if first == "stim-test":  # 7 s of train: the refusal came in the middle of it
        assert still["any_running"]
    assert rc1 == 0, out1 + err1  # it ended normally: none of its Acks was taken
    assert "all channels off" in out1
    state = emulator.wait(all_off, timeout=5)
    assert state["violations"] == []  # packet numbers ran on: only one session sent
    assert sum(r["name"] == "InitAck" for r in state["received"]) == 1


# -- a signal while the session is still starting ---------------------------------------------
@pytest.mark.parametrize(("sig", "code", "reason", "words"), SIGNALS)
def test_a_signal_while_waiting_for_the_amplifier_ends_run_at_once(tmp_path, emulator, sig,
                                                                    code, reason, words):
    """The amplifier's stream is not there yet (resolve_timeout=60): the signal was only
    recorded, and the session waited the full minute, then ended as 'no LSL stream'
    (exit 5). Now it ends at once with the signal's code, the device closed, and the
    claimed recording (nothing recorded yet) is not left behind as an empty file."""
    xdf = tmp_path / "never.xdf"
    run = Command(*run_args(emulator, "--json", "--quiet", "--record", str(xdf), "--source",
                            f"lsl:name=nobody-{tmp_path.name}?resolve_timeout=60"))
    try:
        emulator.wait(lambda s: any("connected" in e for e in s["events"]), timeout=60)
        time.sleep(1.0)  # the session is waiting for the stream
        run.signal(sig)
        rc, out, err = run.finish(timeout=15)
    finally:
        run.kill()
    summary = json.loads(out.splitlines()[-1])
    assert rc == code and summary["reason"] == reason, out + err
    assert out.startswith(f"session ended: {words} while the session was starting; nothing "
                          "was stimulated"), out
    assert summary["all_off"] is True and summary["commands"] == 0
    assert emulator.state()["received"] == [] or all(
        r["name"] != "StartChannelListMode" for r in emulator.state()["received"])
    assert not xdf.exists()


class _Terminal:
    """``python -m closedloop ARGS`` with a pty as its controlling terminal; what it writes
    is gathered in :attr:`shown`, and :meth:`write` types on its keyboard."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ON_A_TERMINAL, "-m", "closedloop", *args],
            cwd=ROOT, env=ENV, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=as_a_shell_starts_a_foreground_job)
        os.close(slave)
        self.shown = bytearray()

    def read_until(self, word: bytes | None, timeout: float) -> bool:
        """Gather output until ``word`` shows (None: until the terminal is quiet for
        ``timeout``, or closes); True when it showed."""
        end = time.monotonic() + timeout
        while word is None or (word not in self.shown and time.monotonic() < end):
            if select.select([self.master], [], [], 0.05 if word else timeout)[0]:
                try:
                    self.shown.extend(os.read(self.master, 4096))
                except OSError:
                    break
            elif word is None:
                break
        return word is not None and word in self.shown

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> str:
        """End the process if it is still running; what the terminal showed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)
        return self.shown.decode(errors="replace")


def test_ctrl_c_at_the_checklist_ends_run_at_once(emulator):
    """Ctrl-C while the safety checklist waits for an answer: the handler only recorded
    it and the question went on waiting (the session then started once every question
    was answered, and stopped). Now the checklist ends at once, nothing stimulated."""
    term = _Terminal("run", "--config", CONFIG, "--no-gui", "--stimulator",
                     f"rehastim2:{emulator.pty}")  # no --confirm-checklist
    try:
        assert term.read_until(b"[y/n]", 60), bytes(term.shown)
        os.killpg(term.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole job
        rc = term.proc.wait(timeout=10)
        term.read_until(b"patient record", 5)
    finally:
        said = term.close()
    assert rc == 130, said
    assert "interrupted (Ctrl-C) while the session was starting; nothing was stimulated" in said
    assert "Traceback" not in said
    assert all(r["name"] != "StartChannelListMode" for r in emulator.state()["received"])


def test_the_checklist_answered_on_the_terminal_still_runs(emulator):
    """The answers typed ahead in one go (as a paste) are each taken by their question."""
    term = _Terminal("run", "--config", CONFIG, "--no-gui", "--quiet", "--no-outlets",
                     "--duration", "1", "--stimulator", f"rehastim2:{emulator.pty}")
    try:
        term.read_until(b"[y/n]", 60)
        term.write(b"y\n" * 20)
        rc = term.proc.wait(timeout=60)
        term.read_until(None, 0.2)
    finally:
        said = term.close()
    assert rc == 0 and "all confirmed" in said and "duration reached" in said, said


# -- commands that do not stimulate ----------------------------------------------------------------
@pytest.mark.parametrize(("sig", "code", "words"), [
    pytest.param(signal.SIGTERM, 143, "terminated (SIGTERM)", id="SIGTERM"),
    pytest.param(signal.SIGHUP, 129, "hung up (SIGHUP: the terminal was closed)", id="SIGHUP"),
    pytest.param(signal.SIGINT, 130, "interrupted", id="SIGINT"),
])
def test_a_signal_during_calibration_says_so_and_leaves_no_empty_patient_config(tmp_path, sig,
                                                                               code, words):
    """SIGTERM or SIGHUP killed calibrate on the spot: no word, and the patient config it
    had claimed stayed behind empty, so the next calibration was refused ('already
    exists'). Now every stop signal ends it as Ctrl-C did."""
    out = tmp_path / "patient.toml"
    cal = Command("calibrate", "--config", CONFIG, "--out", str(out), "--no-gui", "--yes")
    try:
        deadline = time.monotonic() + 60
        while not any("REST" in line for line in cal.out) and time.monotonic() < deadline:
            time.sleep(0.05)  # calibrating: the rest phase has begun
        assert out.exists(), "the patient config is claimed while calibrating"
        cal.signal(sig)
        rc, said, err = cal.finish(timeout=20)
    finally:
        cal.kill()
    assert rc == code, said + err
    assert f"closedloop calibrate: {words}" in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(("sig", "code", "words", "group"), [
    pytest.param(signal.SIGTERM, 143, "terminated (SIGTERM)", False, id="SIGTERM"),
    pytest.param(signal.SIGTERM, 143, "terminated (SIGTERM)", True, id="SIGTERM-group"),
    pytest.param(signal.SIGINT, 130, "interrupted", True, id="Ctrl-C"),
])
def test_a_signal_ends_a_replay_batch_at_once_without_its_workers(tmp_path, sig, code, words,
                                                                   group):
    """replay of many files on worker processes: the signal waited for every queued
    replay to run (Ctrl-C: 15 s on 12 files here), and the workers, which inherit the
    handlers, printed tracebacks. Now the batch ends at once and the workers with it."""
    import shutil

    first = tmp_path / "r0.xdf"
    shutil.copy(ROOT / "recordings" / "sim_biceps_triceps.xdf", first)
    files = [first]
    for k in range(1, 400):  # a minute or two of replays on two workers
        files.append(tmp_path / f"r{k}.xdf")
        os.link(first, files[-1])
    rp = Command("replay", *map(str, files), "--jobs", "2", "--quiet", "--check")
    try:
        time.sleep(6.0)  # started (a few seconds), replaying
        assert rp.proc.poll() is None, "".join(rp.err)
        if group:
            rp.signal(sig)  # as a terminal does: the workers get it too
        else:
            rp.proc.send_signal(sig)
        rc, out, err = rp.finish(timeout=20)
    finally:
        rp.kill()
    assert rc == code, err
    assert f"closedloop replay: {words}" in err and "Traceback" not in err, err
    assert out.count("check passed") < 400
    ps = subprocess.run(["pgrep", "-g", str(rp.proc.pid)], capture_output=True, text=True)
    assert ps.stdout.strip() == "", f"workers left: {ps.stdout}"
