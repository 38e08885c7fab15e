"""Reading EMG from files for offline use (``closedloop detect``, evaluation).

Formats:

* ``.npz`` with ``emg`` (n_samples x n_channels), ``fs`` and optional ``channels``;
* BrainFlow files (``DataFilter.write_file`` output) with ``board=``: the EMG rows and
  the sampling rate come from BrainFlow's description of that board;
* XDF recordings (``.xdf``): the EMG stream of a closedloop recording, or the stream
  picked by name or type (``stream=``, default: the only stream of type ``EMG``) of
  another LSL tool's, read with :func:`closedloop.io.xdf.load_session`. The samples
  are what a live session's detector saw (NaN/inf held at the channel's last finite
  value; the recording keeps them as received), sample 0 is the stream's first;
* EDF and BDF files (``.edf``, ``.bdf``; EDF+/BDF+ too), read with
  :func:`closedloop.io.edf.load_edf` (needs the ``bids`` extra, edfio): the rate, channel
  names and units from the file, samples in volts; the EMG signals are ``columns``
  (0-based), else the ``type`` EMG rows of a BIDS ``*_channels.tsv`` beside the file,
  else the voltage signals at the highest rate (an annotations signal, a slower
  accelerometer are not EMG);
* plain text / CSV (one or more numeric columns, comma, tab or space separated) with
  ``fs`` given. Leading lines that are not numbers are skipped (``#`` headers such as
  OpenSignals', or a line of column names, which then names the channels). ``columns``
  picks columns (0-based); otherwise every column except one named ``time`` or
  ``class`` is a channel.

Every problem is an :class:`~closedloop.errors.InputError` that says what to do.
"""

from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from closedloop.config.signal import FS_RANGE
from closedloop.errors import InputError

_SPLIT = re.compile(r"[,\t; ]+")
_NON_CHANNEL = {"time", "time_s", "t", "timestamp", "class", "label", "labels"}


@dataclass(frozen=True)
class EmgData:
    """EMG samples (n, n_channels) with their rate and channel names; ``note`` says what
    the reader left out of the file (signals that are not EMG), for a person;
    ``left_out`` names the EMG channels it left out as marked bad; ``annotations`` are
    the file's own marks, (onset in s, text), for the formats that hold them (EDF+/BDF+)."""

    samples: np.ndarray
    fs: float
    channels: tuple[str, ...]
    source: str = ""
    note: str = ""
    left_out: tuple[str, ...] = ()
    annotations: tuple[tuple[float, str], ...] = ()

    @property
    def duration_s(self) -> float:
        """Length of the data, s."""
        return self.samples.shape[0] / self.fs


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _check(samples: np.ndarray, path: str) -> None:
    if samples.ndim != 2 or samples.shape[0] < 2 or samples.shape[1] < 1:
        raise InputError(f"{path}: expected samples x channels, got shape {samples.shape}")
    if samples.shape[1] > samples.shape[0]:
        raise InputError(f"{path}: {samples.shape[1]} channels of {samples.shape[0]} samples "
                         "each: the array looks transposed; store it as samples x channels "
                         "(one row per sample)")
    bad = ~np.isfinite(samples)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(
            f"{path}: {int(bad.sum())} value(s) are NaN or infinite (first at sample {r}, "
            f"column {c}); fix or cut the file before detection"
        )


def load_npz(path: str | Path) -> EmgData:
    """EMG from an ``.npz`` file (arrays ``emg`` and ``fs``, optionally ``channels``).

    ``emg`` is real numbers (integer ADC counts or floats; not complex, boolean, text or
    objects), samples x channels (a 1-D array is one channel); ``fs`` one number in the
    range the filters support; ``channels`` one distinct name per column.
    """
    p = str(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "emg" not in z or "fs" not in z:
                raise InputError(f"{p}: an .npz input needs arrays 'emg' and 'fs'; it has "
                                 f"{sorted(z.files)}")
            emg, fs_array = z["emg"], z["fs"]
            names = z["channels"] if "channels" in z else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{p}: cannot read as .npz ({exc or type(exc).__name__}); save it "
                         "with numpy.savez(path, emg=samples, fs=rate)") from None
    if not (np.issubdtype(emg.dtype, np.integer) or np.issubdtype(emg.dtype, np.floating)):
        raise InputError(f"{p}: 'emg' holds {emg.dtype} values; expected real numbers "
                         "(integers or floats), samples x channels")
    emg = np.asarray(emg, dtype=np.float64)
    if emg.ndim == 1:
        emg = emg[:, None]
    if emg.ndim != 2:
        raise InputError(f"{p}: 'emg' has shape {emg.shape}; expected samples x channels "
                         "(2-D, or 1-D for one channel)")
    fs = _npz_rate(fs_array, p)
    if names is None:
        chans = [f"ch{i}" for i in range(emg.shape[1])]
    else:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise InputError(f"{p}: 'channels' has shape {names.shape} of {names.dtype}; "
                             "expected one name (text) per column of 'emg'")
        chans = [str(c) for c in names]
    if len(chans) != emg.shape[1]:
        raise InputError(f"{p}: {len(chans)} channel names for {emg.shape[1]} columns")
    _check_names(chans, p)
    _check(emg, p)
    return EmgData(emg, fs, tuple(chans), p)


def _npz_rate(value: np.ndarray, path: str) -> float:
    """The sampling rate stored as ``fs``: one real number in :data:`FS_RANGE`."""
    ok = value.size == 1 and (np.issubdtype(value.dtype, np.integer)
                              or np.issubdtype(value.dtype, np.floating))
    fs = float(value.reshape(-1)[0]) if ok else math.nan
    if not FS_RANGE[0] <= fs <= FS_RANGE[1]:
        shown = (f"= {value.reshape(-1)[0].item()!r}" if value.size == 1
                 else f"is an array of shape {value.shape}")
        raise InputError(f"{path}: 'fs' {shown}, not a sampling rate; expected one number "
                         f"of Hz from {FS_RANGE[0]:g} to {FS_RANGE[1]:g}")
    return fs


def _check_names(chans: list[str], path: str) -> None:
    """Channel names that can name a channel: not empty, each once."""
    empty = [i for i, c in enumerate(chans) if not c.strip()]
    if empty:
        raise InputError(f"{path}: channel {empty[0]} has an empty name; give every channel "
                         "a name")
    seen = {c for c in chans if chans.count(c) > 1}
    if seen:
        raise InputError(f"{path}: channel name(s) {', '.join(sorted(seen))} appear more "
                         "than once; give every channel its own name")


def load_text(path: str | Path, fs: float, columns: list[int] | None = None) -> EmgData:
    """EMG from a text or CSV file sampled at ``fs`` (``columns``: 0-based, to keep)."""
    p = str(path)
    names: list[str] | None = None
    rows: list[list[float]] = []
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                toks = [t for t in _SPLIT.split(line) if t]
                if line.startswith("#") or not all(_is_number(t) for t in toks):
                    if rows:
                        raise InputError(f"{p}:{lineno}: not a row of numbers: {line[:60]!r}")
                    if not line.startswith("#"):
                        names = toks
                    continue
                rows.append([float(t) for t in toks])
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc})") from None
    if not rows:
        raise InputError(f"{p}: no numeric rows found")
    width = len(rows[0])
    bad = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if bad is not None:
        raise InputError(f"{p}: row {bad} has {len(rows[bad])} values, the first row has {width}")
    data = np.asarray(rows)
    if names is not None and len(names) != width:
        names = None
    if columns is None:
        columns = [i for i in range(width) if not (names and names[i].lower() in _NON_CHANNEL)]
    for c in columns:
        if not 0 <= c < width:
            raise InputError(f"{p}: column {c} does not exist; the file has columns 0..{width - 1}")
    chans = [names[c] if names else f"ch{c}" for c in columns]
    _check_names(chans, p)
    samples = np.ascontiguousarray(data[:, columns])
    _check(samples, p)
    return EmgData(samples, float(fs), tuple(chans), p)


def load_brainflow(path: str | Path, board: str | int) -> EmgData:
    """A BrainFlow ``DataFilter.write_file`` file of the given board."""
    from brainflow.board_shim import BoardIds, BoardShim
    from brainflow.data_filter import DataFilter

    p = str(path)
    try:
        board_id = int(board) if str(board).lstrip("-").isdigit() else BoardIds[
            str(board).upper() + ("" if str(board).upper().endswith("_BOARD") else "_BOARD")
        ].value
    except KeyError:
        raise InputError(f"unknown BrainFlow board {board!r}; use a BoardIds name such as "
                         "'synthetic' or 'cyton'") from None
    try:
        data = DataFilter.read_file(p)
    except Exception as exc:  # brainflow raises its own BrainFlowError
        raise InputError(f"{p}: BrainFlow could not read the file ({exc})") from None
    emg_rows = BoardShim.get_emg_channels(board_id)
    fs = float(BoardShim.get_sampling_rate(board_id))
    if data.shape[0] <= max(emg_rows):
        raise InputError(f"{p}: {data.shape[0]} rows, but board {board} has EMG rows up to "
                         f"{max(emg_rows)}")
    samples = np.ascontiguousarray(data[emg_rows].T)
    _check(samples, p)
    return EmgData(samples, fs, tuple(f"EMG{i + 1}" for i in range(len(emg_rows))), p)


def load_xdf(path: str | Path, stream: str | None = None,
             columns: list[int] | None = None) -> EmgData:
    """The EMG stream of an XDF recording (see the module docstring)."""
    from closedloop.io.xdf import load_session

    s = load_session(path, emg_stream=stream)
    samples, chans = s.samples, s.channels
    if columns is not None:
        for c in columns:
            if not 0 <= c < len(chans):
                raise InputError(f"{path}: column {c} does not exist; the EMG stream "
                                 f"{s.name!r} has channels 0..{len(chans) - 1} "
                                 f"({', '.join(chans)})")
        samples, chans = samples[:, columns], tuple(chans[c] for c in columns)
    samples = np.ascontiguousarray(samples, dtype=np.float64)
    _check(samples, str(path))
    return EmgData(samples, s.fs, tuple(chans), str(path))


def load_edf(path: str | Path, columns: list[int] | None = None) -> EmgData:
    """The EMG of an EDF/BDF file (see the module docstring)."""
    from closedloop.io.edf import load_edf as read

    d = read(path, columns)
    _check_names(list(d.channels), str(path))
    _check(d.samples, str(path))
    return EmgData(d.samples, d.fs, d.channels, str(path), d.note, d.left_out,
                   d.annotations)


#: Suffixes of the files :func:`load_edf` reads.
EDF_SUFFIXES = (".edf", ".bdf")


def load_emg(
    path: str | Path,
    *,
    fs: float | None = None,
    columns: list[int] | None = None,
    board: str | None = None,
    stream: str | None = None,
) -> EmgData:
    """Load EMG from any supported file (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():  # a folder; a named pipe would be waited on for ever
        raise InputError(f"{p}: is not a regular file (a folder, a device, a named pipe or a "
                         "socket); give the EMG file itself")
    if p.suffix.lower() == ".npz":
        return load_npz(p)
    if p.suffix.lower() == ".xdf":
        return load_xdf(p, stream, columns)
    if p.suffix.lower() in EDF_SUFFIXES:
        return load_edf(p, columns)
    if board is not None:
        return load_brainflow(p, board)
    if fs is None:
        raise InputError(f"{p}: a text/CSV input needs its sampling rate: give --fs HZ")
    return load_text(p, fs, columns)
