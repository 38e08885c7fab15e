"""EMG from EDF and BDF files (EDF+ and BDF+ too), for the offline commands.

EDF (16 bit) and BDF (24 bit) are what PhysioNet and every EMG-BIDS dataset hold
(``sub-*/emg/*_emg.bdf|.edf``, next to ``*_channels.tsv`` and ``*_events.tsv``); a file
carries its own sampling rates, channel labels and units. They are read with ``edfio``
(the optional extra ``bids``, which also writes closedloop's own BIDS export).

Which signals are EMG
---------------------
A file may hold other signals beside the EMG: an EDF+/BDF+ annotations signal (never
read as samples), an accelerometer, a trigger channel, EEG. The EMG is, in this order of
precedence:

1. the signals ``columns`` names (0-based, counting the file's signals without its
   annotations signal, the order EDFbrowser and MNE show them);
2. else, when a BIDS ``*_channels.tsv`` lies beside the file, its rows of ``type``
   ``EMG``, by ``name`` (the signal's label), but those of ``status`` ``bad`` (left out
   and said; ``columns`` reads them);
3. else, the signals whose physical dimension is a voltage (V, mV, uV) at the highest
   rate among them; when some are labelled ``EMG ...`` (EDF+'s label convention: the
   signal type, a space, the rest), only those.

EMG channels sampled at different rates are refused (closedloop detects on channels of
one rate; pick some with ``columns``).

Samples and names
-----------------
Samples are the file's physical values converted to volts, the unit of closedloop's own
simulated EMG and recordings, so a session exported with ``closedloop export --bids``
reads back as its recording holds it (to the BDF's resolution, see
:mod:`closedloop.io.bids`). A signal whose physical dimension is not a voltage is not
read as EMG (the message names it). A channel is named after its label without EDF+'s
``EMG`` type prefix (``EMG biceps`` -> ``biceps``, the name the recording and a config
give the muscle), unless that leaves two channels one name. A trailing ``BAD_ACQ_SKIP``
annotation (MNE's mark of samples that are not data; closedloop's export pads its last
data record with it) ends the samples there.

Damage
------
A file cut short (fewer bytes than its header announces, or not a whole number of data
records) is a :class:`~closedloop.errors.RecordingDamagedError`; anything else that is
not an EDF/BDF file, or not one closedloop can read (EDF+D discontinuous recordings, no
data records, a header that does not add up), an :class:`~closedloop.errors.InputError`.
Both name the file and say what is wrong.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.config.signal import FS_RANGE
from closedloop.errors import InputError, RecordingDamagedError
from closedloop.units import microvolts_per

#: The first 8 bytes of an EDF file and of a BDF file.
EDF_VERSION = b"0       "
BDF_VERSION = b"\xffBIOSEMI"
#: EDF+'s label prefix of an EMG signal (its signal type, then a space).
EMG_PREFIX = "EMG "


@dataclass(frozen=True)
class EdfEmg:
    """The EMG of an EDF/BDF file.

    Attributes
    ----------
    samples : ndarray, shape (n, n_channels)
        Volts.
    fs : float
    channels : tuple of str
        Names (labels without their ``EMG`` type prefix).
    labels : tuple of str
        The labels as the file gives them.
    note : str
        What was left out, for a person (signals that are not EMG, EMG marked bad,
        trailing padding); empty when nothing was.
    left_out : tuple of str
        The EMG channels left out as marked bad, named as ``channels`` would name them.
    annotations : tuple of (float, str)
        The EDF+/BDF+ annotations within the samples (onset in s, text), in file order,
        the ``BAD_ACQ_SKIP`` padding mark left out.
    """

    samples: np.ndarray
    fs: float
    channels: tuple[str, ...]
    labels: tuple[str, ...]
    note: str = ""
    left_out: tuple[str, ...] = ()
    annotations: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class _Signal:
    index: int  # 0-based among the ordinary signals
    label: str
    fs: float
    dimension: str
    raw: Any  # edfio's signal

    def describe(self) -> str:
        return f"{self.label!r} ({self.fs:g} Hz, {self.dimension or 'no unit'})"


def require_reader(path: Any) -> Any:
    """edfio, the EDF/BDF reader (the ``bids`` extra).

    Raises
    ------
    InputError
        It is not installed, saying how to install it.
    """
    try:
        import edfio
    except ImportError:
        raise InputError(f"{path}: closedloop reads EDF/BDF files with edfio, which is not "
                         "installed: install it with pip install 'closedloop[bids]'") from None
    return edfio


def _text(s: str) -> str:
    """A header field read as Latin-1 (EDF says ASCII; files hold Latin-1 'µV' and UTF-8
    alike): UTF-8 bytes decoded as such, anything else as Latin-1; trailing spaces off."""
    try:
        s = s.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return s.strip()


def _header(path: str, raw: bytes) -> tuple[str, int, int, float]:
    """Format (``EDF``/``BDF``), header bytes, announced data records (-1: unknown) and
    record duration, from the fixed 256-byte header; refuses what is not EDF/BDF."""
    if not raw:
        raise InputError(f"{path}: the file is empty; an EDF/BDF file starts with a 256-byte "
                         "header")
    if raw[:8] == EDF_VERSION:
        fmt = "EDF"
    elif raw[:8] == BDF_VERSION:
        fmt = "BDF"
    else:
        raise InputError(
            f"{path}: not an EDF or BDF file: it starts with {raw[:8]!r}, where an EDF file "
            "starts with '0' and seven spaces and a BDF file with byte 255 and 'BIOSEMI'")
    if len(raw) < 256:
        raise RecordingDamagedError(
            f"{path}: the {fmt} file is cut short: {len(raw)} bytes, less than its "
            "256-byte header; copy it again from the original")
    reserved = raw[192:236].decode("latin-1").strip().upper()
    if reserved.endswith("+D"):
        raise InputError(
            f"{path}: an {reserved} file (discontinuous: its data records do not follow "
            "each other in time); closedloop reads continuous recordings only (EDF/BDF, "
            "EDF+C/BDF+C): export the recording as continuous, or cut it at its gaps")
    try:
        n_header = int(raw[184:192].decode("latin-1"))
        n_records = int(raw[236:244].decode("latin-1"))
        duration = float(raw[244:252].decode("latin-1"))
        n_signals = int(raw[252:256].decode("latin-1"))
    except ValueError:
        raise InputError(f"{path}: its {fmt} header is corrupt: the header size, record count, "
                         "record duration or signal count is not a number") from None
    if n_signals < 1 or n_header != 256 * (n_signals + 1):
        raise InputError(
            f"{path}: its {fmt} header is corrupt: {n_signals} signal(s) need a header of "
            f"{256 * (max(n_signals, 0) + 1)} bytes, it says {n_header}")
    return fmt, n_header, n_records, duration


def _record_samples(path: str, fmt: str, header: bytes, n_signals: int) -> int:
    """Samples in one data record, all signals (annotations too), from the signal headers."""
    at = 256 + 216 * n_signals  # label, transducer, dimension, 4 ranges, prefilter: 216 bytes
    try:
        counts = [int(header[at + 8 * k: at + 8 * k + 8].decode("latin-1"))
                  for k in range(n_signals)]
    except ValueError:
        counts = [-1]
    if min(counts) < 0 or sum(counts) == 0:
        raise InputError(f"{path}: its {fmt} header is corrupt: the samples per data record "
                         "of its signals are not all whole numbers, or all 0")
    return sum(counts)


def _read(path: str, edfio: Any) -> Any:
    """The file read by edfio, after checking that its size matches its header."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(256)
            fmt, n_header, n_records, duration = _header(path, head)
            head += f.read(n_header - 256)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size < n_header:
        raise RecordingDamagedError(
            f"{path}: the {fmt} file is cut short: {size} bytes, less than its {n_header}-byte "
            "header; copy it again from the original")
    record_bytes = _record_samples(path, fmt, head, n_header // 256 - 1) * (
        3 if fmt == "BDF" else 2)
    data = size - n_header
    whole, extra = divmod(data, record_bytes)
    if n_records >= 0 and data < n_records * record_bytes:
        raise RecordingDamagedError(
            f"{path}: the {fmt} file is cut short: its header announces {n_records} data "
            f"record(s) of {record_bytes} bytes, it holds {whole} whole record(s)"
            f"{f' and {extra} bytes of the next' if extra else ''} ({size} of "
            f"{n_header + n_records * record_bytes} bytes); copy it again from the original")
    if extra and n_records < 0:  # the count unknown (-1): a partial record is the end cut
        raise RecordingDamagedError(
            f"{path}: the {fmt} file is cut short: it ends {extra} bytes into a data record "
            f"of {record_bytes} bytes, after {whole} whole record(s); copy it again from "
            "the original")
    if extra or (n_records >= 0 and whole != n_records):
        raise InputError(
            f"{path}: the {fmt} file is corrupt: {data} bytes of data after its header are "
            f"not the {n_records if n_records >= 0 else 'whole number of'} data record(s) "
            f"of {record_bytes} bytes its header describes")
    if whole == 0:
        raise InputError(f"{path}: the {fmt} file holds no data records (no samples)")
    if not duration > 0:
        raise InputError(f"{path}: its {fmt} header gives data records of {duration:g} s, so "
                         "its signals have no sampling rate (a corrupt header, or a file of "
                         "annotations only)")
    read = edfio.read_bdf if fmt == "BDF" else edfio.read_edf
    try:
        with warnings.catch_warnings():  # the sizes edfio would warn about are checked
            warnings.simplefilter("ignore")
            return read(p, header_encoding="latin-1")
    except Exception as exc:  # edfio raises ValueError, IndexError... on a bad header
        raise InputError(f"{path}: its {fmt} header is corrupt ({exc or type(exc).__name__}); "
                         "it cannot be read") from None


def _signals(rec: Any, path: str) -> list[_Signal]:
    out = []
    try:
        for k, s in enumerate(rec.signals):  # without the annotations signal
            out.append(_Signal(k, _text(s.label), float(s.sampling_frequency),
                               _text(s.physical_dimension), s))
    except Exception as exc:  # a field that is not a number
        raise InputError(f"{path}: a signal header is corrupt ({exc or type(exc).__name__})"
                         ) from None
    if not out:
        raise InputError(f"{path}: the file holds annotations only, no signal")
    return out


def sidecar(path: str | Path, suffix: str) -> Path | None:
    """The BIDS file ``suffix`` (``channels.tsv``, ``events.tsv``) beside a data file
    (``sub-01_task-x_emg.bdf`` -> ``sub-01_task-x_channels.tsv``), or None when there is
    none."""
    p = Path(path)
    stem, sep, _ = p.stem.rpartition("_")
    if not sep:
        return None
    found = p.with_name(f"{stem}_{suffix}")
    return found if found.is_file() else None


def read_tsv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a BIDS table with their line numbers, values stripped (``n/a`` ->
    ``""``), after checking it has the ``required`` columns.

    Raises
    ------
    InputError
        Unreadable, or a required column missing.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read this BIDS table ({exc})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: a BIDS {path.name.rpartition('_')[2]} needs column(s) "
                         f"{', '.join(map(repr, missing))}; it has {header}")
    return [(i, {k: ("" if (v or "").strip() == "n/a" else (v or "").strip())
                 for k, v in row.items() if k}) for i, row in enumerate(rows, start=2)]


def _tsv_emg_names(tsv: Path) -> tuple[list[str], list[str]]:
    """The ``name`` of every row of ``type`` EMG in a BIDS channels table: those of
    ``status`` ``bad``, and the others."""
    rows = [r for _, r in read_tsv(tsv, ("name", "type")) if r["type"].upper() == "EMG"]
    bad = [r["name"] for r in rows if r.get("status", "").lower() == "bad"]
    return [r["name"] for r in rows if r["name"] not in bad], bad


def _pick(sigs: list[_Signal], path: str, columns: list[int] | None
          ) -> tuple[list[_Signal], str, list[_Signal]]:
    """The EMG signals (module docstring), where the choice came from, and the EMG
    signals left out as marked bad (``status`` in a BIDS channels table)."""
    listing = ", ".join(f"{s.index}: {s.describe()}" for s in sigs)
    if columns is not None:
        for c in columns:
            if not 0 <= c < len(sigs):
                raise InputError(f"{path}: column {c} does not exist; the file's signals are "
                                 f"{listing}")
        return [sigs[c] for c in columns], "--columns", []
    tsv = sidecar(path, "channels.tsv")
    if tsv is not None:
        names, bad = _tsv_emg_names(tsv)
        if not names and bad:
            raise InputError(f"{tsv}: every EMG channel ({', '.join(map(repr, bad))}) has "
                             "status 'bad', so none is read; to read them anyway, give their "
                             f"columns (0-based) with --columns: {listing}")
        if not names:
            raise InputError(f"{tsv}: no channel of type EMG; give the EMG signals' columns "
                             f"(0-based) with --columns: {listing}")
        by_label = {s.label: s for s in sigs}
        missing = [n for n in names + bad if n not in by_label]
        if missing:
            raise InputError(f"{path}: {tsv.name} lists EMG channel(s) "
                             f"{', '.join(map(repr, missing))} that the file does not hold "
                             f"(its signals: {listing}); correct the table, or give the "
                             "columns with --columns")
        return [by_label[n] for n in names], tsv.name, [by_label[n] for n in bad]
    volts = [s for s in sigs if microvolts_per(s.dimension) is not None]
    if not volts:
        raise InputError(f"{path}: no signal is in volts (V, mV or uV), so none is read as "
                         f"EMG; its signals: {listing}")
    typed = [s for s in volts if s.label.upper().startswith(EMG_PREFIX)]
    volts = typed or volts
    top = max(s.fs for s in volts)
    return [s for s in volts if s.fs == top], "", []


def _check_signals(chosen: list[_Signal], path: str, how: str) -> float:
    """The rate of the chosen signals: one rate, in range, every one a voltage."""
    rates = sorted({s.fs for s in chosen})
    if len(rates) > 1:
        by = "; ".join(f"{s.label!r} {s.fs:g} Hz" for s in chosen)
        raise InputError(
            f"{path}: the EMG channels ({how or 'chosen'}) have different sampling rates "
            f"({by}); closedloop detects on channels of one rate: pick channels of one "
            "rate with --columns")
    for s in chosen:
        if microvolts_per(s.dimension) is None:
            raise InputError(
                f"{path}: signal {s.index} {s.label!r} is in {s.dimension!r}, not a voltage "
                "(V, mV or uV): closedloop reads EMG in volts only; pick EMG signals with "
                "--columns")
        if not s.raw.digital_min < s.raw.digital_max or s.raw.physical_min == \
                s.raw.physical_max:
            raise InputError(
                f"{path}: signal {s.index} {s.label!r} has digital range "
                f"{s.raw.digital_min}..{s.raw.digital_max} and physical range "
                f"{s.raw.physical_min:g}..{s.raw.physical_max:g}: its values cannot be "
                "converted to physical ones (corrupt header)")
    fs = rates[0]
    if not FS_RANGE[0] <= fs <= FS_RANGE[1]:
        raise InputError(f"{path}: the EMG channels are sampled at {fs:g} Hz; closedloop's "
                         f"filters need {FS_RANGE[0]:g} to {FS_RANGE[1]:g} Hz")
    return fs


def _annotations(rec: Any) -> list[Any]:
    """The file's EDF+/BDF+ annotations (none when it has none, or they are unreadable:
    they are not EMG)."""
    try:
        return list(rec.annotations)
    except Exception:  # noqa: BLE001 - an unreadable annotations signal is not EMG
        return []


def _trailing_skip(annotations: list[Any], fs: float, n: int) -> int:
    """Samples before a ``BAD_ACQ_SKIP`` annotation that lasts to the end (``n``: none)."""
    keep = n
    for a in annotations:
        if not str(a.text).startswith("BAD_ACQ_SKIP") or a.duration is None:
            continue
        start = int(round(a.onset * fs))
        if 0 < start < keep and int(round((a.onset + a.duration) * fs)) >= n:
            keep = start
    return keep


def _names(labels: list[str]) -> list[str]:
    """Labels without EDF+'s ``EMG`` type prefix, unless two would then be alike."""
    names = [lb[len(EMG_PREFIX):].strip() if lb.upper().startswith(EMG_PREFIX) else lb
             for lb in labels]
    return names if all(names) and len(set(names)) == len(names) else list(labels)


def load_edf(path: str | Path, columns: list[int] | None = None) -> EdfEmg:
    """The EMG of an EDF/BDF file (module docstring).

    Raises
    ------
    RecordingDamagedError
        The file is cut short.
    InputError
        edfio is not installed; the file is not EDF/BDF, corrupt or discontinuous; the
        EMG channels are not in volts or differ in rate; ``columns`` names no signal.
    """
    p = str(path)
    edfio = require_reader(p)
    rec = _read(p, edfio)
    sigs = _signals(rec, p)
    chosen, how, bad = _pick(sigs, p, columns)
    fs = _check_signals(chosen, p, how)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cols = [np.asarray(s.raw.data, dtype=np.float64)
                    * (microvolts_per(s.dimension) or 1.0) * 1e-6 for s in chosen]
    except Exception as exc:  # noqa: BLE001 - edfio on a damaged record
        raise InputError(f"{p}: its samples cannot be read ({exc or type(exc).__name__})"
                         ) from None
    samples = np.column_stack(cols)
    annotations = _annotations(rec)
    n = _trailing_skip(annotations, fs, samples.shape[0])
    picked = {s.index for s in chosen + bad}
    left = [s.describe() for s in sigs if s.index not in picked]
    notes = []
    if bad:
        notes.append(f"EMG marked bad, left out: {', '.join(s.describe() for s in bad)}")
    if left:
        notes.append(f"not EMG: {', '.join(left)}")
    if n < samples.shape[0]:
        notes.append(f"{samples.shape[0] - n} padding sample(s) after BAD_ACQ_SKIP left out")
    if how and how != "--columns":
        notes.append(f"EMG channels from {how}")
    labels = [s.label for s in chosen]
    return EdfEmg(np.ascontiguousarray(samples[:n]), fs, tuple(_names(labels)),
                  tuple(labels), "; ".join(notes),
                  tuple(name for s in bad for name in _names([s.label])),
                  tuple((float(a.onset), str(a.text)) for a in annotations
                        if not str(a.text).startswith("BAD_ACQ_SKIP")
                        and 0 <= round(a.onset * fs) < n))


__all__ = ["BDF_VERSION", "EDF_VERSION", "EdfEmg", "load_edf", "read_tsv", "require_reader",
           "sidecar"]
