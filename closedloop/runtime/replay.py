"""Replay: a recording through the exact live pipeline, no hardware.

(The ``closedloop replay`` command is :mod:`closedloop.commands.replay`; its tables
:mod:`closedloop.analysis.replays`.)

The recorded EMG (with its recorded timestamps) goes through the same
:func:`~closedloop.runtime.loop.run_loop` as a live session: signal core, protocol and
safety guard, with the simulated stimulator standing in for the device. ``--check``
compares the events and stimulation commands it derives with the ones the recording
holds (and where it restarted a channel after a bad stretch, when the recording marks
that: its ``channel_restart`` markers) and exits non-zero at the first difference, which
it prints. A recording replayed
with its own config (the default: the config stored in the file, every setting as the
session resolved it, so a default changed since changes nothing) must match exactly,
whatever the chunk sizes, because every stage decides on the sample clock. At full
speed it replays in chunks of :data:`FAST_CHUNK` samples (the signal core, the input
checks and the detector take the whole blocks of a large chunk at once).

Stimulation artifacts are blanked from the sample at which each command took effect
live, which depends on the live chunking; the recording holds it
(:attr:`~closedloop.stim.commands.StimCommand.effective_sample`), so a replay takes it
from there and cuts its chunks at those samples (no sample at or after one is processed
before the command is known, as live). A recording made before effective samples were
recorded was made without blanking, and is replayed without it.

A damaged recording (cut short by a crash, or corrupt: see
:mod:`closedloop.io.xdfreader`) is not replayed as if it were whole: the command stops
with exit code 9 and says what is damaged and what is intact. ``--partial`` replays the
intact part (everything before the first damage) and ``--check`` then compares only what
the recording can vouch for: the recorded events before the last recorded event's
sample, the commands before the last recorded command's sample; the output says so.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from closedloop.core.stream import Chunk
from closedloop.errors import RecordingDamagedError
from closedloop.io.outlets import CHANNEL_RESTART
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sources.base import Source

EXIT_MISMATCH = 8
EXIT_DAMAGED = RecordingDamagedError.exit_code  # 9
#: How long a replay may go without a chunk before it is called a stall, s (the slowest
#: speed, :data:`closedloop.sources.replay.MIN_SPEED`, keeps a chunk's wait within it).
WATCHDOG_S = 5.0
#: Samples per chunk of a replay at full speed (``speed="fast"``): large enough that the
#: per-chunk work is small beside the per-sample work, small enough to stay in the cache.
FAST_CHUNK = 16384


def _event_key(e) -> tuple:
    return (e.sample, e.channel, e.kind)


def first_difference(recorded: list, derived: list, key, what: str) -> str | None:
    """A sentence describing the first difference between two sequences, or None."""
    a = [key(x) for x in recorded]
    b = [key(x) for x in derived]
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"{what} #{i} differs: recorded {x}, replay {y}"
    if len(a) != len(b):
        i = min(len(a), len(b))
        extra = ("recorded", a[i]) if len(a) > len(b) else ("replay", b[i])
        return (f"{what}: recorded {len(a)}, replay {len(b)}; first unmatched #{i} only in "
                f"the {extra[0]}: {extra[1]}")
    return None


def replay_file(path: str, *, config_path: str | None = None, speed: str = "fast",
                stream: str | None = None, chunk_size: int | None = None,
                progress=None, partial: bool = False, session=None):
    """Replay one file; returns (session, config, outcome).

    ``session`` is the file already loaded by :func:`~closedloop.io.xdf.load_session`
    (with the same ``stream``), when the caller has it.

    Raises
    ------
    RecordingDamagedError
        The recording is cut short or corrupt and ``partial`` is False.
    """
    from closedloop.io.recorded import recorded_config
    from closedloop.io.xdf import load_session

    if session is None:
        session = load_session(path, emg_stream=stream)
    if session.damage and not partial:
        raise RecordingDamagedError(
            f"{session.damage_report}\nNot replayed: replay the intact part with --partial "
            "(the output then says what the check covers)")
    # the recorded config: every setting as the session ran it, defaults included, so a
    # default changed since does not change what the replay decides
    config = recorded_config(session, config_path)
    out = replay_session(session, config, speed=speed, stream=stream, chunk_size=chunk_size,
                         progress=progress, partial=partial)
    return session, config, out


def replay_session(session, config, *, speed: str = "fast", stream: str | None = None,
                   chunk_size: int | None = None, progress=None, partial: bool = False,
                   outlets=None):
    """Replay a loaded recording (:func:`~closedloop.io.xdf.load_session`) with
    ``config``; returns the :class:`~closedloop.runtime.outcome.Outcome`.

    ``outlets`` gets everything the loop publishes, as a live session's outlets do: the
    samples, every block of the signal core (the envelope and thresholds after blanking:
    what the loop processed), the commands and the markers (``closedloop report`` draws
    them).
    """
    from closedloop.sources.replay import ReplaySource, parse_speed
    from closedloop.stim.drivers.sim import SimStimulator

    # the recorded device's pulse rates (a RehaStim2 runs 35 Hz at 34.48 Hz), so that
    # blanking follows the same pulses as live
    rates = {c.frequency_hz: c.delivered_hz for c in session.commands
             if np.isfinite(c.delivered_hz)}
    stim = SimStimulator(rates=rates) if config.stimulates else None
    live = [c for c in session.commands if c.effective_sample >= 0]
    if session.commands and not live:  # recorded before blanking existed
        config = replace(config, artifacts=replace(config.artifacts, blank_ms=0.0))
    if chunk_size is None and math.isinf(parse_speed(speed)):
        chunk_size = FAST_CHUNK  # as fast as it goes: large chunks, the same decisions
    source = SplitSource(
        ReplaySource(session.path, stream=stream, speed=speed, chunk_size=chunk_size,
                     session=session, partial=partial),
        sorted({c.effective_sample for c in live}),
    )
    with source:
        if stim is not None:
            stim.open()
        try:
            status = None
            if progress is not None:
                def status(_line: str) -> None:
                    progress(source.position, session.n)
            return run_loop(config, source, stim,
                            options=LoopOptions(watchdog_s=WATCHDOG_S, read_timeout_s=0.05,
                                                status_every_s=0.25, history=None),
                            status=status, effective_sample=RecordedEffect(live),
                            outlets=outlets)
        finally:
            if stim is not None:
                stim.close()


class RecordedEffect:
    """Where each replayed command takes effect: where the recorded one did.

    Called in command order with each derived command; while the derived commands match
    the recorded ones (by :meth:`~closedloop.stim.commands.StimCommand.decision_key`)
    it returns the recorded effective sample, after a mismatch (which ``--check``
    reports) the end of the chunk, as live.
    """

    def __init__(self, recorded) -> None:
        self._recorded = list(recorded)
        self._next = 0

    def __call__(self, command, chunk_stop: int) -> int:
        """The sample where ``command`` takes effect: the recorded one's, while in step."""
        i = self._next
        if i < len(self._recorded) and self._recorded[i].decision_key() == command.decision_key():
            self._next += 1
            return max(self._recorded[i].effective_sample, chunk_stop)
        self._next = len(self._recorded)  # out of step: stop matching
        return chunk_stop


class SplitSource(Source):
    """A source whose chunks are also cut at the given sample indices (0-based, counted
    from its first sample); everything else is the wrapped source's."""

    def __init__(self, source: Source, cuts) -> None:
        super().__init__()
        self.source = source
        self._cuts = np.asarray(sorted(cuts), dtype=np.int64)
        self._pending: Chunk | None = None
        self._position = 0

    @property
    def info(self):
        """The replayed source's description."""
        return self.source.info

    @property
    def position(self) -> int:
        """Samples delivered since :meth:`open`."""
        return self._position

    @property
    def exhausted(self) -> bool:
        """The wrapped source is exhausted and no cut-off part is waiting."""
        return self._pending is None and self.source.exhausted

    def open(self) -> None:
        """Open the replayed source."""
        self.source.open()
        self._pending, self._position = None, 0
        super().open()

    def close(self) -> None:
        """Close the replayed source."""
        self.source.close()
        super().close()

    def read(self, timeout: float) -> Chunk | None:
        """The next chunk, split where a recorded command took effect."""
        chunk, self._pending = self._pending, None
        if chunk is None:
            chunk = self.source.read(timeout)
            if chunk is None:
                return None
        start = self._position
        i = int(np.searchsorted(self._cuts, start, side="right"))  # the first cut after start
        if i < self._cuts.size and self._cuts[i] < start + chunk.n:
            k = int(self._cuts[i] - start)
            self._pending = _part(chunk, k, chunk.n)
            chunk = _part(chunk, 0, k)
        self._position += chunk.n
        return chunk


def _part(chunk: Chunk, a: int, b: int) -> Chunk:
    return Chunk(chunk.samples[a:b], chunk.timestamps[a:b],
                 None if chunk.counter is None else chunk.counter[a:b], chunk.arrival_wall)


def recorded_restarts(session) -> list[tuple[int, str]]:
    """Where the recorded session restarted a channel, ``(sample, muscle)`` in order
    (its ``channel_restart`` markers)."""
    return [(int(m.sample), str(m.fields.get("muscle", ""))) for m in session.markers
            if m.label == CHANNEL_RESTART and m.sample is not None]


def check(session, out) -> str | None:
    """First difference in events, then in commands, then (when the recording marks
    them, :attr:`~closedloop.io.xdf.Session.restarts_marked`) in where a channel was
    restarted after a bad stretch; None when identical."""
    diff = first_difference(session.events, out.events, _event_key, "event")
    if diff:
        return diff
    diff = first_difference(session.commands, out.commands, lambda c: c.decision_key(),
                            "command")
    if diff or not session.restarts_marked:
        return diff
    return first_difference(recorded_restarts(session), out.restarts, lambda r: r,
                            "channel restart (sample, muscle)")


def check_intact(session, out) -> tuple[str | None, str]:
    """:func:`check` over what a damaged recording can vouch for.

    Each recorded stream holds its items in order up to where the file is damaged, so
    its items before the sample of its last recorded item are all there (later ones may
    be lost with the damage). Returns the first difference (or None) and a sentence on
    what was compared and what could not be.
    """
    def part(recorded, derived, what, key):
        horizon = min(session.n, recorded[-1].sample) if recorded else 0
        rec = [x for x in recorded if x.sample < horizon]
        der = [x for x in derived if x.sample < horizon]
        return (first_difference(rec, der, key, what), len(rec), len(derived) - len(der),
                horizon)

    d_ev, n_ev, left_ev, h_ev = part(session.events, out.events, "event", _event_key)
    d_cmd, n_cmd, left_cmd, h_cmd = part(session.commands, out.commands, "command",
                                         lambda c: c.decision_key())
    note = (f"checked on the intact part only: {n_ev} events before sample {h_ev} and "
            f"{n_cmd} commands before sample {h_cmd}; {left_ev} derived events and "
            f"{left_cmd} commands after those samples could not be checked")
    d_rs = None
    if session.restarts_marked:  # the Markers stream is intact up to its last marker
        marked = [m.sample for m in session.markers if m.sample is not None]
        h_rs = min(session.n, marked[-1]) if marked else 0
        rec = [r for r in recorded_restarts(session) if r[0] < h_rs]
        der = [r for r in out.restarts if r[0] < h_rs]
        d_rs = first_difference(rec, der, lambda r: r, "channel restart (sample, muscle)")
        note += f"; {len(rec)} channel restarts before sample {h_rs}"
    return d_ev or d_cmd or d_rs, note
