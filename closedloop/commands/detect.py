"""``closedloop detect INPUT --out EVENTS.csv``: the detector offline over a file.

Parse, claim the events file (never over an existing one without ``--overwrite``, never
over an input), load the EMG (:func:`closedloop.io.files.load_emg`), run the config's
detector through :func:`closedloop.analysis.detect.detect` and write
:func:`~closedloop.analysis.detect.events_csv`; one summary line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from closedloop.analysis.detect import detect, events_csv, select_channels
from closedloop.config import default_config, load_config
from closedloop.io.files import load_emg
from closedloop.io.outfile import claim_output, write_whole


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop detect``; returns the exit code (0: the events were written).

    ``args`` attributes: ``input``, ``out``, ``overwrite``, ``config`` (None: default
    settings on every channel), ``fs`` (text input), ``columns`` (list of 0-based
    columns, or their text form ``"0,2"``; text, XDF, EDF/BDF), ``board`` (BrainFlow
    file), ``stream`` (XDF). A note of the reader (signals of an EDF/BDF file that are
    not EMG) ends the summary line.
    """
    columns = args.columns
    if isinstance(columns, str):  # called as a library with the text form
        columns = [int(c) for c in columns.split(",")]
    with claim_output(args.out, overwrite=getattr(args, "overwrite", False),
                      inputs=[("input", args.input), ("config", args.config)],
                      what="events file"):
        data = load_emg(args.input, fs=args.fs, columns=columns, board=args.board,
                        stream=getattr(args, "stream", None))
        if args.config:
            config = load_config(args.config)
            data = select_channels(data, config)
        else:
            config = default_config(data.channels)
        events = detect(data, config)
        write_whole(args.out, events_csv(events), what="events file")
    n_on = sum(e.kind == "onset" for e in events)
    print(
        f"{data.source}: {data.samples.shape[1]} channel(s), {data.duration_s:.1f} s at "
        f"{data.fs:g} Hz -> {n_on} onset(s), {len(events) - n_on} offset(s) in {args.out}"
        + (f" ({data.note})" if data.note else ""),
        file=sys.stderr,
    )
    return 0
