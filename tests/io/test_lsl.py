"""The LSL discovery helpers (:mod:`closedloop.io.lsl`) against real outlets on loopback."""

from __future__ import annotations

import uuid

import pylsl

from closedloop.io.lsl import channel_field, describe_stream, list_streams, own_session


def _outlet(name: str, *, session: str | None = None, rate: float = 500.0) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EMG", 2, rate, pylsl.cf_float32, f"{name}-sid")
    chans = info.desc().append_child("channels")
    for label, unit in (("biceps", "microvolts"), ("counter", "")):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        if unit:
            ch.append_child_value("unit", unit)
    if session is not None:  # as closedloop's own outlets describe themselves
        info.desc().append_child("closedloop").append_child_value("session", session)
    return pylsl.StreamOutlet(info)


def _full_info(name: str) -> pylsl.StreamInfo:
    """The stream's whole description (a resolve alone does not carry ``desc``)."""
    (found,) = pylsl.resolve_byprop("name", name, 1, 5.0)
    inlet = pylsl.StreamInlet(found)
    try:
        return inlet.info(timeout=5.0)
    finally:
        inlet.close_stream()


def test_every_visible_stream_is_listed_on_one_line() -> None:
    name = f"io-lsl-{uuid.uuid4().hex[:10]}"
    irregular = f"{name}-markers"
    outlets = [_outlet(name), _outlet(irregular, rate=pylsl.IRREGULAR_RATE)]
    lines = list_streams(1.0)
    assert (f"name={name!r} type='EMG' source_id={name + '-sid'!r} channels=2 rate=500 Hz "
            f"host=") in "\n".join(lines)
    assert any(f"name={irregular!r}" in line and "rate=irregular" in line for line in lines)
    assert all("\n" not in line for line in lines)
    (info,) = pylsl.resolve_byprop("name", name, 1, 5.0)
    assert describe_stream(info) in lines
    del outlets


def test_channel_fields_and_the_session_of_a_closedloop_stream() -> None:
    plain, own = (f"io-lsl-{uuid.uuid4().hex[:10]}" for _ in range(2))
    outlets = [_outlet(plain), _outlet(own, session="closedloop-arm-0123456789ab")]
    info = _full_info(plain)
    assert channel_field(info, "label") == ["biceps", "counter"]
    assert channel_field(info, "unit") == ["microvolts", ""]  # '' where missing
    assert channel_field(info, "type") == ["", ""]
    assert own_session(info) is None
    assert own_session(_full_info(own)) == "closedloop-arm-0123456789ab"
    del outlets
