"""The patient record through the installed ``closedloop`` command, as the docs show it:
sessions for a patient go into the record, ``closedloop history`` shows them (terminal
and an HTML page checked in headless Chromium), the next session starts from the stored
calibration, and a database that fails (read-only, full, locked) or is shared by
sessions running at once never stops a session."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from closedloop.errors import ConfigError
from closedloop.io.records import Records
from closedloop.io.xdf import load_session
from tests.browser import dump_dom, screenshot
from tests.conftest import CONFIGS, ROOT
from tests.disk import fill, own_filesystem, read_only_file, read_only_folder

CONFIG = str(CONFIGS / "biceps_triceps.toml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed


def closedloop(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """The installed command, output to pipes."""
    exe = shutil.which("closedloop")
    assert exe, "the closedloop command is not installed (pip install -e .)"
    return subprocess.run([exe, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def run_session(db: Path, *extra: str, duration: float = 3.0) -> subprocess.CompletedProcess:
    return closedloop("run", "--config", CONFIG, "--duration", f"{duration:g}", "--no-gui",
                      "--patient", "P01", "--db", str(db), *extra)


def summary_json(r: subprocess.CompletedProcess) -> dict:
    return json.loads(r.stdout.strip().splitlines()[-1])


DOCS = ROOT / "docs" / "first_session.md"


@pytest.mark.timeout(400)
def test_three_sessions_show_in_the_history_and_its_page(tmp_path):
    """The docs' example, command for command (the record in tmp_path)."""
    db = tmp_path / "sessions.db"
    docs = DOCS.read_text(encoding="utf-8")
    for seed in (1, 2, 3):
        assert (f"closedloop run --config configs/biceps_triceps.toml --duration 20 --no-gui "
                f"--patient P01 --db sessions.db --seed {seed}\n") in docs
    assert "closedloop history P01 --db sessions.db --out history.html\n" in docs
    for seed in (1, 2, 3):
        r = run_session(db, "--seed", str(seed), duration=20)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"patient record  : saved as #{seed} for P01 in {db}" in r.stdout
    r = closedloop("history", "P01", "--db", str(db))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Patient P01: 3 sessions, 0 calibrations")
    assert max(len(line) for line in lines) <= 100
    rows = [line for line in lines if re.match(r"^\s+[123]\s+\d{4}-\d\d-\d\d\s+\d\d:\d\d\s", line)]
    assert len(rows) == 3 and all("biceps_triceps" in row for row in rows)
    with Records(db) as rec:
        triggers = [s.triggers for s in rec.sessions("P01")]
    assert re.search(rf"Repetitions \(triggers\)\s+{triggers[0]} -> {triggers[-1]} "
                     rf"\([+-]\d+ over 3 sessions\)", r.stdout)
    # the shipped config's detector (cusum) decides on nats, not on an EMG level: the
    # record says which detector decided and keeps no µV thresholds for it
    assert re.search(r"^\s+1\s+biceps\s+cusum\s+\d+\s+-\s+-\s", r.stdout, re.M), r.stdout
    assert "thresholds are not EMG levels (cusum: nats)" in " ".join(r.stdout.split())
    assert re.search(r"M-wave amplitude \(first trains\), biceps\s+\d+ -> \d+ µV", r.stdout)
    assert re.search(r"Stimulation dose, biceps\s+[\d.]+ -> [\d.]+ % of session limit", r.stdout)

    page = tmp_path / "history.html"
    r = closedloop("history", "P01", "--db", str(db), "--out", str(page))
    assert r.returncode == 0 and page.exists(), r.stderr
    first = page.read_bytes()
    r = closedloop("history", "P01", "--db", str(db), "--out", str(page))
    assert r.returncode == ConfigError.exit_code  # refused as by every command: 2
    assert "already exists; give another name, or --overwrite to replace it" in r.stderr
    assert page.read_bytes() == first  # not overwritten
    assert closedloop("history", "P01", "--db", str(db), "--out", str(page),
                      "--overwrite").returncode == 0

    dom = dump_dom(page, tmp_path / "profile")
    assert len(re.findall(r'<tr class="session">', dom)) == 3
    charts = re.findall(r'<svg class="chart" data-metric="(\w+)"', dom)
    assert {"triggers", "dose", "mwave"} <= set(charts) and "threshold" not in charts  # cusum
    triggers_svg = dom.split('data-metric="triggers"')[1].split("</svg>")[0]
    assert triggers_svg.count('<circle class="point"') == 3
    assert "Patient P01: progress over sessions" in dom

    png = screenshot(page, tmp_path / "history.png", tmp_path / "profile")
    from matplotlib.image import imread

    img = (imread(png)[..., :3] * 255).round().astype(np.uint8)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    flat = img.reshape(-1, 3)
    assert len(np.unique(flat[:: max(1, flat.shape[0] // 20000)], axis=0)) > 20
    blue = np.all(np.abs(flat.astype(int) - (0, 114, 178)) <= 8, axis=1)  # the first series
    assert blue.sum() > 200, "no plotted series visible in the screenshot"


@pytest.mark.timeout(300)
def test_the_history_page_never_replaces_the_patient_record(tmp_path):
    """--out naming the record itself (or a link to it), even with --overwrite: it
    replaced the record, every session of every patient, with the page."""
    db = tmp_path / "sessions.db"
    assert run_session(db, duration=1.0).returncode == 0
    kept = db.read_bytes()
    (tmp_path / "link.html").symlink_to(db)
    for out in (db, tmp_path / "link.html"):
        r = closedloop("history", "P01", "--db", str(db), "--out", str(out), "--overwrite")
        assert r.returncode == ConfigError.exit_code, r.stderr
        assert "is the patient record" in r.stderr and "would destroy" in r.stderr, r.stderr
        assert db.read_bytes() == kept
    with Records(db) as rec:
        assert len(rec.sessions("P01")) == 1


def test_a_run_starts_from_the_stored_calibration_and_records_it(tmp_path):
    db = tmp_path / "c.db"
    patient_config = tmp_path / "p02.toml"
    r = closedloop("calibrate", "--config", CONFIG, "--out", str(patient_config), "--no-gui",
                   "--yes", "--rest-s", "2", "--mvc-reps", "1", "--mvc-s", "2",
                   "--patient", "P02", "--operator", "A. Nurse", "--db", str(db))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "patient record: saved as #1 for P02" in r.stdout
    assert re.search(r'^patient = "P02"$', patient_config.read_text(), re.M)
    with Records(db) as rec:
        (cal,) = rec.calibrations("P02")
    assert cal.operator == "A. Nurse" and all(m.mvc_uv > m.rest_mean_uv > 0 for m in cal.muscles)

    xdf = tmp_path / "s.xdf"
    r = closedloop("run", "--config", CONFIG, "--duration", "6", "--no-gui", "--patient", "P02",
                   "--db", str(db), "--record", str(xdf), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"closedloop run: starting from P02's calibration of \d{4}-\d\d-\d\d "
                     r"\d\d:\d\d \(today; patient record #1\): biceps rest [\d.]+ µV", r.stderr)
    assert "  calibration     : stored, of " in r.stdout
    summary = summary_json(r)
    assert summary["calibration"]["record_id"] == 1 and summary["patient"] == "P02"
    with Records(db) as rec:
        (run,) = rec.sessions("P02", kind="run")
    assert run.calibration_from == 1 and run.recording == str(xdf)
    for m in run.muscles:  # the thresholds came from the stored calibration
        assert m.on_threshold_uv == pytest.approx(cal.muscle(m.muscle).on_threshold_uv)
    meta = load_session(xdf).metadata
    assert meta["patient"] == "P02" and meta["calibration"]["record_id"] == 1
    # the recording replays exactly: the calibration is in the settings it recorded
    r = closedloop("replay", str(xdf), "--check", "--quiet")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["read-only file", "read-only folder", "full disk", "locked"])
def test_a_failing_database_never_stops_a_session(tmp_path, fault):
    folder = tmp_path / "records"
    xdf = tmp_path / "s.xdf"
    with own_filesystem(folder, size_kib=512):
        db = folder / "c.db"
        assert run_session(db, "--no-outlets").returncode == 0  # one session stored
        if fault == "read-only file":
            ctx = read_only_file(db)
        elif fault == "read-only folder":
            ctx = read_only_folder(folder)
        else:
            ctx = _Fault(db, fault, folder)
        with ctx:
            r = run_session(db, "--record", str(xdf), "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        summary = summary_json(r)
        assert summary["all_off"] and summary["reason"] == "duration"
        line = next(x for x in r.stdout.splitlines() if x.startswith("  patient record  :"))
        assert line.startswith(f"  patient record  : NOT saved: patient record {db}")
        assert {"read-only file": "read-only", "read-only folder": "read-only",
                "full disk": "the disk is full", "locked": "is in use"}[fault] in line
        assert "this summary and the recording (if any) hold the session" in line
        assert summary["record"]["id"] is None and summary["record"]["error"] == line.split(
            " : ", 1)[1]
        assert "recording s.xdf: complete" in r.stdout  # the recording holds everything
        assert load_session(xdf).metadata["patient"] == "P01"
        with Records(db) as rec:
            assert len(rec.sessions("P01")) == 1


class _Fault:
    """A full disk or a lock held by another program for the duration of a ``with``."""

    def __init__(self, db: Path, fault: str, folder: Path) -> None:
        self.db, self.fault, self.folder = db, fault, folder

    def __enter__(self):
        if self.fault == "full disk":
            self.filler = fill(self.folder)
        else:
            self.holder = sqlite3.connect(self.db, isolation_level=None)
            self.holder.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc):
        if self.fault == "full disk":
            self.filler.unlink()
        else:
            self.holder.execute("ROLLBACK")
            self.holder.close()


@pytest.mark.timeout(200)
def test_sessions_running_at_once_share_one_record(tmp_path):
    db = tmp_path / "c.db"
    exe = shutil.which("closedloop")
    procs = [subprocess.Popen([exe, "run", "--config", CONFIG, "--duration", "4", "--no-gui",
                               "--no-outlets", "--patient", f"P0{k}", "--db", str(db)],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for k in range(1, 4)]
    outs = [p.communicate(timeout=150) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "patient record  : saved as #" in out
    with Records(db) as rec:
        assert rec.patients() == ["P01", "P02", "P03"]
        assert all(len(rec.sessions(p)) == 1 for p in rec.patients())


def test_a_name_is_refused_before_anything_starts(tmp_path):
    db = tmp_path / "c.db"
    r = closedloop("run", "--config", CONFIG, "--duration", "3", "--no-gui", "--patient",
                   "Ada Lovelace", "--db", str(db))
    assert r.returncode == 2
    assert ("--patient = 'Ada Lovelace' is not allowed: it contains a space, as a person's "
            "name would; expected a pseudonymous id") in r.stdout
    assert "closedloop run: biceps_triceps on" not in r.stderr  # nothing was started
    assert not db.exists()
    r = closedloop("calibrate", "--config", CONFIG, "--out", str(tmp_path / "p.toml"),
                   "--no-gui", "--yes", "--patient", "Ada Lovelace", "--db", str(db))
    assert r.returncode != 0 and "pseudonymous id" in r.stderr  # a config error
    assert not (tmp_path / "p.toml").exists() and not db.exists()
