"""``closedloop calibrate``: rest and maximal contractions per muscle -> a patient config.

Parse, claim the patient config (never over an existing file without ``--overwrite``,
never over the template config), then guide the calibration: in the Qt dialog
(:class:`closedloop.view.calibration.CalibrationDialog`) or, with ``--no-gui``, on the
terminal (:func:`confirm_limits`, :func:`run_terminal`). The schedule, the acquisition,
the analysis and the verified patient config are the library's
(:mod:`closedloop.analysis.calibrate`). Every calibration of a patient, accepted or
refused, is added to the patient record. Exit code 0 when the patient config was
written, 1 when the calibration was refused (nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from closedloop.analysis.calibrate import (
    Result,
    Schedule,
    Step,
    acquire,
    analyse,
    build_steps,
    calibration_record,
    limits_lines,
    make_source,
    patient_config_text,
    total_s,
    write_patient_config,
)
from closedloop.config import Config, load_config
from closedloop.errors import InputError
from closedloop.identity import check_operator
from closedloop.io.outfile import claim_output
from closedloop.io.records import now_iso, resolve_path
from closedloop.runtime.patient_record import save
from closedloop.sources.base import Source


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop calibrate``; returns the exit code (0 written, 1 refused).

    ``args`` attributes: ``config``, ``source`` (None: the config's session source),
    ``stimulator`` (None: keep the config's; else checked against the program before the
    calibration starts and written to the patient config), ``out``, ``overwrite``,
    ``rest_s``, ``mvc_reps``, ``mvc_s``, ``no_gui``, ``yes``; ``patient`` (overrides the
    config's; written to the patient config), ``operator``, ``db`` (the patient record).

    The output is claimed first (:func:`~closedloop.io.outfile.claim_output`): an existing
    file needs ``--overwrite``, and the template config itself is never overwritten.
    """
    from closedloop.sources.spec import files_read

    inputs = [("config", args.config),
              ("patient record", resolve_path(getattr(args, "db", None)))]
    if getattr(args, "source", None):
        inputs += files_read(args.source)
    with claim_output(args.out, overwrite=bool(getattr(args, "overwrite", False)),
                      inputs=inputs, what="patient config"):
        return _calibrate(args)


def _calibrate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if getattr(args, "patient", None):
        config = config.with_patient(args.patient, where="--patient")
    operator = getattr(args, "operator", None)
    operator = check_operator(operator) if operator is not None else None
    schedule = schedule_from_args(args)
    steps = build_steps(schedule, config.muscle_names)
    source_spec = getattr(args, "source", None) or config.session.source
    out = Path(args.out)
    stimulator = getattr(args, "stimulator", None)
    if stimulator:  # before the patient starts: can this stimulator run the program?
        from closedloop.runtime.devices import make_stimulator

        make_stimulator(config, stimulator)  # checks the spec; opens nothing
    started = now_iso()
    if not getattr(args, "no_gui", False):
        from closedloop.view.app import application
        from closedloop.view.calibration import CalibrationDialog

        app = application()
        dlg = CalibrationDialog(config, source_spec, out, schedule=schedule,
                                yes=bool(getattr(args, "yes", False)),
                                stimulator=stimulator or None)
        dlg.show()
        app.exec()
        _store(config, dlg.result, args, started=started, duration_s=total_s(steps),
               operator=operator, written=dlg.written)
        return 0 if dlg.written is not None else 1
    confirmation = confirm_limits(config, yes=bool(getattr(args, "yes", False)))
    source = make_source(config, source_spec, steps)
    result, steps = run_terminal(config, source, schedule)
    if not result.ok:
        print("closedloop calibrate: calibration refused, nothing written:", file=sys.stderr)
        for line in result.reasons():
            print(f"  {line}", file=sys.stderr)
        _store(config, result, args, started=started, duration_s=total_s(steps),
               operator=operator, written=None)
        return 1
    text = patient_config_text(config, result, confirmation=confirmation,
                               source=source_spec, schedule=schedule,
                               stimulator=stimulator or None)
    write_patient_config(out, text)
    print(f"closedloop calibrate: wrote {out} (detector.baseline = \"calibrated\")")
    _store(config, result, args, started=started, duration_s=total_s(steps),
           operator=operator, written=out)
    return 0


def schedule_from_args(args: argparse.Namespace) -> Schedule:
    """The schedule of ``--rest-s``, ``--mvc-reps`` and ``--mvc-s`` (defaults 5, 3, 3)."""
    return Schedule(
        rest_s=float(getattr(args, "rest_s", 5.0)),
        mvc_reps=int(getattr(args, "mvc_reps", 3)),
        mvc_s=float(getattr(args, "mvc_s", 3.0)),
    )


# -- the terminal -----------------------------------------------------------------------------
def confirm_limits(config: Config, *, yes: bool, input: Callable[[str], str] = input,
                   output: Callable[[str], object] = print) -> str:
    """Ask the clinician to confirm the stimulation limits; returns what is recorded.

    Raises
    ------
    InputError
        Not confirmed.
    """
    lines = limits_lines(config)
    if not lines:
        return "none: this config does not stimulate"
    output("Stimulation settings and limits of this config:")
    for line in lines:
        output(f"  {line}")
    if yes:
        return "confirmed with --yes"
    try:
        answer = input("Are these stimulation limits right for this patient? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise InputError(
            "the stimulation limits were not confirmed; nothing was written (answer y, "
            "or pass --yes)"
        )
    return "confirmed at the terminal"


def run_terminal(
    config: Config,
    source: Source,
    schedule: Schedule,
    *,
    output: Callable[[str], object] = print,
) -> tuple[Result, list[Step]]:
    """Guide the calibration on the terminal; returns the result and the steps."""
    steps = build_steps(schedule, config.muscle_names)
    shown: set[str] = set()

    def on_step(step: Step) -> None:
        if step.muscle and step.muscle not in shown:
            shown.add(step.muscle)
            m = config.muscle(step.muscle)
            output(f"--- {m.name}: electrodes: {m.placement or '(no placement note)'}"
                   + (f" [picture: {m.picture}]" if m.picture else ""))
        output(f"[{step.start_s:6.1f} s] {step.text} ({step.duration_s:g} s)")

    output(f"Calibration of {', '.join(config.muscle_names)}: "
           f"{total_s(steps):.0f} s. Follow the cues.")
    with source:
        rec = acquire(source, config, steps, on_step=on_step)
    result = analyse(rec, steps, config, schedule)
    for m in result.muscles:
        output(m.summary(result.units))
        for w in m.warnings:
            output(f"  warning: {w}")
    return result, steps


def _store(config: Config, result: Result | None, args: argparse.Namespace, *, started: str,
           duration_s: float, operator: str | None, written: Path | None) -> None:
    """Add the calibration to the patient record and say how that went (a patient only)."""
    if not config.patient or result is None:
        return
    record = calibration_record(config, result, started=started, duration_s=duration_s,
                                operator=operator, written=written)
    _, line = save(record, resolve_path(getattr(args, "db", None)))
    print(f"closedloop calibrate: patient record: {line}",
          file=sys.stdout if line.startswith("saved") else sys.stderr)
