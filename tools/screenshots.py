"""Refresh the pictures in the docs: ``docs/view.png``, the live view of a simulated session.

The test suite never writes into the source tree; it takes its own screenshot into a
temporary folder and checks that the shipped one still shows the same window layout
(``tests/view/test_readme_screenshot.py``). When the view changes, a developer runs this
and commits the new picture.

Usage (from the repository root; PYTHONPATH makes sure this checkout is pictured)::

    PYTHONPATH=. python tools/screenshots.py [--out docs/view.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def take_view_screenshot(path: str | Path, *, overwrite: bool = False,
                         timeout: float = 100.0) -> subprocess.CompletedProcess:
    """Run ``closedloop view --demo 4 --screenshot PATH`` (offscreen when there is no
    display) and return the finished process."""
    env = dict(os.environ)
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    argv = [sys.executable, "-m", "closedloop", "view", "--demo", "4", "--screenshot",
            str(path)]
    return subprocess.run(argv + (["--overwrite"] if overwrite else []), env=env,
                          capture_output=True, text=True, timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/screenshots.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "view.png"),
                   help="where to write the live view's picture (replaced if it exists)")
    args = p.parse_args(argv)
    r = take_view_screenshot(args.out, overwrite=True)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
