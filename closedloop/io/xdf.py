"""Reading XDF recordings back: closedloop's own sessions and files from other LSL tools.

Two layers:

* :func:`read_xdf` loads an XDF file with :mod:`closedloop.io.xdfreader`, which checks
  the file's chunk structure as it goes and decodes numeric samples with numpy (tens of
  times faster than pyxdf, and bit for bit the same samples and timestamps). Damage is
  reported, never hidden: :attr:`XdfFile.damage` lists each place where the file is cut
  short (``truncated``: the recorder was killed, the disk filled up) or broken
  (``corrupt``: bytes changed or lost), and what lies after a damaged place is still
  read from the next boundary chunk on. A file cut inside a sample chunk keeps that
  chunk's complete samples. Timestamps are left exactly as recorded by default
  (``dejitter_timestamps=False``, ``synchronize_clocks=False``): pyxdf's clock sync would
  add LabRecorder's measured clock offsets (tens of microseconds of noise on one
  machine) and its dejitter would replace them by a linear fit. Asking for either hands
  the intact part of the file to pyxdf, which does them well.
* :func:`load_session` returns a :class:`Session`: the EMG (samples, timestamps,
  counter, labels, rate), detector events, stimulation commands, trial markers and the
  config text of a closedloop recording, or the EMG stream picked by name or type from
  another tool's recording. It loads only those streams (not the envelope and
  thresholds). On a damaged file it keeps what lies before the first damage (a prefix
  of every stream, the same for all), also checking closedloop's own counters there
  (the EMG ``counter`` channel, each marker's ``seq``: a value that does not continue
  is damage too), and says in :attr:`Session.damage_report` what is intact and what is
  not; it never raises for damage, so a crashed session stays readable. Callers that
  act on a recording (``replay``, ``report``, ``evaluate``) tell the user.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyxdf

from closedloop.core.checks import ABSURD_LIMIT, hold_nonfinite
from closedloop.core.events import Event
from closedloop.core.evoked import MWave
from closedloop.core.stream import SourceInfo, sample_format
from closedloop.errors import InputError, RecordingDamagedError
from closedloop.io import xdfreader
from closedloop.io.outlets import (
    CHANNEL_RESTART,
    COUNTER_LABEL,
    ROLE_EMG,
    ROLE_ENVELOPE,
    ROLE_EVENTS,
    ROLE_MARKERS,
    ROLE_MWAVE,
    ROLE_SESSION,
    ROLE_STIM,
    ROLE_THRESHOLDS,
    SOURCE_COUNTER,
    Marker,
    decode_command,
    decode_event,
    decode_marker,
    decode_mwave,
    restore_timestamps,
    unwrap_counter,
)
from closedloop.io.recorded import recorded_detector_kind
from closedloop.io.xdfreader import CORRUPT, TRUNCATED, Damage, StreamLayout, XdfLayout
from closedloop.stim.commands import StimCommand
from closedloop.units import recorded_unit


# -- reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class XdfFile:
    """An XDF file as loaded by :func:`read_xdf`.

    Attributes
    ----------
    path : Path
    streams : list of dict
        The loaded streams as pyxdf returns them (``info``, ``time_series``,
        ``time_stamps``, ``footer`` when there is one, ``clock_times``...), in file order.
    header : dict or None
        The file header (as pyxdf returns it).
    damage : tuple of Damage
        Every place where the file is cut short or broken, by byte offset.
    size : int
        Bytes in the file.
    positions : dict of int to ndarray
        Per stream id (``info["stream_id"]``), the byte offset of each sample.
    layouts : dict of int to StreamLayout
        Every stream in the file, loaded or not (header, footer, chunks).
    """

    path: Path
    streams: list[dict[str, Any]]
    header: dict[str, Any] | None
    damage: tuple[Damage, ...] = ()
    size: int = 0
    positions: dict[int, np.ndarray] = field(default_factory=dict)
    layouts: dict[int, StreamLayout] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every stream has its footer and nothing is damaged."""
        return bool(self.layouts) and not self.damage

    @property
    def truncated(self) -> bool:
        """The recorder did not finish the file (it ends inside a chunk or lacks footers)."""
        return any(d.kind == TRUNCATED for d in self.damage)

    @property
    def corrupt(self) -> bool:
        """The structure is broken inside the file."""
        return any(d.kind == CORRUPT for d in self.damage)

    @property
    def state(self) -> str:
        """``complete``, ``truncated`` or ``corrupt`` (which wins over truncated)."""
        return CORRUPT if self.corrupt else TRUNCATED if self.truncated else "complete"

    @property
    def intact_until(self) -> int:
        """Byte offset of the first damage (the file size when there is none)."""
        return min((d.offset for d in self.damage), default=self.size)

    def intact_for(self, sids: Iterable[int]) -> int:
        """Byte offset of the first damage that may concern these streams' samples."""
        sids = set(sids)
        return min((d.offset for d in self.damage if d.concerns(sids)), default=self.size)


def _scan(path: str | Path) -> XdfLayout:
    p = Path(path)
    if not p.exists():
        raise InputError(f"recording {str(p)!r} does not exist")
    if p.is_dir():
        raise InputError(f"recording {str(p)!r} is a directory; give an .xdf file")
    if not p.is_file():  # a named pipe would be waited on for ever, a device never ends
        raise InputError(f"recording {str(p)!r} is not a regular file (a device, a named "
                         "pipe or a socket); give the .xdf file itself")
    try:
        return xdfreader.scan(p)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except (OSError, EOFError) as exc:
        raise InputError(f"recording {str(p)!r} cannot be read ({exc})") from None


def _enc_varlen(value: int) -> bytes:
    if value < 256:
        return struct.pack("<BB", 1, value)
    if value < 2**32:
        return struct.pack("<BI", 4, value)
    return struct.pack("<BQ", 8, value)


def _intact_bytes(lay: XdfLayout) -> bytes:
    """The file up to its first damage, as a valid XDF byte string (a cut chunk's
    complete samples rebuilt as a chunk of their own), for pyxdf."""
    cut = lay.first_damage
    buf = lay._buf
    salvage = lay.cut_chunk
    if salvage is not None and salvage[3] == cut:  # the first damage is that cut
        coff, sid, first, stop, n = salvage
        content = struct.pack("<HI", xdfreader.TAG_SAMPLES, sid) + _enc_varlen(n)
        content += bytes(buf[first:stop])
        return bytes(buf[:coff]) + _enc_varlen(len(content)) + content
    start = cut
    for s in lay.streams.values():
        for coff, _first, end, _n in s.chunks:
            if coff < cut < end:  # damage found inside a chunk: leave the chunk out
                start = min(start, coff)
    return bytes(buf[:start])


def read_xdf(
    path: str | Path,
    *,
    dejitter_timestamps: bool = False,
    synchronize_clocks: bool = False,
    select: Iterable[int] | Callable[[StreamLayout], bool] | None = None,
) -> XdfFile:
    """Load an XDF file, checking its structure (see the module docstring).

    Parameters
    ----------
    path : str or Path
    dejitter_timestamps, synchronize_clocks : bool
        pyxdf's options. With either, pyxdf loads the part of the file before the first
        damage (and ``streams`` holds only that part).
    select : iterable of stream ids, or a predicate on the stream's layout, optional
        Load only these streams (default: all).

    Raises
    ------
    InputError
        The file does not exist, cannot be read or is not an XDF file.
    """
    return _read_layout(_scan(path), select, dejitter_timestamps, synchronize_clocks)


def _read_layout(lay: XdfLayout, select: Any, dejitter: bool, sync: bool) -> XdfFile:
    """Load the selected streams of a scanned file and release it."""
    try:
        loaded = xdfreader.read(lay, select)
        streams = [x.stream for x in loaded]
        positions = {x.sid: x.positions for x in loaded}
        if dejitter or sync:
            streams = _pyxdf(lay, [x.sid for x in loaded], dejitter, sync)
            cut = lay.first_damage
            positions = {sid: pos[pos < cut] for sid, pos in positions.items()}
    finally:
        lay.close()
    return XdfFile(lay.path, streams, lay.header, tuple(lay.damage), lay.size, positions,
                   dict(lay.streams))


def _pyxdf(lay: XdfLayout, sids: list[int], dejitter: bool, sync: bool) -> list[dict]:
    data = _intact_bytes(lay)
    if not sids:
        return []
    logger = logging.getLogger("pyxdf.pyxdf")
    level = logger.level
    logger.setLevel(logging.ERROR)  # silence "Segments and clock-segments differ"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            streams, _ = pyxdf.load_xdf(io.BytesIO(data), select_streams=sids,
                                        dejitter_timestamps=dejitter,
                                        synchronize_clocks=sync)
    except Exception as exc:  # noqa: BLE001 - pyxdf raises many types on odd files
        raise InputError(f"{str(lay.path)!r}: pyxdf could not read it ({exc})") from exc
    finally:
        logger.setLevel(level)
    return streams


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
    """The closedloop role of a stream (``emg``, ``events``...); None for other tools'."""
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


def statistic_unit(stream: Mapping[str, Any], detector_kind: str) -> str:
    """The unit of the values of a closedloop envelope or thresholds stream: the
    detector's statistic (:mod:`closedloop.io.outlets`, *Units*).

    A recording made now says it (``desc/closedloop/statistic/unit``). Older ones
    labelled those channels with the EMG's unit whatever the detector (a cusum
    session's nats as ``V``): for them it is the unit of the statistic that
    ``detector_kind`` declares (the recording's detector,
    :func:`~closedloop.io.recorded.recorded_detector_kind`) with that EMG unit.
    """
    from closedloop.core.detectors.base import statistic_of

    cl = _first(_desc(stream), "closedloop")
    stat = _first(cl, "statistic") if isinstance(cl, Mapping) else None
    if isinstance(stat, Mapping):
        unit = _first(stat, "unit", "")
        return "" if unit is None or isinstance(unit, Mapping) else str(unit)
    emg = {u for u, lab in zip(channel_fields(stream, "unit"), channel_fields(stream, "label"),
                                strict=False) if lab not in (COUNTER_LABEL, "sample")}
    return recorded_unit(statistic_of(detector_kind), emg.pop() if len(emg) == 1 else "")


def describe(stream: Mapping[str, Any]) -> str:
    """One line naming a recorded stream."""
    info = stream["info"]
    return (
        f"name={stream_name(stream)!r} type={stream_type(stream)!r} "
        f"source_id={_first(info, 'source_id', '')!r} channels="
        f"{_first(info, 'channel_count', '?')} rate={_first(info, 'nominal_srate', '?')} "
        f"samples={_count(stream)}"
    )


def _count(stream: Mapping[str, Any]) -> int:
    """Samples of a loaded stream, or (a header-only dict) of its chunks."""
    if "time_stamps" in stream:
        return len(stream["time_stamps"])
    return int(stream.get("n_samples", 0))


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
    samples : ndarray, shape (n, n_channels), float32 or float64
        What the detectors saw: NaN/inf values held at the channel's last finite value
        (as the input monitor does). In the format recorded (:attr:`sample_format`:
        float32 values are exactly the ones the session saw; whoever processes them
        widens them to float64 chunk by chunk, as the input monitor and the pipeline
        do), possibly a view of the recorded rows (counter column left out), not
        C-contiguous.
    timestamps : ndarray, shape (n,), float64
        Stream times exactly as recorded.
    counter : ndarray of int64, shape (n,), or None
        The recorded sample counter (closedloop recordings, or a stream with a
        ``counter`` channel).
    events : list of Event
    commands : list of StimCommand
    markers : list of Marker
        Trial and cue markers.
    mwaves : list of MWave
        The evoked responses (M-waves) the session measured, in order (none for
        sessions that did not stimulate or were recorded before they were measured).
    config_text : str or None
        The session's config (TOML text), from the session stream's header.
    metadata : dict
        Session metadata (empty for other tools' recordings).
    stream_names : tuple of str
        Every stream in the file.
    complete : bool
        Every stream has its footer, the file's chunk structure is intact, the samples
        of the streams loaded (EMG and markers; not the envelope and thresholds, which
        :func:`closedloop.io.recorder.verify_recording` checks) decode, and closedloop's
        counters run without a break.
    truncated : bool
        The recorder did not finish the file (it was cut short or lacks footers).
    raw : ndarray or None
        The samples as recorded, NaN/inf included, when there are any (else None:
        they equal ``samples``). A replay feeds these, so its input checks see what the
        live session's saw.
    source_counter : ndarray of float64, shape (n,), or None
        The source's own sample counter (NaN where the source gave none), rebuilt from
        the ``source_counter`` markers; None for recordings without them (older ones,
        other tools').
    damage : tuple of Damage
        Where the file is cut short or broken (empty for an intact file). Everything
        above is then what lies before the first damage.
    damage_report : str
        For a damaged file: what is damaged, what is intact (streams, samples, stream
        times) and what the file holds after the damage that is not used ('' if intact).
    sample_format : str
        How the EMG was recorded (``"float32"`` or ``"double64"``; see
        :func:`closedloop.core.stream.sample_format`): a replay's source delivers it so.
    restarts_marked : bool
        The session marked where it restarted a channel (its Markers stream's header
        declares ``channel_restart`` markers, :data:`closedloop.io.outlets.CHANNEL_RESTART`;
        sessions recorded before they did, and other tools' recordings, do not), so
        :attr:`markers` holds every restart and ``replay --check`` compares them.
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
    mwaves: list[MWave] = field(default_factory=list)
    config_text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stream_names: tuple[str, ...] = ()
    complete: bool = True
    truncated: bool = False
    raw: np.ndarray | None = None
    source_counter: np.ndarray | None = None
    damage: tuple[Damage, ...] = ()
    damage_report: str = ""
    sample_format: str = "double64"
    restarts_marked: bool = False

    @property
    def state(self) -> str:
        """``complete``, ``truncated`` or ``corrupt``."""
        if any(d.kind == CORRUPT for d in self.damage):
            return CORRUPT
        return TRUNCATED if self.damage else "complete"

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
            name=self.name, fs=self.fs, channels=self.channels, units=self.units, kind="replay",
            sample_format=self.sample_format,
        )


#: How to name the EMG stream: the commands' option, and the reader's argument.
_PICK = ("pick one by its name or type with --stream NAME (closedloop replay, detect, export; "
         "in Python: load_session(path, emg_stream=NAME))")


#: Most channels of an EMG stream read back (high-density grids have 64-256; a header
#: declaring billions, read as it says, takes all memory).
MAX_EMG_CHANNELS = 4096


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
        nch = int(_first(cands[0]["info"], "channel_count", 0))
        if nch > MAX_EMG_CHANNELS:  # a damaged header: every channel costs memory and time
            raise InputError(
                f"{str(path)!r}: the stream {stream_name(cands[0])!r} declares {nch:,} "
                f"channels; closedloop reads EMG streams of up to {MAX_EMG_CHANNELS:,}: its "
                f"header is damaged, or it is not an EMG stream. Streams in the file:\n  "
                f"{listing}\n{_PICK}")
        return cands[0]
    if not cands:
        raise InputError(
            f"{str(path)!r}: no numeric stream {what}. Streams in the file:\n  {listing}\n"
            f"{_PICK}"
        )
    names = ", ".join(repr(stream_name(s)) for s in cands)
    raise InputError(
        f"{str(path)!r}: {len(cands)} streams {what} ({names}). Streams in the file:\n  "
        f"{listing}\n{_PICK}"
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


#: Streams of a session that load_session does not load (nothing reads them back).
_NOT_LOADED = (ROLE_ENVELOPE, ROLE_THRESHOLDS)


def _decode_prefix(stream: dict | None, upto: int, positions: Mapping[int, np.ndarray],
                   decode: Any, what: str, damage: list[Damage]) -> list:
    """Decode the first ``upto`` markers of a marker stream, in file order, up to the
    first that cannot be read or whose ``seq`` does not continue the one before (that
    is damage, added to ``damage``); returns the markers, sorted by seq."""
    if stream is None:
        return []
    sid = int(stream["info"]["stream_id"])
    pos = positions[sid]
    items: list[tuple[int, Any]] = []
    for i, text in enumerate(marker_texts(stream)[:upto]):
        try:
            seq, item = decode(text)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # (AttributeError: JSON that is not an object; RecursionError: nested deeper
            # than the parser goes)
            damage.append(Damage(CORRUPT, int(pos[i]), f"{what} marker #{i} at byte "
                                 f"{int(pos[i])} is unreadable ({exc}): {text[:60]!r}",
                                 sids=(sid,)))
            break
        if items and seq != items[-1][0] + 1:
            damage.append(Damage(CORRUPT, int(pos[i]), f"{what} marker #{i} at byte "
                                 f"{int(pos[i])} has seq {seq} after {items[-1][0]}: markers "
                                 "are missing or their bytes changed", sids=(sid,)))
            break
        items.append((seq, item))
    # (a gap-free run in file order: sorted by seq it is still the file order)
    return [it[1] for it in sorted(items, key=lambda it: it[0])]


def _check_counter(col: np.ndarray, pos: np.ndarray, name: str, sid: int,
                   damage: list[Damage]) -> None:
    """Check the EMG counter: closedloop's goes up by one per sample, and the first sample
    where it does not is damage."""
    k = col.size
    if k == 0:
        return
    start = col[0] if k < 2 or col[1] == col[0] + 1 else col[1] - 1
    expect = start + np.arange(k, dtype=np.float64)
    bad = np.flatnonzero(col != expect)
    if bad.size:
        r = int(bad[0])
        damage.append(Damage(CORRUPT, int(pos[r]), f"the counter of {name!r} reads "
                             f"{col[r]:.17g} at sample {r} (byte {int(pos[r])}) where "
                             f"{expect[r]:.17g} was expected: samples are missing there or "
                             "their bytes changed", sids=(sid,)))


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

    Returns
    -------
    Session
        For a damaged file, what lies before its first damage (see
        :attr:`Session.damage` and :attr:`Session.damage_report`).

    Raises
    ------
    RecordingDamagedError
        The file is damaged so that no EMG stream can be read (the message says what
        is damaged).
    InputError
        Missing or unreadable file, not an XDF file, no or several candidate EMG streams
        (the message lists every stream).
    """
    lay = _scan(path)
    try:
        emg_head, own_heads = _choose_streams(lay, emg_stream)
    except BaseException:
        lay.close()
        raise
    wanted = {emg_head["sid"]} | {h["sid"] for role, h in own_heads.items()
                                  if role not in _NOT_LOADED}
    xdf = _read_layout(lay, wanted, False, synchronize_clocks)
    by_sid = {int(st["info"]["stream_id"]): st for st in xdf.streams}
    emg_sid = emg_head["sid"]
    emg = by_sid[emg_sid]
    own = {role: by_sid[h["sid"]] for role, h in own_heads.items() if h["sid"] in by_sid}
    pos = xdf.positions

    def before(st: dict | None, at: int) -> int:
        """Samples of a stream before byte ``at``."""
        return 0 if st is None else int(np.searchsorted(pos[st["info"]["stream_id"]], at))

    # what lies before the first damage that concerns these streams, closedloop's
    # counters there included
    damage = list(xdf.damage)
    cut = xdf.intact_for(by_sid)
    nch_total = int(_first(emg["info"], "channel_count", 0))
    fmt = str(_first(emg["info"], "channel_format", ""))
    data = np.asarray(emg["time_series"]).reshape(-1, nch_total)
    ccol = counter_column(emg)
    index = None if ccol is None else unwrap_counter(data[:, ccol], fmt)
    if own and index is not None:
        _check_counter(index[:before(emg, cut)], pos[emg_sid], stream_name(emg), emg_sid,
                       damage)
    decoded = {role: _decode_prefix(own.get(role), before(own.get(role), cut), pos,
                                    decode, what, damage)
               for role, decode, what in ((ROLE_EVENTS, decode_event, "event"),
                                          (ROLE_STIM, decode_command, "stimulation"),
                                          (ROLE_MARKERS, decode_marker, "trial"),
                                          (ROLE_MWAVE, decode_mwave, "evoked-response"))}
    cut = min([cut] + [d.offset for d in damage if d.concerns(by_sid)])
    damage.sort(key=lambda d: d.offset)
    events, commands, markers, mwaves = (
        decoded[role][:before(own.get(role), cut)]
        for role in (ROLE_EVENTS, ROLE_STIM, ROLE_MARKERS, ROLE_MWAVE))

    n = before(emg, cut)
    data = data[:n]
    ts_all = np.asarray(emg["time_stamps"], dtype=np.float64)
    if own:
        ts_all = restore_timestamps(ts_all)
    ts = ts_all[:n]
    labels, units = channel_fields(emg, "label"), channel_fields(emg, "unit")
    if len(labels) != nch_total or not all(labels):
        labels = [f"EMG{k + 1}" for k in range(nch_total)]
    units += [""] * (nch_total - len(units))
    cols = [k for k in range(nch_total) if k != ccol]
    counter = None if index is None else np.rint(index[:n]).astype(np.int64)
    unit_set = {units[k] for k in cols}
    # a view where the counter is the first or last column (no copy of a long recording);
    # samples recorded in float32 (exactly what the session saw) are widened once here
    raw = (data if ccol is None else data[:, :-1] if ccol == nch_total - 1
           else data[:, 1:] if ccol == 0 else data[:, cols])
    if raw.dtype not in (np.float32, np.float64):  # other tools' integer streams
        raw = raw.astype(np.float64)
    # every value usable (the usual case: two reductions, no mask of the whole file)?
    lo, hi = (float(np.min(raw)), float(np.max(raw))) if raw.size else (0.0, 0.0)
    clean = -ABSURD_LIMIT < lo and hi < ABSURD_LIMIT  # NaN compares False
    samples = raw if clean else hold_nonfinite(raw)
    fs = float(_first(emg["info"], "nominal_srate", 0.0))
    config_text, metadata = _session_info(own_heads.get(ROLE_SESSION))
    unit = (unit_set.pop() if len(unit_set) == 1 else "mixed") or "unknown"
    if stream_role(emg) in _NOT_LOADED:  # a session's statistic picked as the "EMG"
        unit = statistic_unit(emg, recorded_detector_kind(config_text, metadata)) or "unknown"
    return Session(
        path=xdf.path,
        name=stream_name(emg),
        fs=fs,
        channels=tuple(labels[k] for k in cols),
        units=unit,
        samples=samples,
        timestamps=ts,
        counter=counter,
        events=events,
        commands=commands,
        markers=[m for m in markers if m.label != SOURCE_COUNTER],
        mwaves=mwaves,
        config_text=config_text,
        metadata=metadata,
        stream_names=tuple(s.name for s in xdf.layouts.values()),
        complete=not damage,
        truncated=any(d.kind == TRUNCATED for d in damage),
        raw=None if samples is raw else raw,
        source_counter=_source_counter([m for m in markers if m.label == SOURCE_COUNTER],
                                       counter, n),
        damage=tuple(damage),
        damage_report=_damage_report(xdf, damage, cut, stream_name(emg), fs, ts_all,
                                     pos[emg_sid], n, len(events), len(commands),
                                     len(markers)) if damage else "",
        sample_format=sample_format(fmt),
        restarts_marked=ROLE_MARKERS in own_heads and closedloop_field(
            own_heads[ROLE_MARKERS], "restart_marker") == CHANNEL_RESTART,
    )


def _choose_streams(lay: XdfLayout, emg_stream: str | None) -> tuple[dict, dict[str, dict]]:
    """The EMG stream's header and its session's streams' headers (by role), from the
    headers alone (``{"info", "n_samples", "sid"}`` dicts)."""
    heads = [{"info": s.info, "n_samples": s.n_samples, "sid": sid}
             for sid, s in lay.streams.items()]
    try:
        emg_head = _pick_emg(heads, emg_stream, lay.path)
    except InputError as exc:
        if not lay.damage:
            raise
        corrupt = any(d.kind == CORRUPT for d in lay.damage)
        lines = "\n  - ".join(describe_damage(lay.damage, lay.size))
        raise RecordingDamagedError(
            f"{lay.path.name}: the recording is {'CORRUPT' if corrupt else 'TRUNCATED'} "
            f"and what can be read of it has no usable EMG stream:\n  - {lines}\n{exc}"
        ) from None
    return emg_head, _session_streams(heads, emg_head)


def _session_info(head: dict | None) -> tuple[str | None, dict[str, Any]]:
    """Config text and metadata from the session stream's header."""
    if head is None:
        return None, {}
    metadata: dict[str, Any] = {}
    meta_text = closedloop_field(head, "metadata")
    if meta_text:
        try:
            metadata = json.loads(meta_text)
        except (ValueError, RecursionError):  # (nested deeper than the parser goes)
            metadata = {"unreadable": meta_text[:200]}
        if not isinstance(metadata, dict):  # JSON, but not what a session writes
            metadata = {"unreadable": meta_text[:200]}
    return closedloop_field(head, "config") or "", metadata


def describe_damage(damage: Sequence[Damage], size: int, limit: int = 8) -> list[str]:
    """One line per damage (at most ``limit``), for messages."""
    lines = []
    for d in damage[:limit]:
        where = "end of the file" if d.offset >= size else f"byte {d.offset:,} of {size:,}"
        line = f"{d.kind} at {where}: {d.message}"
        if d.kind == CORRUPT and d.sids is None:  # the chunk structure was lost there
            line += ("; nothing after it could be read" if d.resumed_at is None else
                     f"; read on from byte {d.resumed_at:,}")
        lines.append(line)
    if len(damage) > limit:
        lines.append(f"... and {len(damage) - limit} more")
    return lines


def _damage_report(xdf: XdfFile, damage: list[Damage], cut: int, name: str, fs: float,
                   ts_all: np.ndarray, pos: np.ndarray, n: int, n_events: int,
                   n_commands: int, n_markers: int) -> str:
    corrupt = any(d.kind == CORRUPT for d in damage)
    what = ("CORRUPT (damaged inside the file)" if corrupt else
            "TRUNCATED (the recorder did not finish it: a crash, a kill or a full disk)")
    lines = [f"{xdf.path.name}: the recording is {what}"]
    lines += [f"  - {line}" for line in describe_damage(damage, xdf.size)]
    if n:
        dur = f"{n / fs:.2f} s, " if fs > 0 else ""
        span = (f"samples 0-{n - 1:,} ({dur}stream time {ts_all[0]:.3f}-{ts_all[n - 1]:.3f} "
                "s)")
    else:
        span = "no samples"
    share = 100.0 * min(cut, xdf.size) / max(xdf.size, 1)
    lines.append(f"  intact: the first {min(cut, xdf.size):,} bytes ({share:.1f} % of the "
                 f"file): EMG {name!r} {span}; {n_events} events, {n_commands} stimulation "
                 f"commands, {n_markers} markers")
    later = np.flatnonzero(pos >= cut)
    if later.size:
        lines.append(f"  after the damage the file still holds {later.size:,} EMG samples "
                     f"(from stream time {ts_all[later[0]]:.3f} s); they are not used, as "
                     "they do not continue the intact part")
    return "\n".join(lines)


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
