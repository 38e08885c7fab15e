"""Reading XDF recordings back: closedloop's own sessions and files from other LSL tools.

Two layers:

* :func:`read_xdf` loads any XDF file with pyxdf, tolerating a file cut short (a
  recorder killed mid-write, a full disk). pyxdf copes with a cut inside a sample
  chunk, but raises on a cut inside a stream header (XML ``ParseError``), a clock-offset
  chunk or a chunk's tag (``struct.error``), and when the cut falls inside the last
  sample's values it silently returns that sample filled from the previous one. So the
  file's chunk structure is walked first; if the last chunk is incomplete, the complete
  samples of a cut sample chunk are salvaged and everything after them is dropped before
  pyxdf sees the bytes. Timestamps are left exactly as recorded by default
  (``dejitter_timestamps=False``, ``synchronize_clocks=False``): pyxdf's clock sync
  would add LabRecorder's measured clock offsets (tens of microseconds of noise on one
  machine) and its dejitter would replace them by a linear fit.
* :func:`load_session` returns a :class:`Session`: the EMG (samples, timestamps,
  counter, labels, rate), detector events, stimulation commands, trial markers and the
  config text of a closedloop recording, or the EMG stream picked by name or type from
  another tool's recording.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pyxdf

from closedloop.core.checks import hold_nonfinite
from closedloop.core.events import Event
from closedloop.core.stream import SourceInfo
from closedloop.errors import InputError
from closedloop.io.outlets import (
    COUNTER_LABEL,
    ROLE_EMG,
    ROLE_EVENTS,
    ROLE_MARKERS,
    ROLE_SESSION,
    ROLE_STIM,
    SOURCE_COUNTER,
    Marker,
    decode_command,
    decode_event,
    decode_marker,
    restore_timestamps,
)
from closedloop.stim.commands import StimCommand

_MAGIC = b"XDF:"
_TAG_STREAMHEADER = 2
_TAG_SAMPLES = 3
_TAG_FOOTER = 6
_ITEMSIZE = {"double64": 8, "float32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1}


# -- tolerant reading ------------------------------------------------------------------------
@dataclass(frozen=True)
class XdfFile:
    """An XDF file as loaded by :func:`read_xdf`.

    Attributes
    ----------
    path : Path
    streams : list of dict
        pyxdf's stream dicts (``info``, ``time_series``, ``time_stamps``, ``footer``...).
    header : dict or None
        pyxdf's file header.
    truncated : bool
        The file ended inside a chunk (the recorder did not finish it).
    bytes_dropped : int
        Bytes of the incomplete last chunk that could not be used.
    salvaged_samples : int
        Complete samples recovered from that chunk.
    """

    path: Path
    streams: list[dict[str, Any]]
    header: dict[str, Any] | None
    truncated: bool = False
    bytes_dropped: int = 0
    salvaged_samples: int = 0

    @property
    def complete(self) -> bool:
        """True when every stream has its footer (the recorder closed the file)."""
        return bool(self.streams) and all("footer" in s for s in self.streams)


def _varlen(buf: bytes | memoryview, pos: int) -> tuple[int, int] | None:
    """Decode an XDF variable-length integer at ``pos``: (value, new pos) or None."""
    if pos >= len(buf):
        return None
    nbytes = buf[pos]
    if nbytes not in (1, 4, 8) or pos + 1 + nbytes > len(buf):
        return None
    fmt = {1: "<B", 4: "<I", 8: "<Q"}[nbytes]
    return struct.unpack_from(fmt, buf, pos + 1)[0], pos + 1 + nbytes


def _enc_varlen(value: int) -> bytes:
    if value < 256:
        return struct.pack("<BB", 1, value)
    if value < 2**32:
        return struct.pack("<BI", 4, value)
    return struct.pack("<BQ", 8, value)


def _complete_samples(body: memoryview, fmt: str, nch: int) -> tuple[int, int]:
    """Count complete samples at the start of a (cut) sample-chunk body.

    ``body`` starts at the samples (after the sample count). Returns (count, bytes).
    """
    pos, k = 0, 0
    size = _ITEMSIZE.get(fmt)
    while pos < len(body):
        ts_len = body[pos]
        if ts_len not in (0, 8):
            break
        p = pos + 1 + ts_len
        if size is not None:
            p += nch * size
            if p > len(body):
                break
        else:  # strings: one varlen length + bytes per channel
            ok = True
            for _ in range(nch):
                v = _varlen(body, p)
                if v is None or v[1] + v[0] > len(body):
                    ok = False
                    break
                p = v[1] + v[0]
            if not ok:
                break
        pos, k = p, k + 1
    return k, pos


def _repair(data: bytes) -> tuple[bytes, bool, int, int]:
    """Cut ``data`` after its last complete chunk, salvaging a cut sample chunk.

    Returns (bytes, truncated, bytes_dropped, salvaged_samples).
    """
    view = memoryview(data)
    pos = len(_MAGIC)
    formats: dict[int, tuple[str, int]] = {}
    while pos < len(data):
        v = _varlen(view, pos)
        if v is None:
            break
        length, body = v
        end = body + length
        tag = struct.unpack_from("<H", view, body)[0] if body + 2 <= len(data) else None
        if end > len(data) or tag is None:
            # the last chunk is incomplete: salvage its complete samples if it has some
            if tag == _TAG_SAMPLES and body + 6 <= len(data):
                sid = struct.unpack_from("<I", view, body + 2)[0]
                n = _varlen(view, body + 6)
                if sid in formats and n is not None:
                    fmt, nch = formats[sid]
                    k, nbytes = _complete_samples(view[n[1] :], fmt, nch)
                    k = min(k, n[0])
                    if k:
                        content = struct.pack("<HI", tag, sid) + _enc_varlen(k)
                        content += bytes(view[n[1] : n[1] + nbytes])
                        fixed = data[:pos] + _enc_varlen(len(content)) + content
                        return fixed, True, len(data) - len(fixed), k
            return data[:pos], True, len(data) - pos, 0
        if tag == _TAG_STREAMHEADER and length >= 6:
            sid = struct.unpack_from("<I", view, body + 2)[0]
            try:
                root = ElementTree.fromstring(bytes(view[body + 6 : end]))
                formats[sid] = (
                    root.findtext("channel_format", ""),
                    int(root.findtext("channel_count", "0")),
                )
            except (ElementTree.ParseError, ValueError):
                pass
        pos = end
    return data, False, 0, 0


def read_xdf(
    path: str | Path,
    *,
    dejitter_timestamps: bool = False,
    synchronize_clocks: bool = False,
) -> XdfFile:
    """Load an XDF file with pyxdf, tolerating a truncated file (see module docstring).

    Raises
    ------
    InputError
        The file does not exist or is not an XDF file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recording {str(path)!r} does not exist")
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise InputError(f"{str(path)!r} is not an XDF file (it does not start with 'XDF:')")
    fixed, truncated, dropped, salvaged = _repair(data)
    logger = logging.getLogger("pyxdf.pyxdf")
    level = logger.level
    logger.setLevel(logging.ERROR)  # silence "Segments and clock-segments differ"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            streams, header = pyxdf.load_xdf(
                io.BytesIO(fixed),
                dejitter_timestamps=dejitter_timestamps,
                synchronize_clocks=synchronize_clocks,
            )
    except Exception as exc:  # noqa: BLE001 - pyxdf raises many types on corrupt files
        raise InputError(f"{str(path)!r}: pyxdf could not read it ({exc})") from exc
    finally:
        logger.setLevel(level)
    return XdfFile(path, streams, header, truncated, dropped, salvaged)


# -- stream helpers --------------------------------------------------------------------------
def _first(d: Mapping[str, Any], key: str, default: Any = None) -> Any:
    v = d.get(key)
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


def stream_name(stream: Mapping[str, Any]) -> str:
    """Name of a pyxdf stream dict."""
    return str(_first(stream["info"], "name", ""))


def stream_type(stream: Mapping[str, Any]) -> str:
    """Type of a pyxdf stream dict."""
    return str(_first(stream["info"], "type", ""))


def _desc(stream: Mapping[str, Any]) -> Mapping[str, Any]:
    d = _first(stream["info"], "desc")
    return d if isinstance(d, Mapping) else {}


def stream_role(stream: Mapping[str, Any]) -> str | None:
    """closedloop role of a stream (``emg``, ``events``...), None for other tools' streams."""
    cl = _first(_desc(stream), "closedloop")
    if isinstance(cl, Mapping):
        return _first(cl, "role")
    return None


def closedloop_field(stream: Mapping[str, Any], key: str) -> str | None:
    """``desc/closedloop/<key>`` text of a stream, if present."""
    cl = _first(_desc(stream), "closedloop")
    if isinstance(cl, Mapping):
        v = _first(cl, key)
        return None if v is None else str(v) if not isinstance(v, Mapping) else None
    return None


def channel_fields(stream: Mapping[str, Any], key: str) -> list[str]:
    """``desc/channels/channel/<key>`` of every channel ('' where missing)."""
    chans = _first(_desc(stream), "channels")
    if not isinstance(chans, Mapping):
        return []
    out = []
    for ch in chans.get("channel", []) or []:
        v = _first(ch, key, "") if isinstance(ch, Mapping) else ""
        out.append("" if v is None or isinstance(v, Mapping) else str(v))
    return out


def describe(stream: Mapping[str, Any]) -> str:
    """One line naming a recorded stream."""
    info = stream["info"]
    return (
        f"name={stream_name(stream)!r} type={stream_type(stream)!r} "
        f"source_id={_first(info, 'source_id', '')!r} channels="
        f"{_first(info, 'channel_count', '?')} rate={_first(info, 'nominal_srate', '?')} "
        f"samples={len(stream['time_stamps'])}"
    )


def counter_column(stream: Mapping[str, Any]) -> int | None:
    """Index of the channel labelled (or typed) ``counter``, if any."""
    labels = channel_fields(stream, "label")
    types = channel_fields(stream, "type")
    for k in range(len(labels)):
        if labels[k].lower() == COUNTER_LABEL or (k < len(types) and types[k] == COUNTER_LABEL):
            return k
    return None


def marker_texts(stream: Mapping[str, Any]) -> list[str]:
    """First-channel strings of a marker stream."""
    return [str(row[0]) for row in stream["time_series"]]


# -- sessions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Session:
    """A recording read back by :func:`load_session`.

    Attributes
    ----------
    path : Path
    name : str
        Name of the EMG stream.
    fs : float
        Nominal sampling rate (Hz).
    channels : tuple of str
        EMG channel labels, in column order.
    units : str
    samples : ndarray, shape (n, n_channels), float64
        What the detectors saw: NaN/inf values held at the channel's last finite value
        (as the input monitor does).
    timestamps : ndarray, shape (n,), float64
        Stream times exactly as recorded.
    counter : ndarray of int64, shape (n,), or None
        The recorded sample counter (closedloop recordings, or a stream with a
        ``counter`` channel).
    events : list of Event
    commands : list of StimCommand
    markers : list of Marker
        Trial and cue markers.
    config_text : str or None
        The session's config (TOML text), from the session stream's header.
    metadata : dict
        Session metadata (empty for other tools' recordings).
    stream_names : tuple of str
        Every stream in the file.
    complete : bool
        Every stream has its footer (the recorder closed the file properly).
    truncated : bool
        The file was cut short and repaired on reading.
    raw : ndarray or None
        The samples as recorded, NaN/inf included, when there are any (else None:
        they equal ``samples``). A replay feeds these, so its input checks see what the
        live session's saw.
    source_counter : ndarray of float64, shape (n,), or None
        The source's own sample counter (NaN where the source gave none), rebuilt from
        the ``source_counter`` markers; None for recordings without them (older ones,
        other tools').
    """

    path: Path
    name: str
    fs: float
    channels: tuple[str, ...]
    units: str
    samples: np.ndarray
    timestamps: np.ndarray
    counter: np.ndarray | None
    events: list[Event] = field(default_factory=list)
    commands: list[StimCommand] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    config_text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stream_names: tuple[str, ...] = ()
    complete: bool = True
    truncated: bool = False
    raw: np.ndarray | None = None
    source_counter: np.ndarray | None = None

    @property
    def received(self) -> np.ndarray:
        """The samples as recorded, NaN/inf included."""
        return self.samples if self.raw is None else self.raw

    @property
    def n(self) -> int:
        """Number of EMG samples."""
        return int(self.samples.shape[0])

    @property
    def source_info(self) -> SourceInfo:
        """What a replay of this session delivers."""
        return SourceInfo(
            name=self.name, fs=self.fs, channels=self.channels, units=self.units, kind="replay"
        )


def _pick_emg(streams: Sequence[dict[str, Any]], emg_stream: str | None, path: Path) -> dict:
    listing = "\n  ".join(describe(s) for s in streams) or "(no streams)"
    numeric = [s for s in streams if _first(s["info"], "channel_format") != "string"]
    if emg_stream is not None:
        cands = [s for s in numeric if stream_name(s) == emg_stream]
        if not cands:
            cands = [s for s in numeric if stream_type(s).lower() == emg_stream.lower()]
        what = f"named or typed {emg_stream!r}"
    else:
        cands = [s for s in numeric if stream_role(s) == ROLE_EMG]
        if not cands:
            cands = [s for s in numeric if stream_type(s).upper() == "EMG"]
        what = "of type EMG"
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise InputError(
            f"{str(path)!r}: no numeric stream {what}. Streams in the file:\n  {listing}\n"
            "pick one with emg_stream=NAME"
        )
    names = ", ".join(repr(stream_name(s)) for s in cands)
    raise InputError(
        f"{str(path)!r}: {len(cands)} streams {what} ({names}). Streams in the file:\n  "
        f"{listing}\npick one with emg_stream=NAME"
    )


def _session_streams(streams: Sequence[dict], emg: dict) -> dict[str, dict]:
    """The closedloop streams of the same session as ``emg``, by role."""
    uid = closedloop_field(emg, "session_uid")
    out: dict[str, dict] = {}
    if uid is None:
        return out
    for s in streams:
        role = stream_role(s)
        if role and closedloop_field(s, "session_uid") == uid:
            out[role] = s
    return out


def _decode_all(stream: dict | None, decode: Any, what: str, path: Path) -> list:
    if stream is None:
        return []
    items = []
    for text in marker_texts(stream):
        try:
            items.append(decode(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"{str(path)!r}: unreadable {what} marker {text[:80]!r} ({exc})"
            ) from exc
    items.sort(key=lambda it: it[0])
    return [it[1] for it in items]


def load_session(
    path: str | Path,
    *,
    emg_stream: str | None = None,
    synchronize_clocks: bool = False,
) -> Session:
    """Read a recording back.

    Parameters
    ----------
    path : str or Path
        The XDF file.
    emg_stream : str, optional
        Name (or else type) of the EMG stream. Default: the closedloop EMG stream, or
        the only stream of type ``EMG``.
    synchronize_clocks : bool
        Apply LabRecorder's clock offsets (pyxdf ``synchronize_clocks``). Keep False for
        closedloop recordings: their stream times are already in one clock, and a replay
        must see exactly the timestamps the live session used.

    Raises
    ------
    InputError
        Missing file, no or several candidate EMG streams (the message lists every
        stream), or unreadable markers.
    """
    xdf = read_xdf(path, synchronize_clocks=synchronize_clocks)
    p = xdf.path
    emg = _pick_emg(xdf.streams, emg_stream, p)
    own = _session_streams(xdf.streams, emg)
    data = np.asarray(emg["time_series"], dtype=np.float64)
    nch_total = int(_first(emg["info"], "channel_count", data.shape[1] if data.ndim == 2 else 0))
    if data.ndim != 2:
        data = data.reshape(0, nch_total)
    ts = np.asarray(emg["time_stamps"], dtype=np.float64)
    if own:
        ts = restore_timestamps(ts)
    labels = channel_fields(emg, "label")
    units = channel_fields(emg, "unit")
    if len(labels) != nch_total or not all(labels):
        labels = [f"EMG{k + 1}" for k in range(nch_total)]
    units += [""] * (nch_total - len(units))
    ccol = counter_column(emg)
    cols = [k for k in range(nch_total) if k != ccol]
    counter = None if ccol is None else np.rint(data[:, ccol]).astype(np.int64)
    unit_set = {units[k] for k in cols}
    unit = unit_set.pop() if len(unit_set) == 1 else "mixed"
    config_text = None
    metadata: dict[str, Any] = {}
    sess = own.get(ROLE_SESSION)
    if sess is not None:
        config_text = closedloop_field(sess, "config") or ""
        meta_text = closedloop_field(sess, "metadata")
        if meta_text:
            try:
                metadata = json.loads(meta_text)
            except ValueError:
                metadata = {"unreadable": meta_text}
    raw = np.ascontiguousarray(data[:, cols])
    samples = hold_nonfinite(raw)
    markers = _decode_all(own.get(ROLE_MARKERS), decode_marker, "trial", p)
    source_counter = _source_counter([m for m in markers if m.label == SOURCE_COUNTER],
                                     counter, ts.shape[0])
    return Session(
        path=p,
        name=stream_name(emg),
        fs=float(_first(emg["info"], "nominal_srate", 0.0)),
        channels=tuple(labels[k] for k in cols),
        units=unit or "unknown",
        samples=samples,
        timestamps=ts,
        counter=counter,
        events=_decode_all(own.get(ROLE_EVENTS), decode_event, "event", p),
        commands=_decode_all(own.get(ROLE_STIM), decode_command, "stimulation", p),
        markers=[m for m in markers if m.label != SOURCE_COUNTER],
        config_text=config_text,
        metadata=metadata,
        stream_names=tuple(stream_name(s) for s in xdf.streams),
        complete=xdf.complete,
        truncated=xdf.truncated,
        raw=None if samples is raw else raw,
        source_counter=source_counter,
    )


def _source_counter(marks: list[Marker], counter: np.ndarray | None, n: int
                    ) -> np.ndarray | None:
    """The source's counter per sample from its ``source_counter`` markers (each gives
    its value at a sample where it did not continue), or None without markers."""
    if not marks:
        return None
    out = np.full(n, np.nan)
    index = np.arange(n) if counter is None else counter  # pipeline sample of each row
    for m in sorted((m for m in marks if m.sample is not None), key=lambda m: m.sample):
        k = int(np.searchsorted(index, m.sample))  # the first row at or after it
        value = m.fields.get("counter")
        out[k:] = np.nan if value is None else float(value) + (index[k:] - m.sample)
    return out
