"""Frames per second of the live view drawing a simulated session, offscreen.

Starts a :class:`~closedloop.runtime.demo.DemoSession` in its own process
(``--channels`` muscles at ``--fs``, streamed in real time through the real session
outlets), opens the live window against
it with the offscreen Qt platform, and counts, over ``--seconds``:

* **frames**: paint events of the plot area (what a screen would show), and
* **ticks**: timer refreshes (snapshot + setData of every curve),

then prints both rates, the mean time of one refresh and the CPU the view's process
used (its LSL thread included). The window's timer asks for a frame every 15 ms (66 per
second at most), as ``closedloop view`` does.

Usage::

    python tools/bench_view.py [--channels 8] [--fs 2000] [--seconds 10]
        [--refresh-ms 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DEMO_CODE = """
import sys
from closedloop.runtime.demo import DemoSession
name, n, fs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with DemoSession(name, n_channels=n, fs=fs, n_trials=1000):
    sys.stdin.read()  # until the benchmark closes our stdin
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--fs", type=float, default=2000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before counting")
    p.add_argument("--refresh-ms", type=int, default=15)
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args(argv)

    from PySide6 import QtCore, QtWidgets

    from closedloop.view.lsl_client import SessionClient
    from closedloop.view.window import SessionWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    name = f"bench-{uuid.uuid4().hex[:8]}"
    # the simulated session runs in its own process, as a real session would
    demo = subprocess.Popen(
        [sys.executable, "-c", DEMO_CODE, name, str(args.channels), str(args.fs)],
        stdin=subprocess.PIPE,
    )
    client = SessionClient(name)
    win = SessionWindow(client, refresh_ms=args.refresh_ms)
    win.resize(1600, 1000)
    win.show()
    if not client.wait_connected(10.0):
        print("bench_view: the demo session was not found on LSL", file=sys.stderr)
        demo.kill()
        return 1

    class Counter(QtCore.QObject):
        def __init__(self) -> None:
            super().__init__()
            self.paints = 0
            self.paint_s = 0.0
            self._t = 0.0

        def eventFilter(self, obj, ev):  # noqa: N802 - Qt API
            if ev.type() == QtCore.QEvent.Type.Paint:
                self.paints += 1
            return False

    counter = Counter()
    win.plots.viewport().installEventFilter(counter)
    tick_s = []
    orig_tick = win.tick

    def timed_tick() -> None:
        t = time.perf_counter()
        orig_tick()
        tick_s.append(time.perf_counter() - t)

    win.timer.timeout.disconnect()
    win.timer.timeout.connect(timed_tick)

    def run_for(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.001)

    run_for(args.warmup)
    counter.paints, tick_s[:] = 0, []
    t0 = time.perf_counter()
    paint_t0 = time.process_time()
    run_for(args.seconds)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - paint_t0
    snap = win.last_snapshot
    result = {
        "channels": args.channels,
        "fs": args.fs,
        "seconds": round(dt, 2),
        "frames_per_s": round(counter.paints / dt, 1),
        "ticks_per_s": round(len(tick_s) / dt, 1),
        "tick_ms_mean": round(1000 * sum(tick_s) / max(1, len(tick_s)), 2),
        "cpu_percent": round(100 * cpu / dt, 1),
        "samples_received": int(snap.samples) if snap is not None else 0,
        "peak_bins_shown": int(snap.emg_t.shape[0]) if snap is not None else 0,
        "view_errors": len(client.errors),
    }
    win.close()
    demo.stdin.close()
    demo.wait(timeout=10)
    print(
        f"{args.channels} channels at {args.fs:g} Hz: {result['frames_per_s']} frames/s "
        f"({result['ticks_per_s']} refreshes/s, {result['tick_ms_mean']} ms per refresh, "
        f"{result['cpu_percent']}% CPU of the view process)"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
