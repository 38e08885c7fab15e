"""A stimulator that publishes each command as a JSON marker on an LSL stream.

Use it to drive an external stimulator program, or to record the stimulation next to
the EMG with LabRecorder. The stream belongs to one session (see
:mod:`closedloop.identity`): it is named ``<name>-<uid>`` (default name
``closedloop-stim``), its ``source_id`` is ``closedloop.<uid>.stimulator`` and its
description has ``<closedloop>`` with ``session``, ``session_uid``, ``role``
(``stimulator``), ``format`` (:data:`FORMAT`) and ``heartbeat_ms``. It is an
irregular-rate, one-channel ``string`` stream of type ``Markers``; each sample is one
JSON object, and every object carries ``kind``, ``session`` (the uid) and ``seq`` (its
0-based number on this stream, in push order, shared by every kind):

``command``
    One channel's level after the safety guard, with the fields in :data:`FIELDS`::

        {"kind": "command", "session": "3fa9c2d81b7e", "seq": 17, "muscle": "biceps",
         "channel": 1, "current_ma": 20.0, "pulse_width_us": 250.0,
         "frequency_hz": 35.0, "sample": 12345, "stream_time": 1234.567,
         "phase": "plateau"}

    stamped with the command's ``stream_time``. ``stop_all`` publishes one with phase
    ``stop``, ``sample`` null and current 0 for every channel 1..n_channels, stamped
    with the injected ``clock()`` (default ``pylsl.local_clock``).
``heartbeat``
    Sent every ``heartbeat_s`` (50 ms) from the driver's own thread while the stream
    is open: ``{"kind": "heartbeat", "session": ..., "seq": ..., "period_ms": 50.0,
    "state": {"1": 20.0, "2": 0.0, ...}}``, the current (mA) each channel was last told.
    It only says "this session is alive and this is its state": a receiver must never
    start or raise stimulation because of one (see ``docs/stim-receiver.md``).
``end``
    The last message of a session that closed normally, after the stop commands.

The rules a receiver follows (lock onto one session, switch everything off when the
heartbeats stop, the session id changes or ``seq`` does not continue) are in
``docs/stim-receiver.md``; :mod:`closedloop.stim.receiver` implements them.

LSL details handled here (see ``pylsl.StreamOutlet.push_sample``): a timestamp of
exactly 0.0 means "now" to liblsl, so a command at stream time 0.0 is pushed at 1 ns
instead; a non-finite stream time is replaced by ``clock()`` and published as null.
Pushes are sent asynchronously and liblsl has no flush: destroying the outlet right
after the last push can lose it, so ``close()`` waits ``close_grace_s`` (when anyone
is listening) between the last messages and destroying the outlet.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pylsl

import closedloop
from closedloop.errors import DeviceLostError, StimulatorError
from closedloop.identity import SessionId
from closedloop.stim.base import ChannelOutput, Stimulator, StimulatorContext
from closedloop.stim.commands import StimCommand

#: The JSON fields of each command marker, in order.
FIELDS = (
    "kind", "session", "seq", "muscle", "channel", "current_ma", "pulse_width_us",
    "frequency_hz", "sample", "stream_time", "phase",
)
#: The message format, in the stream description (``desc/closedloop/format``).
FORMAT = "closedloop-stim-2"
#: ``desc/closedloop/role`` of the stimulator stream.
ROLE = "stimulator"
#: Message kinds.
COMMAND, HEARTBEAT, END = "command", "heartbeat", "end"

#: liblsl reads a timestamp of exactly 0.0 as "stamp with local_clock() now".
_ZERO_STAMP = 1e-9


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, pylsl.util.LostError):
        return DeviceLostError(f"LSL stimulator stream lost while {what}: {exc}")
    return StimulatorError(f"LSL stimulator failed while {what}: {exc}")


class LslStimulator(Stimulator):
    """Publish stimulation commands and heartbeats as JSON markers on an LSL outlet.

    Parameters
    ----------
    session : SessionId
        The session this stream belongs to; its uid goes into the stream name,
        source_id, description and every message.
    name : str
        Base of the stream name (the stream is ``<name>-<uid>``).
    clock : callable, optional
        Current stream time for ``stop_all`` markers, heartbeats and commands without
        a finite stream time; default ``pylsl.local_clock``.
    n_channels : int
        Channels announced off by ``stop_all`` and listed in heartbeats.
    heartbeat_s : float
        Interval of the heartbeat (at most 0.1 s: receivers switch off after 150 ms).
    close_grace_s : float
        Time given to liblsl to send the final messages before the outlet is destroyed
        on ``close()`` (only when a consumer is connected).
    sleep : callable
        Used for that wait (injectable for tests).
    """

    kind = "lsl"
    spec_form = "lsl[:STREAM_NAME]  (commands as JSON markers; closedloop stim-receiver)"
    label = "the LSL stimulator"

    @classmethod
    def from_spec(cls, spec: str, arg: str, context: StimulatorContext) -> LslStimulator:
        """The stimulator of an ``lsl[:NAME]`` spec."""
        session = context.session or SessionId.new(context.config.name)
        return cls(session, arg or "closedloop-stim")

    def __init__(
        self,
        session: SessionId,
        name: str = "closedloop-stim",
        *,
        clock: Callable[[], float] | None = None,
        n_channels: int = 8,
        heartbeat_s: float = 0.05,
        close_grace_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        if not name:
            raise StimulatorError("LslStimulator: the stream name must not be empty")
        if not 0.0 < heartbeat_s <= 0.1:
            raise StimulatorError(
                f"LslStimulator: heartbeat_s = {heartbeat_s!r}; it must be in (0, 0.1] s"
            )
        self.session = session
        self.name = f"{name}-{session.uid}"
        self.source_id = f"closedloop.{session.uid}.{ROLE}"
        self.n_channels = n_channels
        self.heartbeat_s = float(heartbeat_s)
        self._clock = clock if clock is not None else pylsl.local_clock
        self._outlet: pylsl.StreamOutlet | None = None
        self._muscle: dict[int, str] = {}
        self._grace = close_grace_s
        self._sleep = sleep
        self._seq = 0
        self._lock = threading.Lock()  # one message at a time: seq follows push order
        self._halt = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._beat_error: Exception | None = None

    def open(self) -> None:
        """Create the outlet (the stream becomes discoverable) and start the heartbeat."""
        if self._outlet is not None:
            return
        try:
            info = pylsl.StreamInfo(self.name, "Markers", 1, pylsl.IRREGULAR_RATE, "string",
                                    self.source_id)
            desc = info.desc()
            desc.append_child_value("encoding", "json")
            desc.append_child_value(
                "description",
                "closedloop stimulation commands after the safety guard, and heartbeats; "
                "one JSON object per marker with kind, session and seq; commands are "
                "timestamped with the EMG stream time of the deciding sample; current_ma "
                "0 means off; phase 'stop' commands come from stop_all. A heartbeat never "
                "starts or raises stimulation; switch off when they stop "
                "(docs/stim-receiver.md)",
            )
            fields = desc.append_child("fields")
            for f in FIELDS:
                fields.append_child_value("field", f)
            chans = desc.append_child("channels")
            ch = chans.append_child("channel")
            ch.append_child_value("label", "stim_command")
            ch.append_child_value("type", "Markers")
            cl = desc.append_child("closedloop")
            cl.append_child_value("version", closedloop.__version__)
            cl.append_child_value("session", self.session.name)
            cl.append_child_value("session_uid", self.session.uid)
            cl.append_child_value("role", ROLE)
            cl.append_child_value("format", FORMAT)
            cl.append_child_value("heartbeat_ms", f"{1000 * self.heartbeat_s:g}")
            self._outlet = pylsl.StreamOutlet(info)
        except Exception as exc:  # liblsl raises RuntimeError subclasses
            raise _translate(exc, f"creating outlet {self.name!r}") from exc
        super().open()
        self._halt.clear()
        self._beat_thread = threading.Thread(
            target=self._beat, name=f"closedloop-stim-heartbeat-{self.session.uid}", daemon=True
        )
        self._beat_thread.start()

    def close(self) -> None:
        """Publish stop commands, stop the heartbeat, publish ``end``, give liblsl time
        to send them, then drop the outlet."""
        try:
            super().close()
        finally:
            self._stop_heartbeat()
            outlet = self._outlet
            if outlet is not None:
                try:
                    self._send({"kind": END}, self._clock())
                except Exception:  # noqa: BLE001 - the stops went first; receivers time out
                    pass
            self._outlet = None
            if outlet is not None and self._grace > 0:
                try:
                    if outlet.have_consumers():
                        self._sleep(self._grace)
                except Exception:  # closing must not fail on a status query
                    pass
            del outlet  # destroying the outlet un-publishes the stream

    def check(self) -> None:
        """Raise, in the caller's thread, the error the heartbeat thread stopped on."""
        err, self._beat_error = self._beat_error, None
        if err is not None:
            raise _translate(err, "sending a heartbeat") from err

    @property
    def outlet(self) -> pylsl.StreamOutlet | None:
        """The LSL outlet while open, else None."""
        return self._outlet

    # -- sending ----------------------------------------------------------------------------
    def _send(self, record: dict[str, Any], stamp: float,
              after: Callable[[], None] | None = None) -> None:
        """Push one message with the next ``seq``; ``after`` runs under the same lock."""
        with self._lock:
            self._push_locked(record, stamp)
            if after is not None:
                after()

    def _push_locked(self, record: dict[str, Any], stamp: float) -> None:
        outlet = self._outlet
        if outlet is None:
            raise StimulatorError(f"LslStimulator {self.name!r} is not open")
        msg = {"kind": record.pop("kind"), "session": self.session.uid, "seq": self._seq,
               **record}
        outlet.push_sample([json.dumps(msg)], _ZERO_STAMP if stamp == 0.0 else stamp)
        self._seq += 1

    def _beat(self) -> None:
        """The heartbeat thread, paced on the monotonic clock (no drift from summed
        sleeps). It holds the lock only for one push, so it never blocks the loop."""
        due = time.monotonic()
        while not self._halt.is_set():
            try:
                with self._lock:  # the state and the seq of one instant
                    state = {str(ch): self._outputs.get(ch, ChannelOutput()).current_ma
                             for ch in range(1, self.n_channels + 1)}
                    self._push_locked({"kind": HEARTBEAT, "period_ms": 1000 * self.heartbeat_s,
                                       "state": state}, self._clock())
            except Exception as exc:  # noqa: BLE001 - handed to the loop by check()
                if not self._halt.is_set():
                    self._beat_error = exc
                return
            due += self.heartbeat_s
            now = time.monotonic()
            if due < now:  # late (the machine was busy): beat at once, then a new grid
                due = now
            if self._halt.wait(due - now):
                return

    def _stop_heartbeat(self) -> None:
        self._halt.set()
        thread, self._beat_thread = self._beat_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    # -- the Stimulator interface ---------------------------------------------------------
    def apply(self, commands: Sequence[StimCommand]) -> None:
        """Publish one marker per command. Raises StimulatorError when not open."""
        if self._outlet is None or not self.is_open:
            raise StimulatorError(f"LslStimulator {self.name!r} is not open; call open() first")
        for c in commands:
            t = c.stream_time if math.isfinite(c.stream_time) else None
            record = {
                "kind": COMMAND, "muscle": c.muscle, "channel": c.channel,
                "current_ma": c.current_ma, "pulse_width_us": c.pulse_width_us,
                "frequency_hz": c.frequency_hz, "sample": c.sample, "stream_time": t,
                "phase": c.phase,
            }

            def remember(c: StimCommand = c) -> None:
                self._outputs[c.channel] = ChannelOutput(c.current_ma, c.pulse_width_us,
                                                         c.frequency_hz)
                self._muscle[c.channel] = c.muscle

            try:
                self._send(record, t if t is not None else self._clock(), after=remember)
            except Exception as exc:
                raise _translate(exc, f"publishing a command for {c.muscle!r}") from exc

    def stop_all(self) -> None:
        """Publish an off marker for every channel. A no-op on a closed driver."""
        with self._lock:
            self._outputs = {ch: ChannelOutput(0.0, o.pulse_width_us, o.frequency_hz)
                             for ch, o in self._outputs.items()}
        if self._outlet is None:
            return
        t = self._clock()
        first: Exception | None = None
        for ch in range(1, self.n_channels + 1):
            record = {
                "kind": COMMAND, "muscle": self._muscle.get(ch, ""), "channel": ch,
                "current_ma": 0.0, "pulse_width_us": 0.0, "frequency_hz": 0.0,
                "sample": None, "stream_time": t, "phase": "stop",
            }
            try:
                self._send(record, t)
            except Exception as exc:  # try every channel, then raise
                first = first or exc
        if first is not None:
            raise _translate(first, "publishing stop markers") from first
