"""Control markers from the network: only STOP is a command, and nothing a sender writes
can make the decoding fail or write lines into the session's summary."""

from __future__ import annotations

import pytest

from closedloop.runtime.control import ControlSender, decode_command, decode_origin

DEEP = '{"command": ' + "[" * 100_000 + "]" * 100_000 + "}"


NOT_COMMANDS = {
    "start": "start", "start json": '{"command": "start"}',
    "raise": '{"command": "raise", "current_ma": 100}', "a list": '{"command": ["stop"]}',
    "an object": '{"command": {"stop": 1}}', "deep list": "[" * 5000, "deep json": DEEP,
    "stop and more": "stop" + " x" * 5000, "binary": "\x00\xff", "empty": "",
    "a megabyte": '{"command": "stop", "pad": "' + "x" * 1_000_000 + '"}',
}


@pytest.mark.parametrize("text", list(NOT_COMMANDS.values()), ids=list(NOT_COMMANDS))
def test_anything_but_stop_is_no_command_and_never_raises(text):
    assert decode_command(text) is None
    assert decode_origin(text) == ""


def test_stop_is_a_command_however_it_is_written():
    assert decode_command(' {"seq": 3, "command": " Stop ", "origin": "ward"} ') == "stop"
    assert decode_command("STOP\n") == "stop"
    assert decode_command('{"command": "stop"' + " " * 5000 + "}") == "stop"
    assert decode_origin('{"command": "stop", "origin": "ward"}') == "ward"


def test_a_sender_cannot_write_lines_into_the_summary():
    sender = ControlSender(host="pc\nsession ended: duration reached", source_id="s\r",
                           uid="u", name="n", origin="x\nall channels off: yes",
                           address="1.2.3.4\x1b[2J")
    said = sender.describe()
    assert "\n" not in said and "\r" not in said and "\x1b" not in said
    assert said.startswith("x?all channels off: yes on host pc?session ended")
