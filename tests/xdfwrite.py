"""A minimal XDF writer, for recordings no LSL tool would make on purpose.

Writes the chunks of the XDF 1.0 format (https://github.com/sccn/xdf/wiki/Specifications):
the file header, one stream header per stream, its samples and its footer. Numeric
streams of ``float32`` or ``double64`` only; enough to hand a reader an irregular-rate
EMG stream or other oddities that a real recorder would not produce.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np


@dataclass
class XdfStream:
    """One numeric stream: ``samples`` (n, channels), ``timestamps`` (n,)."""

    name: str
    type: str
    samples: np.ndarray
    timestamps: np.ndarray
    nominal_srate: float
    channel_format: str = "float32"  # or "double64"
    labels: tuple[str, ...] = ()


def _chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return b"\x08" + struct.pack("<Q", len(body)) + body


def _header(stream_id: int, s: XdfStream) -> bytes:
    channels = "".join(f"<channel><label>{escape(lab)}</label></channel>" for lab in s.labels)
    xml = (f"<?xml version=\"1.0\"?><info><name>{escape(s.name)}</name>"
           f"<type>{escape(s.type)}</type><channel_count>{s.samples.shape[1]}</channel_count>"
           f"<nominal_srate>{s.nominal_srate:g}</nominal_srate>"
           f"<channel_format>{s.channel_format}</channel_format>"
           f"<source_id>{escape(s.name)}</source_id><created_at>0</created_at>"
           f"<desc><channels>{channels}</channels></desc></info>")
    return _chunk(2, struct.pack("<I", stream_id) + xml.encode())


def _samples(stream_id: int, s: XdfStream) -> bytes:
    fmt = {"float32": "<f4", "double64": "<f8"}[s.channel_format]
    n = s.samples.shape[0]
    out = bytearray(struct.pack("<I", stream_id) + b"\x04" + struct.pack("<I", n))
    values = np.ascontiguousarray(s.samples, dtype=fmt)
    for k in range(n):
        out += b"\x08" + struct.pack("<d", float(s.timestamps[k])) + values[k].tobytes()
    return _chunk(3, bytes(out))


def _footer(stream_id: int, s: XdfStream) -> bytes:
    ts = s.timestamps
    xml = (f"<?xml version=\"1.0\"?><info><first_timestamp>{ts[0]:.6f}</first_timestamp>"
           f"<last_timestamp>{ts[-1]:.6f}</last_timestamp>"
           f"<sample_count>{ts.shape[0]}</sample_count></info>")
    return _chunk(6, struct.pack("<I", stream_id) + xml.encode())


def write_xdf(path: str | Path, streams: list[XdfStream]) -> Path:
    """Write ``streams`` to ``path`` as one XDF file; returns the path."""
    data = bytearray(b"XDF:")
    data += _chunk(1, b"<?xml version=\"1.0\"?><info><version>1.0</version></info>")
    for i, s in enumerate(streams, 1):
        data += _header(i, s)
    for i, s in enumerate(streams, 1):
        data += _samples(i, s)
    for i, s in enumerate(streams, 1):
        data += _footer(i, s)
    p = Path(path)
    p.write_bytes(bytes(data))
    return p
