"""The live window, offscreen, against LSL streams shaped like a running session's.

A :class:`~closedloop.runtime.demo.DemoSession` publishes through the real
:class:`~closedloop.io.outlets.SessionOutlets` from a feeder thread (simulated EMG, the
pipeline's envelope/thresholds/events, stimulation commands, trial markers).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from closedloop.runtime.control import ControlInlet, ControlOutlet, decode_command
from closedloop.runtime.demo import DemoSession
from closedloop.view.lsl_client import (
    CONNECTED,
    FROM_SESSION,
    FROM_VIEW,
    LOST,
    SessionClient,
)

ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def demo():
    d = DemoSession(unique("viewtest"), n_channels=3, response_window_s=1.5).start()
    yield d
    d.close()


@pytest.fixture
def threshold_demo():
    """The demo with the envelope threshold detector (on/off thresholds in µV)."""
    d = DemoSession(unique("viewtest"), n_channels=3, response_window_s=1.5,
                    detector="threshold").start()
    yield d
    d.close()


def wait_for(cond, timeout: float, qtbot=None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if qtbot is not None:
            qtbot.wait(50)
        else:
            time.sleep(0.05)
    return cond()


def test_client_sees_every_stream(demo):
    with SessionClient(demo.session_name, window_s=5.0) as client:
        assert client.wait_connected(10.0)
        assert wait_for(lambda: client.snapshot().trial.hits + client.snapshot().trial.misses
                        >= 1, 15.0)
        s = client.snapshot()
    assert s.status == CONNECTED and s.session == demo.session_name
    assert s.channels == demo.muscles and s.fs == demo.fs
    # peaks of the EMG the session's detector saw (its Filtered stream) and the envelope
    assert s.emg_from == FROM_SESSION
    assert s.emg_lo.shape[1] == 3 and s.env_hi.shape[1] == 3 and s.emg_t.shape[0] > 500
    assert np.all(np.diff(s.emg_t) > 0) and np.all(s.emg_hi >= s.emg_lo)
    assert s.thr_on.shape[1] == 3 and np.isfinite(s.thr_on[-1]).all()
    assert s.config is not None and s.trial.n_trials == demo.n_trials
    assert s.trial.trial >= 0
    assert set(s.quality) == set(demo.muscles)
    assert all(q.status == "ok" for q in s.quality.values()), s.quality


def test_window_draws_moves_and_stop_reaches_the_loop(qtbot, threshold_demo, tmp_path):
    demo = threshold_demo
    from closedloop.view.window import SessionWindow

    stops = []
    client = SessionClient(demo.session_name, window_s=5.0)
    win = SessionWindow(client, on_stop=lambda: stops.append(time.monotonic()))
    qtbot.addWidget(win)
    win.show()
    loop_side = ControlInlet(demo.session_name)  # what the session's loop owns
    try:
        assert client.wait_connected(10.0)
        # a real session's envelope is zero while its filters settle: wait for both traces
        assert wait_for(lambda: len(win.rows) == 3 and win.curve_data(0)["emg"][0].size > 100
                        and win.curve_data(0)["env"][0].size > 100, 10.0, qtbot)
        first = win.curve_data(0)
        ticks = win.ticks
        assert wait_for(lambda: win.ticks >= ticks + 3, 5.0, qtbot)
        second = win.curve_data(0)
        # the traces moved: new samples arrived and were drawn
        assert first["emg"][1].shape != second["emg"][1].shape or not np.array_equal(
            first["emg"][1], second["emg"][1]
        )
        assert not np.array_equal(first["env"][1], second["env"][1])
        # thresholds appear once the adaptive baseline has warmed up
        assert wait_for(lambda: np.isfinite(win.curve_data(0)["on"][1]).any(), 10.0, qtbot)
        assert np.isfinite(win.curve_data(0)["off"][1]).any()
        # every channel's lane is drawn
        for k in range(3):
            assert np.isfinite(win.curve_data(k)["emg"][1]).sum() > 100
        assert win.cue_label.text() and "trial" in win.panel_labels[0].text()

        assert loop_side.wait_connected(10.0)
        assert wait_for(lambda: win.control.has_listener(), 5.0, qtbot)
        assert "listening" in win.link_label.text()
        qtbot.mouseClick(win.stop_button, __import__("PySide6").QtCore.Qt.MouseButton.LeftButton)
        assert len(stops) == 1  # in-process callback ran at once
        got: list = []
        assert wait_for(lambda: bool(got.extend(loop_side.poll()) or got), 3.0, qtbot)
        assert got[0].command == "stop"
        assert got[0].sender.source_id == win.control.source_id
        assert "STOP pressed" in win.statusBar().currentMessage()
        # the demo session's own control inlet stopped its stimulation too
        assert wait_for(lambda: demo.stim_stopped.is_set(), 5.0, qtbot)
        png = win.save_png(tmp_path / "w.png")
        assert png.stat().st_size > 10_000
    finally:
        loop_side.close()
        win.close()


def test_stop_with_nothing_connected_says_so(qtbot):
    from closedloop.view.window import SessionWindow

    client = SessionClient(unique("nobody"), window_s=5.0)
    win = SessionWindow(client, control=None)
    qtbot.addWidget(win)
    win.press_stop()
    assert "nothing received the stop" in win.statusBar().currentMessage()
    assert "stimulator" in win.statusBar().currentMessage()
    win.close()


def test_failing_on_stop_is_shown_and_lsl_stop_still_sent(qtbot):
    from closedloop.view.window import SessionWindow

    name = unique("failstop")

    def broken():
        raise RuntimeError("loop gone")

    with ControlInlet(name) as inlet:
        client = SessionClient(name, window_s=5.0)
        win = SessionWindow(client, on_stop=broken)  # control created from the name
        qtbot.addWidget(win)
        assert inlet.wait_connected(10.0)
        assert wait_for(lambda: win.control.has_listener(), 5.0, qtbot)
        win.press_stop()
        msg = win.statusBar().currentMessage()
        assert "FAILED: loop gone" in msg and f"stop sent to {name}" in msg
        got: list = []
        assert wait_for(lambda: bool(got.extend(inlet.poll()) or got), 3.0, qtbot)
        assert "stop" in {c.command for c in got}
        win.close()


def test_control_decoding_and_repeats():
    assert decode_command('{"seq": 0, "command": "stop"}') == "stop"
    assert decode_command(" STOP ") == "stop"
    assert decode_command('{"command": "start"}') is None
    assert decode_command("{not json") is None
    name = unique("repeat")
    with ControlInlet(name) as inlet, ControlOutlet(name, repeat_s=1.0,
                                                     repeat_every_s=0.1) as out:
        assert inlet.wait_connected(10.0)
        assert wait_for(out.has_listener, 5.0)
        t0 = time.monotonic()
        out.stop()
        for k in range(1, 20):
            out.tick(t0 + 0.05 * k)
        assert out.sent >= 8
        got: list = []
        assert wait_for(lambda: len(got.extend(inlet.poll()) or got) >= out.sent, 3.0)
        assert {c.command for c in got} == {"stop"}
        # who sent it: the control stream's identity, and the origin it wrote
        sender = got[0].sender
        assert sender.source_id == out.source_id and sender.name == f"{name}-Control"
        assert sender.host == socket.gethostname() and len(sender.uid) >= 32
        assert sender.origin == out.origin == f"view@{socket.gethostname()}"
        assert {c.sender for c in got} == {sender}
        t = time.perf_counter()
        inlet.poll()
        assert time.perf_counter() - t < 0.01  # never blocks the loop


def test_client_reports_a_lost_session(demo):
    with SessionClient(demo.session_name, window_s=5.0) as client:
        assert client.wait_connected(10.0)
        demo.close()
        assert wait_for(lambda: client.snapshot().status == LOST, 10.0)
        assert "ended" in client.snapshot().message


def test_view_app_writes_a_screenshot_in_a_subprocess(demo, tmp_path):
    shot = tmp_path / "view.png"
    code = (
        "import sys; from closedloop.view.app import run_view; "
        f"sys.exit(run_view({demo.session_name!r}, screenshot={str(shot)!r}, "
        "screenshot_after_s=2.0, window_s=5.0))"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file()
    from PySide6 import QtGui

    img = QtGui.QImage(str(shot))
    assert img.width() >= 800 and img.height() >= 500
    # non-blank: many distinct colours (traces, STOP button, text)
    step = 7
    colours = {img.pixel(x, y) for x in range(0, img.width(), step)
               for y in range(0, img.height(), step)}
    assert len(colours) > 20


def test_nan_in_the_emg_stream_is_flagged_and_does_not_stick_in_the_trace():
    """The session records EMG as received, NaN included: the view flags the channel
    and draws the trace held over the NaN, and its filter is not left NaN for good."""
    from closedloop.core.stream import SourceInfo
    from closedloop.io.outlets import SessionOutlets

    fs = 1000.0
    info = SourceInfo("amp", fs, ("biceps", "triceps"), "V", "sim")
    x = np.random.default_rng(0).normal(0.0, 1e-5, size=(4000, 2))
    x[1000:1050, 0] = np.nan
    with SessionOutlets(unique("nanview"), info, with_envelope=False) as out, \
            SessionClient(out.session_name, window_s=5.0) as client:
        assert client.wait_connected(10.0)
        t0 = time.monotonic()
        for a in range(0, 1500, 50):
            out.push_emg(x[a : a + 50], t0 + np.arange(a, a + 50) / fs, start=a)
        assert wait_for(lambda: client.snapshot().samples >= 1500
                        and client.snapshot().quality["biceps"].status == "flat", 10.0)
        s = client.snapshot()
        assert "non-finite" in s.quality["biceps"].detail
        assert s.quality["triceps"].status == "ok"
        for a in range(1500, 4000, 50):
            out.push_emg(x[a : a + 50], t0 + np.arange(a, a + 50) / fs, start=a)
        assert wait_for(lambda: client.snapshot().samples >= 4000
                        and client.snapshot().quality["biceps"].status == "ok", 10.0)
        s = client.snapshot()
    assert s.emg_from == FROM_VIEW  # no Filtered stream: filtered here
    assert np.isfinite(s.emg_lo).all() and np.isfinite(s.emg_hi).all()
    assert (s.emg_hi[-50:, 0] > s.emg_lo[-50:, 0]).all()


def test_the_view_flags_a_channel_the_session_suspended():
    """The loop publishes what its input checks say (``input_issue`` markers); the view
    shows the pinned biceps flagged with the session's own message while it lasts."""
    import threading
    from dataclasses import replace

    from closedloop.config import load_config
    from closedloop.io.outlets import SessionOutlets
    from closedloop.runtime.loop import LoopOptions, run_loop
    from tests.faults.conftest import FaultySource, replaced
    from tests.runtime.conftest import sim_session

    config = load_config(ROOT / "configs" / "biceps_triceps.toml")
    src, stim = sim_session(config, [], chunk=20)
    src.realtime = True

    def pinned(chunk):
        x = chunk.samples.copy()
        x[:, 0] = 5e-3
        return [replaced(chunk, x)]

    faulty = FaultySource(src, {k: pinned for k in range(400, 1000)})  # from 4 s (connected)
    outlets = SessionOutlets(unique("flagview"), replace(src.info, channels=config.muscle_names),
                             config_text=config.text)
    done = threading.Event()
    loop = threading.Thread(target=lambda: (run_loop(
        config, faulty, stim, outlets=outlets,
        options=LoopOptions(duration_s=7.0, watchdog_s=2.0)), done.set()))
    loop.start()
    try:
        with SessionClient(outlets.session_name, window_s=5.0) as client:
            assert client.wait_connected(3.5)  # before the fault: markers are not replayed
            # the session's words (held at 4.0015 s, then saturated at 4.05 s), not the
            # view's own "no signal change"
            flagged = wait_for(lambda: client.snapshot().quality["biceps"].detail.startswith(
                "channel biceps: "), 8.0)
            q = client.snapshot().quality
    finally:
        loop.join(15.0)
        outlets.close()
    assert done.is_set() and flagged, q
    assert q["biceps"].status in ("flat", "saturated")
    assert q["triceps"].status not in ("flat", "saturated")


# -- units, the session panel, no calibration during a session --------------------------------
def test_axes_show_amplitude_scales_in_microvolts_and_no_calibrate_button(qtbot,
                                                                          threshold_demo):
    """The demo streams volts: both plots' left axes are labelled in µV and carry a
    scale per lane (-v, 0, +v on the EMG; 0, v on the envelope), in µV, not in
    scientific notation; the channel panel speaks µV; no Calibrate button (the
    threshold detector's envelope; a cusum session's axes: the test below)."""
    from PySide6 import QtWidgets

    from closedloop.view.window import SessionWindow

    demo = threshold_demo
    client = SessionClient(demo.session_name, window_s=5.0)
    win = SessionWindow(client, control=None)
    qtbot.addWidget(win)
    win.show()
    try:
        assert wait_for(lambda: len(win.rows) == 3 and len(win.axis_ticks("emg")) == 9
                        and len(win.axis_ticks("env")) == 6, 15.0, qtbot)
        emg_axis = win.emg_plot.getAxis("left").labelText
        env_axis = win.env_plot.getAxis("left").labelText
        assert emg_axis == "EMG (µV)" and env_axis == "envelope (µV)"
        for which in ("emg", "env"):
            labels = [t for _, t in win.axis_ticks(which)]
            assert "0" in labels
            values = [float(t.replace("−", "-").lstrip("+")) for t in labels]
            # the simulated EMG is a few to a few hundred µV: a scale in µV, not in V
            assert all(abs(v) < 5000 for v in values) and max(values) >= 0.5, labels
            assert not any("e-" in t for t in labels)
        # the tick of each lane sits inside that lane
        ys = sorted(y for y, _ in win.axis_ticks("emg"))
        assert all(0.0 < y < 3.0 for y in ys)
        assert wait_for(lambda: "µV" in win.channel_labels[0].text(), 5.0, qtbot)
        texts = [b.text() for b in win.findChildren(QtWidgets.QPushButton)]
        assert "STOP" in texts and not any("alibrat" in t for t in texts), texts
        assert not hasattr(win, "calibrate_button")
    finally:
        win.close()


LATE_CONFIG = """
name = "late_view"
[detector]
baseline = "adaptive"
[[muscles]]
name = "biceps"
channel = "biceps"
antagonist = "triceps"
  [muscles.stim]
  channel = 1
  current_ma = 4.0
  ramp_up_s = 0.1
  ramp_down_s = 0.1
  on_time_s = 0.3
  rest_time_s = 1.0
  [muscles.limits]
  max_current_ma = 10.0
  max_on_time_s = 2.0
  min_rest_s = 1.0
  max_step_ma = 2.0
[[muscles]]
name = "triceps"
channel = "triceps"
antagonist = "biceps"
[protocol]
kind = "triggered_assist"
agonist = "biceps"
[safety]
session_dose_s = 600.0
"""


@pytest.mark.timeout(90)
def test_the_panel_counts_equal_the_sessions_when_the_view_attaches_late(qtbot):
    """A simulated triggered-assist session runs through the real loop and outlets;
    the view opens after several triggers. Its panel shows the session's counts from
    the start: triggers, stimulation trains and seconds (on the sample clock) and
    onsets equal the loop's own outcome."""
    import threading
    from dataclasses import replace

    from closedloop.config import loads_config
    from closedloop.io.outlets import SessionOutlets
    from closedloop.runtime.loop import LoopOptions, run_loop
    from closedloop.sim.patient import Attempt
    from closedloop.view.window import SessionWindow
    from tests.runtime.conftest import sim_session

    config = loads_config(LATE_CONFIG, source="late view test")
    script = [Attempt("biceps", t, 0.8, 0.9, 0.05) for t in np.arange(2.0, 13.0, 1.8)]
    src, stim = sim_session(config, script, chunk=20)
    src.realtime = True
    outlets = SessionOutlets(unique("lateview"), replace(src.info, channels=config.muscle_names),
                             config_text=config.text, metadata={"patient": "P042"})
    result: dict = {}
    loop = threading.Thread(target=lambda: result.setdefault("out", run_loop(
        config, src, stim, outlets=outlets,
        options=LoopOptions(duration_s=14.0, watchdog_s=2.0))))
    loop.start()
    win = None
    try:
        # attach late: once the session has triggered at least twice
        assert wait_for(lambda: outlets.tally.trials.get("trigger", 0) >= 2, 30.0)
        client = SessionClient(outlets.session_name, window_s=5.0)
        win = SessionWindow(client, control=None)
        qtbot.addWidget(win)
        win.show()
        loop.join(40.0)
        out = result["out"]
        assert out.exit_code == 0, out.message
        n = out.trials["trials"]
        trains = outlets.tally.stim["biceps"].trains

        def shows_the_totals() -> bool:
            s = win.last_snapshot
            return (s is not None and s.counts_complete and s.counts is not None
                    and s.counts.trials.get("trigger", 0) == n
                    and s.counts.stim.get("biceps") is not None
                    and s.counts.stim["biceps"].on_since is None
                    and s.counts.stim["biceps"].trains == trains
                    and win.cue_label.text() == f"{n} triggers")

        assert wait_for(shows_the_totals, 15.0, qtbot)
        s = win.last_snapshot
        seen_from_open = client._seen.trials.get("trigger", 0)
    finally:
        loop.join(40.0)
        if win is not None:
            win.close()
        outlets.close()
    assert n >= 4 and seen_from_open < n  # the view really did open late
    assert s.counts.onsets == {m: k for m, k in out.onsets.items() if k}
    assert s.counts.stim_seconds() == pytest.approx(out.stim_seconds, abs=1e-9)
    panel = " ".join(lab.text() for lab in win.panel_labels)
    total = sum(out.stim_seconds.values())
    assert f"stimulation <b>{trains}</b> trains, <b>{total:.0f} s</b>" in panel
    assert "dose used <b>" in panel and "of 600 s" in panel
    assert "remaining <b>0:00</b> of 0:14" in panel
    assert "Patient P042" in win.session_label.text()


def test_panel_words_for_cued_trials_opened_between_cues():
    """A view opened between two cues: the trial number, hits and misses come from
    the session's totals; before the first total arrives the counts say so ('…')."""
    import math

    from closedloop.config import loads_config
    from closedloop.io.outlets import SessionTally
    from closedloop.runtime.demo import demo_config_text
    from closedloop.view.buffers import TrialState
    from closedloop.view.lsl_client import Snapshot
    from closedloop.view.window import clock, panel_text

    config = loads_config(demo_config_text(("biceps", "triceps"), 2000.0, 9.0, 3.0, 60),
                          source="demo")
    counts = SessionTally(2000.0)
    counts.trials = {"cue": 5, "hit": 3, "miss": 1}
    counts.duration_s = None
    snap = Snapshot(config=config, fs=2000.0, now=100.0, counts=counts, counts_complete=True,
                    position=2000 * 50, elapsed_s=50.0, trial=TrialState(n_trials=60),
                    channels=("biceps", "triceps"))
    big, lines = panel_text(snap)
    assert big == "rest"
    assert lines[0] == "trial <b>5/60</b>" and lines[1] == "hits <b>3</b> · misses <b>1</b>"
    assert "elapsed <b>0:50</b>" in lines
    snap.counts_complete = False
    _, lines = panel_text(snap)
    assert lines[1] == "hits <b>…</b> · misses <b>…</b>"
    assert clock(3725.0) == "1:02:05" and clock(math.nan) == "-"


@pytest.mark.timeout(90)
def test_a_cusum_session_shows_its_statistic_in_nats_and_the_emg_level_in_microvolts(qtbot):
    """A simulated session decided by the cusum detector, through the real loop and
    outlets: the right plot is its statistic in nats against its on-threshold (no
    off-threshold line: cusum decides offsets on another statistic, and no offset drawn
    at that statistic's value), and each muscle's panel shows the EMG level in µV (the
    statistic rests at 0 while the muscle is active: it cannot show the activity)."""
    import threading
    from dataclasses import replace

    from closedloop.config import loads_config
    from closedloop.io.outlets import SessionOutlets
    from closedloop.runtime.loop import LoopOptions, run_loop
    from closedloop.sim.patient import Attempt
    from closedloop.view.window import SessionWindow
    from tests.runtime.conftest import sim_session

    config = loads_config(LATE_CONFIG.replace('[detector]\nbaseline = "adaptive"',
                                              '[detector]\nkind = "cusum"'),
                          source="cusum view test")
    assert config.detector_kind == "cusum"
    script = [Attempt("biceps", t, 0.8, 0.9, 0.05) for t in (1.5, 3.5, 5.5)]
    src, stim = sim_session(config, script, chunk=20)
    src.realtime = True
    outlets = SessionOutlets(unique("cusumview"), replace(src.info, channels=config.muscle_names),
                             config_text=config.text)
    loop = threading.Thread(target=lambda: run_loop(
        config, src, stim, outlets=outlets, options=LoopOptions(duration_s=8.0, watchdog_s=2.0)))
    client = SessionClient(outlets.session_name, window_s=10.0)
    win = SessionWindow(client, control=None)
    qtbot.addWidget(win)
    win.show()
    loop.start()
    try:
        def offset_drawn() -> bool:
            s = win.last_snapshot
            return (s is not None and len(win.rows) == 2
                    and any(e.kind == "offset" and e.channel == "biceps" for e in s.events)
                    and win.env.painter.offsets[0].size > 0
                    and np.isfinite(win.curve_data(0)["on"][1]).any()
                    and "EMG level" in win.channel_labels[0].text())

        assert wait_for(offset_drawn, 20.0, qtbot)
        s = win.last_snapshot
        label = win.channel_labels[0].text()
        axis = win.env_plot.getAxis("left").labelText
        title = win.env_plot.titleLabel.text
        data = win.curve_data(0)
        offsets_y = win.env.painter.offsets[1]
        baseline = float(win.env.y(0, np.array([0.0]))[0])
        offset_values = [e.envelope for e in s.events if e.kind == "offset"]
    finally:
        loop.join(30.0)
        win.close()
        outlets.close()
    assert axis == "cusum statistic (nats)" and "on-threshold" in title and "off" not in title
    assert re.search(r"EMG level [\d.]+ µV<br>cusum statistic [\d.]+ nats<br>"
                     r"<small>on above 18 nats</small>", label), label
    assert np.isfinite(s.level_now).all() and 0.5e-6 < s.level_now[0] < 100e-6  # volts
    assert data["off"][0].size == 0  # no off-threshold line
    # offsets on the baseline, not at the offset CUSUM's value (10 nats and more)
    assert min(offset_values) >= 10.0
    assert offsets_y == pytest.approx(np.full(offsets_y.size, baseline))
