"""A process that adds sessions to a patient record and says which ones are committed.

``python -m tests.io.record_writer DB PATIENT COUNT``: adds COUNT sessions (0: until
killed) of PATIENT to DB, each with two muscles, and prints ``committed ID`` after each
commit returned (flushed): every id printed is durable in the file. Used by the
concurrency and kill -9 tests.
"""

from __future__ import annotations

import sys

from closedloop.io.records import MuscleRecord, Records, SessionRecord, now_iso


def record(patient: str, n: int) -> SessionRecord:
    """Session ``n`` of ``patient``: recognisable values, a long message (several pages
    per transaction, so a kill often lands inside a write)."""
    return SessionRecord(
        kind="run", patient=patient, started=now_iso(), duration_s=float(n),
        program="writer", exit_reason="duration", exit_code=0, message="x" * 9000,
        triggers=n, hits=n, misses=0, dose_limit_s=1800.0,
        muscles=(MuscleRecord("biceps", onsets=n, stim_s=0.5 * n, on_threshold_uv=n + 0.25),
                 MuscleRecord("triceps", onsets=n + 1, stim_s=0.25 * n)),
    )


def main(argv: list[str]) -> int:
    db, patient, count = argv[0], argv[1], int(argv[2])
    with Records(db, busy_timeout_s=60.0) as records:
        n = 0
        while count == 0 or n < count:
            n += 1
            sid = records.add(record(patient, n))
            print(f"committed {sid} {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
