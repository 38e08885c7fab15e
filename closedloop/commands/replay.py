"""``closedloop replay``: recordings through the exact pipeline, configs side by side.

Parse, run every (recording, config) task through :func:`closedloop.runtime.batch.run_batch`
(all local cores, or ``--cluster``), print what each replay said in input order, and
write the table (:mod:`closedloop.analysis.replays`) when asked: ``--format`` to the
terminal, ``--out FILE`` to a file that is never replaced without ``--overwrite``.
Several configs print the side-by-side table on their own. The exit code is the worst
task's: 8 when ``--check`` found a difference, 1 when a file or config failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from closedloop.analysis.replays import (
    RECORDED,
    ReplayTask,
    failed_row,
    render,
    replay_table,
    replay_task,
)
from closedloop.analysis.results import Bootstrap, choose_format
from closedloop.io.outfile import claim_output, files_of, write_whole
from closedloop.runtime.batch import run_batch


def main(args) -> int:
    """Run ``closedloop replay``; returns the exit code (the worst task's).

    ``--out`` is claimed before anything is replayed: never one of the recordings or
    configs (not even with ``--overwrite``), never an existing file without it.
    """
    configs = [None if c in (None, RECORDED) else c for c in (args.configs or [None])]
    out = getattr(args, "out", None)
    fmt = choose_format(getattr(args, "format", None), out)
    if not out:
        return _main(args, configs, fmt, None)
    inputs = files_of("recording", args.inputs) + files_of("config", configs)
    with claim_output(out, overwrite=bool(args.overwrite), inputs=inputs,
                      what="results file"):
        return _main(args, configs, fmt, out)


def _main(args, configs: list[str | None], fmt: str, out: str | None) -> int:
    cluster = getattr(args, "cluster", None)
    boot = Bootstrap(int(getattr(args, "bootstrap", 2000)), int(getattr(args, "bootstrap_seed", 0)))
    single = len(args.inputs) * len(configs) == 1

    def where(path: str | None) -> str | None:  # a cluster's workers need absolute paths
        return str(Path(path).resolve()) if cluster and path else path

    # one local replay shows a progress bar (on a terminal only: ProgressBar writes
    # nothing into a pipe or a file, where it would be noise)
    bar = single and not args.quiet and not cluster
    partial = bool(getattr(args, "partial", False))
    tasks = [ReplayTask(where(p), where(c), args.speed, args.stream, bool(args.check),
                        progress=bar, name=p, partial=partial)
             for p in args.inputs for c in configs]
    results = run_batch(replay_task, tasks, jobs=getattr(args, "jobs", None), cluster=cluster)
    rows = []
    for task, res in zip(tasks, results, strict=True):
        code = getattr(res.exception, "exit_code", 1)
        rows.append(res.value if res.ok else failed_row(task, str(res.error), code))
        if res.detail:
            print(res.detail, file=sys.stderr)
    for row in rows:  # in input order, whatever finished first
        for line in row.lines:
            print(line)
    table = replay_table(rows, boot)
    if out:
        write_whole(out, render(table, fmt, boot), what="results file")
        print(f"closedloop replay: {len(table)} rows written to {out} ({fmt})", file=sys.stderr)
    elif fmt != "text" or len(configs) > 1:
        print(render(table, fmt, boot), end="")
    sys.stdout.flush()
    return max((r.exit_code for r in rows), default=0)
