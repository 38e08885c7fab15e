"""Detectors against reference onsets, as a table (``closedloop evaluate``).

Runs one or more detector configurations over recordings that come with reference
onsets and prints, per recording and overall: sensitivity, false detections per minute
and decision latency (median and 90th percentile). Every detector is causal and fed the
samples in chunks exactly as a live session would be (chunking changes nothing), so the
latency is the delay of the decision, counted in samples: detection sample minus
reference sample, divided by the rate. No wall clock is involved.

Matching (:func:`closedloop.analysis.scoring.score_onsets`): a detected onset on the reference's
channel within ``[ref - early_s, ref + late_s]`` is a hit (each reference and each
detection used at most once); other detected onsets are false detections. Defaults:
``early_s = 0.1``, ``late_s = 0.5``.

Inputs and where their references come from
--------------------------------------------
* **Simulated recordings** (``.npz``): ``emg`` (n x channels), ``fs``, ``channels``,
  ``truth_samples`` (int, onset sample of every scripted attempt) and
  ``truth_channels`` (its muscle), written by :func:`write_sim_recording`; or made on
  the fly with ``--simulate 20,10,0,-3 --minutes 5 --seed 0`` (every SNR uses the same
  script and noise seed, so SNR is the only difference between rows).
* **Any EMG file** ``closedloop detect`` reads (``.npz``, text/CSV with ``--fs``) with a
  **labels CSV** (``--labels``): a header line, then one reference onset per row, with
  columns ``sample,channel`` (0-based sample index from the first sample of the file)
  or ``time_s,channel`` (seconds from the first sample; converted with the file's
  rate), and optionally ``file`` (the input's file name; rows for other files are
  skipped, so one labels file can serve many inputs, but labels whose every row names
  another file than the inputs are refused). ``channel`` is a channel name of
  the file, or ``*`` for "any channel": the onsets of all channels are fused (the first
  onset of a cluster, later onsets within ``fuse_gap_s`` = 1 s dropped) before scoring.
* **closedloop XDF recordings** (``.xdf``, read with
  :func:`closedloop.io.xdf.load_session`): references are the trial markers labelled
  ``truth`` (fields ``muscle`` or ``channel``; ``sample`` from the marker, else from its
  time), which a simulated session records for each scripted attempt; or a labels CSV.
  The pseudo-detector ``recorded`` scores the events the live session decided.
* **EDF/BDF files** (``.edf``, ``.bdf``; an EMG-BIDS dataset's ``*_emg.bdf``, read with
  :func:`closedloop.io.files.load_emg`): references are the rows of the BIDS
  ``*_events.tsv`` beside the file whose ``trial_type`` is ``truth_label`` (default
  ``truth``: what ``closedloop export --bids`` writes for a simulated session's true
  onsets), on the channel their ``muscle`` (or ``channel``) names; its
  ``emg_onset``/``emg_offset`` rows are the ``recorded`` pseudo-detector's events (the
  live session's decisions, as in the XDF); or a labels CSV.
* **The shared real recordings** (give the data folder, the one holding
  ``reference_outputs.json``, as an input). See :func:`shared_recordings`. They are
  reported in their own groups, never pooled with simulated data:

  - ``bmc_emg.csv`` and ``biosppy_emg_1.txt``: the onsets the offline peers agree on
    (:data:`closedloop.analysis.splice.CONSENSUS`: at least 3 of the BMC recipe, NeuroKit2 and
    BioSPPy's Hodges-Bui and Bonato detectors within 100 ms, their median; offline,
    zero-phase marks, not ground truth); in ``biosppy_emg_1.txt`` the activity that
    only one or two peers mark is excluded (:data:`BIOSPPY_1_WEAK`);
  - ``uci_lowerlimb_5Npie.txt`` / ``_5Nsen.txt``: movement onsets from the knee-angle
    channel (independent of the EMG; see :func:`movement_onsets`), scored against the
    fused onsets of the agonists (hamstrings BF+ST for standing knee flexion,
    quadriceps RF+VM for seated knee extension). EMG onset precedes movement by tens of
    milliseconds (electromechanical delay), so the window is ``early_s = 0.5``,
    ``late_s = 0.2`` and the latency is **relative to movement onset** (negative = the
    decision came before the movement). Not 1.5 s early: the movements repeat every
    ~3 s and the return movement's burst lies 1-1.5 s before the next movement, so a
    1.5 s window would credit it as a hit. A "false" detection here is an agonist onset
    not followed by a movement, which includes real bursts during the return phase.
    The column ``before`` counts the movements whose matched decision came before
    the movement began;
  - ``biosppy_emg.txt``: no onset reference; the documented weak activity (38-58 s) is
    excluded (35-60 s) and everything else is rest, so only false detections per
    minute of rest are scored;

  The gestures file is left out: its labels follow the protocol cue, not the
  physiological onset, and new values arrive at only ~110 Hz.

* **A folder of one's own recordings**: every ``.xdf``, ``.npz``, ``.edf`` and ``.bdf``
  file under it (sorted, sub-folders included; text files too when ``--fs`` is given),
  each with its references as above: ``truth``
  markers (or the markers named by ``truth_label``, e.g. the ``cue`` markers of cued
  trials) in closedloop recordings, ``truth`` rows of a BIDS ``*_events.tsv``, the
  stored truth of simulated ``.npz`` files, or a labels CSV whose ``file`` column names
  the files.
  Recordings are named by their path inside the folder. In an EMG-BIDS dataset (a
  folder at or below a ``dataset_description.json``) the recordings are the
  ``*_emg.edf``/``*_emg.bdf`` files, outside ``sourcedata`` and ``derivatives``. BIDS
  tables (``participants.tsv``, ``*_channels.tsv``, ``*_events.tsv``...) are never read
  as text recordings, ``--fs`` or not.

The pseudo-detector ``reference`` returns the reference onsets themselves (sensitivity 1,
latency 0): a check of the labels and the matching, not of a detector.

Figures and intervals: every row has sensitivity, precision, F1, false detections per
minute and latency median/p90, each with a bootstrap 95 % interval
(:mod:`closedloop.analysis.results` says what is resampled and why); ``--format
csv|md|json`` and ``--out FILE`` write them for a paper.

Batch use: one task per recording and detector, on ``jobs`` worker processes (default:
every core) or a Dask cluster (``cluster``; :mod:`closedloop.runtime.batch`); the table
does not depend on where they ran. A recording that cannot be read is reported and
left out of the pooled rows; the others are still scored.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.analysis.results import (
    Bootstrap,
    Column,
    bootstrap_ci,
    ci_columns,
    figures,
    metric_columns,
    to_csv,
    to_json,
    to_markdown,
    trial_units,
)
from closedloop.analysis.scoring import Score, merge_scores, score_onsets
from closedloop.core.events import ONSET, Event
from closedloop.core.pipeline import OfflineDetector, Pipeline, make_detector
from closedloop.errors import ConfigError, InputError
from closedloop.registry import DETECTORS

#: The detectors a table shows when none are named: every built-in one.
BUILTIN_DETECTORS = tuple(DETECTORS.builtins)

#: Channel name of a reference meaning "any channel" (onsets of all channels fused).
ANY = "*"
#: Pseudo-detectors: the references themselves; the events recorded in an XDF session.
PSEUDO = ("reference", "recorded")

SIM_FS = 2000.0
SIM_MUSCLES = ("biceps", "triceps")


# -- recordings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Recording:
    """EMG with its reference onsets and how to score against them.

    Attributes
    ----------
    name : str
    samples : ndarray, shape (n, n_channels)
    fs : float
    channels : tuple of str
    reference : tuple of (int, str), or None
        Reference onsets ``(sample, channel)``; channel ``ANY`` = any channel. ``()``
        means the recording is all rest (every detection is false); None means there is
        no reference (detections are only counted).
    early_s, late_s : float
        Matching window around each reference.
    fuse : tuple of str
        Channels whose onsets are fused for ``ANY`` references (default: all).
    fuse_gap_s : float
        Fused onsets closer than this to the previous kept one are dropped.
    exclude : tuple of (int, int)
        Sample ranges ``[a, b)`` left out of the scoring (detections there are neither
        hits nor false, and their time does not count towards the minutes).
    group : str
        Recordings of one group are pooled into an overall row per detector.
    recorded : tuple of Event
        Events a live session recorded (XDF), for the ``recorded`` pseudo-detector.
    note : str
        Where the reference comes from, for the table's notes.
    """

    name: str
    samples: np.ndarray
    fs: float
    channels: tuple[str, ...]
    reference: tuple[tuple[int, str], ...] | None
    early_s: float = 0.1
    late_s: float = 0.5
    fuse: tuple[str, ...] = ()
    fuse_gap_s: float = 1.0
    exclude: tuple[tuple[int, int], ...] = ()
    group: str = "files"
    recorded: tuple[Event, ...] = ()
    note: str = ""

    @property
    def n(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """Length of the recording, s."""
        return self.n / self.fs


@dataclass(frozen=True)
class SimSpec:
    """A simulated recording made on the fly (in the worker that uses it)."""

    snr_db: float
    minutes: float = 5.0
    seed: int = 0


@dataclass(frozen=True)
class FileSpec:
    """A recording file, with an optional labels CSV and rate (text inputs), the label
    of its truth markers (XDF) and the name it has in the table (default: the file's)."""

    path: str
    fs: float | None = None
    labels: str | None = None
    truth_label: str = "truth"
    name: str | None = None


@dataclass(frozen=True)
class SharedSpec:
    """One of the shared real recordings (see :func:`shared_recordings`)."""

    data_dir: str
    name: str


def simulated_recording(
    snr_db: float, minutes: float = 5.0, seed: int = 0, *, fs: float = SIM_FS,
    muscles: Sequence[str] = SIM_MUSCLES, **patient: Any,
) -> Recording:
    """A simulated patient recording with its ground truth (attempt onsets).

    The script (``random_script`` over ``muscles``, first attempt at 2 s) and the noise
    depend on ``seed`` only, so recordings at different SNRs differ in SNR alone.
    ``patient`` overrides further :class:`~closedloop.sim.patient.PatientSettings`.
    """
    from closedloop.sim.patient import PatientSettings, SimulatedPatient, random_script

    ps = PatientSettings(fs=fs, muscles=tuple(muscles), snr_db=float(snr_db), **patient)
    dur = float(minutes) * 60.0
    script = random_script(ps.muscles, dur, np.random.default_rng([int(seed), 1]))
    pat = SimulatedPatient(ps, script, seed=int(seed))
    x = pat.read(int(round(dur * fs)))
    return Recording(
        name=f"sim_{snr_db:g}dB_s{seed}",
        samples=x,
        fs=float(fs),
        channels=ps.muscles,
        reference=tuple(pat.true_onsets()),
        group="simulated",
        note="ground truth: scripted attempt onsets (start of the activation ramp)",
    )


def write_sim_recording(
    path: str | Path, snr_db: float, minutes: float = 5.0, seed: int = 0, *,
    fs: float = SIM_FS, muscles: Sequence[str] = SIM_MUSCLES, **patient: Any,
) -> Path:
    """Write a simulated recording with its truth as ``.npz`` (module docstring).

    Arrays: ``emg`` (n, n_channels) float64 volts, ``fs``, ``channels``,
    ``truth_samples`` (int64), ``truth_channels`` (str), plus ``snr_db`` and ``seed``.
    """
    rec = simulated_recording(snr_db, minutes, seed, fs=fs, muscles=muscles, **patient)
    p = Path(path)
    ref = rec.reference or ()
    np.savez_compressed(
        p,
        emg=rec.samples,
        fs=np.float64(rec.fs),
        channels=np.array(rec.channels),
        truth_samples=np.array([s for s, _ in ref], dtype=np.int64),
        truth_channels=np.array([c for _, c in ref], dtype=str),
        snr_db=np.float64(snr_db),
        seed=np.int64(seed),
    )
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def _label_rows(path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a labels CSV with their line numbers, keys and values stripped, after
    checking the header (``sample`` or ``time_s``, and ``channel``)."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [h.strip() for h in (reader.fieldnames or [])]
    except OSError as exc:
        raise InputError(f"{p}: cannot read the labels file ({exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: not a labels CSV (UTF-8 text with a header line such as "
                         f"'sample,channel'): {exc}") from None
    if "channel" not in header or not ({"sample", "time_s"} & set(header)):
        raise InputError(
            f"{p}: a labels CSV needs a header with 'sample,channel' or 'time_s,channel' "
            f"(and optionally 'file'); it has {header}"
        )
    return [(i, {k.strip(): (v or "").strip() for k, v in row.items() if k})
            for i, row in enumerate(rows, start=2)]


def labelled_files(path: str | Path) -> list[str] | None:
    """The file names a labels CSV's ``file`` column gives, in order of first mention;
    None when a row gives none (that row is for every recording)."""
    named = [row.get("file", "") for _, row in _label_rows(path)]
    if not all(named):
        return None
    return list(dict.fromkeys(Path(f).name for f in named))


def _reference(where: str, sample: int, channel: str, *, shown: tuple[str, str],
               n: int | None, fs: float, channels: Sequence[str]) -> tuple[int, str]:
    """One reference onset, checked: ``channel`` is a channel of the recording (or ``*``)
    and ``sample`` lies in it (from 0, below ``n`` when known). ``where`` names the file
    (and line), ``shown`` how the file gives the onset and the channel; the messages are
    the same for a labels CSV and an ``.npz`` truth."""
    if channel != ANY and channel not in channels:
        raise InputError(f"{where}: {shown[1]} is not a channel of the recording (its "
                         f"channels: {', '.join(channels)}; or {ANY!r} for any channel)")
    if sample < 0 or (n is not None and sample >= n):
        allowed = ("from 0" if n is None else
                   f"from 0 to {n - 1} (0 to {(n - 1) / fs:g} s at {fs:g} Hz)")
        raise InputError(f"{where}: {shown[0]} is outside the recording; expected a sample "
                         f"index {allowed}")
    return sample, channel


def read_labels(
    path: str | Path, *, fs: float, channels: Sequence[str], file: str | None = None,
    n_samples: int | None = None,
) -> tuple[tuple[int, str], ...]:
    """Reference onsets from a labels CSV (format in the module docstring).

    Every onset must lie in the recording: a sample index from 0 (and below
    ``n_samples``, when given), a finite time; anything else is an
    :class:`~closedloop.errors.InputError` naming the file and line.
    """
    p = Path(path)
    lines: dict[tuple[int, str], int] = {}  # each onset -> its line
    for i, row in _label_rows(p):
        if file is not None and row.get("file") and Path(row["file"]).name != Path(file).name:
            continue
        try:
            if row.get("sample"):
                s = int(row["sample"])
            else:
                t = float(row["time_s"])
                s = int(round(t * fs)) if math.isfinite(t) else -1
        except (KeyError, ValueError):
            raise InputError(f"{p}:{i}: not a sample index or time in seconds: {row}") from None
        ch = row["channel"]
        _reference(f"{p}:{i}", s, ch, n=n_samples, fs=fs, channels=channels,
                   shown=(f"onset {row.get('sample') or row.get('time_s')}", f"channel {ch!r}"))
        if (s, ch) in lines:  # counted twice, a detector could only ever hit one of them
            raise InputError(f"{p}:{i}: the onset at sample {s} on {ch!r} is already on line "
                             f"{lines[s, ch]}; list each onset once")
        lines[s, ch] = i
    return tuple(sorted(lines))


def _xdf_recording(path: Path, truth_label: str = "truth") -> Recording:
    from closedloop.io.xdf import load_session

    return session_recording(load_session(path), truth_label)


def session_recording(s: Any, truth_label: str = "truth") -> Recording:
    """A recording read with :func:`closedloop.io.xdf.load_session` as a
    :class:`Recording`: its ``truth_label`` markers are the references (None without
    any), its recorded events the ``recorded`` pseudo-detector's, sample indices counted
    from its first sample."""
    path = Path(s.path)
    first = int(s.counter[0]) if s.counter is not None and len(s.counter) else 0
    ref = []
    for m in s.markers:
        if m.label != truth_label:
            continue
        ch = str(m.fields.get("muscle", m.fields.get("channel", ANY)))
        if m.sample is not None:
            k = int(m.sample) - first
        else:
            k = int(np.searchsorted(s.timestamps, m.time))
        ref.append((k, ch if ch in s.channels else ANY))
    recorded = tuple(
        Event(e.sample - first, e.time, e.channel, e.kind, e.envelope, e.threshold)
        for e in s.events
    )
    note = f"references: {truth_label!r} markers" if ref else f"no {truth_label!r} markers"
    if s.damage:  # scored on what is intact, and said so
        from closedloop.io.xdf import describe_damage

        note = (f"{s.state.upper()} recording, scored on its intact part only "
                f"({s.n} samples; {describe_damage(s.damage, s.path.stat().st_size, 1)[0]}); "
                + note)
    return Recording(
        name=path.name, samples=s.samples, fs=s.fs, channels=s.channels,
        reference=tuple(sorted(ref)) if ref else None, recorded=recorded, note=note,
    )


def load_recording(
    path: str | Path, *, fs: float | None = None, labels: str | Path | None = None,
    truth_label: str = "truth",
) -> Recording:
    """A recording file with its references (module docstring)."""
    from closedloop.io.files import load_emg

    p = Path(path)
    if p.suffix.lower() == ".xdf":
        rec = _xdf_recording(p, truth_label)
    elif p.suffix.lower() in (".edf", ".bdf"):
        rec = _edf_recording(p, truth_label)
    else:
        data = load_emg(p, fs=fs)
        ref = None
        note = "no reference"
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "truth_samples" in z and "truth_channels" in z:
                    ref = _npz_truth(p, z["truth_samples"], z["truth_channels"], data)
                    note = "ground truth stored with the simulated recording"
        rec = Recording(p.name, data.samples, data.fs, data.channels, ref, note=note)
    if labels is not None:
        ref = read_labels(labels, fs=rec.fs, channels=rec.channels, file=p.name,
                          n_samples=len(rec.samples))
        note = f"labels: {Path(labels).name}"
        rec = Recording(**{**_fields(rec), "reference": ref, "note": note})
    return rec


def _edf_recording(path: Path, truth_label: str = "truth") -> Recording:
    """An EDF/BDF file (:func:`closedloop.io.files.load_emg`) with its marks: the rows of
    the BIDS ``*_events.tsv`` beside it, else the file's own EDF+/BDF+ annotations
    (``kind`` or ``kind/muscle``, as ``closedloop export --bids`` writes both). Marks
    whose kind is ``truth_label`` are the references (the row's ``sample``, else
    ``onset`` times the rate; its ``muscle``, or ``channel``, when it names a channel of
    the file, else any channel, and the note says how many named none of them);
    ``emg_onset``/``emg_offset``/``emg_suspend`` marks (the live detector's decisions)
    the ``recorded`` pseudo-detector's events. Marks on a channel left out as marked bad
    are left out too."""
    from closedloop.io.edf import read_tsv, sidecar
    from closedloop.io.files import load_emg

    data = load_emg(path)
    tsv = sidecar(path, "events.tsv")
    # (where, kind, sample or "", onset in s, names of its channel)
    marks: list[tuple[str, str, str, str, list[str]]]
    if tsv is not None:
        marks = [(f"{tsv}:{line}", row["trial_type"], row.get("sample", ""), row["onset"],
                  [row.get("muscle", ""), row.get("channel", "")])
                 for line, row in read_tsv(tsv, ("onset", "trial_type"))]
        found = f"{truth_label!r} rows of {tsv.name}"
        none = f"no {truth_label!r} rows in {tsv.name}"
    else:
        marks = []
        for onset_s, text in data.annotations:
            kind, channel = _kind_and_channel(text)
            marks.append((f"{path}: annotation {text!r} at {onset_s:g} s", kind, "",
                          repr(onset_s), [channel]))
        found = f"{truth_label!r} annotations of the file"
        none = f"no reference (no BIDS events.tsv beside the file, no {truth_label!r} annotation)"
    ref: list[tuple[int, str]] = []
    recorded: list[Event] = []
    dropped = 0
    unnamed: list[str] = []  # what the references named that is no channel of the file
    for where, kind, sample_text, onset, names in marks:
        if kind != truth_label and kind not in ("emg_onset", "emg_offset", "emg_suspend"):
            continue
        if set(names) & set(data.left_out):
            dropped += kind == truth_label  # a channel marked bad: not scored
            continue
        try:
            sample = int(sample_text) if sample_text else int(round(float(onset) * data.fs))
        except ValueError:
            raise InputError(f"{where}: not an onset in seconds or a sample index: "
                             f"onset {onset!r}, sample {sample_text!r}") from None
        channel = next((c for c in names if c in data.channels), ANY)
        if kind == truth_label and channel == ANY and any(names):
            unnamed.append(next(c for c in names if c))  # a muscle, not a channel name?
        if kind == truth_label:
            ref.append(_reference(where, sample, channel, n=len(data.samples), fs=data.fs,
                                  channels=data.channels,
                                  shown=(f"onset {onset}", f"channel {channel!r}")))
        elif channel != ANY:
            recorded.append(Event(sample, sample / data.fs, channel, kind[4:]))
    note = f"references: {found}" if ref else none
    if dropped:
        note += f" ({dropped} on channels marked bad left out)"
    if unnamed:
        shown = ", ".join(repr(c) for c in sorted(set(unnamed))[:3])
        more = ", ..." if len(set(unnamed)) > 3 else ""
        note += (f"; {len(unnamed)} of them name no channel of the file ({shown}{more}; its "
                 f"channels: {', '.join(data.channels)}): scored against any channel")
    return Recording(path.name, data.samples, data.fs, data.channels,
                     tuple(sorted(ref)) if ref else None,
                     recorded=tuple(sorted(recorded, key=lambda e: e.sample)),
                     note=_notes(note, data.note))


def _kind_and_channel(text: str) -> tuple[str, str]:
    """An annotation's kind and channel: ``kind/muscle`` (what closedloop's export
    writes), or a bare ``kind`` (no channel)."""
    kind, _, channel = text.partition("/")
    return kind.strip(), channel.strip()


def _notes(*notes: str) -> str:
    """Notes for one recording, the empty ones left out."""
    return "; ".join(n for n in notes if n)


def _npz_truth(path: Path, samples: np.ndarray, channels: np.ndarray,
               data: Any) -> tuple[tuple[int, str], ...]:
    """The ground truth an ``.npz`` stores (``truth_samples``, ``truth_channels``),
    checked: two 1-D arrays of one length, integer samples within the recording,
    channels of the recording (or ``*``)."""
    if not (samples.ndim == channels.ndim == 1 and len(samples) == len(channels)
            and samples.dtype.kind in "iu" and channels.dtype.kind in "US"):
        raise InputError(
            f"{path}: 'truth_samples' ({samples.dtype}, shape {samples.shape}) and "
            f"'truth_channels' ({channels.dtype}, shape {channels.shape}) must be two 1-D "
            "arrays of one length: onset sample indices (integers) and channel names")
    ref = [_reference(str(path), int(sample), str(ch), n=len(data.samples), fs=data.fs,
                      channels=data.channels,
                      shown=(f"truth_samples[{k}] = {sample}", f"truth_channels[{k}] = {ch!r}"))
           for k, (sample, ch) in enumerate(zip(samples.tolist(), channels.tolist(),
                                                strict=True))]
    return tuple(sorted(ref))


def _fields(rec: Recording) -> dict[str, Any]:
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}


# -- the shared real recordings ------------------------------------------------------------
def movement_onsets(
    angle: np.ndarray, fs: float, direction: int, *, frac: float = 0.1
) -> list[int]:
    """Movement onsets from a joint-angle trace (offline: this is a reference).

    A movement is a crossing, in ``direction`` (+1: the angle increases), of half the
    largest excursion from the rest angle (median of the first 0.5 s); its onset is the
    last sample before that crossing where the angular velocity (smoothed over 40 ms)
    was below ``frac`` of the movement's peak velocity (within 0.5 s after the crossing).
    """
    a = np.asarray(angle, dtype=np.float64)
    v = direction * np.gradient(a) * fs
    w = int(0.04 * fs) | 1
    v = np.convolve(v, np.ones(w) / w, mode="same")
    dev = direction * (a - np.median(a[: int(0.5 * fs)]))
    above = dev > 0.5 * np.max(dev)
    out = []
    for u in np.flatnonzero(above[1:] & ~above[:-1]) + 1:
        peak = v[u : u + int(0.5 * fs)].max()
        slow = np.flatnonzero(v[:u] < frac * peak)
        out.append(int(slow[-1]) + 1 if slow.size else 0)
    return out


#: Group of the recordings scored against the offline peers' consensus onsets.
CONSENSUS_GROUP = "real: peers' consensus onsets"
#: biosppy_emg_1.txt: activity that only one or two peers mark (16.97-19.38 s, 23.18-23.36 s,
#: 35.89-40.72 s, 44.95 s), with 0.3 s margins: neither rest nor a consensus onset.
BIOSPPY_1_WEAK = ((16600, 19700), (22800, 23700), (35500, 41100), (44600, 45400))

#: The shared recordings evaluated, in table order.
SHARED_NAMES = (
    "bmc_emg.csv",
    "uci_lowerlimb_5Npie.txt",
    "uci_lowerlimb_5Nsen.txt",
    "biosppy_emg.txt",
    "biosppy_emg_1.txt",
)


def shared_recording(data_dir: str | Path, name: str) -> Recording:
    """One shared real recording with its reference (see the module docstring)."""
    from closedloop.io.files import load_text

    d = Path(data_dir)
    p = d / name
    if not p.is_file():
        raise InputError(f"{p}: missing; the shared recordings are described in {d / 'README.md'}")
    if name == "bmc_emg.csv":
        from closedloop.analysis.splice import CONSENSUS

        data = load_text(p, 1000.0, columns=[1])
        return Recording(
            name, data.samples, 1000.0, ("emg",),
            tuple((k, "emg") for k in CONSENSUS[(name, 1)]), group=CONSENSUS_GROUP,
            note="reference: the offline peers' consensus onsets (3 of 4 within 100 ms)",
        )
    if name.startswith("uci_lowerlimb_"):
        x = np.loadtxt(p, skiprows=7)
        flexion = "5Npie" in name  # standing knee flexion; else seated knee extension
        moves = movement_onsets(x[:, 4], 1000.0, +1 if flexion else -1)
        agonists = ("BF", "ST") if flexion else ("RF", "VM")
        return Recording(
            name, np.ascontiguousarray(x[:, :4]), 1000.0, ("RF", "BF", "VM", "ST"),
            tuple((k, ANY) for k in moves), early_s=0.5, late_s=0.2, fuse=agonists,
            group="real: movement onsets (knee angle)",
            note=f"reference: knee-angle movement onsets; {'+'.join(agonists)} onsets fused; "
                 "latency relative to movement",
        )
    if name in ("biosppy_emg.txt", "biosppy_emg_1.txt"):
        data = load_text(p, 1000.0)
        if name == "biosppy_emg.txt":
            return Recording(
                name, data.samples, 1000.0, ("emg",), (), exclude=((35000, 60000),),
                group="real: rest only",
                note="no onsets; 35-60 s (documented weak activity) excluded, the rest is rest",
            )
        from closedloop.analysis.splice import CONSENSUS

        return Recording(
            name, data.samples, 1000.0, ("emg",),
            tuple((k, "emg") for k in CONSENSUS[(name, 0)]), exclude=BIOSPPY_1_WEAK,
            group=CONSENSUS_GROUP,
            note="reference: the offline peers' consensus onsets (3 of 4 within 100 ms); "
                 "activity marked by only one or two peers excluded",
        )
    raise InputError(
        f"{name}: not one of the shared recordings evaluated ({', '.join(SHARED_NAMES)})"
    )


def shared_recordings(data_dir: str | Path) -> list[Recording]:
    """Every shared real recording that has a usable reference (module docstring)."""
    return [shared_recording(data_dir, n) for n in SHARED_NAMES]


@functools.lru_cache(maxsize=4)
def _load_cached(spec: SimSpec | FileSpec | SharedSpec, call: str) -> Recording:
    """``spec`` loaded once per :func:`evaluate` call (``call``, its token) in each process
    that runs its tasks: its detectors share one reading, and a later call reads the file
    again (it, or a sidecar beside it, may have changed; a Dask worker lives on)."""
    if isinstance(spec, SimSpec):
        return simulated_recording(spec.snr_db, spec.minutes, spec.seed)
    if isinstance(spec, SharedSpec):
        return shared_recording(spec.data_dir, spec.name)
    rec = load_recording(spec.path, fs=spec.fs, labels=spec.labels,
                         truth_label=spec.truth_label)
    return rec if spec.name is None else Recording(**{**_fields(rec), "name": spec.name})


def _load(spec: Recording | SimSpec | FileSpec | SharedSpec, call: str) -> Recording:
    return spec if isinstance(spec, Recording) else _load_cached(spec, call)


# -- detector specs ------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorSpec:
    """A detector configuration: a name and parameters, or a TOML config.

    ``label`` is how it appears in the table (the spec text, or the config's name).
    """

    label: str
    name: str
    params: tuple[tuple[str, Any], ...] = ()
    config_path: str | None = None


def _value(text: str) -> Any:
    """A spec's value: a boolean, a number, a list ``a/b/c`` or text (what is not
    allowed is refused by the detector's settings, naming the key)."""
    t = text.strip()
    if "/" in t:
        return [_number(v) for v in t.split("/")]
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def _number(text: str) -> Any:
    """A list item: a float, else the text as given."""
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_detector_spec(text: str | DetectorSpec) -> DetectorSpec:
    """``name``, ``name:key=value,key=value`` or a ``.toml`` config path.

    Values are numbers, ``true``/``false``, text, or lists with ``/`` (``bandpass_hz=
    30/450``). Names: ``threshold``, ``double_threshold``, ``tkeo``, and the
    pseudo-detectors ``reference`` and ``recorded``.
    """
    if isinstance(text, DetectorSpec):
        return text
    s = str(text).strip()
    if s.lower().endswith(".toml"):
        from closedloop.config import load_config

        cfg = load_config(s)  # validates now, in the parent process
        return DetectorSpec(label=cfg.name, name=cfg.detector_kind, config_path=s)
    name, _, rest = s.partition(":")
    name = name.strip()
    if name == "peer":
        from closedloop.analysis.peers import PEER_NAMES

        if rest.strip() not in PEER_NAMES:
            raise ConfigError(
                f"detector spec {s!r}: unknown peer {rest.strip()!r}; choose one of "
                f"{', '.join('peer:' + p for p in PEER_NAMES)}"
            )
        return DetectorSpec(label=s, name=s)
    if name not in PSEUDO and not (name in DETECTORS.names() or DETECTORS.is_spec(name)):
        raise ConfigError(
            f"detector spec {s!r}: unknown detector {name!r}; choose one of "
            f"{', '.join(DETECTORS.names() + list(PSEUDO))}, peer:NAME, a module:Class spec, "
            "or give a .toml config"
        )
    params = []
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"detector spec {s!r}: {item!r} is not key=value (a list is "
                              "written a/b/c, e.g. ratios=2/4/8)")
        if key.strip() in dict(params):
            raise ConfigError(f"detector spec {s!r}: {key.strip()!r} is given twice; give "
                              "it once")
        params.append((key.strip(), _value(val)))
    spec = DetectorSpec(label=s, name=name, params=tuple(params))
    if name not in PSEUDO:
        make_detector(name, 1000.0, ["check"], **dict(spec.params))  # fail early on bad params
    return spec


def _config_detector(spec: DetectorSpec, rec: Recording) -> tuple[Any, list[int]]:
    from closedloop.config import load_config

    cfg = load_config(spec.config_path)
    cols = []
    for m in cfg.muscles:
        if isinstance(m.channel, int) and m.channel < len(rec.channels):
            cols.append(m.channel)
        elif m.channel in rec.channels:
            cols.append(rec.channels.index(m.channel))
        elif m.name in rec.channels:
            cols.append(rec.channels.index(m.name))
        else:
            raise ConfigError(
                f"{cfg.path}: muscle {m.name!r} (channel {m.channel!r}) is not in "
                f"{rec.name} (its channels: {', '.join(rec.channels)})"
            )
    chans = [rec.channels[c] for c in cols]
    return OfflineDetector(Pipeline(rec.fs, chans, cfg)), cols


def run_detector(spec: DetectorSpec, rec: Recording, *, chunk_s: float = 1.0) -> list[Event]:
    """All events of one detector configuration over a recording, fed in chunks."""
    if spec.name == "reference":
        return [Event(s, s / rec.fs, ch, ONSET) for s, ch in (rec.reference or ())]
    if spec.name == "recorded":
        return list(rec.recorded)
    if spec.name.startswith("peer:"):
        from closedloop.analysis.peers import run_peer

        rest = (0, min(rec.n, int(round(rec.fs))))
        return sorted(
            (Event(s, s / rec.fs, ch, ONSET)
             for c, ch in enumerate(rec.channels)
             for s in run_peer(spec.name[5:], rec.samples[:, c], rec.fs, rest)),
            key=lambda e: e.sample,
        )
    if spec.config_path is not None:
        det, cols = _config_detector(spec, rec)
    else:
        det, cols = make_detector(spec.name, rec.fs, rec.channels, **dict(spec.params)), None
    x = rec.samples if cols is None else rec.samples[:, cols]
    step = max(1, int(round(chunk_s * rec.fs)))
    events: list[Event] = []
    for i in range(0, x.shape[0], step):
        events.extend(det.process(x[i : i + step]))
    return events


# -- scoring -------------------------------------------------------------------------------
def fuse_onsets(
    events: Iterable[Event], channels: Sequence[str], fs: float, gap_s: float
) -> list[Event]:
    """Onsets on ``channels`` as one stream on channel ``ANY``: the first onset of each
    cluster; onsets within ``gap_s`` after the last kept one are dropped (causal)."""
    keep: list[Event] = []
    gap = int(round(gap_s * fs))
    last = None
    for e in sorted((e for e in events if e.kind == ONSET and e.channel in channels),
                    key=lambda e: e.sample):
        if last is None or e.sample - last > gap:
            keep.append(Event(e.sample, e.time, ANY, ONSET, e.envelope, e.threshold))
            last = e.sample
    return keep


def score_recording(rec: Recording, events: Iterable[Event]) -> Score | None:
    """Score ``events`` against the recording's reference; None if it has none."""
    events = [e for e in events if e.kind == ONSET]
    if rec.reference is None:
        return None

    def inside(s: int) -> bool:
        return any(a <= s < b for a, b in rec.exclude)

    refs = [(s, ch) for s, ch in rec.reference if not inside(s)]
    dets = [e for e in events if not inside(e.sample)]
    if any(ch == ANY for _, ch in refs):
        # "any channel" references: the fused onsets of the fused channels, plus the
        # channels that have references of their own; other channels are not scored
        fused_chs = rec.fuse or rec.channels
        own = {ch for _, ch in refs if ch != ANY}
        dets = (
            [e for e in dets if e.channel == ANY]
            + fuse_onsets(dets, fused_chs, rec.fs, rec.fuse_gap_s)
            + [e for e in dets if e.channel in own]
        )
    excluded = sum(max(0, min(b, rec.n) - max(a, 0)) for a, b in rec.exclude)
    return score_onsets(refs, dets, rec.fs, (rec.n - excluded) / rec.fs,
                        early_s=rec.early_s, late_s=rec.late_s)


# -- the table -----------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table (a recording, or ``overall`` for a group)."""

    recording: str
    detector: str
    group: str
    n_reference: int | None
    hits: int | None
    sensitivity: float | None
    false_detections: int | None
    false_per_min: float | None
    latency_median_ms: float | None
    latency_p90_ms: float | None
    n_detected: int
    minutes: float
    note: str = ""
    score: Score | None = field(default=None, repr=False, compare=False)
    preceded: int | None = None
    precision: float | None = None
    f1: float | None = None
    ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    ci_unit: str = ""
    ci_n: int = 0
    error: str = ""
    units: tuple[Score, ...] = field(default=(), repr=False, compare=False)
    #: A failed row's exit code: its error's (:mod:`closedloop.errors`; 7 for a recording
    #: that cannot be read), 1 for an unexpected one; 0 for a scored row.
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Flat: every field but the score, each interval as ``<metric>_ci_low/_high``."""
        d = asdict(self)
        d.pop("score")
        d.pop("ci")
        d.pop("units")
        d.update(ci_columns(self.ci))
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}


#: Columns of the CSV output, in order.
CSV_COLUMNS = ["recording", "detector", "group", "n_reference", "hits", "false_detections",
               "n_detected", "minutes", *metric_columns(), "ci_unit", "ci_n", "error", "note"]
#: Columns of the Markdown output.
MD_COLUMNS = [Column("recording", "recording"), Column("detector", "detector"),
              Column("n_reference", "refs"), Column("hits", "hits"),
              Column("sensitivity", "sensitivity"), Column("precision", "precision"),
              Column("f1", "F1"), Column("false_per_min", "false/min", 2),
              Column("latency_median_ms", "latency median (ms)", 1),
              Column("latency_p90_ms", "latency p90 (ms)", 1), Column("n_detected", "onsets"),
              Column("minutes", "min", 2)]


def _row(recording: str, detector: str, group: str, score: Score | None, n_detected: int,
         minutes: float, note: str = "") -> Row:
    if score is None:
        return Row(recording, detector, group, None, None, None, None, None, None, None,
                   n_detected, minutes, note, None)
    f = figures(score)
    return Row(
        recording, detector, group, score.n_reference, score.hits, f["sensitivity"],
        score.false_detections, score.false_per_min, f["latency_median_ms"],
        f["latency_p90_ms"], n_detected, minutes, note, score,
        preceded=sum(x < 0 for x in score.latencies_s), precision=f["precision"],
        f1=f["f1"],
    )


def _task(task: tuple[Any, DetectorSpec, float, str]) -> tuple[Row, str]:
    rec_spec, det_spec, chunk_s, call = task
    rec = _load(rec_spec, call)
    events = run_detector(det_spec, rec, chunk_s=chunk_s)
    n_on = sum(e.kind == ONSET for e in events)
    score = score_recording(rec, events)
    return _row(rec.name, det_spec.label, rec.group, score, n_on, rec.duration_s / 60.0,
                rec.note), rec.name


#: Files a folder input contributes (text files only with a rate, see folder_files).
FOLDER_SUFFIXES = (".xdf", ".npz", ".edf", ".bdf")
TEXT_SUFFIXES = (".csv", ".txt", ".tsv")


#: Folders of a BIDS dataset that hold no raw data of it (BIDS: sourcedata, derivatives).
BIDS_NOT_RAW = ("sourcedata", "derivatives")
#: BIDS tables: never EMG, wherever they are (a text recording may be a ``.tsv``).
BIDS_TABLES = ("participants.tsv", "_channels.tsv", "_events.tsv", "_electrodes.tsv",
               "_scans.tsv", "_sessions.tsv")


def in_bids_raw(folder: str | Path) -> bool:
    """True when ``folder`` is a BIDS dataset's root or one of its raw-data folders (the
    nearest folder at or above it holding a ``dataset_description.json`` is the root,
    and ``folder`` is not in its ``sourcedata`` or ``derivatives``, which hold files of
    other kinds: the recordings as recorded, results)."""
    d = Path(folder).resolve()
    root = next((p for p in (d, *d.parents) if (p / "dataset_description.json").is_file()),
                None)
    if root is None:
        return False
    top = d.relative_to(root).parts[:1]
    return not top or top[0] not in BIDS_NOT_RAW


def folder_files(folder: str | Path, *, text: bool = False,
                 skip: Sequence[str | Path] = ()) -> list[Path]:
    """The recordings in a folder and its sub-folders, sorted by path (module docstring).

    ``text``: also the text/CSV files (when their rate is known); ``skip``: files that
    are not recordings (the labels file). BIDS tables (``participants.tsv``,
    ``*_channels.tsv``, ``*_events.tsv``...) are never recordings. In a BIDS dataset's
    raw data (:func:`in_bids_raw`) the recordings are its EMG data files
    (``*_emg.edf|.bdf``) outside ``sourcedata`` and ``derivatives``: the source files and
    derived data of its recordings would count them twice.
    """
    d = Path(folder)
    skipped = {Path(s).resolve() for s in skip}
    if in_bids_raw(d):
        return sorted(p for p in d.rglob("*_emg.*") if p.is_file()
                      and p.suffix.lower() in (".edf", ".bdf") and p.resolve() not in skipped
                      and not set(p.relative_to(d).parts[:-1]) & set(BIDS_NOT_RAW))
    suffixes = FOLDER_SUFFIXES + (TEXT_SUFFIXES if text else ())
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and p.resolve() not in skipped and not p.name.startswith(".")
                  and not p.name.lower().endswith(BIDS_TABLES))


def _as_spec(item, *, fs: float | None, labels: str | None, truth_label: str = "truth"
             ) -> list:
    if isinstance(item, (Recording, SimSpec, FileSpec, SharedSpec)):
        return [item]
    p = Path(item)
    lab = None if labels is None else str(labels)
    if p.is_dir():
        if (p / "reference_outputs.json").is_file():
            return [SharedSpec(str(p), n) for n in SHARED_NAMES]
        files = folder_files(p, text=fs is not None, skip=[labels] if labels else [])
        if not files and in_bids_raw(p):
            raise InputError(
                f"{p}: no EMG data file in this BIDS dataset folder (looked for *_emg.edf "
                f"and *_emg.bdf, sub-folders included, {' and '.join(BIDS_NOT_RAW)} left "
                "out); give the folder of the dataset's EMG, or the files")
        if not files:
            raise InputError(
                f"{p}: no recordings in this folder (looked for "
                f"{', '.join(FOLDER_SUFFIXES)} files{', and text files' if fs else ''}, "
                "sub-folders included); give files, or --fs HZ for text files"
            )
        return [FileSpec(str(f), fs, lab, truth_label, str(f.relative_to(p)))
                for f in files]
    if not p.exists():
        raise InputError(f"{p}: no such file")
    return [FileSpec(str(p), fs, lab, truth_label)]


def _check_labels_name_a_recording(labels: str | Path, recs: Sequence[Any]) -> None:
    """Refuse a labels CSV that can give no recording its onsets: its ``file`` column
    names none of the recording files given (or none is given: labels are for files),
    which would score every detector against no reference at all.

    Raises
    ------
    InputError
        Listing the files the labels name and the recording files given.
    """
    given = list(dict.fromkeys(Path(r.path).name for r in recs if isinstance(r, FileSpec)))
    named = labelled_files(labels)
    if given and (not named or set(named) & set(given)):  # None: rows for every file
        return
    if not named:  # every row is for every file, and no file is given
        raise InputError(f"{labels}: --labels gives the onsets of recording files, and none "
                         "is given (simulated and shared recordings bring their own "
                         "references); give the recording files the labels are for")
    def some(names: list[str]) -> str:
        return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if names[10:] else "")

    raise InputError(
        f"{labels}: its 'file' column names {some(named)}: none of the recordings given "
        f"({some(given) or 'no recording file'}), so no recording would get "
        "a reference onset; give the recordings it names, or correct its 'file' column "
        "(the file names of the inputs, e.g. session.xdf)")


def _spec_name(spec: Any) -> str:
    if isinstance(spec, Recording):
        return spec.name
    if isinstance(spec, SimSpec):
        return f"sim_{spec.snr_db:g}dB_s{spec.seed}"
    if isinstance(spec, SharedSpec):
        return spec.name
    return spec.name or Path(spec.path).name


def evaluate(
    recordings: Iterable[Any],
    detector_specs: Iterable[str | DetectorSpec],
    *,
    labels: str | Path | None = None,
    jobs: int | None = None,
    fs: float | None = None,
    chunk_s: float = 1.0,
    bootstrap: Bootstrap | None = None,
    cluster: str | None = None,
    truth_label: str = "truth",
    on_error: str = "raise",
    progress: Any = None,
) -> list[Row]:
    """Run every detector configuration over every recording and score it.

    Parameters
    ----------
    recordings : iterable
        File paths (``.npz``, ``.xdf``, text/CSV with ``fs``), the shared data folder,
        :class:`Recording` objects, or :class:`SimSpec` / :class:`FileSpec` /
        :class:`SharedSpec` descriptions (loaded in the worker).
    detector_specs : iterable of str or DetectorSpec
        See :func:`parse_detector_spec`.
    labels : path, optional
        Labels CSV for the file inputs (module docstring).
    jobs : int, optional
        Worker processes (default: every core); 1 runs in this process.
    fs : float, optional
        Sampling rate of text inputs.
    chunk_s : float
        Chunk length fed to the detectors (the results do not depend on it).
    bootstrap : Bootstrap, optional
        How the intervals are drawn (default ``Bootstrap()``: 2000 resamples, seed 0).
    cluster : str, optional
        Address of a Dask scheduler to run the tasks on (files on a shared path).
    truth_label : str
        Label of the markers that are the references in XDF recordings.
    on_error : {"raise", "report"}
        A recording that cannot be read or scored: raise its error, or report it in a
        row of group ``failed`` (with ``error``) and go on with the others.
    progress : callable, optional
        ``progress(done, total)`` as tasks finish.

    Returns
    -------
    list of Row
        Per recording and detector (recordings in input order, detectors in spec order
        within each), then one ``overall`` row per group and detector; failed
        recordings last.
    """
    specs = [parse_detector_spec(d) for d in detector_specs]
    if not specs:
        raise ConfigError("no detector given; e.g. threshold, double_threshold, tkeo")
    recs = [s for item in recordings
            for s in _as_spec(item, fs=fs, labels=labels, truth_label=truth_label)]
    if not recs:
        raise InputError("no recordings given")
    if labels is not None:
        _check_labels_name_a_recording(labels, recs)
    if cluster:  # the workers open the files themselves: absolute paths
        recs = [FileSpec(str(Path(r.path).resolve()), r.fs,
                         None if r.labels is None else str(Path(r.labels).resolve()),
                         r.truth_label, r.name or Path(r.path).name)
                if isinstance(r, FileSpec) else
                SharedSpec(str(Path(r.data_dir).resolve()), r.name)
                if isinstance(r, SharedSpec) else r for r in recs]
    from closedloop.runtime.batch import run_batch

    call = os.urandom(8).hex()  # this call's readings (see _load_cached)
    tasks = [(r, d, chunk_s, call) for r in recs for d in specs]
    results = run_batch(_task, tasks, jobs=jobs, cluster=cluster, progress=progress)
    rows: list[Row] = []
    failed: list[Row] = []
    for (rec_spec, det, _, _), res in zip(tasks, results, strict=True):
        if res.ok:
            rows.append(res.value[0])
            continue
        if on_error == "raise":
            if res.exception is not None:
                raise res.exception
            raise RuntimeError(f"{res.error}\n{res.detail}")
        failed.append(Row(_spec_name(rec_spec), det.label, "failed", None, None, None, None,
                          None, None, None, 0, 0.0, error=str(res.error),
                          exit_code=max(1, getattr(res.exception, "exit_code", 1))))
    out = rows + overall_rows(rows, [d.label for d in specs])
    add_intervals(out, bootstrap if bootstrap is not None else Bootstrap())
    return out + failed


def overall_rows(rows: Sequence[Row], detectors: Sequence[str]) -> list[Row]:
    """One pooled row per (group, detector) over the scored recordings."""
    out = []
    groups = list(dict.fromkeys(r.group for r in rows))
    for g in groups:
        for d in detectors:
            sel = [r for r in rows if r.group == g and r.detector == d]
            scored = [r.score for r in sel if r.score is not None]
            row = _row(
                "overall", d, g, merge_scores(scored) if scored else None,
                sum(r.n_detected for r in sel), sum(r.minutes for r in sel),
                f"{len(sel)} recording(s)",
            )
            row.units = tuple(scored)
            out.append(row)
    return out


def add_intervals(rows: Sequence[Row], boot: Bootstrap) -> None:
    """Fill every row's bootstrap intervals (see :mod:`closedloop.analysis.results`):
    pooled rows over their recordings (their trials when there is one recording),
    per-recording rows over their trials."""
    for r in rows:
        if r.score is None:
            continue
        if len(r.units) >= 2:
            r.ci_unit, use = "recordings", list(r.units)
        else:
            r.ci_unit, use = "trials", trial_units(r.units[0] if r.units else r.score)
        r.ci = bootstrap_ci(use, boot, f"{r.group}|{r.recording}|{r.detector}")
        r.ci_n = len(use) if boot.n and len(use) >= 2 else 0
        if not r.ci_n:
            r.ci_unit = ""


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def format_table(rows: Sequence[Row]) -> str:
    """The table as text, one block per group, with notes."""
    wr = max([9] + [len(r.recording) for r in rows])
    wd = max([8] + [len(r.detector) for r in rows])
    head = (f"{'recording':{wr}s} {'detector':{wd}s} {'ref':>4s} {'hits':>4s} {'sens':>6s} "
            f"{'prec':>6s} {'F1':>6s} {'false':>5s} {'false/min':>9s} {'lat med':>8s} "
            f"{'lat p90':>8s} {'onsets':>6s} {'min':>6s} {'before':>6s}")
    lines = []
    notes: dict[str, str] = {}
    for g in dict.fromkeys(r.group for r in rows):
        lines.append(f"== {g} ==")
        lines.append(head)
        for r in rows:
            if r.group != g:
                continue
            if r.recording != "overall" and (r.error or r.note):
                notes.setdefault(r.recording, r.error or r.note)
            lines.append(
                f"{r.recording:{wr}s} {r.detector:{wd}s} {_fmt(r.n_reference, 'd'):>4s} "
                f"{_fmt(r.hits, 'd'):>4s} {_fmt(r.sensitivity, '.3f'):>6s} "
                f"{_fmt(r.precision, '.3f'):>6s} {_fmt(r.f1, '.3f'):>6s} "
                f"{_fmt(r.false_detections, 'd'):>5s} {_fmt(r.false_per_min, '.2f'):>9s} "
                f"{_fmt(r.latency_median_ms, '.1f'):>8s} {_fmt(r.latency_p90_ms, '.1f'):>8s} "
                f"{r.n_detected:6d} {r.minutes:6.2f} {_fmt(r.preceded, 'd'):>6s}"
            )
        lines.append("")
    lines.append("sens = hits / ref; prec = hits / (hits + false); F1 = 2 hits / (ref + hits "
                 "+ false); false = onsets matching no reference (fused onsets for "
                 "'any channel' references); latency in ms = (decision sample - reference "
                 "sample) / fs; onsets = all onsets on all channels; before = hits decided before "
                 "the reference (negative latency); '-' = not scored; "
                 "95 % intervals: --format csv|md|json")
    lines.extend(f"  {k}: {v}" for k, v in notes.items())
    return "\n".join(lines)


# -- spliced trials (real bursts in real rest at fixed SNRs) ---------------------------------
#: SNRs of ``--splice`` without a value, dB.
SPLICE_SNRS = (20.0, 10.0, 3.0, 0.0)
#: Hit window of the spliced trials: first onset within -50..+150 ms of the burst onset.
SPLICE_EARLY_S = 0.05
SPLICE_LATE_S = 0.15


@dataclass
class SpliceRow:
    """One line of the ``--splice`` table: a detector at one SNR (or on pure rest).

    ``snr_db`` is None for the pure-rest row, where only false detections are scored.
    ``crit`` is the fraction of trials that meet the per-trial criterion of Yuvaraj et
    al. (:meth:`~closedloop.analysis.scoring.TrialScore.meets_criterion`).
    """

    detector: str
    snr_db: float | None
    trials: int
    bursts: int
    hits: int
    sensitivity: float | None
    latency_median_ms: float | None
    latency_p90_ms: float | None
    retriggers: int
    late: int
    false_detections: int
    false_per_min: float | None
    rest_min: float
    crit: float | None
    seeds: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return d


def _splice_recording(trial) -> Recording:
    return Recording(trial.name, trial.samples[:, None], 1000.0, ("emg",), None,
                     group="splice")


def _splice_task(data_dir: str, det_spec: DetectorSpec, snrs: tuple[float, ...], seed: int | None,
                 chunk_s: float) -> list[tuple[float | None, Any]]:
    """Scores of one detector on every trial of one seed (all SNRs), or on pure rest."""
    from closedloop.analysis import splice
    from closedloop.analysis.scoring import score_trial

    if seed is None:
        trials = [(None, t) for t in splice.rest_recordings(data_dir)]
    else:
        trials = [(snr, t) for snr in snrs for t in splice.make_trials(data_dir, snr, seed)]
    out = []
    for snr, t in trials:
        rec = _splice_recording(t)
        onsets = [e.sample for e in run_detector(det_spec, rec, chunk_s=chunk_s)
                  if e.kind == ONSET]
        out.append((snr, score_trial(t.onsets, t.ends, onsets, rec.fs, rec.duration_s,
                                     early_s=SPLICE_EARLY_S, late_s=SPLICE_LATE_S)))
    return out


def _splice_star(task: tuple) -> Any:
    """:func:`_splice_task` over one argument tuple (what the batch runner hands over)."""
    return _splice_task(*task)


def _splice_row(label: str, snr: float | None, scores: list, seeds: tuple[int, ...]) -> SpliceRow:
    lat = [x for s in scores for x in s.latencies_s]
    bursts = sum(s.n_bursts for s in scores)
    hits = sum(s.hits for s in scores)
    false = sum(s.false_detections for s in scores)
    rest_min = sum(s.rest_s for s in scores) / 60.0
    return SpliceRow(
        detector=label, snr_db=snr, trials=len(scores), bursts=bursts, hits=hits,
        sensitivity=hits / bursts if bursts else None,
        latency_median_ms=float(np.percentile(lat, 50)) * 1000.0 if lat else None,
        latency_p90_ms=float(np.percentile(lat, 90)) * 1000.0 if lat else None,
        retriggers=sum(s.retriggers for s in scores), late=sum(s.late for s in scores),
        false_detections=false, false_per_min=false / rest_min if rest_min else None,
        rest_min=rest_min,
        crit=(sum(s.meets_criterion() for s in scores) / len(scores)) if bursts else None,
        seeds=seeds,
    )


def splice_evaluate(
    data_dir: str | Path,
    detector_specs: Iterable[str | DetectorSpec],
    *,
    snrs: Sequence[float] = SPLICE_SNRS,
    seeds: Sequence[int] = (100,),
    jobs: int | None = None,
    chunk_s: float = 1.0,
) -> list[SpliceRow]:
    """Every detector on the spliced trials of every SNR and seed, and on pure rest.

    Trials come from :mod:`closedloop.analysis.splice`. Returns, per detector, one row per SNR
    (pooled over the seeds' trials) and one ``snr_db = None`` row for pure rest.
    """
    d = Path(data_dir)
    if not (d / "reference_outputs.json").is_file():
        raise InputError(f"{d}: --splice needs the shared data folder (with "
                         "reference_outputs.json), e.g. ../shared/data")
    specs = [parse_detector_spec(x) for x in detector_specs]
    if any(s.name in PSEUDO or s.config_path is not None for s in specs):
        raise ConfigError("--splice runs detectors by name (threshold, cusum, peer:bmc, ...), "
                          "not configs or the pseudo-detectors reference/recorded")
    snrs = tuple(float(x) for x in snrs)
    seeds = tuple(int(x) for x in seeds)
    tasks = [(str(d), spec, snrs, seed, chunk_s) for spec in specs for seed in (*seeds, None)]
    from closedloop.runtime.batch import run_batch

    done = run_batch(_splice_star, tasks, jobs=jobs)
    for r in done:
        if not r.ok:
            raise r.exception or InputError(f"--splice: {r.error}")
    results = [r.value for r in done]
    rows = []
    for spec in specs:
        mine = [r for t, r in zip(tasks, results, strict=True) if t[1] == spec]
        pooled = [x for r in mine for x in r]
        for snr in (*snrs, None):
            scores = [s for v, s in pooled if v == snr]
            rows.append(_splice_row(spec.label, snr, scores, seeds if snr is not None else ()))
    return rows


def format_splice_table(rows: Sequence[SpliceRow]) -> str:
    """The ``--splice`` table as text."""
    wd = max([8] + [len(r.detector) for r in rows])
    head = (f"{'detector':{wd}s} {'SNR':>5s} {'trials':>6s} {'bursts':>6s} {'sens':>6s} "
            f"{'lat med':>8s} {'lat p90':>8s} {'retrig':>6s} {'late':>4s} {'false':>5s} "
            f"{'false/min':>9s} {'rest min':>8s} {'crit':>5s}")
    lines = [head]
    for r in rows:
        snr = "rest" if r.snr_db is None else f"{r.snr_db:g}"
        lines.append(
            f"{r.detector:{wd}s} {snr:>5s} {r.trials:6d} {r.bursts:6d} "
            f"{_fmt(r.sensitivity, '.3f'):>6s} {_fmt(r.latency_median_ms, '.1f'):>8s} "
            f"{_fmt(r.latency_p90_ms, '.1f'):>8s} {r.retriggers:6d} {r.late:4d} "
            f"{r.false_detections:5d} {_fmt(r.false_per_min, '.2f'):>9s} {r.rest_min:8.2f} "
            f"{_fmt(r.crit, '.2f'):>5s}"
        )
    seeds = sorted({s for r in rows for s in r.seeds})
    lines.append(
        f"seeds {', '.join(map(str, seeds))}; hit = first onset within "
        f"-{SPLICE_EARLY_S * 1000:g}..+{SPLICE_LATE_S * 1000:g} ms of the burst onset; "
        "latency in ms after the onset; retrig = further onsets within a burst; late = first "
        "onset after the hit window (a miss); false = onsets outside every burst; rest = "
        "the rest stretches alone (no bursts); crit = share of trials meeting Yuvaraj et "
        "al.'s criterion (false <= 20 %, misses <= 20 %, median latency <= 50 ms)")
    return "\n".join(lines)


def render(rows: Sequence[Row], fmt: str, boot: Bootstrap) -> str:
    """The rows in one output format (``text``, ``csv``, ``md`` or ``json``)."""
    if fmt == "text":
        return format_table(rows) + "\n"
    records = [r.as_dict() for r in rows]
    if fmt == "csv":
        return to_csv(records, CSV_COLUMNS)
    if fmt == "md":
        notes = [NOTE_METRICS, boot.describe()]
        notes += [f"{r.recording}: {r.error or r.note}" for r in rows
                  if r.recording != "overall" and (r.error or r.note)]
        return to_markdown(records, MD_COLUMNS, notes=list(dict.fromkeys(notes)))
    return to_json(records, bootstrap={"n": boot.n, "seed": boot.seed, "level": boot.level,
                                       "method": boot.describe()})


#: What the figures mean, for the Markdown notes.
NOTE_METRICS = ("sensitivity = hits / refs; precision = hits / (hits + false detections); "
                "F1 = 2 hits / (refs + hits + false); latency = (decision sample - reference "
                "sample) / fs; onsets = every onset on every channel")

