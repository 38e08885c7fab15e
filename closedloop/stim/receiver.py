"""The receiving end of ``--stimulator lsl``: the rule a receiver follows, and a reference
receiver that applies it to a real stream (``closedloop stim-receiver``).

The rule (``docs/stim-receiver.md`` says it for people writing their own receiver):

1. **Lock onto one session.** Pick one stimulator stream (``desc/closedloop/role`` is
   ``stimulator``) by its session, subscribe to that one outlet without liblsl's
   recovery (a recovering inlet re-finds a stream by ``source_id`` and would follow
   whatever takes its place), and remember its session uid.
2. **Never trust anything else.** A message whose ``session`` is not the locked one,
   whose ``seq`` is not exactly the previous one plus one (backwards, repeated, or
   skipped: a lost message may have been an off), or that cannot be read, switches
   everything off.
3. **Heartbeats keep it alive, and only that.** No heartbeat for longer than the
   timeout (150 ms; the sender beats every 50 ms), or the stream lost: everything off.
   A heartbeat never starts or raises stimulation; where it reports a channel lower
   than what is applied, the channel is lowered to it.
4. **Start from off.** Every channel is off at the lock, and a channel follows the
   session only once the receiver knows the session has it off too (a heartbeat or a
   command says 0 mA). A receiver that locks mid-train therefore skips that train
   instead of jumping into it at full current, past the guard's ramp.
5. **Off is final.** After switching off, the receiver does not lock onto anything by
   itself: the next session is a new lock, chosen by the operator.

:class:`ReceiverRule` is the rule alone: messages and the wall time in, actions out (no
LSL, no threads, no clock of its own), so it is tested message by message.
:class:`StimReceiver` is the LSL edge around it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pylsl

from closedloop.discovery import find_streams
from closedloop.errors import EXIT_CODES as SESSION_CODES
from closedloop.errors import ConfigError, DeviceLostError
from closedloop.identity import xpath_literal
from closedloop.stim.drivers.lsl import COMMAND, END, FORMAT, HEARTBEAT, ROLE

#: No heartbeat for longer than this (seconds) switches everything off.
DEFAULT_TIMEOUT_S = 0.15

#: Why the receiver switched off, and the exit code ``closedloop stim-receiver`` gives:
#: the session's own codes (:data:`closedloop.errors.EXIT_CODES`) for the same causes
#: (heartbeats lost: a stall; an untrusted sender: a safety stop).
ENDED, LOST, UNTRUSTED, INTERRUPTED, TERMINATED, HUNG_UP = (
    "ended", "lost", "untrusted", "interrupt", "sigterm", "sighup")
EXIT_CODES = {ENDED: SESSION_CODES["ended"], LOST: SESSION_CODES["stall"],
              UNTRUSTED: SESSION_CODES["safety"], INTERRUPTED: SESSION_CODES["interrupt"],
              TERMINATED: SESSION_CODES["sigterm"], HUNG_UP: SESSION_CODES["sighup"]}


@dataclass(frozen=True)
class Action:
    """What the receiver does: set one channel (``apply``) or switch off (``all_off``).

    ``t`` is the wall time (the caller's clock) at which it was decided.
    """

    kind: str  # "apply", "skip" (an on-command for a channel not yet in step) or "all_off"
    t: float
    channel: int | None = None
    current_ma: float = 0.0
    pulse_width_us: float = 0.0
    frequency_hz: float = 0.0
    muscle: str = ""
    phase: str = ""
    seq: int | None = None
    why: str = ""  # all_off: the reason class (ENDED, LOST, UNTRUSTED...)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The action as one JSON-ready record."""
        d = {"action": self.kind, "t_monotonic": self.t}
        if self.kind in ("apply", "skip"):
            d.update(channel=self.channel, muscle=self.muscle, current_ma=self.current_ma,
                     pulse_width_us=self.pulse_width_us, frequency_hz=self.frequency_hz,
                     phase=self.phase, seq=self.seq)
        else:
            d.update(why=self.why, message=self.message)
        return d

    def line(self) -> str:
        """One line for a person."""
        if self.kind == "apply":
            return (f"apply   ch {self.channel} {self.muscle or '-'}: {self.current_ma:g} mA, "
                    f"{self.pulse_width_us:g} us, {self.frequency_hz:g} Hz "
                    f"({self.phase}, seq {self.seq})")
        if self.kind == "skip":
            return (f"skip    ch {self.channel} {self.muscle or '-'}: {self.current_ma:g} mA "
                    f"(seq {self.seq}): {self.message}")
        return f"ALL OFF: {self.message}"


@dataclass
class ReceiverRule:
    """The receiver-side rule for one locked session (see the module docstring).

    Parameters
    ----------
    session_uid : str
        The uid of the session locked onto.
    now : float
        Wall time of the lock (the first heartbeat is due within ``timeout_s``).
    timeout_s : float
        Longest silence between two heartbeats.
    n_channels : int
        Valid channels are 1..n_channels.
    """

    session_uid: str
    now: float
    timeout_s: float = DEFAULT_TIMEOUT_S
    n_channels: int = 8
    applied: dict[int, Action] = field(default_factory=dict)
    in_step: set[int] = field(default_factory=set)  # channels the session has had off
    last_seq: int | None = None
    off: Action | None = None  # set once, when everything was switched off
    last_beat: float = field(init=False)  # wall time of the last heartbeat

    def __post_init__(self) -> None:
        self.last_beat = self.now

    # -- inputs ---------------------------------------------------------------------------
    def message(self, text: str, now: float) -> list[Action]:
        """Actions for one message received at wall time ``now``."""
        if self.off is not None:
            return []
        try:
            msg = json.loads(text)
            session, seq, kind = msg["session"], msg["seq"], msg["kind"]
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError("seq is not an integer")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return self._off(now, UNTRUSTED, f"unreadable message {text[:80]!r} "
                                             f"({str(exc)[:200]})")
        if session != self.session_uid:
            return self._off(now, UNTRUSTED, f"the session id changed from {self.session_uid} "
                                             f"to {session!r}")
        if self.last_seq is not None and seq != self.last_seq + 1:
            what = (f"went back from {self.last_seq} to {seq}" if seq <= self.last_seq else
                    f"skipped from {self.last_seq} to {seq}: "
                    f"{seq - self.last_seq - 1} message(s) lost, maybe an off")
            return self._off(now, UNTRUSTED, f"seq {what}")
        self.last_seq = seq
        if kind == HEARTBEAT:
            self.last_beat = now
            return self._lower_to(msg.get("state"), seq, now)
        if kind == COMMAND:
            return self._command(msg, seq, now)
        if kind == END:
            return self._off(now, ENDED, f"session {self.session_uid} ended")
        return self._off(now, UNTRUSTED, f"unknown message kind {kind!r}")

    def tick(self, now: float) -> list[Action]:
        """Switch off when the last heartbeat is older than the timeout."""
        if self.off is None and now - self.last_beat > self.timeout_s:
            return self._off(now, LOST, f"no heartbeat from session {self.session_uid} for "
                                        f"{1000 * (now - self.last_beat):.0f} ms (limit "
                                        f"{1000 * self.timeout_s:.0f} ms)")
        return []

    def lost(self, now: float, why: str, message: str) -> list[Action]:
        """The stream is gone, or the receiver is being stopped: everything off."""
        return [] if self.off is not None else self._off(now, why, message)

    # -- decisions ------------------------------------------------------------------------
    def _command(self, msg: dict, seq: int, now: float) -> list[Action]:
        try:
            channel = msg["channel"]
            levels = [float(msg[k]) for k in ("current_ma", "pulse_width_us", "frequency_hz")]
            if (not isinstance(channel, int) or not 1 <= channel <= self.n_channels
                    or not all(math.isfinite(v) and v >= 0.0 for v in levels)):
                raise ValueError(f"channel {channel!r}, levels {levels}")
        except (KeyError, TypeError, ValueError) as exc:
            return self._off(now, UNTRUSTED, f"invalid command (seq {seq}): {exc}")
        muscle, phase = str(msg.get("muscle", "")), str(msg.get("phase", ""))
        current, width, rate = levels
        if current > 0.0 and channel not in self.in_step:
            return [Action("skip", now, channel, current, width, rate, muscle=muscle,
                           phase=phase, seq=seq,
                           message="the receiver has not yet seen this channel off in the "
                                   "session (locked mid-train); it stays off")]
        if current == 0.0:
            self.in_step.add(channel)
        act = Action("apply", now, channel, current, width, rate, muscle=muscle, phase=phase,
                     seq=seq)
        self.applied[channel] = act
        return [act]

    def _lower_to(self, state: Any, seq: int, now: float) -> list[Action]:
        """A heartbeat's state may lower a channel, never raise one."""
        if not isinstance(state, dict):
            return self._off(now, UNTRUSTED, f"heartbeat seq {seq} has no state")
        levels: dict[int, float] = {}
        for key, value in state.items():
            try:
                ch, level = int(key), float(value)
            except (TypeError, ValueError):
                return self._off(now, UNTRUSTED, f"heartbeat seq {seq}: channel {key!r} "
                                                 f"state {value!r}")
            if not math.isfinite(level) or level < 0.0:
                return self._off(now, UNTRUSTED, f"heartbeat seq {seq}: channel {ch} at "
                                                 f"{value!r} mA")
            levels[ch] = level
            if level == 0.0:
                self.in_step.add(ch)
        out = []
        for ch, act in list(self.applied.items()):
            level = levels.get(ch, 0.0)  # a channel it does not list: off
            if level < act.current_ma:
                low = Action("apply", now, ch, level, act.pulse_width_us, act.frequency_hz,
                             muscle=act.muscle, phase="heartbeat_lower", seq=seq)
                self.applied[ch] = low
                out.append(low)
        return out

    def _off(self, now: float, why: str, message: str) -> list[Action]:
        self.off = Action("all_off", now, why=why, message=message)
        self.applied.clear()
        return [self.off]


# -- the LSL edge -----------------------------------------------------------------------------
def stimulator_predicate(session: str | None = None) -> str:
    """LSL predicate for closedloop stimulator streams (of one session, by name or uid)."""
    pred = f"desc/closedloop/role='{ROLE}'"
    if session:
        lit = xpath_literal(session)
        pred += f" and (desc/closedloop/session={lit} or desc/closedloop/session_uid={lit})"
    return pred


def _field(info: pylsl.StreamInfo, name: str) -> str:
    return info.desc().child("closedloop").child_value(name)


class StimReceiver:
    """Locks onto one session's stimulator stream and applies :class:`ReceiverRule`.

    Parameters
    ----------
    session : str or None
        Session name or uid to lock onto; None: the only stimulator stream visible.
    timeout_s : float
        Heartbeat timeout (see :class:`ReceiverRule`).
    wait_s : float
        How long to wait for the stream to appear.
    clock : callable
        Wall clock for the heartbeat watchdog (default ``time.monotonic``).
    """

    def __init__(self, session: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 wait_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigError(f"heartbeat timeout {timeout_s!r} s must be a positive number")
        if not (math.isfinite(wait_s) and wait_s >= 0):
            raise ConfigError(f"wait {wait_s!r} s must be a number >= 0")
        self.session = session
        self.timeout_s = float(timeout_s)
        self.wait_s = float(wait_s)
        self.clock = clock
        self.inlet: pylsl.StreamInlet | None = None
        self.info: pylsl.StreamInfo | None = None
        self.rule: ReceiverRule | None = None

    def lock(self) -> str:
        """Find the stream, subscribe to that one outlet, and lock; a line saying which.

        Raises
        ------
        DeviceLostError
            No stimulator stream (of the session) appeared within ``wait_s``.
        ConfigError
            Several appeared and no session was named, or the stream is not one this
            receiver understands.
        """
        pred = stimulator_predicate(self.session)
        # once one answered, look briefly for others: two streams claiming one session
        # are one too many (a copy, or an impostor): follow neither
        found = find_streams(pred, self.wait_s, settle=0.5)
        if not found:
            who = f"of session {self.session!r}" if self.session else "at all"
            raise DeviceLostError(
                f"no closedloop stimulator stream {who} within {self.wait_s:g} s; start the "
                "session with --stimulator lsl, and check the session name it printed"
            )
        if len(found) > 1:
            listing = "\n  ".join(
                f"stream {i.name()!r} on host {i.hostname()!r}, source_id "
                f"{i.source_id()!r}" for i in found)
            what = (f"claim session {self.session!r}; follow none of them and find out why"
                    if self.session else
                    "are visible; name the one to follow: closedloop stim-receiver "
                    "--session NAME")
            raise ConfigError(f"{len(found)} closedloop stimulator streams {what}:\n  {listing}")
        inlet = pylsl.StreamInlet(found[0], max_buflen=10, recover=False)
        try:
            info = inlet.info(timeout=5.0)
            inlet.open_stream(timeout=5.0)
        except (pylsl.util.LostError, pylsl.util.TimeoutError) as exc:
            raise DeviceLostError(f"the stimulator stream {found[0].name()!r} vanished while "
                                  f"connecting ({exc})") from None
        fmt, uid = _field(info, "format"), _field(info, "session_uid")
        if fmt != FORMAT or not uid:
            raise ConfigError(f"stream {info.name()!r} speaks {fmt!r}, not {FORMAT!r}; this "
                              "receiver does not follow it")
        self.inlet, self.info = inlet, info
        self.rule = ReceiverRule(uid, self.clock(), self.timeout_s)
        return (f"locked onto session {_field(info, 'session')} (uid {uid}): stream "
                f"{info.name()!r} on host {info.hostname()!r}, source_id "
                f"{info.source_id()!r}, stream uid {info.uid()}")

    def step(self, wait_s: float = 0.01) -> list[Action]:
        """Pull what arrived (waiting at most ``wait_s``), apply the rule, check the
        heartbeat; the actions taken. Call :meth:`lock` first."""
        assert self.inlet is not None and self.rule is not None, "lock() first"
        out: list[Action] = []
        try:
            texts, _ = self.inlet.pull_chunk(timeout=wait_s)
        except pylsl.util.LostError:
            return self.rule.lost(self.clock(), LOST, "the stimulator stream was lost "
                                                      "(the session closed or crashed)")
        for row in texts:
            out += self.rule.message(str(row[0]), self.clock())
        return out + self.rule.tick(self.clock())

    def close(self) -> None:
        """Drop the subscription. Idempotent."""
        inlet, self.inlet = self.inlet, None
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
