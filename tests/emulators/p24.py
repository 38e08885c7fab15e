"""A strict Hasomed P24 (ScienceMode4) emulator on a pseudo-terminal.

The emulator holds the master side of a pty pair and behaves as Hasomed's documents
describe the device; a driver opens the slave side by its path, as it would open
``/dev/ttyACM0``. It runs in its own thread, or as a script for end-to-end tests::

    python -m tests.emulators.p24 [--state state.json]

The script prints the pty path as its first line on stdout, rewrites ``--state`` (JSON,
see :meth:`P24Emulator.snapshot`) whenever its state changes, and takes fault injections
as lines on stdin (``electrode N``, ``channel_error N STATE``, ``hv``, ``silent``,
``vanish``, ``answer CODE``, ``garble``, ``damage [N]``, ``lose [N]``, ``quit``). It stops
on ``quit``, SIGTERM or SIGINT.

Written from [IFU] HASOMED, *P24 Science & P24 Module, Instructions for use* v1.1
(tables 1-27) and [CLIB] HASOMED's ScienceMode4 C library (``smpt_packet_internal.c``
framing, ``smpt_ml_packet_utils.c`` and ``smpt_ll_packet_client.c`` encodings,
``smpt_ml_packet_validity.c`` ranges), independently of the ``science-mode-4`` library
and of closedloop's driver (its framing is its own code, so it checks theirs).

What it does, as the device would
---------------------------------
* Packets ``F0 | length (always stuffed) | CRC-CCITT (always stuffed) | packet number (6
  bit) + command (10 bit) | data | 0F`` with stuffing ``81, b ^ 55`` of F0, 0F and 81; a
  packet whose length or CRC does not match gets ``General_error`` with result 1
  (transfer error) and is not executed; an unknown command gets ``Unknown_cmd`` (11).
* Answers carry the request's packet number and the command number + 1, result first.
* General: GetDeviceId, Reset, GetStimStatus (level, high voltage), GetExtendedVersion.
* Mid level: ``Ml_init`` (high voltage on; "stop all channels on error" or not),
  ``Ml_update`` (channels enabled bitwise, per channel 1-16 points, ramp, 15-bit period
  with its accuracy flag), ``Ml_get_current_data`` (selection 4: active bits, error state
  per channel), ``Ml_stop``. A value out of range, a wrong data length, a pulse that does
  not fit its period, or pulses taking a second or more per second -> result 2; a mid-level
  command before ``Ml_init`` (or with the low level initialised) -> result 7.
* The keep-alive: without ``Ml_update`` or ``Ml_get_current_data`` for ``keepalive_s``
  (2 s) it stops stimulating (the mid level stays initialised; an ``Ml_update`` restarts).
* Switching the 150 V supply takes time before the answer: ``Ml_init`` 2 x 40 ms,
  ``Ml_stop`` 40 ms ([CLIB] ``smpt_ml_client.h`` "execution duration"); every answer
  comes ``response_delay_s`` after that (default at once).

What it checks beyond the device (for tests)
--------------------------------------------
Recorded in :attr:`~P24Emulator.violations`, not answered (the device's reaction is not
documented): packet numbers that do not increment by 1 mod 64, non-canonical stuffing,
reserved bits set, a pulse that is not charge balanced, ``Ml_init`` while the mid level is
initialised, a channel's ramp other than 0 (closedloop ramps itself).

Not emulated: low-level commands (answered ``Unknown_cmd``; a real P24 runs them), the
``Ml_get_current_data`` selections 2 and 3 (result 2), pulse timing, the device's own
ramp. A channel's train starts at the ``Ml_update`` that enables it; an ``Ml_update``
that keeps a channel's period keeps its train (:attr:`ChannelState.since`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

START, STOP, STUFF, KEY = 0xF0, 0x0F, 0x81, 0x55
MAX_PACKET = 1200  # bytes, stuffing included [IFU]
KEEPALIVE_S = 2.0  # [IFU] "automatic timeout of 2 s"
_POLL_S = 0.01
_STATE_WRITE_INTERVAL_S = 0.1

# command numbers [IFU tables 4, 11, 19; CLIB]
GET_DEVICE_ID, RESET, GET_STIM_STATUS, GET_EXTENDED_VERSION = 52, 58, 62, 68
GENERAL_ERROR, UNKNOWN_CMD = 66, 67
LL_INIT, LL_CHANNEL_CONFIG, LL_STOP = 0, 2, 4
ML_INIT, ML_UPDATE, ML_STOP, ML_GET_CURRENT_DATA = 30, 32, 34, 36
NAMES = {
    GET_DEVICE_ID: "GetDeviceId", RESET: "Reset", GET_STIM_STATUS: "GetStimStatus",
    GET_EXTENDED_VERSION: "GetExtendedVersion", LL_INIT: "Ll_init",
    LL_CHANNEL_CONFIG: "Ll_channel_config", LL_STOP: "Ll_stop", ML_INIT: "Ml_init",
    ML_UPDATE: "Ml_update", ML_STOP: "Ml_stop", ML_GET_CURRENT_DATA: "Ml_get_current_data",
}
# results [IFU table 27]
OK, TRANSFER_ERROR, PARAMETER_ERROR, NOT_INITIALIZED, HV_ERROR = 0, 1, 2, 7, 8
INVALID_CMD = 11
# per-channel error states in Ml_get_current_data_ack [IFU table 26]
ELECTRODE, PULSE_TIMEOUT, LOW_CURRENT = 1, 2, 3
# execution before the answer: the 150 V supply on (2 x 40 ms) or off (40 ms)
# [CLIB smpt_ml_client.h, smpt_ll_client.h]
EXECUTION_S = {ML_INIT: 0.08, ML_STOP: 0.04, LL_INIT: 0.04, LL_STOP: 0.04}


def crc_ccitt(data: bytes) -> int:
    """CRC-CCITT (polynomial 0x1021, initial value 0, MSB first) [IFU, CLIB]."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def stuff(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        out += bytes((STUFF, b ^ KEY)) if b in (START, STOP, STUFF) else bytes((b,))
    return bytes(out)


def encode(pkt_no: int, cmd: int, data: bytes = b"") -> bytes:
    """One packet as the device sends it."""
    body = stuff(bytes(((pkt_no << 2) & 0xFC | (cmd >> 8) & 0x03, cmd & 0xFF)) + data)
    length = len(body) + 10
    crc = crc_ccitt(body)
    head = b"".join(bytes((STUFF, b ^ KEY)) for b in (length >> 8, length & 0xFF,
                                                       crc >> 8, crc & 0xFF))
    return bytes((START,)) + head + body + bytes((STOP,))


@dataclass(frozen=True)
class Frame:
    """A packet received from the PC (``error`` set when it could not be used)."""

    pkt_no: int | None
    cmd: int | None
    data: bytes
    canonical: bool = True
    error: str = ""


class Decoder:
    """Bytes in any fragmentation -> frames; the byte after a stuffing byte is data."""

    def __init__(self) -> None:
        self._buf: bytearray | None = None
        self._escaped = False

    def feed(self, data: bytes) -> list[Frame]:
        out = []
        for b in data:
            if self._buf is None:
                if b == START:
                    self._buf, self._escaped = bytearray(), False
                continue
            if self._escaped:
                self._buf.append(b)
                self._escaped = False
            elif b == START:
                out.append(Frame(None, None, bytes(self._buf), error="new start byte in a packet"))
                self._buf = bytearray()
            elif b == STOP:
                out.append(_parse(bytes(self._buf)))
                self._buf = None
            else:
                self._buf.append(b)
                self._escaped = b == STUFF
                if len(self._buf) > MAX_PACKET:
                    out.append(Frame(None, None, b"", error="packet longer than 1200 bytes"))
                    self._buf = None
        return out


def _parse(content: bytes) -> Frame:
    """The bytes between start and stop byte -> a frame (or an error frame)."""
    if len(content) < 10 or any(content[i] != STUFF for i in (0, 2, 4, 6)):
        return Frame(None, None, content, error="length and checksum not stuffed")
    length = (content[1] ^ KEY) << 8 | content[3] ^ KEY
    crc = (content[5] ^ KEY) << 8 | content[7] ^ KEY
    body = content[8:]
    unstuffed, canonical = bytearray(), True
    it = iter(body)
    for b in it:
        if b == STUFF:
            v = next(it, None)
            if v is None:
                return Frame(None, None, content, error="lone stuffing byte")
            v ^= KEY
            canonical &= v in (START, STOP, STUFF)
            unstuffed.append(v)
        else:
            canonical &= b not in (START, STOP)
            unstuffed.append(b)
    pkt_no = unstuffed[0] >> 2 if unstuffed else None
    cmd = ((unstuffed[0] & 0x03) << 8 | unstuffed[1]) if len(unstuffed) >= 2 else None
    if length != len(content) + 2:
        return Frame(pkt_no, cmd, bytes(unstuffed[2:]), canonical,
                     f"length field {length}, packet has {len(content) + 2} bytes")
    if crc != crc_ccitt(body):
        return Frame(pkt_no, cmd, bytes(unstuffed[2:]), canonical, "checksum mismatch")
    if cmd is None:
        return Frame(None, None, b"", canonical, "no command prefix")
    return Frame(pkt_no, cmd, bytes(unstuffed[2:]), canonical)


@dataclass(frozen=True)
class ChannelState:
    """One output channel as the emulated device drives it."""

    running: bool = False
    #: (duration us, current mA) of the pulse's points.
    points: tuple[tuple[int, float], ...] = ()
    period_ms: float = 0.0
    ramp: int = 0
    #: Emulator time at which its current train started (an update that keeps the
    #: period keeps the train).
    since: float = 0.0
    #: Error state (0 ok, 1 electrode, 2 pulse timeout, 3 low current).
    error: int = 0

    @property
    def current_ma(self) -> float:
        """Peak current of the pulse, mA (0 when not running)."""
        return max((abs(i) for _, i in self.points), default=0.0) if self.running else 0.0

    @property
    def pulse_width_us(self) -> int:
        """Duration of the first phase, us."""
        return self.points[0][0] if self.points else 0


@dataclass(frozen=True)
class Received:
    """A packet the emulator received, and what it did with it."""

    t: float
    pkt_no: int | None
    cmd: int | None
    data: bytes
    result: int | None = None
    answer: str = ""
    note: str = ""
    canonical: bool = True

    @property
    def name(self) -> str:
        return NAMES.get(self.cmd, f"command {self.cmd}") if self.cmd is not None else "?"


class _RefusedError(Exception):
    def __init__(self, result: int, note: str) -> None:
        super().__init__(note)
        self.result, self.note = result, note


@dataclass
class _Device:
    level: str = "none"  # none | low | mid
    stop_all_on_error: bool = False
    hv_on: bool = False
    hv_failed: bool = False
    channels: dict[int, ChannelState] = field(
        default_factory=lambda: {ch: ChannelState() for ch in range(1, 9)})


class P24Emulator:
    """A P24 on a pty, in a thread. Use as a context manager or start()/stop().

    Parameters
    ----------
    keepalive_s : float
        Time without ``Ml_update`` / ``Ml_get_current_data`` after which it stops
        stimulating (device: 2 s).
    response_delay_s : float
        Time from receiving a command (and executing it) to answering it.
    state_path : str or Path, optional
        JSON file rewritten with :meth:`snapshot` whenever the state changes.
    """

    def __init__(self, *, keepalive_s: float = KEEPALIVE_S, response_delay_s: float = 0.0,
                 state_path: str | Path | None = None) -> None:
        self.keepalive_s = keepalive_s
        self.response_delay_s = response_delay_s
        self.state_path = Path(state_path) if state_path is not None else None
        self.path = ""
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._vanished = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = -1
        self._decoder = Decoder()
        self._t0 = time.monotonic()
        self._dev = _Device()
        self._last_alive = 0.0
        self._expected_pkt: int | None = None
        self._host_open = False
        self._forced: tuple[int, str | None] | None = None  # (result, only this command)
        self._silent = False
        self._vanish_requested = False
        self._garble_requested = False
        self._damage = 0  # packets from the PC still to damage on the way
        self._lose = 0  # packets from the PC still to lose on the way
        self._outbox: list[tuple[float, bytes]] = []  # (due, frame) of answers
        self._received: list[Received] = []
        self._events: list[str] = []
        self._violations: list[str] = []
        self._keepalive_timeouts = 0
        self._error: BaseException | None = None
        self._dirty = True
        self._state_written_at = 0.0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Create the pty, start the device thread; return the path for the driver."""
        self._master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(slave)
        # not kept open: reading the master then fails (EIO) whenever no program has the
        # port open, which is how the device sees a program open and close it
        os.close(slave)
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="p24-emulator", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        """Stop the thread, close the pty and write the final state file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close_fds()
        self._write_state(force=True)

    def __enter__(self) -> P24Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_fds(self) -> None:
        with self._lock:
            if self._master >= 0:
                try:
                    os.close(self._master)
                except OSError:
                    pass
            self._master = -1

    # --- state for tests ----------------------------------------------------------------------

    @property
    def level(self) -> str:
        """``none``, ``low`` or ``mid`` (initialised level)."""
        with self._lock:
            return self._dev.level

    @property
    def host_open(self) -> bool:
        """True while a program has the port open (as far as it has seen: a close and a
        reopen within a few ms may go unseen on a pty)."""
        with self._lock:
            return self._host_open

    @property
    def channels(self) -> dict[int, ChannelState]:
        with self._lock:
            return dict(self._dev.channels)

    @property
    def running_channels(self) -> dict[int, ChannelState]:
        with self._lock:
            return {ch: s for ch, s in self._dev.channels.items() if s.running}

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def commands(self, cmd: int) -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.cmd == cmd]

    @property
    def events(self) -> list[str]:
        with self._lock:
            return list(self._events)

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    @property
    def keepalive_timeouts(self) -> int:
        with self._lock:
            return self._keepalive_timeouts

    @property
    def error(self) -> BaseException | None:
        with self._lock:
            return self._error

    def line_settings(self) -> dict[str, object]:
        """The serial settings the driver put on the pty."""
        fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            iflag, _, cflag, _, _, ospeed, _ = termios.tcgetattr(fd)
        finally:
            os.close(fd)
        bauds = {getattr(termios, f"B{b}"): b for b in (460800, 921600, 3000000)
                 if hasattr(termios, f"B{b}")}
        return {"baudrate": bauds.get(ospeed, ospeed),
                "two_stop_bits": bool(cflag & termios.CSTOPB),
                "rtscts": bool(cflag & termios.CRTSCTS),
                "xonxoff": bool(iflag & (termios.IXON | termios.IXOFF))}

    def now(self) -> float:
        """Emulator time (s since start), the clock of :attr:`Received.t` and ``since``."""
        return time.monotonic() - self._t0

    def wait_until(self, predicate: Callable[[P24Emulator], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            d = self._dev
            return {
                "path": self.path, "pid": os.getpid(), "t": self.now(), "level": d.level,
                "hv_on": d.hv_on, "hv_failed": d.hv_failed,
                "stop_all_on_error": d.stop_all_on_error,
                "channels": {str(ch): {**asdict(s), "current_ma": s.current_ma}
                             for ch, s in d.channels.items()},
                "any_running": any(s.running for s in d.channels.values()),
                "received_total": len(self._received),
                "received": [{**asdict(r), "data": r.data.hex(" "), "name": r.name}
                             for r in self._received[-2000:]],
                "events": list(self._events), "violations": list(self._violations),
                "keepalive_timeouts": self._keepalive_timeouts, "silent": self._silent,
                "vanished": self._vanished.is_set(),
                "error": None if self._error is None else repr(self._error),
            }

    # --- fault injection ------------------------------------------------------------------------

    def electrode_error(self, channel: int) -> None:
        """The electrodes of ``channel`` come off the skin (error state 1)."""
        self.channel_error(channel, ELECTRODE)

    def channel_error(self, channel: int, state: int) -> None:
        """``channel`` fails with ``state`` (1 electrode, 2 pulse timeout, 3 low current):
        it stops (every channel stops if ``Ml_init`` asked to stop on all errors)."""
        with self._changed:
            d = self._dev
            d.channels[channel] = replace(d.channels[channel], running=False, error=state)
            if d.stop_all_on_error:
                for ch, s in d.channels.items():
                    d.channels[ch] = replace(s, running=False)
            self._event(f"channel {channel} error state {state}")
            self._changed.notify_all()

    def hv_fault(self) -> None:
        """The high-voltage supply fails: every channel stops; mid-level commands other
        than ``Ml_stop`` are answered with result 8 from now on."""
        with self._changed:
            self._dev.hv_failed = True
            self._stop_all_channels()
            self._event("high-voltage fault")
            self._changed.notify_all()

    def answer_with(self, result: int, command: str | None = None) -> None:
        """Answer the next command (the next ``command``, say ``"Ml_update"``, when given:
        the driver's keep-alive runs beside its commands) with ``result`` (not executed if
        it is not 0)."""
        with self._lock:
            self._forced = (result, command)

    def go_silent(self) -> None:
        """The link dies: nothing it receives arrives, nothing is answered; the firmware
        runs on, so its keep-alive timeout stops stimulation after ``keepalive_s``."""
        with self._changed:
            self._silent = True
            self._event("silent: hears and answers nothing")

    def damage_next(self, n: int = 1) -> None:
        """The next ``n`` packets arrive damaged (as line noise would): each is answered
        with ``General_error`` 1 (transfer error) and not executed."""
        with self._lock:
            self._damage = n

    def lose_next(self, n: int = 1) -> None:
        """The next ``n`` packets from the PC are lost on the way: not seen, not answered."""
        with self._lock:
            self._lose = n

    def garble(self) -> None:
        """Send one damaged packet (a flipped bit after its checksum was computed)."""
        with self._lock:
            self._garble_requested = True

    def vanish(self, timeout: float = 2.0) -> None:
        """Close the pty (the USB cable pulled: the P24, powered by it, stops)."""
        with self._lock:
            self._vanish_requested = True
        if not self._vanished.wait(timeout):
            raise TimeoutError("emulator thread did not close the pty")

    # --- the device thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._changed:
                    if self._vanish_requested:
                        self._stop_all_channels()
                        self._dev.level, self._dev.hv_on = "none", False
                        self._event("vanished: pty closed, the device is unpowered")
                        self._close_fds()
                        self._vanished.set()
                        self._changed.notify_all()
                        break
                    if self._garble_requested:
                        self._garble_requested = False
                        frame = bytearray(encode(63, GET_STIM_STATUS + 1, bytes((OK, 0, 1))))
                        frame[-2] ^= 0x01
                        self._write(bytes(frame))
                        self._event("sent a damaged packet")
                with self._lock:
                    due = self._outbox[0][0] - time.monotonic() if self._outbox else _POLL_S
                readable, _, _ = select.select([self._master], [], [], min(max(due, 0.0),
                                                                           _POLL_S))
                data = b""
                if readable:
                    try:
                        data = os.read(self._master, 4096)
                    except BlockingIOError:
                        pass
                    except OSError:  # EIO: no program has the port open
                        self._host_closed()
                        time.sleep(_POLL_S)
                with self._changed:
                    now = self.now()
                    for frame in self._decoder.feed(data):
                        self._dirty = True
                        self._on_frame(frame, now)
                    self._on_timers(now)
                    self._changed.notify_all()
                self._write_state()
        except BaseException as exc:
            with self._changed:
                self._error = exc
                self._changed.notify_all()
            raise
        finally:
            self._write_state(force=True)

    def _host_closed(self) -> None:
        with self._changed:
            if self._host_open:
                self._host_open = False
                self._expected_pkt = None  # the next program numbers from its own start
                self._event("the program closed the port")

    def _on_timers(self, now: float) -> None:
        while self._outbox and self._outbox[0][0] <= time.monotonic():
            self._write(self._outbox.pop(0)[1])
        d = self._dev
        if (any(s.running for s in d.channels.values())
                and now - self._last_alive >= self.keepalive_s):
            self._keepalive_timeouts += 1
            self._stop_all_channels()
            self._event(f"keep-alive timeout: no Ml_update or Ml_get_current_data for "
                        f"{self.keepalive_s:g} s, stimulation stopped")

    def _on_frame(self, frame: Frame, now: float) -> None:
        if not self._host_open:
            self._host_open = True
            self._event("a program opened the port")
        record = Received(now, frame.pkt_no, frame.cmd, frame.data, canonical=frame.canonical)
        if self._silent:
            self._received.append(replace(record, note="lost: silent"))
            return
        if self._lose:
            self._lose -= 1
            self._event(f"lost on the way (injected): {record.name} (packet {frame.pkt_no})")
            if frame.pkt_no is not None and self._expected_pkt is not None:
                self._expected_pkt = (frame.pkt_no + 1) % 64  # the gap is the wire's
            return
        if self._damage and not frame.error:
            self._damage -= 1
            frame = replace(frame, error="damaged on the way (injected)")
        if not frame.canonical:
            self._violation(f"{record.name} (packet {frame.pkt_no}) is not stuffed canonically")
        if frame.error:
            self._event(f"damaged packet: {frame.error}")
            if frame.pkt_no is not None:
                self._expected_pkt = (frame.pkt_no + 1) % 64
                self._send(frame.pkt_no, GENERAL_ERROR, bytes((TRANSFER_ERROR,)))
                record = replace(record, result=TRANSFER_ERROR, answer="General_error")
            self._received.append(replace(record, note=frame.error))
            return
        assert frame.pkt_no is not None and frame.cmd is not None
        if self._expected_pkt is not None and frame.pkt_no != self._expected_pkt:
            self._violation(f"{record.name} has packet number {frame.pkt_no}, expected "
                            f"{self._expected_pkt}")
        self._expected_pkt = (frame.pkt_no + 1) % 64
        handler = {
            GET_DEVICE_ID: self._get_device_id, RESET: self._reset,
            GET_STIM_STATUS: self._get_stim_status,
            GET_EXTENDED_VERSION: self._get_extended_version, ML_INIT: self._ml_init,
            ML_UPDATE: self._ml_update, ML_STOP: self._ml_stop,
            ML_GET_CURRENT_DATA: self._ml_get_current_data,
        }.get(frame.cmd)
        if handler is None:
            self._send(frame.pkt_no, UNKNOWN_CMD, bytes((INVALID_CMD,)))
            self._received.append(replace(record, result=INVALID_CMD, answer="Unknown_cmd",
                                          note="unknown command"))
            return
        forced = None
        if self._forced is not None and self._forced[1] in (None, NAMES[frame.cmd]):
            (forced, _), self._forced = self._forced, None
        try:
            if forced:
                raise _RefusedError(forced, f"forced result {forced}")
            result, extra, note = OK, handler(frame.data, now), ""
        except _RefusedError as refusal:
            result, extra, note = refusal.result, self._refused_data(frame.cmd), refusal.note
        execution = EXECUTION_S.get(frame.cmd, 0.0) if result == OK else 0.0
        self._send(frame.pkt_no, frame.cmd + 1, bytes((result,)) + extra, execution)
        self._received.append(replace(record, result=result, note=note,
                                      answer=NAMES[frame.cmd] + "_ack"))

    @staticmethod
    def _refused_data(cmd: int) -> bytes:
        """The rest of an answer whose result is an error (fixed-size answers stay so)."""
        return {GET_STIM_STATUS: bytes((0, 1)), GET_DEVICE_ID: b"\0" * 10,
                GET_EXTENDED_VERSION: bytes(12), ML_GET_CURRENT_DATA: bytes((4, 0, 0, 0, 0, 0))
                }.get(cmd, b"")

    # --- general commands -----------------------------------------------------------------------

    def _no_data(self, name: str, data: bytes) -> None:
        if data:
            raise _RefusedError(PARAMETER_ERROR, f"{name} takes no data, got {data.hex(' ')}")

    def _get_device_id(self, data: bytes, now: float) -> bytes:
        self._no_data("GetDeviceId", data)
        return b"EMUP240001"

    def _reset(self, data: bytes, now: float) -> bytes:
        self._no_data("Reset", data)
        self._stop_all_channels()
        self._dev = _Device()
        self._event("reset")
        return b""

    def _get_stim_status(self, data: bytes, now: float) -> bytes:
        self._no_data("GetStimStatus", data)
        d = self._dev
        status = {"none": 0, "low": 1}.get(d.level, 3 if any(
            s.running for s in d.channels.values()) else 2)
        return bytes((status, 6 if d.hv_on else 1))

    def _get_extended_version(self, data: bytes, now: float) -> bytes:
        self._no_data("GetExtendedVersion", data)
        # firmware 1.0.0, ScienceMode 4.0.0, hash, hash type 1 (git), hash valid
        return bytes((1, 0, 0, 4, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF, 1, 1))

    # --- mid level ---------------------------------------------------------------------------

    def _require_mid(self, name: str) -> None:
        if self._dev.level != "mid":
            raise _RefusedError(NOT_INITIALIZED, f"{name} while the level is {self._dev.level}")
        if self._dev.hv_failed:
            raise _RefusedError(HV_ERROR, f"{name} after a high-voltage fault")

    def _ml_init(self, data: bytes, now: float) -> bytes:
        d = self._dev
        if len(data) != 1 or data[0] > 1:
            raise _RefusedError(PARAMETER_ERROR,
                                f"Ml_init needs one byte 0 or 1, got {data.hex(' ')}")
        if d.level == "low":
            raise _RefusedError(NOT_INITIALIZED, "Ml_init while the low level is initialised")
        if d.hv_failed:
            raise _RefusedError(HV_ERROR, "Ml_init after a high-voltage fault")
        if d.level == "mid":
            self._violation("Ml_init while the mid level is initialised")
            self._stop_all_channels()
        d.level, d.hv_on, d.stop_all_on_error = "mid", True, bool(data[0])
        d.channels = {ch: ChannelState() for ch in d.channels}
        return b""

    def _ml_update(self, data: bytes, now: float) -> bytes:
        self._require_mid("Ml_update")
        if not data:
            raise _RefusedError(PARAMETER_ERROR, "Ml_update without data")
        enabled = [ch for ch in range(1, 9) if data[0] >> (ch - 1) & 1]
        configs: dict[int, tuple[int, float, tuple[tuple[int, float], ...]]] = {}
        i = 1
        for ch in enabled:
            if i + 3 > len(data):
                raise _RefusedError(PARAMETER_ERROR,
                                    f"Ml_update: channel {ch} configuration cut off")
            n_points, ramp = (data[i] >> 4) + 1, data[i] & 0x0F
            word = data[i + 1] << 8 | data[i + 2]
            code, double = word >> 1, word & 1
            period = code / (4.0 if double else 2.0)
            i += 3
            if i + 4 * n_points > len(data):
                raise _RefusedError(PARAMETER_ERROR, f"Ml_update: channel {ch} points cut off")
            points = []
            for k in range(n_points):
                b0, b1, b2, b3 = data[i:i + 4]
                duration = b0 << 4 | b1 >> 4
                current_code = (b1 & 0x0F) << 6 | b2 >> 2
                if b2 & 0x03 or b3:
                    self._violation(f"Ml_update: channel {ch} point {k} has reserved bits set")
                if current_code > 600:
                    raise _RefusedError(PARAMETER_ERROR, f"channel {ch} point {k}: current code "
                                   f"{current_code} > 600")
                points.append((duration, (current_code - 300) / 2.0))
                i += 4
            configs[ch] = (ramp, period, tuple(points))
        if i != len(data):
            raise _RefusedError(PARAMETER_ERROR, f"Ml_update: {len(data) - i} bytes too many")
        duty = 0.0
        for ch, (ramp, period, points) in configs.items():
            if period <= 0 or period > 16383:  # code 1..32767 [IFU]; [CLIB] <= 16383 ms
                raise _RefusedError(PARAMETER_ERROR, f"channel {ch}: period {period} ms")
            if any(abs(c) > 130.0 for _, c in points):  # [CLIB] point validity
                raise _RefusedError(PARAMETER_ERROR, f"channel {ch}: current above 130 mA")
            busy_us = sum(t for t, _ in points) + 60  # [CLIB] mute 40 us + reserve 20 us
            if busy_us > period * 1000.0:
                raise _RefusedError(PARAMETER_ERROR, f"channel {ch}: pulse of {busy_us} us longer "
                               f"than its period {period} ms")
            duty += busy_us / period
            if abs(sum(t * c for t, c in points)) > 1e-9:
                self._violation(f"channel {ch}: pulse not charge balanced: {points}")
            if ramp:
                self._violation(f"channel {ch}: ramp {ramp} (closedloop ramps itself)")
        if -(-duty // 1) >= 1000:
            raise _RefusedError(PARAMETER_ERROR, f"pulses take {duty:.0f} ms per second")
        d = self._dev
        for ch in range(1, 9):
            old = d.channels[ch]
            if ch in configs:
                ramp, period, points = configs[ch]
                keep = old.running and old.period_ms == period
                running = any(c for _, c in points) and old.error == 0
                d.channels[ch] = ChannelState(running, points, period, ramp,
                                              old.since if keep else now, old.error)
            elif old.running:
                d.channels[ch] = replace(old, running=False)
        self._last_alive = now
        return b""

    def _ml_stop(self, data: bytes, now: float) -> bytes:
        self._no_data("Ml_stop", data)
        if self._dev.level != "mid":
            raise _RefusedError(NOT_INITIALIZED, f"Ml_stop while the level is {self._dev.level}")
        self._stop_all_channels()
        d = self._dev
        d.level, d.hv_on = "none", False
        d.channels = {ch: ChannelState() for ch in d.channels}
        return b""

    def _ml_get_current_data(self, data: bytes, now: float) -> bytes:
        if data != bytes((4,)):
            raise _RefusedError(PARAMETER_ERROR, f"Ml_get_current_data selection {data.hex(' ')} "
                           "(only 4, all channels, is emulated)")
        self._require_mid("Ml_get_current_data")
        self._last_alive = now
        chans = self._dev.channels
        active = sum(1 << (ch - 1) for ch, s in chans.items() if s.running)
        states = bytes(chans[2 * k + 1].error | chans[2 * k + 2].error << 4 for k in range(4))
        return bytes((4, active)) + states

    # --- helpers --------------------------------------------------------------------------------

    def _stop_all_channels(self) -> None:
        d = self._dev
        for ch, s in d.channels.items():
            if s.running:
                d.channels[ch] = replace(s, running=False)
        self._dirty = True

    def _send(self, pkt_no: int, cmd: int, data: bytes, execution_s: float = 0.0) -> None:
        """Answer, ``execution_s + response_delay_s`` from now (answers keep their order)."""
        delay = execution_s + self.response_delay_s
        if delay <= 0 and not self._outbox:
            self._write(encode(pkt_no, cmd, data))
            return
        due = max(time.monotonic() + delay, self._outbox[-1][0] if self._outbox else 0.0)
        self._outbox.append((due, encode(pkt_no, cmd, data)))

    def _write(self, frame: bytes) -> None:
        if self._silent or self._master < 0:
            return
        try:
            os.write(self._master, frame)
        except BlockingIOError:
            self._event("output dropped (nobody reading)")
        except OSError as exc:
            self._event(f"write failed: {exc}")

    def _event(self, text: str) -> None:
        self._events.append(f"{self.now():8.3f} {text}")
        self._dirty = True

    def _violation(self, text: str) -> None:
        self._violations.append(text)
        self._event(f"violation: {text}")

    def _write_state(self, force: bool = False) -> None:
        if self.state_path is None:
            return
        now = time.monotonic()
        if not force and (not self._dirty
                          or now - self._state_written_at < _STATE_WRITE_INTERVAL_S):
            return
        with self._lock:
            snapshot = self.snapshot()
            self._dirty = False
        self._state_written_at = now
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(snapshot, indent=1))
        os.replace(tmp, self.state_path)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until ``quit`` on stdin, SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.p24",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, help="JSON state file, rewritten on every change")
    parser.add_argument("--keepalive", type=float, default=KEEPALIVE_S,
                        help="keep-alive timeout, s (device: 2)")
    parser.add_argument("--response-delay", type=float, default=0.0,
                        help="seconds from a command (and its execution) to its answer")
    args = parser.parse_args(argv)
    emulator = P24Emulator(keepalive_s=args.keepalive, response_delay_s=args.response_delay,
                           state_path=args.state)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(emulator.start(), flush=True)
    try:
        for line in sys.stdin:
            word, *rest = line.split() or [""]
            if word == "quit":
                return 0
            try:
                if word == "electrode" and rest:
                    emulator.electrode_error(int(rest[0]))
                elif word == "channel_error" and len(rest) == 2:
                    emulator.channel_error(int(rest[0]), int(rest[1]))
                elif word == "answer" and rest:
                    emulator.answer_with(int(rest[0]))
                elif word in ("damage", "lose"):
                    n = int(rest[0]) if rest else 1
                    (emulator.damage_next if word == "damage" else emulator.lose_next)(n)
                elif word in ("hv", "silent", "vanish", "garble"):
                    {"hv": emulator.hv_fault, "silent": emulator.go_silent,
                     "vanish": emulator.vanish, "garble": emulator.garble}[word]()
                elif word:
                    raise ValueError(word)
            except ValueError:
                print(f"unknown control {line.strip()!r}; use electrode N, channel_error N S, "
                      "hv, silent, vanish, garble, damage [N], lose [N], answer CODE, quit",
                      file=sys.stderr)
        while True:  # stdin closed: run until a signal
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
