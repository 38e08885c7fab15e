"""The LSL streams of one session, and the JSON format of closedloop's marker streams.

:class:`SessionOutlets` publishes everything a session decides, so LabRecorder (or any
LSL tool) can record it next to the EMG it was decided from. All streams of a session
share one stream-time domain: each sample, event and command is stamped with the stream
time of the EMG sample it belongs to (never the wall clock).

Streams (``S`` is the session name, ``U`` a fresh uuid per session)
------------------------------------------------------------------
==================  ==============  ========================================================
name                type            content
==================  ==============  ========================================================
``S-EMG``           ``EMG``         the input EMG as received (NaN/inf included; in the
                                    source's own format, float32 or double64: see
                                    :attr:`SourceInfo.sample_format`; nominal rate), one
                                    channel per muscle plus a last channel ``counter``
``S-Envelope``      ``Envelope``    the detector's statistic per muscle plus ``counter``
                                    (optional; float32: for viewing, nothing decides from
                                    it): an envelope for the threshold detector, CUSUM's
                                    log-likelihood ratio for cusum (see *Units* below)
``S-Thresholds``    ``Thresholds``  irregular: ``<m>_on``, ``<m>_off`` per muscle, ``sample``
                                    (index they were in force at), ``counter`` (optional);
                                    in the statistic's unit
``S-Events``        ``Markers``     detector events, JSON
``S-Stim``          ``Markers``     stimulation commands, JSON of every StimCommand field
                                    and the ``session`` uid
``S-Markers``       ``Markers``     trial and cue markers, JSON; ``input_issue`` markers:
                                    what the input checks said (``kind``, ``channel``,
                                    ``message``), at the sample it concerns;
                                    ``channel_restart`` markers: where the session
                                    restarted a muscle's channel after a bad stretch
                                    (``sample``, ``muscle``; see *Channel restarts*);
                                    ``source_counter`` markers: the source's own
                                    counter where it does not continue (see
                                    :meth:`SessionOutlets.push_emg`); ``truth``
                                    markers: the simulated patient's true onsets
                                    (``sample``, ``muscle``)
``S-Filtered``      ``FilteredEMG`` what the detector sees: the EMG after stimulation blanking,
                                    the band-pass and notch filters and the residual
                                    cancelling, per muscle plus ``counter`` (with the
                                    envelope; for the live view, not recorded: replay
                                    computes it again sample for sample)
``S-Session``       ``SessionInfo`` the config text (TOML) and session metadata; the
                                    running totals (``tally``, see below)
==================  ==============  ========================================================

Every stream's ``source_id`` is ``closedloop.U.<role>``, unique per session;
:meth:`SessionOutlets.recorder_predicates` gives them to the recorder. Every stream's
``desc`` has ``<closedloop>`` with ``session``, ``session_uid``, ``role`` and
``version``; numeric streams list their channels (``label``, ``type``, ``unit``) in
``desc/channels``.

Units
-----
The EMG and filtered EMG channels carry the source's unit (``V``, ``microvolts``...).
The envelope and thresholds streams carry the detector's statistic, in the unit its
class declares (:attr:`~closedloop.core.detectors.base.Detector.statistic_info`, given as
``statistic``; :func:`closedloop.units.recorded_unit`): the EMG's unit for an envelope
(``threshold``), its square (``V^2``) for the Teager-Kaiser energy (``tkeo``), ``nats``
for CUSUM's log-likelihood ratio (``cusum``), none (``""``) for a statistic without one.
Their ``desc/closedloop/statistic`` says the same (``name``, ``unit``), and the channel
``type`` of a statistic that is not an envelope is its name (``cusum statistic``).
Recordings made before this carry the EMG's unit there whatever the detector, and no
``statistic``: :func:`closedloop.io.xdf.statistic_unit` reads either.

Proving that nothing was lost
-----------------------------
The ``counter`` channel of the EMG and envelope streams is the 0-based index of the
sample in the pipeline (the same index as :attr:`Event.sample`). In a double64 stream it
is exact up to 2**53; in a float32 stream it counts modulo 2**24 (:data:`COUNTER_WRAP`,
2.3 h at 2 kHz: float32 holds whole numbers exactly up to there) and readers unwrap it
(:func:`unwrap_counter`). A recording holds every sample iff that channel runs 0, 1, 2,
... without a gap or repeat, and events and commands can be matched to the samples they
name. Every JSON marker carries ``seq``, its 0-based number within its stream, for the
same proof. :func:`closedloop.io.recorder.verify_recording` checks both.

Session info and late recorders
-------------------------------
A marker pushed before LabRecorder subscribed is lost, so the config text and metadata
are put where a recorder cannot miss them: in the ``S-Session`` stream's header
(``desc/closedloop/config`` and ``desc/closedloop/metadata``), which LabRecorder writes
into the file whenever it subscribes. :meth:`SessionOutlets.announce` also pushes them
as a marker; call it after the recorder has started (``XdfRecorder.start`` returns once
every stream is being collected), and again whenever a recorder joins later.

Running totals for a view that attaches late
--------------------------------------------
Markers pushed before a consumer subscribed never reach it, so a live view opened in the
middle of a session cannot count triggers or stimulation time from them alone. The
session therefore publishes its totals since its first sample on the ``S-Session``
stream (:meth:`SessionOutlets.push_tally`, called by the loop once per chunk; pushed
when a count changed and at least once per second of samples): onsets per muscle, trial
markers by label, stimulation trains and on-time per muscle, the planned duration, and
how many events, commands and markers the totals include (their ``seq``), so a reader
adds exactly the items that came after (:class:`SessionTally`).

Channel restarts
----------------
After a bad stretch (flat, saturated, held, NaN, mains hum, an impulse or absurd values,
a break in the stream) the session restarts the channel's filters and the detector's
conditioning at the first sample it processes after the stretch
(:meth:`Pipeline.restart_channel <closedloop.core.pipeline.Pipeline.restart_channel>`,
named in :attr:`Block.restarts <closedloop.core.events.Block.restarts>`). The loop marks
each restart with a ``channel_restart`` marker (:data:`CHANNEL_RESTART`) whose ``sample``
is that first sample and ``muscle`` the muscle, so a live view can restart what it
derives from the filtered EMG (its EMG level) at the same sample. The sample is decided
on the sample clock: the same in any chunking, live and in a replay. The ``input_issue``
markers do not say it: a ``recovered`` issue need not come with a restart (another check
may still hold the channel bad) and a short impulse is restarted after without one. The
markers stream of a session that marks its restarts says so in its header
(``desc/closedloop/restart_marker`` = ``channel_restart``); one recorded or published
before has neither. The markers are for display and analysis: nothing in the session
reads them.

Timestamps 0.0 and -1.0
-----------------------
liblsl replaces a timestamp of exactly 0.0 by "now" and treats -1.0 as "deduce from the
previous sample", and XDF cannot store 0.0 at all. Those two exact values are pushed as
the adjacent double (``np.nextafter``) and mapped back by :func:`restore_timestamps`,
so stream times such as ``sample / fs`` starting at 0 survive the round trip exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pylsl

import closedloop
from closedloop.core.events import Block, Event
from closedloop.core.evoked import MWave
from closedloop.core.stream import Chunk, SourceInfo
from closedloop.errors import ConfigError, InputError
from closedloop.stim.commands import StimCommand
from closedloop.units import ENVELOPE, Statistic, recorded_unit

ROLE_EMG = "emg"
ROLE_ENVELOPE = "envelope"
ROLE_THRESHOLDS = "thresholds"
ROLE_EVENTS = "events"
ROLE_STIM = "stim"
ROLE_MARKERS = "markers"
ROLE_SESSION = "session"
ROLE_FILTERED = "filtered"
ROLE_MWAVE = "mwave"

#: Stream-name suffix and LSL type of each role.
STREAMS: dict[str, tuple[str, str]] = {
    ROLE_EMG: ("EMG", "EMG"),
    ROLE_ENVELOPE: ("Envelope", "Envelope"),
    ROLE_THRESHOLDS: ("Thresholds", "Thresholds"),
    ROLE_EVENTS: ("Events", "Markers"),
    ROLE_STIM: ("Stim", "Markers"),
    ROLE_MARKERS: ("Markers", "Markers"),
    ROLE_SESSION: ("Session", "SessionInfo"),
    ROLE_FILTERED: ("Filtered", "FilteredEMG"),
    ROLE_MWAVE: ("MWave", "MWave"),
}
#: Streams published for live displays only: not recorded, not in the expected counts.
DISPLAY_ONLY = (ROLE_FILTERED,)
#: A session pushes its running totals at least this often (seconds of samples).
TALLY_EVERY_S = 1.0
COUNTER_LABEL = "counter"
FLOAT32, DOUBLE64 = "float32", "double64"
#: A float32 stream's counter channel counts modulo this (float32 holds whole numbers
#: exactly up to 2**24); :func:`unwrap_counter` gives the sample index back.
COUNTER_WRAP = 2**24
_CF = {FLOAT32: pylsl.cf_float32, DOUBLE64: pylsl.cf_double64}
#: Label of the markers that record the source's own counter where it does not continue.
SOURCE_COUNTER = "source_counter"
#: Label of the markers that record a true onset (simulated sessions).
TRUTH = "truth"
#: Label of the markers that record where the session restarted a muscle's channel
#: after a bad stretch (``sample``: the first sample processed after the restart,
#: ``muscle``); see the module docstring, *Channel restarts*.
CHANNEL_RESTART = "channel_restart"
MARKER_FORMAT = "closedloop-json-1"

_ZERO_SUB = float(np.nextafter(0.0, 1.0))
_MINUS_ONE_SUB = float(np.nextafter(-1.0, -2.0))


# -- counters -----------------------------------------------------------------------------
def unwrap_counter(values: np.ndarray, channel_format: str) -> np.ndarray:
    """The sample indices a recorded ``counter`` channel stands for, as float64.

    A double64 stream holds them as they are. A float32 stream holds them modulo
    :data:`COUNTER_WRAP` (2**24 samples: 2.3 h at 2 kHz): a value more than half the
    wrap below the one before starts the next lap. A value that is not a whole number
    (NaN, a changed bit) is left as it is, for the caller's check to find.
    """
    v = np.asarray(values, dtype=np.float64)
    if channel_format != FLOAT32 or v.size < 2:
        return v
    laps = np.flatnonzero(v[1:] < v[:-1] - COUNTER_WRAP / 2) + 1
    if laps.size:
        v = v.copy()
        for k in laps.tolist():  # one per 2**24 samples
            v[k:] += COUNTER_WRAP
    return v


# -- timestamps ---------------------------------------------------------------------------
def safe_timestamps(ts: np.ndarray) -> np.ndarray:
    """Timestamps liblsl and XDF keep as given (see the module docstring)."""
    ts = np.array(ts, dtype=np.float64, copy=True)
    ts[ts == 0.0] = _ZERO_SUB
    ts[ts == -1.0] = _MINUS_ONE_SUB
    return ts


def restore_timestamps(ts: np.ndarray) -> np.ndarray:
    """Undo :func:`safe_timestamps` on timestamps read back from a recording."""
    ts = np.array(ts, dtype=np.float64, copy=True)
    ts[ts == _ZERO_SUB] = 0.0
    ts[ts == _MINUS_ONE_SUB] = -1.0
    return ts


def _safe_time(t: float) -> float:
    t = float(t)
    if not math.isfinite(t):  # never in a recording: a NaN timestamp makes it corrupt
        return _ZERO_SUB
    return _ZERO_SUB if t == 0.0 else _MINUS_ONE_SUB if t == -1.0 else t


# -- JSON markers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Marker:
    """A trial or cue marker.

    Parameters
    ----------
    label : str
        What happened (``"trial_start"``, ``"cue"``, ``"rest"``...).
    time : float
        Stream time (seconds) of the sample it belongs to.
    sample : int or None
        Index of that sample, when known.
    fields : mapping
        Any further JSON-serialisable details (trial number, target muscle...).
    """

    label: str
    time: float
    sample: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps({k: _finite_or_none(v) for k, v in obj.items()}, allow_nan=False)


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def encode_event(event: Event, seq: int) -> str:
    """JSON of a detector event (non-finite numbers become null)."""
    return _dumps({"seq": seq, **dataclasses.asdict(event)})


def decode_event(text: str) -> tuple[int, Event]:
    """``(seq, Event)`` from :func:`encode_event` output."""
    d = json.loads(text)
    return int(d["seq"]), Event(
        sample=int(d["sample"]),
        time=_float(d["time"]),
        channel=str(d["channel"]),
        kind=str(d["kind"]),
        envelope=_float(d.get("envelope")),
        threshold=_float(d.get("threshold")),
    )


def encode_command(command: StimCommand, seq: int, session: str | None = None) -> str:
    """JSON of every StimCommand field (latency stamps included; NaN becomes null),
    with ``seq`` and, when given, the ``session`` uid."""
    head: dict[str, Any] = {"seq": seq} if session is None else {"session": session, "seq": seq}
    return _dumps({**head, **dataclasses.asdict(command)})


def decode_command(text: str) -> tuple[int, StimCommand]:
    """``(seq, StimCommand)`` from :func:`encode_command` output."""
    d = json.loads(text)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(StimCommand):
        v = d.get(f.name)
        if f.name in ("muscle", "phase"):
            kw[f.name] = str(v)
        elif f.name in ("channel", "sample"):
            kw[f.name] = int(v)
        elif f.name == "effective_sample":  # absent in recordings made before it existed
            kw[f.name] = -1 if v is None else int(v)
        else:
            kw[f.name] = _float(v)
    return int(d["seq"]), StimCommand(**kw)


def encode_marker(marker: Marker, seq: int) -> str:
    """JSON of a trial/cue marker."""
    return json.dumps(
        {
            "seq": seq,
            "label": marker.label,
            "time": _finite_or_none(float(marker.time)),
            "sample": marker.sample,
            "fields": dict(marker.fields),
        },
        allow_nan=False,
    )


def decode_marker(text: str) -> tuple[int, Marker]:
    """``(seq, Marker)`` from :func:`encode_marker` output."""
    d = json.loads(text)
    sample = d.get("sample")
    return int(d["seq"]), Marker(
        label=str(d["label"]),
        time=_float(d.get("time")),
        sample=None if sample is None else int(sample),
        fields=dict(d.get("fields") or {}),
    )


def encode_mwave(m: MWave, seq: int) -> str:
    """JSON of an evoked-response record (:class:`~closedloop.core.evoked.MWave`, its
    averaged waveform included; NaN becomes null)."""
    d = {f.name: getattr(m, f.name) for f in dataclasses.fields(MWave)}
    d["waveform"] = [float(v) if math.isfinite(v) else None
                     for v in np.asarray(m.waveform, dtype=np.float64)]
    d["present"] = bool(m.present)
    return _dumps({"seq": seq, **d})


def decode_mwave(text: str) -> tuple[int, MWave]:
    """``(seq, MWave)`` from :func:`encode_mwave` output."""
    d = json.loads(text)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(MWave):
        v = d.get(f.name)
        if f.name == "muscle":
            kw[f.name] = str(v)
        elif f.name in ("sample", "channel", "first_sample", "last_sample", "n_pulses"):
            kw[f.name] = int(v)
        elif f.name == "present":
            kw[f.name] = bool(v)
        elif f.name == "waveform":
            kw[f.name] = np.array([_float(x) for x in (v or [])], dtype=np.float64)
        else:
            kw[f.name] = _float(v)
    return int(d["seq"]), MWave(**kw)


# -- running totals -------------------------------------------------------------------------
#: Trial-marker labels a tally counts (the protocol's TrialEvent kinds).
TALLY_LABELS = ("cue", "hit", "miss", "trigger", "gated", "ignored", "early_stop", "done",
                "aborted")


@dataclass
class StimCount:
    """One muscle's stimulation so far: trains started, samples of the trains that
    ended, and the sample the running train started at (None: off)."""

    trains: int = 0
    on_samples: int = 0
    on_since: int | None = None

    def on_seconds(self, fs: float, upto: int | None = None) -> float:
        """Seconds stimulated; a running train counted up to sample ``upto``."""
        live = 0 if self.on_since is None or upto is None else max(0, upto - self.on_since)
        return (self.on_samples + live) / fs


def count_stimulation(counts: dict[str, StimCount], commands: Iterable[StimCommand]) -> bool:
    """Fold commands into per-muscle counts, on the sample clock: a train starts at a
    muscle's first non-zero command and ends at its next off (a muscle only ever
    switched off, as by a session's final all-off, gets a count with no train). The
    one rule for the session's outcome (:class:`closedloop.runtime.outcome.StimTally`)
    and the published running totals (:class:`SessionTally`). True if a count changed."""
    changed = False
    for c in commands:
        st = counts.setdefault(c.muscle, StimCount())
        if c.is_on and st.on_since is None:
            st.trains += 1
            st.on_since = int(c.sample)
            changed = True
        elif not c.is_on and st.on_since is not None:
            st.on_samples += max(0, int(c.sample) - st.on_since)
            st.on_since = None
            changed = True
    return changed


class SessionTally:
    """A session's running totals, folded from what it publishes.

    The session's outlets feed it every event, command and trial marker they push
    (:meth:`add_events`, :meth:`add_commands`, :meth:`add_marker`); a reader that starts
    from a published tally (:meth:`from_dict`) and feeds it the items whose ``seq`` is at
    or after the tally's gets the session's totals exactly, wherever it started
    listening. Stimulation time is counted on the sample clock, from each command's
    ``sample``, as the loop's own dose tally does.

    Parameters
    ----------
    fs : float
        Sampling rate (on-time in samples becomes seconds).
    """

    def __init__(self, fs: float) -> None:
        self.fs = float(fs)
        self.onsets: dict[str, int] = {}
        self.trials: dict[str, int] = {}
        self.stim: dict[str, StimCount] = {}
        #: ``seq`` of the next event, command and marker the totals will include
        self.seq: dict[str, int] = {ROLE_EVENTS: 0, ROLE_STIM: 0, ROLE_MARKERS: 0}
        self.sample = 0  # samples processed (the totals cover samples before this one)
        self.time = math.nan
        self.duration_s: float | None = None
        self.changed = False

    # -- folding ------------------------------------------------------------------------------
    def add_events(self, events: Sequence[Event]) -> None:
        """Count onsets per muscle."""
        for e in events:
            if e.kind == "onset":
                self.onsets[e.channel] = self.onsets.get(e.channel, 0) + 1
                self.changed = True
        self.seq[ROLE_EVENTS] += len(events)

    def add_commands(self, commands: Sequence[StimCommand]) -> None:
        """Trains start at a muscle's first non-zero command and end at its next off
        (:func:`count_stimulation`)."""
        if count_stimulation(self.stim, commands):
            self.changed = True
        self.seq[ROLE_STIM] += len(commands)

    def add_marker(self, label: str) -> None:
        """Count a marker by label if it is a trial marker."""
        if label in TALLY_LABELS:
            self.trials[label] = self.trials.get(label, 0) + 1
            self.changed = True
        self.seq[ROLE_MARKERS] += 1

    # -- reading --------------------------------------------------------------------------------
    def stim_seconds(self, upto: int | None = None) -> dict[str, float]:
        """Seconds each muscle was stimulated (a running train up to sample ``upto``);
        a muscle only ever switched off is not listed, as in the session's outcome."""
        return {m: st.on_seconds(self.fs, upto) for m, st in self.stim.items() if st.trains}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form published on the session stream."""
        return {
            "sample": self.sample,
            "time": _finite_or_none(float(self.time)),
            "fs": self.fs,
            "duration_s": self.duration_s,
            "seq": dict(self.seq),
            "onsets": dict(self.onsets),
            "trials": dict(self.trials),
            "stim": {m: dataclasses.asdict(st) for m, st in self.stim.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionTally:
        """A tally from :meth:`to_dict` output (e.g. decoded from the session stream)."""
        t = cls(float(d["fs"]))
        t.sample = int(d.get("sample") or 0)
        t.time = _float(d.get("time"))
        dur = d.get("duration_s")
        t.duration_s = None if dur is None else float(dur)
        t.seq.update({k: int(v) for k, v in dict(d.get("seq") or {}).items()})
        t.onsets = {str(k): int(v) for k, v in dict(d.get("onsets") or {}).items()}
        t.trials = {str(k): int(v) for k, v in dict(d.get("trials") or {}).items()}
        for m, st in dict(d.get("stim") or {}).items():
            since = st.get("on_since")
            t.stim[str(m)] = StimCount(int(st.get("trains", 0)), int(st.get("on_samples", 0)),
                                       None if since is None else int(since))
        return t

    def copy(self) -> SessionTally:
        """An independent copy."""
        return SessionTally.from_dict(self.to_dict())


def encode_tally(tally: SessionTally, seq: int) -> str:
    """JSON of a tally as pushed on the session stream: ``{"seq", "tally"}``."""
    return json.dumps({"seq": seq, "tally": tally.to_dict()}, allow_nan=False)


def decode_session_item(text: str) -> tuple[int, SessionTally | None]:
    """``(seq, tally)`` of a session-stream item; ``tally`` is None for the other items
    (the config and metadata :meth:`SessionOutlets.announce` pushes)."""
    d = json.loads(text)
    tally = d.get("tally")
    return int(d["seq"]), None if tally is None else SessionTally.from_dict(tally)


# -- outlets ----------------------------------------------------------------------------------
def _add_channels(desc: pylsl.XMLElement, rows: Iterable[tuple[str, str, str]]) -> None:
    chans = desc.append_child("channels")
    for label, typ, unit in rows:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", typ)
        ch.append_child_value("unit", unit)


class SessionOutlets:
    """The LSL outlets of one session (see the module docstring for the layout).

    Parameters
    ----------
    session_name : str
        Prefix of every stream name (e.g. ``"P07-S3"``).
    source_info : SourceInfo
        What the EMG source delivers (channel labels, units, nominal rate).
    with_envelope : bool
        Also create the envelope and threshold streams (and the filtered EMG stream).
    with_filtered : bool
        With the envelope, also publish the filtered EMG (:data:`DISPLAY_ONLY`: for the
        live view; not recorded).
    config_text : str
        The session's full config (TOML text), stored in the session stream.
    metadata : mapping of str to str, optional
        Further session metadata (patient code, operator, protocol...).
    session_uid : str, optional
        Unique id of the session (default: a fresh uuid4 hex).
    truth : callable, optional
        ``truth(start, stop) -> [(sample, muscle), ...]``: the true onsets among the
        samples ``start <= k < stop`` when the source knows them (the simulated
        patient). Each becomes a ``truth`` marker (``sample``, ``muscle``) stamped with
        its sample's time when that sample is pushed, so every simulated recording can
        be scored (``closedloop evaluate``, ``replay``, ``report``).
    outlet_factory : callable, optional
        ``outlet_factory(info)`` makes each stream's outlet (default
        ``pylsl.StreamOutlet``); :meth:`closedloop.io.xdfwrite.SessionFile.outlet` writes
        the streams straight into an XDF file, as LabRecorder would record them.
    statistic : Statistic, optional
        What the detector's statistic is (what the envelope and thresholds streams
        carry): its class's declared
        :attr:`~closedloop.core.detectors.base.Detector.statistic_info`
        (:func:`closedloop.core.detectors.base.statistic_of` of the config's detector
        kind). It gives those streams' units (module docstring). Default: an amplitude
        envelope of the EMG (the threshold detector's).

    Raises
    ------
    ConfigError
        A session name that is empty or has quotes or ``<>&`` (it goes into XPath
        predicates and XML).

    Notes
    -----
    Pushing samples of the wrong shape raises :class:`~closedloop.errors.InputError`;
    pushing after :meth:`close` or to a stream that was not created raises
    ``RuntimeError``. Outlets exist from construction until :meth:`close`. Pushes are
    cheap and do not block (liblsl buffers); call them from the loop thread.
    """

    def __init__(
        self,
        session_name: str,
        source_info: SourceInfo,
        *,
        with_envelope: bool = True,
        with_filtered: bool = True,
        config_text: str = "",
        metadata: Mapping[str, Any] | None = None,
        session_uid: str | None = None,
        truth: Callable[[int, int], Sequence[tuple[int, str]]] | None = None,
        outlet_factory: Callable[[pylsl.StreamInfo], Any] | None = None,
        statistic: Statistic = ENVELOPE,
    ) -> None:
        if not session_name or any(c in session_name for c in "'\"<>&"):
            raise ConfigError(
                f"session name {session_name!r} must be non-empty and free of quotes and <>&"
            )
        self.session_name = session_name
        self.source_info = source_info
        self.session_uid = session_uid or uuid.uuid4().hex
        self._truth = truth
        self._make_outlet = outlet_factory or pylsl.StreamOutlet
        self.config_text = config_text
        self.metadata: dict[str, Any] = {
            "session": session_name,
            "session_uid": self.session_uid,
            "closedloop_version": closedloop.__version__,
            "source_name": source_info.name,
            "source_kind": source_info.kind,
            "fs": source_info.fs,
            "channels": list(source_info.channels),
            "units": source_info.units,
            **dict(metadata or {}),
        }
        self.names: dict[str, str] = {}
        self.source_ids: dict[str, str] = {}
        self._outlets: dict[str, pylsl.StreamOutlet] = {}
        self._pushed: dict[str, int] = {}
        self._next_index: dict[str, int] = {ROLE_EMG: 0, ROLE_ENVELOPE: 0, ROLE_FILTERED: 0}
        #: the session's running totals (see the module docstring)
        self.tally = SessionTally(source_info.fs)
        self._tally_at: int | None = None  # sample position of the last tally pushed
        self._last_source_counter: int | None | str = "unset"
        labels = list(source_info.channels)
        unit = source_info.units
        self.statistic = statistic
        #: unit and channel type of the envelope and thresholds streams' values
        stat_unit = recorded_unit(statistic, unit)
        stat_type = "Envelope" if statistic.is_amplitude else statistic.name
        fs = float(source_info.fs)
        # the EMG in the source's own format (nothing widened, nothing rounded); the
        # envelope, which nothing reads back to decide, in float32
        self._formats = {ROLE_EMG: FLOAT32 if source_info.sample_format == FLOAT32 else DOUBLE64,
                         ROLE_ENVELOPE: FLOAT32, ROLE_FILTERED: DOUBLE64}
        self._create(
            ROLE_EMG,
            len(labels) + 1,
            fs,
            _CF[self._formats[ROLE_EMG]],
            channels=[(lab, "EMG", unit) for lab in labels]
            + [(COUNTER_LABEL, COUNTER_LABEL, "samples")],
        )
        if with_envelope:
            self._create(
                ROLE_ENVELOPE,
                len(labels) + 1,
                fs,
                _CF[self._formats[ROLE_ENVELOPE]],
                channels=[(lab, stat_type, stat_unit) for lab in labels]
                + [(COUNTER_LABEL, COUNTER_LABEL, "samples")],
                statistic=(statistic.name, stat_unit),
            )
            self._create(
                ROLE_THRESHOLDS,
                2 * len(labels) + 2,
                pylsl.IRREGULAR_RATE,
                pylsl.cf_double64,
                channels=[(f"{lab}_on", "Threshold", stat_unit) for lab in labels]
                + [(f"{lab}_off", "Threshold", stat_unit) for lab in labels]
                + [("sample", "sample", "samples"), (COUNTER_LABEL, COUNTER_LABEL, "samples")],
                statistic=(statistic.name, stat_unit),
            )
            if with_filtered:
                self._create(
                    ROLE_FILTERED,
                    len(labels) + 1,
                    fs,
                    pylsl.cf_double64,
                    channels=[(lab, "FilteredEMG", unit) for lab in labels]
                    + [(COUNTER_LABEL, COUNTER_LABEL, "samples")],
                )
        for role in (ROLE_EVENTS, ROLE_STIM, ROLE_MARKERS, ROLE_MWAVE):
            self._create(role, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string)
        self._create(ROLE_SESSION, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, session=True)
        self._closed = False

    def _create(
        self,
        role: str,
        n_channels: int,
        rate: float,
        fmt: int,
        *,
        channels: Sequence[tuple[str, str, str]] | None = None,
        session: bool = False,
        statistic: tuple[str, str] | None = None,
    ) -> None:
        suffix, typ = STREAMS[role]
        name = f"{self.session_name}-{suffix}"
        sid = f"closedloop.{self.session_uid}.{role}"
        info = pylsl.StreamInfo(name, typ, n_channels, rate, fmt, sid)
        desc = info.desc()
        if channels is not None:
            _add_channels(desc, channels)
        acq = desc.append_child("acquisition")
        acq.append_child_value("manufacturer", "closedloop")
        acq.append_child_value("source", self.source_info.name)
        acq.append_child_value("source_kind", self.source_info.kind)
        cl = desc.append_child("closedloop")
        cl.append_child_value("version", closedloop.__version__)
        cl.append_child_value("session", self.session_name)
        cl.append_child_value("session_uid", self.session_uid)
        cl.append_child_value("role", role)
        if fmt == pylsl.cf_string:
            cl.append_child_value("format", MARKER_FORMAT)
        if role == ROLE_MARKERS:  # every channel restart is marked (module docstring)
            cl.append_child_value("restart_marker", CHANNEL_RESTART)
        if statistic is not None:  # what the values are (module docstring: Units)
            st = cl.append_child("statistic")
            st.append_child_value("name", statistic[0])
            st.append_child_value("unit", statistic[1])
        if session:
            cl.append_child_value("config", self.config_text)
            cl.append_child_value("metadata", json.dumps(self.metadata, default=str))
        self._outlets[role] = self._make_outlet(info)
        self.names[role] = name
        self.source_ids[role] = sid
        self._pushed[role] = 0

    # -- introspection ----------------------------------------------------------------------
    @property
    def roles(self) -> tuple[str, ...]:
        """Roles of the streams this session publishes."""
        return tuple(self._outlets)

    def recorder_predicates(self) -> list[dict[str, str]]:
        """One ``{"source_id": ...}`` per recorded stream (every stream but the
        :data:`DISPLAY_ONLY` ones), for :class:`XdfRecorder`."""
        return [{"source_id": sid} for r, sid in self.source_ids.items()
                if r not in DISPLAY_ONLY]

    @property
    def counts(self) -> dict[str, int]:
        """Samples pushed so far, by stream name, of the recorded streams
        (``expected_counts`` for verification)."""
        return {self.names[r]: n for r, n in self._pushed.items() if r not in DISPLAY_ONLY}

    def wait_for_consumers(self, timeout: float) -> bool:
        """Wait until every outlet has a consumer (e.g. LabRecorder); False on timeout."""
        deadline = time.perf_counter() + timeout
        for outlet in self._outlets.values():
            if not outlet.wait_for_consumers(max(0.0, deadline - time.perf_counter())):
                return False
        return True

    # -- pushes -------------------------------------------------------------------------------
    def _outlet(self, role: str) -> pylsl.StreamOutlet:
        if self._closed:
            raise RuntimeError(f"SessionOutlets {self.session_name!r}: push after close()")
        try:
            return self._outlets[role]
        except KeyError:
            raise RuntimeError(
                f"SessionOutlets {self.session_name!r} has no {role} stream "
                "(created with with_envelope=False?)"
            ) from None

    def _push_indexed(
        self, role: str, values: np.ndarray, timestamps: np.ndarray, start: int | None
    ) -> None:
        nch = self.source_info.n_channels
        values = np.asarray(values, dtype=np.float64)
        ts = np.asarray(timestamps, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != nch or ts.shape != (values.shape[0],):
            raise InputError(
                f"{self.names.get(role, role)}: expected samples of shape (n, {nch}) and n "
                f"timestamps, got {values.shape} and {ts.shape}"
            )
        n = values.shape[0]
        if n == 0:
            return
        first = self._next_index[role] if start is None else int(start)
        fmt = self._formats[role]
        data = np.empty((n, nch + 1), dtype=np.float32 if fmt == FLOAT32 else np.float64)
        data[:, :nch] = values
        index = first + np.arange(n, dtype=np.int64)
        data[:, nch] = index % COUNTER_WRAP if fmt == FLOAT32 else index
        self._outlet(role).push_chunk(data, safe_timestamps(ts).tolist())
        self._next_index[role] = first + n
        self._pushed[role] += n

    def push_emg(
        self, samples: np.ndarray, timestamps: np.ndarray, *, start: int | None = None,
        source_counter: np.ndarray | None | bool = False,
    ) -> None:
        """Push EMG samples with their stream timestamps.

        Parameters
        ----------
        samples : ndarray, shape (n, n_channels)
        timestamps : ndarray, shape (n,)
            Stream time of each sample.
        start : int, optional
            Pipeline index of the first sample (default: continue after the last push).
            It becomes the ``counter`` channel.
        source_counter : ndarray of int, shape (n,), or None, optional
            The source's own counter for these samples (None: the source gave none).
            Where it does not continue the last one (the first sample, samples lost,
            the counter going back, a counter appearing or disappearing), a
            ``source_counter`` marker records its value at that sample, so a replay can
            give its input checks the counter the live session's saw. Not given
            (False): nothing is recorded about it.
        """
        first = self._next_index[ROLE_EMG] if start is None else int(start)
        self._push_indexed(ROLE_EMG, samples, timestamps, start)
        ts = np.asarray(timestamps, dtype=np.float64)
        if source_counter is not False:
            self._mark_counter(source_counter, ts, first)
        if self._truth is not None and ts.shape[0]:
            for k, muscle in self._truth(first, first + ts.shape[0]):
                self.push_marker(TRUTH, float(ts[k - first]), sample=int(k), muscle=muscle)

    def _mark_counter(self, counter: np.ndarray | None, ts: np.ndarray, first: int) -> None:
        """``source_counter`` markers where the source's counter does not continue."""
        n = ts.shape[0]
        last = self._last_source_counter  # "unset" before the first sample
        if n == 0:
            return
        if counter is None:
            if last is not None:  # no counter from the start, or from here on
                self.push_marker(SOURCE_COUNTER, float(ts[0]), sample=first, counter=None)
            self._last_source_counter = None
            return
        c = np.asarray(counter, dtype=np.int64)
        jumps = np.flatnonzero(c[1:] != c[:-1] + 1) + 1
        if not (isinstance(last, int) and int(c[0]) == last + 1):
            jumps = np.concatenate(([0], jumps))
        for i in jumps:
            self.push_marker(SOURCE_COUNTER, float(ts[i]), sample=first + int(i),
                             counter=int(c[i]))
        self._last_source_counter = int(c[-1])

    def push_chunk(self, chunk: Chunk, *, start: int | None = None) -> None:
        """Push a source chunk (its samples and timestamps) to the EMG stream."""
        self.push_emg(chunk.samples, chunk.timestamps, start=start)

    def push_envelope(
        self,
        envelope: np.ndarray,
        timestamps: np.ndarray,
        *,
        start: int | None = None,
        on_threshold: np.ndarray | None = None,
        off_threshold: np.ndarray | None = None,
    ) -> None:
        """Push envelope samples; with thresholds, also one thresholds sample.

        The thresholds are those in force at the last sample, stamped with its time.
        """
        first = self._next_index[ROLE_ENVELOPE] if start is None else int(start)
        self._push_indexed(ROLE_ENVELOPE, envelope, timestamps, start)
        n = int(np.asarray(timestamps).shape[0])
        if n and on_threshold is not None and off_threshold is not None:
            nch = self.source_info.n_channels
            on = np.asarray(on_threshold, dtype=np.float64).reshape(nch)
            off = np.asarray(off_threshold, dtype=np.float64).reshape(nch)
            row = np.concatenate([on, off, [first + n - 1, self._pushed[ROLE_THRESHOLDS]]])
            t_last = _safe_time(float(np.asarray(timestamps)[-1]))
            self._outlet(ROLE_THRESHOLDS).push_sample(row.tolist(), t_last)
            self._pushed[ROLE_THRESHOLDS] += 1

    def push_block(self, block: Block) -> None:
        """Push a signal-core block: envelope, thresholds, events and (when published)
        the filtered EMG the detector saw."""
        if ROLE_FILTERED in self._outlets:
            self._push_indexed(ROLE_FILTERED, block.filtered, block.timestamps, block.start)
        self.push_envelope(
            block.envelope,
            block.timestamps,
            start=block.start,
            on_threshold=block.on_threshold,
            off_threshold=block.off_threshold,
        )
        self.push_events(block.events)

    def _push_strings(self, role: str, texts: list[str], times: list[float]) -> None:
        if not texts:
            return
        self._outlet(role).push_chunk([[t] for t in texts], [_safe_time(t) for t in times])
        self._pushed[role] += len(texts)

    def push_events(self, events: Sequence[Event]) -> None:
        """Push detector events, each stamped with its deciding sample's stream time."""
        base = self._pushed[ROLE_EVENTS]
        self._push_strings(
            ROLE_EVENTS,
            [encode_event(e, base + k) for k, e in enumerate(events)],
            [e.time for e in events],
        )
        self.tally.add_events(events)

    def push_commands(self, commands: Sequence[StimCommand]) -> None:
        """Push stimulation commands, each stamped with its ``stream_time``."""
        base = self._pushed[ROLE_STIM]
        self._push_strings(
            ROLE_STIM,
            [encode_command(c, base + k, self.session_uid) for k, c in enumerate(commands)],
            [c.stream_time for c in commands],
        )
        self.tally.add_commands(commands)

    def push_marker(
        self, label: str, time: float, *, sample: int | None = None, **fields: Any
    ) -> None:
        """Push a trial or cue marker stamped with ``time`` (stream time)."""
        marker = Marker(label=label, time=float(time), sample=sample, fields=fields)
        self._push_strings(
            ROLE_MARKERS, [encode_marker(marker, self._pushed[ROLE_MARKERS])], [time]
        )
        self.tally.add_marker(label)

    def push_mwaves(self, records: Sequence[MWave]) -> None:
        """Push evoked-response records (M-waves), each stamped with the stream time of
        the sample that decided it."""
        self._push_strings(
            ROLE_MWAVE,
            [encode_mwave(m, self._pushed[ROLE_MWAVE] + k) for k, m in enumerate(records)],
            [m.time for m in records],
        )

    def push_tally(self, position: int, time: float, *, duration_s: float | None = None,
                   force: bool = False) -> bool:
        """Publish the running totals on the session stream, if due.

        Due when a count changed since the last one, or :data:`TALLY_EVERY_S` of samples
        have passed, or ``force``. Call it once per chunk, after the chunk's pushes.

        Parameters
        ----------
        position : int
            Samples processed so far (the totals cover the samples before it).
        time : float
            Stream time of the last processed sample (the tally's timestamp).
        duration_s : float, optional
            The session's planned duration (None: until stopped).

        Returns
        -------
        bool
            True when a tally was pushed.
        """
        t = self.tally
        every = max(1, int(round(TALLY_EVERY_S * t.fs)))
        due = (force or t.changed or self._tally_at is None
               or position - self._tally_at >= every)
        if not due:
            return False
        t.sample, t.time = int(position), float(time)
        t.duration_s = None if duration_s is None or not math.isfinite(duration_s) \
            else float(duration_s)
        text = encode_tally(t, self._pushed[ROLE_SESSION])
        self._push_strings(ROLE_SESSION, [text], [t.time if math.isfinite(t.time) else 0.0])
        t.changed = False
        self._tally_at = int(position)
        return True

    def announce(self, time: float | None = None) -> None:
        """Push the config text and metadata as a marker (call after the recorder started).

        Parameters
        ----------
        time : float, optional
            Stream time to stamp it with (default: ``pylsl.local_clock()``).
        """
        t = pylsl.local_clock() if time is None else float(time)
        text = json.dumps(
            {
                "seq": self._pushed[ROLE_SESSION],
                "config": self.config_text,
                "metadata": self.metadata,
            },
            default=str,
        )
        self._push_strings(ROLE_SESSION, [text], [t])

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Destroy the outlets (recorders see the streams end). Idempotent."""
        self._closed = True
        outlets, self._outlets = self._outlets, {}
        outlets.clear()

    def __enter__(self) -> SessionOutlets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
