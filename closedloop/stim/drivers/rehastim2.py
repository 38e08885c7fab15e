"""Driver for the Hasomed RehaStim2 stimulator (ScienceMode2 over a serial port).

Why not pysciencemode
---------------------
pysciencemode 1.1.5 (the public Python driver) does not meet closedloop's safety
requirements, as tried against a strict emulator of the vendor specification:

* its keep-alive goes out 0.8-1.6 s after the last command, so after the usual
  init + start it is late for the device's 1200 ms watchdog: the device stops
  stimulating and drops the connection, and pysciencemode does not notice;
* its default inter-pulse interval (2 ms) is below the 8 ms minimum, so the device
  answers -2 and then -3, and pysciencemode raises nothing;
* it escapes the packet number and command byte without a stuffing byte (GetStimulationMode
  goes out as 0x5F, an unknown command; packet numbers 10/15/85/129/240 go out wrong);
* it does not check acknowledgement results or time out on a missing answer.

This driver is written on pyserial, in the ``serial.threaded`` cut: the pure protocol is in
:mod:`closedloop.stim.drivers.sciencemode2`; this module owns the port and one link thread.

How it works
------------
* :meth:`RehaStim2.open` opens the port once with every setting (460800 baud, 8E1, no
  flow control, a short read timeout; re-applying settings later fails on a Linux pty,
  and a pty that was opened before refuses even parity: it is then opened 8N1, the only
  line a pty has) and **exclusively** (pyserial's ``exclusive=True``: an advisory
  ``flock`` on POSIX, which works on a pty too; Windows opens COM ports exclusively
  anyway). A port another closedloop session holds is refused with
  :class:`~closedloop.errors.DeviceError` before a byte is read or sent, so the session
  that has it goes on undisturbed (two sessions on one port would take each other's
  acknowledgements),
  waits for the device's Init (it repeats it every 500 ms), answers InitAck echoing its
  packet number, starts the link thread and confirms the link with GetStimulationMode.
* The link thread reads and decodes everything the device sends, hands each
  acknowledgement to the command waiting for it (matched by packet number and command),
  and sends a Watchdog whenever ``keepalive_s`` passes with nothing sent (the device
  stops and resets after 1200 ms without a valid packet) -- except between a fault (or
  a StopChannelListMode that was not confirmed) and the next confirmed stop: then it
  keeps the device alive no longer, so a device that nothing else stops (the loop
  stuck, the stop refused) stops itself within 1.2 s, its own watchdog being the last
  line of defence. A device confirmed off is kept connected, so closing confirms again.
* While a channel is on, a probe thread asks GetStimulationMode whenever ``probe_s``
  passes without an acknowledgement (a plateau sends no commands for seconds; the
  Watchdog has no answer), never while a command is outstanding: a device gone silent,
  or no longer in the started mode, is reported by :meth:`RehaStim2.check` within
  ``probe_s + response_timeout``.
* Every command waits for its acknowledgement for ``response_timeout`` and checks its
  result: no answer -> :class:`~closedloop.errors.DeviceLostError`, a non-zero result ->
  :class:`~closedloop.errors.StimulatorError` naming the command and what the code means.
* Busy (-8) is not a refusal: the device "is still processing the previous command" and
  did not execute this one (DOC2 section 5.2: wait, then send again). Nor is a transfer
  error (-1): the packet reached the device damaged (checksum or length) and was not
  executed; DOC2 section 5.3 has the PC send the command again. The command is sent
  again, as a new packet (the packet number goes on by one), after 5, 10, 20, 40, 50 ...
  ms, for up to ``busy_timeout`` (0.2 s: twice the device's longest response time, inside
  the loop's backstop watchdog and the device's own 1.2 s). Each command is therefore
  executed exactly once, in order. A device still busy (or still receiving damaged
  packets) after that raises :class:`~closedloop.errors.StimulatorError` saying so and
  what to do.
* StopChannelListMode that gets no answer at all (the packet was lost on the way, or the
  answer was) is sent once more before the driver gives up (DOC2 section 5.3: "sends the
  command again"; a Stop is safe to repeat), so one lost packet does not leave the device
  stimulating until its own watchdog.
* Stimulation runs in the channel list mode, which has one main frequency for all
  channels. :meth:`RehaStim2.apply` initialises it lazily (InitChannelListMode with every
  configured channel) when something is first switched on, then sends
  StartChannelListMode with every configured channel's pulse (0 mA for channels that
  are off); the same command updates levels. When every channel is off it sends
  StopChannelListMode. **A command asking for a different frequency than the running
  one stops the channel list, re-initialises it at the new frequency and restarts it:
  every channel that stays on switches to the new frequency, and all channels pause for
  the few milliseconds of the three round trips.** One :meth:`apply` call asking for two
  different frequencies is refused.
* Levels are sent as the device takes them: current in whole mA and pulse width in whole
  microseconds, both rounded *down* (the driver never outputs more than the safety guard
  approved); the main interval is 1000/f rounded *up* to 0.5 ms (never faster than asked).
  :attr:`RehaStim2.outputs` holds these sent values, with the frequency the device runs at.
  Values the device would reject or change (pulse width below 20 us with current on,
  above 500 us, current above 130 mA, frequency outside 0.98..125 Hz, a channel not
  configured) raise :class:`~closedloop.errors.StimulatorError` and nothing is sent.
* The channel list is initialised with the inter-pulse interval its channels need: 8 ms
  per stimulation module used (DOC2 Table 2), i.e. 16 ms when the session's channels are
  on both modules (1-4 and 5-8). The main interval may not be shorter (t1 >= t2), so
  such a session runs at most 62.5 Hz; a faster command is refused before sending.

Faults the link thread sees
---------------------------
An unsolicited StimulationError (emergency switch -1, electrode -2, stimulation module -3),
an UnknownCommand, a corrupted frame from the device, an Init in mid-session (the device
reset, e.g. after its watchdog) and a port that vanishes are stored. :meth:`check` raises
each once; :meth:`apply` refuses to stimulate (raises the first) until the driver is closed
and opened again. Where the device has stopped by itself (StimulationError, reset, port
gone: its watchdog stops it within 1.2 s) the outputs are marked all-off. After an
UnknownCommand or a corrupted frame the device may still be stimulating, so the outputs
are left as they were: :meth:`stop_all` (which the loop calls on any error) stops it.
"""

from __future__ import annotations

import atexit
import errno
import functools
import logging
import math
import os
import stat
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import serial

from closedloop.errors import ConfigError, DeviceError, DeviceLostError, StimulatorError
from closedloop.stim.base import ChannelOutput, Stimulator, StimulatorContext
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers import sciencemode2 as sm

try:  # pyserial reports a refused tcsetattr as termios.error, which is not an OSError
    import termios

    _TERMIOS_ERROR: type[Exception] = termios.error
except ImportError:  # Windows
    _TERMIOS_ERROR = OSError

logger = logging.getLogger(__name__)

BAUDRATE = 460800
#: What the link adds to the device's MaxResponseTime before an answer is read: the
#: USB-serial chip holds a short answer for its latency timer (16 ms by default; DOC2 2.1
#: asks for 1 ms, which a driver cannot set without privileges), plus USB frames and
#: thread scheduling.
LINK_LATENCY_S = 0.05
#: Default wait for an acknowledgement, from the write: the device may answer as late as
#: its MaxResponseTime after it has the packet (DOC2 Table 7), so waiting exactly that
#: long from the PC's side would call a device that keeps its specification lost.
RESPONSE_TIMEOUT_S = sm.MAX_RESPONSE_TIME_S + LINK_LATENCY_S
#: First pause before a command answered busy (-8) is sent again; it doubles up to the next.
BUSY_FIRST_RETRY_S = 0.005
#: Longest pause between two sends of a command answered busy.
BUSY_MAX_RETRY_S = 0.05
#: How long the link thread blocks in one read; bounds how fast it notices a stop request.
READ_POLL_S = 0.05
#: errno of a port another process holds: flock (pyserial's exclusive), TIOCEXCL.
_PORT_BUSY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY})
#: Tolerance when rounding a level down to the device's integer steps (10.0000001 -> 10).
_ROUND_TOL = 1e-6


@dataclass(frozen=True)
class SentPacket:
    """A packet handed to the port: ``time.perf_counter()`` just after the write returned."""

    wall: float
    pkt_no: int
    cmd: int


@dataclass
class _Pending:
    """The one command waiting for its acknowledgement."""

    pkt_no: int
    ack_cmd: int
    done: threading.Event
    reply: sm.Packet | None = None
    error: BaseException | None = None


class _NoAnswerError(DeviceLostError):
    """No acknowledgement within ``response_timeout`` (the port itself still works)."""


#: Ack results that mean "not executed, send it again" (DOC2 sections 5.2-5.3).
_SEND_AGAIN = {
    sm.RESULT_BUSY: ("busy (-8)", "it is still processing an earlier command and takes no "
                     "new one. The session stops stimulation; switch the stimulator off and "
                     "on before the next session, and have it serviced if this happens again"),
    sm.RESULT_TRANSFER_ERROR: ("transfer error (-1)", "the packets reach it damaged (checksum "
                               "or length). The session stops stimulation; check the USB "
                               "cable and that no other program uses the port"),
}


def ask_low_latency(port: serial.Serial) -> bool:
    """Ask the USB-serial driver to pass answers on at once; True when it took the request.

    Every command waits for its acknowledgement, and the RehaStim2's FTDI chip holds a
    short answer for its latency timer, 16 ms by default, before the PC sees it: up to
    16 ms of every ramp step spent waiting. DOC2 2.1 asks for 1 ms. On Linux the
    ``ASYNC_LOW_LATENCY`` flag (pyserial's ``set_low_latency_mode``, the ``TIOCSSERIAL``
    ioctl; ``setserial PORT low_latency`` does the same) makes ``ftdi_sio`` set its timer
    to 1 ms, and an unprivileged user may set it, unlike the sysfs ``latency_timer`` file.
    A port whose driver has no such setting (a pseudo-terminal, Windows and macOS, where
    the FTDI driver's own settings hold) keeps what it has: the answer is waited for
    :data:`LINK_LATENCY_S` longer than the device's own time either way, so nothing
    depends on this, it only makes each command return sooner.
    """
    setter = getattr(port, "set_low_latency_mode", None)  # pyserial has it on Linux only
    if setter is None:
        return False
    try:
        setter(True)
    except (ValueError, OSError) as exc:  # pyserial reports a refused ioctl as ValueError
        logger.info("%s keeps its own latency timer (%s); see DOC2 2.1 for setting 1 ms",
                    port.port, exc)
        return False
    logger.info("%s: low-latency mode on (FTDI latency timer 1 ms)", port.port)
    return True


class RehaStim2(Stimulator):
    """Hasomed RehaStim2 on a serial port, in the ScienceMode2 channel list mode.

    Parameters
    ----------
    port : str
        Serial port (``/dev/ttyUSB0``, ``COM3``, or a pty path for the emulator).
    channels : sequence of int
        The channels (1-based, 1..8) this session may use; all are put in the channel
        list, so switching any of them on or off needs no re-initialisation.
    response_timeout : float
        Seconds to wait for each acknowledgement after the write: the device's
        MaxResponseTime (0.1 s) plus :data:`LINK_LATENCY_S` by default.
    keepalive_s : float
        Send a Watchdog whenever this many seconds pass with nothing sent; at most 1.0 s
        (the device resets after 1.2 s without a valid packet).
    probe_s : float
        While a channel is on, ask the device for its stimulation mode whenever this
        long passes without an acknowledgement (a long plateau sends no commands): a
        device that stopped answering, or stopped stimulating on its own, is reported by
        :meth:`check` within ``probe_s + response_timeout`` instead of at the next
        command. 0 disables it.
    busy_timeout : float
        How long a command the device answers busy (-8) is sent again before the driver
        gives up (StimulatorError); at most 1.0 s, inside the device's 1.2 s watchdog.
    init_timeout : float
        Seconds :meth:`open` waits for the device's Init packet (sent every 0.5 s).
    write_timeout : float
        Seconds a write to the port may block before the device counts as lost.
    history : int
        How many :class:`SentPacket` records to keep for latency measurement.

    Raises
    ------
    ConfigError
        If an argument is out of range (named in the message).
    """

    n_channels = sm.N_CHANNELS
    per_channel_frequency = False  # one main interval for the whole channel list

    kind = "rehastim2"
    spec_form = "rehastim2:PORT  (e.g. rehastim2:/dev/ttyUSB0)"
    label = "the RehaStim2"

    @classmethod
    def from_spec(cls, spec: str, arg: str, context: StimulatorContext) -> RehaStim2:
        """The stimulator of a ``rehastim2:PORT`` spec."""
        if not arg:
            raise ConfigError(f"stimulator spec {spec!r}: give the serial port, e.g. "
                              "rehastim2:/dev/ttyUSB0")
        return cls(arg, channels=context.channels)

    def __init__(
        self,
        port: str,
        *,
        channels: Sequence[int] = (1, 2),
        response_timeout: float = RESPONSE_TIMEOUT_S,
        keepalive_s: float = 0.5,
        probe_s: float = 0.5,
        busy_timeout: float = 0.2,
        init_timeout: float = 2.0,
        write_timeout: float = 0.5,
        history: int = 4096,
    ) -> None:
        super().__init__()
        chans = tuple(channels)
        if (
            not chans
            or len(set(chans)) != len(chans)
            or not all(isinstance(c, int) and 1 <= c <= sm.N_CHANNELS for c in chans)
        ):
            raise ConfigError(
                f"rehastim2 channels {list(channels)!r}: need distinct channel numbers "
                f"1..{sm.N_CHANNELS}"
            )
        for name, value, low, high in (
            ("response_timeout", response_timeout, 0.0, 10.0),
            ("keepalive_s", keepalive_s, 0.0, 1.0),
            ("busy_timeout", busy_timeout, 0.0, 1.0),
            ("init_timeout", init_timeout, 0.0, 60.0),
            ("write_timeout", write_timeout, 0.0, 10.0),
        ):
            if not (math.isfinite(value) and low < value <= high):
                raise ConfigError(f"rehastim2 {name}={value!r}: must be in ({low:g}, {high:g}] s")
        if history < 0:
            raise ConfigError(f"rehastim2 history={history!r}: must be >= 0")
        if not (math.isfinite(probe_s) and 0.0 <= probe_s <= 10.0):
            raise ConfigError(f"rehastim2 probe_s={probe_s!r}: must be in [0, 10] s (0: off)")
        self.port = port
        self.channels: tuple[int, ...] = tuple(sorted(chans))
        #: Shortest main interval the channel list allows: 8 ms per stimulation module
        #: its channels use (the inter-pulse interval it is initialised with).
        self.min_interval_ms = sm.min_inter_pulse_interval_ms(self.channels)
        self.response_timeout = float(response_timeout)
        self.keepalive_s = float(keepalive_s)
        self.probe_s = float(probe_s)
        self.busy_timeout = float(busy_timeout)
        self.init_timeout = float(init_timeout)
        self.write_timeout = float(write_timeout)
        #: Protocol version the device announced in its Init (None before open()).
        self.device_version: int | None = None
        #: Whether the serial driver took the 1 ms latency timer (:func:`ask_low_latency`).
        self.low_latency = False

        self._serial: serial.Serial | None = None
        self._decoder = sm.Decoder()
        self._thread: threading.Thread | None = None
        self._prober: threading.Thread | None = None
        self._last_ack = 0.0  # monotonic time of the last acknowledgement
        self._stop_event = threading.Event()
        self._write_lock = threading.Lock()  # packet counter, write, last-sent time
        self._txn_lock = threading.Lock()  # one command outstanding at a time
        self._state_lock = threading.Lock()  # outputs, mode, pending, faults
        self._pkt_no = 0
        self._last_sent = 0.0
        self._sent: deque[SentPacket] = deque(maxlen=history)
        self._pending: _Pending | None = None
        self._fault: BaseException | None = None  # first fault: apply() refuses after it
        self._keep_alive = True  # False from a fault until the device confirms a stop
        self._unreported: deque[BaseException] = deque()  # for check()
        self._unmatched: list[sm.Packet] = []
        self._mode = sm.StimulationMode.START
        self._main_code: int | None = None  # coded main interval of the channel list
        self._atexit_hook = functools.partial(_stop_at_exit, weakref.ref(self))
        self._outputs = self._all_off()

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Open the port, do the handshake, start the link thread.

        Raises
        ------
        DeviceError
            If another program (another closedloop session) has the port open; nothing
            was read from or sent to it.
        DeviceLostError
            If the port cannot be opened, or no Init arrives within ``init_timeout``, or
            the device does not answer GetStimulationMode after the handshake.
        StimulatorError
            If the device refuses GetStimulationMode or the channel list cannot be stopped.
        """
        if self.is_open:
            return
        self._reset_session_state()
        try:
            self._serial = self._open_port()
        except (OSError, ValueError, _TERMIOS_ERROR) as exc:  # SerialException is an OSError
            if isinstance(exc, OSError) and exc.errno in _PORT_BUSY:
                raise DeviceError(
                    f"the RehaStim2 port {self.port} is in use by another program (another "
                    "closedloop session, or a terminal or vendor program); nothing was sent "
                    "to the stimulator. End that session or program (on Linux `fuser -v "
                    f"{self.port}` shows which process has it), then start again."
                ) from exc
            raise DeviceLostError(
                f"cannot open the RehaStim2 serial port {self.port!r}: {exc}. Check that "
                "the stimulator's USB cable is plugged in, the port name is right "
                "(Linux: /dev/ttyUSB*, Windows: COMn) and no other program has it open."
            ) from exc
        try:
            self._handshake()
            self._stop_event.clear()
            self._thread = threading.Thread(
                target=self._run_link, name=f"rehastim2-link {self.port}", daemon=True
            )
            self._thread.start()
            if self.probe_s > 0:
                self._prober = threading.Thread(
                    target=self._run_probe, name=f"rehastim2-probe {self.port}", daemon=True
                )
                self._prober.start()
            atexit.register(self._atexit_hook)
            super().open()
            with self._txn_lock:
                mode = self._get_stimulation_mode()
                if mode != sm.StimulationMode.START:  # not expected right after a reset
                    self._transact(sm.stop_channel_list_mode)
        except BaseException:
            self._shutdown_link()
            self._is_open = False
            raise

    def _open_port(self) -> serial.Serial:
        """Open the port exclusively with every setting at once (460800 8E1, no flow
        control); a port another process holds fails with EWOULDBLOCK (flock)."""
        open_port = functools.partial(
            serial.Serial,
            port=self.port,
            exclusive=True,
            baudrate=BAUDRATE,
            bytesize=serial.EIGHTBITS,
            stopbits=serial.STOPBITS_ONE,
            xonxoff=False,
            rtscts=False,
            dsrdtr=False,
            timeout=READ_POLL_S,
            write_timeout=self.write_timeout,
        )
        try:
            port = open_port(parity=serial.PARITY_EVEN)
        except _TERMIOS_ERROR as exc:
            # A Linux pty (the emulator) has no parity: the kernel drops PARENB, and when
            # that is the only change asked for (a pty opened before) refuses with EINVAL.
            # 8N1 is then exactly the line the pty gives anyway; real ports never get here.
            if not (exc.args and exc.args[0] == errno.EINVAL and _is_pseudo_terminal(self.port)):
                raise
            logger.info("%s is a pseudo-terminal without parity: opening it 8N1", self.port)
            port = open_port(parity=serial.PARITY_NONE)
        self.low_latency = ask_low_latency(port)
        return port

    def close(self) -> None:
        """Stop all channels, stop the link thread and close the port (idempotent).

        Raises whatever :meth:`stop_all` raised (the device could not be told to stop),
        after everything has been shut down.
        """
        try:
            super().close()
        finally:
            self._shutdown_link()

    def _reset_session_state(self) -> None:
        self._decoder = sm.Decoder()
        self._pkt_no = 0
        self.device_version = None
        with self._state_lock:
            self._pending = None
            self._fault = None
            self._keep_alive = True
            self._unreported.clear()
            self._unmatched.clear()
            self._mode = sm.StimulationMode.START
            self._main_code = None
            self._outputs = self._all_off()

    def _shutdown_link(self) -> None:
        atexit.unregister(self._atexit_hook)
        self._stop_event.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=READ_POLL_S * 20)
            if thread.is_alive():
                logger.error("RehaStim2 link thread did not stop within 1 s; closing the port")
        prober, self._prober = self._prober, None
        if prober is not None and prober is not threading.current_thread():
            prober.join(timeout=self.response_timeout + 1.0)
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except OSError as exc:  # the port may already be gone; nothing left to do
                logger.warning("closing RehaStim2 port %s: %s", self.port, exc)

    def _handshake(self) -> None:
        """Wait for the device's Init and answer InitAck echoing its packet number."""
        ser = self._serial
        assert ser is not None
        ser.reset_input_buffer()  # stale bytes from an earlier session
        deadline = time.monotonic() + self.init_timeout
        n_bytes, errors = 0, 0
        while time.monotonic() < deadline:
            try:
                data = ser.read(ser.in_waiting or 1)
            except OSError as exc:
                raise DeviceLostError(f"RehaStim2 port {self.port} failed: {exc}") from exc
            n_bytes += len(data)
            for item in self._decoder.feed(data):
                if isinstance(item, sm.FrameError):
                    errors += 1  # a partial frame left over from before the flush
                elif item.cmd == sm.Command.INIT and item.data:
                    self.device_version = item.data[0]
                    self._write(sm.init_ack(item.pkt_no).encode(), item.pkt_no, sm.Command.INIT_ACK)
                    return
        heard = (
            f" It received {n_bytes} bytes ({errors} damaged frames) but no valid Init: "
            "is this port another device?"
            if n_bytes
            else ""
        )
        raise DeviceLostError(
            f"no RehaStim2 found on {self.port}: no Init packet within "
            f"{self.init_timeout:g} s (a RehaStim2 sends one every 0.5 s while waiting for a "
            "connection). Check that the stimulator is switched on, its USB cable is "
            f"connected and {self.port} is its port; if another program used it, switch "
            f"the stimulator off and on.{heard}"
        )

    # --- public commands ----------------------------------------------------------------------

    def apply(self, commands: Sequence[StimCommand]) -> None:
        """Set the listed channels; other channels keep their level.

        Raises
        ------
        StimulatorError
            If a value is out of the device's range or a channel is not configured
            (nothing is sent), if the device refuses a command, or if a fault was seen.
        DeviceLostError
            If the device does not answer or the port is gone.
        """
        if not self.is_open:
            raise StimulatorError("RehaStim2.apply() on a driver that is not open")
        self._raise_fault()
        levels: dict[int, ChannelOutput] = {}  # validated before anything is sent
        codes: dict[int, float] = {}  # coded main interval -> first frequency asking for it
        for cmd in commands:
            levels[cmd.channel], code = self._quantise(cmd)
            if code is not None:
                codes.setdefault(code, cmd.frequency_hz)
        if len(codes) > 1:
            raise StimulatorError(
                "the RehaStim2 runs all channels at one frequency, but these commands ask "
                f"for {sorted(codes.values())} Hz at once"
            )
        with self._txn_lock:
            self._raise_fault()
            new = {**self.outputs, **levels}
            if not any(o.is_on for o in new.values()):
                if self._mode != sm.StimulationMode.START or self.any_on:
                    self._stop_channel_list()  # also marks every channel off
                return
            code = next(iter(codes), self._main_code)
            if code is None:  # a channel on, yet no frequency asked for nor running
                raise StimulatorError(
                    "internal error: a RehaStim2 channel would be on without a frequency "
                    "(a bug in closedloop, please report it); every channel is stopped")
            if self._mode != sm.StimulationMode.START and code != self._main_code:
                self._stop_channel_list()  # new frequency: stop, re-init, restart
            if self._mode == sm.StimulationMode.START:
                self._transact(
                    functools.partial(
                        sm.init_channel_list_mode,
                        channels=self.channels,
                        main_interval_ms=sm.decode_main_interval(code),
                    )
                )
                with self._state_lock:
                    self._mode, self._main_code = sm.StimulationMode.INITIALIZED, code
                self._raise_fault()
            hz = 1000.0 / sm.decode_main_interval(code)
            new = {
                ch: ChannelOutput(o.current_ma, o.pulse_width_us, hz) if o.is_on else o
                for ch, o in new.items()
            }
            if new != self._outputs or self._mode != sm.StimulationMode.STARTED:
                pulses = {
                    ch: sm.ChannelPulse(
                        int(o.current_ma), max(int(o.pulse_width_us), sm.PULSE_WIDTH_MIN_US)
                    )
                    for ch, o in new.items()
                }
                self._transact(functools.partial(sm.start_channel_list_mode, pulses=pulses))
                with self._state_lock:
                    self._mode = sm.StimulationMode.STARTED
                self._commit(new)

    def stop_all(self) -> None:
        """Send StopChannelListMode, wait for its Ack, and mark every channel off.

        Tries even when a fault is pending; does nothing on a closed driver. Raises
        (:class:`~closedloop.errors.DeviceLostError` or
        :class:`~closedloop.errors.StimulatorError`) only after marking all channels off,
        when the device could not be told or did not confirm; the link thread then sends
        no more Watchdogs, so the device's own watchdog stops it within 1.2 s.
        """
        if self._serial is None:
            with self._state_lock:
                self._outputs = self._all_off()
            return
        error: BaseException | None = None
        wait = 3 * (self.response_timeout + self.write_timeout) + 0.5  # longest apply()
        if self._txn_lock.acquire(timeout=wait):
            try:
                self._stop_channel_list()
            except (StimulatorError, DeviceLostError) as exc:
                error = exc
            finally:
                self._txn_lock.release()
        else:  # another thread is stuck in a command: send Stop anyway, unconfirmed
            try:
                self._send(sm.stop_channel_list_mode)
            except DeviceLostError as exc:
                error = exc
            else:
                error = DeviceLostError(
                    f"RehaStim2 on {self.port}: StopChannelListMode sent but not confirmed "
                    f"(another command held the link for {wait:g} s)"
                )
        with self._state_lock:
            self._outputs = self._all_off()
            self._mode, self._main_code = sm.StimulationMode.START, None
        if error is not None:
            # not confirmed: stop the keep-alive, so the device's own watchdog stops it
            self._record_fault(error, outputs_off=True, report=False)
            raise error

    def delivered_hz(self, frequency_hz: float) -> float:
        """The rate the device runs at: the period rounded up to its 0.5 ms step
        (35 Hz -> 29 ms -> 34.48 Hz). A rate it cannot run is returned as asked
        (:meth:`apply` refuses it)."""
        try:
            interval = sm.main_interval_for_frequency(frequency_hz)
        except StimulatorError:
            return frequency_hz
        return frequency_hz if interval < self.min_interval_ms else 1000.0 / interval

    def check(self) -> None:
        """Raise the next fault the link thread has seen and not yet reported."""
        with self._state_lock:
            exc = self._unreported.popleft() if self._unreported else None
        if exc is not None:
            raise exc

    def get_stimulation_mode(self) -> sm.StimulationMode:
        """Ask the device for its stimulation mode (start, initialized, started)."""
        if not self.is_open:
            raise StimulatorError("RehaStim2.get_stimulation_mode() on a driver that is not open")
        with self._txn_lock:
            return self._get_stimulation_mode()

    @property
    def sent_packets(self) -> list[SentPacket]:
        """The most recent packets handed to the port, oldest first (a copy)."""
        with self._write_lock:
            return list(self._sent)

    # --- commands on the wire -------------------------------------------------------------------

    def _get_stimulation_mode(self) -> sm.StimulationMode:
        ack = self._transact(sm.get_stimulation_mode)
        if len(ack.data) < 2 or ack.data[1] not in set(sm.StimulationMode):
            raise StimulatorError(f"malformed GetStimulationModeAck: {ack.data.hex(' ')}")
        return sm.StimulationMode(ack.data[1])

    def _stop_channel_list(self) -> None:
        try:
            self._transact(sm.stop_channel_list_mode)
        except _NoAnswerError as exc:
            # DOC2 5.3: no answer within the response time -> send the command again. A
            # Stop is safe to repeat; one lost packet must not leave the device running.
            logger.warning("RehaStim2 on %s: %s; sending StopChannelListMode again",
                           self.port, exc)
            self._transact(sm.stop_channel_list_mode)
        with self._state_lock:
            self._mode, self._main_code = sm.StimulationMode.START, None
            self._outputs = self._all_off()
            self._keep_alive = True  # confirmed off: keeping the link costs nothing

    def _send(self, build: Callable[[int], sm.Packet]) -> sm.Packet:
        """Number, encode and write one packet made by ``build(pkt_no)``."""
        with self._write_lock:
            packet = build(self._pkt_no)
            self._pkt_no = (self._pkt_no + 1) & 0xFF
            self._write_locked(packet.encode(), packet.pkt_no, packet.cmd)
        return packet

    def _transact(self, build: Callable[[int], sm.Packet]) -> sm.Packet:
        """Send one command and return its Ack; the caller holds ``_txn_lock``.

        An answer saying the command was not executed -- busy (-8: the device is still
        processing) or transfer error (-1: the packet arrived damaged) -- sends the
        command again as a new packet, after a pause that doubles from
        :data:`BUSY_FIRST_RETRY_S` to :data:`BUSY_MAX_RETRY_S`, until ``busy_timeout``.

        Raises DeviceLostError when no Ack comes within ``response_timeout`` (the link is
        then considered lost) and StimulatorError when the Ack's result is not 0 (busy or
        transfer error: still so after ``busy_timeout``).
        """
        started = time.monotonic()
        pause, again = BUSY_FIRST_RETRY_S, 0
        while True:
            packet, reply = self._exchange(build)
            result = sm.to_int8(reply.data[0]) if reply.data else None
            if result == 0:
                return reply
            if result not in _SEND_AGAIN:
                meaning = ("empty Ack" if result is None
                           else f"{result}, {sm.result_meaning(result)}")
                with self._state_lock:  # e.g. -3 because an electrode error stopped it
                    fault = self._fault
                cause = f", after it reported: {fault}" if fault is not None else ""
                raise StimulatorError(
                    f"RehaStim2 refused {packet.name} (packet {packet.pkt_no}): result "
                    f"{meaning}{cause}"
                )
            again += 1
            what, advice = _SEND_AGAIN[result]
            left = started + self.busy_timeout - time.monotonic()
            if left <= 0:
                raise StimulatorError(
                    f"the RehaStim2 on {self.port} answered {what} to {packet.name} {again} "
                    f"times over {1000 * (time.monotonic() - started):.0f} ms: {advice}."
                )
            logger.info("RehaStim2 on %s answered %s to %s (%d); sending it again in %.0f ms",
                        self.port, what, packet.name, again, 1000 * min(pause, left))
            time.sleep(min(pause, left))
            pause = min(2 * pause, BUSY_MAX_RETRY_S)

    def _exchange(self, build: Callable[[int], sm.Packet]) -> tuple[sm.Packet, sm.Packet]:
        """Send one packet made by ``build(pkt_no)``; return it and its Ack, whatever
        the result. Raises DeviceLostError when no Ack comes within ``response_timeout``."""
        done = threading.Event()
        with self._write_lock:
            packet = build(self._pkt_no)
            pending = _Pending(packet.pkt_no, sm.ACK_OF[packet.cmd], done)
            with self._state_lock:
                self._pending = pending
            self._pkt_no = (self._pkt_no + 1) & 0xFF
            try:
                self._write_locked(packet.encode(), packet.pkt_no, packet.cmd)
            except DeviceLostError as exc:
                with self._state_lock:
                    self._pending = None
                self._record_fault(exc, outputs_off=True, report=False)
                raise
        answered = done.wait(self.response_timeout)
        with self._state_lock:
            self._pending = None
            unmatched = list(self._unmatched[-3:])
        if pending.error is not None:
            raise pending.error
        if not answered or pending.reply is None:
            seen = f"; packets it could not match: {unmatched}" if unmatched else ""
            lost = _NoAnswerError(
                f"RehaStim2 on {self.port} did not answer {packet.name} (packet "
                f"{packet.pkt_no}) within {self.response_timeout * 1000:.0f} ms{seen}. Check "
                "that it is switched on and the cable is connected."
            )
            self._record_fault(lost, outputs_off=False, report=False)
            raise lost
        return packet, pending.reply

    def _write(self, frame: bytes, pkt_no: int, cmd: int) -> None:
        with self._write_lock:
            self._write_locked(frame, pkt_no, cmd)

    def _write_locked(self, frame: bytes, pkt_no: int, cmd: int) -> None:
        ser = self._serial
        try:
            if ser is None:
                raise OSError("port is closed")
            ser.write(frame)
        except OSError as exc:  # SerialException, SerialTimeoutException, EIO
            raise DeviceLostError(
                f"cannot write to the RehaStim2 port {self.port} ({exc}); the stimulator "
                "stops by itself within 1.2 s without packets. Check the USB cable."
            ) from exc
        now = time.perf_counter()
        self._last_sent = time.monotonic()
        self._sent.append(SentPacket(now, pkt_no, cmd))

    # --- the link thread ----------------------------------------------------------------------

    def _run_link(self) -> None:
        """Read, decode and dispatch what the device sends; keep the link alive."""
        ser = self._serial
        assert ser is not None
        try:
            while not self._stop_event.is_set():
                try:
                    data = ser.read(ser.in_waiting or 1)
                except OSError as exc:
                    if self._stop_event.is_set():
                        return  # closing
                    self._record_fault(
                        DeviceLostError(
                            f"the RehaStim2 port {self.port} is gone ({exc}). Check the USB "
                            "cable; the stimulator stops by itself within 1.2 s."
                        ),
                        outputs_off=True,
                    )
                    return
                for item in self._decoder.feed(data):
                    self._dispatch(item)
                with self._state_lock:
                    keep_alive = self._keep_alive
                if keep_alive and time.monotonic() - self._last_sent >= self.keepalive_s:
                    try:
                        self._send(sm.watchdog)
                    except DeviceLostError as exc:
                        self._record_fault(exc, outputs_off=True)
                        return
        except Exception as exc:  # a bug here must still reach the caller
            self._record_fault(
                DeviceLostError(f"RehaStim2 link thread failed: {exc!r}"), outputs_off=False
            )
            raise

    def _run_probe(self) -> None:
        """While stimulating, ask GetStimulationMode when nothing was acknowledged for
        ``probe_s`` (never while a command is outstanding: the device would answer
        busy). A silent device, or one that stopped stimulating, becomes a fault."""
        while not self._stop_event.wait(min(self.probe_s, 0.1)):
            with self._state_lock:
                due = (self._fault is None and any(o.is_on for o in self._outputs.values())
                       and time.monotonic() - self._last_ack >= self.probe_s)
            if not due or not self._txn_lock.acquire(blocking=False):
                continue
            try:
                with self._state_lock:  # a command may have switched everything off
                    if not any(o.is_on for o in self._outputs.values()):
                        continue
                mode = self._get_stimulation_mode()
                if mode != sm.StimulationMode.STARTED:
                    self._record_fault(StimulatorError(
                        f"the RehaStim2 on {self.port} reports mode {mode.name.lower()} "
                        "while channels should be stimulating: it stopped on its own"),
                        outputs_off=True)
            except (DeviceLostError, StimulatorError) as exc:
                self._record_fault(exc, outputs_off=False)  # for check(); apply() refuses
            finally:
                self._txn_lock.release()

    def _dispatch(self, item: sm.Packet | sm.FrameError) -> None:
        if isinstance(item, sm.FrameError):
            self._record_fault(
                DeviceLostError(
                    f"corrupted data from the RehaStim2 on {self.port} ({item}); its state "
                    "is unknown. Check the cable and that no other program uses the port."
                ),
                outputs_off=False,
            )
            return
        if item.cmd == sm.Command.STIMULATION_ERROR:
            code = sm.to_int8(item.data[0]) if item.data else 0
            self._record_fault(
                StimulatorError(
                    f"RehaStim2 stimulation error {code}: {sm.stimulation_error_meaning(code)}; "
                    "the stimulator stopped all channels."
                ),
                outputs_off=True,
                wake=False,
            )
            return
        if item.cmd == sm.Command.INIT:
            self._record_fault(
                DeviceLostError(
                    f"the RehaStim2 on {self.port} sent Init again: it has reset (its 1.2 s "
                    "watchdog expired, or it was switched off and on) and stopped "
                    "stimulation. Reconnect (close and open) to continue."
                ),
                outputs_off=True,
            )
            return
        with self._state_lock:
            pending = self._pending
            if pending is not None and item.pkt_no == pending.pkt_no:
                if item.cmd == pending.ack_cmd:
                    pending.reply = item
                    pending.done.set()
                    self._last_ack = time.monotonic()
                    return
        if item.cmd == sm.Command.UNKNOWN_COMMAND:
            echoed = item.data[0] if item.data else -1
            self._record_fault(
                StimulatorError(
                    f"the RehaStim2 did not recognise {sm.command_name(echoed)} "
                    f"(packet {item.pkt_no}): UnknownCommand"
                ),
                outputs_off=False,
                wake=pending is not None and item.pkt_no == pending.pkt_no,
            )
            return
        with self._state_lock:
            self._unmatched.append(item)  # e.g. the late Ack of a command that timed out
            del self._unmatched[:-10]
        logger.warning("RehaStim2 on %s: unexpected packet %s", self.port, item)

    def _record_fault(
        self, exc: BaseException, *, outputs_off: bool, wake: bool = True, report: bool = True
    ) -> None:
        """Store a fault: apply() refuses to stimulate after the first one.

        ``outputs_off`` marks every channel off (the device has stopped by itself).
        ``wake`` fails the command waiting for an Ack with this error at once; it is False
        for faults that do not affect the link (a StimulationError: the Ack still comes).
        ``report`` queues it for check(); False when it is raised to the caller directly.
        """
        with self._state_lock:
            if self._fault is None:
                self._fault = exc
            self._keep_alive = False  # until a stop is confirmed: the device's watchdog
            if report:
                self._unreported.append(exc)
            if outputs_off:
                self._outputs = self._all_off()
                self._mode, self._main_code = sm.StimulationMode.START, None
            pending = self._pending
            if wake and pending is not None and pending.error is None:
                pending.error = exc
                pending.done.set()
        logger.error("RehaStim2 on %s: %s", self.port, exc)

    # --- helpers --------------------------------------------------------------------------------

    def _raise_fault(self) -> None:
        with self._state_lock:
            fault = self._fault
        if fault is not None:
            raise type(fault)(
                f"{fault} (the driver refuses to stimulate after this; close and open it again)"
            ) from fault

    def _commit(self, outputs: dict[int, ChannelOutput]) -> None:
        """Record the levels the device acknowledged, unless a fault came in meanwhile."""
        with self._state_lock:
            if self._fault is None:
                self._outputs = dict(outputs)
                return
        self._raise_fault()

    def _all_off(self) -> dict[int, ChannelOutput]:
        return {ch: ChannelOutput() for ch in self.channels}

    def _quantise(self, cmd: StimCommand) -> tuple[ChannelOutput, int | None]:
        """The level the device will be sent for a command, and its coded main interval.

        Raises StimulatorError for values the device would refuse or change.
        """
        ch = cmd.channel
        if ch not in self.channels:
            raise StimulatorError(
                f"channel {ch} ({cmd.muscle}) is not one of the RehaStim2 channels configured "
                f"for this session {self.channels}"
            )
        values = (cmd.current_ma, cmd.pulse_width_us, cmd.frequency_hz)
        if not all(math.isfinite(v) for v in values) or cmd.current_ma < 0:
            raise StimulatorError(f"channel {ch}: invalid stimulation values {values}")
        current = math.floor(cmd.current_ma + _ROUND_TOL)
        if current <= 0:
            return ChannelOutput(), None
        if current > sm.CURRENT_MAX_MA:
            raise StimulatorError(
                f"current {cmd.current_ma:g} mA on channel {ch} is above the RehaStim2's "
                f"maximum {sm.CURRENT_MAX_MA} mA"
            )
        pw = math.floor(cmd.pulse_width_us + _ROUND_TOL)
        if not sm.PULSE_WIDTH_MIN_US <= pw <= sm.PULSE_WIDTH_MAX_US:
            raise StimulatorError(
                f"pulse width {cmd.pulse_width_us:g} us on channel {ch} is outside the "
                f"RehaStim2's range {sm.PULSE_WIDTH_MIN_US}..{sm.PULSE_WIDTH_MAX_US} us"
            )
        interval = sm.main_interval_for_frequency(cmd.frequency_hz)
        if interval < self.min_interval_ms:
            raise StimulatorError(
                f"{cmd.frequency_hz:g} Hz on channel {ch} is faster than the RehaStim2 runs "
                f"channels {self.channels}: with channels on both stimulation modules (1-4 "
                f"and 5-8) its main interval is at least {self.min_interval_ms:g} ms, at most "
                f"{1000.0 / self.min_interval_ms:g} Hz. Lower the frequency, or use channels "
                "of one module only"
            )
        return (
            ChannelOutput(float(current), float(pw), 1000.0 / interval),
            sm.code_main_interval(interval),
        )


def _is_pseudo_terminal(path: str) -> bool:
    """True for a Linux Unix98 pty slave (character device, major 136..143)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and 136 <= os.major(st.st_rdev) <= 143


def _stop_at_exit(ref: weakref.ref[RehaStim2]) -> None:
    """At interpreter exit (atexit): stop and close a driver that is still open."""
    driver = ref()
    if driver is None or not driver.is_open:
        return
    try:
        driver.close()
    except Exception:  # no caller left to hand it to
        logger.exception("RehaStim2 on %s: stopping at interpreter exit failed", driver.port)
