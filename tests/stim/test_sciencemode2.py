"""The pure ScienceMode2 codec against the worked packets in shared/protocols and properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closedloop.errors import StimulatorError
from closedloop.stim.drivers import sciencemode2 as sm

SHARED = Path(__file__).resolve().parents[3] / "shared"
VECTORS_FILE = SHARED / "protocols" / "sciencemode2_vectors.json"


def _load_vectors() -> list[dict]:
    if not VECTORS_FILE.exists():
        return []
    return json.loads(VECTORS_FILE.read_text())["sm2"]


VECTORS = _load_vectors()
needs_vectors = pytest.mark.skipif(not VECTORS, reason=f"{VECTORS_FILE} is missing")


def _wire(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str)


# --- the worked packets -----------------------------------------------------------------------


@needs_vectors
def test_vector_file_has_the_expected_packets():
    assert len(VECTORS) >= 18
    assert {v["cmd"] for v in VECTORS} >= {1, 2, 3, 4, 10, 11, 30, 31, 32, 33, 34, 35, 36, 37, 38}


@needs_vectors
@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_encodes(vector):
    data = bytes(vector["data_unstuffed"])
    assert sm.encode(vector["pkt_no"], vector["cmd"], data) == _wire(vector["hex"])


@needs_vectors
@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_whole_and_byte_by_byte(vector):
    expected = sm.Packet(vector["pkt_no"], vector["cmd"], bytes(vector["data_unstuffed"]))
    wire = _wire(vector["hex"])
    assert sm.Decoder().feed(wire) == [expected]
    decoder = sm.Decoder()
    items = [item for byte in wire for item in decoder.feed(bytes((byte,)))]
    assert items == [expected]


def test_builders_reproduce_the_worked_packets():
    """The builders' coding of intervals, masks and pulses gives the spec's examples 1-5."""
    assert sm.init_ack(0).encode() == _wire("F0 81 7F 81 56 00 02 00 0F")
    init = sm.init_channel_list_mode(1, channels=(1, 2), main_interval_ms=20.0)
    assert init.encode() == _wire("F0 81 BC 81 5C 01 1E 00 03 00 0D 00 26 00 0F")
    start = sm.start_channel_list_mode(
        2,
        {
            2: sm.ChannelPulse(15, 240, sm.PulseMode.DOUBLET),
            1: sm.ChannelPulse(20, 200),  # given out of order: sent in channel order
        },
    )
    assert start.encode() == _wire("F0 81 FF 81 59 02 20 00 00 C8 14 01 00 81 A5 81 5A 0F")
    assert sm.stop_channel_list_mode(4).encode() == _wire("F0 81 EF 81 57 04 22 0F")
    assert sm.get_stimulation_mode(1).encode() == _wire("F0 81 76 81 57 01 0A 0F")
    assert sm.watchdog(0x0F).encode() == _wire("F0 81 A7 81 56 81 5A 04 0F")


def test_ory_init_example_main_interval_coding():
    # ORY's example: main interval code 0x0040 = 64 -> 33 ms; no LF; one channel; fast mode
    packet = sm.init_channel_list_mode(2, (1,), 33.0, fast_execution=True)
    assert packet.data[4:6] == bytes((0, 64))
    assert sm.decode_main_interval(64) == 33.0


# --- CRC and stuffing ---------------------------------------------------------------------------


def test_crc8_check_value():
    assert sm.crc8(b"123456789") == 0xF4
    assert sm.crc8(b"") == 0
    assert sm.crc8(b"\x01") == 0x07  # first table entry after 0 is the polynomial


def test_stuff_escapes_only_start_stop_and_stuffing_bytes():
    assert sm.stuff(bytes((0xF0, 0x0F, 0x81))) == bytes((0x81, 0xA5, 0x81, 0x5A, 0x81, 0xD4))
    untouched = bytes(b for b in range(256) if b not in (0xF0, 0x0F, 0x81))
    assert sm.stuff(untouched) == untouched  # 0x55 and 0x0A included


@given(st.binary(max_size=200))
def test_stuff_unstuff_round_trip(data):
    stuffed = sm.stuff(data)
    assert sm.unstuff(stuffed) == data
    assert sm.START not in stuffed and sm.STOP not in stuffed


def test_unstuff_rejects_a_lone_trailing_stuffing_byte():
    with pytest.raises(ValueError, match="lone"):
        sm.unstuff(b"\x01\x81")


packets = st.builds(
    sm.Packet,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=sm.MAX_DATA_BYTES),
)


@given(st.lists(packets, min_size=1, max_size=6), st.data())
def test_packets_survive_encode_and_any_fragmentation(pkts, data):
    wire = b"".join(p.encode() for p in pkts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    decoder = sm.Decoder()
    decoded = [item for piece in pieces for item in decoder.feed(piece)]
    assert decoded == pkts
    # what a receiver sees on the wire is the canonical stuffing
    assert all(d.stuffed == sm.stuff(bytes((d.pkt_no, d.cmd)) + d.data) for d in decoded)


def test_escaped_crc_or_length_equal_to_stop_or_start_does_not_break_framing():
    # find packets whose escaped CRC byte on the wire is 0x0F and 0xF0
    found = {}
    for pkt_no in range(256):
        for cmd in (4, 10, 34):
            wire = sm.encode(pkt_no, cmd)
            if wire[2] in (sm.STOP, sm.START):
                found.setdefault(wire[2], (pkt_no, cmd, wire))
    assert set(found) == {sm.STOP, sm.START}
    for pkt_no, cmd, wire in found.values():
        assert sm.Decoder().feed(wire) == [sm.Packet(pkt_no, cmd)]


def test_encode_rejects_malformed_arguments():
    with pytest.raises(ValueError):
        sm.encode(256, 4)
    with pytest.raises(ValueError):
        sm.encode(0, -1)
    with pytest.raises(ValueError, match="61 bytes"):
        sm.encode(0, 32, bytes(61))
    assert sm.Decoder().feed(sm.encode(0, 32, bytes(60)))[0].data == bytes(60)


# --- decoder errors --------------------------------------------------------------------------


def test_decoder_reports_crc_error_with_packet_number_and_command():
    wire = bytearray(sm.encode(7, sm.Command.START_CHANNEL_LIST_MODE, bytes((0, 0, 200, 20))))
    wire[-2] ^= 0x01  # corrupt the current byte
    (item,) = sm.Decoder().feed(bytes(wire))
    assert isinstance(item, sm.FrameError)
    assert item.kind is sm.FrameErrorKind.CRC
    assert (item.pkt_no, item.cmd) == (7, sm.Command.START_CHANNEL_LIST_MODE)
    assert "checksum" in str(item) and "StartChannelListMode" in str(item)


def test_decoder_reports_length_error():
    wire = bytearray(sm.encode(0x0F, sm.Command.STOP_CHANNEL_LIST_MODE))  # escaped pkt no
    wire[4] ^= 0x01  # LEN one off
    (item,) = sm.Decoder().feed(bytes(wire))
    assert item.kind is sm.FrameErrorKind.LENGTH
    assert (item.pkt_no, item.cmd) == (0x0F, sm.Command.STOP_CHANNEL_LIST_MODE)


def test_decoder_resyncs_on_a_second_start_byte_and_reports_junk():
    good = sm.encode(3, sm.Command.WATCHDOG)
    items = sm.Decoder().feed(b"\x12\x34" + good[:5] + good + good)
    kinds = [i.kind if isinstance(i, sm.FrameError) else i for i in items]
    assert kinds == [
        sm.FrameErrorKind.JUNK,
        sm.FrameErrorKind.RESYNC,
        sm.Packet(3, sm.Command.WATCHDOG),
        sm.Packet(3, sm.Command.WATCHDOG),
    ]
    assert items[0].raw == b"\x12\x34"
    assert items[1].raw == good[:5]


def test_decoder_reports_malformed_and_overlong_frames_then_recovers():
    good = sm.encode(1, sm.Command.WATCHDOG)
    items = sm.Decoder().feed(b"\xf0\x01\x02\x03\x0f" + good)
    assert items[0].kind is sm.FrameErrorKind.FRAMING and items[1] == sm.Packet(1, 4)
    items = sm.Decoder().feed(b"\xf0" + bytes(200) + good)
    assert items[0].kind is sm.FrameErrorKind.OVERFLOW
    assert items[-1] == sm.Packet(1, 4)


def test_pyscience_mode_escapes_of_0x55_and_0x0a_in_data_decode():
    # SinglePulse 10 mA as pyScienceMode sends it (0x0A escaped as 81 5F)
    (packet,) = sm.Decoder().feed(_wire("F0 81 3A 81 52 03 24 00 01 2C 81 5F 0F"))
    assert packet == sm.Packet(3, sm.Command.SINGLE_PULSE, bytes((0, 1, 0x2C, 10)))
    assert packet.stuffed != sm.stuff(bytes((3, 36, 0, 1, 0x2C, 10)))  # non-canonical
    data = bytes((0x55, 0x0A, 0x55))
    body = bytes((1, 32)) + b"".join(bytes((sm.STUFF, b ^ sm.STUFF_KEY)) for b in data)
    wire = bytes((0xF0, 0x81, sm.crc8(body) ^ 0x55, 0x81, len(body) ^ 0x55)) + body + b"\x0f"
    assert sm.Decoder().feed(wire) == [sm.Packet(1, 32, data)]


def test_pyscience_mode_xored_command_byte_is_an_unknown_command():
    (packet,) = sm.Decoder().feed(_wire("F0 81 DA 81 57 01 5F 0F"))
    assert packet.cmd == 0x5F and packet.name == "command 95"


# --- codes and names -------------------------------------------------------------------------


def test_result_and_error_codes():
    assert [sm.to_int8(b) for b in (0x00, 0x7F, 0x80, 0xFD, 0xFF)] == [0, 127, -128, -3, -1]
    assert "wrong mode" in sm.result_meaning(-3)
    assert "parameter" in sm.result_meaning(-2)
    assert "busy" in sm.result_meaning(-8)
    assert "unknown" in sm.result_meaning(-42)
    assert "emergency switch" in sm.stimulation_error_meaning(-1)
    assert "electrode" in sm.stimulation_error_meaning(-2)
    assert "module" in sm.stimulation_error_meaning(-3)
    assert sm.command_name(sm.Command.GET_STIMULATION_MODE_ACK) == "GetStimulationModeAck"
    assert sm.ACK_OF[sm.Command.START_CHANNEL_LIST_MODE] == sm.Command.START_CHANNEL_LIST_MODE_ACK


# --- coding and ranges ---------------------------------------------------------------------------


def test_interval_coding():
    assert sm.code_main_interval(8.0) == 14
    assert sm.code_main_interval(20.0) == 38
    assert sm.code_main_interval(1025.0) == 2048
    assert sm.code_inter_pulse_interval(8.0) == 13
    assert sm.code_inter_pulse_interval(129.0) == 255
    for code in (14, 38, 2048):
        assert sm.code_main_interval(sm.decode_main_interval(code)) == code
    assert sm.decode_inter_pulse_interval(13) == 8.0


@pytest.mark.parametrize(
    ("hz", "interval_ms"),
    [(50, 20.0), (125, 8.0), (30, 33.5), (20, 50.0), (1, 1000.0), (1000 / 1025, 1025.0)],
)
def test_frequency_rounds_the_period_up(hz, interval_ms):
    assert sm.main_interval_for_frequency(hz) == interval_ms
    assert 1000.0 / interval_ms <= hz


@pytest.mark.parametrize("hz", [125.01, 126.0, 0.975, 0.0, -5.0, float("nan"), float("inf")])
def test_frequency_out_of_range(hz):
    with pytest.raises(StimulatorError, match="frequency"):
        sm.main_interval_for_frequency(hz)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"main_interval_ms": 7.5}, "main stimulation interval 7.5 ms is outside"),
        ({"main_interval_ms": 1025.5}, "outside"),
        ({"main_interval_ms": 20.25}, "multiple of 0.5"),
        ({"inter_pulse_interval_ms": 7.5}, "inter-pulse interval 7.5 ms"),
        ({"inter_pulse_interval_ms": 129.5}, "inter-pulse"),
        ({"main_interval_ms": 10.0, "inter_pulse_interval_ms": 12.0}, "shorter than"),
        ({"low_frequency_factor": 8}, "low frequency factor 8"),
        ({"low_frequency_factor": 1, "low_frequency_channels": (3,)}, "not all active"),
        ({"channels": ()}, "at least one"),
        ({"channels": (0, 1)}, "channel 0"),
        ({"channels": (9,)}, "channel 9"),
    ],
)
def test_init_channel_list_mode_range_errors(kwargs, match):
    args = {"channels": (1, 2), "main_interval_ms": 20.0, **kwargs}
    with pytest.raises(StimulatorError, match=match):
        sm.init_channel_list_mode(1, **args)


def test_init_channel_list_mode_low_frequency_fields():
    packet = sm.init_channel_list_mode(
        1, (1, 3, 8), 25.0, low_frequency_factor=7, low_frequency_channels=(8,)
    )  # channels on both modules: 16 ms between pulse groups (coded 29)
    assert packet.data == bytes((7, 0b1000_0101, 0b1000_0000, 29, 0, 48, 0))


def test_inter_pulse_interval_is_8_ms_per_stimulation_module():
    assert sm.min_inter_pulse_interval_ms((1, 2, 3, 4)) == 8.0
    assert sm.min_inter_pulse_interval_ms((5, 8)) == 8.0
    assert sm.min_inter_pulse_interval_ms((4, 5)) == 16.0
    assert sm.init_channel_list_mode(1, (2,), 20.0).data[3] == 13
    assert sm.init_channel_list_mode(1, (2, 7), 20.0).data[3] == 29
    with pytest.raises(StimulatorError, match="below the 16 ms that channels"):
        sm.init_channel_list_mode(1, (2, 7), 20.0, inter_pulse_interval_ms=8.0)
    with pytest.raises(StimulatorError, match="shorter than the inter-pulse interval 16"):
        sm.init_channel_list_mode(1, (2, 7), 12.0)


@pytest.mark.parametrize(
    ("pulse", "match"),
    [
        (sm.ChannelPulse(10, 19), "pulse width 19 us"),
        (sm.ChannelPulse(10, 501), "pulse width 501 us"),
        (sm.ChannelPulse(131, 200), "current 131 mA"),
        (sm.ChannelPulse(-1, 200), "current -1 mA"),
        (sm.ChannelPulse(10, 200, 3), "pulse mode 3"),
        (sm.ChannelPulse(10.5, 200), "integers"),
    ],
)
def test_start_channel_list_mode_range_errors(pulse, match):
    with pytest.raises(StimulatorError, match=match):
        sm.start_channel_list_mode(1, {1: pulse})


def test_start_channel_list_mode_limits_are_accepted():
    packet = sm.start_channel_list_mode(
        9, {1: sm.ChannelPulse(0, 20), 8: sm.ChannelPulse(130, 500, sm.PulseMode.TRIPLET)}
    )
    assert packet.data == bytes((0, 0, 20, 0, 2, 0x01, 0xF4, 130))
    with pytest.raises(StimulatorError, match="channel 9"):
        sm.start_channel_list_mode(1, {9: sm.ChannelPulse(1, 100)})
    with pytest.raises(StimulatorError, match="at least one"):
        sm.start_channel_list_mode(1, {})
