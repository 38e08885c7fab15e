"""EMG-BIDS export: recordings as a BIDS dataset others can read (BDF+, TSV, JSON).

Follows the Brain Imaging Data Structure's EMG modality (BEP042, part of the BIDS
specification since 1.11: ``modality-specific-files/electromyography.md`` and the
schema's ``rules/sidecars/emg.yaml``, ``rules/tabular_data/emg.yaml``), with the
conventions of MNE-Python's EDF/BDF export where the specification leaves a choice.
One recording becomes, under ``ROOT/sub-S[/ses-N]/emg/``::

    sub-S[_ses-N]_task-T[_run-R]_emg.bdf       the EMG, BDF+ (24 bit), in microvolts
    sub-S[_ses-N]_task-T[_run-R]_emg.json      sidecar: the REQUIRED EMG fields and more
    sub-S[_ses-N]_task-T[_run-R]_channels.tsv  one row per channel, target muscle and
                                               placement from the config
    sub-S[_ses-N]_task-T[_run-R]_events.tsv    every event, also in the BDF+ annotations
    sub-S[_ses-N]_task-T[_run-R]_events.json   what the events' columns mean

and ``ROOT/dataset_description.json``, ``ROOT/participants.tsv`` and ``ROOT/README``
when they do not exist yet (an existing ``participants.tsv`` gets the subject's row
appended if it lacks it; nothing else is ever changed).

Why BDF+ and edfio
------------------
BIDS accepts EDF and BDF for EMG and recommends BDF+: 24-bit samples keep surface EMG's
dynamic range (stimulation artifacts of millivolts beside microvolt rest) where EDF's
16 bits would not. The file is written by ``edfio`` (maintained by MNE contributors and
used by MNE's own EDF/BDF export; pure Python on NumPy, typed, writes to an open file
so it can be created exclusively) rather than ``pyedflib`` (a C extension whose writer
opens the path itself and is fed sample blocks channel by channel).

Samples and resolution
----------------------
Each channel's physical range is symmetric, ``±max|x|`` over its **plausible** samples,
rounded up to what the 8 characters of the header can hold, so no plausible sample is
clipped; a value is stored to ``2 max|x| / (2**24 - 1)`` (e.g. 0.0002 uV for a channel
peaking at 2 mV) and read back within half of that. The samples are the ones the
recording holds; where it holds what no BDF can (a broken amplifier's NaN, ±inf or
1e10), the export writes something else and says so:

* **NaN and ±inf** (non-finite) are written as the channel's last finite value (0
  before the first), as the session's input checks held them for the detectors;
* a finite sample is **implausible** when it lies farther from its channel's median
  than ``PLAUSIBLE_MADS`` (1e5) times the channel's median absolute deviation, and
  farther than ``PLAUSIBLE_FLOOR_UV`` (100 mV), or beyond what a BDF header can hold
  (±9999999 uV): a knock of 1e10 V, a driver's garbage. It does not set the range (a
  single 1e10 V, could a header hold it, would leave the real EMG a resolution of
  1000 V) and is written clipped to the range's limits, with its sign. Real EMG,
  electrode knocks of millivolts and stimulation artifacts stay inside (anything within
  100 mV of the median always does): in the public recordings in ``shared/data`` and
  the shipped one, no sample lies beyond 115 median deviations. At worst a plausible
  sample at the bound sets a resolution of 1/80 of the channel's median deviation.

Each such stretch (one channel, one kind, consecutive samples) is an event
``BAD_nonfinite`` or ``BAD_clipped`` (MNE leaves annotations starting with ``BAD_`` out
of its analyses) whose ``details`` say what was there (how many NaN, +inf, -inf; the
smallest and largest value, in uV) and what was written; ``*_emg.json``
(``ReplacedSamples``), ``*_channels.tsv`` (``status_description``) and the export's
printed line give the counts per channel. A recording without such samples is
exported exactly as before: none of these appear. The recording's ``input_issue``
markers, exported as events, say what the session's checks made of them. Data records
last 1 s (or the shortest whole number of seconds holding a whole number of samples); a
recording that does not fill its last record is padded with its last values, and an
event ``BAD_ACQ_SKIP`` marks the padding (MNE's convention), so the first ``n`` samples
are exactly the recording and ``RecordingDuration`` is its true length.

Events
------
Onsets are ``sample / fs`` from the first sample of the file (``sample`` is that
0-based index). ``trial_type``:

* ``emg_onset``, ``emg_offset``, ``emg_suspend``: what the live detector decided
  (``muscle``);
* ``stim_on``, ``stim_change``, ``stim_off``: every stimulation command, at the sample
  it took effect (``decision_sample``: the sample that decided it), with
  ``current_ma``, ``pulse_width_us``, ``frequency_hz``, ``phase`` and the stimulator
  ``channel``; a ``stim_on`` lasts (``duration``) until its muscle's ``stim_off``;
* the session's markers under their own label: ``trigger``, ``cue``, ``hit``,
  ``miss``, ``truth`` (simulated true onsets), ``input_issue``, ``channel_restart``
  (a muscle's channel restarted after a bad stretch), ``stop_request``..., with their
  other fields as JSON in ``details``;
* ``BAD_nonfinite``, ``BAD_clipped``: samples the BDF could not hold as recorded
  (above);
* ``BAD_ACQ_SKIP``: the padding of the last data record, if any.

``value`` is ``trial_type/muscle`` (or ``trial_type``), the text of the matching BDF+
annotation: MNE reads the same events back from either.

Nothing is overwritten: every file of a recording is checked before the first is
written, and each is created exclusively.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import closedloop
from closedloop.config import Config
from closedloop.errors import ConfigError, InputError
from closedloop.io.recorded import recorded_config

#: BIDS version the files follow.
BIDS_VERSION = "1.11.1"
#: Digital range of BDF (24-bit signed).
_DMIN, _DMAX = -(2**23), 2**23 - 1
#: Microvolts per unit of the recorded stream.
UNIT_SCALE = {"v": 1e6, "volt": 1e6, "volts": 1e6, "mv": 1e3, "millivolt": 1e3,
              "uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolt": 1.0, "microvolts": 1.0}
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
#: A finite sample farther than this many median absolute deviations from its channel's
#: median (and farther than :data:`PLAUSIBLE_FLOOR_UV`) is not EMG (module docstring).
PLAUSIBLE_MADS = 1e5
#: Within this many microvolts of its channel's median a sample is always plausible.
PLAUSIBLE_FLOOR_UV = 1e5
#: The largest magnitude (uV) whose range still fits the 8 characters of a BDF header.
HEADER_MAX_UV = 9_999_998.0


@dataclass(frozen=True)
class BidsTarget:
    """Where one recording goes in the dataset.

    Attributes
    ----------
    root : str
    subject, session, task : str
        BIDS labels (letters and digits only); ``session`` may be None.
    run : int or None
    """

    root: str
    subject: str
    task: str
    session: str | None = None
    run: int | None = None

    @property
    def folder(self) -> Path:
        """``ROOT/sub-S[/ses-N]/emg``."""
        d = Path(self.root) / f"sub-{self.subject}"
        return (d / f"ses-{self.session}" if self.session else d) / "emg"

    @property
    def stem(self) -> str:
        """``sub-S[_ses-N]_task-T[_run-R]``."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        parts.append(f"task-{self.task}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        return "_".join(parts)

    def path(self, suffix: str) -> Path:
        """The file ``<stem>_<suffix>`` in :attr:`folder`."""
        return self.folder / f"{self.stem}_{suffix}"


@dataclass(frozen=True)
class ExportTask:
    """One recording to export (picklable, for the batch)."""

    path: str
    target: BidsTarget
    config: str | None = None
    stream: str | None = None
    emg_units: str | None = None


@dataclass(frozen=True)
class Replaced:
    """Samples of one channel the BDF could not hold as recorded (module docstring).

    Attributes
    ----------
    label : str
        The BDF channel label.
    clipped : int
        Implausible finite samples, written clipped to the physical range.
    filled : int
        NaN/inf samples, written as the last finite value.
    limit_uv : float
        The channel's physical range is ``±limit_uv``.
    """

    label: str
    clipped: int
    filled: int
    limit_uv: float

    def describe(self) -> str:
        """What was written instead, for a person (channels.tsv, the printed line)."""
        parts = []
        if self.clipped:
            parts.append(f"{self.clipped} sample(s) beyond the plausible range clipped to "
                         f"±{self.limit_uv:g} uV (BAD_clipped events)")
        if self.filled:
            parts.append(f"{self.filled} NaN/inf sample(s) written as the last finite value "
                         "(BAD_nonfinite events)")
        return "; ".join(parts)


@dataclass
class Exported:
    """What :func:`export_recording` wrote."""

    source: str
    files: list[str] = field(default_factory=list)
    channels: int = 0
    samples: int = 0
    fs: float = 0.0
    events: int = 0
    padded: int = 0
    seconds: float = 0.0  # wall time of the export
    #: what is damaged in a cut-short or corrupt recording (only its intact part is
    #: exported); empty for a whole one
    damage: str = ""
    #: channels with samples the BDF could not hold as recorded (module docstring)
    replaced: list[Replaced] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Length of the recording."""
        return self.samples / self.fs if self.fs else 0.0


def require_writer() -> None:
    """Check that the BDF writer is installed (the ``bids`` extra).

    Raises
    ------
    ConfigError
        Saying how to install it.
    """
    try:
        import edfio  # noqa: F401
    except ImportError:
        raise ConfigError("closedloop export needs edfio to write BDF+: install it with "
                          "pip install 'closedloop[bids]'") from None


def check_label(what: str, value: str) -> str:
    """A BIDS label: letters and digits only.

    Raises
    ------
    ConfigError
        Naming the entity, the bad value and what is allowed.
    """
    value = str(value)
    if not _LABEL.match(value):
        raise ConfigError(f"--{what} {value!r}: a BIDS {what} label may only hold letters and "
                          "digits (no '-', '_', spaces or dots), e.g. 01 or P07")
    return value


def task_label(config: Config) -> str:
    """The default task label: the config's name without its non-alphanumeric
    characters (``biceps_triceps`` -> ``bicepstriceps``)."""
    return re.sub(r"[^A-Za-z0-9]", "", config.name) or "closedloop"


def microvolts_per_unit(units: str, path: Any, override: str | None = None) -> float:
    """The factor from the stream's unit to microvolts.

    Raises
    ------
    InputError
        The unit is unknown and none was given.
    """
    u = (override or units or "").strip().lower()
    if u in UNIT_SCALE:
        return UNIT_SCALE[u]
    raise InputError(
        f"{path}: the EMG stream's unit is {units!r}, not one of V, mV or uV; give it with "
        "--emg-units V|mV|uV"
    )


def _header_ceil(v: float) -> float:
    """The smallest number >= ``v`` whose negative fits the 8 characters of a BDF header
    field (so ``(-x, x)`` is a physical range that clips nothing)."""
    if not math.isfinite(v) or v <= 0:
        return 1.0
    for d in range(7, -1, -1):
        x = math.ceil(v * 10**d) / 10**d
        if len(f"{-x:.{d}f}") <= 8:
            return x
    raise InputError(f"a sample of {v:g} uV is too large for a BDF header (at most 9999999)")


def _peaks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of ``x`` (n, n_channels; uV): ``max|x|`` (NaN if a NaN is there), and
    whether every sample is plausible by the quick test (finite, no wider than
    ``PLAUSIBLE_FLOOR_UV`` peak to peak, within ``HEADER_MAX_UV``): two reductions."""
    lo, hi = np.empty(x.shape[1]), np.empty(x.shape[1])
    for k in range(x.shape[1]):  # a column at a time: twice as fast as along axis 0
        col = np.ascontiguousarray(x[:, k])
        lo[k], hi[k] = col.min(), col.max()  # NaN where a NaN is
    with np.errstate(invalid="ignore"):
        peak = np.maximum(hi, -lo)
        return peak, (hi - lo <= PLAUSIBLE_FLOOR_UV) & (peak <= HEADER_MAX_UV)


def plausible(x: np.ndarray, path: Any = "", labels: Sequence[str] = ()) -> np.ndarray:
    """Where the samples ``x`` (n, n_channels; microvolts) are plausible EMG: finite, within
    ``HEADER_MAX_UV``, and within ``max(PLAUSIBLE_MADS * MAD, PLAUSIBLE_FLOOR_UV)`` of their
    channel's median (MAD: the median absolute deviation from it; both over the finite
    samples). The module docstring says why.

    Raises
    ------
    InputError
        Most of a channel's finite samples are implausible: its values, not a few of
        them, are beyond what a BDF holds (the stream's unit is wrong, most likely).
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.ones(x.shape, dtype=bool)
    for c in np.flatnonzero(~_peaks(x)[1]):  # the usual case (every |x| < 0.1 V) skips this
        col = x[:, c]
        fin = np.isfinite(col)
        if not fin.any():
            ok[:, c] = False
            continue
        med = float(np.median(col[fin]))
        bound = max(PLAUSIBLE_MADS * float(np.median(np.abs(col[fin] - med))),
                    PLAUSIBLE_FLOOR_UV)
        with np.errstate(invalid="ignore"):
            ok[:, c] = (np.abs(col - med) <= bound) & (np.abs(col) <= HEADER_MAX_UV)
        if 2 * np.count_nonzero(ok[:, c]) < np.count_nonzero(fin):
            name = labels[c] if c < len(labels) else f"column {c}"
            raise InputError(
                f"{path}: channel {name}: most of its values (median {med:g} uV) are beyond "
                f"what a BDF can hold (±{HEADER_MAX_UV:.0f} uV): the stream's unit is "
                "probably wrong; give it with --emg-units V|mV|uV")
    return ok


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of True in the 1-d ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _bad_stretches(raw: np.ndarray, written: np.ndarray, nonfinite: np.ndarray,
                   clipped: np.ndarray, channels: Sequence[str],
                   fs: float) -> list[dict[str, Any]]:
    """The ``BAD_nonfinite`` and ``BAD_clipped`` events (module docstring): one per
    channel, kind and run of consecutive samples; ``raw`` what was recorded (uV),
    ``written`` what the BDF holds."""
    rows: list[dict[str, Any]] = []
    for c, muscle in enumerate(channels):
        for kind, mask in (("BAD_nonfinite", nonfinite[:, c]), ("BAD_clipped", clipped[:, c])):
            for a, b in _runs(mask):
                seen = raw[a:b, c]
                if kind == "BAD_nonfinite":
                    what = {"nan": int(np.count_nonzero(np.isnan(seen))),
                            "+inf": int(np.count_nonzero(np.isposinf(seen))),
                            "-inf": int(np.count_nonzero(np.isneginf(seen)))}
                else:
                    what = {"min_uv": float(seen.min()), "max_uv": float(seen.max())}
                what["written_uv"] = sorted({float(v) for v in written[a:b, c]})
                rows.append({"onset": a / fs, "duration": (b - a) / fs, "trial_type": kind,
                             "value": f"{kind}/{muscle}", "sample": a, "muscle": muscle,
                             "details": json.dumps(what, sort_keys=True)})
    return rows


def _record_duration(fs: float) -> int:
    """Seconds per data record: the fewest (1-10) holding a whole number of samples."""
    for d in range(1, 11):
        if abs(d * fs - round(d * fs)) < 1e-9 * max(1.0, fs):
            return d
    raise InputError(f"a rate of {fs:g} Hz gives no whole number of samples in 1-10 s: BDF "
                     "cannot store it")


def _fmt_time(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".") if math.isfinite(x) else "n/a"


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:g}" if isinstance(x, float) else str(x)


# -- events ------------------------------------------------------------------------------
EVENT_COLUMNS = ["onset", "duration", "trial_type", "value", "sample", "muscle", "channel",
                 "current_ma", "pulse_width_us", "frequency_hz", "phase", "decision_sample",
                 "details"]


def session_events(session: Any, first: int, n: int, fs: float) -> list[dict[str, Any]]:
    """The events of a recording as rows of ``events.tsv`` (module docstring), sorted by
    onset. ``first`` is the pipeline sample of the file's first sample, ``n`` its
    sample count (a stimulation still on at the end lasts until then)."""
    rows: list[dict[str, Any]] = []

    def add(kind: str, sample: int, muscle: str = "", duration: float = 0.0,
            **extra: Any) -> None:
        k = int(sample) - first
        rows.append({"onset": k / fs, "duration": duration, "trial_type": kind,
                     "value": f"{kind}/{muscle}" if muscle else kind, "sample": k,
                     "muscle": muscle or None, **extra})

    for e in session.events:
        add(f"emg_{e.kind}", e.sample, e.channel)
    on_since: dict[str, dict[str, Any]] = {}
    current: dict[str, float] = {}
    for c in session.commands:
        at = c.effective_sample if c.effective_sample >= 0 else c.sample
        was = current.get(c.muscle, 0.0)
        kind = ("stim_on" if c.is_on and was <= 0 else "stim_off" if not c.is_on
                else "stim_change")
        if kind == "stim_off" and was <= 0:
            continue  # an off for a channel already off (the all-off at the end)
        current[c.muscle] = c.current_ma if c.is_on else 0.0
        add(kind, at, c.muscle, channel=c.channel, current_ma=c.current_ma,
            pulse_width_us=c.pulse_width_us, frequency_hz=c.frequency_hz, phase=c.phase,
            decision_sample=int(c.sample) - first)
        if kind == "stim_on":
            on_since[c.muscle] = rows[-1]
        elif kind == "stim_off" and c.muscle in on_since:
            start = on_since.pop(c.muscle)
            start["duration"] = (at - first - start["sample"]) / fs
    for start in on_since.values():  # still on when the recording ended
        start["duration"] = (n - start["sample"]) / fs
    for m in session.markers:
        if m.sample is not None:
            sample = int(m.sample)
        else:
            sample = first + int(np.searchsorted(session.timestamps, m.time))
        fields = dict(m.fields)
        muscle = str(fields.pop("muscle", "") or "")
        add(m.label, sample, muscle,
            details=json.dumps(fields, sort_keys=True, default=str) if fields else None)
    rows.sort(key=event_order)
    return rows


def event_order(row: dict[str, Any]) -> tuple[int, float, str, str]:
    """Rows of ``events.tsv`` in order of sample, then duration (the order MNE gives
    the BDF+ annotations), then kind."""
    return row["sample"], row["duration"], row["trial_type"], row["value"]


EVENTS_JSON: dict[str, Any] = {
    "onset": {"Description": "Seconds from the first sample of the BDF file "
                             "(sample / SamplingFrequency).", "Units": "s"},
    "duration": {"Description": "Seconds; 0 for instantaneous events. A stim_on lasts until "
                                "its muscle's stim_off.", "Units": "s"},
    "trial_type": {
        "Description": "What happened.",
        "Levels": {
            "emg_onset": "The live detector decided a muscle started contracting.",
            "emg_offset": "The live detector decided a muscle stopped contracting.",
            "emg_suspend": "The input checks suspended a channel's detector (unusable or "
                           "not yet checked signal): nothing on it could drive stimulation.",
            "stim_on": "Stimulation of a muscle started (current from 0).",
            "stim_change": "The current of an ongoing stimulation changed (ramps).",
            "stim_off": "Stimulation of a muscle stopped.",
            "trigger": "The protocol triggered stimulation from an EMG onset.",
            "cue": "A cued trial asked the patient to move.",
            "hit": "A cued trial's onset came in time.",
            "miss": "A cued trial ended without an onset.",
            "truth": "A true movement-attempt onset of the simulated patient.",
            "input_issue": "The input checks found a problem (details: kind, message).",
            "channel_restart": "The session restarted a muscle's channel (its filters and "
                               "the detector's conditioning) after a bad stretch, just "
                               "before this sample.",
            "stop_request": "A STOP request arrived (details: who sent it).",
            "BAD_nonfinite": "The recording holds NaN/inf here (details: how many of "
                             "each); the BDF holds the channel's last finite value.",
            "BAD_clipped": "The recording holds values beyond the channel's plausible "
                           "range here (details: the smallest and largest, in uV); the "
                           "BDF holds them clipped to its physical range.",
            "BAD_ACQ_SKIP": "Padding of the last data record (not recorded data).",
        },
    },
    "value": {"Description": "trial_type/muscle: the text of the BDF+ annotation."},
    "sample": {"Description": "0-based index of the event's sample in the BDF file."},
    "muscle": {"Description": "The muscle (EMG channel's target muscle) concerned."},
    "channel": {"Description": "Stimulator channel of a stimulation command."},
    "current_ma": {"Description": "Stimulation current.", "Units": "mA"},
    "pulse_width_us": {"Description": "Stimulation pulse width (per phase).", "Units": "us"},
    "frequency_hz": {"Description": "Stimulation pulse rate.", "Units": "Hz"},
    "phase": {"Description": "Stage of the stimulation train (ramp_up, plateau, "
                             "ramp_down, off...)."},
    "decision_sample": {"Description": "0-based index of the sample whose processing "
                                       "decided the command (it takes effect at 'sample')."},
    "details": {"Description": "The marker's other fields, JSON."},
}


# -- the export ----------------------------------------------------------------------------
def _tsv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        out = []
        for c in columns:
            v = r.get(c)
            if c in ("onset", "duration") and isinstance(v, float):
                out.append(_fmt_time(v))
            else:
                out.append(_num(v) if not isinstance(v, str) else (v or "n/a"))
        w.writerow(out)
    return buf.getvalue()


def _write_new(path: Path, data: str | bytes) -> None:
    """Create ``path``; never replace an existing file. A file that cannot be written
    whole (a full disk) is not left in part.

    Raises
    ------
    InputError
        The file exists.
    ConfigError
        It could not be written (the message says why and what to do).
    """
    mode = "xb" if isinstance(data, bytes) else "x"
    created = False
    try:
        with open(path, mode, **({} if isinstance(data, bytes) else
                                 {"encoding": "utf-8", "newline": ""})) as f:
            created = True
            f.write(data)
    except FileExistsError:
        raise InputError(f"{path} already exists: closedloop export never overwrites; choose "
                         "another --session or --run, or another --bids folder") from None
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                path.unlink()
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc}); free disk space, or "
                          "give a --bids folder you can write to") from None


def planned_files(target: BidsTarget) -> list[Path]:
    """The files :func:`export_recording` writes for one recording."""
    return [target.path(s) for s in ("emg.bdf", "emg.json", "channels.tsv", "events.tsv",
                                     "events.json")]


def export_recording(task: ExportTask) -> Exported:
    """Export one recording (module docstring); returns what was written.

    Raises
    ------
    InputError
        Unreadable recording, unknown unit, or a target file that exists already.
    ConfigError
        A bad ``--config``.
    """
    from closedloop.io.xdf import load_session

    t0 = time.perf_counter()
    _refuse_existing(task.target)
    session = load_session(task.path, emg_stream=task.stream)
    out = export_session(session, task)
    out.damage = str(getattr(session, "damage_report", "") or "") if session.damage else ""
    out.seconds = time.perf_counter() - t0
    return out


def _refuse_existing(target: BidsTarget) -> None:
    for p in planned_files(target):
        if p.exists():
            raise InputError(f"{p} already exists: closedloop export never overwrites; choose "
                             "another --session or --run, or another --bids folder")


def export_session(session: Any, task: ExportTask) -> Exported:
    """Export a recording already read with :func:`closedloop.io.xdf.load_session` (or
    anything with its attributes) to ``task.target``; ``task.path`` only names it.
    ``seconds`` is the time this took (reading excluded)."""
    import edfio

    t0 = time.perf_counter()
    tgt = task.target
    _refuse_existing(tgt)
    config = recorded_config(session, task.config)
    fs = float(session.fs)
    if not fs > 0:
        raise InputError(f"{task.path}: the EMG stream has no nominal rate; BDF needs one")
    scale = microvolts_per_unit(session.units, task.path, task.emg_units)
    x = np.asarray(session.samples, dtype=np.float64) * scale  # NaN/inf held (as the
    n, nch = x.shape                                            # detectors saw them)
    if n == 0:
        raise InputError(f"{task.path}: the EMG stream holds no samples")
    labels = [f"EMG {c}"[:16] for c in session.channels]
    if len(set(labels)) != len(labels):
        raise InputError(f"{task.path}: channel names {session.channels} are not unique in the "
                         "16 characters of a BDF label; rename them in the config")
    raw = x  # what the recording holds (NaN/inf included), when it differs
    if session.received is not session.samples:
        with np.errstate(over="ignore", invalid="ignore"):
            raw = np.asarray(session.received, dtype=np.float64) * scale
    peaks, clean = _peaks(raw)
    replaced: list[Replaced] = []
    bad: list[dict[str, Any]] = []  # the BAD_nonfinite and BAD_clipped events
    if clean.all():  # the usual case: no mask of the whole recording
        tops = [_header_ceil(float(p) * (1 + 1e-9)) for p in peaks]
    else:
        ok = plausible(raw, task.path, session.channels)
        nonfinite = ~np.isfinite(raw)
        clipped = ~ok & ~nonfinite
        tops = [_header_ceil(float(np.max(np.abs(x[ok[:, k], k]), initial=0.0)) * (1 + 1e-9))
                for k in range(nch)]
        replaced = [Replaced(labels[k], int(np.count_nonzero(clipped[:, k])),
                             int(np.count_nonzero(nonfinite[:, k])), tops[k])
                    for k in range(nch) if not ok[:, k].all()]
        # what the BDF can hold: NaN/inf held, the implausible values clipped
        top = np.asarray(tops)
        x = np.where(ok, x, np.clip(np.where(nonfinite, x, raw), -top, top))
        bad = _bad_stretches(raw, x, nonfinite, clipped, session.channels, fs)
    first = int(session.counter[0]) if session.counter is not None and len(session.counter) else 0
    rec_s = _record_duration(fs)
    per_record = int(round(rec_s * fs))
    pad = (-n) % per_record
    data = np.pad(x, ((0, pad), (0, 0)), mode="edge") if pad else x
    muscles = {m.name: m for m in config.muscles}
    signals = []
    for k in range(nch):
        signals.append(edfio.BdfSignal(
            data[:, k], fs, label=labels[k], transducer_type="surface EMG electrodes",
            physical_dimension="uV", physical_range=(-tops[k], tops[k]),
            digital_range=(_DMIN, _DMAX)))
    events = session_events(session, first, n, fs)
    if bad:
        events = sorted(events + bad, key=event_order)
    if pad:
        events.append({"onset": n / fs, "duration": pad / fs, "trial_type": "BAD_ACQ_SKIP",
                       "value": "BAD_ACQ_SKIP", "sample": n})
    annotations = [edfio.EdfAnnotation(e["sample"] / fs, e["duration"] or None, e["value"])
                   for e in events]
    bdf = edfio.Bdf(signals, patient=edfio.Patient(code=f"sub-{tgt.subject}"),
                    recording=edfio.Recording(), data_record_duration=float(rec_s),
                    annotations=annotations)
    tgt.folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    bdf.write(buf)
    out = Exported(source=str(task.path), channels=nch, samples=n, fs=fs, events=len(events),
                   padded=pad, replaced=replaced)
    written = [(tgt.path("emg.bdf"), buf.getvalue()),
               (tgt.path("emg.json"), json.dumps(_sidecar(session, config, tgt, n, fs,
                                                          muscles, replaced), indent=2) + "\n"),
               (tgt.path("channels.tsv"), _channels_tsv(session, labels, muscles, fs,
                                                        replaced)),
               (tgt.path("events.tsv"), _tsv(events, EVENT_COLUMNS)),
               (tgt.path("events.json"), json.dumps(EVENTS_JSON, indent=2) + "\n")]
    try:
        for path, content in written:
            _write_new(path, content)
            out.files.append(str(path))
    except ConfigError:  # a recording is exported whole or not at all
        for path in out.files:
            with contextlib.suppress(OSError):
                Path(path).unlink()
        raise
    out.seconds = time.perf_counter() - t0
    return out


def _sidecar(session: Any, config: Config, tgt: BidsTarget, n: int, fs: float,
             muscles: dict[str, Any], replaced: Sequence[Replaced] = ()) -> dict[str, Any]:
    placed = [muscles[c].placement for c in session.channels
              if c in muscles and muscles[c].placement]
    meta = getattr(session, "metadata", {}) or {}
    source = str(meta.get("source_name") or meta.get("source") or session.name)
    d: dict[str, Any] = {
        "TaskName": tgt.task,
        "TaskDescription": config.description or "n/a",
        "SamplingFrequency": fs,
        "PowerLineFrequency": config.filters.notch_hz or "n/a",
        "SoftwareFilters": "n/a",
        "EMGReference": "n/a",
        "EMGPlacementScheme": "ChannelSpecific" if placed else "Other",
        "EMGPlacementSchemeDescription": (
            "per channel, from the session config: see placement_description in "
            "channels.tsv" if placed else "not recorded (no placement in the config)"),
        "EMGChannelCount": len(session.channels),
        "RecordingDuration": n / fs,
        "RecordingType": "continuous",
        "Manufacturer": source,
        "SoftwareVersions": f"closedloop {closedloop.__version__}",
        "TriggerChannelCount": 0,
    }
    if session.commands:
        d["SubjectArtefactDescription"] = (
            "electrical stimulation artifacts and M-waves while stimulating: see the stim_on,"
            " stim_change and stim_off events")
    if replaced:  # not a BIDS field (sidecars may hold others): what the BDF does not hold
        d["ReplacedSamples"] = {r.label: {"clipped": r.clipped, "filled": r.filled}
                                for r in replaced}
        d["ReplacedSamplesDescription"] = (
            "Per channel, samples the BDF does not hold as recorded: 'clipped' values beyond "
            "the channel's plausible range, written clipped to its physical range "
            "(BAD_clipped events); 'filled' NaN/inf, written as the channel's last finite "
            "value (BAD_nonfinite events).")
    return d


CHANNEL_COLUMNS = ["name", "type", "units", "description", "sampling_frequency",
                   "target_muscle", "placement_scheme", "placement_description", "reference",
                   "low_cutoff", "high_cutoff", "notch", "status"]


def _channels_tsv(session: Any, labels: Sequence[str], muscles: dict[str, Any],
                  fs: float, replaced: Sequence[Replaced] = ()) -> str:
    said = {r.label: r.describe() for r in replaced}
    rows = []
    for label, ch in zip(labels, session.channels, strict=True):
        m = muscles.get(ch)
        rows.append({
            "name": label, "type": "EMG", "units": "uV",
            "description": f"surface EMG, stream channel {ch!r}",
            "sampling_frequency": fs, "target_muscle": m.name if m else None,
            "placement_scheme": "other" if m and m.placement else None,
            "placement_description": m.placement if m and m.placement else None,
            "reference": None, "low_cutoff": None, "high_cutoff": None, "notch": None,
            "status": None, "status_description": said.get(label),
        })
    return _tsv(rows, CHANNEL_COLUMNS + (["status_description"] if said else []))


def prepare_dataset(root: str | Path, subject: str, *, name: str = "closedloop EMG") -> list[str]:
    """The dataset-level files: ``dataset_description.json`` and ``README`` when absent,
    the subject's row in ``participants.tsv`` (created, or appended to). Returns the
    files it created or changed.

    Raises
    ------
    InputError
        An existing ``dataset_description.json`` that is not a BIDS description.
    """
    r = Path(root)
    r.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    desc = r / "dataset_description.json"
    if desc.exists():
        try:
            ok = "BIDSVersion" in json.loads(desc.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"{desc} exists but is not a BIDS dataset description (no "
                             "BIDSVersion): export into an empty folder or a BIDS dataset")
    else:
        _write_new(desc, json.dumps({
            "Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
            "GeneratedBy": [{"Name": "closedloop", "Version": closedloop.__version__,
                             "Description": "closedloop export --bids"}],
        }, indent=2) + "\n")
        done.append(str(desc))
    readme = r / "README"
    if not readme.exists() and not any(r.glob("README.*")):
        _write_new(readme, f"# {name}\n\nSurface EMG recorded with closedloop "
                           "(EMG-triggered electrical stimulation), exported with "
                           "`closedloop export --bids`.\n")
        done.append(str(readme))
    part = r / "participants.tsv"
    row_id = f"sub-{subject}"
    if not part.exists():
        _write_new(part, f"participant_id\n{row_id}\n")
        done.append(str(part))
    else:
        text = part.read_text(encoding="utf-8")
        lines = text.splitlines()
        ids = {ln.split("\t", 1)[0] for ln in lines[1:]}
        if row_id not in ids:  # append only: an existing row is never changed
            width = len(lines[0].split("\t")) if lines else 1
            with open(part, "a", encoding="utf-8", newline="") as f:
                f.write(("" if text.endswith("\n") or not text else "\n")
                        + "\t".join([row_id] + ["n/a"] * (width - 1)) + "\n")
            done.append(str(part))
    return done


__all__ = ["BIDS_VERSION", "BidsTarget", "ExportTask", "Exported", "Replaced", "check_label",
           "export_recording", "export_session", "microvolts_per_unit", "planned_files",
           "plausible", "prepare_dataset", "require_writer", "session_events", "task_label"]
