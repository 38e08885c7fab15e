"""Refresh the pictures in the docs: ``docs/view.png``, the live view of a simulated
session, and ``docs/calibration.png``, the calibration dialog after a calibration of the
simulated patient.

The test suite never writes into the source tree; it takes its own screenshots into a
temporary folder and checks that the shipped ones still show the same window layout
(``tests/view/test_readme_screenshot.py``). When the view or the dialog changes, a
developer runs this and commits the new pictures.

Usage (from the repository root; PYTHONPATH makes sure this checkout is pictured)::

    PYTHONPATH=. python tools/screenshots.py [--out docs/view.png]
        [--calibration-out docs/calibration.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The calibration dialog, run on the simulated patient (as fast as it computes) with a
#: short schedule, grabbed when it shows its results. argv: config, picture, folder.
CALIBRATION_CODE = """
import sys
from pathlib import Path
from closedloop.analysis.calibrate import Schedule
from closedloop.config import load_config
from closedloop.view.app import application
from closedloop.view.calibration import CalibrationDialog

config, shot, folder = load_config(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
app = application()
dlg = CalibrationDialog(config, "sim", folder / "patient.toml",
                        schedule=Schedule(rest_s=3.0, mvc_reps=3, mvc_s=2.0, prepare_s=0.5,
                                          relax_s=1.5),
                        yes=True, realtime=False)
dlg.show()
dlg.start()
if not dlg.wait(90.0) or dlg.written is None:
    print(f"the calibration did not finish: {dlg.error}", file=sys.stderr)
    sys.exit(1)
app.processEvents()
if not dlg.grab().save(str(shot), "PNG"):
    sys.exit(f"could not write {shot}")
print(f"calibration dialog: screenshot written to {shot}")
dlg.close()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def take_view_screenshot(path: str | Path, *, overwrite: bool = False,
                         timeout: float = 100.0) -> subprocess.CompletedProcess:
    """Run ``closedloop view --demo 4 --screenshot PATH`` (offscreen when there is no
    display) and return the finished process."""
    argv = [sys.executable, "-m", "closedloop", "view", "--demo", "4", "--screenshot",
            str(path)]
    return subprocess.run(argv + (["--overwrite"] if overwrite else []), env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def take_calibration_screenshot(path: str | Path, *, timeout: float = 120.0
                                ) -> subprocess.CompletedProcess:
    """Calibrate the simulated patient with ``configs/biceps_triceps.toml`` in the
    calibration dialog and grab the dialog showing the results into ``path`` (its
    patient config goes to a temporary folder); return the finished process."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="closedloop-calibration-shot-") as folder:
        argv = [sys.executable, "-c", CALIBRATION_CODE,
                str(ROOT / "configs" / "biceps_triceps.toml"), str(path), folder]
        return subprocess.run(argv, env=_env(), capture_output=True, text=True,
                              timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/screenshots.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "view.png"),
                   help="where to write the live view's picture (replaced if it exists)")
    p.add_argument("--calibration-out", default=str(ROOT / "docs" / "calibration.png"),
                   help="where to write the calibration dialog's picture (replaced)")
    args = p.parse_args(argv)
    code = 0
    for r in (take_view_screenshot(args.out, overwrite=True),
              take_calibration_screenshot(args.calibration_out)):
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        code = code or r.returncode
    return code


if __name__ == "__main__":
    sys.exit(main())
