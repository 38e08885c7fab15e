"""A fast XDF reader that checks the file's structure and says what is damaged.

XDF 1.0 (https://github.com/sccn/xdf/wiki/Specifications) is a sequence of chunks after
the magic ``XDF:``. Each chunk is ``[NumLengthBytes: 1, 4 or 8][Length][Tag: uint16]
[Content]``, the length counting the tag and the content. Tags: 1 FileHeader (XML),
2 StreamHeader (``[StreamId: uint32]`` + XML), 3 Samples, 4 ClockOffset (``[StreamId]
[CollectionTime: double][OffsetValue: double]``), 5 Boundary (a fixed 16-byte UUID, written
every 10 s by LabRecorder so a reader can find its way again after damage), 6 StreamFooter
(``[StreamId]`` + XML with ``sample_count``). A Samples chunk is ``[StreamId]
[NumSamples: varlen]`` then per sample ``[TimeStampBytes: 0 or 8][TimeStamp: double, if
8]`` and the values (little-endian numbers, or per channel ``[varlen length][bytes]`` for
strings). A sample without a timestamp has the previous sample's plus ``1 / nominal_srate``.

Why a reader of our own
-----------------------
pyxdf parses numeric samples one by one (about 20 MB/s) and, on damage, scans forward to
the next boundary chunk without telling the caller: a file with a few flipped bytes loads
part of its samples and looks whole. Here:

* :func:`scan` walks the chunk structure (a few Python operations per chunk) and checks
  every chunk: length field, tag, stream id, XML, the arithmetic of a Samples chunk
  (``NumSamples`` samples of the stream's size, ``0`` or ``8`` timestamp bytes each, must
  fill the chunk), the boundary UUID, one header and at most one footer per stream. Each
  problem becomes a :class:`Damage` (``truncated``: the file ends inside a chunk or
  without the footers; ``corrupt``: broken structure inside the file) with the byte where
  it is; reading goes on after the next boundary chunk (or footer), so what follows is
  still counted.
* :func:`read` loads only the requested streams. The byte offset of every sample is
  found with numpy: a chunk whose length says all or none of its samples carry a
  timestamp has them at fixed strides; the others (LabRecorder leaves out a timestamp
  that equals the previous one plus the sampling interval) are walked sample by sample,
  but all chunks of the stream at once, one numpy step per sample index. Values and
  timestamps are then gathered in one vectorised step per stream, and left-out
  timestamps are deduced with the same floating-point operations as pyxdf (``previous +
  1 / srate``, one after the other), so the result is bit for bit what
  ``pyxdf.load_xdf(..., synchronize_clocks=False, dejitter_timestamps=False)`` returns
  for an intact file. String streams (markers) are parsed sample by sample.

XDF has no checksums: a flipped bit inside a sample value, a timestamp or an XML text
field that keeps the structure valid cannot be seen here (closedloop's per-stream
counters catch it in their own columns; see :func:`closedloop.io.xdf.load_session`).
"""

from __future__ import annotations

import gzip
import math
import mmap
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np

MAGIC = b"XDF:"
TAG_FILEHEADER = 1
TAG_STREAMHEADER = 2
TAG_SAMPLES = 3
TAG_CLOCKOFFSET = 4
TAG_BOUNDARY = 5
TAG_FOOTER = 6
#: Content of every Boundary chunk (XDF specification).
BOUNDARY_UUID = bytes.fromhex("43a546dccbf5410fb30ed5467383cbe4")
#: How LabRecorder starts every footer's XML (used to find footers again after damage).
_FOOTER_XML = b'<?xml version="1.0"?><info><first_timestamp>'

TRUNCATED = "truncated"
CORRUPT = "corrupt"

#: Little-endian dtype of each numeric channel format (None: strings).
DTYPES: dict[str, str | None] = {
    "double64": "<f8",
    "float32": "<f4",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "<i1",
    "string": None,
}
_NATIVE = {"double64": np.float64, "float32": np.float32, "int64": np.int64,
           "int32": np.int32, "int16": np.int16, "int8": np.int8}


@dataclass(frozen=True)
class Damage:
    """One place where the file is not what XDF says it must be.

    Attributes
    ----------
    kind : {"truncated", "corrupt"}
        ``truncated``: the file ends inside a chunk, or without its footers (the
        recorder did not finish it: a crash, a kill, a full disk). ``corrupt``: the
        structure is broken inside the file (bytes changed or lost).
    offset : int
        Byte of the file where the problem starts.
    message : str
        What is wrong there, for humans.
    resumed_at : int or None
        Byte where reading went on (after the next boundary chunk or at a footer);
        None when nothing after the damage could be read.
    sids : tuple of int, or None
        The streams whose samples it concerns: None when it may be any (the chunk
        structure was lost there, or the file ends), ``()`` when none (a file header,
        a boundary chunk's content, a clock offset).
    """

    kind: str
    offset: int
    message: str
    resumed_at: int | None = None
    sids: tuple[int, ...] | None = None

    def concerns(self, sids: Iterable[int]) -> bool:
        """Whether it may concern the samples of any of these streams."""
        return self.sids is None or bool(set(self.sids) & set(sids))


@dataclass
class StreamLayout:
    """Where one stream's data lies in the file (from :func:`scan`).

    Attributes
    ----------
    sid : int
        The stream id of its chunks.
    info : dict
        The header XML as pyxdf gives it (``{"name": ["..."], ...}``).
    fmt : str
        Channel format (a key of :data:`DTYPES`).
    nch : int
    srate : float
        Nominal rate (0: irregular).
    chunks : list of (int, int, int, int)
        Per Samples chunk: (chunk offset, offset of its first sample, end, samples).
    footer : dict or None
        The footer XML as pyxdf gives it.
    footer_offset : int or None
    clock_times, clock_values : list of float
        ClockOffset chunks, in file order.
    """

    sid: int
    info: dict[str, Any]
    fmt: str
    nch: int
    srate: float
    header_offset: int
    chunks: list[tuple[int, int, int, int]] = field(default_factory=list)
    footer: dict[str, Any] | None = None
    footer_offset: int | None = None
    clock_times: list[float] = field(default_factory=list)
    clock_values: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The stream's name."""
        return str(_text(self.info, "name"))

    @property
    def n_samples(self) -> int:
        """Samples in the readable chunks (before :func:`read` checked their bytes)."""
        return sum(c[3] for c in self.chunks)

    @property
    def footer_count(self) -> int | None:
        """``sample_count`` of the footer, when there is one with a readable number."""
        if self.footer is None:
            return None
        try:
            return int(_text(self.footer.get("info") or {}, "sample_count"))
        except (TypeError, ValueError):
            return None


@dataclass
class XdfLayout:
    """The structure of one XDF file, checked (from :func:`scan`).

    Attributes
    ----------
    path : Path
    size : int
        Bytes in the file.
    header : dict or None
        The file header as pyxdf gives it.
    streams : dict of int to StreamLayout
        In the order of their headers.
    damage : list of Damage
        Sorted by offset once :func:`read` has run (it may add damage found in samples).
    boundaries : int
        Boundary chunks read.
    cut_chunk : tuple of int, or None
        When the file ends inside a Samples chunk whose first samples are complete:
        (chunk offset, stream id, offset of its first sample, end of its last complete
        sample, complete samples). They are in the stream's ``chunks``.
    """

    path: Path
    size: int
    header: dict[str, Any] | None
    streams: dict[int, StreamLayout]
    damage: list[Damage]
    boundaries: int
    cut_chunk: tuple[int, int, int, int, int] | None = None
    _buf: Any = field(repr=False, default=None)

    @property
    def first_damage(self) -> int:
        """Byte offset of the first damage (the file size when there is none)."""
        return min((d.offset for d in self.damage), default=self.size)

    def close(self) -> None:
        """Release the file's memory map (arrays returned by :func:`read` are copies)."""
        buf, self._buf = self._buf, None
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:  # a view is still alive: the garbage collector closes it
                pass


# -- small helpers ------------------------------------------------------------------------
class _BadError(Exception):
    """A problem at ``offset``; ``cut``: the data ends before the thing that was read;
    ``sids``: the streams it concerns (see :attr:`Damage.sids`)."""

    def __init__(self, offset: int, message: str, *, cut: bool = False,
                 sids: tuple[int, ...] | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.cut = cut
        self.sids = sids


def _text(d: dict[str, Any], key: str, default: Any = None) -> Any:
    v = d.get(key)
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


def _xml2dict(t: ElementTree.Element) -> dict[str, Any]:
    """An attribute-less element as a dict of lists (the form pyxdf returns)."""
    children: dict[str, list[Any]] = {}
    for child in t:
        for k, v in _xml2dict(child).items():
            children.setdefault(k, []).append(v)
    return {t.tag: children or t.text}


_VARLEN = {1: "<B", 4: "<I", 8: "<Q"}


def _varlen(buf: Any, pos: int, end: int, what: str) -> tuple[int, int]:
    """(value, next offset) of the variable-length integer at ``pos``."""
    if pos >= end:
        raise _BadError(pos, f"{what} is missing", cut=True)
    nb = buf[pos]
    fmt = _VARLEN.get(nb)
    if fmt is None:
        raise _BadError(pos, f"{what} has an invalid byte count {nb} (must be 1, 4 or 8)")
    if pos + 1 + nb > end:
        raise _BadError(pos, f"{what} is cut off", cut=True)
    return struct.unpack_from(fmt, buf, pos + 1)[0], pos + 1 + nb


def _open(path: Path) -> Any:
    """The file's bytes: a read-only memory map (gzip files: read into memory)."""
    if path.suffix.lower() == ".xdfz" or path.name.lower().endswith(".xdf.gz"):
        with gzip.open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


# -- scanning -----------------------------------------------------------------------------
class _Scanner:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf = buf
        self.size = size
        self.header: dict[str, Any] | None = None
        self.streams: dict[int, StreamLayout] = {}
        self.damage: list[Damage] = []
        self.boundaries = 0
        self.cut_chunk: tuple[int, int, int, int, int] | None = None
        self.bad_headers: set[int] = set()  # stream ids whose header is unreadable

    def frame(self, pos: int) -> tuple[int, int, int]:
        """(tag, content offset, end) of the chunk at ``pos``."""
        length, body = _varlen(self.buf, pos, self.size, f"chunk length at byte {pos}")
        if length < 2:
            raise _BadError(pos, f"chunk at byte {pos} has length {length} (at least 2)")
        if body + 2 > self.size:
            raise _BadError(pos, f"chunk at byte {pos} is cut off", cut=True)
        tag = struct.unpack_from("<H", self.buf, body)[0]
        if not TAG_FILEHEADER <= tag <= TAG_FOOTER:
            raise _BadError(pos, f"chunk at byte {pos} has an unknown tag {tag}")
        end = body + length
        if end > self.size:
            raise _BadError(pos, f"chunk at byte {pos} (tag {tag}) claims {length} bytes, "
                            f"{end - self.size} more than the file holds", cut=True)
        return tag, body + 2, end

    def plausible(self, pos: int) -> bool:
        """A chunk can start at ``pos`` (or the file ends there)."""
        if pos == self.size:
            return True
        try:
            self.frame(pos)
        except _BadError:
            return False
        return True

    def resync(self, start: int) -> int | None:
        """Offset to read on from after damage at ``start``: just after the next boundary
        chunk, or the next footer chunk, whichever comes first; None if there is none."""
        found: list[int] = []
        b = self.buf.find(BOUNDARY_UUID, start)
        if b >= 0:
            found.append(b + len(BOUNDARY_UUID))
        x = self.buf.find(_FOOTER_XML, start)
        while x >= 0 and (not found or x < found[0]):
            for nb in (1, 4, 8):
                p = x - 6 - 1 - nb
                if p >= start and self.buf[p] == nb and self.plausible(p):
                    tag = struct.unpack_from("<H", self.buf, p + 1 + nb)[0]
                    if tag == TAG_FOOTER:
                        found.append(p)
                        break
            else:
                x = self.buf.find(_FOOTER_XML, x + 1)
                continue
            break
        return min(found) if found else None

    def run(self) -> None:
        pos = len(MAGIC)
        while pos < self.size:
            try:
                tag, body, end = self.frame(pos)
            except _BadError as bad:  # the chunk's frame is broken: find the structure again
                nxt = self.resync(pos + 1)
                if nxt is None and bad.cut:  # nothing readable follows: the file was cut
                    self.salvage(pos)
                    break
                self.damage.append(Damage(CORRUPT, bad.offset, bad.message, nxt))
                if nxt is None:
                    break
                if self.buf[nxt - len(BOUNDARY_UUID):nxt] == BOUNDARY_UUID:
                    self.boundaries += 1
                pos = nxt
                continue
            try:
                getattr(self, f"tag{tag}")(pos, body, end)
            except _BadError as bad:  # the content is wrong; read on after it if a chunk follows
                confined = self.plausible(end)
                nxt = end if confined else self.resync(pos + 1)
                self.damage.append(Damage(CORRUPT, bad.offset, bad.message, nxt,
                                          bad.sids if confined else None))
                if nxt is None:
                    break
                pos = nxt
                continue
            pos = end
        missing = [s.name for s in self.streams.values() if s.footer is None]
        if missing and not any(d.kind == TRUNCATED for d in self.damage):
            self.damage.append(Damage(
                TRUNCATED, self.size,
                f"the file ends without the footer of {len(missing)} of {len(self.streams)} "
                f"streams ({', '.join(repr(m) for m in missing[:8])}"
                f"{', ...' if len(missing) > 8 else ''}): the recorder did not finish it"))

    def salvage(self, pos: int) -> None:
        """The file ends inside the chunk at ``pos``: keep the complete samples of a cut
        Samples chunk, drop the rest."""
        kept, usable = "", pos
        try:
            length, body = _varlen(self.buf, pos, self.size, "length")
            tag = struct.unpack_from("<H", self.buf, body)[0] if body + 2 <= self.size else 0
            if tag == TAG_SAMPLES and body + 6 <= self.size:
                sid = struct.unpack_from("<I", self.buf, body + 2)[0]
                s = self.streams.get(sid)
                n, first = _varlen(self.buf, body + 6, self.size, "sample count")
                if s is not None:
                    starts, stop = _starts(s, self.buf, first, self.size, n, partial=True)
                    if starts.size:
                        s.chunks.append((pos, first, stop, int(starts.size)))
                        self.cut_chunk = (pos, sid, first, stop, int(starts.size))
                        usable = stop
                        kept = (f"; the first {starts.size} of its {n} samples of {s.name!r} "
                                "are complete and kept")
        except _BadError:
            pass
        self.damage.append(Damage(
            TRUNCATED, usable, f"the file ends inside the chunk at byte {pos} (cut short, "
                               f"{self.size - pos} bytes of it are there){kept}"))

    # one method per tag: (chunk offset, content offset after the tag, end)
    def tag1(self, pos: int, body: int, end: int) -> None:
        if self.header is not None:
            raise _BadError(pos, f"second file header at byte {pos}", sids=())
        try:
            self.header = _xml2dict(ElementTree.fromstring(bytes(self.buf[body:end])))
        except ElementTree.ParseError as exc:
            raise _BadError(pos, f"file header XML at byte {pos} is unreadable ({exc})",
                            sids=()) from None

    def _sid(self, pos: int, body: int, end: int, what: str,
             data: bool = True) -> tuple[int, StreamLayout]:
        if body + 4 > end:
            raise _BadError(pos, f"{what} at byte {pos} is too short for a stream id",
                            sids=None if data else ())
        sid = struct.unpack_from("<I", self.buf, body)[0]
        s = self.streams.get(sid)
        if s is None:
            if sid in self.bad_headers:
                raise _BadError(pos, f"{what} at byte {pos} belongs to stream id {sid}, whose "
                                "header is unreadable", sids=(sid,) if data else ())
            raise _BadError(pos, f"{what} at byte {pos} belongs to stream id {sid}, which "
                            "has no header (its id or the header is damaged)",
                            sids=None if data else ())
        return sid, s

    def tag2(self, pos: int, body: int, end: int) -> None:
        if body + 4 > end:
            raise _BadError(pos, f"stream header at byte {pos} is too short")
        sid = struct.unpack_from("<I", self.buf, body)[0]
        if sid in self.streams:
            raise _BadError(pos, f"second header for stream id {sid} at byte {pos}",
                            sids=(sid,))
        try:
            text = bytes(self.buf[body + 4:end]).decode("utf-8", "replace")
            hdr = _xml2dict(ElementTree.fromstring(text))
            info = hdr["info"]
            fmt = str(_text(info, "channel_format"))
            nch = int(_text(info, "channel_count"))
            srate = float(_text(info, "nominal_srate"))
        except (ElementTree.ParseError, KeyError, TypeError, ValueError) as exc:
            self.bad_headers.add(sid)
            raise _BadError(pos, f"stream header at byte {pos} (stream id {sid}) is unreadable "
                            f"({type(exc).__name__}: {exc})", sids=(sid,)) from None
        if fmt not in DTYPES or nch < 1 or not (math.isfinite(srate) and srate >= 0):
            self.bad_headers.add(sid)
            raise _BadError(pos, f"stream header at byte {pos} (stream id {sid}) declares "
                            f"channel_format={fmt!r}, channel_count={nch}, "
                            f"nominal_srate={srate!r}", sids=(sid,))
        self.streams[sid] = StreamLayout(sid, info, fmt, nch, srate, pos)

    def tag3(self, pos: int, body: int, end: int) -> None:
        sid, s = self._sid(pos, body, end, "samples chunk")
        n, first = _varlen(self.buf, body + 4, end, f"sample count of the chunk at byte {pos}")
        payload = end - first
        item = np.dtype(DTYPES[s.fmt]).itemsize if s.fmt != "string" else 0
        rec = 1 + s.nch * item
        if s.fmt == "string":
            ok = payload >= n * (1 + 2 * s.nch)
        else:
            extra = payload - n * rec
            ok = 0 <= extra <= 8 * n and extra % 8 == 0
        if not ok:
            raise _BadError(pos, f"samples chunk at byte {pos} of {s.name!r}: {n} samples cannot "
                            f"fill its {payload} bytes (its length or sample count is "
                            "damaged)")
        s.chunks.append((pos, first, end, n))

    def tag4(self, pos: int, body: int, end: int) -> None:
        if end - body != 20:
            raise _BadError(pos, f"clock offset chunk at byte {pos} has {end - body + 2} bytes "
                            "(must be 22)", sids=())
        _, s = self._sid(pos, body, end, "clock offset chunk", data=False)
        t, v = struct.unpack_from("<dd", self.buf, body + 4)
        s.clock_times.append(t)
        s.clock_values.append(v)

    def tag5(self, pos: int, body: int, end: int) -> None:
        if bytes(self.buf[body:end]) != BOUNDARY_UUID:
            raise _BadError(pos, f"boundary chunk at byte {pos} does not hold the boundary "
                            "UUID", sids=())
        self.boundaries += 1

    def tag6(self, pos: int, body: int, end: int) -> None:
        sid, s = self._sid(pos, body, end, "stream footer")
        if s.footer is not None:
            raise _BadError(pos, f"second footer for {s.name!r} at byte {pos}", sids=(sid,))
        try:
            s.footer = _xml2dict(ElementTree.fromstring(bytes(self.buf[body + 4:end])))
        except ElementTree.ParseError as exc:
            raise _BadError(pos, f"footer of {s.name!r} at byte {pos} is unreadable "
                                 f"({exc})", sids=(sid,)) from None
        s.footer_offset = pos


def scan(path: str | Path) -> XdfLayout:
    """Walk and check the chunk structure of an XDF file (no samples are decoded).

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        The file cannot be opened.
    ValueError
        It does not start with ``XDF:``.
    """
    path = Path(path)
    buf = _open(path)
    if buf[: len(MAGIC)] != MAGIC:
        if isinstance(buf, mmap.mmap):
            buf.close()
        raise ValueError(f"{str(path)!r} is not an XDF file (it does not start with 'XDF:')")
    size = len(buf)
    sc = _Scanner(buf, size)
    sc.run()
    return XdfLayout(path, size, sc.header, sc.streams, sc.damage, sc.boundaries,
                     sc.cut_chunk, buf)


# -- sample offsets -----------------------------------------------------------------------
def _starts(s: StreamLayout, buf: Any, first: int, end: int, n: int, *,
            partial: bool = False) -> tuple[np.ndarray, int]:
    """Byte offsets of the ``n`` samples of one chunk whose first sample is at ``first``,
    walked one sample at a time, and where the last one ends. ``partial``: the chunk is
    cut at ``end``; return its complete samples only (else each must be there and the
    samples must fill the chunk exactly)."""
    if s.fmt == "string":
        return _string_starts(s, buf, first, end, n, partial)
    rec = 1 + s.nch * np.dtype(DTYPES[s.fmt]).itemsize
    out = np.empty(n, dtype=np.int64)
    i, p = 0, first
    while i < n and p < end:
        f = buf[p]
        if f not in (0, 8):
            raise _BadError(p, f"sample {i} of a chunk of {s.name!r} has a timestamp byte "
                               f"count {f} at byte {p} (must be 0 or 8)")
        if p + rec + f > end:
            break
        out[i] = p
        p += rec + f
        i += 1
    if partial:
        return out[:i], p
    if i < n:
        raise _BadError(p, f"a chunk of {s.name!r} holds {i} whole samples where it "
                           f"declares {n} (at byte {p})")
    if p != end:
        raise _BadError(p, f"a chunk of {s.name!r} has {end - p} bytes left after its {n} "
                           f"samples (at byte {p})")
    return out, p


#: Chunks with more samples than this are walked one at a time, not in lanes.
_LANE_MAX = 200_000


def _numeric_positions(s: StreamLayout, u8: np.ndarray, buf: Any
                       ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, _BadError]]]:
    """Byte offset and timestamp byte count of every sample of a numeric stream, and the
    chunks that fail.

    Every sample starts with its timestamp byte count (0 or 8), so within a chunk a
    sample's offset depends on all before it. A chunk's length says how many samples
    carry a timestamp: all or none give the offsets at once. Other chunks (LabRecorder
    leaves a timestamp out when it equals the previous one plus the sampling interval)
    are walked sample by sample, but all chunks together: one numpy step per sample
    index reads the count of every chunk still going and advances it. Then every count
    must be 0 or 8, and the counts of a chunk must add up to its length.
    """
    rec = 1 + s.nch * np.dtype(DTYPES[s.fmt]).itemsize
    chunks = np.asarray([c[1:] for c in s.chunks], dtype=np.int64).reshape(-1, 3)
    first, end, n = chunks[:, 0], chunks[:, 1], chunks[:, 2]
    total = int(n.sum())
    pos = np.empty(total, dtype=np.int64)
    flags = np.empty(total, dtype=np.uint8)
    base = np.cumsum(n) - n  # index of each chunk's first sample in ``pos``
    k = (end - first - n * rec) // 8  # samples with a timestamp, per chunk
    stride = np.where(k == n, rec + 8, rec)
    regular = np.flatnonzero(((k == n) | (k == 0)) & (n > 0))
    if regular.size:
        nr = n[regular]
        j = np.arange(int(nr.sum()), dtype=np.int64) - np.repeat(np.cumsum(nr) - nr, nr)
        at = np.repeat(base[regular], nr) + j
        pos[at] = np.repeat(first[regular], nr) + j * np.repeat(stride[regular], nr)
        flags[at] = u8.take(pos[at], mode="clip")
    mixed = np.flatnonzero((k != n) & (k != 0) & (n > 0))
    cap = min(_LANE_MAX, 4 * int(np.median(n[mixed])) + 16) if mixed.size else 0
    long = mixed[n[mixed] > cap]  # a few long chunks would make lanes wasteful: walk them
    mixed = mixed[n[mixed] <= cap]
    if mixed.size:
        order = mixed[np.argsort(-n[mixed], kind="stable")]  # longest first
        lane_n = n[order]
        steps = np.zeros((int(lane_n[0]), order.size), dtype=np.uint8)
        p = first[order].copy()
        m = order.size
        for i in range(steps.shape[0]):  # step i: sample i of every chunk that has one
            while lane_n[m - 1] <= i:
                m -= 1
            q = p[:m]
            f = u8.take(q, mode="clip")
            steps[i, :m] = f
            q += f  # (rec + f would be uint8: a record of 255 bytes or more overflows)
            q += rec
        lane_flags = np.ascontiguousarray(steps.T)  # (chunks, samples): in sample order
        del steps
        lane_pos = np.cumsum(lane_flags, axis=1, dtype=np.int64)
        lane_pos -= lane_flags  # timestamp bytes before each sample of its chunk
        lane_pos += np.arange(lane_pos.shape[1], dtype=np.int64) * rec
        lane_pos += first[order][:, None]
        for row, c in enumerate(order.tolist()):
            a, b = base[c], base[c] + n[c]
            pos[a:b] = lane_pos[row, :n[c]]
            flags[a:b] = lane_flags[row, :n[c]]
        del lane_pos, lane_flags
    bad: dict[int, _BadError] = {}
    for c in long:
        try:
            pos[base[c]:base[c] + n[c]], _ = _starts(s, buf, int(first[c]), int(end[c]),
                                                     int(n[c]))
            flags[base[c]:base[c] + n[c]] = u8[pos[base[c]:base[c] + n[c]]]
        except _BadError as exc:
            bad[int(c)] = exc
    # every count must be 0 or 8 and a chunk's counts add up to its length
    filled = np.flatnonzero(n > 0)
    sums = np.zeros(n.size, dtype=np.int64)
    if total:
        sums[filled] = np.add.reduceat(flags, base[filled], dtype=np.int64)
    wrong = np.flatnonzero(flags & 0xF7)
    owners = np.searchsorted(base, wrong, side="right") - 1
    for c, i in zip(*np.unique(owners, return_index=True), strict=True):
        i = int(wrong[i])  # the chunk's first sample with a wrong count
        bad.setdefault(int(c), _BadError(int(pos[i]), _flag_message(
            s, u8, int(i - base[c]), int(pos[i]), int(end[c]))))
    for c in np.flatnonzero(sums != 8 * k):
        bad.setdefault(int(c), _BadError(int(first[c]), f"the timestamp byte counts of a "
                                         f"chunk of {s.name!r} do not add up to its length "
                                         "(the chunk's bytes changed)"))
    if bad:
        keep = np.ones(total, dtype=bool)
        for c in bad:
            keep[base[c]:base[c] + n[c]] = False
        pos, flags = pos[keep], flags[keep]
    return pos, flags, sorted(bad.items())


def _flag_message(s: StreamLayout, u8: np.ndarray, i: int, p: int, end: int) -> str:
    if p >= end:
        return f"a chunk of {s.name!r} ends after {i} whole samples (at byte {p})"
    return (f"sample {i} of a chunk of {s.name!r} has a timestamp byte count {int(u8[p])} "
            f"at byte {p} (must be 0 or 8)")


def _string_starts(s: StreamLayout, buf: Any, first: int, end: int, n: int,
                   partial: bool) -> tuple[np.ndarray, int]:
    out = np.empty(n, dtype=np.int64)
    p = first
    for i in range(n):
        start = p
        try:
            if p >= end:
                raise _BadError(p, "no room", cut=True)
            f = buf[p]
            if f not in (0, 8):
                raise _BadError(p, f"sample {i} of the chunk of {s.name!r} has a timestamp byte "
                              f"count {f} at byte {p} (must be 0 or 8)")
            p += 1 + f
            for _ in range(s.nch):
                length, p = _varlen(buf, p, end, f"string length in {s.name!r}")
                p += length
            if p > end:
                raise _BadError(start, "no room", cut=True)
        except _BadError as bad:
            if partial and bad.cut:
                return out[:i], start
            if bad.cut:
                raise _BadError(start, f"a chunk of {s.name!r} holds {i} whole samples where it "
                                  f"declares {n} (at byte {start})") from None
            bad.framed = True
            raise
        out[i] = start
    if p != end and not partial:
        raise _BadError(p, f"a chunk of {s.name!r} has {end - p} bytes left after its {n} samples "
                      f"(at byte {p})")
    return out, p


# -- loading ------------------------------------------------------------------------------
@dataclass
class Loaded:
    """One stream as :func:`read` returns it.

    ``stream`` is the dict pyxdf would return (``info``, ``footer`` if any,
    ``time_series``, ``time_stamps``, ``clock_times``, ``clock_values``);
    ``positions`` holds the byte offset of each sample in the file, so callers can
    keep what lies before a given byte.
    """

    sid: int
    stream: dict[str, Any]
    positions: np.ndarray


def _gather(u8: np.ndarray, offsets: np.ndarray, nbytes: int) -> np.ndarray:
    """The ``nbytes`` bytes at each offset, as an array of shape (len(offsets), nbytes)."""
    if offsets.size == 0 or nbytes == 0:
        return np.zeros((offsets.size, nbytes), dtype=np.uint8)
    windows = np.lib.stride_tricks.as_strided(
        u8, shape=(u8.size - nbytes + 1, nbytes), strides=(1, 1), writeable=False)
    rows = windows.view(np.dtype((np.void, nbytes)))[:, 0]
    return rows[offsets].view(np.uint8).reshape(offsets.size, nbytes)


def _deduce(ts: np.ndarray, stamped: np.ndarray, tdiff: float) -> None:
    """Fill the samples without a timestamp (``~stamped``) as pyxdf does: the previous
    sample's timestamp (0.0 before the first) plus ``tdiff``, one addition at a time."""
    dots = np.flatnonzero(~stamped)
    if dots.size == 0:
        return
    head = np.ones(dots.size, dtype=bool)
    head[1:] = dots[1:] != dots[:-1] + 1
    heads = np.flatnonzero(head)
    run_start = dots[heads]
    run_len = np.diff(np.append(heads, dots.size))
    before = np.where(run_start > 0, ts[np.maximum(run_start - 1, 0)], 0.0)
    ts[run_start] = before + tdiff
    short = 16
    for k in range(1, min(int(run_len.max()), short)):
        at = run_start[run_len > k] + k
        ts[at] = ts[at - 1] + tdiff
    for s0, length in zip(run_start[run_len > short], run_len[run_len > short], strict=True):
        a = int(s0) + short - 1
        seq = np.full(int(length) - short + 1, tdiff)
        seq[0] = ts[a]
        ts[a:int(s0) + int(length)] = np.add.accumulate(seq)


def _read_numeric(lay: XdfLayout, s: StreamLayout, u8: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dtype = np.dtype(DTYPES[s.fmt])
    nbytes = s.nch * dtype.itemsize
    pos, flags, bad = _numeric_positions(s, u8, lay._buf)
    for c, exc in bad:
        coff, _, end, _ = s.chunks[c]
        lay.damage.append(Damage(CORRUPT, coff, f"samples chunk at byte {coff}: "
                                                f"{exc.message}", end, (s.sid,)))
    stamped = flags != 0
    ts = np.empty(pos.size, dtype=np.float64)
    ts[stamped] = _gather(u8, pos[stamped] + 1, 8).view("<f8").ravel()
    bad = np.flatnonzero(stamped & ~np.isfinite(ts))
    if bad.size:
        k = int(bad[0])
        lay.damage.append(Damage(CORRUPT, int(pos[k]), f"sample {k} of {s.name!r} at byte "
                                 f"{int(pos[k])} has the timestamp {ts[k]!r}", sids=(s.sid,)))
    _deduce(ts, stamped, 1.0 / s.srate if s.srate > 0 else 0.0)
    pos += 1  # where the values start: after the count and the timestamp
    pos += flags
    raw = _gather(u8, pos, nbytes)
    pos -= flags
    pos -= 1
    values = raw.view(dtype).reshape(pos.size, s.nch).astype(_NATIVE[s.fmt], copy=False)
    if pos.size == 0:
        values = np.zeros((0, s.nch))  # what pyxdf returns for an empty numeric stream
    return ts, values, pos


def _read_strings(lay: XdfLayout, s: StreamLayout) -> tuple[np.ndarray, list, np.ndarray]:
    buf = lay._buf
    tdiff = 1.0 / s.srate if s.srate > 0 else 0.0
    last = 0.0
    stamps: list[float] = []
    rows: list[list[str]] = []
    where: list[np.ndarray] = []
    for coff, first, end, n in s.chunks:
        try:
            pos, _ = _string_starts(s, buf, first, end, n, False)
        except _BadError as bad:
            lay.damage.append(Damage(CORRUPT, coff, f"samples chunk at byte {coff}: "
                                                    f"{bad.message}", end, (s.sid,)))
            continue
        for p in pos.tolist():
            if buf[p]:
                last = struct.unpack_from("<d", buf, p + 1)[0]
                p += 9
            else:
                last = last + tdiff
                p += 1
            stamps.append(last)
            row = []
            for _ in range(s.nch):
                length, p = _varlen(buf, p, end, "string length")
                row.append(bytes(buf[p:p + length]).decode(errors="replace"))
                p += length
            rows.append(row)
        where.append(pos)
    pos = np.concatenate(where) if where else np.zeros(0, dtype=np.int64)
    ts = np.asarray(stamps, dtype=np.float64) if stamps else np.zeros((0,))
    bad = np.flatnonzero(~np.isfinite(ts))
    if bad.size:
        k = int(bad[0])
        lay.damage.append(Damage(CORRUPT, int(pos[k]), f"sample {k} of {s.name!r} at byte "
                                 f"{int(pos[k])} has the timestamp {ts[k]!r}", sids=(s.sid,)))
    return ts, rows, pos


def read(lay: XdfLayout, select: Iterable[int] | Callable[[StreamLayout], bool] | None = None
         ) -> list[Loaded]:
    """Load the samples of the selected streams of a scanned file.

    Parameters
    ----------
    lay : XdfLayout
        From :func:`scan`.
    select : iterable of stream ids, or a predicate on :class:`StreamLayout`, optional
        The streams to load (default: all).

    Returns
    -------
    list of Loaded
        In file order. Damage found in the samples (a chunk whose timestamp bytes do not
        add up, a non-finite timestamp, fewer samples than the footer counts) is added
        to ``lay.damage``; a chunk that cannot be decoded is left out.
    """
    if lay._buf is None:
        raise ValueError(f"{lay.path.name}: the layout was closed")
    if select is None:
        wanted = set(lay.streams)
    elif callable(select):
        wanted = {sid for sid, s in lay.streams.items() if select(s)}
    else:
        wanted = set(select)
    u8 = np.frombuffer(lay._buf, dtype=np.uint8)
    out = []
    for sid, s in lay.streams.items():
        if sid not in wanted:
            continue
        if s.fmt == "string":
            ts, series, pos = _read_strings(lay, s)
        else:
            ts, series, pos = _read_numeric(lay, s, u8)
        count = s.footer_count
        if count is not None and pos.size < count:
            lay.damage.append(Damage(
                CORRUPT, s.footer_offset if s.footer_offset is not None else lay.size,
                f"{s.name!r}: its footer counts {count} samples, the file holds {pos.size} "
                f"({count - pos.size} lost)", sids=(sid,)))
        info = dict(s.info)
        info["stream_id"] = sid
        n = ts.size
        span = float(ts[-1] - ts[0]) if n > 1 else 0.0
        info["effective_srate"] = (  # 0.0 too for stamps that never advance (or NaN)
            (n - 1) / span if s.srate != 0 and span > 0 and math.isfinite(span) else 0.0)
        info["segments"] = [(0, n - 1)] if n else []
        info["clock_segments"] = []
        stream: dict[str, Any] = {"info": info}
        if s.footer is not None:
            stream["footer"] = s.footer
        stream.update(time_series=series, time_stamps=ts, clock_times=list(s.clock_times),
                      clock_values=list(s.clock_values))
        out.append(Loaded(sid, stream, pos))
    del u8
    lay.damage.sort(key=lambda d: d.offset)
    return out
