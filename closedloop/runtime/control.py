"""The control path from a view (or any LSL tool) to a running session: STOP.

A view publishes a one-channel string marker stream::

    name       "<session>-Control"
    type       "Markers"
    source_id  "closedloop-control.<uuid>"        (one per view; several views may exist)
    desc       <closedloop><session>S</session><role>control</role>
               <format>closedloop-control-1</format></closedloop>

Each marker is JSON ``{"seq": n, "command": "stop", "origin": "...", "wall": ...}``
stamped with ``pylsl.local_clock()``; a plain ``"stop"`` string is accepted too. The
only command today is :data:`STOP`: a control stream can only stop a session, never
start or raise stimulation.

Any host on the network may stop a session (a STOP must never be lost to a firewall
rule or a view on another machine); so every command comes with its
:class:`ControlSender`, the identity of the stream that carried it (host name,
``source_id``, the stream's uid, the sender's address when liblsl reports one, and the
``origin`` the sender wrote), which the session reports and records.

The session's loop owns a :class:`ControlInlet` and calls :meth:`ControlInlet.poll`
once per chunk. ``poll`` never touches liblsl: a background thread finds every control
stream of the session (also views started later), pulls from them with short timeouts
and queues the commands; ``poll`` only drains that queue, so it cannot block or raise
because of LSL. A lost control stream (a view closed) is dropped quietly: closing a view
must never stop a session, and only an explicit ``stop`` does.

Markers pushed before the loop's inlet is connected are lost (liblsl keeps no history
for new consumers), so :class:`ControlOutlet` repeats a stop for a short while and
tells the view whether a loop is listening (:meth:`ControlOutlet.has_listener`), which
the view shows beside its STOP button. In-process, ``closedloop run`` also passes the
view an ``on_stop`` callback, which does not depend on LSL at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import pylsl

from closedloop.errors import InputError

STOP = "stop"
COMMANDS = (STOP,)
CONTROL_SUFFIX = "Control"
CONTROL_FORMAT = "closedloop-control-1"
_SOURCE_PREFIX = "closedloop-control."

log = logging.getLogger(__name__)


def control_stream_name(session_name: str) -> str:
    """Name of a session's control stream(s)."""
    return f"{session_name}-{CONTROL_SUFFIX}"


def _check_name(session_name: str) -> None:
    if not session_name or any(c in session_name for c in "'\"<>&"):
        raise InputError(
            f"session name {session_name!r} must be non-empty and free of quotes and <>&"
        )


def control_predicate(session_name: str) -> str:
    """LSL XPath predicate matching every control stream of ``session_name``."""
    _check_name(session_name)
    return (
        f"name='{control_stream_name(session_name)}' and "
        f"starts-with(source_id,'{_SOURCE_PREFIX}')"
    )


#: Longest control marker read (characters); a command is a few dozen. Anything longer
#: is not a command and is not parsed (a flood of megabytes of JSON would cost the
#: control thread the time it needs to pass a STOP on).
MAX_MARKER_CHARS = 65536


def _json_object(text: str) -> dict | None:
    """``text`` as a JSON object, or None: not JSON, not an object, too long, or nested
    deeper than the parser goes (RecursionError: a hostile sender must not be able to
    make the control thread fail, which would keep it from reading a STOP)."""
    if len(text) > MAX_MARKER_CHARS:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def decode_command(text: str) -> str | None:
    """The command in one control marker (JSON or a bare word), or None if unknown.

    Only :data:`COMMANDS` are known; anything else (other words, other JSON, binary,
    very long or deeply nested text) is None, never an exception.
    """
    text = text.strip()
    if len(text) > MAX_MARKER_CHARS:
        return None
    cmd: object = text
    if text.startswith("{"):
        msg = _json_object(text)
        if msg is None:
            return None
        cmd = msg.get("command")
        if not isinstance(cmd, str):
            return None
    cmd = str(cmd).strip().lower()
    return cmd if cmd in COMMANDS else None


@dataclasses.dataclass(frozen=True)
class ControlSender:
    """Who sent a control command: the control stream's identity (from its StreamInfo)
    and the ``origin`` it wrote into the message (self-declared)."""

    host: str
    source_id: str
    uid: str
    name: str
    origin: str = ""
    address: str = ""

    @classmethod
    def of(cls, info: pylsl.StreamInfo, origin: str = "") -> ControlSender:
        """The sender of commands read from the stream ``info`` describes."""
        address = ""
        with contextlib.suppress(ET.ParseError):
            root = ET.fromstring(info.as_xml())
            address = (root.findtext("v4address") or root.findtext("v6address") or "").strip()
        return cls(info.hostname(), info.source_id(), info.uid(), info.name(), origin, address)

    def describe(self) -> str:
        """One phrase for the session summary (every field is the sender's own text:
        characters that are not printable, a line break included, are shown as ``?``, so
        a sender cannot write lines of its own into the summary)."""
        host, address, origin, source_id, uid = (
            _printable(v) for v in (self.host, self.address, self.origin, self.source_id,
                                    self.uid))
        at = f" ({address})" if address else ""
        who = f"{origin} " if origin else ""
        return (f"{who}on host {host}{at}, control stream source_id {source_id}, "
                f"stream uid {uid}")


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


@dataclasses.dataclass(frozen=True)
class ControlCommand:
    """One command from a control stream, and who sent it."""

    command: str
    sender: ControlSender


def decode_origin(text: str) -> str:
    """The ``origin`` a JSON control marker declares ('' when none)."""
    msg = _json_object(text.strip())
    origin = "" if msg is None else msg.get("origin", "")
    return origin if isinstance(origin, str) else ""


class ControlOutlet:
    """A view's control stream for one session (see the module docstring).

    Parameters
    ----------
    session_name : str
    origin : str
        Who publishes (shown in the session record): e.g. ``"view@host"``.
    repeat_s, repeat_every_s : float
        A stop is pushed at once, then again every ``repeat_every_s`` for ``repeat_s``
        by :meth:`tick` (call it from the GUI timer), in case the loop's inlet was still
        connecting. Repeats are harmless: stop is idempotent.
    """

    def __init__(
        self,
        session_name: str,
        *,
        origin: str | None = None,
        repeat_s: float = 2.0,
        repeat_every_s: float = 0.25,
    ) -> None:
        _check_name(session_name)
        self.session_name = session_name
        self.origin = origin or f"view@{socket.gethostname()}"
        self.repeat_s = float(repeat_s)
        self.repeat_every_s = float(repeat_every_s)
        sid = f"{_SOURCE_PREFIX}{uuid.uuid4().hex}"
        info = pylsl.StreamInfo(
            control_stream_name(session_name), "Markers", 1, pylsl.IRREGULAR_RATE,
            pylsl.cf_string, sid,
        )
        cl = info.desc().append_child("closedloop")
        cl.append_child_value("session", session_name)
        cl.append_child_value("role", "control")
        cl.append_child_value("format", CONTROL_FORMAT)
        self.source_id = sid
        self._outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(info)
        #: The stream's uid (liblsl's, unique per outlet): the session reports it.
        self.uid = self._outlet.get_info().uid()
        self._seq = 0
        self._repeat_until = 0.0
        self._next_repeat = 0.0
        self.sent = 0

    def has_listener(self) -> bool:
        """True when at least one inlet (a session loop, a recorder) is connected."""
        return self._outlet is not None and bool(self._outlet.have_consumers())

    def _push(self, command: str) -> None:
        if self._outlet is None:
            return
        text = json.dumps(
            {"seq": self._seq, "command": command, "origin": self.origin, "wall": time.time()}
        )
        self._outlet.push_sample([text], pylsl.local_clock())
        self._seq += 1
        self.sent += 1

    def stop(self) -> None:
        """Publish ``stop`` now and schedule the repeats."""
        self._push(STOP)
        now = time.monotonic()
        self._repeat_until = now + self.repeat_s
        self._next_repeat = now + self.repeat_every_s

    def tick(self, now: float | None = None) -> None:
        """Push a due repeat of the last stop (cheap; call it on every GUI tick)."""
        now = time.monotonic() if now is None else now
        if now <= self._repeat_until and now >= self._next_repeat:
            self._push(STOP)
            self._next_repeat = now + self.repeat_every_s

    def close(self) -> None:
        """Destroy the outlet. Idempotent."""
        self._outlet = None

    def __enter__(self) -> ControlOutlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlInlet:
    """Commands from every control stream of a session, without ever blocking the caller.

    Parameters
    ----------
    session_name : str
    rescan_s : float
        How often the background thread looks for new control streams.
    poll_wait_s : float
        Longest pause of the background thread between two pulls (the STOP latency it
        adds is at most this).

    Notes
    -----
    The thread starts in the constructor; call :meth:`close` (or use ``with``) to end
    it. :meth:`poll` returns the commands received since the last call, oldest first,
    each with its sender.
    """

    def __init__(
        self, session_name: str, *, rescan_s: float = 0.5, poll_wait_s: float = 0.005
    ) -> None:
        self.session_name = session_name
        self._pred = control_predicate(session_name)
        self.rescan_s = float(rescan_s)
        self.poll_wait_s = float(poll_wait_s)
        self._queue: queue.SimpleQueue[ControlCommand] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._n_inlets = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(
            target=self._run, name=f"closedloop-control-{session_name}", daemon=True
        )
        self._thread.start()

    # -- what the loop calls ------------------------------------------------------------------
    def poll(self) -> list[ControlCommand]:
        """Commands received since the last call, with their senders; never blocks."""
        out: list[ControlCommand] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    @property
    def n_streams(self) -> int:
        """Control streams currently subscribed to."""
        with self._lock:
            return self._n_inlets

    def wait_connected(self, timeout: float) -> bool:
        """Wait until at least one control stream is subscribed; False on timeout."""
        return self._connected.wait(timeout)

    def close(self) -> None:
        """End the background thread (waits up to 2 s). Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> ControlInlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """True while the background thread runs (False after :meth:`close`)."""
        return self._thread.is_alive()

    # -- background thread ------------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException) -> None:
        msg = f"control inlet for {self.session_name!r}: {what}: {exc!r}"
        if len(self.errors) < 100:
            self.errors.append(msg)
        log.warning(msg)

    def _scan(self, resolver: pylsl.ContinuousResolver, inlets: dict, gone: set,
              senders: dict) -> None:
        found = {info.source_id(): info for info in resolver.results()}
        gone &= set(found)  # the resolver forgets closed streams after a while
        for sid, info in found.items():
            if sid in inlets or sid in gone:
                continue
            try:
                inlet = pylsl.StreamInlet(info, max_buflen=10, recover=False)
                inlet.open_stream(timeout=1.0)
            except pylsl.util.LostError:
                gone.add(sid)  # closed before we subscribed
                continue
            except Exception as exc:  # noqa: BLE001 - retried at the next scan
                self._error(f"cannot subscribe to {sid}", exc)
                continue
            inlets[sid] = inlet
            senders[sid] = ControlSender.of(info)
        with self._lock:
            self._n_inlets = len(inlets)
        if inlets:
            self._connected.set()

    def _pull(self, inlets: dict, gone: set, senders: dict) -> bool:
        got = False
        for sid, inlet in list(inlets.items()):
            try:
                texts, _ = inlet.pull_chunk(timeout=0.0)
            except pylsl.util.LostError:
                del inlets[sid]  # a view closed: never a reason to stop
                gone.add(sid)
                continue
            except Exception as exc:  # noqa: BLE001 - drop it; the next scan re-subscribes
                self._error(f"pull from {sid} failed", exc)
                del inlets[sid]
                continue
            for row in texts:  # one bad marker must never cost the ones after it
                try:
                    text = str(row[0])
                    cmd = decode_command(text)
                    if cmd is not None:
                        sender = dataclasses.replace(senders[sid], origin=decode_origin(text))
                        self._queue.put(ControlCommand(cmd, sender))
                        got = True
                except Exception as exc:  # noqa: BLE001 - keep reading: a STOP may follow
                    self._error(f"unreadable marker from {sid}", exc)
        return got

    def _run(self) -> None:
        inlets: dict[str, pylsl.StreamInlet] = {}
        senders: dict[str, ControlSender] = {}
        gone: set[str] = set()
        resolver = pylsl.ContinuousResolver(pred=self._pred, forget_after=5.0)
        next_scan = 0.0
        try:
            while not self._stop.is_set():
                try:
                    now = time.monotonic()
                    if now >= next_scan:
                        next_scan = now + self.rescan_s
                        self._scan(resolver, inlets, gone, senders)
                    if not self._pull(inlets, gone, senders):
                        self._stop.wait(self.poll_wait_s)
                except Exception as exc:  # noqa: BLE001 - keep listening for STOP
                    self._error("unexpected error", exc)
                    self._stop.wait(0.1)
        finally:
            inlets.clear()
            del resolver
