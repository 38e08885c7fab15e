"""``closedloop history PATIENT [--db PATH] [--out FILE.html [--overwrite]]``.

Reads the patient's sessions from the patient record (:mod:`closedloop.io.records`),
prints the tables of :func:`closedloop.analysis.history.terminal_lines` and, with
``--out``, writes the HTML page (never over an existing file unless ``--overwrite``).
Exit code 0; otherwise the one table's (:data:`closedloop.errors.EXIT_CODES`): 2 a page
that may not or cannot be written (as every command's output), 7 a record that holds no
session of the patient, 10 a record that cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path

from closedloop.analysis.history import build_history, render_html, terminal_lines
from closedloop.errors import ConfigError, InputError
from closedloop.identity import check_patient_id
from closedloop.io.records import Records, resolve_path


def main(args) -> int:
    """Run ``closedloop history``; returns the exit code (0)."""
    patient = check_patient_id(args.patient, where="PATIENT")
    db = resolve_path(args.db)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; choose another --out file or add --overwrite")
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
        _write(out, render_html(history), overwrite=args.overwrite)
        print(f"closedloop history: wrote {out}")
    return 0


def _write(path: Path, text: str, *, overwrite: bool) -> None:
    """Write ``text``: a new file only (``overwrite``: replace it atomically)."""
    try:
        if overwrite:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        else:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
    except FileExistsError:
        raise ConfigError(f"{path} exists; choose another --out file or add --overwrite") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc}); check the "
                          "folder") from None
