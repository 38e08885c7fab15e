"""The patient record (closedloop.io.records) on real SQLite files: what it stores and
reads back, the file's permissions, migrations from an older file, and every way the
disk or another program can make it fail (each a RecordError that says what to do).
Processes that write at once and a writer killed with SIGKILL leave every committed
session whole."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from closedloop.errors import ConfigError, RecordError
from closedloop.io.records import (
    ENV_VAR,
    SCHEMA_VERSION,
    SESSION_COLUMNS,
    MuscleRecord,
    Records,
    SessionRecord,
    default_path,
    resolve_path,
    user_data_path,
)
from tests.conftest import ROOT
from tests.disk import fill, own_filesystem, read_only_file, read_only_folder
from tests.io.record_writer import record

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(started: str, n: int = 1, **kw) -> SessionRecord:
    base = SessionRecord(
        kind="run", patient="P01", started=started, duration_s=600.0, program="biceps_triceps",
        config_path="/clinic/p01.toml", operator="A. Nurse", exit_reason="duration",
        exit_code=0, message="duration reached", triggers=10 * n, hits=10 * n, misses=0,
        gated=1, dose_limit_s=1800.0, recording="/clinic/s1.xdf", emg_units="V",
        signal_settings='{"filters": {}}', closedloop_version="0.1.0",
        muscles=(MuscleRecord("biceps", onsets=10 * n, stim_s=30.0 * n, on_threshold_uv=7.5,
                              off_threshold_uv=5.0, mwave_current_ma=20.0,
                              mwave_first_uv=1850.0, mwave_last_uv=1480.0, mwave_drop_pct=20.0,
                              mwave_no_response=0),
                 MuscleRecord("triceps", onsets=0, stim_s=0.0)))
    return replace(base, **kw)


def integrity(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


# -- what it stores ------------------------------------------------------------------------
def test_a_session_reads_back_as_written_in_time_order(tmp_path):
    db = tmp_path / "c.db"
    later = run("2026-03-09T09:00:00+01:00", 2)
    earlier = run("2026-03-02T10:30:00+02:00", 1)  # another offset, still earlier
    cal = SessionRecord(kind="calibrate", patient="P01", started="2026-03-01T09:00:00+01:00",
                        exit_code=0, emg_units="V",
                        muscles=(MuscleRecord("biceps", rest_mean_uv=3.0, rest_sd_uv=0.5,
                                              mvc_uv=60.0),))
    with Records(db) as r:
        ids = [r.add(x) for x in (later, earlier, cal)]
        r.add(run("2026-03-03T10:00:00+01:00", patient="P02"))
        got = r.sessions("P01")
        assert [s.id for s in got] == [ids[2], ids[1], ids[0]]
        assert got[1] == replace(earlier, id=ids[1])  # every field, the muscles too
        assert [s.id for s in r.sessions("P01", kind="run")] == [ids[1], ids[0]]
        assert [s.id for s in r.calibrations("P01")] == [ids[2]]
        assert r.patients() == ["P01", "P02"]
        assert r.get(ids[0]).muscle("biceps").stim_s == 60.0


def test_the_schema_has_a_column_for_every_field(tmp_path):
    with Records(tmp_path / "c.db") as r:
        cols = {row[1] for row in r.connection.execute("PRAGMA table_info(sessions)")}
        mcols = {row[1] for row in r.connection.execute("PRAGMA table_info(muscles)")}
        version = r.connection.execute("PRAGMA user_version").fetchone()[0]
        mode = r.connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert set(SESSION_COLUMNS) | {"id"} == cols
    assert {"session_id", "muscle", "on_threshold_uv", "mvc_uv"} <= mcols
    assert version == SCHEMA_VERSION and mode == "wal"


def test_non_finite_values_are_stored_as_unknown(tmp_path):
    with Records(tmp_path / "c.db") as r:
        sid = r.add(run("2026-03-02T10:00:00+01:00", duration_s=float("nan"),
                        muscles=(MuscleRecord("biceps", on_threshold_uv=float("inf")),)))
        got = r.get(sid)
    assert got.duration_s is None and got.muscle("biceps").on_threshold_uv is None


def test_a_session_is_stored_whole_or_not_at_all(tmp_path):
    """The session row and its muscles are one transaction: a muscle that cannot be
    stored (the same muscle twice) leaves nothing of the session behind."""
    bad = run("2026-03-09T10:00:00+01:00", muscles=(MuscleRecord("biceps"),
                                                    MuscleRecord("biceps")))
    with Records(tmp_path / "c.db") as r:
        with pytest.raises(RecordError, match="failed"):
            r.add(bad)
        assert r.sessions("P01") == []
        assert r.connection.execute("SELECT COUNT(*) FROM muscles").fetchone()[0] == 0
        r.add(run("2026-03-09T10:00:00+01:00"))  # the connection is usable afterwards
        assert len(r.sessions("P01")) == 1


@pytest.mark.parametrize("patient", ["John Smith", "Müller", "", "P" * 33, "../etc"])
def test_only_pseudonymous_ids_are_stored(tmp_path, patient):
    with Records(tmp_path / "c.db") as r:
        with pytest.raises(ConfigError, match="pseudonymous id"):
            r.add(run("2026-03-02T10:00:00+01:00", patient=patient))
        assert r.patients() == []


def test_default_location_and_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_path() == tmp_path / "xdg" / "closedloop" / "closedloop.db"
    assert default_path() == user_data_path()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env.db"))
    assert default_path() == resolve_path(None) == tmp_path / "env.db"
    assert user_data_path() != default_path()
    assert resolve_path(tmp_path / "given.db") == tmp_path / "given.db"


# -- permissions -------------------------------------------------------------------------------
def test_created_file_and_folders_are_owner_only(tmp_path):
    os.chmod(tmp_path, 0o755)
    db = tmp_path / "new" / "deeper" / "c.db"
    with Records(db) as r:
        r.add(run("2026-03-02T10:00:00+01:00"))
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(f.exists() for f in files)  # while it is open
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    assert modes == {"c.db": 0o600, "c.db-wal": 0o600, "c.db-shm": 0o600}
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # not created here: left alone


def test_a_reader_never_creates_a_file(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        Records(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


def test_a_reader_leaves_an_empty_file_empty(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(RecordError, match="is empty: it holds no session yet"):
        Records(empty, create=False)
    assert empty.read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["empty.db"]  # no -wal, no -shm


@pytest.mark.parametrize("create", [False, True], ids=["reader", "writer"])
def test_another_programs_database_is_never_written_into(tmp_path, create):
    other = tmp_path / "contacts.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE contacts (name TEXT)")
    con.execute("INSERT INTO contacts VALUES ('someone')")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(RecordError, match="another program's database .tables contacts"):
        Records(other, create=create)
    assert other.read_bytes() == before


# -- versions ----------------------------------------------------------------------------------
#: The schema as version 1 wrote it (a frozen copy: the migration must keep reading it).
V1 = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('run', 'calibrate')),
    patient TEXT NOT NULL, started TEXT NOT NULL, duration_s REAL, program TEXT,
    config_path TEXT, operator TEXT, exit_reason TEXT, exit_code INTEGER, message TEXT,
    triggers INTEGER, hits INTEGER, misses INTEGER, success_rate REAL, dose_limit_s REAL,
    recording TEXT, closedloop_version TEXT);
CREATE INDEX sessions_by_patient ON sessions (patient, kind, started);
CREATE TABLE muscles (
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    muscle TEXT NOT NULL, onsets INTEGER, stim_s REAL, on_threshold_uv REAL,
    off_threshold_uv REAL, rest_mean_uv REAL, rest_sd_uv REAL, mvc_uv REAL,
    PRIMARY KEY (session_id, muscle)) WITHOUT ROWID;
INSERT INTO sessions VALUES (1, 'calibrate', 'P01', '2026-01-05T09:00:00+01:00', 20.0,
    'biceps_triceps', '/c/p.toml', NULL, 'calibrated', 0, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, '0.0.9');
INSERT INTO sessions VALUES (2, 'run', 'P01', '2026-01-05T09:30:00+01:00', 1200.0,
    'biceps_triceps', '/c/p.toml', 'A. Nurse', 'duration', 0, 'duration reached', 42, 42, 0,
    NULL, 1800.0, '/c/s.xdf', '0.0.9');
INSERT INTO muscles VALUES (1, 'biceps', NULL, NULL, 7.0, 5.0, 3.0, 0.5, 60.0);
INSERT INTO muscles VALUES (2, 'biceps', 42, 126.0, 7.0, 5.0, 3.0, 0.5, 60.0);
PRAGMA user_version = 1;
"""


def older_file(db, script: str):
    """A record file as an older closedloop left it (its schema and rows)."""
    con = sqlite3.connect(db)
    con.executescript(script)
    con.close()
    return db


def test_a_version_1_file_is_migrated_and_keeps_its_sessions(tmp_path):
    db = older_file(tmp_path / "old.db", V1)
    with Records(db) as r:
        assert r.schema_version == SCHEMA_VERSION == 4
        old = r.sessions("P01")
        assert [(s.id, s.kind, s.triggers, s.operator) for s in old] == [
            (1, "calibrate", None, None), (2, "run", 42, "A. Nurse")]
        assert old[1].muscle("biceps").stim_s == 126.0
        assert old[1].gated is None and old[1].calibration_from is None  # added in v2
        assert [c.id for c in r.calibrations("P01")] == [1]
        sid = r.add(run("2026-01-12T09:30:00+01:00", calibration_from=1))
        assert r.get(sid).calibration_from == 1
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 4
    con.close()
    assert integrity(db) == "ok"


#: What version 2 added to version 1 (a frozen copy), and a run of that version.
V2 = V1.replace("PRAGMA user_version = 1;", "") + """
ALTER TABLE sessions ADD COLUMN gated INTEGER;
ALTER TABLE sessions ADD COLUMN emg_units TEXT;
ALTER TABLE sessions ADD COLUMN signal_settings TEXT;
ALTER TABLE sessions ADD COLUMN calibration_from INTEGER REFERENCES sessions (id);
INSERT INTO sessions VALUES (3, 'run', 'P01', '2026-01-06T09:30:00+01:00', 1200.0,
    'biceps_triceps', '/c/p.toml', 'A. Nurse', 'duration', 0, 'duration reached', 40, 40, 0,
    NULL, 1800.0, '/c/s2.xdf', '0.1.0', 2, 'V', '{"filters": {}}', 1);
INSERT INTO muscles VALUES (3, 'biceps', 40, 120.0, 7.0, 5.0, 3.0, 0.5, 60.0);
PRAGMA user_version = 2;
"""


def test_a_version_2_file_gets_the_m_wave_columns_and_keeps_its_sessions(tmp_path):
    db = older_file(tmp_path / "v2.db", V2)
    with Records(db) as r:
        assert r.schema_version == SCHEMA_VERSION == 4
        old = r.sessions("P01", "run")
        assert [(s.id, s.triggers, s.gated, s.calibration_from) for s in old] == [
            (2, 42, None, None), (3, 40, 2, 1)]
        biceps = old[1].muscle("biceps")
        assert biceps.stim_s == 120.0 and biceps.mvc_uv == 60.0
        # added in v3: not measured by the older sessions
        assert (biceps.mwave_current_ma, biceps.mwave_first_uv, biceps.mwave_last_uv,
                biceps.mwave_drop_pct, biceps.mwave_no_response) == (None,) * 5
        new = run("2026-01-12T09:30:00+01:00")
        sid = r.add(new)
        assert r.get(sid).muscle("biceps") == new.muscle("biceps")
        assert r.get(sid).muscle("biceps").mwave_first_uv == 1850.0
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 4
    cols = [row[1] for row in con.execute("PRAGMA table_info(muscles)")]
    con.close()
    assert cols[-5:] == ["mwave_current_ma", "mwave_first_uv", "mwave_last_uv",
                         "mwave_drop_pct", "mwave_no_response"]
    assert integrity(db) == "ok"


#: What version 3 added to version 2 (a frozen copy), and a run of that version.
V3 = V2.replace("PRAGMA user_version = 2;", "") + """
ALTER TABLE muscles ADD COLUMN mwave_current_ma REAL;
ALTER TABLE muscles ADD COLUMN mwave_first_uv REAL;
ALTER TABLE muscles ADD COLUMN mwave_last_uv REAL;
ALTER TABLE muscles ADD COLUMN mwave_drop_pct REAL;
ALTER TABLE muscles ADD COLUMN mwave_no_response INTEGER;
INSERT INTO sessions VALUES (4, 'run', 'P01', '2026-01-07T09:30:00+01:00', 1200.0,
    'biceps_triceps', '/c/p.toml', 'A. Nurse', 'duration', 0, 'duration reached', 41, 41, 0,
    NULL, 1800.0, '/c/s3.xdf', '0.1.0', 0, 'V', '{"filters": {}}', NULL);
INSERT INTO muscles VALUES (4, 'biceps', 41, 123.0, 7.0, 5.0, 3.0, 0.5, 60.0, 20.0, 1800.0,
    1700.0, 5.6, 0);
PRAGMA user_version = 3;
"""


def test_a_version_3_file_gets_the_detector_column_and_keeps_its_sessions(tmp_path):
    """Version 4 records which detector decided: older rows read back without one
    (None), a new row keeps its own."""
    db = older_file(tmp_path / "v3.db", V3)
    with Records(db) as r:
        assert r.schema_version == SCHEMA_VERSION == 4
        old = r.sessions("P01", "run")
        assert [(s.id, s.triggers, s.detector) for s in old] == [
            (2, 42, None), (3, 40, None), (4, 41, None)]
        assert old[2].muscle("biceps").mwave_first_uv == 1800.0
        sid = r.add(replace(run("2026-01-12T09:30:00+01:00"), detector="cusum"))
        assert r.get(sid).detector == "cusum"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 4
    assert [row[1] for row in con.execute("PRAGMA table_info(sessions)")][-1] == "detector"
    con.close()
    assert integrity(db) == "ok"


def test_a_file_from_a_newer_version_is_refused(tmp_path):
    db = tmp_path / "new.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(RecordError, match="newer closedloop.*update closedloop"):
        Records(db)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(RecordError, match="not a closedloop patient record"):
        Records(db)
    assert db.read_bytes().startswith(b"these are my notes")


# -- failures ------------------------------------------------------------------------------------
def _one_session(db: Path) -> None:
    with Records(db) as r:
        r.add(run("2026-03-02T10:00:00+01:00"))


def test_a_read_only_file(tmp_path):
    db = tmp_path / "c.db"
    _one_session(db)
    with read_only_file(db):
        with pytest.raises(RecordError, match="is read-only.*--db"):
            with Records(db) as r:
                r.add(run("2026-03-09T10:00:00+01:00"))
    with Records(db) as r:
        assert len(r.sessions("P01")) == 1


def test_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    with own_filesystem(folder):
        _one_session(folder / "c.db")
        with read_only_folder(folder):
            with pytest.raises(RecordError, match="read-only|cannot be opened"):
                with Records(folder / "c.db") as r:
                    r.add(run("2026-03-09T10:00:00+01:00"))
            with pytest.raises(RecordError, match="is read-only"):
                Records(folder / "another.db")
        with Records(folder / "c.db") as r:
            assert len(r.sessions("P01")) == 1


def test_a_full_disk(tmp_path):
    folder = tmp_path / "small"
    with own_filesystem(folder, size_kib=512):
        db = folder / "c.db"
        with Records(db) as r:
            r.add(run("2026-03-02T10:00:00+01:00"))
            fill(folder)
            with pytest.raises(RecordError, match="the disk is full"):
                for n in range(100):  # the first pages may still fit
                    r.add(run("2026-03-09T10:00:00+01:00", message="x" * 20000 * (n + 1)))
            kept = len(r.sessions("P01"))
        (folder / "filler").unlink()
        assert integrity(db) == "ok"
        with Records(db) as r:
            assert len(r.sessions("P01")) == kept >= 1


def test_a_full_database_by_its_page_limit(tmp_path):
    """Where no disk can be filled: SQLite's max_page_count gives the same SQLITE_FULL."""
    db = tmp_path / "c.db"
    with Records(db) as r:
        r.add(run("2026-03-02T10:00:00+01:00"))
        pages = r.connection.execute("PRAGMA page_count").fetchone()[0]
        r.connection.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(RecordError, match="the disk is full"):
            r.add(run("2026-03-09T10:00:00+01:00", message="x" * 100000))
        assert len(r.sessions("P01")) == 1


def test_a_database_locked_longer_than_the_busy_timeout(tmp_path):
    db = tmp_path / "c.db"
    _one_session(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # without WAL, this would keep readers out too
    holder.execute("INSERT INTO sessions (kind, patient, started) "
                   "VALUES ('run', 'P09', '2026-03-03T10:00:00+01:00')")
    try:
        with Records(db, busy_timeout_s=0.3) as r:
            with pytest.raises(RecordError, match="is in use.*0.3 s.*close that program"):
                r.add(run("2026-03-09T10:00:00+01:00"))
            # WAL: reading does not wait for the writer, and sees only what is committed
            t0 = time.monotonic()
            assert [s.patient for s in r.sessions("P01")] == ["P01"]
            assert r.patients() == ["P01"]
            assert time.monotonic() - t0 < 0.3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Records(db) as r:  # released: writes again
        r.add(run("2026-03-09T10:00:00+01:00"))
        assert len(r.sessions("P01")) == 2


def test_a_writer_waits_for_a_short_lock(tmp_path):
    db = tmp_path / "c.db"
    _one_session(db)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        with Records(db, busy_timeout_s=10.0) as r:
            r.add(run("2026-03-09T10:00:00+01:00"))
            assert len(r.sessions("P01")) == 2
    finally:
        release.join()
        holder.close()


# -- processes -------------------------------------------------------------------------------------
def _writer(db: Path, patient: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.io.record_writer", str(db), patient,
                             str(count)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(180)
def test_concurrent_processes_writing_one_new_database(tmp_path):
    db = tmp_path / "shared" / "c.db"  # none of them finds a file: they race to create it
    procs = {f"P{k}": _writer(db, f"P{k}", 25) for k in range(4)}
    outs = {p: proc.communicate(timeout=150) for p, proc in procs.items()}
    for p, proc in procs.items():
        assert proc.returncode == 0, outs[p][1][-2000:]
    assert integrity(db) == "ok"
    with Records(db) as r:
        for p, (stdout, _) in outs.items():
            committed = [int(line.split()[1]) for line in stdout.splitlines()]
            rows = r.sessions(p)
            assert sorted(s.id for s in rows) == sorted(committed) and len(rows) == 25
            assert sorted(s.triggers for s in rows) == list(range(1, 26))
            assert all(len(s.muscles) == 2 for s in rows)
        assert r.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.timeout(180)
@pytest.mark.parametrize("round_", range(3))
def test_a_writer_killed_mid_write_leaves_every_committed_session(tmp_path, round_):
    db = tmp_path / "c.db"
    proc = _writer(db, "P01", 0)  # writes until killed
    committed: list[int] = []
    deadline = time.monotonic() + 120
    want = 20 + 7 * round_  # kill at a different point each round
    while len(committed) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed.append(int(line.split()[1]))
    assert len(committed) == want, proc.stderr.read()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # most likely inside the next transaction
    proc.wait(timeout=10)
    committed += [int(line.split()[1]) for line in proc.stdout.read().splitlines()]
    assert proc.returncode == -signal.SIGKILL
    assert integrity(db) == "ok"
    with Records(db) as r:
        rows = r.sessions("P01")
        ids = [s.id for s in rows]
        assert set(committed) <= set(ids)
        assert len(ids) <= len(committed) + 1  # at most the one whose commit was not yet said
        for s in rows:  # whole sessions only: every one has both muscles and its values
            assert [m.muscle for m in s.muscles] == ["biceps", "triceps"]
            assert s.muscle("biceps").onsets == s.triggers and len(s.message) == 9000
        r.add(record("P01", 999))  # and it goes on working
