"""Writing XDF files the way LabRecorder does, for tests and benchmarks.

Sessions are recorded by LabRecorderCLI (:mod:`closedloop.io.recorder`); this writer
exists to make files of any size and format without LSL: long recordings for
benchmarks, and files to damage on purpose in tests. It follows LabRecorder's layout
(``xdfwriter.h`` and ``recording.cpp`` of App-LabRecorder): a file header, the stream
headers, then per stream a one-sample chunk with the first sample and chunks of what
each 0.5 s pull returned, a ClockOffset chunk per stream every 5 s, a Boundary chunk
every 10 s, and a footer per stream with ``first_timestamp``, ``last_timestamp``,
``sample_count`` and the clock offsets. A sample's timestamp is left out when it equals
the previous one plus ``1 / nominal_srate`` exactly, with LabRecorder's bookkeeping
(after a left-out timestamp its "previous" is that timestamp plus the interval, so the
next one is written), and a timestamp of exactly 0.0 is always left out.

:class:`SessionFile` records a session's :class:`~closedloop.io.outlets.SessionOutlets`
straight into such a file (their ``outlet_factory``): the streams ``closedloop run
--record`` records, faster than real time (``closedloop bench --replay`` makes its
session so).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape

import numpy as np

from closedloop.io.xdfreader import (
    BOUNDARY_UUID,
    DTYPES,
    MAGIC,
    TAG_BOUNDARY,
    TAG_CLOCKOFFSET,
    TAG_FILEHEADER,
    TAG_FOOTER,
    TAG_SAMPLES,
    TAG_STREAMHEADER,
)


def _varlen(value: int) -> bytes:
    if value < 256:
        return struct.pack("<BB", 1, value)
    if value < 2**32:
        return struct.pack("<BI", 4, value)
    return struct.pack("<BQ", 8, value)


def stream_header_xml(name: str, type_: str, channel_count: int, nominal_srate: float,
                      channel_format: str, source_id: str = "", desc: str = "") -> str:
    """A stream header as liblsl writes it (``desc`` is inner XML of ``<desc>``)."""
    return (
        '<?xml version="1.0"?>\n<info>\n'
        f"\t<name>{escape(name)}</name>\n\t<type>{escape(type_)}</type>\n"
        f"\t<channel_count>{channel_count}</channel_count>\n"
        f"\t<channel_format>{channel_format}</channel_format>\n"
        f"\t<source_id>{escape(source_id)}</source_id>\n"
        f"\t<nominal_srate>{nominal_srate:.15f}</nominal_srate>\n"
        "\t<version>1.100000000000000</version>\n\t<created_at>0</created_at>\n"
        f"\t<uid>{escape(name)}-uid</uid>\n\t<session_id>default</session_id>\n"
        "\t<hostname>localhost</hostname>\n"
        f"\t<desc>{desc}</desc>\n</info>\n"
    )


def channels_desc(labels: Sequence[str], type_: str = "", unit: str = "") -> str:
    """``<channels>`` inner XML for :func:`stream_header_xml`."""
    rows = "".join(
        f"<channel><label>{escape(lab)}</label><type>{escape(type_)}</type>"
        f"<unit>{escape(unit)}</unit></channel>" for lab in labels)
    return f"<channels>{rows}</channels>"


@dataclass
class _Stream:
    sid: int
    fmt: str
    nch: int
    srate: float
    first: float | None = None
    last: float = 0.0  # LabRecorder's last_timestamp
    count: int = 0
    offsets: list[tuple[float, float]] = field(default_factory=list)
    omit: str = "labrecorder"


def omitted(ts: np.ndarray, interval: float, last: float) -> tuple[np.ndarray, float]:
    """Which timestamps LabRecorder leaves out, and its ``last_timestamp`` after them.

    LabRecorder, per sample: ``if last + interval == t: leave it out, last = t +
    interval; else: last = t``; ``last`` is its state before ``ts``. (A timestamp of
    exactly 0.0 is also written without its value: see :meth:`XdfWriter.samples`.)
    """
    ts = np.asarray(ts, dtype=np.float64)
    if ts.size == 0:
        return np.zeros(0, dtype=bool), last
    prev = ts[:-1]
    deducible = prev + interval == ts[1:]  # if the previous one was written
    if np.any((prev + interval) + interval == ts[1:]):  # rare: do it one by one
        return _loop(ts, interval, last)
    # then after a left-out timestamp the next one is always written: within each run
    # of deducible timestamps LabRecorder alternates, starting with leaving one out
    run = np.concatenate(([last + interval == ts[0]], deducible))
    starts = np.flatnonzero(np.diff(np.concatenate(([False], run)).astype(np.int8)) == 1)
    first = np.zeros(ts.size, dtype=np.int64)
    first[starts] = starts
    first = np.maximum.accumulate(first)
    out = run & ((np.arange(ts.size) - first) % 2 == 0)
    return out, float(ts[-1]) + interval if out[-1] else float(ts[-1])


def _loop(ts: np.ndarray, interval: float, last: float) -> tuple[np.ndarray, float]:
    out = np.zeros(ts.size, dtype=bool)
    for i, t in enumerate(ts.tolist()):
        if last + interval == t:
            out[i] = True
            last = t + interval
        else:
            last = t
    return out, last


class XdfWriter:
    """Write an XDF file chunk by chunk (see the module docstring).

    Use as a context manager; :meth:`close` writes the footers.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: BinaryIO = open(self.path, "xb")  # noqa: SIM115 - closed in close()
        self._streams: dict[int, _Stream] = {}
        self._f.write(MAGIC)
        self._chunk(TAG_FILEHEADER, b'<?xml version="1.0"?><info><version>1.0</version>'
                                    b"<datetime>2026-01-01T00:00:00+0000</datetime></info>")

    def _chunk(self, tag: int, content: bytes, sid: int | None = None) -> None:
        head = struct.pack("<H", tag) + (b"" if sid is None else struct.pack("<I", sid))
        self._f.write(_varlen(len(head) + len(content)) + head)
        self._f.write(content)

    def add_stream(self, sid: int, header_xml: str, *, omit: str = "labrecorder") -> None:
        """Write a stream header (see :func:`stream_header_xml`).

        ``omit`` says which timestamps are left out: ``"labrecorder"`` as LabRecorder
        does (module docstring), ``"deducible"`` every one that equals the previous
        plus the interval, ``"none"`` none (each sample carries its timestamp).
        """
        if omit not in ("labrecorder", "deducible", "none"):
            raise ValueError(f"omit={omit!r}")
        from xml.etree import ElementTree

        root = ElementTree.fromstring(header_xml)
        fmt = root.findtext("channel_format", "")
        if fmt not in DTYPES or sid in self._streams:
            raise ValueError(f"stream {sid}: format {fmt!r} or a repeated id")
        self._streams[sid] = _Stream(sid, fmt, int(root.findtext("channel_count", "0")),
                                     float(root.findtext("nominal_srate", "0")), omit=omit)
        self._chunk(TAG_STREAMHEADER, header_xml.encode("utf-8"), sid)

    def samples(self, sid: int, values: np.ndarray | Sequence[Sequence[str]],
                timestamps: np.ndarray) -> None:
        """Write one Samples chunk (a stream's first call writes its first sample as a
        chunk of its own, as LabRecorder does)."""
        s = self._streams[sid]
        ts = np.asarray(timestamps, dtype=np.float64)
        if ts.size == 0:
            return
        if s.first is None:
            s.first = float(ts[0])
            self._samples(s, values[:1], ts[:1], np.zeros(1, dtype=bool))
            s.last = float(ts[0])
            s.count += 1
            values, ts = values[1:], ts[1:]
            if ts.size == 0:
                return
        interval = 1.0 / s.srate if s.srate else 0.0
        if s.omit == "labrecorder":
            skip, s.last = omitted(ts, interval, s.last)
        elif s.omit == "deducible" and interval > 0:
            skip = np.concatenate(([s.last], ts[:-1])) + interval == ts
            s.last = float(ts[-1])
        else:
            skip, s.last = np.zeros(ts.size, dtype=bool), float(ts[-1])
        self._samples(s, values, ts, skip | (ts == 0.0))
        s.count += ts.size

    def _samples(self, s: _Stream, values, ts: np.ndarray, skip: np.ndarray) -> None:
        n = ts.size
        if s.fmt == "string":
            parts = [_varlen(n)]
            for i in range(n):
                parts.append(b"\x00" if skip[i] else b"\x08" + struct.pack("<d", ts[i]))
                for ch in range(s.nch):
                    raw = str(values[i][ch]).encode("utf-8")
                    parts.append(_varlen(len(raw)) + raw)
            self._chunk(TAG_SAMPLES, b"".join(parts), s.sid)
            return
        dtype = np.dtype(DTYPES[s.fmt])
        vals = np.ascontiguousarray(np.asarray(values), dtype=dtype).reshape(n, s.nch)
        nbytes = s.nch * dtype.itemsize
        size = 1 + nbytes + np.where(skip, 0, 8)
        start = np.concatenate(([0], np.cumsum(size)[:-1]))
        buf = np.zeros(int(size.sum()), dtype=np.uint8)
        buf[start] = np.where(skip, 0, 8)
        stamped = ~skip
        _scatter(buf, start[stamped] + 1, ts[stamped].astype("<f8").view(np.uint8).reshape(-1, 8))
        _scatter(buf, start + 1 + np.where(skip, 0, 8), vals.view(np.uint8).reshape(n, nbytes))
        self._chunk(TAG_SAMPLES, _varlen(n) + buf.tobytes(), s.sid)

    def clock_offset(self, sid: int, collection_time: float, offset: float) -> None:
        """Write a ClockOffset chunk."""
        self._streams[sid].offsets.append((collection_time - offset, offset))
        self._chunk(TAG_CLOCKOFFSET, struct.pack("<dd", collection_time, offset), sid)

    def boundary(self) -> None:
        """Write a Boundary chunk."""
        self._chunk(TAG_BOUNDARY, BOUNDARY_UUID)

    def close(self) -> None:
        """Write every stream's footer and close the file. Idempotent."""
        if self._f.closed:
            return
        for s in self._streams.values():
            offs = "".join(f"<offset><time>{t!r}</time><value>{v!r}</value></offset>"
                           for t, v in s.offsets)
            xml = ('<?xml version="1.0"?><info><first_timestamp>'
                   f"{s.first if s.first is not None else 0.0!r}</first_timestamp>"
                   f"<last_timestamp>{s.last!r}</last_timestamp>"
                   f"<sample_count>{s.count}</sample_count>"
                   f"<clock_offsets>{offs}</clock_offsets></info>")
            self._chunk(TAG_FOOTER, xml.encode("utf-8"), s.sid)
        self._f.close()

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SessionFile:
    """A session's streams written straight into an XDF file, as LabRecorder records them.

    :class:`~closedloop.io.outlets.SessionOutlets` publishes through LSL outlets that
    LabRecorder records; given ``outlet_factory=SessionFile(path).outlet`` it writes the
    same streams (the same headers, with ``desc``, the same samples and timestamps, the
    same channel formats) into ``path`` without LSL, faster than real time: what a
    benchmark or a test needs to make a long session as ``closedloop run --record``
    records it. The layout is LabRecorder's (see :class:`XdfWriter`): a chunk per
    stream for each ``pull_s`` of the first regular stream's samples (LabRecorder pulls
    every 0.5 s of wall clock), a clock-offset chunk per stream every 10 pulls and a
    boundary chunk every 20.

    Use as a context manager, or :meth:`close` it after the outlets' last push.
    """

    def __init__(self, path: str | Path, *, pull_s: float = 0.5) -> None:
        self.writer = XdfWriter(path)
        self.path = self.writer.path
        self.pull_s = float(pull_s)
        self._outlets: list[_FileOutlet] = []
        self._pulls = 0

    def outlet(self, info) -> _FileOutlet:  # noqa: ANN001 - a pylsl.StreamInfo
        """A stand-in for ``pylsl.StreamOutlet(info)`` that writes into this file."""
        sid = len(self._outlets) + 1
        self.writer.add_stream(sid, info.as_xml())
        s = self.writer._streams[sid]
        out = _FileOutlet(self, sid, s.fmt, s.nch, s.srate)
        self._outlets.append(out)
        return out

    def _due(self, outlet: _FileOutlet) -> None:
        """A pull when the first regular stream holds ``pull_s`` of samples."""
        first = next((o for o in self._outlets if o.srate > 0), None)
        if outlet is first and outlet.pending >= self.pull_s * outlet.srate:
            self.pull()

    def pull(self) -> None:
        """Write what every stream holds, one chunk each (LabRecorder's pull)."""
        for o in self._outlets:
            o.flush()
        self._pulls += 1
        if self._pulls % 10 == 0:
            for o in self._outlets:
                if o.last_time is not None:
                    self.writer.clock_offset(o.sid, o.last_time, 0.0)
        if self._pulls % 20 == 0:
            self.writer.boundary()

    def close(self) -> None:
        """Write what is held, the footers, and close the file. Idempotent."""
        if not self.writer._f.closed:
            self.pull()
            self.writer.close()

    def __enter__(self) -> SessionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FileOutlet:
    """What :class:`SessionFile` hands out for one stream: ``push_chunk``,
    ``push_sample`` and ``wait_for_consumers`` of a ``pylsl.StreamOutlet``."""

    def __init__(self, file: SessionFile, sid: int, fmt: str, nch: int, srate: float) -> None:
        self.file, self.sid, self.fmt, self.nch, self.srate = file, sid, fmt, nch, srate
        self._values: list = []
        self._times: list[np.ndarray] = []
        self.pending = 0
        self.last_time: float | None = None

    def push_chunk(self, x, timestamp) -> None:  # noqa: ANN001 - as pylsl's
        ts = np.asarray(timestamp, dtype=np.float64).reshape(-1)
        if self.fmt == "string":
            self._values.extend(list(row) for row in x)
        else:
            # as pylsl: the values in the stream's own format
            self._values.append(np.asarray(x, dtype=DTYPES[self.fmt]).reshape(ts.size, self.nch))
        self._times.append(ts)
        self.pending += ts.size
        if ts.size:
            self.last_time = float(ts[-1])
        self.file._due(self)

    def push_sample(self, x, timestamp: float) -> None:  # noqa: ANN001 - as pylsl's
        self.push_chunk([x], [timestamp])

    def wait_for_consumers(self, timeout: float) -> bool:  # noqa: ARG002 - as pylsl's
        return True

    def flush(self) -> None:
        if not self.pending:
            return
        ts = np.concatenate(self._times)
        values = self._values if self.fmt == "string" else np.concatenate(self._values)
        self.file.writer.samples(self.sid, values, ts)
        self._values, self._times, self.pending = [], [], 0


def _scatter(buf: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> None:
    """Write each row of bytes at its offset of ``buf``."""
    if offsets.size == 0:
        return
    nb = rows.shape[1]
    windows = np.lib.stride_tricks.as_strided(buf, shape=(buf.size - nb + 1, nb),
                                              strides=(1, 1))
    windows.view(np.dtype((np.void, nb)))[offsets, 0] = \
        np.ascontiguousarray(rows).view(np.dtype((np.void, nb)))[:, 0]


def synthetic_session(path: str | Path, *, minutes: float = 1.0, channels: int = 2,
                      fs: float = 2000.0, seed: int = 0, t0: float = 11022.053450355,
                      fmt: str = "double64") -> dict[str, int]:
    """Write a recording laid out as closedloop's sessions are (LabRecorder's chunking).

    Streams, as :class:`~closedloop.io.outlets.SessionOutlets` publishes them: EMG
    (``channels`` plus ``counter``, at ``fs``, stream times ``t0 + k / fs``), envelope,
    thresholds (one row per 20 ms block), events, stimulation commands and trial markers
    (JSON with ``seq``) and the session stream (config and metadata in its header). The
    signal is noise with a burst every 5 s; events, commands and markers mark the bursts
    but are not what the detector would decide (this file is for speed and structure,
    not for ``replay --check``).

    Returns
    -------
    dict of str to int
        Samples (or markers) per stream name.
    """
    rng = np.random.default_rng(seed)
    uid = f"synthetic{seed}"
    labels = [f"m{c + 1}" for c in range(channels)]
    name = "synthetic"

    def desc(role: str, chans: list[str] | None = None, extra: str = "") -> str:
        d = channels_desc(chans, role, "uV") if chans else ""
        return (f"{d}<closedloop><version>0</version><session>{name}</session>"
                f"<session_uid>{uid}</session_uid><role>{role}</role>{extra}</closedloop>")

    meta = escape(f'{{"session": "{name}", "session_uid": "{uid}"}}')
    specs = [
        (1, "EMG", "EMG", channels + 1, fs, fmt, desc("emg", [*labels, "counter"])),
        (2, "Envelope", "Envelope", channels + 1, fs, fmt,
         desc("envelope", [*labels, "counter"])),
        (3, "Thresholds", "Thresholds", 2 * channels + 2, 0.0, "double64",
         desc("thresholds", [f"{m}_{k}" for k in ("on", "off") for m in labels]
              + ["sample", "counter"])),
        (4, "Events", "Markers", 1, 0.0, "string", desc("events")),
        (5, "Stim", "Markers", 1, 0.0, "string", desc("stim")),
        (6, "Markers", "Markers", 1, 0.0, "string", desc("markers")),
        (7, "Session", "SessionInfo", 1, 0.0, "string",
         desc("session", extra=f"<config>[session]\nname = \"{name}\"\n</config>"
                               f"<metadata>{meta}</metadata>")),
    ]
    n_total = int(round(minutes * 60 * fs))
    per_pull = int(round(0.5 * fs))
    block = max(1, int(round(0.02 * fs)))
    seq = {4: 0, 5: 0, 6: 0}
    with XdfWriter(path) as w:
        for sid, suffix, typ, nch, rate, f, d in specs:
            w.add_stream(sid, stream_header_xml(f"{name}-{suffix}", typ, nch, rate, f,
                                                f"closedloop.{uid}.{suffix.lower()}", d))
        for pull, a in enumerate(range(0, n_total, per_pull)):  # LabRecorder pulls every 0.5 s
            b = min(n_total, a + per_pull)
            k = np.arange(a, b)
            ts = t0 + k / fs
            burst = (k / fs) % 5.0 < 1.0
            emg = rng.normal(0.0, 5.0, (k.size, channels)) * np.where(burst, 20.0, 1.0)[:, None]
            w.samples(1, np.column_stack([emg, k]), ts)
            w.samples(2, np.column_stack([np.abs(emg), k]), ts)
            starts = np.arange(a - a % block + block - 1, b, block)
            thr = np.column_stack([np.full((starts.size, 2 * channels), 3.0), starts, starts])
            w.samples(3, thr, t0 + starts / fs)
            onsets = k[(k % int(5 * fs)) == 0]
            for sid, encode in ((4, _event), (5, _command), (6, _marker)):
                texts = [[encode(int(o), t0 + o / fs, labels[0], seq[sid] + i)]
                         for i, o in enumerate(onsets)]
                seq[sid] += len(texts)
                w.samples(sid, texts, t0 + onsets / fs)
            if pull % 10 == 9:
                for sid, *_ in specs:
                    w.clock_offset(sid, t0 + b / fs, -2e-5)
            if pull % 20 == 19:
                w.boundary()
        w.samples(7, [['{"seq": 0, "label": "session"}']], [t0])
        counts = {f"{name}-{suffix}": w._streams[sid].count for sid, suffix, *_ in specs}
    return counts


def _event(sample: int, time: float, channel: str, seq: int) -> str:
    from closedloop.core.events import Event
    from closedloop.io.outlets import encode_event

    return encode_event(Event(sample, time, channel, "onset", 100.0, 30.0), seq)


def _command(sample: int, time: float, channel: str, seq: int) -> str:
    from closedloop.io.outlets import encode_command
    from closedloop.stim.commands import StimCommand

    return encode_command(StimCommand(channel, 1, 10.0, 300.0, 35.0, sample, time, "plateau",
                                      effective_sample=sample), seq)


def _marker(sample: int, time: float, channel: str, seq: int) -> str:
    from closedloop.io.outlets import Marker, encode_marker

    return encode_marker(Marker("cue", time, sample, {"trial": seq, "muscle": channel}), seq)
