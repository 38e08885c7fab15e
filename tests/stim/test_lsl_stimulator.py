"""LslStimulator: a real pylsl inlet on this machine receives the JSON markers."""

from __future__ import annotations

import json
import os
import uuid

import pylsl
import pytest

from closedloop.errors import StimulatorError
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.lsl import FIELDS, LslStimulator


def cmd(t: float, current: float, channel: int = 1, muscle: str = "biceps",
        phase: str = "plateau") -> StimCommand:
    return StimCommand(muscle, channel, current, 250.0, 35.0, int(t * 1000), t, phase)


@pytest.fixture
def connected():
    """An open LslStimulator with a unique name and a connected inlet."""
    name = f"closedloop-stim-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stim = LslStimulator(name, clock=lambda: 777.0, n_channels=3)
    stim.open()
    found = pylsl.resolve_byprop("name", name, timeout=10.0)
    assert found, "the marker stream was not found on this machine"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(timeout=10.0)
    assert stim.outlet.wait_for_consumers(10.0)
    yield stim, inlet
    stim.close()
    inlet.close_stream()


def pull(inlet: pylsl.StreamInlet, n: int) -> list[tuple[dict, float]]:
    out = []
    for _ in range(n):
        sample, ts = inlet.pull_sample(timeout=10.0)
        assert sample is not None, "marker not received"
        out.append((json.loads(sample[0]), ts))
    return out


def test_stream_declaration(connected):
    stim, inlet = connected
    info = inlet.info(timeout=10.0)
    assert info.type() == "Markers"
    assert info.channel_count() == 1
    assert info.channel_format() == pylsl.cf_string
    assert info.nominal_srate() == pylsl.IRREGULAR_RATE
    assert info.source_id() == f"closedloop-stim:{stim.name}"
    desc = info.desc()
    assert desc.child_value("encoding") == "json"
    fields, got = desc.child("fields").first_child(), []
    while not fields.empty():
        got.append(fields.child_value())
        fields = fields.next_sibling()
    assert tuple(got) == FIELDS


def test_commands_arrive_as_json_stamped_with_stream_time(connected):
    stim, inlet = connected
    stim.apply([cmd(12.5, 4.0), cmd(12.5, 0.0, channel=2, muscle="triceps", phase="off")])
    stim.apply([cmd(0.0, 2.0, channel=3, muscle="wrist")])
    got = pull(inlet, 3)
    first, ts = got[0]
    assert first == {"muscle": "biceps", "channel": 1, "current_ma": 4.0,
                     "pulse_width_us": 250.0, "frequency_hz": 35.0, "sample": 12500,
                     "stream_time": 12.5, "phase": "plateau"}
    assert ts == 12.5
    assert got[1][0]["phase"] == "off" and got[1][0]["current_ma"] == 0.0
    # stream time 0.0 would mean "now" to liblsl: pushed at 1 ns instead
    assert got[2][0]["stream_time"] == 0.0 and got[2][1] == pytest.approx(1e-9)
    assert stim.outputs[1].current_ma == 4.0 and not stim.outputs[2].is_on


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


def test_close_publishes_stop_markers_first(connected):
    stim, inlet = connected
    stim.apply([cmd(2.0, 4.0)])
    stim.close()
    got = pull(inlet, 4)
    assert [m["phase"] for m, _ in got] == ["plateau", "stop", "stop", "stop"]
    assert stim.outlet is None and not stim.is_open
    stim.stop_all()  # safe on a closed driver
    with pytest.raises(StimulatorError, match="not open"):
        stim.apply([cmd(3.0, 1.0)])


def test_non_finite_stream_time_uses_the_clock(connected):
    stim, inlet = connected
    stim.apply([StimCommand("biceps", 1, 1.0, 250.0, 35.0, 5, float("nan"), "plateau")])
    ((marker, ts),) = pull(inlet, 1)
    assert marker["stream_time"] is None and ts == 777.0


def test_apply_before_open_and_empty_name():
    with pytest.raises(StimulatorError, match="not open; call open"):
        LslStimulator("x").apply([cmd(1.0, 1.0)])
    with pytest.raises(StimulatorError, match="must not be empty"):
        LslStimulator("")


def test_close_waits_for_delivery_only_when_someone_listens(connected):
    slept: list[float] = []
    quiet = LslStimulator(f"closedloop-stim-quiet-{uuid.uuid4().hex[:8]}", close_grace_s=0.3,
                          sleep=slept.append)
    quiet.open()
    quiet.close()
    assert slept == []  # nobody listening: close at once
    stim, inlet = connected
    stim._sleep = slept.append
    stim.close()
    assert slept == [0.5]
