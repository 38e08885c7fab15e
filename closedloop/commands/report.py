"""``closedloop report FILE.xdf [--out FILE.html] [--overwrite]``: a session's HTML page.

Parse, claim the page (never over an existing file without ``--overwrite``, never over
the recording), load the recording (:func:`closedloop.io.xdf.load_session`) and write
:func:`closedloop.analysis.report.build_report`; a damaged recording still gets its
report, with a warning on stderr that it covers the intact part only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from closedloop.analysis.report import build_report
from closedloop.core.pipeline import check_rate
from closedloop.errors import InputError
from closedloop.io.outfile import claim_output
from closedloop.io.xdf import load_session


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop report``; returns the exit code (0: the page was written).

    ``args`` attributes: ``input`` (the XDF file), ``out`` (the HTML file to write;
    default: the input with ``.html``), ``overwrite`` (replace an existing report).
    """
    out = getattr(args, "out", None) or Path(args.input).with_suffix(".html")
    with claim_output(out, overwrite=getattr(args, "overwrite", False),
                      inputs=[("recording", args.input)], what="report"):
        session = load_session(args.input)
        if not (session.fs > 0):
            raise InputError(
                f"{args.input}: the EMG stream {session.name!r} has an irregular rate (no "
                "nominal sampling rate), and closedloop's filters and detector need a fixed "
                "one; a report needs EMG recorded from a stream with a nominal rate")
        try:
            check_rate(session.fs)
        except InputError as exc:
            raise InputError(f"{args.input}: {exc}") from None
        path = build_report(session, out)
        if session.damage:  # a crashed session is worth a report, but it must say so
            print(f"{args.input}: WARNING: {session.damage_report}\nThe report covers the "
                  "intact part only.", file=sys.stderr)
    print(f"{args.input}: report written to {path}", file=sys.stderr)
    return 0
