"""``closedloop evaluate``: detectors against reference onsets, as a table.

Parse the inputs (recordings, folders, the shared data folder, ``--simulate`` SNRs),
score every detector with :func:`closedloop.analysis.evaluate.evaluate` (all local
cores, or ``--cluster``), print the table and write it when asked: ``--format`` to the
terminal, ``--out FILE`` to a file that is never replaced without ``--overwrite``;
``--json`` adds the rows as one JSON object on the last line. ``--splice`` scores the
spliced trials of :func:`~closedloop.analysis.evaluate.splice_evaluate` instead. A
recording that cannot be scored is reported and the others still are; the exit code is
then the worst failure's, as ``replay`` and ``export`` do (7 for a recording or labels
that cannot be read, 1 for an unexpected error).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from closedloop.analysis.evaluate import (
    BUILTIN_DETECTORS,
    SPLICE_SNRS,
    SimSpec,
    evaluate,
    format_splice_table,
    format_table,
    render,
    splice_evaluate,
)
from closedloop.analysis.results import Bootstrap, choose_format
from closedloop.errors import ConfigError, InputError
from closedloop.io.outfile import claim_output, files_of, write_whole


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop evaluate``; returns the exit code (0; the worst failed recording's).

    ``args`` attributes: ``inputs`` (paths), ``detectors`` (specs; default every built-in
    detector), ``labels``, ``fs``, ``jobs``, ``json``, ``simulate`` (SNRs in dB,
    ``"20,10,0,-3"`` or a list), ``minutes``, ``seed``; optional ``format``, ``out``,
    ``overwrite``, ``bootstrap``, ``bootstrap_seed``, ``cluster``, ``truth_label``,
    ``splice`` (SNRs) and ``seeds``.
    """
    inputs: list[Any] = list(getattr(args, "inputs", None) or [])
    if getattr(args, "splice", None) is not None:
        if getattr(args, "out", None) or getattr(args, "format", None):
            raise ConfigError("--splice prints its own table: --out and --format do not "
                              "apply to it (use --json for the rows, or redirect the output "
                              "to a file)")
        return _splice(args, inputs)
    minutes = float(getattr(args, "minutes", None) or 5.0)
    seed = int(getattr(args, "seed", None) or 0)
    inputs += [SimSpec(snr, minutes, seed) for snr in _floats(getattr(args, "simulate", None))]
    if not inputs:
        raise InputError("nothing to evaluate: give recordings, folders of recordings, the "
                         "shared data folder, or --simulate SNR[,SNR...]")
    out = getattr(args, "out", None)
    fmt = choose_format(getattr(args, "format", None), out)
    if not out:
        return _evaluate(args, inputs, fmt, None)
    # claimed before anything is scored: never one of the inputs, even with --overwrite
    detectors = [d for d in (getattr(args, "detectors", None) or []) if isinstance(d, str)
                 and d.strip().lower().endswith(".toml")]
    claimed = (files_of("recording", [i for i in inputs if isinstance(i, (str, Path))])
               + files_of("labels", [getattr(args, "labels", None)])
               + files_of("detector config", detectors))
    with claim_output(out, overwrite=bool(getattr(args, "overwrite", False)), inputs=claimed,
                      what="results file"):
        return _evaluate(args, inputs, fmt, out)


def _evaluate(args: argparse.Namespace, inputs: list[Any], fmt: str, out: str | None) -> int:
    boot = Bootstrap(int(getattr(args, "bootstrap", None) if getattr(args, "bootstrap", None)
                         is not None else 2000),
                     int(getattr(args, "bootstrap_seed", None) or 0))
    detectors = list(getattr(args, "detectors", None) or BUILTIN_DETECTORS)
    rows = evaluate(inputs, detectors, labels=getattr(args, "labels", None),
                    jobs=getattr(args, "jobs", None), fs=getattr(args, "fs", None),
                    bootstrap=boot, cluster=getattr(args, "cluster", None),
                    truth_label=getattr(args, "truth_label", None) or "truth",
                    on_error="report")
    if out:
        write_whole(out, render(rows, fmt, boot), what="results file")
        print(format_table(rows))
        print(f"closedloop evaluate: {len(rows)} rows written to {out} ({fmt})",
              file=sys.stderr)
    else:
        print(render(rows, fmt, boot), end="")
    if getattr(args, "json", False):
        print(json.dumps({"rows": [r.as_dict() for r in rows]}))
    sys.stdout.flush()
    failed = [r for r in rows if r.error]
    # a recording refused (unreadable, bad labels) fails every detector alike: said once
    detectors: dict[tuple[str, str], list[str]] = {}
    for r in failed:
        detectors.setdefault((r.recording, r.error), []).append(r.detector)
    for (recording, error), names in detectors.items():
        print(f"closedloop evaluate: {recording} ({', '.join(names)}) failed: {error}",
              file=sys.stderr)
    return max((r.exit_code for r in failed), default=0)


def parse_seeds(text: str | Sequence[int] | None) -> tuple[int, ...]:
    """The seeds of ``--seeds``: ``"100-109"``, ``"0,1,2"`` or a list.

    None gives the report seeds of :data:`closedloop.analysis.splice.REPORT_SEEDS`.

    Raises
    ------
    InputError
        A part is not a seed or a low-high range of seeds >= 0, or none is given.
    """
    from closedloop.analysis.splice import REPORT_SEEDS

    if text is None:
        return REPORT_SEEDS
    if not isinstance(text, str):
        return tuple(int(x) for x in text)
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, dash, b = part.partition("-")
        try:
            lo = int(a)
            hi = int(b) if dash else lo
        except ValueError:
            raise InputError(f"--seeds {text!r}: {part!r} is not a seed or a range like "
                             "100-109") from None
        if lo < 0 or hi < lo:
            raise InputError(f"--seeds {text!r}: {part!r} must be seeds >= 0, low-high")
        out.extend(range(lo, hi + 1))
    if not out:
        raise InputError(f"--seeds {text!r}: no seed given")
    return tuple(out)


def _splice(args: argparse.Namespace, inputs: list[Any]) -> int:
    """``closedloop evaluate [DATA] --splice [SNRS] [--seeds S] [--detector D]... [--json]``."""
    if len(inputs) > 1:
        raise InputError("--splice takes one input: the shared data folder (default "
                         "../shared/data)")
    data_dir = Path(inputs[0]) if inputs else Path("..") / "shared" / "data"
    snrs = _floats(args.splice) or list(SPLICE_SNRS)
    detectors = list(getattr(args, "detectors", None) or BUILTIN_DETECTORS)
    rows = splice_evaluate(data_dir, detectors, snrs=snrs,
                           seeds=parse_seeds(getattr(args, "seeds", None)),
                           jobs=getattr(args, "jobs", None))
    print(format_splice_table(rows))
    if getattr(args, "json", False):
        print(json.dumps({"splice": [r.as_dict() for r in rows]}))
    sys.stdout.flush()
    return 0


def _floats(v: Any) -> list[float]:
    """Numbers of an option given as text (``"20,10"``), a number or a list of either."""
    if v is None:
        return []
    if isinstance(v, str):
        return [float(t) for t in v.split(",") if t.strip()]
    if isinstance(v, (int, float)):
        return [float(v)]
    out: list[float] = []
    for item in v:
        out.extend(_floats(item))
    return out
