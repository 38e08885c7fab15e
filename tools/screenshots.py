"""Refresh the pictures in the docs: ``docs/view.png``, the live view of a simulated
session, ``docs/calibration.png``, the calibration dialog after a calibration of the
simulated patient, and ``docs/report.png``, the report of a recorded simulated session
as Chromium shows it.

The test suite never writes into the source tree; it takes its own screenshots with
these functions into a temporary folder and checks them, and that the shipped ones still
show the same layout (``tests/view/test_readme_screenshot.py``,
``tests/e2e/test_report_page.py``). When the view, the dialog or the report changes, a
developer runs this and commits the new pictures.

Usage (from the repository root; PYTHONPATH makes sure this checkout is pictured)::

    PYTHONPATH=. python tools/screenshots.py [--out docs/view.png]
        [--calibration-out docs/calibration.png] [--report-out docs/report.png]
        [--only view|calibration|report]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The report's picture: the simulated patient P01, calibrated, then a recorded session.
REPORT_CONFIG = ROOT / "configs" / "biceps_triceps.toml"
REPORT_SECONDS = 30.0
REPORT_SEED = 1
#: Chromium's window for the report's picture (CSS pixels): the first A4 page and more.
REPORT_WINDOW = (1000, 2000)

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


def _closedloop(folder: Path, *args: str, timeout: float) -> None:
    """The installed ``closedloop`` command in ``folder`` (this checkout on PYTHONPATH),
    output to pipes; a failure raises with its output."""
    exe = shutil.which("closedloop")
    if exe is None:
        raise RuntimeError("the closedloop command is not installed (pip install -e .)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    r = subprocess.run([exe, *args], cwd=folder, env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"closedloop {' '.join(args)} exited {r.returncode}:\n"
                           f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}")


def make_report(folder: str | Path, *, seconds: float = REPORT_SECONDS,
                seed: int = REPORT_SEED, timeout: float = 300.0,
                config: str | Path = REPORT_CONFIG) -> Path:
    """A report as a clinician makes one, through the installed command in ``folder``:
    ``calibrate`` the simulated patient P01 (into ``p01.toml`` and the patient record
    ``sessions.db``), ``run`` a recorded session from that calibration
    (``session.xdf``), then ``report`` it; returns ``session.html``."""
    folder = Path(folder)
    who = ("--patient", "P01", "--operator", "A. Nurse", "--db", "sessions.db")
    _closedloop(folder, "calibrate", "--config", str(config), "--out", "p01.toml",
                "--no-gui", "--yes", "--rest-s", "3", "--mvc-reps", "2", "--mvc-s", "2",
                *who, timeout=timeout)
    _closedloop(folder, "run", "--config", "p01.toml", "--duration", f"{seconds:g}",
                "--no-gui", "--quiet", "--seed", str(seed), "--record", "session.xdf", *who,
                timeout=timeout + seconds)
    _closedloop(folder, "report", "session.xdf", timeout=timeout)
    return folder / "session.html"


def take_report_screenshot(page: str | Path, png: str | Path, profile: str | Path,
                           timeout: float = 60.0) -> Path:
    """The report ``page`` as headless Chromium shows it, in a window of
    :data:`REPORT_WINDOW`."""
    sys.path.insert(0, str(ROOT))
    from tests.browser import screenshot

    return screenshot(Path(page), Path(png), Path(profile), size=REPORT_WINDOW,
                      timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/screenshots.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "view.png"),
                   help="where to write the live view's picture (replaced if it exists)")
    p.add_argument("--calibration-out", default=str(ROOT / "docs" / "calibration.png"),
                   help="where to write the calibration dialog's picture (replaced)")
    p.add_argument("--report-out", default=str(ROOT / "docs" / "report.png"),
                   help="where to write the report's picture (replaced if it exists)")
    p.add_argument("--only", choices=("view", "calibration", "report"),
                   help="refresh only this picture")
    args = p.parse_args(argv)
    code = 0
    shots = []
    if args.only in (None, "view"):
        shots.append(take_view_screenshot(args.out, overwrite=True))
    if args.only in (None, "calibration"):
        shots.append(take_calibration_screenshot(args.calibration_out))
    for r in shots:
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        code = code or r.returncode
    if args.only in (None, "report"):
        with tempfile.TemporaryDirectory(prefix="closedloop-report-") as tmp:
            page = make_report(tmp)
            png = take_report_screenshot(page, Path(tmp) / "report.png", Path(tmp) / "profile")
            shutil.copyfile(png, args.report_out)
        print(f"wrote {args.report_out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
