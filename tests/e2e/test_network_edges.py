"""The network edges of ``closedloop run``, with real processes on LSL loopback.

Sessions are ``closedloop run`` on the simulated patient (the installed ``closedloop``
script, output to pipes); the receiver is the installed ``closedloop stim-receiver
--json``.

Network identity (``--stimulator lsl``). Two sessions side by side: what a receiver of the
first gets never comes from the second, also after the first ended (the bug: a fixed
source_id let liblsl's recovery move a receiver of session A onto session B). A session
killed with SIGKILL, or frozen with SIGSTOP (its socket stays open; only the missing
heartbeat tells), makes the receiver switch everything off within 250 ms; the times
are measured on this machine's monotonic clock, which the receiver's lines carry.

Own streams are never inputs: another session's re-published EMG is not taken by
``lsl:name=``, and taken by ``lsl:source_id=`` only for detection, never to stimulate.

Who pressed STOP: a STOP from a control stream of this test process stops the session,
and the summary line, the JSON summary and the recording name its sender.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import numpy as np
import pylsl
import pytest

from closedloop.io.xdf import load_session
from closedloop.runtime.control import ControlOutlet
from tests.conftest import CONFIGS, ROOT

CLOSEDLOOP = shutil.which("closedloop")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the installed script, this checkout's code
CONFIG = str(CONFIGS / "biceps_triceps.toml")
OFF_WITHIN_S = 0.25

pytestmark = pytest.mark.skipif(CLOSEDLOOP is None, reason="the closedloop script is not "
                                "installed (pip install -e .)")


class Proc:
    """A ``closedloop`` process; its stdout and stderr lines are collected as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([CLOSEDLOOP, *args], cwd=ROOT, env=ENV, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.lines: list[str] = []
        self.errors: list[str] = []
        for stream, q, sink in ((self.proc.stdout, self.out, self.lines),
                                (self.proc.stderr, self.err, self.errors)):
            threading.Thread(target=self._read, args=(stream, q, sink), daemon=True).start()

    @staticmethod
    def _read(stream, q: queue.Queue, sink: list) -> None:
        for line in stream:
            sink.append(line)
            q.put(line)

    def next_line(self, q: queue.Queue, pattern: str, timeout: float = 60.0) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = q.get(timeout=0.1)
            except queue.Empty:
                continue
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r}; stderr:\n{''.join(self.errors)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def session(duration: float, *args: str, stimulator: str = "lsl") -> tuple[Proc, str]:
    """A ``closedloop run`` session (LSL stimulator by default) and the name it announced."""
    run = Proc("run", "--config", CONFIG, "--stimulator", stimulator, "--no-gui",
               "--confirm-checklist", "--quiet", "--json", "--duration", f"{duration:g}", *args)
    name = run.next_line(run.err, r"session (closedloop-\S+);").group(1)
    return run, name


def receiver(name: str) -> tuple[Proc, dict]:
    """``closedloop stim-receiver --session NAME --json`` once it has locked."""
    rx = Proc("stim-receiver", "--session", name, "--json")
    locked = json.loads(rx.next_line(rx.out, r'"action": "locked"').string)
    return rx, locked


def actions(rx: Proc) -> list[dict]:
    return [json.loads(line) for line in rx.lines if line.startswith("{")]


class NaiveInlet(threading.Thread):
    """What a careless receiver does: an inlet on the stream's source_id with liblsl's
    recovery on, keeping every message."""

    def __init__(self, source_id: str) -> None:
        super().__init__(daemon=True)
        found = pylsl.resolve_byprop("source_id", source_id, 1, 20.0)
        assert found, f"no stream with source_id {source_id}"
        self.inlet = pylsl.StreamInlet(found[0], recover=True)
        self.inlet.open_stream(timeout=10.0)
        self.got: list[tuple[float, dict]] = []
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            texts, _ = self.inlet.pull_chunk(timeout=0.05)
            now = time.monotonic()
            self.got += [(now, json.loads(t[0])) for t in texts]


@pytest.mark.timeout(240)
def test_two_sessions_side_by_side_a_receiver_of_the_first_never_gets_the_second():
    first, a_name = session(12)
    second, b_name = session(40)
    rx_a = rx_b = naive = None
    try:
        a_uid, b_uid = a_name.rsplit("-", 1)[1], b_name.rsplit("-", 1)[1]
        assert a_uid != b_uid
        rx_a, locked_a = receiver(a_name)
        rx_b, locked_b = receiver(b_name)
        assert (locked_a["session_uid"], locked_b["session_uid"]) == (a_uid, b_uid)
        naive = NaiveInlet(f"closedloop.{a_uid}.stimulator")
        # every stream the first session publishes carries its id in name, source_id
        # and description (the predicate is matched against each sender's description)
        streams = pylsl.resolve_bypred(f"desc/closedloop/session_uid='{a_uid}'", 1000, 2.0)
        assert len(streams) >= 8, [s.name() for s in streams]  # 7 outlets + the stimulator
        assert all(a_uid in s.name() and a_uid in s.source_id() for s in streams)

        assert first.proc.wait(timeout=90) == 0, "".join(first.errors)
        a_ended = time.monotonic()
        assert rx_a.proc.wait(timeout=10) == 0  # switched off: the session ended
        # the second session goes on stimulating; the careless inlet of the first keeps
        # listening (liblsl keeps trying to recover it)
        b_summary_line = second.next_line(second.out, r'^\{"reason"', timeout=90).string
        assert json.loads(b_summary_line)["exit_code"] == 0
        naive.halt.set()
        naive.join(5.0)
    finally:
        for p in (first, second, rx_a, rx_b):
            if p is not None:
                p.stop()

    got_a, got_b = actions(rx_a), actions(rx_b)
    assert got_a[-1]["action"] == "all_off" and got_a[-1]["why"] == "ended", got_a[-1]
    applied_a = [x for x in got_a if x["action"] in ("apply", "skip")]
    assert applied_a, "the receiver of the first session saw no command"
    seqs = [x["seq"] for x in applied_a]
    assert seqs == sorted(seqs)
    # the second session was stimulating after the first one ended ...
    b_late = [x for x in got_b if x["action"] == "apply" and x["t_monotonic"] > a_ended
              and x["current_ma"] > 0]
    assert b_late, "the second session sent no stimulation after the first ended"
    # ... and neither receiver of the first got any of it
    assert naive.got and {m["session"] for _, m in naive.got} == {a_uid}
    assert not [m for t, m in naive.got if t > a_ended + 0.6]  # nothing after A's last words
    first_summary = json.loads(first.lines[-1])
    assert first_summary["all_off"] is True


@pytest.mark.timeout(180)
def test_sigkill_or_sigstop_of_a_session_switches_the_receiver_off_within_250_ms():
    killed, k_name = session(120)
    frozen, f_name = session(120)
    rx_k = rx_f = None
    try:
        rx_k, _ = receiver(k_name)
        rx_f, _ = receiver(f_name)
        time.sleep(1.0)  # a few heartbeats
        assert rx_k.proc.poll() is None and rx_f.proc.poll() is None

        t_kill = time.monotonic()
        os.kill(killed.proc.pid, signal.SIGKILL)
        killed.proc.wait(timeout=10)
        t_dead = time.monotonic()  # the kernel has delivered the kill
        off_k = json.loads(rx_k.next_line(rx_k.out, r'"action": "all_off"', 10).string)

        t_stop = time.monotonic()
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        off_f = json.loads(rx_f.next_line(rx_f.out, r'"action": "all_off"', 10).string)
        os.kill(frozen.proc.pid, signal.SIGKILL)
        os.kill(frozen.proc.pid, signal.SIGCONT)
        assert rx_k.proc.wait(timeout=10) == 4 and rx_f.proc.wait(timeout=10) == 4
    finally:
        for p in (killed, frozen, rx_k, rx_f):
            if p is not None:
                p.stop()
    kill_to_off = off_k["t_monotonic"] - t_kill
    stop_to_off = off_f["t_monotonic"] - t_stop
    print(f"\nSIGKILL -> receiver all off: {1000 * kill_to_off:.1f} ms (kill delivered and "
          f"reaped after {1000 * (t_dead - t_kill):.1f} ms; {off_k['message']})"
          f"\nSIGSTOP -> receiver all off: {1000 * stop_to_off:.1f} ms ({off_f['message']})")
    assert off_k["why"] == "lost" and off_f["why"] == "lost"
    assert "no heartbeat" in off_f["message"]  # frozen: the socket is open, no heartbeat
    # 250 ms from the kill; only the time the kernel took to deliver it (the session
    # reaped) may add to that
    assert kill_to_off < OFF_WITHIN_S + (t_dead - t_kill)
    assert stop_to_off < OFF_WITHIN_S


# -- own streams are never inputs --------------------------------------------------------------
@pytest.mark.timeout(240)
def test_another_sessions_emg_is_never_an_input_to_stimulate_from():
    other, name = session(120, stimulator="sim")
    uid = name.rsplit("-", 1)[1]
    runs = []
    try:
        by_name = Proc("run", "--config", CONFIG, "--no-gui", "--quiet", "--duration", "2",
                       "--source", f"lsl:name={name}-EMG?resolve_timeout=2")
        by_id = Proc("run", "--config", CONFIG, "--no-gui", "--quiet", "--duration", "2",
                     "--source", f"lsl:source_id=closedloop.{uid}.emg")
        detect_only = Proc("run", "--config", CONFIG, "--no-gui", "--quiet", "--duration",
                           "2", "--stimulator", "none", "--no-outlets",
                           "--source", f"lsl:source_id=closedloop.{uid}.emg")
        runs = [by_name, by_id, detect_only]
        codes = [p.proc.wait(timeout=120) for p in runs]
    finally:
        for p in (other, *runs):
            p.stop()
    assert codes == [5, 6, 0], [("".join(p.lines), "".join(p.errors)) for p in runs]
    said = "".join(by_name.lines + by_name.errors)
    assert "closedloop sessions' own re-published streams" in said and f"{name}-EMG" in said
    said = "".join(by_id.lines + by_id.errors)
    assert f"re-published by closedloop session {name}" in said
    assert "closedloop never stimulates from another session's stream" in said
    said = "".join(detect_only.errors)
    assert f"re-published by closedloop session {name}; detection only" in said


# -- who pressed STOP --------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_a_stop_from_the_network_says_who_sent_it(tmp_path):
    path = tmp_path / "stopped.xdf"
    run, name = session(120, "--record", str(path), stimulator="sim")
    try:
        with ControlOutlet(name, origin="bench-operator@test") as ctl:
            deadline = time.monotonic() + 30
            while not ctl.has_listener() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ctl.has_listener(), "the session does not listen to the STOP stream"
            time.sleep(1.0)
            ctl.stop()
            while run.proc.poll() is None and time.monotonic() < deadline + 30:
                ctl.tick()
                time.sleep(0.05)
            uid = ctl.uid
        assert run.proc.wait(timeout=60) == 3, "".join(run.errors)
    finally:
        run.stop()
    time.sleep(0.2)  # the reader threads take the last lines
    host = socket.gethostname()
    sender = {"host": host, "source_id": ctl.source_id, "uid": uid, "name": f"{name}-Control",
              "origin": "bench-operator@test"}
    said = f"stopped with STOP from bench-operator@test on host {host}"
    assert run.lines[0].startswith(f"session ended: {said}"), run.lines[0]
    assert f"source_id {ctl.source_id}, stream uid {uid} (exit code 3)" in run.lines[0]
    summary = json.loads(run.lines[-1])
    assert summary["stopped_by"] == {**sender, "address": summary["stopped_by"]["address"]}
    assert summary["message"].startswith(said) and summary["all_off"] is True
    recorded = [m for m in load_session(path).markers if m.label == "stop_request"]
    assert len(recorded) == 1
    assert {k: recorded[0].fields[k] for k in sender} == sender


# -- a hostile control stream --------------------------------------------------------------------
#: What a careless or hostile program sends on a stream named like the session's control
#: stream: words and JSON that look like starting or raising stimulation, binary, a very
#: long string, and JSON nested deeper than Python's parser goes (it raised RecursionError
#: in the session's control thread, which then never read the view's STOP).
HOSTILE = ["start", "START", '{"command": "start"}', "raise current",
           '{"command": "raise", "muscle": "biceps", "current_ma": 100}',
           '{"command": ["stop"]}', "\x00\x01\x02\xff", "x" * 1_000_000,
           '{"command": ' + "[" * 100_000 + "]" * 100_000 + "}", "[" * 5000]


@pytest.mark.timeout(240)
def test_a_hostile_control_stream_never_stimulates_and_never_blocks_stop(tmp_path):
    path = tmp_path / "hostile.xdf"
    run, name = session(120, "--record", str(path), stimulator="sim")
    halt = threading.Event()
    try:
        info = pylsl.StreamInfo(f"{name}-Control", "Markers", 1, pylsl.IRREGULAR_RATE,
                                pylsl.cf_string, f"closedloop-control.hostile{os.getpid()}")
        hostile = pylsl.StreamOutlet(info)
        deadline = time.monotonic() + 30
        while not hostile.have_consumers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hostile.have_consumers(), "the session does not listen to control streams"

        def flood() -> None:
            while not halt.is_set():
                for text in HOSTILE:
                    hostile.push_sample([text])
                halt.wait(0.02)

        threading.Thread(target=flood, daemon=True).start()
        time.sleep(3.0)  # the flood runs while the simulated patient tries to move
        assert run.proc.poll() is None, "".join(run.lines + run.errors)
        with ControlOutlet(name, origin="ward-view@test") as ctl:  # subscribed after it
            while not ctl.has_listener() and time.monotonic() < deadline + 30:
                time.sleep(0.05)
            ctl.stop()
            sent = time.monotonic()
            while run.proc.poll() is None and time.monotonic() < sent + 10:
                ctl.tick()
                time.sleep(0.05)
        assert run.proc.wait(timeout=60) == 3, "".join(run.lines + run.errors)
    finally:
        halt.set()
        run.stop()
    time.sleep(0.2)  # the reader threads take the last lines
    summary = json.loads(run.lines[-1])
    assert summary["stopped_by"]["origin"] == "ward-view@test" and summary["all_off"] is True
    assert "Traceback" not in "".join(run.errors)
    # every command the session sent came from the EMG alone: a replay of the recording
    # derives exactly the same ones
    check = subprocess.run([CLOSEDLOOP, "replay", str(path), "--check", "--jobs", "1"],
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "check passed" in check.stdout, check.stdout + check.stderr


# -- an amplifier whose channel labels repeat --------------------------------------------------
class FakeAmplifier(threading.Thread):
    """An LSL EMG outlet (float32, 2 kHz, paced by the clock) with the given labels."""

    def __init__(self, labels: list[str], name: str) -> None:
        super().__init__(daemon=True)
        info = pylsl.StreamInfo(name, "EMG", len(labels), 2000.0, pylsl.cf_float32,
                                f"{name}-sid")
        chans = info.desc().append_child("channels")
        for label in labels:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", "V")
        self.outlet = pylsl.StreamOutlet(info)
        self.n = len(labels)
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        rng = np.random.default_rng(0)
        t0, sent = time.monotonic(), 0
        while not self.halt.is_set():
            due = int((time.monotonic() - t0) * 2000)
            if due > sent:
                x = rng.normal(0.0, 1e-5, (due - sent, self.n)).astype(np.float32)
                self.outlet.push_chunk(x.tolist())
                sent = due
            self.halt.wait(0.005)


@pytest.mark.timeout(120)
def test_an_amplifier_with_a_label_on_two_channels_is_refused_not_guessed():
    """The config's biceps reads channel 'biceps'; the amplifier labels two channels so.
    Which electrode is the biceps cannot be told: the session refuses before anything is
    stimulated (it stimulated from the first one), and says how to choose."""
    name = f"amp-twice-{uuid.uuid4().hex[:8]}"
    amp = FakeAmplifier(["biceps", "biceps", "triceps"], name)
    try:
        run = Proc("run", "--config", CONFIG, "--no-gui", "--quiet", "--no-outlets",
                   "--duration", "3", "--source", f"lsl:name={name}")
        code = run.proc.wait(timeout=90)
    finally:
        amp.halt.set()
        run.stop()
    time.sleep(0.2)
    said = "".join(run.lines + run.errors)
    assert code == 2, said
    assert "has 2 channels labelled so (0-based 0, 1)" in said and "0-based index" in said
    assert "Traceback" not in said and "onsets detected : \n" in said  # nothing ran


@pytest.mark.timeout(120)
def test_an_amplifier_that_never_sends_leaves_a_readable_recording(tmp_path):
    """The stream is found and then stays silent: the session stops as a stall before its
    first sample. The offs it records then have no stream time yet; they were stamped
    NaN, which made the recording CORRUPT (replay refused it, exit 9)."""
    name = f"amp-silent-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(name, "EMG", 2, 2000.0, pylsl.cf_float32, f"{name}-sid")
    chans = info.desc().append_child("channels")
    for label in ("biceps", "triceps"):
        chans.append_child("channel").append_child_value("label", label)
    outlet = pylsl.StreamOutlet(info)  # noqa: F841 - visible, silent
    path = tmp_path / "silent.xdf"
    run = Proc("run", "--config", CONFIG, "--no-gui", "--quiet", "--duration", "10",
               "--record", str(path), "--source", f"lsl:name={name}")
    try:
        code = run.proc.wait(timeout=90)
    finally:
        run.stop()
    time.sleep(0.2)
    said = "".join(run.lines + run.errors)
    assert code == 4 and "all channels off: yes" in said, said
    assert "recording silent.xdf: complete" in said, said
    check = subprocess.run([CLOSEDLOOP, "replay", str(path), "--check", "--jobs", "1"],
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "check passed" in check.stdout, check.stdout + check.stderr


@pytest.mark.timeout(180)
def test_closing_the_receivers_terminal_switches_it_off_and_says_so():
    """SIGHUP (its terminal closed) killed the receiver on the spot: no ALL OFF line for
    the program following its output. Now it ends as Ctrl-C and SIGTERM do."""
    run, name = session(60)
    rx = None
    try:
        rx, _ = receiver(name)
        time.sleep(0.5)
        rx.proc.send_signal(signal.SIGHUP)
        code = rx.proc.wait(timeout=10)
    finally:
        for p in (run, rx):
            if p is not None:
                p.stop()
    time.sleep(0.2)
    last = actions(rx)[-1]
    assert code == 129, "".join(rx.lines + rx.errors)
    assert last["action"] == "all_off" and last["why"] == "sighup", last
