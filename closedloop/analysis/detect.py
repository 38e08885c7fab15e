"""The detector run offline over a file, events to CSV (``closedloop detect``).

The same :class:`~closedloop.core.pipeline.Pipeline` as the live loop, fed the whole
file in chunks of the session's chunk size, so the events are the ones a live session
would have decided (chunking changes nothing).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from closedloop.config import Config
from closedloop.core.events import Event
from closedloop.core.pipeline import Pipeline
from closedloop.io.files import EmgData


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


def events_csv(events: list[Event]) -> str:
    """``sample,time_s,channel,kind``, one row per event, in sample order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["sample", "time_s", "channel", "kind"])
    for e in events:
        w.writerow([e.sample, f"{e.time:.6f}", e.channel, e.kind])
    return buf.getvalue()


def write_events_csv(events: list[Event], path: str | Path, *, overwrite: bool = False) -> None:
    """Write :func:`events_csv` to ``path``; an existing file is kept unless ``overwrite``.

    Raises
    ------
    InputError
        The file exists, or cannot be written.
    """
    from closedloop.analysis.results import write_output

    write_output(events_csv(events), path, overwrite=overwrite)

