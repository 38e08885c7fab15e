"""The receiver-side rule, message by message (pure), and the reference receiver on a
real LslStimulator stream (loopback)."""

from __future__ import annotations

import json
import threading
import time

import pylsl
import pytest

from closedloop.errors import ConfigError, DeviceLostError
from closedloop.identity import SessionId
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.lsl import LslStimulator
from closedloop.stim.receiver import ENDED, LOST, UNTRUSTED, ReceiverRule, StimReceiver

UID = "abc123abc123"


class Sender:
    """Writes messages as LslStimulator does (one seq for all kinds)."""

    def __init__(self, session: str = UID) -> None:
        self.session = session
        self.seq = 0

    def _msg(self, kind: str, **fields) -> str:
        text = json.dumps({"kind": kind, "session": self.session, "seq": self.seq, **fields})
        self.seq += 1
        return text

    def beat(self, **state: float) -> str:
        full = {str(ch): 0.0 for ch in range(1, 9)}
        full.update({k.lstrip("c"): v for k, v in state.items()})
        return self._msg("heartbeat", period_ms=50.0, state=full)

    def command(self, channel: int, current: float, phase: str = "plateau") -> str:
        return self._msg("command", muscle="biceps", channel=channel, current_ma=current,
                         pulse_width_us=250.0, frequency_hz=35.0, sample=1, stream_time=1.0,
                         phase=phase)

    def end(self) -> str:
        return self._msg("end")


def kinds(actions) -> list[tuple]:
    return [(a.kind, a.channel, a.current_ma) if a.kind != "all_off" else ("all_off", a.why)
            for a in actions]


def test_follows_a_session_from_its_first_heartbeat_to_its_end():
    rule, s = ReceiverRule(UID, now=0.0), Sender()
    assert rule.message(s.beat(), 0.01) == []  # everything off: every channel in step
    assert kinds(rule.message(s.command(1, 2.0, "ramp_up"), 0.02)) == [("apply", 1, 2.0)]
    assert kinds(rule.message(s.command(1, 4.0, "ramp_up"), 0.03)) == [("apply", 1, 4.0)]
    assert rule.message(s.beat(c1=4.0), 0.06) == []
    assert kinds(rule.message(s.command(1, 0.0, "off"), 0.07)) == [("apply", 1, 0.0)]
    assert rule.tick(0.1) == []
    assert kinds(rule.message(s.end(), 0.11)) == [("all_off", ENDED)]
    assert rule.message(s.beat(), 0.12) == []  # off is final


def test_a_heartbeat_never_starts_or_raises_only_lowers():
    rule, s = ReceiverRule(UID, now=0.0), Sender()
    rule.message(s.beat(), 0.01)
    assert rule.message(s.beat(c1=30.0, c2=5.0), 0.02) == []  # says on: nothing starts
    rule.message(s.command(1, 10.0), 0.03)
    assert rule.message(s.beat(c1=25.0), 0.04) == []  # says higher: nothing is raised
    assert rule.applied[1].current_ma == 10.0
    low = rule.message(s.beat(c1=6.0), 0.05)
    assert kinds(low) == [("apply", 1, 6.0)] and low[0].phase == "heartbeat_lower"
    assert kinds(rule.message(s.beat(), 0.06)) == [("apply", 1, 0.0)]


def test_no_heartbeat_for_longer_than_the_timeout_switches_off():
    rule, s = ReceiverRule(UID, now=10.0, timeout_s=0.15), Sender()
    assert rule.tick(10.149) == []  # the first heartbeat is due within the timeout
    rule.message(s.beat(), 10.1)
    rule.message(s.command(1, 10.0), 10.12)
    assert rule.tick(10.249) == []
    # commands are not heartbeats: they do not keep the session alive
    rule.message(s.command(1, 12.0), 10.24)
    (off,) = rule.tick(10.251)
    assert (off.kind, off.why) == ("all_off", LOST) and "no heartbeat" in off.message
    assert rule.applied == {} and rule.tick(11.0) == []


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (lambda s: Sender("ffff00001111").beat(), "session id changed"),
        (lambda s: s.beat() if setattr(s, "seq", s.seq - 2) is None else "", "went back"),
        (lambda s: s.beat() if setattr(s, "seq", s.seq - 1) is None else "", "went back"),
        (lambda s: s.beat() if setattr(s, "seq", s.seq + 1) is None else "", "1 message"),
        (lambda s: "not json", "unreadable"),
        (lambda s: "[" * 100_000, "unreadable"),  # deeper than the parser goes
        (lambda s: "[1, 2]", "unreadable"),
        (lambda s: json.dumps({"kind": "command", "seq": s.seq}), "unreadable"),
        (lambda s: s._msg("start", channel=1), "unknown message kind"),
        (lambda s: s.command(9, 5.0), "invalid command"),
        (lambda s: s.command(1, float("nan")), "invalid command"),
        (lambda s: s.command(1, -1.0), "invalid command"),
        (lambda s: s._msg("heartbeat", state=None), "no state"),
        (lambda s: s.beat(c1=float("inf")), "mA"),
    ],
)
def test_anything_untrusted_switches_everything_off(bad, says):
    rule, s = ReceiverRule(UID, now=0.0), Sender()
    rule.message(s.beat(), 0.01)
    rule.message(s.command(1, 8.0), 0.02)
    rule.message(s.command(2, 8.0), 0.03)
    (off,) = rule.message(bad(s), 0.04)
    assert (off.kind, off.why) == ("all_off", UNTRUSTED) and says in off.message
    assert rule.applied == {}
    assert rule.message(s.command(1, 8.0), 0.05) == []


def test_locked_mid_train_it_waits_for_the_channel_to_be_off():
    rule, s = ReceiverRule(UID, now=0.0), Sender()
    s.seq = 500  # a session that has been running for a while
    assert rule.message(s.beat(c1=18.0), 0.01) == []
    (skip,) = rule.message(s.command(1, 16.0, "ramp_down"), 0.02)
    assert (skip.kind, skip.channel) == ("skip", 1) and "stays off" in skip.message
    assert rule.applied == {}
    assert kinds(rule.message(s.command(2, 3.0, "ramp_up"), 0.03)) == [("apply", 2, 3.0)]
    assert kinds(rule.message(s.command(1, 0.0, "off"), 0.04)) == [("apply", 1, 0.0)]
    assert kinds(rule.message(s.command(1, 2.0, "ramp_up"), 0.05)) == [("apply", 1, 2.0)]


# -- the reference receiver on a real stream ---------------------------------------------------
def cmd(current: float, phase: str = "ramp_up") -> StimCommand:
    return StimCommand("biceps", 1, current, 250.0, 35.0, 10, 1.0, phase)


def run_until_off(rx: StimReceiver, limit: float = 10.0) -> list:
    actions = []
    deadline = time.monotonic() + limit
    while rx.rule.off is None and time.monotonic() < deadline:
        actions += rx.step(0.01)
    return actions


def test_receiver_follows_one_session_and_switches_off_when_its_heartbeat_stops():
    stim = LslStimulator(SessionId.new("rx-test"), close_grace_s=0.0)
    stim.open()
    rx = StimReceiver(stim.session.name, wait_s=10.0)
    try:
        assert "locked onto session" in rx.lock()
        assert rx.rule.session_uid == stim.session.uid
        deadline = time.monotonic() + 5.0
        while not rx.rule.in_step and time.monotonic() < deadline:  # the first heartbeat
            rx.step(0.01)
        stim.apply([cmd(2.0), cmd(4.0)])
        got = []
        while len(got) < 2 and time.monotonic() < deadline:
            got += [a for a in rx.step(0.01) if a.kind == "apply"]
        assert [a.current_ma for a in got] == [2.0, 4.0]
        # the loop hangs but the process lives: the heartbeat is the only sign
        stim._stop_heartbeat()
        stopped = time.monotonic()
        actions = run_until_off(rx)
        off = rx.rule.off
        assert off is not None and off.why == LOST and "no heartbeat" in off.message
        assert actions[-1] is off
        print(f"\nheartbeat stopped -> receiver all off: {1000 * (off.t - stopped):.0f} ms")
        assert off.t - stopped < 0.15 + 0.1  # the timeout, plus one heartbeat period and a poll
    finally:
        rx.close()
        stim.close()


def test_receiver_locks_by_uid_and_ends_with_the_session():
    stim = LslStimulator(SessionId.new("rx-test"), close_grace_s=0.5)
    stim.open()
    rx = StimReceiver(stim.session.uid, wait_s=10.0)
    try:
        rx.lock()
        for _ in range(10):
            rx.step(0.01)
        closing = threading.Thread(target=stim.close)  # stops, "end", 0.5 s of grace
        closing.start()
        run_until_off(rx)
        closing.join(5.0)
        assert rx.rule.off.why == ENDED
    finally:
        rx.close()
        stim.close()


def test_receiver_refuses_two_streams_of_one_session_or_none_named():
    ident = SessionId.new("rx-twin")
    a, b = LslStimulator(ident, close_grace_s=0.0), LslStimulator(ident, "impostor",
                                                                   close_grace_s=0.0)
    a.open()
    b.open()
    try:
        with pytest.raises(ConfigError, match="2 closedloop stimulator streams claim session"):
            StimReceiver(ident.uid, wait_s=5.0).lock()
        with pytest.raises(ConfigError, match="--session NAME"):
            StimReceiver(None, wait_s=5.0).lock()  # at least these two are visible
    finally:
        a.close()
        b.close()
    with pytest.raises(DeviceLostError, match="no closedloop stimulator stream of session"):
        StimReceiver(SessionId.new("gone").uid, wait_s=0.3).lock()


def test_receiver_never_follows_a_plain_stream_that_copies_the_messages():
    """A stream without closedloop's description is never found, whatever it sends."""
    ident = SessionId.new("rx-copy")
    info = pylsl.StreamInfo(f"closedloop-stim-{ident.uid}", "Markers", 1, 0, "string",
                            f"closedloop.{ident.uid}.stimulator")
    outlet = pylsl.StreamOutlet(info)
    try:
        with pytest.raises(DeviceLostError):
            StimReceiver(ident.uid, wait_s=1.0).lock()
    finally:
        del outlet
