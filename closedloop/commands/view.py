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


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop view``; returns the exit code.

    ``args`` attributes: ``session`` (str or None), ``screenshot`` (str or None),
    ``overwrite`` (replace an existing screenshot), ``duration`` (float or None) and,
    optionally, ``demo`` (int: also start a simulated session with that many muscles,
    named ``--session`` or ``demo``).
    """
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


def _view(args: argparse.Namespace, screenshot: str | None) -> int:
    from closedloop.view import yield_to_the_loop

    yield_to_the_loop()  # before any thread: the loop gets the processor first
    session = getattr(args, "session", None)
    demo_n = getattr(args, "demo", None)
    if screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not demo_n and session is None:
        session = _pick_session()  # may ask in the terminal, where Ctrl-C ends the command
    # imported after the platform is chosen: Qt reads QT_QPA_PLATFORM when it starts
    from closedloop.runtime.demo import DemoSession
    from closedloop.runtime.signals import stop_on_signals
    from closedloop.view.app import run_view

    # Until the window takes them, a stop signal (the session that opened this view
    # closing it, Ctrl-C) is only noted, and the window then closes at once: raised as an
    # exception inside Qt's import it aborted the interpreter ("Fatal Python error:
    # libshiboken/signature: could not initialize part 2") into the session's output.
    demo = None
    with stop_on_signals() as stop:
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
