"""``closedloop view``: the live view of a running session, or of a demo session.

Parse, claim the screenshot file when one is asked for (never over an existing file
without ``--overwrite``), start a :class:`~closedloop.runtime.demo.DemoSession` with
``--demo N`` (without ``--session``: the only running session, or ask which), and run
the window (:func:`closedloop.view.app.run_view`) until it is closed, ``--duration``
has passed or the screenshot is written. Exit code 0; 1 when a screenshot was asked
for and none could be written, or it shows no session data.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from closedloop.errors import ClosedLoopError
from closedloop.io.outfile import claim_output
from closedloop.runtime.outcome import StoppedWhileOpeningError, StopRequest
from closedloop.runtime.signals import stop_on_signals, stoppable_input


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop view``; returns the exit code.

    ``args`` attributes: ``session`` (str or None), ``screenshot`` (str or None),
    ``overwrite`` (replace an existing screenshot), ``duration`` (float or None) and,
    optionally, ``demo`` (int: also start a simulated session with that many muscles,
    named ``--session`` or ``demo``).
    """
    # From the start, a stop signal (the session that opened this view closing it, Ctrl-C,
    # a closed terminal) is only noted, and the view then ends at once, quietly: raised as
    # an exception while the view was still opening (importing Qt takes seconds on a busy
    # machine) it ended the view with "terminated", or aborted the interpreter inside
    # Qt's import ("Fatal Python error: libshiboken/signature: could not initialize part
    # 2") with a traceback into the session's output. The window, once shown, closes on one.
    with stop_on_signals() as stop:
        screenshot = getattr(args, "screenshot", None)
        claim = contextlib.nullcontext() if not screenshot else claim_output(
            screenshot, overwrite=bool(getattr(args, "overwrite", False)), what="screenshot")
        with claim:
            code = _view(args, screenshot, stop)
            if screenshot and not (Path(screenshot).is_file()
                                   and Path(screenshot).stat().st_size):
                return 1  # nothing written (the claim removes the empty file)
            return code


def _pick_session(stop: StopRequest) -> str | None:
    """``view`` without ``--session``: the only running session; with several, the one
    chosen in the terminal (without a terminal: refused, with the list); with none,
    None (the window waits for one), as after a stop signal at the question. See
    :mod:`closedloop.view.sessions`."""
    from closedloop.view.sessions import choose_session, running_sessions

    sessions = running_sessions()
    try:
        chosen = choose_session(sessions, interactive=sys.stdin.isatty(),
                                ask=stoppable_input(stop))
    except StoppedWhileOpeningError:
        return None  # a stop signal at the question: the view ends (``_view`` sees it)
    if chosen is None:
        print("closedloop view: no session is running yet; waiting for one", file=sys.stderr)
        return None
    print(f"closedloop view: showing {chosen.describe()}", file=sys.stderr)
    return chosen.name


def _view(args: argparse.Namespace, screenshot: str | None, stop: StopRequest) -> int:
    from closedloop.view import yield_to_the_loop

    yield_to_the_loop()  # before any thread: the loop gets the processor first
    session = getattr(args, "session", None)
    demo_n = getattr(args, "demo", None)
    if screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not demo_n and session is None:
        session = _pick_session(stop)
    # imported after the platform is chosen: Qt reads QT_QPA_PLATFORM when it starts
    from closedloop.runtime.demo import DemoSession
    from closedloop.view.app import run_view

    demo = None
    if stop.is_set():
        return 0
    try:
        if demo_n:
            session = session or "demo"
            demo = DemoSession(session, n_channels=int(demo_n)).start()
        code = run_view(
            session,
            on_stop=demo.stop_stimulation if demo is not None else None,
            duration_s=getattr(args, "duration", None),
            screenshot=screenshot,
            stopped=stop.is_set,
        )
    finally:
        if demo is not None:
            demo.close()
    if demo is not None and demo.error is not None:
        raise ClosedLoopError(f"the demo session failed: {demo.error!r}")
    return code
