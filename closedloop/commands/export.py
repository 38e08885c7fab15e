"""``closedloop export FILE.xdf... --bids ROOT --subject S [--session N]``: EMG-BIDS.

Parse, plan where each recording goes (:class:`~closedloop.io.bids.BidsTarget`), refuse
before writing anything if a target file exists, write the dataset-level files, export
every recording through :func:`closedloop.runtime.batch.run_batch` (all local cores, or
``--cluster``) and print one line per recording, in input order. Several recordings of
one subject, session and task get runs 1, 2, ... (or from ``--run``). A recording that
fails is reported; the others are still exported (exit 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

from closedloop.errors import ConfigError, InputError
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
    require_writer()
    subject = check_label("subject", args.subject)
    session = None if args.session is None else check_label("session", args.session)
    if args.run is not None and args.run < 0:
        raise ConfigError(f"--run {args.run}: a run index is a non-negative integer")
    inputs = [str(Path(p).resolve()) if args.cluster else p for p in args.inputs]
    for p in inputs:
        if not Path(p).is_file():
            raise InputError(f"{p}: no such file")
    labels = [_task_label(args, p) for p in inputs]
    several = len(inputs) > 1
    root = str(Path(args.bids).resolve()) if args.cluster else args.bids
    tasks = []
    counts: dict[str, int] = {}
    for p, task in zip(inputs, labels, strict=True):
        run = None
        if args.run is not None or several:
            run = (args.run if args.run is not None else 1) + counts.get(task, 0)
            counts[task] = counts.get(task, 0) + 1
        target = BidsTarget(root, subject, task, session, run)
        tasks.append(ExportTask(p, target, args.config, args.stream, args.emg_units))
    planned = [f for t in tasks for f in planned_files(t.target)]
    taken = [f for f in planned if f.exists()]
    if taken:
        raise InputError(f"{taken[0]} already exists ({len(taken)} of the files to write do): "
                         "closedloop export never overwrites; choose another --session or "
                         "--run, or another --bids folder")
    for f in prepare_dataset(root, subject):
        print(f"closedloop export: wrote {f}", file=sys.stderr)
    results = run_batch(export_recording, tasks, jobs=args.jobs, cluster=args.cluster)
    rc = 0
    for arg, task, res in zip(args.inputs, tasks, results, strict=True):
        if not res.ok:
            rc = 1
            print(f"{arg}: export FAILED: {res.error}")
            if res.detail:
                print(res.detail, file=sys.stderr)
            continue
        e = res.value
        pad = f", last record padded with {e.padded} samples" if e.padded else ""
        print(f"{arg}: {e.channels} channel(s), {e.duration_s:.1f} s at {e.fs:g} Hz, "
              f"{e.events} events -> {task.target.path('emg.bdf')}{pad} "
              f"({e.duration_s / e.seconds:.0f}x real time)")
    return rc
