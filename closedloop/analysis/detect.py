"""``closedloop detect``: the detector run offline over a file, events to CSV.

The same :class:`~closedloop.core.pipeline.Pipeline` as the live loop, fed the whole
file in chunks of the session's chunk size, so the events are the ones a live session
would have decided (chunking changes nothing).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from closedloop.config import Config, default_config, load_config
from closedloop.core.events import Event
from closedloop.core.pipeline import Pipeline
from closedloop.io.files import EmgData, load_emg
from closedloop.io.outfile import claim_output


def select_channels(data: EmgData, config: Config) -> EmgData:
    """Pick and order the config's muscles' channels (by label or 0-based index)."""
    cols = config.columns(data.channels, data.source)
    return EmgData(data.samples[:, cols], data.fs, config.muscle_names, data.source)


def detect(data: EmgData, config: Config, chunk: int | None = None) -> list[Event]:
    """All events of the config's detector over ``data``."""
    if chunk is None:
        chunk = max(1, int(round(config.session.chunk_ms * data.fs / 1000.0)))
    events: list[Event] = []
    pipe = Pipeline(data.fs, data.channels, config)
    for i in range(0, data.samples.shape[0], chunk):
        events.extend(pipe.process(data.samples[i : i + chunk]).events)
    return events


def write_events_csv(events: list[Event], path: str | Path) -> None:
    """``sample,time_s,channel,kind``, one row per event, in sample order."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sample", "time_s", "channel", "kind"])
        for e in events:
            w.writerow([e.sample, f"{e.time:.6f}", e.channel, e.kind])


def main(args) -> int:
    """``closedloop detect INPUT --out EVENTS.csv [--overwrite] [--config C] [--fs HZ]
    [--columns 0,1] [--board NAME]``."""
    columns = args.columns
    if isinstance(columns, str):  # called as a library with the text form
        columns = [int(c) for c in columns.split(",")]
    with claim_output(args.out, overwrite=getattr(args, "overwrite", False),
                      inputs=[("input", args.input), ("config", args.config)],
                      what="events file"):
        data = load_emg(args.input, fs=args.fs, columns=columns, board=args.board)
        if args.config:
            config = load_config(args.config)
            data = select_channels(data, config)
        else:
            config = default_config(data.channels)
        events = detect(data, config)
        write_events_csv(events, args.out)
    n_on = sum(e.kind == "onset" for e in events)
    print(
        f"{data.source}: {data.samples.shape[1]} channel(s), {data.duration_s:.1f} s at "
        f"{data.fs:g} Hz -> {n_on} onset(s), {len(events) - n_on} offset(s) in {args.out}",
        file=sys.stderr,
    )
    return 0
