"""The patient record's costs: the database write per session, and the history build.

``PYTHONPATH=. python tools/bench_records.py [--sessions 200] [--history 500] [--muscles 2]
[--dir DIR]`` prints:

* the write a finished ``closedloop run`` does (:func:`closedloop.runtime.patient_record.save`:
  open the file, add the session and its muscles in one transaction with a durable
  commit, close), per session: median, p95, max over ``--sessions`` writes into one file
  that grows;
* the same add on an already open connection;
* ``closedloop history`` for a patient with ``--history`` sessions (about two years of
  sessions on most days): reading them, building the history, the terminal tables and
  the HTML page.

The file lives in ``--dir`` (default: a temporary folder, on the disk that holds it);
durability costs an ``fsync`` per commit, so the disk sets the figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from closedloop.analysis.history import build_history, render_html, terminal_lines
from closedloop.io.records import MuscleRecord, Records, SessionRecord
from closedloop.runtime.patient_record import save


def session(patient: str, when: datetime, n: int, muscles: int) -> SessionRecord:
    return SessionRecord(
        kind="run", patient=patient, started=when.isoformat(timespec="seconds"),
        duration_s=1800.0, program="biceps_triceps", config_path="/clinic/p.toml",
        operator="A. Nurse", exit_reason="duration", exit_code=0, message="duration reached",
        triggers=100 + n % 37, hits=100 + n % 37, misses=0, gated=n % 5, dose_limit_s=1800.0,
        recording=f"/clinic/sessions/{patient}_{n}.xdf", emg_units="V",
        signal_settings='{"envelope": {}, "filters": {}}', closedloop_version="0.1.0",
        muscles=tuple(MuscleRecord(f"muscle{k}", onsets=100 + k, stim_s=300.0 + n % 60,
                                   on_threshold_uv=7.5 - n / 1000, off_threshold_uv=5.0,
                                   rest_mean_uv=3.0, rest_sd_uv=0.5, mvc_uv=60.0)
                      for k in range(muscles)))


def ms(values: list[float]) -> str:
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return (f"median {1000 * statistics.median(v):.2f} ms, p95 {1000 * p95:.2f} ms, "
            f"max {1000 * v[-1]:.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--history", type=int, default=500)
    p.add_argument("--muscles", type=int, default=2)
    p.add_argument("--dir", help="folder for the database (default: a temporary one)")
    a = p.parse_args()
    if a.dir is not None and not Path(a.dir).is_dir():
        p.error(f"--dir {a.dir}: no such folder (give one that exists: the database is "
                "written in a temporary folder inside it)")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        db = Path(tmp) / "closedloop.db"
        start = datetime(2026, 1, 5, 9, 0).astimezone()
        writes = []
        for n in range(a.sessions):
            rec = session(f"P{n % 20:02d}", start + timedelta(hours=n), n, a.muscles)
            t0 = time.perf_counter()
            sid, line = save(rec, db)
            writes.append(time.perf_counter() - t0)
            assert sid is not None, line
        print(f"write per session (open, add, close; {a.muscles} muscles, {a.sessions} "
              f"sessions): {ms(writes)}")
        adds = []
        with Records(db) as r:
            for n in range(a.sessions):
                rec = session("P99", start + timedelta(hours=n), n, a.muscles)
                t0 = time.perf_counter()
                r.add(rec)
                adds.append(time.perf_counter() - t0)
        print(f"add on an open connection: {ms(adds)}")

        with Records(db) as r:
            for n in range(a.history):  # most days over about two years
                day = start + timedelta(days=int(n * 1.4), hours=n % 3)
                r.add(replace(session("P01H", day, n, a.muscles)))
        t0 = time.perf_counter()
        with Records(db, create=False) as r:
            rows = r.sessions("P01H")
        t1 = time.perf_counter()
        h = build_history(rows, "P01H", db=str(db))
        t2 = time.perf_counter()
        lines = terminal_lines(h)
        t3 = time.perf_counter()
        page = render_html(h)
        t4 = time.perf_counter()
        print(f"history of {len(rows)} sessions ({len(h.weeks)} weeks): read "
              f"{1000 * (t1 - t0):.1f} ms, build {1000 * (t2 - t1):.1f} ms, terminal "
              f"{1000 * (t3 - t2):.1f} ms ({len(lines)} lines), HTML {1000 * (t4 - t3):.1f} ms "
              f"({len(page) / 1024:.0f} KiB); total {1000 * (t4 - t0):.1f} ms")
        print(f"database size: {db.stat().st_size / 1024:.0f} KiB for "
              f"{2 * a.sessions + a.history} sessions")


if __name__ == "__main__":
    main()
