r"""The patient's record across sessions: one embedded SQLite database.

Every ``closedloop run`` and ``closedloop calibrate`` for a patient adds one row to
``sessions`` (who, when, how long, which program, how it ended, repetitions, dose) and
one row per muscle to ``muscles`` (onsets, stimulation time, thresholds, calibration).
``closedloop history`` reads them back; the next session may start from the patient's
last calibration (:meth:`Records.calibrations`). This module is the only one that
touches the file; it uses nothing but the standard library's ``sqlite3``.

Where the file is (:func:`resolve_path`): ``--db PATH``, else the environment variable
``CLOSEDLOOP_DB``, else ``closedloop.db`` in the user's data folder
(``platformdirs.user_data_dir("closedloop")``: ``~/.local/share/closedloop`` on Linux,
``~/Library/Application Support/closedloop`` on macOS, ``%LOCALAPPDATA%\closedloop`` on
Windows).

What keeps the record safe:

* **Atomic rows.** A session and its muscles are written in one transaction: after a
  crash, ``kill -9`` or power loss the file holds every committed session whole and
  nothing of the one being written (SQLite's atomic commit; ``synchronous = FULL`` makes
  each commit durable across a power loss, at one ``fsync`` per session).
* **WAL journal.** Readers (``closedloop history``, a report) never wait for a writer,
  nor a writer for them; concurrent writers (sessions in several rooms on one file)
  queue for at most the busy timeout (:data:`BUSY_TIMEOUT_S`), then the write fails
  with a :class:`~closedloop.errors.RecordError` that says what to do.
* **Owner only.** A file this module creates is ``0600`` (SQLite gives its ``-wal`` and
  ``-shm`` files the same mode), a folder it creates ``0700``.
* **Pseudonymous.** Every write checks the patient id
  (:func:`~closedloop.identity.check_patient_id`). File paths (config, recording) are
  stored as given: name patient files by their pseudonym, not by the patient's name.
* **Every failure is a RecordError** naming the file, what went wrong (busy, read-only,
  disk full, missing folder, not a database) and what to do. The caller decides what it
  means; ``closedloop run`` writes only after stimulation is off and reports a failure
  in its summary without changing how the session ended.

Schema versions (``PRAGMA user_version``): :data:`MIGRATIONS` holds, for each version
``v``, the statements that turn a version-``v`` database into version ``v + 1``; opening
an older file applies the missing ones in one transaction (a newer file is refused:
update closedloop). Version 1 had sessions and muscles; version 2 added what a session
needs to start from a stored calibration (``emg_units``, ``signal_settings``,
``calibration_from``) and the gated trigger count; version 3 the evoked response
(M-wave) of each stimulated muscle (``mwave_*`` columns of ``muscles``); version 4 the
detector that decided (``sessions.detector``: its thresholds are in µV only when its
statistic is an EMG amplitude).

Adding a measure (the effort per attempt of the clinical report, as version 3 added the
M-wave): append a migration to :data:`MIGRATIONS` (``ALTER TABLE
muscles ADD COLUMN effort_mean_pct_mvc REAL``, or a new table keyed by ``session_id``
for per-attempt rows), add the field to :class:`MuscleRecord` (or a new record type),
and a test that opens a file of the previous version. Columns are matched to fields by
name, so older rows read back with ``None`` in the new fields.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from closedloop.errors import RecordError
from closedloop.identity import check_patient_id
from closedloop.units import MICROVOLTS_PER, microvolts_per  # noqa: F401 - re-exported

#: Environment variable that moves the default database.
ENV_VAR = "CLOSEDLOOP_DB"

#: How long a write waits for another writer before it fails, seconds.
BUSY_TIMEOUT_S = 5.0

#: What a row of ``sessions`` records.
KINDS = ("run", "calibrate")

_V1 = (
    """CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('run', 'calibrate')),
        patient TEXT NOT NULL,
        started TEXT NOT NULL,
        duration_s REAL,
        program TEXT,
        config_path TEXT,
        operator TEXT,
        exit_reason TEXT,
        exit_code INTEGER,
        message TEXT,
        triggers INTEGER,
        hits INTEGER,
        misses INTEGER,
        success_rate REAL,
        dose_limit_s REAL,
        recording TEXT,
        closedloop_version TEXT
    )""",
    "CREATE INDEX sessions_by_patient ON sessions (patient, kind, started)",
    """CREATE TABLE muscles (
        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        muscle TEXT NOT NULL,
        onsets INTEGER,
        stim_s REAL,
        on_threshold_uv REAL,
        off_threshold_uv REAL,
        rest_mean_uv REAL,
        rest_sd_uv REAL,
        mvc_uv REAL,
        PRIMARY KEY (session_id, muscle)
    ) WITHOUT ROWID""",
)

_V2 = (
    "ALTER TABLE sessions ADD COLUMN gated INTEGER",
    "ALTER TABLE sessions ADD COLUMN emg_units TEXT",
    "ALTER TABLE sessions ADD COLUMN signal_settings TEXT",
    "ALTER TABLE sessions ADD COLUMN calibration_from INTEGER REFERENCES sessions (id)",
)

_V3 = (
    "ALTER TABLE muscles ADD COLUMN mwave_current_ma REAL",
    "ALTER TABLE muscles ADD COLUMN mwave_first_uv REAL",
    "ALTER TABLE muscles ADD COLUMN mwave_last_uv REAL",
    "ALTER TABLE muscles ADD COLUMN mwave_drop_pct REAL",
    "ALTER TABLE muscles ADD COLUMN mwave_no_response INTEGER",
)

_V4 = (
    "ALTER TABLE sessions ADD COLUMN detector TEXT",
)

#: ``MIGRATIONS[v]``: the statements from schema version ``v`` to ``v + 1``.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4)

#: The schema version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)

@dataclass(frozen=True)
class MuscleRecord:
    """One muscle in one session (``None``: not measured or not applicable).

    Attributes
    ----------
    muscle : str
        The muscle's name in the config.
    onsets : int or None
        Onsets the detector decided.
    stim_s : float or None
        Seconds of stimulation (the session dose limit applies to each muscle).
    on_threshold_uv, off_threshold_uv : float or None
        Detector thresholds in force at the onsets (a calibrated muscle: its fixed
        ones; an adaptive one: the median over the session's last onsets), µV of
        envelope; None for a detector whose statistic is not an EMG amplitude (cusum:
        nats).
    rest_mean_uv, rest_sd_uv, mvc_uv : float or None
        The calibration: envelope at rest (mean, SD) and at maximal voluntary
        contraction, µV. A calibrate row holds what it measured; a run row the
        calibration it ran with.
    mwave_current_ma : float or None
        The current the muscle was stimulated at most (its working level), mA; the
        M-wave figures are of that level (:mod:`closedloop.runtime.mwaves`).
    mwave_first_uv, mwave_last_uv : float or None
        M-wave peak-to-peak of the session's first and last trains at that level, µV.
    mwave_drop_pct : float or None
        Fall from the first to the last trains, % of the first (fatigue; negative: it
        grew).
    mwave_no_response : int or None
        M-wave measurements without a response at a current that should give one
        (electrodes, a dead channel).
    """

    muscle: str
    onsets: int | None = None
    stim_s: float | None = None
    on_threshold_uv: float | None = None
    off_threshold_uv: float | None = None
    rest_mean_uv: float | None = None
    rest_sd_uv: float | None = None
    mvc_uv: float | None = None
    mwave_current_ma: float | None = None
    mwave_first_uv: float | None = None
    mwave_last_uv: float | None = None
    mwave_drop_pct: float | None = None
    mwave_no_response: int | None = None


@dataclass(frozen=True)
class SessionRecord:
    """One ``run`` or ``calibrate`` of one patient, as stored in ``sessions``.

    Attributes
    ----------
    kind : str
        ``"run"`` or ``"calibrate"``.
    patient : str
        Pseudonymous id (:func:`~closedloop.identity.check_patient_id`).
    started : str
        Local date and time with its UTC offset, ISO 8601
        (``2026-03-02T10:14:05+01:00``).
    duration_s : float or None
        Seconds of EMG the session processed.
    program, config_path : str or None
        The config's name and the file it was read from.
    operator : str or None
        Who ran the session (staff: a name or a staff code).
    exit_reason, exit_code, message : str, int, str or None
        How it ended (the summary's first line).
    triggers, hits, misses, gated : int or None
        Repetitions: trials (triggers), hits and misses of the protocol, onsets gated
        by co-contraction.
    success_rate : float or None
        hits / trials, for protocols that can miss (cued trials); None otherwise.
    dose_limit_s : float or None
        The session's stimulation limit per muscle, seconds.
    recording : str or None
        The XDF recording, if any (absolute path).
    emg_units : str or None
        Units the EMG source reported (the ``*_uv`` values were converted from them).
    signal_settings : str or None
        JSON of the filter and envelope settings the thresholds and calibration were
        measured with: a calibration is reused only by a session with the same ones.
    calibration_from : int or None
        Id of the calibrate row this run started from (None: the config's own, or the
        adaptive baseline).
    detector : str or None
        The detector that decided (a config's ``[detector] kind``; None: recorded
        before schema version 4).
    closedloop_version : str or None
        Version that wrote the row.
    muscles : tuple of MuscleRecord
        One per muscle of the config.
    id : int or None
        Row id (None until stored).
    """

    kind: str
    patient: str
    started: str
    duration_s: float | None = None
    program: str | None = None
    config_path: str | None = None
    operator: str | None = None
    exit_reason: str | None = None
    exit_code: int | None = None
    message: str | None = None
    triggers: int | None = None
    hits: int | None = None
    misses: int | None = None
    gated: int | None = None
    success_rate: float | None = None
    dose_limit_s: float | None = None
    recording: str | None = None
    emg_units: str | None = None
    signal_settings: str | None = None
    calibration_from: int | None = None
    closedloop_version: str | None = None
    detector: str | None = None
    muscles: tuple[MuscleRecord, ...] = field(default=())
    id: int | None = None

    @property
    def started_at(self) -> datetime:
        """:attr:`started` as an aware datetime."""
        return datetime.fromisoformat(self.started)

    def muscle(self, name: str) -> MuscleRecord | None:
        """The row of muscle ``name``, or None."""
        return next((m for m in self.muscles if m.muscle == name), None)

    def settings(self) -> dict[str, Any] | None:
        """:attr:`signal_settings` decoded (None when not stored)."""
        return json.loads(self.signal_settings) if self.signal_settings else None


#: Columns of ``sessions`` and ``muscles`` that the records' fields map to.
SESSION_COLUMNS = tuple(f.name for f in fields(SessionRecord) if f.name not in ("muscles", "id"))
MUSCLE_COLUMNS = tuple(f.name for f in fields(MuscleRecord))


def user_data_path() -> Path:
    """``closedloop.db`` in the user's data folder (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("closedloop", appauthor=False)) / "closedloop.db"


def default_path() -> Path:
    """``$CLOSEDLOOP_DB``, else :func:`user_data_path`."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else user_data_path()


def resolve_path(path: str | os.PathLike | None) -> Path:
    """The database file: ``path`` when given, else :func:`default_path`."""
    return Path(path).expanduser() if path else default_path()


def now_iso() -> str:
    """The local date and time with its UTC offset, to the second (``started``)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


class Records:
    """An open patient-record database (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The database file.
    create : bool
        Create the file (and its folders) when missing; False: a missing file is a
        :class:`~closedloop.errors.RecordError` (a reader should not create one).
    busy_timeout_s : float
        How long a write waits for another writer.

    Raises
    ------
    RecordError
        The file cannot be created, opened, read or migrated.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True,
                 busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._con: sqlite3.Connection | None = None
        try:
            if not self.path.exists():
                if not create:
                    raise RecordError(
                        f"patient record {self.path}: no such file; a session run with "
                        "--patient creates it (or give the right one with --db)")
                _create_file(self.path)
            self._con = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                        isolation_level=None, check_same_thread=False)
            self._refuse_foreign(create)
            self._con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._con.execute("PRAGMA foreign_keys = ON")
            self._con.execute("PRAGMA journal_mode = WAL")
            self._con.execute("PRAGMA synchronous = FULL")
            self.schema_version = self._migrate()
        except RecordError:
            self.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise _translate(exc, self.path, self.busy_timeout_s) from None

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The open ``sqlite3`` connection (for pragmas and read-only queries)."""
        if self._con is None:
            raise RecordError(f"patient record {self.path}: used after close()")
        return self._con

    # -- schema ------------------------------------------------------------------------------
    def _refuse_foreign(self, create: bool) -> None:
        """Before anything is written: a file without closedloop's schema is turned into a
        patient record only when it is empty and ``create`` allows it; another
        program's database is never written into, and a reader never writes."""
        # one statement, one snapshot: another process may be creating this record now
        version, names = self.connection.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT group_concat(name, "
            "',') FROM (SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name))"
        ).fetchone()
        if version > 0:
            return
        tables = names.split(",") if names else []
        if tables:
            raise RecordError(
                f"patient record {self.path} is another program's database (tables "
                f"{', '.join(tables[:5])}{' ...' if len(tables) > 5 else ''}; no closedloop "
                "schema); closedloop leaves it as it is: choose another file with --db")
        if not create:
            raise RecordError(
                f"patient record {self.path} is empty: it holds no session yet (a session "
                "run with --patient fills it), or give the right one with --db")

    def _migrate(self) -> int:
        con = self.connection
        version = _user_version(con)
        if version > SCHEMA_VERSION:
            raise RecordError(
                f"patient record {self.path}: written by a newer closedloop (schema "
                f"{version}; this one reads up to {SCHEMA_VERSION}); update closedloop")
        if version == SCHEMA_VERSION:
            return version
        con.execute("BEGIN IMMEDIATE")  # one migrator at a time; the others then see it done
        try:
            version = _user_version(con)
            for v in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[v]:
                    con.execute(statement)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        return SCHEMA_VERSION

    # -- writing ------------------------------------------------------------------------------
    def add(self, record: SessionRecord) -> int:
        """Store ``record`` and its muscles in one transaction; the new row's id.

        Raises
        ------
        RecordError
            The write failed (busy, read-only, disk full...): nothing of it is stored.
        ConfigError
            The patient id is not pseudonymous.
        """
        check_patient_id(record.patient, where="patient")
        if record.kind not in KINDS:
            raise ValueError(f"kind {record.kind!r} is not one of {KINDS}")
        con = self.connection
        row = [_value(getattr(record, c)) for c in SESSION_COLUMNS]
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                cur = con.execute(
                    f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(SESSION_COLUMNS))})", row)
                sid = int(cur.lastrowid)
                con.executemany(
                    f"INSERT INTO muscles (session_id, {', '.join(MUSCLE_COLUMNS)}) "
                    f"VALUES (?, {', '.join('?' * len(MUSCLE_COLUMNS))})",
                    [[sid, *(_value(getattr(m, c)) for c in MUSCLE_COLUMNS)]
                     for m in record.muscles])
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout_s) from None
        return sid

    # -- reading ------------------------------------------------------------------------------
    def sessions(self, patient: str, kind: str | None = None) -> list[SessionRecord]:
        """Every row of ``patient`` (of one ``kind`` when given), oldest first."""
        where, args = "patient = ?", [patient]
        if kind is not None:
            where += " AND kind = ?"
            args.append(kind)
        return self._read(where, args)

    def calibrations(self, patient: str) -> list[SessionRecord]:
        """The patient's accepted calibrations (calibrate rows with exit code 0),
        newest first."""
        rows = self._read("patient = ? AND kind = 'calibrate' AND exit_code = 0", [patient])
        return rows[::-1]

    def get(self, session_id: int) -> SessionRecord | None:
        """The row with this id, or None."""
        rows = self._read("id = ?", [int(session_id)])
        return rows[0] if rows else None

    def patients(self) -> list[str]:
        """Every patient id in the record, sorted."""
        try:
            cur = self.connection.execute("SELECT DISTINCT patient FROM sessions ORDER BY 1")
            return [r[0] for r in cur]
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout_s) from None

    def _read(self, where: str, args: Sequence[Any]) -> list[SessionRecord]:
        con = self.connection
        try:
            con.execute("BEGIN")  # one snapshot for sessions and their muscles
            try:
                cur = con.execute(f"SELECT * FROM sessions WHERE {where}", list(args))
                names = [d[0] for d in cur.description]
                rows = [dict(zip(names, r, strict=True)) for r in cur]
                muscles: dict[int, list[MuscleRecord]] = {}
                if rows:
                    ids = [r["id"] for r in rows]
                    mcur = con.execute(
                        "SELECT * FROM muscles WHERE session_id IN "
                        f"({', '.join('?' * len(ids))})", ids)
                    mnames = [d[0] for d in mcur.description]
                    for r in mcur:
                        d = dict(zip(mnames, r, strict=True))
                        muscles.setdefault(d["session_id"], []).append(
                            MuscleRecord(**{c: d.get(c) for c in MUSCLE_COLUMNS}))
            finally:
                con.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout_s) from None
        out = [SessionRecord(**{c: r.get(c) for c in SESSION_COLUMNS}, id=r["id"],
                             muscles=tuple(muscles.get(r["id"], ())))
               for r in rows]
        out.sort(key=lambda s: (_instant(s.started), s.id))
        return out


# -- helpers --------------------------------------------------------------------------------
def _user_version(con: sqlite3.Connection) -> int:
    return int(con.execute("PRAGMA user_version").fetchone()[0])


def _rollback(con: sqlite3.Connection) -> None:
    if con.in_transaction:
        try:
            con.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failure that got us here is the one to report


def _value(v: Any) -> Any:
    """A value SQLite stores as meant: non-finite floats as NULL, numpy scalars as
    Python numbers."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, numbers.Integral):  # bool, int, numpy integers
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def _instant(started: str) -> float:
    try:
        return datetime.fromisoformat(started).timestamp()
    except (TypeError, ValueError):
        return math.inf


def _create_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600, and any missing folder with 0700."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # whatever the umask left
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return  # another session created it just now
    os.close(fd)
    os.chmod(path, 0o600)


def _translate(exc: BaseException, path: Path, timeout_s: float) -> RecordError:
    """A RecordError naming the file, what went wrong and what to do."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    errno_ = getattr(exc, "errno", None)
    disk = name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or isinstance(exc, OSError)
    if (isinstance(exc, PermissionError) or errno_ == errno.EROFS
            or name.startswith("SQLITE_READONLY") or "readonly" in text
            or (disk and not _writable(path))):
        what = ("is read-only (file or folder permissions, or a read-only disk); give this "
                "user write access to the file and its folder, or choose another file with "
                "--db")
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        what = (f"is in use: another program held it for more than {timeout_s:g} s (another "
                "session saving, or a tool keeping the file open); close that program")
    elif name == "SQLITE_FULL" or errno_ == errno.ENOSPC or (
            disk and _free_bytes(path) < LOW_SPACE_BYTES):
        what = "cannot grow: the disk is full; free some space on it"
    elif name.startswith("SQLITE_CANTOPEN") or isinstance(exc, (FileNotFoundError,
                                                                NotADirectoryError)):
        what = ("cannot be opened: its folder is missing or not writable; check the path "
                "given with --db or CLOSEDLOOP_DB")
    elif name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        what = ("is not a closedloop patient record or is damaged; choose another file with "
                "--db and keep this one for inspection")
    elif name.startswith("SQLITE_IOERR") or isinstance(exc, OSError):
        what = f"could not be written: disk error ({name or type(exc).__name__}: {text})"
    else:
        what = f"failed ({name or type(exc).__name__}: {text})"
    return RecordError(f"patient record {path} {what}")


#: An I/O error with less free space than this on the record's disk is a full disk.
LOW_SPACE_BYTES = 1 << 20


def _folder(path: Path) -> Path:
    """The nearest existing folder of ``path``."""
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _free_bytes(path: Path) -> float:
    """Free bytes on the disk of ``path``; inf if unknown."""
    try:
        return float(shutil.disk_usage(_folder(path)).free)
    except OSError:
        return math.inf


def _writable(path: Path) -> bool:
    """Whether ``path`` (or its folder, when it does not exist) can be written: not on a
    read-only filesystem and allowed to this user."""
    folder = _folder(path)
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
    except (OSError, AttributeError):  # no statvfs (Windows): permissions only
        pass
    target = path if path.exists() else folder
    return os.access(target, os.W_OK) and os.access(folder, os.W_OK)


__all__ = ["BUSY_TIMEOUT_S", "ENV_VAR", "KINDS", "MICROVOLTS_PER", "MIGRATIONS",
           "MUSCLE_COLUMNS", "SCHEMA_VERSION", "SESSION_COLUMNS", "MuscleRecord", "Records",
           "SessionRecord", "default_path", "microvolts_per", "now_iso", "resolve_path",
           "user_data_path"]
