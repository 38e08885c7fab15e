"""Refresh ``docs/history.png``: a simulated patient's history page as Chromium shows it.

``PYTHONPATH=. python tools/history_page.py [--duration 20] [--out docs/history.png]``
runs, through the installed ``closedloop`` command and into a fresh patient record: one
session of P01 on the adaptive baseline, a calibration, then three sessions that start
from the stored calibration (each with its own simulated patient seed); then
``closedloop history P01 --out history.html`` and a headless-Chromium screenshot of the
page. The test suite checks the same page the same way
(``tests/e2e/test_patient_record_cli.py``); this script only renews the picture the docs
show. Takes about ``5 x duration`` seconds plus start-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import screenshot  # noqa: E402 - after the path is set


def closedloop(*args: str) -> None:
    exe = shutil.which("closedloop") or sys.exit("the closedloop command is not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print("$ closedloop " + " ".join(args), flush=True)
    r = subprocess.run([exe, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"closedloop {args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per session")
    p.add_argument("--out", default=str(ROOT / "docs" / "history.png"))
    a = p.parse_args()
    config = "configs/biceps_triceps.toml"
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "sessions.db")
        run = ("run", "--config", config, "--duration", f"{a.duration:g}", "--no-gui",
               "--no-outlets", "--quiet", "--patient", "P01", "--db", db)
        closedloop(*run, "--seed", "1", "--operator", "A. Nurse")
        closedloop("calibrate", "--config", config, "--out", str(Path(tmp) / "p01.toml"),
                   "--no-gui", "--yes", "--patient", "P01", "--db", db)
        for seed in (2, 3, 4):
            closedloop(*run, "--seed", str(seed), "--operator", "A. Nurse")
        page = Path(tmp) / "history.html"
        closedloop("history", "P01", "--db", db, "--out", str(page))
        png = screenshot(page, Path(tmp) / "history.png", Path(tmp) / "profile",
                         size=(1100, 1700))
        shutil.copyfile(png, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
