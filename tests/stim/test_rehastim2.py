"""The RehaStim2 driver against the strict emulator on a real pseudo-terminal."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import serial

from closedloop.errors import ConfigError, DeviceError, DeviceLostError, StimulatorError
from closedloop.stim.base import ChannelOutput
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers import sciencemode2 as sm
from closedloop.stim.drivers.rehastim2 import RehaStim2
from tests.emulators.rehastim2 import RehaStim2Emulator

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pty")

#: Generous for a loaded test machine; the timing tests set the device's 0.1 s themselves.
RESPONSE_TIMEOUT = 0.5
ROOT = Path(__file__).resolve().parents[2]


def cmd(channel: int, current: float, pw: float = 200.0, hz: float = 50.0) -> StimCommand:
    return StimCommand("m", channel, current, pw, hz, sample=0, stream_time=0.0, phase="test")


def stimulating(emu: RehaStim2Emulator) -> list[str]:
    """Commands other than Watchdog, by name, in the order the emulator received them."""
    return [r.name for r in emu.received if r.cmd != sm.Command.WATCHDOG]


def wait_for_fault(driver: RehaStim2, exc_type: type[Exception], timeout: float) -> Exception:
    """Poll ``check()`` until it raises ``exc_type`` (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            driver.check()
        except exc_type as exc:
            return exc
        time.sleep(0.01)
    pytest.fail(f"check() raised no {exc_type.__name__} within {timeout} s")


@pytest.fixture
def emulator() -> Iterator[RehaStim2Emulator]:
    emu = RehaStim2Emulator(init_interval_s=0.1)  # the device's 0.5 s: see the handshake test
    emu.start()
    yield emu
    emu.stop()
    assert emu.error is None
    assert emu.violations == []
    assert all(r.canonical for r in emu.received), "driver escaped more than F0, 0F, 81"


@pytest.fixture
def make_driver(emulator: RehaStim2Emulator) -> Iterator[Callable[..., RehaStim2]]:
    drivers: list[RehaStim2] = []

    def make(**kwargs: object) -> RehaStim2:
        args = {"channels": (1, 2), "response_timeout": RESPONSE_TIMEOUT, **kwargs}
        driver = RehaStim2(emulator.path, **args)
        drivers.append(driver)
        driver.open()
        return driver

    yield make
    for driver in drivers:
        try:
            driver.close()
        except DeviceError:
            pass  # tests that break the link check close() themselves


@pytest.fixture
def driver(make_driver: Callable[..., RehaStim2]) -> RehaStim2:
    return make_driver()


# --- connection ------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_handshake_with_the_device_init_interval():
    with RehaStim2Emulator() as emu:  # Init every 0.5 s, as the device
        with RehaStim2(emu.path, response_timeout=RESPONSE_TIMEOUT) as driver:
            assert emu.connected and driver.device_version == 1
            assert emu.inits_sent <= 3
        assert emu.running_channels == {}
        assert emu.violations == []


@pytest.mark.timeout(15)
def test_a_device_answering_at_its_max_response_time_is_not_lost():
    """DOC2 Table 7: the device may take up to MaxResponseTime (100 ms) to answer a
    command, counted from when it has the packet; the driver's default wait (what the
    command line uses) must leave room for the link's latency on top."""
    with RehaStim2Emulator(init_interval_s=0.1, response_delay_s=0.1) as emu:
        with RehaStim2(emu.path, channels=(1, 2)) as driver:
            driver.apply([cmd(1, 20.0)])
            driver.apply([cmd(1, 30.0), cmd(2, 10.0)])
            time.sleep(0.7)  # a plateau: the mode probe meets the slow device too
            driver.check()
            assert {ch: s.current_ma for ch, s in emu.running_channels.items()} == {1: 30, 2: 10}
        assert emu.running_channels == {} and emu.violations == []
        assert all(r.result == 0 for r in emu.received if r.answer)


@pytest.mark.timeout(10)
def test_handshake_line_settings_and_mode_check(driver, emulator):
    assert driver.is_open and emulator.connected
    assert driver.device_version == 1
    settings = emulator.line_settings()
    assert settings["baudrate"] == settings["ispeed"] == 460800
    assert not settings["two_stop_bits"] and not settings["rtscts"] and not settings["xonxoff"]
    first = emulator.received[0]
    assert first.cmd == sm.Command.INIT_ACK and first.note == "connected"
    assert stimulating(emulator)[1:] == ["GetStimulationMode"]
    assert driver.get_stimulation_mode() is sm.StimulationMode.START
    assert driver.outputs == {1: ChannelOutput(), 2: ChannelOutput()}


@pytest.mark.timeout(10)
def test_no_device_raises_device_lost_with_a_helpful_message():
    master, slave = os.openpty()  # a port where nothing ever sends Init
    tty.setraw(slave)
    path = os.ttyname(slave)
    driver = RehaStim2(path, init_timeout=0.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(DeviceLostError) as info:
            driver.open()
        elapsed = time.monotonic() - t0
    finally:
        os.close(master)
        os.close(slave)
    assert 0.5 <= elapsed < 1.5
    message = str(info.value)
    assert path in message and "switched on" in message and "cable" in message
    assert not driver.is_open
    driver.close()  # safe after a failed open
    driver.stop_all()


@pytest.mark.timeout(10)
def test_missing_port_raises_device_lost():
    with pytest.raises(DeviceLostError, match="port name"):
        RehaStim2("/dev/does-not-exist-rehastim2").open()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": ()},
        {"channels": (0,)},
        {"channels": (1, 1)},
        {"channels": (9,)},
        {"keepalive_s": 1.2},
        {"keepalive_s": 0.0},
        {"response_timeout": -1.0},
        {"init_timeout": float("nan")},
    ],
)
def test_bad_constructor_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        RehaStim2("/dev/null", **kwargs)


# --- stimulation -----------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_init_start_update_stop_sequence(driver, emulator):
    driver.apply([cmd(1, 20.0, 200.0, 50.0)])
    assert emulator.mode is sm.StimulationMode.STARTED
    assert emulator.main_interval_ms == 20.0
    channels = emulator.channels
    assert (channels[1].current_ma, channels[1].pulse_width_us, channels[1].running) == (
        20,
        200,
        True,
    )
    assert channels[2].current_ma == 0 and not channels[2].running
    init = emulator.commands(sm.Command.INIT_CHANNEL_LIST_MODE)[-1]
    assert init.data == bytes((0, 0b11, 0, 13, 0, 38, 0))  # both configured channels, 8 ms IPI
    assert driver.outputs[1] == ChannelOutput(20.0, 200.0, 50.0)
    assert driver.any_on

    driver.apply([cmd(1, 25.0, 250.0), cmd(2, 10.0, 300.0)])  # update: no re-init
    running = emulator.running_channels
    assert {ch: (s.current_ma, s.pulse_width_us) for ch, s in running.items()} == {
        1: (25, 250),
        2: (10, 300),
    }
    driver.apply([cmd(1, 0.0)])  # one channel off: an update with 0 mA
    assert set(emulator.running_channels) == {2}
    assert emulator.channels[1].current_ma == 0
    assert not driver.outputs[1].is_on and driver.outputs[2].is_on

    driver.apply([cmd(2, 0.0)])  # everything off: Stop
    assert emulator.mode is sm.StimulationMode.START and emulator.running_channels == {}
    assert not driver.any_on
    assert stimulating(emulator)[1:] == [
        "GetStimulationMode",
        "InitChannelListMode",
        "StartChannelListMode",
        "StartChannelListMode",
        "StartChannelListMode",
        "StopChannelListMode",
    ]
    assert all(r.result == 0 for r in emulator.received if r.answer)


@pytest.mark.timeout(10)
def test_repeated_identical_levels_send_nothing_new(driver, emulator):
    driver.apply([cmd(1, 20.0)])
    sent = [p for p in driver.sent_packets if p.cmd != sm.Command.WATCHDOG]
    driver.apply([cmd(1, 20.0)])
    driver.apply([cmd(2, 0.0)])
    assert [p for p in driver.sent_packets if p.cmd != sm.Command.WATCHDOG] == sent
    walls = [p.wall for p in sent]
    assert walls == sorted(walls) and len(set(walls)) == len(walls)


@pytest.mark.timeout(10)
def test_levels_are_rounded_down_and_period_up(driver, emulator):
    driver.apply([cmd(1, 12.7, 250.9, 30.0)])
    state = emulator.channels[1]
    assert (state.current_ma, state.pulse_width_us) == (12, 250)
    assert emulator.main_interval_ms == 33.5
    assert driver.outputs[1] == ChannelOutput(12.0, 250.0, 1000.0 / 33.5)
    # what the loop records and blanks by: the rate the emulated device runs at
    assert driver.delivered_hz(30.0) == 1000.0 / emulator.main_interval_ms
    assert driver.delivered_hz(35.0) == 1000.0 / 29.0 and driver.delivered_hz(50.0) == 50.0
    assert driver.delivered_hz(500.0) == 500.0  # out of range: apply() refuses it
    driver.apply([cmd(1, 0.6, 250.0, 30.0)])  # rounds to 0 mA: off, and stops
    assert emulator.running_channels == {} and not driver.any_on


@pytest.mark.timeout(10)
def test_channels_on_both_stimulation_modules_get_16_ms_between_pulse_groups(make_driver,
                                                                             emulator):
    """DOC2 Table 2: the inter-pulse interval is at least 8 ms per stimulation module
    (channels 1-4 and 5-8, processed one after the other), and the main interval at
    least that: a list on both modules is initialised with 16 ms and runs <= 62.5 Hz."""
    driver = make_driver(channels=(1, 5))
    driver.apply([cmd(1, 20.0, hz=50.0), cmd(5, 10.0, hz=50.0)])
    init = emulator.commands(sm.Command.INIT_CHANNEL_LIST_MODE)[-1]
    assert init.data == bytes((0, 0b0001_0001, 0, 29, 0, 38, 0))  # 16 ms, 20 ms
    assert init.result == 0 and emulator.running_channels.keys() == {1, 5}
    sent = len(driver.sent_packets)
    with pytest.raises(StimulatorError, match=r"at most 62.5 Hz.*one module"):
        driver.apply([cmd(1, 20.0, hz=80.0)])  # 12.5 ms < 16 ms: refused before sending
    assert all(p.cmd == sm.Command.WATCHDOG for p in driver.sent_packets[sent:])
    driver.apply([cmd(1, 20.0, hz=62.5)])  # 16 ms: re-initialised at the new frequency
    assert emulator.main_interval_ms == 16.0 and emulator.running_channels.keys() == {1, 5}
    assert driver.delivered_hz(62.5) == 62.5 and driver.delivered_hz(80.0) == 80.0
    one_module = RehaStim2(emulator.path, channels=(5, 6, 7, 8))  # not opened
    assert one_module.min_interval_ms == 8.0 and one_module.delivered_hz(125.0) == 125.0


@pytest.mark.timeout(10)
def test_frequency_change_stops_reinitialises_and_restarts(driver, emulator):
    driver.apply([cmd(1, 20.0, 200.0, 50.0)])
    before = len(stimulating(emulator))
    driver.apply([cmd(2, 15.0, 300.0, 40.0)])
    assert stimulating(emulator)[before:] == [
        "StopChannelListMode",
        "InitChannelListMode",
        "StartChannelListMode",
    ]
    assert emulator.main_interval_ms == 25.0
    assert set(emulator.running_channels) == {1, 2}
    assert driver.outputs[1] == ChannelOutput(20.0, 200.0, 40.0)  # follows the new frequency
    assert driver.outputs[2] == ChannelOutput(15.0, 300.0, 40.0)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("commands", "match"),
    [
        ([cmd(1, 10.0, 19.0)], "pulse width 19 us"),
        ([cmd(1, 10.0, 501.0)], "pulse width 501 us"),
        ([cmd(1, 131.0)], "131 mA"),
        ([cmd(1, float("nan"))], "invalid"),
        ([cmd(1, 10.0, hz=200.0)], "frequency 200 Hz"),
        ([cmd(3, 10.0)], "channel 3"),
        ([cmd(1, 10.0, hz=50.0), cmd(2, 10.0, hz=40.0)], "one frequency"),
    ],
)
def test_values_the_device_would_refuse_raise_before_sending(driver, commands, match):
    sent = len([p for p in driver.sent_packets if p.cmd != sm.Command.WATCHDOG])
    with pytest.raises(StimulatorError, match=match):
        driver.apply(commands)
    assert len([p for p in driver.sent_packets if p.cmd != sm.Command.WATCHDOG]) == sent
    assert not driver.any_on


@pytest.mark.timeout(10)
def test_keepalive_keeps_the_device_watchdog_from_firing(driver, emulator):
    driver.apply([cmd(1, 20.0)])
    fired = emulator.wait_until(
        lambda e: e.watchdog_expiries > 0 or not e.running_channels, timeout=2.5
    )
    assert not fired
    driver.check()
    times = [r.t for r in emulator.received]
    # Watchdogs, and while stimulating the mode probes: both are valid packets
    alive = emulator.commands(sm.Command.WATCHDOG) + emulator.commands(
        sm.Command.GET_STIMULATION_MODE)
    assert len(alive) >= 5
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 0.75
    assert emulator.running_channels.keys() == {1}


@pytest.mark.timeout(10)
def test_device_reset_mid_session_is_device_lost():
    # the emulated device's watchdog (0.3 s) is shorter than the driver's keep-alive (0.5 s)
    with RehaStim2Emulator(watchdog_s=0.3) as emu:
        driver = RehaStim2(emu.path, response_timeout=RESPONSE_TIMEOUT)
        driver.open()
        driver.apply([cmd(1, 20.0)])
        assert emu.wait_until(lambda e: e.watchdog_expiries == 1, timeout=2.0)
        assert emu.running_channels == {}
        exc = wait_for_fault(driver, DeviceLostError, timeout=2.0)
        assert "Init again" in str(exc)
        assert not driver.any_on
        with pytest.raises(DeviceLostError, match="refuses to stimulate"):
            driver.apply([cmd(1, 20.0)])
        with pytest.raises(DeviceLostError):
            driver.close()  # the reset device ignores Stop until a new handshake
        assert not driver.is_open


# --- faults ------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("inject", "match"),
    [
        ("press_emergency_switch", "error -1: emergency switch"),
        ("electrode_error", "error -2: electrode error"),
        ("module_error", "error -3: stimulation module error"),
    ],
)
def test_stimulation_error_is_raised_and_outputs_marked_off(driver, emulator, inject, match):
    driver.apply([cmd(1, 20.0), cmd(2, 10.0)])
    getattr(emulator, inject)()
    assert emulator.running_channels == {}
    exc = wait_for_fault(driver, StimulatorError, timeout=2.0)
    assert isinstance(exc, StimulatorError) and not isinstance(exc, DeviceLostError)
    assert match in str(exc)
    assert not driver.any_on
    driver.check()  # reported once
    with pytest.raises(StimulatorError, match=match):
        driver.apply([cmd(1, 20.0)])  # refuses to stimulate after a stimulation error
    stops = len(emulator.commands(sm.Command.STOP_CHANNEL_LIST_MODE))
    driver.stop_all()  # still sends Stop, and it is confirmed
    assert len(emulator.commands(sm.Command.STOP_CHANNEL_LIST_MODE)) == stops + 1


@pytest.mark.timeout(10)
def test_a_refusal_after_a_stimulation_error_names_the_error(driver, emulator):
    """A command in flight when the electrode error comes is refused -3 (the device went
    back to start mode): the message names the electrode error, the cause, too."""
    driver.apply([cmd(1, 20.0)])
    emulator.electrode_error()
    wait_for_fault(driver, StimulatorError, timeout=2.0)
    pulses = {1: sm.ChannelPulse(25, 200), 2: sm.ChannelPulse(0, 200)}
    with driver._txn_lock, pytest.raises(  # as an apply() that was already past its check
            StimulatorError, match=r"refused StartChannelListMode .*-3, wrong mode.*after it "
            r"reported: .*error -2: electrode error"):
        driver._transact(functools.partial(sm.start_channel_list_mode, pulses=pulses))


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("result", "command", "match"),
    [
        (-2, "InitChannelListMode", r"refused InitChannelListMode .*-2, parameter error"),
        (-3, "StartChannelListMode", r"refused StartChannelListMode .*-3, wrong mode"),
    ],
)
def test_negative_ack_raises_stimulator_error(driver, emulator, result, command, match):
    if command == "StartChannelListMode":
        driver.apply([cmd(2, 5.0)])  # running: the next level change is only a Start
    emulator.answer_with(result, command)  # not a mode probe that comes first
    levels = driver.outputs
    with pytest.raises(StimulatorError, match=match):
        driver.apply([cmd(1, 30.0)])
    assert driver.outputs == levels  # the device refused: nothing changed
    refused = [r for r in emulator.received if r.result == result]
    assert [r.name for r in refused] == [command]
    driver.check()  # a refusal is raised to the caller, not stored
    driver.apply([cmd(1, 30.0)])  # and the next command works
    assert emulator.channels[1].current_ma == 30


# --- busy (-8): the device is still processing; not a refusal -----------------------------------


def results(emu: RehaStim2Emulator, command: int) -> list[int | None]:
    return [r.result for r in emu.commands(command)]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("k", [1, 3])
def test_busy_answers_are_sent_again_and_each_command_executed_once_in_order(driver, emulator,
                                                                            k):
    driver.apply([cmd(1, 5.0)])
    for level in (10.0, 15.0, 20.0):
        emulator.answer_busy(k)
        driver.apply([cmd(1, level)])  # returns normally: busy is not a refusal
        assert emulator.channels[1].current_ma == level
    starts = emulator.commands(sm.Command.START_CHANNEL_LIST_MODE)
    assert [r.result for r in starts] == [0] + ([-8] * k + [0]) * 3
    assert [r.data[3] for r in starts if r.result == 0] == [5, 10, 15, 20]  # in order, once
    numbers = [r.pkt_no for r in starts[1:]]  # every send is a new packet
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert driver.outputs[1].current_ma == 20.0
    driver.check()  # nothing stored: the session goes on


@pytest.mark.timeout(10)
def test_busy_on_init_probe_and_stop_is_sent_again_too(make_driver, emulator):
    driver = make_driver(probe_s=0.2)
    emulator.answer_busy(2)
    driver.apply([cmd(1, 20.0)])
    assert results(emulator, sm.Command.INIT_CHANNEL_LIST_MODE) == [-8, -8, 0]
    assert emulator.running_channels.keys() == {1}
    probes = len(emulator.commands(sm.Command.GET_STIMULATION_MODE))
    emulator.answer_busy(2)  # the plateau's mode probe meets a busy device
    assert emulator.wait_until(
        lambda e: len(e.commands(sm.Command.GET_STIMULATION_MODE)) >= probes + 4, 3.0)
    assert results(emulator, sm.Command.GET_STIMULATION_MODE)[probes:probes + 3] == [-8, -8, 0]
    driver.check()  # no fault: a busy device is not a lost one
    # the spec lists only 0/-1 for Stop; the driver retries anyway
    emulator.answer_with(-8, "StopChannelListMode")
    driver.stop_all()
    assert results(emulator, sm.Command.STOP_CHANNEL_LIST_MODE) == [-8, 0]
    assert emulator.running_channels == {} and not driver.any_on


@pytest.mark.timeout(10)
def test_a_device_that_stays_busy_is_given_up_after_busy_timeout(make_driver, emulator):
    driver = make_driver(busy_timeout=0.2)
    driver.apply([cmd(1, 20.0)])
    emulator.answer_busy(None)  # busy until cleared
    t0 = time.monotonic()
    with pytest.raises(StimulatorError, match=r"busy \(-8\) to StartChannelListMode (\d+) "
                       r"times.*switch the stimulator off and on") as info:
        driver.apply([cmd(1, 25.0)])
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 0.2 + RESPONSE_TIMEOUT
    sends = emulator.commands(sm.Command.START_CHANNEL_LIST_MODE)[1:]
    assert 4 <= len(sends) <= 12 and all(r.result == -8 for r in sends)  # paced, not flooded
    assert f"{len(sends)} times" in str(info.value)
    assert emulator.channels[1].current_ma == 20 and driver.outputs[1].current_ma == 20.0
    driver.stop_all()  # StopChannelListMode is never busy: the device confirms all off
    assert emulator.running_channels == {} and not driver.any_on


# --- damaged and lost packets: not executed, so sent again (DOC2 5.3) ---------------------------


@pytest.mark.timeout(10)
def test_a_damaged_command_is_sent_again_and_executed_once(driver, emulator):
    """A packet that reaches the device damaged gets its Ack with -1 (transfer error) and
    is not executed; the PC sends it again. A damaged Stop must not leave it running."""
    driver.apply([cmd(1, 10.0)])
    emulator.damage_next()
    driver.apply([cmd(1, 20.0)])  # returns normally: sent again, executed once
    assert results(emulator, sm.Command.START_CHANNEL_LIST_MODE) == [0, 0]
    assert sum("checksum mismatch in StartChannelListMode" in e for e in emulator.events) == 1
    assert emulator.channels[1].current_ma == 20 and driver.outputs[1].current_ma == 20.0
    driver.check()  # nothing stored: the session goes on
    emulator.damage_next()
    driver.stop_all()
    assert sum("checksum mismatch in StopChannelListMode" in e for e in emulator.events) == 1
    assert emulator.running_channels == {} and not driver.any_on


@pytest.mark.timeout(10)
def test_a_link_that_damages_every_packet_is_given_up_after_busy_timeout(make_driver,
                                                                          emulator):
    driver = make_driver(busy_timeout=0.2)
    driver.apply([cmd(1, 10.0)])
    emulator.damage_next(1000)
    with pytest.raises(StimulatorError, match=r"transfer error \(-1\) to StartChannelListMode "
                       r"\d+ times.*check the USB cable"):
        driver.apply([cmd(1, 20.0)])
    assert emulator.channels[1].current_ma == 10
    emulator.damage_next(0)
    driver.stop_all()
    assert emulator.running_channels == {} and not driver.any_on


@pytest.mark.timeout(10)
def test_a_lost_stop_is_sent_again(make_driver, emulator):
    """A Stop lost on the way gets no answer: it is sent once more, and the device stops
    (without this, it would run on until the driver closed and its 1.2 s watchdog)."""
    driver = make_driver(response_timeout=0.1)
    driver.apply([cmd(1, 20.0)])
    emulator.lose_next()
    t0 = time.monotonic()
    driver.stop_all()  # confirmed by the second Stop
    assert time.monotonic() - t0 < 0.1 + 0.3
    assert emulator.running_channels == {} and not driver.any_on
    assert results(emulator, sm.Command.STOP_CHANNEL_LIST_MODE) == [0]  # the one that came
    assert any("lost on the way" in e and "StopChannelListMode" in e for e in emulator.events)
    with pytest.raises(DeviceLostError, match="did not answer StopChannelListMode.*refuses"):
        driver.apply([cmd(1, 20.0)])  # a packet was lost: the link is not trusted again


# --- the port is exclusive -----------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_a_port_in_use_is_refused_before_anything_is_sent(driver, emulator):
    driver.apply([cmd(1, 20.0)])
    before = emulator.received
    second = RehaStim2(emulator.path, channels=(1, 2), response_timeout=RESPONSE_TIMEOUT)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=f"port {emulator.path} is in use by another "
                       r"program \(another closedloop session.*nothing was sent"):
        second.open()
    assert time.monotonic() - t0 < 0.5  # refused at once, not after a handshake timeout
    assert not second.is_open
    second.close()  # nothing to stop: sends nothing
    time.sleep(0.3)
    assert emulator.received[:len(before)] == before
    assert all(r.cmd == sm.Command.WATCHDOG for r in emulator.received[len(before):])
    driver.apply([cmd(1, 25.0)])  # the first session goes on: its Acks were not taken
    assert emulator.channels[1].current_ma == 25
    driver.check()
    driver.close()
    assert emulator.wait_until(lambda e: e.watchdog_expiries == 1, 3.0)  # device resets
    with RehaStim2(emulator.path, response_timeout=RESPONSE_TIMEOUT) as third:  # free again
        assert third.is_open


@pytest.mark.timeout(10)
def test_unknown_command_answer_is_a_stored_fault(driver, emulator):
    driver._send(lambda n: sm.Packet(n, 99))  # the driver never sends this by itself
    exc = wait_for_fault(driver, StimulatorError, timeout=2.0)
    assert "command 99" in str(exc) and "UnknownCommand" in str(exc)
    with pytest.raises(StimulatorError, match="command 99"):
        driver.apply([cmd(1, 5.0)])


@pytest.mark.timeout(10)
def test_after_a_fault_the_keepalive_stops_so_the_device_stops_by_itself(driver, emulator):
    """A driver that has seen a fault keeps the device alive no longer: if nothing stops
    it (the loop stuck, a stop that fails), the RehaStim2's own 1.2 s watchdog does."""
    driver.apply([cmd(1, 20.0)])
    driver._send(lambda n: sm.Packet(n, 99))  # UnknownCommand: a fault; the device runs on
    wait_for_fault(driver, StimulatorError, timeout=2.0)
    assert emulator.running_channels.keys() == {1}
    t0 = time.monotonic()
    assert emulator.wait_until(lambda e: e.watchdog_expiries == 1, timeout=3.0)
    assert emulator.running_channels == {} and time.monotonic() - t0 < 1.2 + 0.3


@pytest.mark.timeout(10)
def test_a_stop_the_device_refuses_leaves_it_to_its_own_watchdog(driver, emulator):
    driver.apply([cmd(1, 20.0)])
    # not an answer DOC2 lists for Stop (0 / -1): not executed
    emulator.answer_with(-2, "StopChannelListMode")
    with pytest.raises(StimulatorError, match="refused StopChannelListMode"):
        driver.stop_all()
    assert not driver.any_on and emulator.running_channels.keys() == {1}
    t0 = time.monotonic()
    assert emulator.wait_until(lambda e: e.watchdog_expiries == 1, timeout=3.0)
    assert emulator.running_channels == {} and time.monotonic() - t0 < 1.2 + 0.3


@pytest.mark.timeout(10)
def test_silent_device_is_lost_within_the_response_timeout(make_driver, emulator):
    driver = make_driver(response_timeout=0.1)
    driver.apply([cmd(1, 20.0)])
    emulator.go_silent()
    t0 = time.monotonic()
    with pytest.raises(DeviceLostError, match="did not answer StartChannelListMode"):
        driver.apply([cmd(1, 25.0)])
    assert 0.1 <= time.monotonic() - t0 < 0.5
    with pytest.raises(DeviceLostError, match="refuses to stimulate"):
        driver.apply([cmd(1, 25.0)])
    t0 = time.monotonic()
    with pytest.raises(DeviceLostError, match="did not answer StopChannelListMode"):
        driver.stop_all()  # sent twice: a lost Stop is sent once more
    assert time.monotonic() - t0 < 0.5
    assert not driver.any_on
    with pytest.raises(DeviceLostError):
        driver.close()
    assert not driver.is_open
    driver.close()  # twice is fine
    stop = emulator.commands(sm.Command.STOP_CHANNEL_LIST_MODE)
    assert len(stop) == 4 and all(r.note == "ignored: silent" for r in stop)


@pytest.mark.timeout(10)
def test_vanishing_port_is_device_lost(driver, emulator):
    driver.apply([cmd(1, 20.0)])
    emulator.vanish()
    exc = wait_for_fault(driver, DeviceLostError, timeout=2.0)
    assert "is gone" in str(exc)
    assert not driver.any_on
    with pytest.raises(DeviceLostError):
        driver.apply([cmd(1, 20.0)])
    t0 = time.monotonic()
    with pytest.raises(DeviceLostError, match="cannot write"):
        driver.stop_all()
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(DeviceLostError):
        driver.close()
    assert not driver.is_open


@pytest.mark.timeout(10)
def test_close_leaves_every_channel_off(driver, emulator):
    driver.apply([cmd(1, 20.0), cmd(2, 30.0)])
    assert set(emulator.running_channels) == {1, 2}
    driver.close()
    assert emulator.running_channels == {} and emulator.mode is sm.StimulationMode.START
    assert stimulating(emulator)[-1] == "StopChannelListMode"
    assert not driver.is_open and not driver.any_on
    driver.close()
    driver.stop_all()  # safe on a closed driver
    with pytest.raises(StimulatorError, match="not open"):
        driver.apply([cmd(1, 5.0)])


@pytest.mark.timeout(10)
def test_a_port_without_a_latency_setting_keeps_its_own(driver, emulator):
    """A pseudo-terminal has no serial settings to ask for (TIOCGSERIAL fails): the
    driver goes on with the port as it is, says so, and the session works."""
    assert driver.is_open and driver.low_latency is False
    driver.apply([cmd(1, 10.0)])
    assert emulator.wait_until(lambda e: 1 in e.running_channels, 1.0)


@pytest.mark.timeout(10)
def test_the_driver_asks_the_usb_serial_chip_for_its_1_ms_latency_timer(emulator):
    """DOC2 2.1 asks for a 1 ms latency timer (an FTDI chip holds answers 16 ms by
    default): on Linux pyserial's set_low_latency_mode (TIOCSSERIAL, ASYNC_LOW_LATENCY),
    which ftdi_sio turns into 1 ms. A pty cannot take it, so the call is recorded here."""
    from closedloop.stim.drivers.rehastim2 import ask_low_latency

    asked = []
    port = serial.Serial(emulator.path, timeout=0.1)
    try:
        assert ask_low_latency(port) is False  # the real pty: refused, kept as it is
        port.set_low_latency_mode = asked.append  # a port whose driver takes it
        assert ask_low_latency(port) is True and asked == [True]
    finally:
        port.close()
    windows_port = SimpleNamespace(port="COM3")  # pyserial has no such call off Linux
    assert ask_low_latency(windows_port) is False  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_reopen_after_close_does_a_new_handshake(driver, emulator):
    driver.apply([cmd(1, 20.0)])
    driver.close()
    assert emulator.wait_until(lambda e: e.watchdog_expiries == 1, timeout=3.0)
    driver.open()  # the device reset after its watchdog and sends Init again
    driver.apply([cmd(2, 10.0)])
    assert set(emulator.running_channels) == {2}


@pytest.mark.timeout(20)
def test_atexit_stops_stimulation_left_on(emulator):
    script = textwrap.dedent(
        f"""
        from closedloop.stim.commands import StimCommand
        from closedloop.stim.drivers.rehastim2 import RehaStim2
        driver = RehaStim2({emulator.path!r}, response_timeout=1.0)
        driver.open()
        driver.apply([StimCommand("m", 1, 20.0, 200.0, 50.0, 0, 0.0, "test")])
        print("stimulating", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=15
    )
    assert done.returncode == 0, done.stderr
    assert "stimulating" in done.stdout
    assert stimulating(emulator)[-2:] == ["StartChannelListMode", "StopChannelListMode"]
    assert emulator.running_channels == {}


# --- the emulator itself (strictness the driver tests rely on) -----------------------------------


class RawClient:
    """A bare serial client that sends exactly the bytes a test gives it."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 460800, timeout=0.05)
        self.decoder = sm.Decoder()
        self.items: list[sm.Packet | sm.FrameError] = []

    def next_packet(self, timeout: float = 2.0) -> sm.Packet:
        deadline = time.monotonic() + timeout
        while not self.items and time.monotonic() < deadline:
            self.items += self.decoder.feed(self.ser.read(self.ser.in_waiting or 1))
        assert self.items, "no packet from the emulator"
        item = self.items.pop(0)
        assert isinstance(item, sm.Packet), item
        return item

    def send(self, wire: bytes) -> None:
        self.ser.write(wire)

    def connect(self) -> None:
        init = self.next_packet()
        assert init.cmd == sm.Command.INIT
        self.send(sm.init_ack(init.pkt_no).encode())

    def close(self) -> None:
        self.ser.close()


@pytest.fixture
def raw() -> Iterator[tuple[RehaStim2Emulator, RawClient]]:
    with RehaStim2Emulator(init_interval_s=0.1) as emu:
        client = RawClient(emu.path)
        yield emu, client
        client.close()
        assert emu.error is None


@pytest.mark.timeout(10)
def test_emulator_repeats_init_and_ignores_commands_until_a_valid_init_ack(raw):
    emu, client = raw
    first = client.next_packet()
    client.send(sm.init_ack((first.pkt_no + 100) % 256).encode())  # wrong echo
    client.send(sm.get_stimulation_mode(0).encode())
    second = client.next_packet()
    assert second.cmd == sm.Command.INIT and second.pkt_no == (first.pkt_no + 1) % 256
    assert not emu.connected
    client.send(sm.init_ack(second.pkt_no).encode())
    assert emu.wait_until(lambda e: e.connected, timeout=1.0)
    assert [r.note.split(":")[0] for r in emu.received] == ["ignored", "ignored", "connected"]


@pytest.mark.timeout(10)
def test_emulator_is_strict_about_modes_ranges_and_framing(raw):
    emu, client = raw
    client.connect()

    def ask(packet: sm.Packet) -> sm.Packet:
        client.send(packet.encode())
        return client.next_packet()

    def result(packet: sm.Packet) -> int:
        return sm.to_int8(ask(packet).data[0])

    start = sm.start_channel_list_mode
    assert result(start(0, {1: sm.ChannelPulse(10, 200)})) == -3  # before init
    # PSM's 2 ms inter-pulse interval (coded 1)
    assert result(sm.Packet(1, 30, bytes((0, 1, 0, 1, 0, 38, 0)))) == -2
    assert result(sm.Packet(2, 30, bytes((0, 1, 0, 13, 0, 38)))) == -2  # 6 bytes
    assert result(sm.init_channel_list_mode(3, (1, 2), 20.0)) == 0
    assert result(sm.init_channel_list_mode(4, (1, 2), 20.0)) == -3  # already initialised
    assert result(start(5, {1: sm.ChannelPulse(10, 200)})) == -2  # 2 channels need 8 bytes
    assert result(sm.Packet(6, 32, bytes((0, 0, 200, 131, 0, 0, 200, 0)))) == -2  # 131 mA
    assert result(sm.Packet(7, 32, bytes((0, 2, 0, 10, 0, 0, 200, 0)))) == -2  # 512 us
    assert result(start(8, {1: sm.ChannelPulse(10, 200), 2: sm.ChannelPulse(0, 20)})) == 0
    assert emu.running_channels.keys() == {1}
    triplet = {1: sm.ChannelPulse(10, 200, sm.PulseMode.TRIPLET), 2: sm.ChannelPulse(0, 20)}
    assert result(start(9, triplet)) == -2  # 3 x 8 ms does not fit in 20 ms
    assert result(sm.Packet(10, 36, bytes((0, 1, 44, 10)))) == -3  # single pulse while started
    ack = ask(sm.get_stimulation_mode(11))
    assert (ack.cmd, ack.data) == (sm.Command.GET_STIMULATION_MODE_ACK, bytes((0, 2)))
    # pyScienceMode's GetStimulationMode: XORed command byte without escape
    unknown = ask(sm.Packet(12, 0x5F))
    assert (unknown.cmd, unknown.pkt_no, unknown.data) == (sm.Command.UNKNOWN_COMMAND, 12, b"\x5f")
    wire = bytearray(sm.stop_channel_list_mode(13).encode())
    wire[2] ^= 0x01  # bad CRC: the command's Ack with -1, command not executed
    client.send(bytes(wire))
    nack = client.next_packet()
    assert (nack.cmd, nack.pkt_no, nack.data) == (35, 13, b"\xff")
    assert emu.running_channels.keys() == {1}
    assert result(sm.stop_channel_list_mode(13)) == 0
    assert emu.running_channels == {} and emu.mode is sm.StimulationMode.START
    assert result(sm.stop_channel_list_mode(14)) == 0  # Stop is accepted in start mode
    assert emu.violations == []
    client.send(sm.watchdog(20).encode())  # skips 15..19
    assert emu.wait_until(lambda e: e.violations, timeout=1.0)
    assert "packet number 20, expected 15" in emu.violations[0]


@pytest.mark.timeout(10)
def test_emulator_wants_8_ms_between_pulse_groups_per_stimulation_module(raw):
    emu, client = raw
    client.connect()

    def result(packet: sm.Packet) -> int:
        client.send(packet.encode())
        return sm.to_int8(client.next_packet().data[0])

    both = 0b0001_0001  # channels 1 and 5: modules A and B
    assert result(sm.Packet(0, 30, bytes((0, both, 0, 13, 0, 38, 0)))) == -2  # t2 8 ms
    assert result(sm.Packet(1, 30, bytes((0, both, 0, 29, 0, 28, 0)))) == -2  # t1 15 < 16 ms
    assert result(sm.Packet(2, 30, bytes((0, 0b1111, 0, 13, 0, 14, 0)))) == 0  # 1-4: 8 ms
    assert result(sm.stop_channel_list_mode(3)) == 0
    assert result(sm.Packet(4, 30, bytes((0, both, 0, 29, 0, 30, 0)))) == 0  # 16 ms, 16 ms
    assert emu.violations == []


@pytest.mark.timeout(10)
def test_emulator_watchdog_stops_stimulation_and_resends_init(raw):
    emu, client = raw
    client.connect()
    client.send(sm.init_channel_list_mode(0, (1,), 20.0).encode())
    client.send(sm.start_channel_list_mode(1, {1: sm.ChannelPulse(10, 200)}).encode())
    assert client.next_packet().data == b"\x00" and client.next_packet().data == b"\x00"
    assert emu.running_channels.keys() == {1}
    t0 = time.monotonic()
    init = client.next_packet(timeout=3.0)  # nothing sent: the device resets after 1.2 s
    assert init.cmd == sm.Command.INIT
    assert 1.1 <= time.monotonic() - t0 < 2.0
    assert emu.watchdog_expiries == 1 and emu.running_channels == {} and not emu.connected


@pytest.mark.timeout(15)
def test_emulator_runs_as_a_script_with_a_state_file(tmp_path):
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators.rehastim2", "--state", str(state)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        with RehaStim2(path, response_timeout=RESPONSE_TIMEOUT) as driver:
            driver.apply([cmd(1, 20.0)])
            proc.stdin.write("emergency\n")
            proc.stdin.flush()
            wait_for_fault(driver, StimulatorError, timeout=3.0)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    snapshot = json.loads(state.read_text())
    assert snapshot["path"] == path and snapshot["any_running"] is False
    names = [r["name"] for r in snapshot["received"] if r["name"] != "Watchdog"]
    assert names[-3:] == ["InitChannelListMode", "StartChannelListMode", "StopChannelListMode"]
    assert any("emergency switch" in e for e in snapshot["events"])
    assert snapshot["violations"] == []


@pytest.mark.timeout(10)
def test_a_long_plateau_is_probed_and_a_silent_device_found_without_a_command(make_driver,
                                                                             emulator):
    """A plateau sends no command for seconds: the driver asks GetStimulationMode after
    probe_s without an acknowledgement, so a device gone silent is reported by check()
    within probe_s + response_timeout, not at the next command."""
    driver = make_driver(response_timeout=0.1, probe_s=0.3)
    driver.apply([cmd(1, 20.0)])
    assert emulator.wait_until(
        lambda e: len(e.commands(sm.Command.GET_STIMULATION_MODE)) >= 3, 3.0)  # open + 2
    driver.check()  # a healthy device: nothing to report
    emulator.go_silent()
    t0 = time.monotonic()
    exc = wait_for_fault(driver, DeviceLostError, timeout=2.0)
    assert "did not answer GetStimulationMode" in str(exc)
    assert time.monotonic() - t0 < 0.3 + 0.1 + 0.3  # probe_s + response_timeout + slack
    with pytest.raises(DeviceLostError, match="refuses to stimulate"):
        driver.apply([cmd(1, 25.0)])


@pytest.mark.timeout(10)
def test_no_probe_while_nothing_stimulates(make_driver, emulator):
    driver = make_driver(probe_s=0.2)
    driver.apply([cmd(1, 20.0)])
    driver.apply([cmd(1, 0.0)])
    n = len(emulator.commands(sm.Command.GET_STIMULATION_MODE))
    time.sleep(0.8)
    assert len(emulator.commands(sm.Command.GET_STIMULATION_MODE)) == n
    driver.check()
