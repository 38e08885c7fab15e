"""A running session, seen through its LSL streams, in a background thread.

:class:`SessionClient` finds a session's streams (published by
:class:`closedloop.io.outlets.SessionOutlets`), subscribes to them and fills the view's
buffers. It only *reads* LSL: whatever happens here (a slow screen, a crash of the view)
cannot stall or break the session's loop, which never waits for its consumers.

Finding the session
-------------------
Every stream of a session has ``source_id = closedloop.<uid>.<role>``. The client looks
for EMG streams with a ``closedloop.`` source id (and, given a session name, named
``<name>-EMG``); the ``<uid>`` of the newest one then selects every other stream of the
same session exactly, by source id. Without a name, exactly one session must be on the
network: with several, the client waits and says which ones it sees (a STOP must never
go to the wrong session). When the session's streams end the client says so and looks
for the session again (a restarted session with the same name is picked up).

Threading
---------
One daemon thread resolves, pulls with zero timeouts and sleeps ``poll_s`` between
rounds (every wait has a timeout; :meth:`SessionClient.close` ends it). Data are copied
into the buffers under a lock; :meth:`SessionClient.snapshot` copies them out under the
same lock, so the window never sees a half-written chunk and never holds the lock while
drawing.

What is derived here (not in the GUI thread)
---------------------------------------------
* the **EMG the detector sees**: the session's ``<session>-Filtered`` stream (after
  stimulation blanking and the session's filters); for a session that does not publish
  it, the raw EMG filtered here with the session's filter settings (no blanking: the
  window says so);
* the **EMG level** of a session whose detector decides on a statistic that is not an
  EMG amplitude (cusum: nats): the amplitude envelope of the EMG the detector sees
  (:func:`~closedloop.core.envelope.level_settings`, the session's ``[envelope]``), in
  the EMG's unit, so the window shows the muscle's activity in µV beside the statistic.
  It restarts exactly where the session restarted the channel after a bad stretch, and
  only there (the session's ``channel_restart`` markers, see
  :meth:`SessionClient._restart_level`), as the session's report does: 5 ms of 1e10
  would otherwise leave a moving RMS's running sum a rounding residue far above any EMG
  for the rest of the session. A session from before those markers (its markers stream
  does not declare them) is restarted one sample after each ``recovered`` input issue
  instead, which misses the restart after a short impulse and restarts the level for
  nothing where the channel was not restarted;
* the **peaks to draw**: the minimum and maximum of every few samples of the EMG and
  the envelope, kept as they arrive (:class:`~closedloop.view.buffers.PeakRing`), so a
  refresh copies a few thousand numbers;
* the **stimulation bands** from the stimulation commands;
* the **counts** of the trial panel, from the session's start: the last running total
  the session published (``tally`` on its session stream) plus the events, commands
  and markers published after it (:class:`~closedloop.io.outlets.SessionTally`); until
  the first total arrives (a second at most), the counts are those seen since the view
  opened, and :attr:`Snapshot.counts_complete` is False;
* the **trial panel** state from the trial markers (labels ``cue``, ``hit``, ``miss``,
  ``trigger``, ``done``... with ``trial`` and ``muscle`` fields);
* the **channel quality** from the raw EMG, and from ``input_issue`` markers (fields
  ``kind``: ``flat``/``saturated``/``mains``, ``channel``, ``message``), which a session
  may publish on its markers stream from its input monitor;
* the **evoked response** (M-wave) of each stimulated muscle, from the session's
  ``<session>-MWave`` stream when it has one: the latest measurement, its % of the
  first trains at the same current and whether it is a "no response"
  (:class:`~closedloop.runtime.mwaves.MWaveTracker`). The first trains are the
  session's when the view saw every stimulation train of the muscle (its counts equal
  the session's published totals); a view opened later compares with the first trains
  it saw (:attr:`Snapshot.mwave_from_start`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pylsl

from closedloop.config import Config, loads_config
from closedloop.config.signal import EnvelopeSettings, FilterSettings
from closedloop.core.checks import IssueKind, hold_nonfinite
from closedloop.core.envelope import Envelope, level_settings
from closedloop.core.events import Event
from closedloop.core.filters import FilterBank
from closedloop.discovery import find_streams
from closedloop.errors import ClosedLoopError
from closedloop.identity import xpath_literal
from closedloop.io import outlets as lo
from closedloop.io.outlets import SessionTally
from closedloop.runtime.mwaves import MWavePoint, MWaveTracker
from closedloop.view.buffers import (
    NO_DATA,
    ChannelQuality,
    DisplayUnits,
    PeakRing,
    QualityTracker,
    RingBuffer,
    StimBand,
    StimTrack,
    TimedLog,
    TrialState,
    TrialTracker,
    display_units,
)

log = logging.getLogger(__name__)

RESOLVING, CONNECTED, LOST, CLOSED = "resolving", "connected", "lost", "closed"
#: Bins of the peak rings per display window (a refresh merges them to the pixels).
DISPLAY_BINS = 2048
#: Where the EMG drawn comes from.
FROM_SESSION, FROM_VIEW = "session", "view"
#: Filtered samples kept to run a channel's EMG level again from the sample where the
#: session restarted the channel, when the marker saying so comes after those samples
#: (the view pulls up to ``LEVEL_LAG`` filtered samples a round before the markers, and
#: the two streams travel apart), plus this many seconds.
LEVEL_KEEP_S = 2.0
LEVEL_LAG = 8192


def _empty2() -> np.ndarray:
    return np.zeros((0, 0))


@dataclass
class Snapshot:
    """Copies of everything the window draws, taken at one instant.

    Times are the session's stream times; ``now`` is the newest EMG timestamp. The EMG
    and envelope come as peaks: bin ``emg_first + i`` starts at ``emg_t[i]`` and spans
    ``emg_lo[i]`` to ``emg_hi[i]`` per channel (in the stream's units; ``display`` says
    how to show them).
    """

    status: str = RESOLVING
    message: str = ""
    session: str | None = None
    session_uid: str | None = None
    channels: tuple[str, ...] = ()
    fs: float = math.nan
    units: str = ""
    display: DisplayUnits = field(default_factory=DisplayUnits)
    emg_from: str = FROM_SESSION
    now: float = math.nan
    emg_first: int = 0
    emg_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    emg_lo: np.ndarray = field(default_factory=_empty2)
    emg_hi: np.ndarray = field(default_factory=_empty2)
    env_first: int = 0
    env_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    env_lo: np.ndarray = field(default_factory=_empty2)
    env_hi: np.ndarray = field(default_factory=_empty2)
    env_now: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: per channel: the EMG level now (stream units; empty when the detector's statistic
    #: is the level itself: :attr:`env_now`)
    level_now: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: the session's index of the filtered sample after the last one in :attr:`level_now`
    level_position: int = 0
    thr_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    thr_on: np.ndarray = field(default_factory=_empty2)
    thr_off: np.ndarray = field(default_factory=_empty2)
    events: list[Event] = field(default_factory=list)
    bands: list[StimBand] = field(default_factory=list)
    stim_now: dict[str, float] = field(default_factory=dict)
    stim_params: dict[str, tuple[float, float]] = field(default_factory=dict)
    trial: TrialState = field(default_factory=TrialState)
    counts: SessionTally | None = None
    counts_complete: bool = False
    elapsed_s: float = math.nan
    position: int = 0
    quality: dict[str, ChannelQuality] = field(default_factory=dict)
    markers: list[tuple[float, str]] = field(default_factory=list)
    #: each muscle's latest M-wave measurement (muscles with none are absent)
    mwave: dict[str, MWavePoint] = field(default_factory=dict)
    #: per muscle: the view saw every train, so ``percent`` is of the session's first trains
    mwave_from_start: dict[str, bool] = field(default_factory=dict)
    samples: int = 0
    config: Config | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def patient(self) -> str:
        """The session's pseudonymous patient id ("" when it has none)."""
        p = self.metadata.get("patient") or getattr(self.config, "patient", None)
        return str(p or "")

    @property
    def duration_s(self) -> float | None:
        """The session's planned duration, when it published one."""
        return None if self.counts is None else self.counts.duration_s


def _xml_text(elem: pylsl.XMLElement, path: tuple[str, ...]) -> str:
    for name in path:
        elem = elem.child(name)
        if elem.empty():
            return ""
    return elem.child_value()


def _labels(info: pylsl.StreamInfo) -> list[str]:
    out = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        out.append(ch.child_value("label"))
        ch = ch.next_sibling("channel")
    return out


def _units(info: pylsl.StreamInfo) -> str:
    ch = info.desc().child("channels").child("channel")
    return "" if ch.empty() else ch.child_value("unit")


def _uid(source_id: str) -> str:
    parts = source_id.split(".")
    return parts[1] if len(parts) >= 3 else ""


def emg_predicate(session_name: str | None) -> str:
    """XPath predicate for the EMG streams of closedloop sessions (of one name, if given)."""
    pred = "starts-with(source_id,'closedloop.') and type='EMG'"
    if session_name is not None:
        if not session_name or any(c in session_name for c in "'\"<>&"):
            raise ValueError(f"session name {session_name!r} is not a valid session name")
        pred += f" and name='{session_name}-{lo.STREAMS[lo.ROLE_EMG][0]}'"
    return pred


class SessionClient:
    """Subscribes to one session's streams in a background thread (see module docstring).

    Parameters
    ----------
    session_name : str or None
        The session to show (the ``S`` of its stream names); None: the only one there.
    window_s : float
        Seconds of signal kept for display.
    poll_s : float
        Pause between two pulls of every stream.
    quality_every_s : float
        How often channel quality is recomputed (over the last second of raw EMG).
    clock : callable
        Monotonic clock in seconds (injected for tests).
    """

    def __init__(
        self,
        session_name: str | None = None,
        *,
        window_s: float = 10.0,
        poll_s: float = 0.01,
        quality_every_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requested = session_name
        self._pred = emg_predicate(session_name)
        self.window_s = float(window_s)
        self.poll_s = float(poll_s)
        self.quality_every_s = float(quality_every_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._snap = Snapshot(session=session_name, message="looking for the session...")
        self._inlets: dict[str, pylsl.StreamInlet] = {}
        self._emg: PeakRing | None = None  # the EMG drawn (None until subscribed)
        self._quality: dict[str, ChannelQuality] = {}
        self._dead: set[str] = set()  # uids of sessions whose streams ended
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> SessionClient:
        """Start the background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="closedloop-view-lsl", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread (waits up to 3 s) and drop the inlets. Idempotent."""
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout=3.0)
        with self._lock:
            self._snap.status = CLOSED

    def __enter__(self) -> SessionClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the session's streams are subscribed; False on timeout."""
        return self._connected.wait(timeout)

    @property
    def session_name(self) -> str | None:
        """Name of the session shown (once found)."""
        with self._lock:
            return self._snap.session

    # -- what the window calls ----------------------------------------------------------------
    def snapshot(self, window_s: float | None = None) -> Snapshot:
        """Copies of the last ``window_s`` (default: the client's window) of everything."""
        w = self.window_s if window_s is None else float(window_s)
        with self._lock:
            s = self._snap
            has = self._has_data()
            now = self._raw.last_time if has else math.nan
            t_from = now - w if math.isfinite(now) else -math.inf
            out = Snapshot(
                status=s.status, message=s.message, session=s.session,
                session_uid=s.session_uid, channels=s.channels, fs=s.fs, units=s.units,
                display=s.display, emg_from=s.emg_from,
                now=now, config=s.config, metadata=s.metadata,
                samples=self._raw.total if has else 0,
                quality=dict(self._quality),
            )
            if not has:
                return out
            out.emg_first, out.emg_t, out.emg_lo, out.emg_hi = self._emg.since(t_from)
            if self._env is not None:
                out.env_first, out.env_t, out.env_lo, out.env_hi = self._env.since(t_from)
                out.env_now = self._env_last.copy()
            if self._level is not None:
                out.level_now = self._level_last.copy()
                out.level_position = self._level_next
            if self._thr is not None and len(self._thr):
                # keep the thresholds in force at the window's start too
                t, x = self._thr.latest()
                k = max(0, int(np.searchsorted(t, t_from)) - 1)
                n = len(s.channels)
                out.thr_t, out.thr_on, out.thr_off = t[k:], x[k:, :n], x[k:, n:]
            out.events = [e for _, e in self._events.since(t_from)]
            out.bands = self._stim.bands(t_from)
            out.stim_now = dict(self._stim.current)
            out.stim_params = dict(self._stim.params)
            out.trial = self._trials.snapshot()
            out.markers = self._markers.since(t_from)
            out.mwave = dict(self._mwave_last)
            out.mwave_from_start = {m: self._saw_every_train(m) for m in self._mwave_last}
            out.position = self._position
            out.elapsed_s = self._position / s.fs if self._position else math.nan
            if self._counts is not None:
                out.counts, out.counts_complete = self._counts.copy(), True
            else:
                out.counts, out.counts_complete = self._seen.copy(), False
            return out

    def _saw_every_train(self, muscle: str) -> bool:
        """Whether the view saw every stimulation train of ``muscle`` (lock held)."""
        if self._counts is None:
            return False
        seen, total = self._seen.stim.get(muscle), self._counts.stim.get(muscle)
        return seen is not None and total is not None and seen.trains == total.trains

    # -- background thread ----------------------------------------------------------------------
    def _has_data(self) -> bool:
        return self._emg is not None

    def _set(self, **kw: object) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self._snap, k, v)

    def _error(self, msg: str) -> None:
        if len(self.errors) < 100:
            self.errors.append(msg)
        log.warning(msg)

    def _run(self) -> None:
        resolver = pylsl.ContinuousResolver(pred=self._pred, forget_after=2.0)
        try:
            while not self._stop.is_set():
                try:
                    uid = self._find(resolver)
                    if uid is None:
                        self._stop.wait(0.2)
                        continue
                    self._subscribe(uid)
                    self._pump()
                except Exception as exc:  # noqa: BLE001 - shown in the window, then retried
                    self._error(f"view: {exc!r}")
                    self._set(status=LOST, message=f"error reading the session: {exc}")
                    self._connected.clear()
                    self._stop.wait(1.0)
                finally:
                    self._inlets.clear()
        finally:
            del resolver

    def _find(self, resolver: pylsl.ContinuousResolver) -> str | None:
        """The uid of the session to show, or None (and a message) when there is none yet."""
        infos = [
            i for i in resolver.results()
            if _uid(i.source_id()) and _uid(i.source_id()) not in self._dead
        ]
        if not infos:
            who = f"session {self.requested!r}" if self.requested else "a closedloop session"
            with self._lock:
                if self._snap.status != LOST:
                    self._snap.message = f"waiting for {who} on the network..."
            return None
        names = sorted({i.name()[: -len("-EMG")] for i in infos})
        if self.requested is None and len(names) > 1:
            self._set(
                message=f"several sessions on the network ({', '.join(names)}): "
                "start the view with --session NAME"
            )
            return None
        newest = max(infos, key=lambda i: i.created_at())
        return _uid(newest.source_id())

    def _subscribe(self, uid: str) -> None:
        # every stream of the session in one look (a missing role costs no timeout)
        prefix = xpath_literal(f"closedloop.{uid}.")  # the uid came over the network
        found = find_streams(f"starts-with(source_id,{prefix})", 2.0,
                             minimum=len(lo.STREAMS), settle=0.5, stop=self._stop.is_set)
        if self._stop.is_set():
            return  # closed while looking: nothing to subscribe to (_pump returns at once)
        by_role = {i.source_id().split(".", 2)[2]: i for i in found
                   if i.source_id().count(".") >= 2}
        if lo.ROLE_EMG not in by_role:
            raise ClosedLoopError(f"the EMG stream of session {uid} disappeared")
        inlets: dict[str, pylsl.StreamInlet] = {}
        for role in lo.STREAMS:
            info = by_role.get(role)
            if info is None:
                continue
            # buffer: 30 s of a regular stream, 3000 samples of a marker stream
            inlet = pylsl.StreamInlet(info, max_buflen=30, recover=False)
            inlet.open_stream(timeout=2.0)
            inlets[role] = inlet
        full = inlets[lo.ROLE_EMG].info(timeout=2.0)
        labels = _labels(full)
        counter_col = labels.index(lo.COUNTER_LABEL) if lo.COUNTER_LABEL in labels else None
        channels = tuple(lab for k, lab in enumerate(labels) if k != counter_col)
        if not channels:
            channels = tuple(f"ch{k + 1}" for k in range(full.channel_count()))
        name = _xml_text(full.desc(), ("closedloop", "session")) or full.name()[:-4]
        fs = float(full.nominal_srate())
        config = None
        metadata: dict = {}
        if lo.ROLE_SESSION in inlets:
            # keep the info alive while its XML is read: desc() points into it
            session_info = inlets[lo.ROLE_SESSION].info(timeout=2.0)
            desc = session_info.desc()
            text = _xml_text(desc, ("closedloop", "config"))
            with contextlib.suppress(ValueError, TypeError, RecursionError):
                found = json.loads(_xml_text(desc, ("closedloop", "metadata")) or "{}")
                metadata = found if isinstance(found, dict) else {}
            if text.strip():
                try:
                    config = loads_config(text, source=f"{name} session config")
                except ClosedLoopError as exc:
                    self._error(f"view: cannot read the session's config ({exc})")
        marked = False  # the session marks its channel restarts (io.outlets: Channel restarts)
        if lo.ROLE_MARKERS in inlets:
            marks = inlets[lo.ROLE_MARKERS].info(timeout=2.0)
            marked = _xml_text(marks.desc(), ("closedloop", "restart_marker")) \
                == lo.CHANNEL_RESTART
        self._setup(uid, name, channels, counter_col, fs, _units(full), config, inlets,
                    restarts_marked=marked)
        self._set(metadata=metadata)

    def _setup(
        self, uid: str, name: str, channels: tuple[str, ...], counter_col: int | None,
        fs: float, units: str, config: Config | None, inlets: dict[str, pylsl.StreamInlet],
        *, restarts_marked: bool = False,
    ) -> None:
        n = len(channels)
        filters = config.filters if config is not None else FilterSettings()
        bank: FilterBank | None = None
        if lo.ROLE_FILTERED not in inlets:  # an older session: filter here (no blanking)
            try:
                bank = FilterBank(filters, fs, n)
            except ValueError as exc:
                self._error(f"view: showing raw EMG, the filter does not fit ({exc})")
        trials = TrialTracker()
        if config is not None and config.protocol is not None:
            p = config.protocol
            if p.kind == "cued_trials":
                trials = TrialTracker(
                    p.trials.n_trials, p.trials.response_window_s,
                    p.trials.work_s + p.trials.rest_s,
                )
        bin_size = max(1, int(self.window_s * fs) // DISPLAY_BINS)
        n_bins = int(math.ceil((self.window_s + 2.0) * fs / bin_size)) + 2
        kind = config.detector_kind if config is not None else "threshold"
        display = display_units(units, kind)
        level = None
        if not display.statistic.of_emg:  # one per channel: each restarts on its own
            env = level_settings(config.envelope if config is not None else EnvelopeSettings())
            level = [Envelope(env, fs, 1) for _ in range(n)]
        with self._lock:
            self._inlets = inlets
            self._counter_col = counter_col
            self._bank = bank
            self._raw = RingBuffer(n, max(16, int(math.ceil(1.0 * fs))))
            self._last_finite = np.zeros(n)  # NaN/inf are drawn held at the last finite
            self._emg = PeakRing(n, bin_size, n_bins)
            self._env = PeakRing(n, bin_size, n_bins) if lo.ROLE_ENVELOPE in inlets else None
            self._env_last = np.full(n, np.nan)
            self._level = level
            self._level_last = np.full(n, np.nan)
            # the filtered samples the level took, stamped with their sample index
            self._level_kept = RingBuffer(n, int(math.ceil(LEVEL_KEEP_S * fs)) + LEVEL_LAG)
            self._level_next = 0  # index after the last filtered sample the level took
            self._level_due: list[tuple[int, int]] = []  # (column, sample): restarts to come
            # the session marks its restarts: recovered issues do not restart the level
            self._restarts_marked = restarts_marked
            self._thr = RingBuffer(2 * n, 4096) if lo.ROLE_THRESHOLDS in inlets else None
            self._events = TimedLog(2000)
            self._markers = TimedLog(500)
            self._stim = StimTrack(keep_s=self.window_s + 5.0)
            self._trials = trials
            self._position = 0
            self._tally: SessionTally | None = None  # the last one the session published
            self._counts: SessionTally | None = None  # that one and what came after it
            self._seen = SessionTally(fs)  # everything since the view opened
            self._pending: dict[str, deque] = {
                r: deque(maxlen=20000) for r in (lo.ROLE_EVENTS, lo.ROLE_STIM, lo.ROLE_MARKERS)
            }
            self._mwave = MWaveTracker()
            self._mwave_last: dict[str, MWavePoint] = {}
            self._qual = QualityTracker(
                channels, fs, mains_hz=filters.notch_hz if filters.notch_hz > 0 else 50.0
            )
            self._quality = {ch: ChannelQuality(NO_DATA, "starting") for ch in channels}
            s = self._snap
            s.status, s.session, s.session_uid = CONNECTED, name, uid
            s.channels, s.fs, s.units, s.config = channels, fs, units, config
            s.display = display
            s.emg_from = FROM_SESSION if lo.ROLE_FILTERED in inlets else FROM_VIEW
            s.message = f"connected to {name}"
        self._connected.set()

    def _pump(self) -> None:
        """Pull every stream until the session ends or :meth:`close`."""
        next_quality = 0.0
        while not self._stop.is_set():
            try:
                got = self._pull_all()
            except pylsl.util.LostError:
                self._lost()
                return
            now = self._clock()
            if now >= next_quality:
                next_quality = now + self.quality_every_s
                with self._lock:
                    _, raw = self._raw.latest()
                    t_now = self._raw.last_time
                q = self._qual.assess(raw, t_now)
                with self._lock:
                    self._quality = q
            if not got:
                self._stop.wait(self.poll_s)

    def _lost(self) -> None:
        with self._lock:
            if self._snap.session_uid:
                self._dead.add(self._snap.session_uid)
            t = self._raw.last_time
            self._stim.stop_all(t if math.isfinite(t) else 0.0)
            self._snap.status = LOST
            self._snap.message = (
                f"the session {self._snap.session!r} ended or its streams were lost; "
                "waiting for it to come back"
            )
        self._connected.clear()

    def _pull_numeric(self, role: str, max_samples: int = 8192
                      ) -> tuple[np.ndarray, np.ndarray] | None:
        x, ts = self._inlets[role].pull_chunk(timeout=0.0, max_samples=max_samples,
                                              as_numpy=True)
        if not len(ts):
            return None
        return np.asarray(x, dtype=np.float64), lo.restore_timestamps(np.asarray(ts))

    def _pull_all(self) -> bool:
        inlets = self._inlets
        got = False
        pulled = self._pull_numeric(lo.ROLE_EMG)
        if pulled is not None:
            got = True
            x, ts = pulled
            counter = None
            if self._counter_col is not None:
                counter = x[-1, self._counter_col]
                x = np.delete(x, self._counter_col, axis=1)
            raw = np.ascontiguousarray(x)  # NaN/inf as the session received them
            filt = None
            if lo.ROLE_FILTERED not in inlets:
                shown = hold_nonfinite(raw, self._last_finite)  # the filter must not see them
                self._last_finite = shown[-1].copy()
                filt = shown if self._bank is None else \
                    self._bank.process_inplace(np.array(shown.T, order="C")).T
            with self._lock:
                self._raw.extend(ts, raw)
                if counter is not None and math.isfinite(counter):
                    self._position = int(counter) + 1
                if filt is not None:
                    self._emg.extend(ts, filt)
                    self._add_level(filt)
        for role in (lo.ROLE_FILTERED, lo.ROLE_ENVELOPE):
            if role not in inlets:
                continue
            pulled = self._pull_numeric(role)
            if pulled is None:
                continue
            got = True
            x, ts = pulled
            if self._counter_col is not None:
                x = x[:, :-1]
            with self._lock:
                if role == lo.ROLE_FILTERED:
                    self._emg.extend(ts, x)
                    self._add_level(x, None if self._counter_col is None else pulled[0][:, -1])
                else:
                    self._env.extend(ts, x)
                    self._env_last = x[-1].copy()
        if lo.ROLE_THRESHOLDS in inlets:
            pulled = self._pull_numeric(lo.ROLE_THRESHOLDS, 1024)
            if pulled is not None:
                got = True
                x, ts = pulled
                with self._lock:
                    self._thr.extend(ts, x[:, :self._thr.n_channels])
        for role, handle in (
            (lo.ROLE_EVENTS, self._on_event),
            (lo.ROLE_STIM, self._on_command),
            (lo.ROLE_MARKERS, self._on_marker),
            (lo.ROLE_SESSION, self._on_session),
            (lo.ROLE_MWAVE, self._on_mwave),
        ):
            if role not in inlets:
                continue
            texts, _ = inlets[role].pull_chunk(timeout=0.0, max_samples=1024)
            if texts:
                got = True
                with self._lock:
                    for row in texts:
                        try:
                            handle(str(row[0]))
                        except (ValueError, KeyError, TypeError) as exc:
                            self._error(f"view: unreadable {role} item {row[0]!r}: {exc}")
        return got

    def _add_level(self, filtered: np.ndarray, index: np.ndarray | None = None) -> None:
        """The EMG level after these filtered samples (lock held); ``index``: their
        sample indices in the session (its Filtered stream's counter), so the level can
        restart where the session restarted a channel (None: the view's own filtering,
        whose filters do not restart, so neither does the level)."""
        if self._level is None or not filtered.shape[0]:
            return
        for c, env in enumerate(self._level):
            self._level_last[c] = env.process(filtered[:, c : c + 1])[-1, 0]
        if index is not None:
            self._level_kept.extend(index, filtered)
            self._level_next = int(index[-1]) + 1
            self._restart_levels()

    def _restart_level(self, channel: str, sample: int) -> None:
        """Restart ``channel``'s EMG level at ``sample`` once the filtered stream has
        reached it, whichever of the marker and the samples came first (lock held).

        A ``channel_restart`` marker at sample ``s`` says the session restarted the
        channel's filters just before it processed ``s``: the level restarts at ``s``.
        A session from before those markers says only ``recovered`` input issues: at
        ``s`` for the first good sample after a flat, saturated, held, NaN or hummed
        stretch (restarted at ``s`` if no other check still held the channel bad), at
        the last, still dirty sample of an impulse-gate stretch (restarted at
        ``s + 1``). Its level restarts at ``s + 1``: from there on it takes only samples
        the session filtered after its restart, when there was one.
        """
        if self._level is None or self._snap.emg_from != FROM_SESSION \
                or channel not in self._snap.channels:
            return
        self._level_due.append((self._snap.channels.index(channel), sample))
        self._restart_levels()

    def _restart_levels(self) -> None:
        """Restart the levels whose restart sample the filtered stream has reached and
        run them again over the kept samples from there (the same values as a restart
        between two chunks: the envelope is chunk-invariant)."""
        reached: dict[int, int] = {}  # column -> its latest restart reached (it forgets
        for c, k in self._level_due:  # everything before it, earlier restarts included)
            if k < self._level_next:
                reached[c] = max(k, reached.get(c, k))
        if not reached or self._level is None:
            return
        self._level_due = [(c, k) for c, k in self._level_due if k >= self._level_next]
        index, x = self._level_kept.latest()
        for c, k in reached.items():
            env = self._level[c]
            env.restart_channel(0)
            i = int(np.searchsorted(index, k))  # older than what is kept: all of it
            if i < index.shape[0]:
                self._level_last[c] = env.process(x[i:, c : c + 1])[-1, 0]

    # -- counts: the session's last total plus what followed it (handlers hold the lock)
    def _count(self, role: str, seq: int, item: object) -> None:
        _fold(self._seen, role, item)
        if self._tally is None or seq >= self._tally.seq[role]:
            self._pending[role].append((seq, item))
            if self._counts is not None:
                _fold(self._counts, role, item)

    def _on_session(self, text: str) -> None:
        _, tally = lo.decode_session_item(text)
        if tally is None:
            return
        counts = tally.copy()
        for role, items in self._pending.items():
            keep = [(q, it) for q, it in items if q >= tally.seq[role]]
            items.clear()
            items.extend(keep)
            for _, it in keep:
                _fold(counts, role, it)
        self._tally, self._counts = tally, counts

    # marker handlers run with the lock held
    def _on_event(self, text: str) -> None:
        seq, ev = lo.decode_event(text)
        self._events.add(ev.time, ev)
        self._count(lo.ROLE_EVENTS, seq, ev)

    def _on_command(self, text: str) -> None:
        seq, cmd = lo.decode_command(text)
        self._stim.add(cmd.muscle, cmd.stream_time, cmd.current_ma, cmd.pulse_width_us,
                       cmd.frequency_hz)
        self._count(lo.ROLE_STIM, seq, cmd)

    def _on_mwave(self, text: str) -> None:
        _, record = lo.decode_mwave(text)
        self._mwave_last[record.muscle] = self._mwave.add([record])[-1]

    def _on_marker(self, text: str) -> None:
        seq, m = lo.decode_marker(text)
        self._markers.add(m.time, m.label)
        self._count(lo.ROLE_MARKERS, seq, m.label)
        if m.label == lo.CHANNEL_RESTART:
            muscle = m.fields.get("muscle")
            if muscle is not None and m.sample is not None:
                self._restart_level(str(muscle), m.sample)
        elif m.label == "input_issue":
            ch = m.fields.get("channel")
            self._qual.report(
                None if ch is None else str(ch), str(m.fields.get("kind", "")), m.time,
                str(m.fields.get("message", "")),
            )
            if not self._restarts_marked and m.fields.get("kind") == IssueKind.RECOVERED.value \
                    and ch is not None and m.sample is not None:  # a session from before
                self._restart_level(str(ch), m.sample + 1)
        else:
            self._trials.add(m.label, m.time, m.fields)


def _fold(tally: SessionTally, role: str, item: object) -> None:
    """Add one published item to ``tally``."""
    if role == lo.ROLE_EVENTS:
        tally.add_events([item])  # type: ignore[list-item]
    elif role == lo.ROLE_STIM:
        tally.add_commands([item])  # type: ignore[list-item]
    else:
        tally.add_marker(str(item))
