"""Driver for the Hasomed P24 stimulator (ScienceMode4, mid level) on its USB serial port.

Built on the ``science-mode-4`` library (PyPI, MIT; ``pip install 'closedloop[p24]'``,
Python >= 3.11): its packet classes encode and decode every command and acknowledgement,
its :class:`~science_mode_4.protocol.protocol.Protocol` frames them (stuffing, CRC-CCITT,
length) and finds them in the byte stream, its packet number generator numbers them.
The protocol facts, their ranges and the result codes are in
:mod:`closedloop.stim.drivers.sciencemode4`, with their sources (the P24 instructions for use and
Hasomed's ScienceMode4 C library).

What the device does (and what this driver relies on)
-----------------------------------------------------
* Serial port 3,000,000 baud 8N2 with RTS/CTS [IFU table 1]; packets
  ``F0 | length (2 B, always stuffed) | CRC-CCITT (2 B, always stuffed, over the stuffed
  packet data) | packet number (6 bit) + command (10 bit) | data | 0F``, stuffing
  ``81, byte ^ 55`` for F0, 0F and 81; the device echoes the packet number (0-63) in its
  answer, which is the command number + 1 [IFU tables 2-3].
* Mid level: ``Ml_init`` (stop all channels on any channel's error: chosen here), then
  ``Ml_update`` with every enabled channel's pulse and period (per channel: the P24 runs
  each channel at its own frequency), ``Ml_get_current_data`` (per-channel "stimulating"
  bits and error states: electrode, pulse timeout, low current), ``Ml_stop`` (high voltage
  off) [IFU tables 19-26]. A channel not enabled in an ``Ml_update`` stops.
* "The stimulation has an automatic timeout of 2 s": without an ``Ml_update`` or an
  ``Ml_get_current_data`` for 2 s the device stops stimulating [IFU].
* Errors are not sent unsolicited: a command is answered with its acknowledgement (its
  first byte the result code), ``General_error`` or ``Unknown_cmd``; channel errors are
  only seen by asking ``Ml_get_current_data`` [IFU troubleshooting].
* The P24 has no battery and no emergency switch: it is powered by its USB cable, so a
  pulled cable stops it, and the stop button is closedloop's (or the cable) [IFU].

How it works
------------
* :meth:`P24.open` opens the port **exclusively** (a second session on the same port is
  refused with a clear message), starts the driver thread, which runs an asyncio event
  loop, and does the handshake there: ``GetStimStatus`` (repeated until ``init_timeout``:
  the P24 says nothing by itself), a stop of whatever level an earlier program left
  initialised, ``GetDeviceId`` and ``GetExtendedVersion``.
* Every call from another thread (:meth:`apply`, :meth:`stop_all`) is handed to the event
  loop with ``asyncio.run_coroutine_threadsafe`` and waited for with a timeout; the loop
  runs one command at a time. Each command waits ``response_timeout`` for its
  acknowledgement (matched by command and packet number), after the time the device
  needs to execute it (``Ml_init`` switches the 150 V supply on: 2 x 40 ms; ``Ml_stop``
  off: 40 ms [CLIB]): no answer -> :class:`~closedloop.errors.DeviceLostError`; a
  non-zero result, ``General_error`` or ``Unknown_cmd`` -> :class:`P24Error` (a
  :class:`~closedloop.errors.StimulatorError`) carrying the code, the command and the
  channel, whose message says what the code means and what to check.
* A transfer error (result 1, in the acknowledgement or a ``General_error``: the packet
  reached the device damaged and was not executed) sends the command again as a new
  packet, up to three times in all. An ``Ml_stop`` that gets no answer at all (lost on
  the way) is sent once more before the driver gives up: a stop is safe to repeat, and a
  lost one would leave the device stimulating until its 2 s timeout.
* The port is read by an event-loop reader callback, so a vanished USB device (the read
  fails at once) is found within milliseconds, and acknowledgements are handled as they
  arrive (no polling).
* The keep-alive runs in the driver thread, never in the caller's: while the mid level
  is initialised, ``Ml_get_current_data`` every ``keepalive_s`` (default 0.25 s, at most
  1 s: the device stops after 2 s), which also reads every channel's error state and
  whether it stimulates; otherwise ``GetStimStatus``, which finds a lost device while
  idle. An electrode error (or another channel error) -> :class:`P24Error` naming the
  channel, its muscle and cable, and what to check; a channel the device stopped on its
  own (its timeout) or one it runs that should be off -> :class:`P24Error`. After any
  fault the keep-alives stop, so even a driver that is never told to stop leaves the
  device stopping itself within 2 s.
* :meth:`apply` sends ``Ml_init`` when something is first switched on, then one
  ``Ml_update`` with every channel that is on (its own current, pulse width and period);
  ``Ml_stop`` when everything is off. Ramps and plateaus are the guard-approved commands
  themselves: the device's own ramp is 0. The pulse is biphasic and charge balanced: +I
  for the pulse width, 100 us pause, -I for the pulse width (Hasomed's example).
* Levels are sent as the device runs them: current rounded down to 0.5 mA, pulse width
  down to 1 us, the period up to 0.5 ms (:meth:`delivered_hz` says the rate the device
  really pulses at: 35 Hz -> 29 ms -> 34.48 Hz). Values the device would refuse or
  change raise :class:`~closedloop.errors.StimulatorError` before anything is sent.
* Faults the driver thread sees are stored, raised once by :meth:`check`, and make
  :meth:`apply` refuse until the driver is closed and opened again.

Where science-mode-4 (0.0.23) falls short, and what this driver does instead
----------------------------------------------------------------------------
* ``MidLevelChannelConfiguration`` takes whole milliseconds only (a 28.5 ms period raises
  ``TypeError``), and writes the period into its 15-bit field unchecked: 16384 ms goes
  out as 0 ms and 20000 ms as 3616 ms, silently. The driver codes the period itself in
  0.5 ms steps (the field's documented transfer function) and refuses any period the
  field cannot hold.
* ``ChannelPoint`` rounds the current to the *nearest* 0.5 mA (20.3 mA goes out as
  20.5 mA, more than approved): the driver rounds down first.
* ``ProtocolHelper.send_packet_and_wait`` clears the input buffer before every command,
  polls for the answer every 10 ms and waits 5 s; ``General_error`` and ``Unknown_cmd``
  become a ``ProtocolError`` whose code is only in its text. The driver runs its own
  transaction on the library's packets: event-driven, ``response_timeout``, codes kept.
* ``PacketBuffer`` drops too many bytes after junk before a packet (it slices at
  ``start + stop + 1``), and raises ``ValueError`` on an unknown command number without
  consuming it; it never checks the length field. The driver keeps its own buffer, uses
  ``Protocol.find_packet_in_buffer`` / ``extract_packet_data`` and checks the length.
* ``Ml_get_current_data_ack`` reads channel states 0-3 only and leaves any other value
  as "no error": the driver reads the four state bytes itself.
* ``SerialPortConnection`` does not open the port exclusively, and after a read error it
  sleeps 3 s, reopens the port and *re-sends the last packet* (possibly a stimulation
  update): the driver uses pyserial itself and treats a failed read as a lost device.
* Importing the library logs its version to stderr through its own console handler:
  the driver filters its records below WARNING.
* What the library validates: a point's current (-150..150 mA, where the P24 delivers at
  most 130) and duration (0..4095 us), at most 16 points, a ramp of 0..15, a period of
  0..131068 ms (then wrapped, above). Not whether a pulse fits its period, nor the total
  pulse time of all channels: :mod:`closedloop.stim.drivers.sciencemode4` checks those.
* Its ``NullConnection`` answers nothing (every command would wait out the 5 s), so the
  tests use a strict emulator of the device on a pseudo-terminal instead
  (``tests/emulators/p24.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import functools
import logging
import math
import os
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import serial

from closedloop.errors import ConfigError, DeviceError, DeviceLostError, StimulatorError
from closedloop.stim.base import ChannelOutput, Stimulator, StimulatorContext
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers import sciencemode4 as sm4

logger = logging.getLogger(__name__)

#: Longest packet, stuffing included [IFU]: more bytes without a packet are garbage.
MAX_PACKET_BYTES = 1200
_INSTALL = ("the P24 driver needs the science-mode-4 library (Python 3.11 or newer): "
            "pip install 'closedloop[p24]'")
#: Command numbers of the two answers that are not "command + 1" [IFU table 4].
_GENERAL_ERROR, _UNKNOWN_COMMAND = 66, 67


class P24Error(StimulatorError):
    """The P24 answered a result code other than 0, or reported a channel error.

    Attributes
    ----------
    code : int
        The ScienceMode4 result code (10 electrode error, 7 not initialised, ...; see
        :data:`closedloop.stim.drivers.sciencemode4.RESULTS`); 0 for a state the device reported
        without an error code (a channel it stopped on its own), -1 for an unknown
        channel state.
    command : str
        The command it answered (``"Ml_update"``), or ``"Ml_get_current_data"`` for a
        channel error found by the keep-alive.
    channel : int or None
        The 1-based channel concerned, for channel errors.
    """

    def __init__(self, message: str, *, code: int, command: str,
                 channel: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.command = command
        self.channel = channel


class _DriverStuckError(DeviceLostError):
    """The driver thread did not finish a call in time."""


class _NoAnswerError(DeviceLostError):
    """No acknowledgement in time (the port itself still works)."""


@functools.cache
def _library() -> types.SimpleNamespace:
    """Import science-mode-4 (once), quiet its console logging, check its framing.

    Raises
    ------
    ConfigError
        If it is not installed (or this Python is older than 3.11), or if it frames a
        packet differently from the protocol (an incompatible version).
    """
    lib_logger = logging.getLogger("science_mode_4")
    if not any(isinstance(f, _BelowWarning) for f in lib_logger.filters):
        lib_logger.addFilter(_BelowWarning())  # before the import, which logs its version
    try:
        from science_mode_4.general.general_device_id import PacketGeneralGetDeviceId
        from science_mode_4.general.general_stim_status import PacketGeneralGetStimStatus
        from science_mode_4.general.general_version import PacketGeneralGetExtendedVersion
        from science_mode_4.low_level.low_level_stop import PacketLowLevelStop
        from science_mode_4.mid_level.mid_level_current_data import PacketMidLevelGetCurrentData
        from science_mode_4.mid_level.mid_level_init import PacketMidLevelInit
        from science_mode_4.mid_level.mid_level_stop import PacketMidLevelStop
        from science_mode_4.mid_level.mid_level_types import MidLevelChannelConfiguration
        from science_mode_4.mid_level.mid_level_update import PacketMidLevelUpdate
        from science_mode_4.protocol.channel_point import ChannelPoint
        from science_mode_4.protocol.packet_factory import PacketFactory
        from science_mode_4.protocol.packet_number_generator import PacketNumberGenerator
        from science_mode_4.protocol.protocol import Protocol
    except ImportError as exc:
        raise ConfigError(f"{_INSTALL} ({exc})") from exc

    class MidLevelChannel(MidLevelChannelConfiguration):
        """One enabled channel of an Ml_update, with the period coded in 0.5 ms steps
        (the library takes whole ms and wraps the 15-bit field; see the module docstring)."""

        def __init__(self, pulse: sm4.Pulse) -> None:
            super().__init__(True, 0, 0, [ChannelPoint(t, i) for t, i in pulse.points])
            self.period_code = sm4.period_code(pulse.period_ms)

        def get_data(self) -> bytes:
            # [CLIB smpt_ml_packet_utils.c] points-1 | ramp; period code << 1 (15 bits,
            # big endian) | accuracy flag 0 (2 x ms); then 4 bytes per point.
            code = self.period_code << 1
            head = bytes((((len(self.points) - 1) << 4) | (self.ramp & 0x0F), code >> 8,
                          code & 0xFE))
            return head + b"".join(p.get_data() for p in self.points)

    lib = types.SimpleNamespace(
        Protocol=Protocol, PacketFactory=PacketFactory,
        PacketNumberGenerator=PacketNumberGenerator, MidLevelChannel=MidLevelChannel,
        Init=PacketMidLevelInit, Update=PacketMidLevelUpdate, Stop=PacketMidLevelStop,
        GetCurrentData=PacketMidLevelGetCurrentData, GetStimStatus=PacketGeneralGetStimStatus,
        GetDeviceId=PacketGeneralGetDeviceId, GetVersion=PacketGeneralGetExtendedVersion,
        LowLevelStop=PacketLowLevelStop,
    )
    _self_check(lib)
    return lib


class _BelowWarning(logging.Filter):
    """Drop science-mode-4's INFO and DEBUG records (its version line, one per command)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _self_check(lib: types.SimpleNamespace) -> None:
    """Refuse a library version whose bytes differ from the protocol on two known packets:
    ``Ml_get_current_data`` (selection 4) as packet 5, and a 20 mA / 200 us point."""
    probe = lib.GetCurrentData()
    probe.number = 5
    frame = lib.Protocol.packet_to_bytes(probe)
    # F0 | length 13 | CRC-CCITT 0x1505 of "14 24 04" | packet 5, command 36 | 4 | 0F
    expected = bytes.fromhex("f0 81 55 81 58 81 40 81 50 14 24 04 0f")
    point = lib.MidLevelChannel(sm4.Pulse(20.0, 200, 20.0)).get_data()
    # ramp 0 | 3 points; period 20 ms -> code 40 << 1; +20 mA, 100 us pause, -20 mA
    expected_point = bytes.fromhex("20 00 50 0c 85 50 00 06 44 b0 00 0c 84 10 00")
    if frame != expected or point != expected_point:
        raise ConfigError(
            "this science-mode-4 version encodes packets differently from the ScienceMode4 "
            f"protocol ({frame.hex(' ')} / {point.hex(' ')}); closedloop supports "
            "science-mode-4 0.0.23: pip install 'closedloop[p24]'"
        )


@dataclass
class _Pending:
    """The one command waiting for its acknowledgement."""

    key: tuple[int, int]  # (acknowledgement command, packet number)
    name: str
    future: asyncio.Future


@dataclass(frozen=True)
class _Answer:
    ack: Any  # the library's PacketAck
    data: bytes  # its unstuffed command data
    wall: float  # time.perf_counter() when it was decoded


class P24(Stimulator):
    """Hasomed P24 on its USB serial port, in the ScienceMode4 mid level.

    Parameters
    ----------
    port : str
        Serial port (``/dev/ttyACM0``, ``COM3``, or a pty path for the emulator).
    channels : sequence of int
        The channels (1-based, 1..8) this session may use.
    response_timeout : float
        Seconds to wait for each acknowledgement.
    keepalive_s : float
        Interval of ``Ml_get_current_data`` (or ``GetStimStatus`` while idle), at most 1 s
        (the device stops stimulating after 2 s without one); it also bounds how late a
        channel error is found.
    init_timeout : float
        Seconds :meth:`open` keeps asking ``GetStimStatus`` before giving up.
    write_timeout : float
        Seconds a write to the port may block before the device counts as lost.
    history : int
        How many acknowledgement latencies to keep (:attr:`ack_latencies_ms`).

    Raises
    ------
    ConfigError
        If an argument is out of range, or science-mode-4 is not installed.
    """

    n_channels = sm4.N_CHANNELS
    per_channel_frequency = True

    kind = "p24"
    spec_form = "p24:PORT  (e.g. p24:/dev/ttyACM0)"
    label = "the P24"

    @classmethod
    def from_spec(cls, spec: str, arg: str, context: StimulatorContext) -> P24:
        """The stimulator of a ``p24:PORT`` spec."""
        if not arg:
            raise ConfigError(f"stimulator spec {spec!r}: give the serial port, e.g. "
                              "p24:/dev/ttyACM0")
        return cls(arg, channels=context.channels)

    def __init__(
        self,
        port: str,
        *,
        channels: Sequence[int] = (1, 2),
        response_timeout: float = 0.1,
        keepalive_s: float = 0.25,
        init_timeout: float = 2.0,
        write_timeout: float = 0.5,
        history: int = 4096,
    ) -> None:
        super().__init__()
        chans = tuple(channels)
        if (not chans or len(set(chans)) != len(chans)
                or not all(isinstance(c, int) and 1 <= c <= sm4.N_CHANNELS for c in chans)):
            raise ConfigError(f"p24 channels {list(channels)!r}: need distinct channel numbers "
                              f"1..{sm4.N_CHANNELS}")
        for name, value, low, high in (
            ("response_timeout", response_timeout, 0.0, 10.0),
            ("keepalive_s", keepalive_s, 0.0, 1.0),
            ("init_timeout", init_timeout, 0.0, 60.0),
            ("write_timeout", write_timeout, 0.0, 10.0),
        ):
            if not (math.isfinite(value) and low < value <= high):
                raise ConfigError(f"p24 {name}={value!r}: must be in ({low:g}, {high:g}] s")
        if history < 0:
            raise ConfigError(f"p24 history={history!r}: must be >= 0")
        self._lib = _library()
        self.port = port
        self.channels: tuple[int, ...] = tuple(sorted(chans))
        self.response_timeout = float(response_timeout)
        self.keepalive_s = float(keepalive_s)
        self.init_timeout = float(init_timeout)
        self.write_timeout = float(write_timeout)
        #: What the device said in the handshake (None before :meth:`open`).
        self.device_id: str | None = None
        self.firmware_version: str | None = None
        self.science_mode_version: str | None = None

        self._serial: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._op_lock: asyncio.Lock | None = None  # one operation at a time (loop thread)
        self._keepalive: asyncio.Task | None = None
        self._reader_fd: int | None = None
        self._poller: asyncio.Task | None = None
        self._factory = self._lib.PacketFactory()
        self._numbers = self._lib.PacketNumberGenerator()
        self._rx = bytearray()
        self._pending: _Pending | None = None
        self._mid = False  # mid level initialised by this driver (loop thread)
        self._last_probe = 0.0
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()  # outputs, faults, latencies
        self._fault: BaseException | None = None
        self._unreported: deque[BaseException] = deque()
        self._unmatched: deque[tuple[int, int]] = deque(maxlen=10)
        self._latencies: deque[tuple[str, float]] = deque(maxlen=history)
        self._muscles: dict[int, str] = {}
        self._atexit_hook = functools.partial(_stop_at_exit, weakref.ref(self))
        self._pulses: dict[int, sm4.Pulse | None] = {}  # what the device runs, by channel
        self._set_pulses({})

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Open the port exclusively, start the driver thread, do the handshake.

        Raises
        ------
        DeviceError
            If the port is in use by another program.
        DeviceLostError
            If the port cannot be opened or the device does not answer.
        P24Error
            If the device refuses a command of the handshake.
        """
        if self.is_open:
            return
        self._reset_session_state()
        self._serial = self._open_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"p24 {self.port}",
                                        daemon=True)
        self._thread.start()
        try:
            budget = self.init_timeout + 4 * self.response_timeout + self.write_timeout + 1.0
            self._call(self._start(), budget, "the handshake")
            atexit.register(self._atexit_hook)
            super().open()
        except BaseException:
            self._shutdown()
            raise

    def close(self) -> None:
        """Stop all channels, stop the driver thread and close the port (idempotent).

        Raises whatever :meth:`stop_all` raised, after everything has been shut down.
        """
        try:
            super().close()
        finally:
            self._shutdown()

    def _open_port(self) -> serial.Serial:
        try:
            return serial.Serial(
                port=self.port, baudrate=sm4.BAUDRATE, bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_TWO, rtscts=True,
                timeout=0, write_timeout=self.write_timeout, exclusive=True,
            )
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            if getattr(exc, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK) or (
                    "exclusively lock" in str(exc)):
                raise DeviceError(
                    f"the P24 port {self.port} is in use by another program (another "
                    "closedloop session?): a stimulator takes commands from one program "
                    "only. Close the other program first; nothing was sent."
                ) from exc
            raise DeviceLostError(
                f"cannot open the P24 serial port {self.port!r}: {exc}. Check that the P24 "
                "is plugged in (its lamp lights), the port name is right (Linux: "
                "/dev/ttyACM*, Windows: COMn) and you may use it (Linux: the dialout group)."
            ) from exc

    def _reset_session_state(self) -> None:
        self._rx = bytearray()
        self._pending = None
        self._mid = False
        self._numbers = self._lib.PacketNumberGenerator()
        self.device_id = self.firmware_version = self.science_mode_version = None
        with self._state_lock:
            self._fault = None
            self._unreported.clear()
            self._unmatched.clear()
            self._set_pulses({})

    def _run_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _shutdown(self) -> None:
        atexit.unregister(self._atexit_hook)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                self._call(self._detach(), 1.0, "shutting down")
            except Exception as exc:  # noqa: BLE001 - closing anyway
                logger.warning("P24 on %s: shutting the driver thread down: %s", self.port, exc)
            loop.call_soon_threadsafe(loop.stop)
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
                if thread.is_alive():
                    logger.error("P24 driver thread on %s did not stop within 2 s", self.port)
        self._loop = self._thread = None
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except OSError as exc:  # the port may already be gone
                logger.warning("closing P24 port %s: %s", self.port, exc)

    async def _detach(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        self._stop_reading()

    # --- handing work to the driver thread --------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float, what: str) -> Any:
        """Run ``coro`` on the driver's event loop and wait at most ``timeout`` seconds."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise DeviceLostError(f"the P24 driver on {self.port} is not running ({what})")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("P24 driver: a blocking call from its own thread")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise _DriverStuckError(
                f"the P24 driver on {self.port} did not finish {what} within {timeout:g} s"
            ) from None
        except concurrent.futures.CancelledError:
            raise DeviceLostError(f"the P24 driver on {self.port} stopped during {what}") from None

    # --- public commands -----------------------------------------------------------------------

    def apply(self, commands: Sequence[StimCommand]) -> None:
        """Set the listed channels (each with its own current, pulse width and frequency);
        other channels keep their level.

        Raises
        ------
        StimulatorError
            If a value is out of the device's range or a channel is not configured
            (nothing is sent), the device refuses a command (:class:`P24Error`), or a
            fault was seen.
        DeviceLostError
            If the device does not answer or the port is gone.
        """
        if not self.is_open:
            raise StimulatorError("P24.apply() on a driver that is not open")
        self._raise_fault()
        levels: dict[int, sm4.Pulse | None] = {}
        for cmd in commands:  # everything is checked before anything is sent
            if cmd.channel not in self.channels:
                raise StimulatorError(
                    f"channel {cmd.channel} ({cmd.muscle}) is not one of the P24 channels "
                    f"configured for this session {self.channels}")
            levels[cmd.channel] = sm4.quantise(cmd.channel, cmd.current_ma,
                                               cmd.pulse_width_us, cmd.frequency_hz)
        with self._state_lock:
            for cmd in commands:
                self._muscles[cmd.channel] = cmd.muscle
            new = dict(self._pulses)
        new.update(levels)
        sm4.check_duty({ch: p for ch, p in new.items() if p is not None})
        budget = 2 * sm4.TRANSFER_ATTEMPTS * self._longest_wait_s + self.write_timeout + 0.2
        self._call(self._apply(new), budget, "a stimulation command")

    def stop_all(self) -> None:
        """Send ``Ml_stop``, wait for its acknowledgement, and mark every channel off.

        Tries even when a fault is pending; does nothing on a closed driver. Raises
        (:class:`~closedloop.errors.DeviceLostError` or
        :class:`~closedloop.errors.StimulatorError`) only after marking all channels off,
        when the device could not be told or did not confirm; the keep-alive then stops,
        so the P24 stops itself 2 s after the last one.
        """
        if self._serial is None or self._loop is None:
            with self._state_lock:
                self._set_pulses({})
            return
        error: BaseException | None = None
        budget = 2 * sm4.TRANSFER_ATTEMPTS * self._longest_wait_s + self.write_timeout + 0.5
        try:
            self._call(self._stop(), budget, "Ml_stop")
        except _DriverStuckError as exc:  # the driver thread is stuck: send it anyway
            error = self._stop_unconfirmed(exc)
        except (StimulatorError, DeviceLostError) as exc:
            error = exc
        with self._state_lock:
            self._set_pulses({})
            if error is not None and self._fault is None:
                self._fault = error  # no more keep-alives: the P24 stops itself in 2 s
        if error is not None:
            raise error

    def _stop_unconfirmed(self, cause: BaseException) -> BaseException:
        packet = self._lib.Stop()
        packet.number = self._numbers.get_next_number()
        try:
            self._write(self._lib.Protocol.packet_to_bytes(packet))
        except DeviceLostError as exc:
            return exc
        return DeviceLostError(f"{cause}; Ml_stop was sent but not confirmed")

    def check(self) -> None:
        """Raise the next fault the driver thread has seen and not yet reported."""
        with self._state_lock:
            exc = self._unreported.popleft() if self._unreported else None
        if exc is not None:
            raise exc

    def delivered_hz(self, frequency_hz: float) -> float:
        """The rate the device pulses at: the period rounded up to 0.5 ms
        (35 Hz -> 29 ms -> 34.48 Hz). A rate it cannot run is returned as asked
        (:meth:`apply` refuses it)."""
        try:
            return 1000.0 / sm4.period_ms(frequency_hz)
        except StimulatorError:
            return frequency_hz

    def stim_status(self) -> int:
        """Ask the device's stimulation status (``sciencemode4.STIM_STATUS``: 0 none,
        2 mid level initialised, 3 mid level running)."""
        if not self.is_open:
            raise StimulatorError("P24.stim_status() on a driver that is not open")
        return self._call(self._locked(self._get_stim_status()), 3 * self.response_timeout
                          + 0.5, "GetStimStatus")

    @property
    def _longest_wait_s(self) -> float:
        """The longest one command waits for its answer (execution + response time)."""
        return self.response_timeout + max(sm4.EXECUTION_S.values())

    @property
    def ack_latencies_ms(self) -> list[tuple[str, float]]:
        """(command, ms from the write to its acknowledgement) of recent commands."""
        with self._state_lock:
            return list(self._latencies)

    # --- the driver thread: operations ------------------------------------------------------

    async def _start(self) -> None:
        self._op_lock = asyncio.Lock()
        ser = self._serial
        assert ser is not None
        ser.reset_input_buffer()  # stale bytes from an earlier session
        self._start_reading()
        async with self._op_lock:
            status = await self._first_contact()
            if status in (2, 3):  # an earlier program left the mid level on
                await self._ml_stop()
            elif status == 1:
                ack = await self._transact(self._lib.LowLevelStop(), "Ll_stop")
                self._check_result(ack, "Ll_stop")
            ans = await self._transact(self._lib.GetDeviceId(), "GetDeviceId")
            self._check_result(ans, "GetDeviceId")
            self.device_id = ans.ack.device_id
            ans = await self._transact(self._lib.GetVersion(), "GetExtendedVersion")
            self.firmware_version = ans.ack.firmware_version
            self.science_mode_version = ans.ack.science_mode_version
        self._raise_fault()  # garbage during the handshake: not a P24 we can trust
        self._last_probe = time.monotonic()
        self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())

    async def _first_contact(self) -> int:
        """Ask GetStimStatus until the device answers or ``init_timeout`` passes."""
        deadline = time.monotonic() + self.init_timeout
        while True:
            try:
                return await self._get_stim_status(record=False)
            except DeviceLostError:
                if time.monotonic() >= deadline:
                    break
        heard = ""
        with self._state_lock:
            fault = self._fault
        if fault is not None:
            heard = f" It received data that is not a P24 answer ({fault}): is this port " \
                    "another device?"
        raise DeviceLostError(
            f"no P24 found on {self.port}: no answer to GetStimStatus within "
            f"{self.init_timeout:g} s. Check that the P24 is plugged in (its lamp lights "
            f"green), its USB cable is connected and {self.port} is its port.{heard}")

    async def _locked(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._op_lock is not None
        async with self._op_lock:
            return await coro

    async def _apply(self, new: dict[int, sm4.Pulse | None]) -> None:
        assert self._op_lock is not None
        async with self._op_lock:
            self._raise_fault()
            on = {ch: p for ch, p in new.items() if p is not None}
            if not on:
                if self._mid or self.any_on:
                    await self._ml_stop()
                return
            with self._state_lock:
                unchanged = new == self._pulses
            if unchanged and self._mid:
                return  # nothing changes
            if not self._mid:
                init = self._lib.Init()
                init.do_stop_on_all_errors = True  # any channel's error stops every channel
                self._check_result(await self._transact(init, "Ml_init"), "Ml_init")
                self._mid = True
            update = self._lib.Update()
            update.channel_configuration = [
                self._lib.MidLevelChannel(on[ch]) if ch in on else None
                for ch in range(1, sm4.N_CHANNELS + 1)
            ]
            self._check_result(await self._transact(update, "Ml_update"), "Ml_update")
            self._commit(new)

    async def _stop(self) -> None:
        """Ml_stop, unless the device is known to be stopped (its last Ml_stop was
        acknowledged and nothing was started or went wrong since)."""
        assert self._op_lock is not None
        async with self._op_lock:
            with self._state_lock:
                known_idle = not self._mid and self._fault is None and not any(
                    p is not None for p in self._pulses.values())
            if not known_idle:
                await self._ml_stop()

    async def _ml_stop(self) -> None:
        """Ml_stop, sent once more if it gets no answer; "not initialised" (7) also
        means nothing runs."""
        try:
            ans = await self._transact(self._lib.Stop(), "Ml_stop")
        except _NoAnswerError as exc:
            # a stop lost on the way must not leave the device stimulating until its 2 s
            # timeout; sending it again is safe (a second one answers 0 or 7)
            logger.warning("P24 on %s: %s; sending Ml_stop again", self.port, exc)
            ans = await self._transact(self._lib.Stop(), "Ml_stop")
        if int(ans.ack.result_error) not in (0, 7):
            self._check_result(ans, "Ml_stop")
        self._mid = False
        with self._state_lock:
            self._set_pulses({})

    async def _get_stim_status(self, record: bool = True) -> int:
        ans = await self._transact(self._lib.GetStimStatus(), "GetStimStatus", record=record)
        if not ans.ack.successful:
            raise P24Error(f"the P24 on {self.port} answered GetStimStatus with "
                           f"{ans.data[:1].hex()} (transfer error)", code=1,
                           command="GetStimStatus")
        return int(ans.ack.stim_status)

    async def _keep_alive(self) -> None:
        """Ml_get_current_data (mid level) or GetStimStatus (idle) every ``keepalive_s``,
        never while another command is outstanding; stops at the first fault."""
        assert self._op_lock is not None
        while True:
            await asyncio.sleep(min(0.02, self.keepalive_s / 4))
            with self._state_lock:
                if self._fault is not None:
                    return  # no more keep-alives: the device stops itself within 2 s
            if time.monotonic() - self._last_probe < self.keepalive_s or self._op_lock.locked():
                continue
            async with self._op_lock:
                self._last_probe = time.monotonic()
                try:
                    if self._mid:
                        await self._current_data()
                    else:
                        status = await self._get_stim_status()
                        if status == 3:
                            raise P24Error(f"the P24 on {self.port} reports its mid level "
                                           "running while every channel should be off",
                                           code=0, command="GetStimStatus")
                except (DeviceLostError, StimulatorError) as exc:
                    self._record_fault(exc, outputs_off=False)

    async def _current_data(self) -> None:
        """Ml_get_current_data: every channel's error state and whether it stimulates."""
        packet = self._lib.GetCurrentData()
        ans = await self._transact(packet, "Ml_get_current_data")
        self._check_result(ans, "Ml_get_current_data")
        data = ans.data
        if len(data) < 7 or data[1] != sm4.DATA_SELECTION_ALL_CHANNELS:
            raise P24Error(f"malformed Ml_get_current_data_ack from the P24 on {self.port}: "
                           f"{data.hex(' ')}", code=2, command="Ml_get_current_data")
        active = {ch for ch in range(1, 9) if data[2] >> (ch - 1) & 1}
        # channel 1 in the low nibble of the first state byte, channel 2 in its high one
        states = {ch: (data[3 + (ch - 1) // 2] >> (4 * ((ch - 1) % 2))) & 0x0F
                  for ch in range(1, 9)}
        with self._state_lock:
            expected = {ch for ch, p in self._pulses.items() if p is not None}
            if expected - active:  # the device stopped those
                self._set_pulses({ch: p for ch, p in self._pulses.items() if ch in active})
        errors = [(ch, s) for ch, s in states.items() if s]
        if errors:
            ch, state = errors[0]
            what = "; ".join(self._channel_error_text(c, s) for c, s in errors)
            stopped = "The P24 stopped every channel" if not active else \
                f"The P24 still runs channel(s) {sorted(active)}: closedloop stops them"
            raise P24Error(f"{what}. {stopped}.", code=sm4.CHANNEL_STATE_RESULT.get(state, -1),
                           command="Ml_get_current_data", channel=ch)
        if expected - active:
            lost = sorted(expected - active)
            raise P24Error(
                f"the P24 on {self.port} stopped channel(s) {lost} on its own (it reports them "
                "not stimulating, without a channel error): did it miss its 2 s keep-alive "
                "or restart? Check the USB cable and port", code=0,
                command="Ml_get_current_data", channel=lost[0])
        if active - expected:
            extra = sorted(active - expected)
            raise P24Error(f"the P24 on {self.port} reports channel(s) {extra} stimulating, "
                           "which should be off", code=0, command="Ml_get_current_data",
                           channel=extra[0])

    def _channel_error_text(self, channel: int, state: int) -> str:
        muscle = self._muscles.get(channel)
        where = f"channel {channel} ({muscle + ', ' if muscle else ''}{sm4.cable(channel)})"
        code = sm4.CHANNEL_STATE_RESULT.get(state)
        if code is None:
            return f"the P24 reports an unknown error state {state} on {where}"
        return f"P24 {where}: {sm4.result_meaning(code)} (result {code})"

    # --- the driver thread: one command on the wire -------------------------------------------

    async def _transact(self, packet: Any, name: str, *, record: bool = True) -> _Answer:
        """Send one command and return its acknowledgement; a transfer error (result 1 in
        it, or General_error 1: not executed) sends it again as a new packet, up to
        :data:`~closedloop.stim.drivers.sciencemode4.TRANSFER_ATTEMPTS` sends.

        Raises as :meth:`_exchange`; after the last attempt a transfer error is returned
        (acknowledgement) or raised (General_error) as it came.
        """
        for attempt in range(1, sm4.TRANSFER_ATTEMPTS + 1):
            try:
                answer = await self._exchange(packet, name, record=record)
            except P24Error as exc:
                if exc.code != sm4.RESULT_TRANSFER_ERROR or attempt == sm4.TRANSFER_ATTEMPTS:
                    raise
            else:
                if (answer.data[:1] != bytes((sm4.RESULT_TRANSFER_ERROR,))
                        or attempt == sm4.TRANSFER_ATTEMPTS):
                    return answer
            logger.warning("P24 on %s: %s arrived damaged (transfer error); sending it again",
                           self.port, name)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _exchange(self, packet: Any, name: str, *, record: bool = True) -> _Answer:
        """Number, frame and write one packet; return its acknowledgement.

        Waits ``response_timeout`` after the command's execution time
        (:data:`~closedloop.stim.drivers.sciencemode4.EXECUTION_S`). Raises
        DeviceLostError when the write fails or no answer comes in time (recorded as a
        fault unless ``record`` is False), and P24Error for General_error / Unknown_cmd.
        """
        loop = asyncio.get_running_loop()
        wait_s = self.response_timeout + sm4.EXECUTION_S.get(name, 0.0)
        packet.number = self._numbers.get_next_number()
        frame = self._lib.Protocol.packet_to_bytes(packet)
        pending = _Pending((int(packet.command) + 1, packet.number), name, loop.create_future())
        self._pending = pending
        try:
            try:
                sent = self._write(frame)
            except DeviceLostError as exc:
                self._pending = None  # raised here: the future must not carry it too
                if record:
                    self._record_fault(exc, outputs_off=True, report=False)
                raise
            try:
                answer = await asyncio.wait_for(pending.future, wait_s)
            except asyncio.TimeoutError:
                unmatched = list(self._unmatched)
                seen = f"; answers it could not match: {unmatched}" if unmatched else ""
                lost = _NoAnswerError(
                    f"the P24 on {self.port} did not answer {name} (packet {packet.number}) "
                    f"within {wait_s * 1000:.0f} ms{seen}. Check that it is "
                    "plugged in and its lamp lights; it stops by itself 2 s after the last "
                    "keep-alive.")
                if record:
                    self._record_fault(lost, outputs_off=False, report=False)
                raise lost from None
        finally:
            self._pending = None
            if not pending.future.done():
                pending.future.cancel()
            elif not pending.future.cancelled():
                pending.future.exception()  # seen (asyncio would log it from this thread)
        with self._state_lock:
            self._latencies.append((name, 1000.0 * (answer.wall - sent)))
        return answer

    def _check_result(self, answer: _Answer, name: str) -> None:
        code = int(answer.ack.result_error)
        if code != 0:
            raise P24Error(f"the P24 on {self.port} refused {name}: result {code}, "
                           f"{sm4.result_meaning(code)}", code=code, command=name)

    def _write(self, frame: bytes) -> float:
        """Write a whole frame (from any thread); the time just after it was written."""
        with self._write_lock:
            ser = self._serial
            try:
                if ser is None:
                    raise OSError("port is closed")
                ser.write(frame)
            except OSError as exc:  # SerialException, SerialTimeoutException, EIO
                raise DeviceLostError(
                    f"cannot write to the P24 port {self.port} ({exc}); the P24 stops by "
                    "itself 2 s after the last keep-alive (at once if its USB cable was "
                    "pulled: it is powered by it). Check the USB cable."
                ) from exc
            return time.perf_counter()

    # --- the driver thread: reading ---------------------------------------------------------

    def _start_reading(self) -> None:
        ser, loop = self._serial, asyncio.get_running_loop()
        assert ser is not None
        try:
            fd = ser.fileno() if os.name == "posix" else None
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            loop.add_reader(fd, self._on_readable)
            self._reader_fd = fd
        else:  # no selectable handle (Windows): poll the port
            self._poller = loop.create_task(self._poll_port())

    def _stop_reading(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._reader_fd is not None and self._loop is not None:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = None

    async def _poll_port(self) -> None:
        while self._serial is not None:
            self._on_readable()
            await asyncio.sleep(0.002)

    def _on_readable(self) -> None:
        ser = self._serial
        if ser is None:
            return
        try:
            data = ser.read(ser.in_waiting or 1)
        except OSError as exc:  # SerialException: EIO, the USB device vanished
            self._stop_reading()
            self._record_fault(DeviceLostError(
                f"the P24 port {self.port} is gone ({exc}). The P24 is powered by its USB "
                "cable: if it was pulled, the P24 has stopped. Check the cable."),
                outputs_off=True)
            return
        if data:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Cut what the device sent into packets by their length field (the library
        ignores it), check each with the library's packet search (start, stop byte,
        CRC), hand each to :meth:`_on_frame`; anything else is garbage (a fault)."""
        rx = self._rx
        rx += data
        unstuff = self._lib.Protocol.unstuff_byte
        while rx:
            start = rx.find(b"\xf0\x81")
            if start != 0:
                junk = len(rx) - (rx[-1] == 0xF0) if start < 0 else start  # keep a last F0
                if junk:
                    self._garbage(bytes(rx[:junk]), "bytes outside a packet")
                    del rx[:junk]
                if start < 0:
                    return
                continue
            if len(rx) < 5:
                return
            length = unstuff(rx[2]) << 8 | unstuff(rx[4])
            if rx[3] != 0x81 or not 13 <= length <= MAX_PACKET_BYTES:  # an answer has data
                self._garbage(bytes(rx[:5]), "a packet header with a bad length field")
                del rx[:2]
                continue
            if len(rx) < length:
                return  # the rest is still on its way
            frame = bytes(rx[:length])
            del rx[:length]
            if self._lib.Protocol.find_packet_in_buffer(frame) != (0, length - 1):
                self._garbage(frame, "a damaged packet (checksum, length or stop byte)")
                continue
            self._on_frame(frame)

    def _on_frame(self, frame: bytes) -> None:
        cmd, number, data = self._lib.Protocol.extract_packet_data(frame)
        try:
            ack = self._factory.create_packet_with_data(cmd, number, data)
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            self._garbage(frame, f"a packet it cannot read (command {cmd}: {exc!r})")
            return
        self._dispatch(cmd, number, _Answer(ack, bytes(data), time.perf_counter()))

    def _dispatch(self, cmd: int, number: int, answer: _Answer) -> None:
        pending = self._pending
        if cmd in (_GENERAL_ERROR, _UNKNOWN_COMMAND):
            code = answer.data[0] if answer.data else -1
            kind = "General_error" if cmd == _GENERAL_ERROR else "Unknown_cmd"
            about = pending.name if pending is not None else "no command"
            exc = P24Error(f"the P24 on {self.port} answered {about} with {kind}: result "
                           f"{code}, {sm4.result_meaning(code)}", code=code, command=about)
            if pending is not None and not pending.future.done():
                pending.future.set_exception(exc)
            else:
                self._record_fault(exc, outputs_off=False)
            return
        if pending is not None and (cmd, number) == pending.key and not pending.future.done():
            pending.future.set_result(answer)
            return
        self._unmatched.append((cmd, number))  # e.g. the late answer to a timed-out command
        logger.warning("P24 on %s: unexpected packet, command %d number %d", self.port, cmd,
                       number)

    def _garbage(self, raw: bytes, what: str) -> None:
        self._record_fault(DeviceLostError(
            f"corrupted data from the P24 on {self.port} ({what}: {raw[:40].hex(' ')}); its "
            "state is unknown. Check the USB cable and that no other program uses the port."),
            outputs_off=False)

    def _record_fault(self, exc: BaseException, *, outputs_off: bool, report: bool = True) -> None:
        """Store a fault (the first one makes apply() refuse and stops the keep-alives);
        fail the command waiting for an answer at once (loop thread)."""
        with self._state_lock:
            if self._fault is None:
                self._fault = exc
            if report:
                self._unreported.append(exc)
            if outputs_off:
                self._set_pulses({})
        pending = self._pending
        if pending is not None and not pending.future.done() and isinstance(exc, DeviceLostError):
            pending.future.set_exception(exc)
        logger.error("P24 on %s: %s", self.port, exc)

    # --- helpers --------------------------------------------------------------------------------

    def _raise_fault(self) -> None:
        with self._state_lock:
            fault = self._fault
        if fault is None:
            return
        text = f"{fault} (the driver refuses to stimulate after this; close and open it again)"
        if isinstance(fault, P24Error):
            raise P24Error(text, code=fault.code, command=fault.command,
                           channel=fault.channel) from fault
        raise type(fault)(text) from fault

    def _commit(self, pulses: dict[int, sm4.Pulse | None]) -> None:
        """Record the levels the device acknowledged, unless a fault came in meanwhile."""
        with self._state_lock:
            if self._fault is None:
                self._set_pulses(pulses)
                return
        self._raise_fault()

    def _set_pulses(self, pulses: dict[int, sm4.Pulse | None]) -> None:
        """Set what the device runs (and :attr:`outputs`); the caller holds the state lock
        (or is the constructor)."""
        self._pulses = {ch: pulses.get(ch) for ch in self.channels}
        self._outputs = {ch: _output_of(p) for ch, p in self._pulses.items()}


def _output_of(pulse: sm4.Pulse | None) -> ChannelOutput:
    if pulse is None:
        return ChannelOutput()
    return ChannelOutput(pulse.current_ma, float(pulse.pulse_width_us), pulse.frequency_hz)


def _stop_at_exit(ref: weakref.ref[P24]) -> None:
    """At interpreter exit (atexit): stop and close a driver that is still open."""
    driver = ref()
    if driver is None or not driver.is_open:
        return
    try:
        driver.close()
    except Exception:  # no caller left to hand it to
        logger.exception("P24 on %s: stopping at interpreter exit failed", driver.port)
