"""``closedloop history PATIENT [--db PATH] [--out FILE.html [--overwrite]]``.

Reads the patient's sessions from the patient record (:mod:`closedloop.io.records`),
prints the tables of :func:`closedloop.analysis.history.terminal_lines` and, with
``--out``, writes the HTML page (never over an existing file unless ``--overwrite``).
Exit code 0; otherwise the one table's (:data:`closedloop.errors.EXIT_CODES`): 2 a page
that may not or cannot be written (as every command's output), 7 a record that holds no
session of the patient, 10 a record that cannot be read.
"""

from __future__ import annotations

from pathlib import Path

from closedloop.analysis.history import build_history, render_html, terminal_lines
from closedloop.errors import InputError
from closedloop.identity import check_patient_id
from closedloop.io.outfile import claim_output, write_whole
from closedloop.io.records import Records, resolve_path


def main(args) -> int:
    """Run ``closedloop history``; returns the exit code (0)."""
    patient = check_patient_id(args.patient, where="PATIENT")
    db = resolve_path(args.db)
    if args.out is None:
        return _history(patient, db, None)
    # claimed first, as every command's output: never over the patient record itself
    # (not even with --overwrite: that replaced the record with the page), never over an
    # existing file without --overwrite, written whole or not at all
    with claim_output(args.out, overwrite=bool(args.overwrite),
                      inputs=[("patient record", db)], what="history page"):
        return _history(patient, db, Path(args.out))


def _history(patient: str, db: Path, out: Path | None) -> int:
    with Records(db, create=False) as records:
        rows = records.sessions(patient)
        if not rows:
            known = records.patients()
            raise InputError(
                f"no session of patient {patient} in {db}; "
                + (f"it holds {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}"
                   if known else "it holds no session yet")
                + " (or give the right record with --db)")
    history = build_history(rows, patient, db=str(db))
    for line in terminal_lines(history):
        print(line)
    if out is not None:
        write_whole(out, render_html(history), what="history page")
        print(f"closedloop history: wrote {out}")
    return 0
