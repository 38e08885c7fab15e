"""``closedloop export FILE.xdf... --bids ROOT --subject S [--session N]``: EMG-BIDS.

Parse, plan where each recording goes (:class:`~closedloop.io.bids.BidsTarget`), refuse
before writing anything if a target file exists, write the dataset-level files, export
every recording through :func:`closedloop.runtime.batch.run_batch` (all local cores, or
``--cluster``) and print one line per recording, in input order (and one more per
channel whose NaN/inf or implausible samples the BDF holds filled or clipped). Several recordings of
one subject, session and task get runs 1, 2, ... (or from ``--run``). A recording that
fails is reported; the others are still exported, and the exit code is the worst
failure's (:data:`closedloop.errors.EXIT_CODES`: 7 a recording that cannot be read, 9 a
damaged one, 1 an unexpected error).
"""

from __future__ import annotations

import sys
from pathlib import Path

from closedloop.errors import ClosedLoopError, ConfigError
from closedloop.io.bids import (
    BidsTarget,
    ExportTask,
    check_label,
    export_recording,
    planned_files,
    prepare_dataset,
    require_writer,
    task_label,
)
from closedloop.runtime.batch import run_batch


def _task_label(args, path: str) -> str:
    if args.task:
        return check_label("task", args.task)
    from closedloop.io.recorded import recorded_config
    from closedloop.io.xdf import load_session

    return task_label(recorded_config(load_session(path, emg_stream=args.stream), args.config))


def main(args) -> int:
    """Run ``closedloop export``; returns the exit code (the worst file's)."""
    require_writer()
    subject = check_label("subject", args.subject)
    session = None if args.session is None else check_label("session", args.session)
    if args.run is not None and args.run < 0:
        raise ConfigError(f"--run {args.run}: a run index is a non-negative integer")
    if args.task:
        check_label("task", args.task)
    inputs = [str(Path(p).resolve()) if args.cluster else p for p in args.inputs]
    root = str(Path(args.bids).resolve()) if args.cluster else args.bids
    several = len(inputs) > 1
    tasks: list[ExportTask | None] = []
    failed: dict[int, ClosedLoopError] = {}
    counts: dict[str, int] = {}
    for i, p in enumerate(inputs):
        try:  # the task label comes from the recording's config unless given
            task = _task_label(args, p)
        except ClosedLoopError as exc:
            failed[i] = exc
            tasks.append(None)
            continue
        run = None
        if args.run is not None or several:
            run = (args.run if args.run is not None else 1) + counts.get(task, 0)
            counts[task] = counts.get(task, 0) + 1
        target = BidsTarget(root, subject, task, session, run)
        tasks.append(ExportTask(p, target, args.config, args.stream, args.emg_units))
    todo = [t for t in tasks if t is not None]
    taken = [f for t in todo for f in planned_files(t.target) if f.exists()]
    if taken:
        raise ConfigError(f"{taken[0]} already exists ({len(taken)} of the files to write do): "
                         "closedloop export never overwrites; choose another --session or "
                         "--run, or another --bids folder")
    if todo:
        for f in prepare_dataset(root, subject):
            print(f"closedloop export: wrote {f}", file=sys.stderr)
    results = iter(run_batch(export_recording, todo, jobs=args.jobs, cluster=args.cluster))
    rc = 0
    for i, (arg, task) in enumerate(zip(args.inputs, tasks, strict=True)):
        res = None if task is None else next(results)
        if res is None or not res.ok:
            error = failed[i] if res is None else res.exception
            rc = max(rc, error.exit_code if error is not None else ClosedLoopError.exit_code)
            print(f"{arg}: export FAILED: {failed[i] if res is None else res.error}")
            if res is not None and res.detail:
                print(res.detail, file=sys.stderr)
            continue
        e = res.value
        if e.damage:  # a crashed session's intact part is worth exporting, but it must say so
            print(f"{arg}: WARNING: {e.damage}\nOnly the intact part was exported.",
                  file=sys.stderr)
        pad = f", last record padded with {e.padded} samples" if e.padded else ""
        print(f"{arg}: {e.channels} channel(s), {e.duration_s:.1f} s at {e.fs:g} Hz, "
              f"{e.events} events -> {task.target.path('emg.bdf')}{pad} "
              f"({e.duration_s / e.seconds:.0f}x real time)")
        for r in e.replaced:  # what the BDF could not hold as recorded
            print(f"  {r.label}: {r.describe()}")
    return rc
