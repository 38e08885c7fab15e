"""The live window as an application, and a demo session to show (``closedloop view``).

:func:`run_view` runs the Qt application in the calling (main) thread until the window
is closed, ``duration_s`` has passed, or the screenshot has been written.

``--demo N`` also starts a :class:`~closedloop.runtime.demo.DemoSession`: a real session
(built as ``closedloop run`` builds one, :mod:`closedloop.runtime.session`) with the
simulated patient and stimulator, so the view can be shown, tested and benchmarked
without ``closedloop run`` and shows what a session does.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


# -- the application --------------------------------------------------------------------------
def application():
    """The process's ``QApplication``, created on first use (one per process)."""
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
    stopped: Callable[[], bool] | None = None,
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
    stopped : callable, optional
        Whether a stop signal came while the view was opening (the caller noted it,
        :func:`~closedloop.runtime.signals.stop_on_signals`): the window then closes at
        once, as it does for one that comes while it is shown.

    Returns
    -------
    int
        0; 1 when a screenshot was asked for but no session data could be shown (the
        file is still written, showing what the view saw).
    """
    from PySide6 import QtCore

    from closedloop.view.lsl_client import SessionClient
    from closedloop.view.window import SessionWindow

    app = application()
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
    # let Ctrl-C in the terminal, and SIGTERM/SIGHUP/SIGQUIT (a session closing its view,
    # the terminal closed), close the window. Python runs a handler at the next bytecode of
    # whatever the main thread is doing, say the window copying data under the client's
    # lock: closing there (which closes the client, taking that lock) would hang the view
    # for good, and an exception raised there would only be printed by Qt. So the handler
    # only notes the signal; the timer below, run by the event loop, closes the window.
    asked: list[int] = []
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
            number = getattr(signal, name, None)
            if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
                old[number] = signal.signal(number, lambda signum, _: asked.append(signum))
    if stopped is not None and stopped():  # asked before the handlers above were in place
        asked.append(0)

    def close_when_asked() -> None:
        if asked and win.isVisible():
            win.close()

    keepalive = QtCore.QTimer()  # also lets Python run its signal handlers between events
    keepalive.timeout.connect(close_when_asked)
    keepalive.start(200)
    QtCore.QTimer.singleShot(0, close_when_asked)
    try:
        app.exec()
    finally:
        keepalive.stop()
        for number, handler in old.items():
            signal.signal(number, handler)
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

