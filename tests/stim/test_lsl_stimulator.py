"""LslStimulator: a real pylsl inlet on this machine receives the JSON markers."""

from __future__ import annotations

import json
import time

import pylsl
import pytest

from closedloop.errors import StimulatorError
from closedloop.identity import SessionId
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.lsl import FIELDS, FORMAT, LslStimulator


def cmd(t: float, current: float, channel: int = 1, muscle: str = "biceps",
        phase: str = "plateau") -> StimCommand:
    return StimCommand(muscle, channel, current, 250.0, 35.0, int(t * 1000), t, phase)


def session() -> SessionId:
    return SessionId.new("stim-test")


def connect(stim: LslStimulator) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("source_id", stim.source_id, timeout=10.0)
    assert found, "the marker stream was not found on this machine"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(timeout=10.0)
    assert stim.outlet.wait_for_consumers(10.0)
    return inlet


@pytest.fixture
def connected():
    """An open LslStimulator of a fresh session and a connected inlet."""
    stim = LslStimulator(session(), clock=lambda: 777.0, n_channels=3)
    stim.open()
    inlet = connect(stim)
    yield stim, inlet
    stim.close()
    inlet.close_stream()


def pull(inlet: pylsl.StreamInlet, n: int, kinds=("command",)) -> list[tuple[dict, float]]:
    """The next ``n`` messages of the given kinds (heartbeats skipped by default)."""
    out = []
    deadline = time.monotonic() + 10.0
    while len(out) < n and time.monotonic() < deadline:
        sample, ts = inlet.pull_sample(timeout=1.0)
        if sample is not None:
            msg = json.loads(sample[0])
            if msg["kind"] in kinds:
                out.append((msg, ts))
    assert len(out) == n, f"only {len(out)} of {n} messages received"
    return out


def test_stream_declaration_carries_the_session(connected):
    stim, inlet = connected
    uid = stim.session.uid
    info = inlet.info(timeout=10.0)
    assert info.type() == "Markers"
    assert info.channel_count() == 1
    assert info.channel_format() == pylsl.cf_string
    assert info.nominal_srate() == pylsl.IRREGULAR_RATE
    # the session id in the name, the source_id and the description
    assert info.name() == f"closedloop-stim-{uid}"
    assert info.source_id() == f"closedloop.{uid}.stimulator"
    cl = info.desc().child("closedloop")
    assert cl.child_value("session") == stim.session.name
    assert cl.child_value("session_uid") == uid
    assert cl.child_value("role") == "stimulator"
    assert cl.child_value("format") == FORMAT
    assert cl.child_value("heartbeat_ms") == "50"
    desc = info.desc()
    assert desc.child_value("encoding") == "json"
    fields, got = desc.child("fields").first_child(), []
    while not fields.empty():
        got.append(fields.child_value())
        fields = fields.next_sibling()
    assert tuple(got) == FIELDS


def test_two_sessions_never_share_a_name_or_source_id():
    a, b = LslStimulator(session()), LslStimulator(session())
    assert a.name != b.name and a.source_id != b.source_id
    assert a.session.uid in a.name and a.session.uid in a.source_id


def test_commands_arrive_as_json_with_session_and_seq(connected):
    stim, inlet = connected
    stim.apply([cmd(12.5, 4.0), cmd(12.5, 0.0, channel=2, muscle="triceps", phase="off")])
    stim.apply([cmd(0.0, 2.0, channel=3, muscle="wrist")])
    got = pull(inlet, 3)
    first, ts = got[0]
    assert set(first) == set(FIELDS)
    assert {k: v for k, v in first.items() if k != "seq"} == {
        "kind": "command", "session": stim.session.uid, "muscle": "biceps", "channel": 1,
        "current_ma": 4.0, "pulse_width_us": 250.0, "frequency_hz": 35.0, "sample": 12500,
        "stream_time": 12.5, "phase": "plateau"}
    assert ts == 12.5
    assert got[1][0]["phase"] == "off" and got[1][0]["current_ma"] == 0.0
    assert [m["seq"] for m, _ in got] == sorted(m["seq"] for m, _ in got)
    # stream time 0.0 would mean "now" to liblsl: pushed at 1 ns instead
    assert got[2][0]["stream_time"] == 0.0 and got[2][1] == pytest.approx(1e-9)
    assert stim.outputs[1].current_ma == 4.0 and not stim.outputs[2].is_on


def test_heartbeats_every_50_ms_with_the_state_and_one_seq_for_all(connected):
    stim, inlet = connected
    stim.apply([cmd(1.0, 4.0, channel=2)])
    msgs: list[dict] = []
    arrivals: list[float] = []
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        sample, _ = inlet.pull_sample(timeout=0.2)
        if sample is not None:
            msgs.append(json.loads(sample[0]))
            arrivals.append(time.monotonic())
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
    assert all(m["session"] == stim.session.uid for m in msgs)
    beats = [(m, t) for m, t in zip(msgs, arrivals, strict=True) if m["kind"] == "heartbeat"]
    assert len(beats) >= 12  # ~20 in one second
    after = [m for m, _ in beats if m["seq"] > next(
        x["seq"] for x in msgs if x["kind"] == "command")]
    assert after and all(m["state"] == {"1": 0.0, "2": 4.0, "3": 0.0} for m in after)
    assert all(m["period_ms"] == 50.0 for m, _ in beats)


def test_stop_all_publishes_an_off_marker_per_channel(connected):
    stim, inlet = connected
    stim.apply([cmd(1.0, 4.0)])
    stim.stop_all()
    got = pull(inlet, 4)[1:]
    assert [(m["channel"], m["current_ma"], m["phase"], m["sample"]) for m, _ in got] == [
        (1, 0.0, "stop", None), (2, 0.0, "stop", None), (3, 0.0, "stop", None)]
    assert got[0][0]["muscle"] == "biceps" and got[1][0]["muscle"] == ""
    assert all(ts == 777.0 for _, ts in got)
    assert not stim.any_on


def test_close_publishes_stop_markers_then_end(connected):
    stim, inlet = connected
    stim.apply([cmd(2.0, 4.0)])
    stim.close()
    got = pull(inlet, 5, kinds=("command", "end"))
    assert [m["phase"] if m["kind"] == "command" else "END" for m, _ in got] == [
        "plateau", "stop", "stop", "stop", "END"]
    assert stim.outlet is None and not stim.is_open
    stim.stop_all()  # safe on a closed driver
    with pytest.raises(StimulatorError, match="not open"):
        stim.apply([cmd(3.0, 1.0)])


def test_heartbeats_stop_when_closed():
    stim = LslStimulator(session(), close_grace_s=0.0)
    stim.open()
    thread = stim._beat_thread
    assert thread is not None and thread.is_alive()
    stim.close()
    assert not thread.is_alive()


def test_non_finite_stream_time_uses_the_clock(connected):
    stim, inlet = connected
    stim.apply([StimCommand("biceps", 1, 1.0, 250.0, 35.0, 5, float("nan"), "plateau")])
    ((marker, ts),) = pull(inlet, 1)
    assert marker["stream_time"] is None and ts == 777.0


def test_a_heartbeat_that_cannot_be_sent_reaches_the_loop():
    def broken_clock() -> float:
        raise RuntimeError("clock gone")

    stim = LslStimulator(session(), clock=broken_clock, close_grace_s=0.0)
    stim.open()
    try:
        deadline = time.monotonic() + 5.0
        while stim._beat_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(StimulatorError, match="sending a heartbeat.*clock gone"):
            stim.check()
    finally:
        stim._clock = lambda: 1.0
        stim.close()


def test_bad_arguments():
    with pytest.raises(StimulatorError, match="not open; call open"):
        LslStimulator(session()).apply([cmd(1.0, 1.0)])
    with pytest.raises(StimulatorError, match="must not be empty"):
        LslStimulator(session(), "")
    with pytest.raises(StimulatorError, match="heartbeat_s"):
        LslStimulator(session(), heartbeat_s=0.2)


def test_close_waits_for_delivery_only_when_someone_listens(connected):
    slept: list[float] = []
    quiet = LslStimulator(session(), close_grace_s=0.3, sleep=slept.append)
    quiet.open()
    quiet.close()
    assert slept == []  # nobody listening: close at once
    stim, inlet = connected
    stim._sleep = slept.append
    stim.close()
    assert slept == [0.5]
