"""``closedloop view``: the live window as an application, and a demo session to show.

:func:`run_view` runs the Qt application in the calling (main) thread until the window
is closed, ``duration_s`` has passed, or the screenshot has been written.

:class:`DemoSession` is a simulated session that publishes through the real
:class:`~closedloop.io.outlets.SessionOutlets` (EMG, envelope, thresholds, detector
events, stimulation commands and trial markers), so the view can be shown, tested and
benchmarked without ``closedloop run``. Its cue/hit/stimulation logic is a small
stand-in written for display, not the protocol of :mod:`closedloop.stim.protocol`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from closedloop.core.events import ONSET
from closedloop.core.pipeline import Pipeline
from closedloop.core.stream import SourceInfo
from closedloop.errors import ClosedLoopError, InputError
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient
from closedloop.stim.commands import StimCommand

DEMO_MUSCLES = (
    "biceps", "triceps", "wrist_ext", "wrist_flex", "deltoid_ant", "deltoid_post",
    "tibialis_ant", "gastrocnemius",
)


def demo_config_text(muscles: tuple[str, ...], fs: float, cue_every_s: float,
                     window_s: float, n_trials: int) -> str:
    """A cued-trials config for the demo's muscles (stimulating the first one)."""
    lines = [
        'name = "demo"',
        'description = "closedloop view demo (simulated session)"',
        "[session]",
        f"fs = {fs!r}",
        "[protocol]",
        'kind = "cued_trials"',
        f'agonist = "{muscles[0]}"',
        "[protocol.trials]",
        f"n_trials = {n_trials}",
        "first_cue_s = 2.0",
        f"work_s = {cue_every_s - 2.0!r}",
        "rest_s = 2.0",
        f"response_window_s = {window_s!r}",
    ]
    for k, m in enumerate(muscles):
        lines += ["[[muscles]]", f'name = "{m}"', f'placement = "demo electrodes on {m}"']
        if k == 0:
            lines += [
                "[muscles.stim]", "channel = 1", "current_ma = 20.0", "on_time_s = 2.0",
                "ramp_up_s = 0.2", "ramp_down_s = 0.2",
                "[muscles.limits]", "max_current_ma = 30.0", "max_step_ma = 5.0",
            ]
    return "\n".join(lines) + "\n"


class DemoSession:
    """A simulated session on LSL (see the module docstring).

    Parameters
    ----------
    session_name : str
    n_channels : int
        1..8 muscles (names from :data:`DEMO_MUSCLES`).
    fs : float
    chunk : int
        Samples per chunk.
    realtime : bool
        Pace chunks against the wall clock (samples due since the start, no drift).
    cue_every_s, response_window_s, n_trials : float, float, int
        Trial timing: a cue for the first muscle every ``cue_every_s``; the simulated
        patient answers most cues within the window (some are missed on purpose).
    seed : int
    """

    def __init__(
        self,
        session_name: str,
        *,
        n_channels: int = 2,
        fs: float = 2000.0,
        chunk: int = 20,
        realtime: bool = True,
        cue_every_s: float = 9.0,
        response_window_s: float = 3.0,
        n_trials: int = 60,
        seed: int = 0,
    ) -> None:
        if not 1 <= n_channels <= len(DEMO_MUSCLES):
            raise InputError(f"n_channels = {n_channels}: the demo has 1..{len(DEMO_MUSCLES)}")
        self.session_name = session_name
        self.muscles = DEMO_MUSCLES[:n_channels]
        self.fs = float(fs)
        self.chunk = int(chunk)
        self.realtime = realtime
        self.cue_every_s = float(cue_every_s)
        self.window_s = float(response_window_s)
        self.n_trials = int(n_trials)
        self.seed = int(seed)
        self.config_text = demo_config_text(
            self.muscles, self.fs, self.cue_every_s, self.window_s, self.n_trials
        )
        self.outlets = None
        self.samples = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stim_stopped = threading.Event()
        self.control = None
        self.stops_received = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> DemoSession:
        """Create the outlets and start streaming in a background thread."""
        from closedloop.io.outlets import SessionOutlets

        info = SourceInfo("closedloop demo", self.fs, self.muscles, "V", "sim")
        self.outlets = SessionOutlets(
            self.session_name, info, config_text=self.config_text,
            metadata={"demo": True},
        )
        from closedloop.runtime.control import ControlInlet

        self.control = ControlInlet(self.session_name)
        self._thread = threading.Thread(target=self._run, name="closedloop-demo", daemon=True)
        self._thread.start()
        return self

    def stop_stimulation(self) -> None:
        """What a loop does on STOP: every channel off (the demo then stimulates no more)."""
        self.stim_stopped.set()

    def close(self) -> None:
        """Stop streaming (waits up to 3 s) and close the outlets. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=3.0)
        if self.control is not None:
            self.control.close()
        if self.outlets is not None:
            self.outlets.close()

    def __enter__(self) -> DemoSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the simulated session -----------------------------------------------------------------
    def _script(self, rng: np.random.Generator) -> tuple[list[Attempt], list[float]]:
        cues = [2.0 + k * self.cue_every_s for k in range(self.n_trials)]
        script = []
        for c in cues:
            if rng.random() < 0.8:  # answers the cue
                script.append(Attempt(self.muscles[0], c + rng.uniform(0.4, 1.2),
                                      rng.uniform(1.5, 2.5), rng.uniform(0.6, 1.0), 0.05))
            for m in self.muscles[1:]:  # other muscles move now and then
                if rng.random() < 0.5:
                    script.append(Attempt(m, c + rng.uniform(1.0, 3.0), rng.uniform(0.8, 1.5),
                                          rng.uniform(0.5, 1.0), 0.05))
        return script, cues

    def _run(self) -> None:
        try:
            self._stream()
        except BaseException as exc:  # noqa: BLE001 - kept for the caller to see
            self.error = exc

    def _stream(self) -> None:
        import pylsl

        rng = np.random.default_rng(self.seed)
        script, cues = self._script(rng)
        ps = PatientSettings(fs=self.fs, muscles=self.muscles, snr_db=12.0)
        patient = SimulatedPatient(ps, script, seed=self.seed)
        pipe = Pipeline(self.fs, self.muscles)
        out = self.outlets
        t0 = float(pylsl.local_clock())
        wall0 = time.perf_counter()
        agonist = self.muscles[0]
        next_cue = 0
        window_end: float | None = None
        trial = -1
        plan: list[tuple[int, float, str]] = []  # (sample, current, phase), sorted
        stim_busy_until = -1
        i = 0
        while not self._stop.is_set() and next_cue <= len(cues):
            if self.realtime:
                wait = wall0 + (i + self.chunk) / self.fs - time.perf_counter()
                if wait > 0 and self._stop.wait(wait):
                    break
            # what the loop does once per chunk: poll the control streams (never blocks)
            for cmd in self.control.poll():
                if cmd.command == "stop":
                    self.stops_received += 1
                    if not self.stim_stopped.is_set():
                        out.push_marker("stop", t0 + i / self.fs, sample=i,
                                        **dataclasses.asdict(cmd.sender))
                    self.stop_stimulation()
            x = patient.read(self.chunk)
            idx = np.arange(i, i + self.chunk)
            ts = t0 + idx / self.fs
            out.push_emg(x, ts, start=i)
            block = pipe.process(x, ts)
            out.push_block(block)
            t_rel_end = (i + self.chunk) / self.fs
            # cues and missed windows
            if next_cue < len(cues) and cues[next_cue] < t_rel_end:
                trial = next_cue
                k = int(round(cues[next_cue] * self.fs))
                out.push_marker("cue", t0 + k / self.fs, sample=k, trial=trial, muscle=agonist)
                window_end = cues[next_cue] + self.window_s
                next_cue += 1
            if window_end is not None and window_end < t_rel_end:
                k = int(round(window_end * self.fs))
                out.push_marker("miss", t0 + k / self.fs, sample=k, trial=trial, muscle=agonist)
                window_end = None
            for ev in block.events:
                if ev.channel == agonist and ev.kind == ONSET and window_end is not None:
                    out.push_marker("hit", ev.time, sample=ev.sample, trial=trial, muscle=agonist)
                    window_end = None
                    if ev.sample > stim_busy_until and not self.stim_stopped.is_set():
                        d = int(0.05 * self.fs)
                        for s in range(4):
                            plan.append((ev.sample + s * d, 5.0 * (s + 1), "ramp_up"))
                        end = ev.sample + 3 * d + int(2.0 * self.fs)
                        plan.append((end, 0.0, "off"))
                        stim_busy_until = end
            due = [p for p in plan if p[0] < i + self.chunk]
            plan = [p for p in plan if p[0] >= i + self.chunk]
            if self.stim_stopped.is_set() and (due or plan or stim_busy_until >= i):
                due, plan, stim_busy_until = [(i, 0.0, "stop")], [], -1
            cmds = [
                StimCommand(agonist, 1, cur, 250.0, 35.0, s, t0 + s / self.fs,
                            "plateau" if cur == 20.0 else phase)
                for s, cur, phase in due
            ]
            if cmds:
                out.push_commands(cmds)
            out.push_tally(i + self.chunk, float(ts[-1]))  # totals, for a view opened late
            i += self.chunk
            self.samples = i
            if next_cue == len(cues) and window_end is None:
                out.push_marker("done", t0 + i / self.fs, sample=i)
                break


# -- the application --------------------------------------------------------------------------
def _app():
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(sys.argv[:1])
    return app


def run_view(
    session_name: str | None,
    *,
    on_stop: Callable[[], object] | None = None,
    duration_s: float | None = None,
    screenshot: str | None = None,
    screenshot_after_s: float = 4.0,
    window_s: float = 10.0,
    size: tuple[int, int] | None = None,
) -> int:
    """Show the live view of a session until the window closes; returns an exit code.

    Parameters
    ----------
    session_name : str or None
        Session to show (None: the only closedloop session on the network).
    on_stop : callable, optional
        Called in the GUI thread when STOP is pressed (in-process stop for
        ``closedloop run``), before ``stop`` is published on the LSL control stream.
    duration_s : float, optional
        Close after this many seconds.
    screenshot : str, optional
        Write the window to this PNG once ``screenshot_after_s`` has passed and the
        session's data are shown (waiting at most 20 s more), then close.
    window_s : float
        Seconds of signal shown.
    size : (int, int), optional
        Window size in pixels.

    Returns
    -------
    int
        0; 1 when a screenshot was asked for but no session data could be shown (the
        file is still written, showing what the view saw).
    """
    from PySide6 import QtCore

    from closedloop.view.lsl_client import SessionClient
    from closedloop.view.window import SessionWindow

    app = _app()
    client = SessionClient(session_name, window_s=window_s)
    win = SessionWindow(client, on_stop=on_stop)
    if size is not None:
        win.resize(*size)
    win.show()
    result = {"code": 0}
    t_start = time.monotonic()

    def try_screenshot() -> None:
        snap = win.last_snapshot
        waited = time.monotonic() - t_start
        have = snap is not None and snap.samples > 0 and math.isfinite(snap.now)
        full = have and snap.emg_t.size and snap.emg_t[-1] - snap.emg_t[0] >= 0.9 * window_s
        if not full and waited < screenshot_after_s + 20.0:
            QtCore.QTimer.singleShot(250, try_screenshot)
            return
        path = win.save_png(screenshot)
        print(f"closedloop view: screenshot written to {path}")
        if not have:
            print("closedloop view: no session data were shown", file=sys.stderr)
            result["code"] = 1
        win.close()

    if screenshot:
        QtCore.QTimer.singleShot(int(screenshot_after_s * 1000), try_screenshot)
    if duration_s is not None:
        QtCore.QTimer.singleShot(int(duration_s * 1000), win.close)
    # let Ctrl-C in the terminal close the window (Python handles signals between events)
    old = signal.signal(signal.SIGINT, lambda *_: win.close()) \
        if threading.current_thread() is threading.main_thread() else None
    keepalive = QtCore.QTimer()
    keepalive.start(200)
    keepalive.timeout.connect(lambda: None)
    try:
        app.exec()
    finally:
        keepalive.stop()
        if old is not None:
            signal.signal(signal.SIGINT, old)
        win.timer.stop()
        client.close()
        _dispose(app, win)
    return result["code"]


def _dispose(app, win) -> None:
    """Delete the window's Qt objects now, while Python is fully alive.

    Left to the interpreter's final garbage collection, PySide6 6.12 with pyqtgraph
    0.14 can abort at exit ("bool_dealloc: deallocating True or False").
    """
    import gc

    from PySide6 import QtCore

    win.deleteLater()
    app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete.value)
    app.processEvents()
    del win
    gc.collect()


def main(args) -> int:
    """``closedloop view [--session NAME] [--screenshot F.png [--overwrite]] [--duration S]
    [--demo N]``.

    ``args`` attributes: ``session`` (str or None), ``screenshot`` (str or None),
    ``overwrite`` (replace an existing screenshot), ``duration`` (float or None) and,
    optionally, ``demo`` (int: also start a simulated session with that many muscles,
    named ``--session`` or ``demo``).
    """
    import contextlib

    from closedloop.io.outfile import claim_output

    screenshot = getattr(args, "screenshot", None)
    claim = contextlib.nullcontext() if not screenshot else claim_output(
        screenshot, overwrite=bool(getattr(args, "overwrite", False)), what="screenshot")
    with claim:
        code = _view(args, screenshot)
        if screenshot and not (Path(screenshot).is_file() and Path(screenshot).stat().st_size):
            return 1  # nothing written (the claim removes the empty file)
        return code


def _pick_session() -> str | None:
    """``view`` without ``--session``: the only running session; with several, the one
    chosen in the terminal (without a terminal: refused, with the list); with none,
    None (the window waits for one). See :mod:`closedloop.view.sessions`."""
    from closedloop.view.sessions import choose_session, running_sessions

    sessions = running_sessions()
    chosen = choose_session(sessions, interactive=sys.stdin.isatty())
    if chosen is None:
        print("closedloop view: no session is running yet; waiting for one", file=sys.stderr)
        return None
    print(f"closedloop view: showing {chosen.describe()}", file=sys.stderr)
    return chosen.name


def _view(args, screenshot: str | None) -> int:
    from closedloop.view import yield_to_the_loop

    yield_to_the_loop()  # before any thread: the loop gets the processor first
    session = getattr(args, "session", None)
    demo_n = getattr(args, "demo", None)
    if screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    demo = None
    if demo_n:
        session = session or "demo"
        demo = DemoSession(session, n_channels=int(demo_n)).start()
    elif session is None:
        session = _pick_session()
    try:
        code = run_view(
            session,
            on_stop=demo.stop_stimulation if demo is not None else None,
            duration_s=getattr(args, "duration", None),
            screenshot=screenshot,
        )
    finally:
        if demo is not None:
            demo.close()
    if demo is not None and demo.error is not None:
        raise ClosedLoopError(f"the demo session failed: {demo.error!r}")
    return code
