"""A strict Hasomed RehaStim2 (ScienceMode2) emulator on a pseudo-terminal.

The emulator holds the master side of a pty pair and behaves as the vendor specification
(``shared/protocols/sciencemode2.md``) describes the device; a driver opens the slave
side by its path, as it would open ``/dev/ttyUSB0``. It runs in its own thread, or as a
script for end-to-end tests::

    python -m tests.emulators.rehastim2 [--state state.json]

The script prints the pty path (e.g. ``/dev/pts/7``) as its first line on stdout, rewrites
``--state`` (JSON, see :meth:`RehaStim2Emulator.snapshot`) whenever its state changes,
and takes fault injections as lines on stdin (``emergency``, ``electrode``, ``module``,
``silent``, ``vanish``, ``answer -2``, ``busy 3``, ``busy always``, ``busy 0``,
``lose N``, ``damage N``, ``quit``). It stops on ``quit``, SIGTERM or SIGINT; end of
stdin does not stop it.

What it does, as the device would
---------------------------------
* Sends Init every ``init_interval_s`` (0.5 s) until a valid InitAck with result 0
  echoes the packet number of the last Init; ignores everything else meanwhile.
* Checks framing, CRC and LEN (a bad CRC or LEN gets the command's own Ack with -1 if the
  command byte can be read), and accepts ``81 xx`` as an escape of any byte.
* Runs the mode state machine start -> initialized -> started: a command not allowed in
  the current mode gets -3; a value out of range, a wrong number of parameters, an
  inter-pulse interval below 8 ms per stimulation module the channel list uses (16 ms
  with channels on both 1-4 and 5-8: DOC2 Table 2 "8 ms per stimulation module", the
  modules processed one after the other) or a main interval shorter than it gets -2.
  Unknown command numbers (including the XORed, unescaped command bytes of
  pyScienceMode, e.g. 0x5F) get UnknownCommand.
* After ``watchdog_s`` (1.2 s) without a valid packet it stops stimulation, resets its
  modes and sends Init again.
* Answers each command ``response_delay_s`` after receiving it (default at once; the
  device may take up to MaxResponseTime, 100 ms, DOC2 Table 7).

What it checks beyond the device (for tests)
--------------------------------------------
The device's reaction to these is not specified, so they are recorded, not answered:
:attr:`~RehaStim2Emulator.violations` lists PC packet numbers that do not increment by 1
mod 256, Watchdogs with data, InitAcks in mid-session; each :class:`Received` record says
whether its stuffing was the canonical one (only F0, 0F, 81 escaped). A command sent
again after a damaged packet (Ack -1) may carry the damaged packet's number or the next
one (DOC2 5.3 says "sends the command again", not with which number).

Lost packets are injected with :meth:`~RehaStim2Emulator.lose_next`: the next packets
from the PC vanish on the way (a start byte destroyed by noise: the device sees no frame
and answers nothing, DOC2 5.2). :meth:`~RehaStim2Emulator.damage_next` damages the next
packets on the way (their checksum no longer matches: Ack -1, not executed).

Busy (-8) is injected with :meth:`~RehaStim2Emulator.answer_busy`: the device is "still
processing the previous command", so it answers -8 and does not execute the command, on
the commands whose Ack the specification lists -8 for (GetStimulationMode,
InitChannelListMode, StartChannelListMode, SinglePulse; never StopChannelListMode, whose
Ack is 0 or -1 only).

Not emulated: MOTOmed commands (they get UnknownCommand, a real device would answer
them), pulse timing.
Its range checks are written from the specification, independently of the driver's.
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from closedloop.stim.drivers import sciencemode2 as sm

INIT_INTERVAL_S = 0.5
WATCHDOG_S = 1.2
_POLL_S = 0.02
_STATE_WRITE_INTERVAL_S = 0.1
_BUSY = -8
#: Commands whose Ack may carry busy (-8) in the specification (DOC2 sections 3.6, 4.3).
_CAN_BE_BUSY = frozenset({
    sm.Command.GET_STIMULATION_MODE, sm.Command.INIT_CHANNEL_LIST_MODE,
    sm.Command.START_CHANNEL_LIST_MODE, sm.Command.SINGLE_PULSE,
})
_BAUD_OF = {
    getattr(termios, f"B{b}"): b
    for b in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
    if hasattr(termios, f"B{b}")
}


@dataclass(frozen=True)
class ChannelState:
    """One output channel as the emulated device drives it."""

    current_ma: int = 0
    pulse_width_us: int = 0
    pulse_mode: int = 0
    #: True while continuous stimulation outputs pulses with current on this channel.
    running: bool = False


@dataclass(frozen=True)
class Received:
    """A packet the emulator received, and what it did with it."""

    t: float  # seconds since the emulator started
    pkt_no: int
    cmd: int
    data: bytes
    result: int | None = None  # result sent in the Ack, if one was sent
    answer: str = ""  # e.g. "StartChannelListModeAck", "UnknownCommand", "" (none)
    note: str = ""  # why a command was refused or ignored
    canonical: bool = True  # stuffing escaped exactly F0, 0F, 81

    @property
    def name(self) -> str:
        return sm.command_name(self.cmd)


class _RefusedError(Exception):
    """A command the device answers with a non-zero result."""

    def __init__(self, result: int, note: str) -> None:
        super().__init__(note)
        self.result = result
        self.note = note


class RehaStim2Emulator:
    """A RehaStim2 on a pty, in a thread. Use as a context manager or start()/stop().

    Parameters
    ----------
    init_interval_s : float
        Repetition of Init while waiting for a connection (device: 0.5 s).
    watchdog_s : float
        Time without a valid packet after which it stops and resets (device: 1.2 s).
    version : int
        Protocol version sent in Init.
    send_init : bool
        False makes a port where nothing ever answers (no device).
    response_delay_s : float
        Time between receiving a command and sending its Ack (the device: up to
        MaxResponseTime, 0.1 s; on average under 20 ms).
    state_path : str or Path, optional
        JSON file rewritten with :meth:`snapshot` whenever the state changes.
    """

    def __init__(
        self,
        *,
        init_interval_s: float = INIT_INTERVAL_S,
        watchdog_s: float = WATCHDOG_S,
        version: int = 1,
        send_init: bool = True,
        response_delay_s: float = 0.0,
        state_path: str | Path | None = None,
    ) -> None:
        self.init_interval_s = init_interval_s
        self.response_delay_s = response_delay_s
        self.watchdog_s = watchdog_s
        self.version = version
        self.send_init = send_init
        self.state_path = Path(state_path) if state_path is not None else None
        self.path = ""
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._vanished = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = self._slave = -1
        self._decoder = sm.Decoder()
        self._t0 = time.monotonic()
        # device state
        self._connected = False
        self._mode = sm.StimulationMode.START
        self._channels = {ch: ChannelState() for ch in range(1, sm.N_CHANNELS + 1)}
        self._config: dict[str, int] | None = None  # the InitChannelListMode in force
        self._dev_pkt = 0
        self._last_init_pkt: int | None = None
        self._next_init_at = 0.0
        self._last_valid_at = 0.0
        self._expected_pkt: int | None = None
        self._resent_pkt: int | None = None  # a damaged packet's number, may come again
        self._outbox: list[tuple[float, bytes]] = []  # (due, frame) of delayed Acks
        # fault injection
        self._forced_result: tuple[int, str | None] | None = None  # (result, only this command)
        self._busy_left: int | None = 0  # busy answers still to give (None: until cleared)
        self._silent = False
        self._lose = 0  # PC packets still to lose on the way
        self._damage = 0  # PC packets still to damage on the way
        self._vanish_requested = False
        # records for tests
        self._received: list[Received] = []
        self._events: list[str] = []
        self._violations: list[str] = []
        self._single_pulses: list[tuple[int, int, int]] = []
        self._watchdog_expiries = 0
        self._inits_sent = 0
        self._error: BaseException | None = None
        self._dirty = True
        self._state_written_at = 0.0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Create the pty, start the device thread; return the path for the driver."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing before the driver configures it
        os.set_blocking(self._master, False)  # nobody reading must not block the device
        self.path = os.ttyname(self._slave)
        self._t0 = time.monotonic()
        self._next_init_at = self._t0
        self._thread = threading.Thread(target=self._run, name="rehastim2-emulator", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        """Stop the thread, close the pty and write the final state file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close_fds()
        self._write_state(force=True)

    def __enter__(self) -> RehaStim2Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_fds(self) -> None:
        with self._lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass  # already closed
            self._master = self._slave = -1

    # --- state for tests ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def mode(self) -> sm.StimulationMode:
        with self._lock:
            return self._mode

    @property
    def channels(self) -> dict[int, ChannelState]:
        """Per-channel output state (a copy), channels 1..8."""
        with self._lock:
            return dict(self._channels)

    @property
    def running_channels(self) -> dict[int, ChannelState]:
        """The channels currently outputting current."""
        with self._lock:
            return {ch: s for ch, s in self._channels.items() if s.running}

    @property
    def main_interval_ms(self) -> float | None:
        """Main stimulation interval of the channel list in force, if any."""
        with self._lock:
            return None if self._config is None else sm.decode_main_interval(self._config["main"])

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def commands(self, cmd: int) -> list[Received]:
        """Received packets with this command number."""
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
    def watchdog_expiries(self) -> int:
        with self._lock:
            return self._watchdog_expiries

    @property
    def inits_sent(self) -> int:
        with self._lock:
            return self._inits_sent

    @property
    def error(self) -> BaseException | None:
        """An exception that ended the emulator thread (a bug in the emulator)."""
        with self._lock:
            return self._error

    def wait_until(self, predicate: Callable[[RehaStim2Emulator], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` is true (re-checked on every state change)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def line_settings(self) -> dict[str, object]:
        """The serial settings the driver put on the pty (a pty forces 8N1 regardless)."""
        iflag, _, cflag, _, ispeed, ospeed, _ = termios.tcgetattr(self._slave)
        return {
            "baudrate": _BAUD_OF.get(ospeed, ospeed),
            "ispeed": _BAUD_OF.get(ispeed, ispeed),
            "two_stop_bits": bool(cflag & termios.CSTOPB),
            "rtscts": bool(cflag & termios.CRTSCTS),
            "xonxoff": bool(iflag & (termios.IXON | termios.IXOFF)),
        }

    def snapshot(self) -> dict[str, object]:
        """The state as plain JSON-able data (what the script writes to ``--state``)."""
        with self._lock:
            received = self._received[-2000:]
            return {
                "path": self.path,
                "pid": os.getpid(),
                "t": time.monotonic() - self._t0,
                "connected": self._connected,
                "mode": self._mode.name.lower(),
                "main_interval_ms": self.main_interval_ms,
                "channels": {str(ch): asdict(s) for ch, s in self._channels.items()},
                "any_running": any(s.running for s in self._channels.values()),
                "received_total": len(self._received),
                "received": [
                    {**asdict(r), "data": r.data.hex(" "), "name": r.name} for r in received
                ],
                "single_pulses": list(self._single_pulses),
                "events": list(self._events),
                "violations": list(self._violations),
                "watchdog_expiries": self._watchdog_expiries,
                "inits_sent": self._inits_sent,
                "silent": self._silent,
                "busy_answers": sum(r.result == _BUSY for r in self._received),
                "t0_monotonic": self._t0,
                "vanished": self._vanished.is_set(),
                "error": None if self._error is None else repr(self._error),
            }

    # --- fault injection ------------------------------------------------------------------------

    def press_emergency_switch(self) -> None:
        """Stop stimulation and send an unsolicited StimulationError -1."""
        self._stimulation_error(-1)

    def electrode_error(self) -> None:
        """Stop stimulation and send an unsolicited StimulationError -2."""
        self._stimulation_error(-2)

    def module_error(self) -> None:
        """Stop stimulation and send an unsolicited StimulationError -3."""
        self._stimulation_error(-3)

    def go_silent(self) -> None:
        """Hang: keep reading (and logging) but answer, process and send nothing."""
        with self._changed:
            self._silent = True
            self._event("silent: stops answering")

    def answer_with(self, result: int, command: str | None = None) -> None:
        """Answer the next command that has an Ack (the next ``command``, say
        ``"StopChannelListMode"``, when given: the driver's mode probe runs beside its
        commands) with ``result`` (not executed if != 0)."""
        with self._lock:
            self._forced_result = (result, command)

    def lose_next(self, n: int = 1) -> None:
        """Lose the next ``n`` packets from the PC on the way (not seen, not answered)."""
        with self._changed:
            self._lose = n
            self._event(f"lose: the next {n} packet(s) from the PC are lost")

    def damage_next(self, n: int = 1) -> None:
        """Damage the next ``n`` packets from the PC on the way (a flipped checksum bit:
        the device answers the command's Ack with -1 and does not execute it)."""
        with self._changed:
            self._damage = n
            self._event(f"damage: the next {n} packet(s) from the PC arrive damaged")

    def answer_busy(self, n: int | None) -> None:
        """Answer the next ``n`` commands that can be busy with -8 (not executed);
        ``None``: every one until ``answer_busy(0)``. StopChannelListMode is never busy
        (its Ack is 0 or -1 only, DOC2 section 4.3)."""
        with self._changed:
            self._busy_left = n
            self._event("busy: every command answers -8 until cleared" if n is None
                        else f"busy: the next {n} command(s) answer -8")

    @property
    def busy_answers(self) -> int:
        """How many commands were answered busy (-8)."""
        with self._lock:
            return sum(r.result == _BUSY for r in self._received)

    def vanish(self, timeout: float = 2.0) -> None:
        """Close the pty (as if the USB cable were pulled); the driver's port fails."""
        with self._lock:
            self._vanish_requested = True
        if not self._vanished.wait(timeout):
            raise TimeoutError("emulator thread did not close the pty")

    def _stimulation_error(self, code: int) -> None:
        with self._changed:
            self._stop_stimulation()
            self._event(f"stimulation error {code}: {sm.stimulation_error_meaning(code)}")
            self._send_unsolicited(sm.Command.STIMULATION_ERROR, bytes((code & 0xFF,)))
            self._changed.notify_all()

    # --- the device thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._changed:
                    if self._vanish_requested:
                        self._event("vanished: pty closed")
                        self._close_fds()
                        self._vanished.set()
                        self._changed.notify_all()
                        break
                    timeout = self._time_to_next_timer(time.monotonic())
                readable, _, _ = select.select([self._master], [], [], timeout)
                data = b""
                if readable:
                    try:
                        data = os.read(self._master, 4096)
                    except BlockingIOError:
                        pass
                with self._changed:
                    now = time.monotonic()
                    for item in self._decoder.feed(data):
                        self._dirty = True
                        self._on_item(item, now)
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

    def _time_to_next_timer(self, now: float) -> float:
        if self._outbox:
            return min(max(self._outbox[0][0] - now, 0.0), _POLL_S)
        if self._silent:
            return _POLL_S
        if not self._connected:
            due = self._next_init_at if self.send_init else now + _POLL_S
        else:
            due = self._last_valid_at + self.watchdog_s
        return min(max(due - now, 0.0), _POLL_S)

    def _on_timers(self, now: float) -> None:
        while self._outbox and self._outbox[0][0] <= now:
            self._write(self._outbox.pop(0)[1])
        if self._silent:
            return
        if not self._connected:
            if self.send_init and now >= self._next_init_at:
                self._last_init_pkt = self._send_unsolicited(
                    sm.Command.INIT, bytes((self.version,))
                )
                self._inits_sent += 1
                self._next_init_at = now + self.init_interval_s
        elif now - self._last_valid_at >= self.watchdog_s:
            self._watchdog_expiries += 1
            self._event(f"watchdog expired: no valid packet for {self.watchdog_s:g} s")
            self._stop_stimulation()
            self._connected = False
            self._next_init_at = now  # Init again at once, then every init_interval_s

    def _on_item(self, item: sm.Packet | sm.FrameError, now: float) -> None:
        junk = isinstance(item, sm.FrameError) and item.kind is sm.FrameErrorKind.JUNK
        if self._lose and not junk:
            self._lose -= 1
            what = item.name if isinstance(item, sm.Packet) else str(item)
            self._event(f"lost on the way (injected): {what} (packet {item.pkt_no})")
            if item.pkt_no is not None and self._expected_pkt is not None:
                # the PC did number it: the gap is the wire's, not a numbering error
                self._expected_pkt = (item.pkt_no + 1) & 0xFF
            return
        if self._damage and isinstance(item, sm.Packet):
            self._damage -= 1
            wire = bytearray(item.encode())
            wire[2] ^= 0x01  # the escaped checksum byte
            item = sm.FrameError(sm.FrameErrorKind.CRC, bytes(wire), item.pkt_no, item.cmd)
        if isinstance(item, sm.FrameError):
            self._event(f"frame error: {item}")
            if self._silent or not self._connected:
                return
            if item.kind in (sm.FrameErrorKind.CRC, sm.FrameErrorKind.LENGTH):
                ack = sm.ACK_OF.get(item.cmd) if item.cmd in set(sm.Command) else None
                if ack is not None:
                    self._send(sm.Packet(item.pkt_no, ack, bytes((-1 & 0xFF,))))
                if item.pkt_no is not None:  # its number was used; it may come again
                    self._resent_pkt, self._expected_pkt = item.pkt_no, (item.pkt_no + 1) & 0xFF
            return
        record = Received(
            now - self._t0,
            item.pkt_no,
            item.cmd,
            item.data,
            canonical=item.stuffed == sm.stuff(bytes((item.pkt_no, item.cmd)) + item.data),
        )
        if self._silent:
            self._received.append(replace(record, note="ignored: silent"))
            return
        if not self._connected:
            self._received.append(self._on_unconnected(record, now))
            return
        self._last_valid_at = now
        resent, self._resent_pkt = self._resent_pkt, None
        if self._expected_pkt is not None and item.pkt_no not in (self._expected_pkt, resent):
            self._violation(
                f"{record.name} has packet number {item.pkt_no}, expected {self._expected_pkt}"
            )
        self._expected_pkt = (item.pkt_no + 1) & 0xFF
        self._received.append(self._on_command(record))

    def _on_unconnected(self, record: Received, now: float) -> Received:
        if record.cmd != sm.Command.INIT_ACK:
            return replace(record, note="ignored: not connected")
        if record.pkt_no != self._last_init_pkt or record.data != b"\x00":
            return replace(
                record,
                note=f"ignored: InitAck must be [{self._last_init_pkt}, 0] "
                f"(the last Init's number, result 0)",
            )
        self._connected = True
        self._last_valid_at = now
        self._expected_pkt = self._resent_pkt = None
        self._event("connected")
        return replace(record, note="connected")

    def _on_command(self, record: Received) -> Received:
        cmd = record.cmd
        if cmd == sm.Command.WATCHDOG:
            if record.data:
                self._violation(f"Watchdog with data {record.data.hex(' ')}")
            return record
        if cmd == sm.Command.INIT_ACK:
            self._violation("InitAck while connected")
            return replace(record, note="ignored: already connected")
        handler = {
            sm.Command.GET_STIMULATION_MODE: self._get_stimulation_mode,
            sm.Command.INIT_CHANNEL_LIST_MODE: self._init_channel_list_mode,
            sm.Command.START_CHANNEL_LIST_MODE: self._start_channel_list_mode,
            sm.Command.STOP_CHANNEL_LIST_MODE: self._stop_channel_list_mode,
            sm.Command.SINGLE_PULSE: self._single_pulse,
        }.get(cmd)
        if handler is None:
            self._send(sm.Packet(record.pkt_no, sm.Command.UNKNOWN_COMMAND, bytes((cmd,))))
            return replace(record, answer="UnknownCommand", note="unknown command")
        ack = sm.ACK_OF[sm.Command(cmd)]
        forced = None
        wanted = self._forced_result
        if wanted is not None and wanted[1] in (None, record.name):
            (forced, _), self._forced_result = wanted, None
        extra, note = b"", ""
        try:
            if forced:
                raise _RefusedError(forced, f"forced result {forced}")
            if cmd in _CAN_BE_BUSY and self._busy_left != 0:
                if self._busy_left is not None:
                    self._busy_left -= 1
                raise _RefusedError(_BUSY, "busy (injected): still processing")
            extra = handler(record.data)
            result = 0
        except _RefusedError as refusal:
            result, note = refusal.result, refusal.note
            extra = b""
        self._send(sm.Packet(record.pkt_no, ack, bytes((result & 0xFF,)) + extra))
        return replace(record, result=result, answer=sm.command_name(ack), note=note)

    # --- commands (each returns the Ack data after the result, or raises _RefusedError) ---

    def _get_stimulation_mode(self, data: bytes) -> bytes:
        if data:
            raise _RefusedError(-2, "GetStimulationMode takes no data")
        return bytes((self._mode,))

    def _init_channel_list_mode(self, data: bytes) -> bytes:
        if self._mode != sm.StimulationMode.START:
            raise _RefusedError(-3, f"InitChannelListMode in mode {self._mode.name.lower()}")
        if len(data) != 7:
            raise _RefusedError(-2, f"InitChannelListMode needs 7 data bytes, got {len(data)}")
        lf, active, lf_channels, ipi, main_msb, main_lsb, execution = data
        main = main_msb << 8 | main_lsb
        modules = bool(active & 0x0F) + bool(active & 0xF0)  # A: channels 1-4, B: 5-8
        min_ipi = round((8.0 * max(modules, 1) - 1.5) * 2)  # 13 (8 ms) or 29 (16 ms)
        problems = [
            f"low frequency factor {lf} > 7" if lf > 7 else "",
            "no active channel" if not active else "",
            "low-frequency channels not all active" if lf_channels & ~active else "",
            f"inter-pulse interval code {ipi} < {min_ipi} (8 ms per stimulation module, "
            f"{modules} used)" if ipi < min_ipi else "",
            f"main interval code {main} ({main * 0.5 + 1} ms) shorter than the inter-pulse "
            f"interval ({ipi * 0.5 + 1.5} ms)" if main and main * 0.5 + 1 < ipi * 0.5 + 1.5
            else "",
            f"main interval code {main} not 0 or 14..2048"
            if main != 0 and not 14 <= main <= 2048
            else "",
            f"channel execution {execution} not 0 or 1" if execution > 1 else "",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise _RefusedError(-2, "; ".join(problems))
        self._config = {"active": active, "ipi": ipi, "main": main, "lf": lf}
        self._mode = sm.StimulationMode.INITIALIZED
        return b""

    def _start_channel_list_mode(self, data: bytes) -> bytes:
        if self._mode == sm.StimulationMode.START or self._config is None:
            raise _RefusedError(-3, "StartChannelListMode before InitChannelListMode")
        active = sm.mask_channels(self._config["active"])
        if len(data) != 4 * len(active):
            raise _RefusedError(
                -2, f"{len(active)} active channels need {4 * len(active)} bytes, got {len(data)}"
            )
        new = {}
        for i, ch in enumerate(active):
            mode, pw_msb, pw_lsb, current = data[4 * i : 4 * i + 4]
            pw = pw_msb << 8 | pw_lsb
            if mode > 2 or pw > 500 or current > 130:
                raise _RefusedError(-2, f"channel {ch}: mode {mode}, {pw} us, {current} mA")
            new[ch] = ChannelState(current, max(pw, 20), mode)  # firmware: pw < 20 -> 20
        main_ms = sm.decode_main_interval(self._config["main"])
        n_pulses = 1 + max(s.pulse_mode for s in new.values())
        ipi_ms = sm.decode_inter_pulse_interval(self._config["ipi"])
        if self._config["main"] and main_ms < n_pulses * ipi_ms:
            raise _RefusedError(-2, f"main interval {main_ms} ms < {n_pulses} x {ipi_ms} ms")
        continuous = self._config["main"] != 0
        for ch, state in new.items():
            self._channels[ch] = replace(state, running=continuous and state.current_ma > 0)
        self._mode = sm.StimulationMode.STARTED
        if not continuous:
            self._event("one-shot channel list executed")
        return b""

    def _stop_channel_list_mode(self, data: bytes) -> bytes:
        if data:
            raise _RefusedError(-2, "StopChannelListMode takes no data")
        self._stop_stimulation()
        return b""

    def _single_pulse(self, data: bytes) -> bytes:
        if self._mode != sm.StimulationMode.START:
            raise _RefusedError(-3, f"SinglePulse in mode {self._mode.name.lower()}")
        if len(data) != 4:
            raise _RefusedError(-2, f"SinglePulse needs 4 data bytes, got {len(data)}")
        channel, pw, current = data[0], data[1] << 8 | data[2], data[3]
        if channel > 7 or pw > 500 or current > 130:
            raise _RefusedError(-2, f"SinglePulse channel index {channel}, {pw} us, {current} mA")
        self._single_pulses.append((channel + 1, max(pw, 20), current))
        return b""

    # --- helpers --------------------------------------------------------------------------------

    def _stop_stimulation(self) -> None:
        self._mode = sm.StimulationMode.START
        self._config = None
        self._channels = {ch: ChannelState() for ch in self._channels}
        self._dirty = True

    def _send_unsolicited(self, cmd: int, data: bytes) -> int:
        pkt_no, self._dev_pkt = self._dev_pkt, (self._dev_pkt + 1) & 0xFF
        self._write(sm.Packet(pkt_no, cmd, data).encode())
        self._dirty = True
        return pkt_no

    def _send(self, packet: sm.Packet) -> None:
        """Answer a command, ``response_delay_s`` after it came (answers keep their order)."""
        if self.response_delay_s <= 0 and not self._outbox:
            self._write(packet.encode())
            return
        due = max(time.monotonic() + self.response_delay_s,
                  self._outbox[-1][0] if self._outbox else 0.0)
        self._outbox.append((due, packet.encode()))

    def _write(self, frame: bytes) -> None:
        if self._silent or self._master < 0:
            return
        try:
            os.write(self._master, frame)
        except BlockingIOError:
            self._event(f"output dropped (nobody reading): {frame.hex(' ')}")
        except OSError as exc:
            self._event(f"write failed: {exc}")

    def _event(self, text: str) -> None:
        self._events.append(f"{time.monotonic() - self._t0:8.3f} {text}")
        self._dirty = True

    def _violation(self, text: str) -> None:
        self._violations.append(text)
        self._event(f"violation: {text}")

    def _write_state(self, force: bool = False) -> None:
        if self.state_path is None:
            return
        now = time.monotonic()
        if not force and (
            not self._dirty or now - self._state_written_at < _STATE_WRITE_INTERVAL_S
        ):
            return
        snapshot = self.snapshot()
        self._dirty, self._state_written_at = False, now
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(snapshot, indent=1))
        os.replace(tmp, self.state_path)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until ``quit`` on stdin, SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.rehastim2", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--state", type=Path, help="JSON state file, rewritten on every change")
    parser.add_argument("--init-interval", type=float, default=INIT_INTERVAL_S)
    parser.add_argument("--watchdog", type=float, default=WATCHDOG_S)
    parser.add_argument("--no-init", action="store_true", help="never send Init (no device)")
    parser.add_argument("--response-delay", type=float, default=0.0,
                        help="seconds from a command to its Ack (device: at most 0.1)")
    args = parser.parse_args(argv)
    emulator = RehaStim2Emulator(
        init_interval_s=args.init_interval,
        watchdog_s=args.watchdog,
        send_init=not args.no_init,
        response_delay_s=args.response_delay,
        state_path=args.state,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    actions: dict[str, Callable[[], object]] = {
        "emergency": emulator.press_emergency_switch,
        "electrode": emulator.electrode_error,
        "module": emulator.module_error,
        "silent": emulator.go_silent,
        "vanish": emulator.vanish,
    }
    print(emulator.start(), flush=True)
    try:
        for line in sys.stdin:
            word, *rest = line.split() or [""]
            if word == "quit":
                return 0
            if word == "answer" and rest:
                emulator.answer_with(int(rest[0]))
            elif word == "busy" and rest:
                emulator.answer_busy(None if rest[0] == "always" else int(rest[0]))
            elif word == "lose" and rest:
                emulator.lose_next(int(rest[0]))
            elif word == "damage" and rest:
                emulator.damage_next(int(rest[0]))
            elif word in actions:
                actions[word]()
            elif word:
                print(
                    f"unknown control {word!r}; use one of {sorted(actions)}, answer N, "
                    "busy N|always, lose N, damage N, quit",
                    file=sys.stderr,
                )
        while True:  # stdin closed: run until a signal
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
