"""The ScienceMode2 serial protocol of the Hasomed RehaStim2, as pure functions.

Bytes in, packets out: framing, CRC-8, byte stuffing, a streaming decoder, builders for
the commands the driver sends, and the meanings of result and error codes. Nothing here
does I/O, keeps time or starts threads; :mod:`closedloop.stim.drivers.rehastim2` is the device
edge that uses it. The byte-level description with its sources is in
``shared/protocols/sciencemode2.md``.

Packet layout (``[...]`` = stuffed)::

    F0  81 CRC^55  81 LEN^55  [PKTNO CMD DATA...]  0F

* CRC-8 (poly 0x07, init 0, no reflection, no final XOR) and LEN are computed over the
  *stuffed* packet number, command and data, and are always sent escaped.
* Sending escapes exactly {F0, 0F, 81} (the vendor specification; pyScienceMode also
  escapes 0x55 and 0x0A). Receiving accepts ``81 xx`` as an escape of any byte, so both
  encodings decode.
* Multi-byte fields are MSB first; results and error codes are int8.

Stimulation parameters outside the device's ranges raise
:class:`~closedloop.errors.StimulatorError` (the device would refuse them); malformed
arguments to :func:`encode` (packet number or command not a byte, data too long) raise
:class:`ValueError` (a programming error).
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from closedloop.errors import StimulatorError

# --- framing constants -------------------------------------------------------------------

START = 0xF0
STOP = 0x0F
STUFF = 0x81
STUFF_KEY = 0x55
#: Bytes escaped when sending (DOC2, the RS C++ driver and Hasomed's SM4 library agree).
SPECIAL_BYTES = frozenset((START, STOP, STUFF))
#: Command data is shorter than 61 bytes (DOC2 Table 5).
MAX_DATA_BYTES = 60
#: Longest stuffed content between the start and stop bytes: escaped CRC and LEN (4 bytes)
#: plus packet number, command and data with every byte escaped.
MAX_FRAME_CONTENT = 4 + 2 * (2 + MAX_DATA_BYTES)

# --- device ranges (DOC2 section 4.3) ------------------------------------------------------

N_CHANNELS = 8
#: The longest the device takes to answer a command it has received (DOC2 Table 7,
#: MaxResponseTime; on average under 20 ms).
MAX_RESPONSE_TIME_S = 0.1
MAIN_INTERVAL_MIN_MS = 8.0
MAIN_INTERVAL_MAX_MS = 1025.0
INTER_PULSE_INTERVAL_MIN_MS = 8.0  # "minimum 8 ms in the current software version" (coded 13)
#: The two stimulation modules (current sources) and their channels (DOC2 1.2, Table 3).
MODULE_CHANNELS = ((1, 2, 3, 4), (5, 6, 7, 8))
INTER_PULSE_INTERVAL_MAX_MS = 129.0
LOW_FREQUENCY_FACTOR_MAX = 7
PULSE_WIDTH_MIN_US = 20
PULSE_WIDTH_MAX_US = 500
CURRENT_MAX_MA = 130
#: Highest and lowest continuous stimulation frequency (main interval 8 ms and 1025 ms).
FREQUENCY_MAX_HZ = 1000.0 / MAIN_INTERVAL_MIN_MS
FREQUENCY_MIN_HZ = 1000.0 / MAIN_INTERVAL_MAX_MS


class Command(enum.IntEnum):
    """ScienceMode2 command numbers (DOC2 section 3; MOTOmed commands omitted)."""

    INIT = 1
    INIT_ACK = 2
    UNKNOWN_COMMAND = 3
    WATCHDOG = 4
    GET_STIMULATION_MODE = 10
    GET_STIMULATION_MODE_ACK = 11
    GET_MOTOMED_MODE = 12
    GET_MOTOMED_MODE_ACK = 13
    INIT_CHANNEL_LIST_MODE = 30
    INIT_CHANNEL_LIST_MODE_ACK = 31
    START_CHANNEL_LIST_MODE = 32
    START_CHANNEL_LIST_MODE_ACK = 33
    STOP_CHANNEL_LIST_MODE = 34
    STOP_CHANNEL_LIST_MODE_ACK = 35
    SINGLE_PULSE = 36
    SINGLE_PULSE_ACK = 37
    STIMULATION_ERROR = 38


#: The acknowledgement the device answers each PC command with (Watchdog has none).
ACK_OF: dict[int, Command] = {
    Command.GET_STIMULATION_MODE: Command.GET_STIMULATION_MODE_ACK,
    Command.GET_MOTOMED_MODE: Command.GET_MOTOMED_MODE_ACK,
    Command.INIT_CHANNEL_LIST_MODE: Command.INIT_CHANNEL_LIST_MODE_ACK,
    Command.START_CHANNEL_LIST_MODE: Command.START_CHANNEL_LIST_MODE_ACK,
    Command.STOP_CHANNEL_LIST_MODE: Command.STOP_CHANNEL_LIST_MODE_ACK,
    Command.SINGLE_PULSE: Command.SINGLE_PULSE_ACK,
}


class StimulationMode(enum.IntEnum):
    """The device's stimulation mode (GetStimulationModeAck, DOC2 section 3.6)."""

    START = 0
    INITIALIZED = 1
    STARTED = 2


class PulseMode(enum.IntEnum):
    """Pulses per channel slot in the channel list mode."""

    SINGLE = 0
    DOUBLET = 1
    TRIPLET = 2


#: Ack result "busy": the device is still processing the previous command and did not
#: execute this one; the host waits and sends it again (DOC2 section 5.2).
RESULT_BUSY = -8
#: Ack result "transfer error": the packet arrived damaged (checksum or length did not
#: match) and was not executed; the host sends the command again (DOC2 sections 5.2-5.3).
RESULT_TRANSFER_ERROR = -1

#: Meaning of the int8 result in an acknowledgement (DOC2 sections 5.1-5.2).
RESULT_MEANINGS: dict[int, str] = {
    0: "ok",
    -1: "transfer error (checksum or data length did not match)",
    -2: "parameter error (a value out of range, or too many or too few parameters)",
    -3: "wrong mode (command not allowed in the device's current stimulation mode)",
    -4: "MOTOmed connection error",
    -5: "incompatible protocol version",
    -6: "invalid MOTOmed trainer",
    -7: "MOTOmed busy",
    -8: "busy (the device is still processing the previous command)",
}

#: Meaning of the int8 error in an unsolicited StimulationError packet (DOC2 section 4.3).
STIMULATION_ERROR_MEANINGS: dict[int, str] = {
    -1: "emergency switch activated or not connected",
    -2: "electrode error",
    -3: "stimulation module error",
}


def to_int8(value: int) -> int:
    """Read a byte as a two's-complement int8 (0xFF -> -1)."""
    return value - 256 if value >= 128 else value


def result_meaning(code: int) -> str:
    """What an acknowledgement result means, e.g. ``-3`` -> ``"wrong mode (...)"``."""
    return RESULT_MEANINGS.get(code, f"unknown result code {code}")


def stimulation_error_meaning(code: int) -> str:
    """What a StimulationError code means, e.g. ``-1`` -> ``"emergency switch ..."``."""
    return STIMULATION_ERROR_MEANINGS.get(code, f"unknown stimulation error {code}")


def command_name(cmd: int) -> str:
    """The command's name (``"StartChannelListMode"``), or ``"command 99"`` if unknown."""
    try:
        return "".join(part.title() for part in Command(cmd).name.split("_"))
    except ValueError:
        return f"command {cmd}"


# --- CRC and stuffing -------------------------------------------------------------------------


def _crc8_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8_TABLE = _crc8_table(0x07)


def crc8(data: bytes) -> int:
    """CRC-8 with polynomial 0x07, initial value 0, no reflection, no final XOR.

    The check value for ``b"123456789"`` is 0xF4.
    """
    crc = 0
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc


def stuff(data: bytes) -> bytes:
    """Escape every start, stop and stuffing byte as ``81, byte ^ 0x55``."""
    out = bytearray()
    for byte in data:
        if byte in SPECIAL_BYTES:
            out += bytes((STUFF, byte ^ STUFF_KEY))
        else:
            out.append(byte)
    return bytes(out)


def unstuff(data: bytes) -> bytes:
    """Undo stuffing, accepting ``81 xx`` as an escape of any byte (value ``xx ^ 0x55``).

    Raises
    ------
    ValueError
        If the data ends with a lone stuffing byte.
    """
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == STUFF:
            try:
                out.append(next(it) ^ STUFF_KEY)
            except StopIteration:
                raise ValueError("stuffed data ends with a lone 0x81") from None
        else:
            out.append(byte)
    return bytes(out)


# --- packets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """One ScienceMode2 packet (unstuffed fields).

    Attributes
    ----------
    pkt_no : int
        Packet number, 0..255.
    cmd : int
        Command number (see :class:`Command`; unknown numbers are kept as they are).
    data : bytes
        Command data, unstuffed.
    stuffed : bytes
        For decoded packets, the packet number, command and data exactly as they were on
        the wire (lets a strict receiver see non-canonical escapes); not compared.
    """

    pkt_no: int
    cmd: int
    data: bytes = b""
    stuffed: bytes = field(default=b"", compare=False, repr=False)

    @property
    def name(self) -> str:
        """The command's name."""
        return command_name(self.cmd)

    def encode(self) -> bytes:
        """The packet as it goes on the wire."""
        return encode(self.pkt_no, self.cmd, self.data)


def encode(pkt_no: int, cmd: int, data: bytes = b"") -> bytes:
    """Frame one packet for the wire.

    Parameters
    ----------
    pkt_no : int
        Packet number, 0..255.
    cmd : int
        Command number, 0..255.
    data : bytes
        Command data, unstuffed, at most :data:`MAX_DATA_BYTES` bytes.

    Returns
    -------
    bytes
        ``F0 81 CRC^55 81 LEN^55 [stuffed pkt_no, cmd, data] 0F``.
    """
    if not 0 <= pkt_no <= 255 or not 0 <= cmd <= 255:
        raise ValueError(f"packet number {pkt_no} and command {cmd} must each be 0..255")
    data = bytes(data)
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"command data has {len(data)} bytes; at most {MAX_DATA_BYTES}")
    body = stuff(bytes((pkt_no, cmd)) + data)
    return (
        bytes((START, STUFF, crc8(body) ^ STUFF_KEY, STUFF, len(body) ^ STUFF_KEY))
        + body
        + bytes((STOP,))
    )


class FrameErrorKind(enum.Enum):
    """Why received bytes did not make a packet."""

    #: Checksum over the stuffed bytes does not match (the device answers -1).
    CRC = "crc"
    #: LEN does not match the number of stuffed bytes (the device answers -1).
    LENGTH = "length"
    #: A frame without escaped CRC and LEN, or too short to hold a packet number and command.
    FRAMING = "framing"
    #: A second start byte inside a frame: the bytes before it were thrown away.
    RESYNC = "resync"
    #: No stop byte within the longest possible frame: the bytes were thrown away.
    OVERFLOW = "overflow"
    #: Bytes outside any frame (before a start byte).
    JUNK = "junk"


@dataclass(frozen=True)
class FrameError:
    """Received bytes that did not make a valid packet.

    ``pkt_no`` and ``cmd`` are filled in when they could be read despite the error (a
    device answers a CRC or LEN error with the command's own Ack carrying -1).
    """

    kind: FrameErrorKind
    raw: bytes
    pkt_no: int | None = None
    cmd: int | None = None

    def __str__(self) -> str:
        what = {
            FrameErrorKind.CRC: "checksum mismatch",
            FrameErrorKind.LENGTH: "length mismatch",
            FrameErrorKind.FRAMING: "malformed frame",
            FrameErrorKind.RESYNC: "frame interrupted by a new start byte",
            FrameErrorKind.OVERFLOW: "frame too long (no stop byte)",
            FrameErrorKind.JUNK: "bytes outside a frame",
        }[self.kind]
        where = "" if self.cmd is None else f" in {command_name(self.cmd)} (packet {self.pkt_no})"
        return f"{what}{where}: {self.raw.hex(' ')}"


class Decoder:
    """Turn a byte stream, fragmented in any way, into packets and frame errors.

    Feed it whatever the port returned; it returns, in order, every :class:`Packet` that
    completed and every :class:`FrameError` found. A start byte inside a frame restarts
    the frame (as the device does); the byte after a stuffing byte is always data, so an
    escaped CRC or LEN that happens to equal F0 or 0F does not break framing.
    """

    def __init__(self) -> None:
        self._frame: bytearray | None = None  # None while hunting for a start byte
        self._escaped = False
        self._junk = bytearray()

    def feed(self, data: bytes) -> list[Packet | FrameError]:
        """Consume bytes; return the packets and errors they completed."""
        out: list[Packet | FrameError] = []
        for byte in data:
            frame = self._frame
            if frame is None:
                if byte == START:
                    if self._junk:
                        out.append(FrameError(FrameErrorKind.JUNK, bytes(self._junk)))
                        self._junk.clear()
                    self._frame = bytearray()
                    self._escaped = False
                else:
                    self._junk.append(byte)
                continue
            if self._escaped:
                frame.append(byte)
                self._escaped = False
            elif byte == START:
                out.append(FrameError(FrameErrorKind.RESYNC, bytes((START,)) + bytes(frame)))
                frame.clear()
                continue
            elif byte == STOP:
                out.append(_parse_frame(bytes(frame)))
                self._frame = None
                continue
            else:
                frame.append(byte)
                self._escaped = byte == STUFF
            if len(frame) > MAX_FRAME_CONTENT:
                out.append(FrameError(FrameErrorKind.OVERFLOW, bytes((START,)) + bytes(frame)))
                self._frame = None
        return out


def _parse_frame(content: bytes) -> Packet | FrameError:
    """Check and unpack the bytes between a start and a stop byte."""
    raw = bytes((START,)) + content + bytes((STOP,))
    if len(content) < 6 or content[0] != STUFF or content[2] != STUFF:
        return FrameError(FrameErrorKind.FRAMING, raw)
    crc, length, body = content[1] ^ STUFF_KEY, content[3] ^ STUFF_KEY, content[4:]
    pkt_no, cmd = _peek_header(body)
    if len(body) != length:
        return FrameError(FrameErrorKind.LENGTH, raw, pkt_no, cmd)
    if crc8(body) != crc:
        return FrameError(FrameErrorKind.CRC, raw, pkt_no, cmd)
    unstuffed = unstuff(body)  # cannot end in a lone 0x81: the decoder took 0F as data
    if len(unstuffed) < 2:
        return FrameError(FrameErrorKind.FRAMING, raw)
    return Packet(unstuffed[0], unstuffed[1], unstuffed[2:], stuffed=body)


def _peek_header(body: bytes) -> tuple[int | None, int | None]:
    """Best-effort packet number and command of a damaged frame (None if unreadable)."""
    try:
        head = unstuff(body[:4])
    except ValueError:  # the 4th byte is an escape whose value lies beyond
        head = unstuff(body[:3])
    return (head[0], head[1]) if len(head) >= 2 else (None, None)


# --- parameter coding -------------------------------------------------------------------------


def _half_ms_steps(value_ms: float, what: str) -> int:
    steps = value_ms * 2.0
    if not math.isfinite(steps) or abs(steps - round(steps)) > 1e-6:
        raise StimulatorError(f"{what} {value_ms} ms is not a multiple of 0.5 ms")
    return round(steps)


def code_main_interval(interval_ms: float) -> int:
    """Code the main stimulation interval t1 (8..1025 ms, 0.5 ms steps): ``(t1 - 1) / 0.5``."""
    if not MAIN_INTERVAL_MIN_MS <= interval_ms <= MAIN_INTERVAL_MAX_MS:
        raise StimulatorError(
            f"main stimulation interval {interval_ms} ms is outside the RehaStim2's range "
            f"{MAIN_INTERVAL_MIN_MS:g}..{MAIN_INTERVAL_MAX_MS:g} ms"
        )
    return _half_ms_steps(interval_ms, "main stimulation interval") - 2


def decode_main_interval(code: int) -> float:
    """The main stimulation interval in ms for a coded value (0 means one-shot mode)."""
    return code * 0.5 + 1.0


def code_inter_pulse_interval(interval_ms: float) -> int:
    """Code the inter-pulse interval t2 (8..129 ms, 0.5 ms steps): ``(t2 - 1.5) / 0.5``."""
    if not INTER_PULSE_INTERVAL_MIN_MS <= interval_ms <= INTER_PULSE_INTERVAL_MAX_MS:
        raise StimulatorError(
            f"inter-pulse interval {interval_ms} ms is outside the RehaStim2's range "
            f"{INTER_PULSE_INTERVAL_MIN_MS:g}..{INTER_PULSE_INTERVAL_MAX_MS:g} ms"
        )
    return _half_ms_steps(interval_ms, "inter-pulse interval") - 3


def decode_inter_pulse_interval(code: int) -> float:
    """The inter-pulse interval in ms for a coded value."""
    return code * 0.5 + 1.5


def min_inter_pulse_interval_ms(channels: Iterable[int]) -> float:
    """The shortest inter-pulse interval t2 a channel list may have: 8 ms for each
    stimulation module it uses (16 ms with channels on both 1-4 and 5-8).

    DOC2 Table 2: "The minimum inter pulse interval is 8 ms per stimulation module (4 x
    1.5 ms for each channel + 2 ms communication buffer)", and the two modules are
    processed one after the other (DOC2 1.3, Figure 3). Public drivers (the RS C++
    driver, pyScienceMode) send 8 ms whatever the channels; this follows the
    specification's words, the stricter reading, which a device may enforce with a
    parameter error (-2). Since the main interval t1 must be at least t2 (DOC2 Table 2,
    single pulses), it bounds the frequency too: at most 62.5 Hz on both modules.
    """
    chans = set(channels)
    used = sum(1 for module in MODULE_CHANNELS if chans & set(module))
    return INTER_PULSE_INTERVAL_MIN_MS * max(used, 1)


def main_interval_for_frequency(frequency_hz: float) -> float:
    """The main interval (ms, 0.5 ms steps) for a frequency, never faster than asked.

    The period ``1000 / f`` is rounded *up* to the device's 0.5 ms step, so the
    frequency the device runs at is at most the one requested (50 Hz -> 20 ms exactly,
    30 Hz -> 33.5 ms = 29.85 Hz).

    Raises
    ------
    StimulatorError
        If the frequency is outside 1000/1025..125 Hz.
    """
    if not FREQUENCY_MIN_HZ <= frequency_hz <= FREQUENCY_MAX_HZ:  # False for NaN
        raise StimulatorError(
            f"stimulation frequency {frequency_hz:g} Hz is outside the RehaStim2's range "
            f"{FREQUENCY_MIN_HZ:.3f}..{FREQUENCY_MAX_HZ:g} Hz"
        )
    return min(math.ceil(2000.0 / frequency_hz - 1e-9) / 2.0, MAIN_INTERVAL_MAX_MS)


def channel_mask(channels: Iterable[int]) -> int:
    """Bit mask of 1-based channel numbers (bit 0 = channel 1)."""
    mask = 0
    for ch in channels:
        if not 1 <= ch <= N_CHANNELS:
            raise StimulatorError(f"channel {ch} is not a RehaStim2 channel (1..{N_CHANNELS})")
        mask |= 1 << (ch - 1)
    return mask


def mask_channels(mask: int) -> tuple[int, ...]:
    """The 1-based channel numbers set in a bit mask, in increasing order."""
    return tuple(ch for ch in range(1, N_CHANNELS + 1) if mask & (1 << (ch - 1)))


# --- builders ---------------------------------------------------------------------------------


def init_ack(pkt_no: int, result: int = 0) -> Packet:
    """InitAck answering the device's Init ``pkt_no`` (result 0 = ok, -5 = incompatible)."""
    return Packet(pkt_no, Command.INIT_ACK, bytes((result & 0xFF,)))


def watchdog(pkt_no: int) -> Packet:
    """Watchdog keep-alive (the device does not answer it)."""
    return Packet(pkt_no, Command.WATCHDOG)


def get_stimulation_mode(pkt_no: int) -> Packet:
    """GetStimulationMode; the Ack carries a result and, if 0, the :class:`StimulationMode`."""
    return Packet(pkt_no, Command.GET_STIMULATION_MODE)


def stop_channel_list_mode(pkt_no: int) -> Packet:
    """StopChannelListMode: stop stimulation and return to start mode."""
    return Packet(pkt_no, Command.STOP_CHANNEL_LIST_MODE)


def init_channel_list_mode(
    pkt_no: int,
    channels: Iterable[int],
    main_interval_ms: float,
    *,
    inter_pulse_interval_ms: float | None = None,
    low_frequency_factor: int = 0,
    low_frequency_channels: Iterable[int] = (),
    fast_execution: bool = False,
) -> Packet:
    """InitChannelListMode for continuous stimulation.

    Parameters
    ----------
    pkt_no : int
        Packet number.
    channels : iterable of int
        Active channels, 1-based (1..8), at least one.
    main_interval_ms : float
        Main stimulation interval t1 (1 / frequency), 8..1025 ms in 0.5 ms steps, at
        least the inter-pulse interval.
    inter_pulse_interval_ms : float, optional
        Interval t2 between the pulses of a doublet or triplet, 8..129 ms in 0.5 ms
        steps, at least :func:`min_inter_pulse_interval_ms` of the channels (8 ms per
        stimulation module used); default: that minimum.
    low_frequency_factor : int
        Main periods skipped by the low-frequency channels, 0..7.
    low_frequency_channels : iterable of int
        Channels stimulated at the low frequency; a subset of ``channels``.
    fast_execution : bool
        Channel execution "as fast as possible" instead of fixed 1.5 ms slots
        (DOC2: not yet implemented by the device).

    Raises
    ------
    StimulatorError
        If a value is outside the device's range.
    """
    active = channel_mask(channels)
    if not active:
        raise StimulatorError("InitChannelListMode needs at least one active channel")
    low = channel_mask(low_frequency_channels)
    if low & ~active:
        raise StimulatorError(
            f"low-frequency channels {mask_channels(low)} are not all active "
            f"(active: {mask_channels(active)})"
        )
    if not 0 <= low_frequency_factor <= LOW_FREQUENCY_FACTOR_MAX:
        raise StimulatorError(
            f"low frequency factor {low_frequency_factor} is outside 0..{LOW_FREQUENCY_FACTOR_MAX}"
        )
    least = min_inter_pulse_interval_ms(mask_channels(active))
    if inter_pulse_interval_ms is None:
        inter_pulse_interval_ms = least
    main = code_main_interval(main_interval_ms)
    ipi = code_inter_pulse_interval(inter_pulse_interval_ms)
    if inter_pulse_interval_ms < least:
        raise StimulatorError(
            f"inter-pulse interval {inter_pulse_interval_ms} ms is below the {least:g} ms "
            f"that channels {mask_channels(active)} need (8 ms per stimulation module: "
            "channels 1-4 and 5-8)"
        )
    if main_interval_ms < inter_pulse_interval_ms:
        raise StimulatorError(
            f"main stimulation interval {main_interval_ms} ms is shorter than the "
            f"inter-pulse interval {inter_pulse_interval_ms} ms"
        )
    data = bytes(
        (low_frequency_factor, active, low, ipi, main >> 8, main & 0xFF, int(fast_execution))
    )
    return Packet(pkt_no, Command.INIT_CHANNEL_LIST_MODE, data)


@dataclass(frozen=True)
class ChannelPulse:
    """One channel's entry in StartChannelListMode (integers, as the device takes them)."""

    current_ma: int
    pulse_width_us: int
    mode: PulseMode = PulseMode.SINGLE


def start_channel_list_mode(pkt_no: int, pulses: Mapping[int, ChannelPulse]) -> Packet:
    """StartChannelListMode (start or update) for every active channel.

    Parameters
    ----------
    pkt_no : int
        Packet number.
    pulses : mapping of int to ChannelPulse
        One entry per channel that InitChannelListMode made active (1-based channel
        number -> pulse); a channel that should be silent gets ``current_ma=0``. They
        are sent in increasing channel order, as the device expects.

    Raises
    ------
    StimulatorError
        If a channel, pulse width (20..500 us), current (0..130 mA) or mode is out of range.
    """
    if not pulses:
        raise StimulatorError("StartChannelListMode needs at least one channel")
    data = bytearray()
    for ch in sorted(pulses):
        channel_mask((ch,))
        p = pulses[ch]
        try:
            pw, current, mode = map(operator.index, (p.pulse_width_us, p.current_ma, p.mode))
        except TypeError:
            raise StimulatorError(
                f"channel {ch}: current, pulse width and mode must be integers, got {p}"
            ) from None
        if not PULSE_WIDTH_MIN_US <= pw <= PULSE_WIDTH_MAX_US:
            raise StimulatorError(
                f"pulse width {pw} us on channel {ch} is outside the RehaStim2's range "
                f"{PULSE_WIDTH_MIN_US}..{PULSE_WIDTH_MAX_US} us"
            )
        if not 0 <= current <= CURRENT_MAX_MA:
            raise StimulatorError(
                f"current {current} mA on channel {ch} is outside the RehaStim2's range "
                f"0..{CURRENT_MAX_MA} mA"
            )
        if mode not in set(PulseMode):
            raise StimulatorError(f"pulse mode {mode} on channel {ch} is not 0, 1 or 2")
        data += bytes((mode, pw >> 8, pw & 0xFF, current))
    return Packet(pkt_no, Command.START_CHANNEL_LIST_MODE, bytes(data))
