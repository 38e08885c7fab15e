"""The closed loop: one source, the signal core, the protocol, the guard, one stimulator.

Read :func:`run_loop` top to bottom; it is the whole product in one function:

1. read a chunk from the source (short timeout, so a stop request is seen at once);
2. check it (NaN, gaps, flat or saturated channels, mains hum): unusable channels are
   suspended from the exact sample the checks decided (:mod:`~closedloop.runtime.inputs`);
3. run the signal core -> envelopes and onset/offset events (sample clock), with every
   stimulation pulse blanked and its residual cancelled (:mod:`closedloop.core.blanking`);
4. the protocol turns events into the stimulation it wants;
5. the safety guard lets through only what is within every limit (it can only lower or
   stop); the stimulator gets exactly that, stamped with wall times for latency and
   with the sample at which it takes effect (the first sample after this chunk);
6. publish everything (a :class:`~closedloop.runtime.publisher.Publisher`: the LSL
   outlets, which LabRecorder records), with a ``channel_restart`` marker where the
   core restarted a channel after a bad stretch;
7. stop when the duration (in samples) is reached, the source ends, or a stop is
   requested (SIGINT/Ctrl-C, SIGTERM, SIGHUP, SIGQUIT: :mod:`~closedloop.runtime.signals`;
   the STOP button).

The chain of steps 2-5 is built from the config by
:func:`~closedloop.runtime.chain.build_chain`; the session around the loop (devices,
outlets, recorder, STOP inlet, view) by :mod:`closedloop.runtime.session`; what happened
is kept by :class:`~closedloop.runtime.outcome.Outcome`.

Every way out goes through one ``finally``: all channels off, the guard told, the
off-commands published. Decisions use only the samples and their timestamps; the wall
clock is read for latency stamps, for the stall watchdog and for the status line.

While the loop runs, the objects that existed when it started are frozen
(:func:`gc.freeze`, undone at the end): Python's garbage collector then never walks them
in the loop. Its occasional full collection walks every object it tracks, about 90,000
after a session's start-up (numpy, scipy, pydantic, pylsl, devices, outlets); in a
default ``closedloop run`` one such collection stopped the loop for 60-65 ms in its first
minute (a trigger decided then reached the stimulator that much later), and in a process
with a larger heap it outlasts the backstop watchdog. ``closedloop bench --latency``
prints the collections during its session's loop and the longest.

The exit code follows from how the session ended, through the one table of
:mod:`closedloop.errors` (:data:`~closedloop.errors.EXIT_CODES`): 0 a normal end
(duration reached, recording ended), 1 an unexpected error, 2 a bad config, 3 stopped
by the clinician (STOP), 4 the source stalled, 5 a device was lost or refused (the
emergency switch included), 6 a safety stop, 7 unusable input, 129 SIGHUP (the terminal
closed), 130 Ctrl-C, 131 SIGQUIT, 143 SIGTERM.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Protocol

from closedloop.config import Config
from closedloop.errors import EXIT_CODES, InputError, SafetyError, StallError
from closedloop.io.outlets import CHANNEL_RESTART
from closedloop.runtime.chain import Chain, ProtocolFactory, build_chain
from closedloop.runtime.inputs import Notice, Segment
from closedloop.runtime.outcome import MESSAGES, LoopOptions, Outcome, StopRequest
from closedloop.runtime.publisher import NullPublisher, Publisher
from closedloop.runtime.status import StatusLine
from closedloop.runtime.watchdog import Watchdog
from closedloop.sources.base import Source
from closedloop.stim.base import Stimulator
from closedloop.stim.commands import StimCommand

if TYPE_CHECKING:
    from closedloop.core.events import Block
    from closedloop.core.stream import Chunk
    from closedloop.runtime.control import ControlCommand
    from closedloop.stim.mwave_rules import Notice as MNotice
    from closedloop.stim.protocol import Protocol as StimProtocol

#: ``effective_sample(command, chunk_stop) -> sample``: where a command takes effect.
EffectiveSample = Callable[[StimCommand, int], int]


class Checked(Protocol):
    """Something the loop asks after every chunk whether it is still well (the
    recorder: its process, the disk); ``check()`` raises when it is not."""

    def check(self) -> None:
        """Raise a :class:`~closedloop.errors.DeviceError` when the device is not well."""
        ...


def run_loop(
    config: Config,
    source: Source,
    stimulator: Stimulator | None,
    *,
    options: LoopOptions | None = None,
    stop: StopRequest | None = None,
    outlets: Publisher | None = None,
    recorder: Checked | None = None,
    control: Callable[[], Sequence[ControlCommand]] | None = None,
    status: Callable[[str], None] | None = None,
    protocol_factory: ProtocolFactory | None = None,
    effective_sample: EffectiveSample | None = None,
) -> Outcome:
    """Run one session on an opened source and stimulator; see the module docstring.

    ``outlets`` is where everything is published (default: nowhere). ``control``
    returns the commands received since the last call, each with ``command`` (only
    ``"stop"`` is acted on: the network can stop a session, never start or raise
    stimulation) and ``sender`` (a :class:`~closedloop.runtime.control.ControlSender`),
    which the outcome, the summary and the recording keep. ``status`` gets the live
    status line and every input and safety message. ``protocol_factory`` builds the
    protocol (default: the config's, from the registry). ``effective_sample`` overrides
    where commands take effect (replay passes the recorded samples); by default a
    command takes effect at the end of its chunk.
    """
    opts = options or LoopOptions()
    stop = stop or StopRequest()
    pub: Publisher = outlets if outlets is not None else NullPublisher()
    say = status or _silent
    effective = effective_sample or _chunk_end
    fs = source.info.fs
    out = Outcome.start(config.muscle_names, fs, opts.history)
    try:
        chain = build_chain(config, source.info, stimulating=stimulator is not None,
                            protocol_factory=protocol_factory)
    except InputError as exc:  # a rate the core cannot use: nothing runs
        out.end_with(exc)
        return out
    end = opts.end_sample(fs)
    stall = _StallCheck(opts, source.info.name)
    last_status, last_time = -math.inf, math.nan
    show = StatusLine(config, source.info)  # the live status line
    watchdog = Watchdog(max(2 * opts.watchdog_s, 0.25), lambda: _emergency_off(stimulator, stop))
    watchdog.start()
    gc.freeze()  # the heap so far, out of the garbage collector's walks (module docstring)
    try:
        while True:
            # 1. read (short timeout: stop requests and stalls are seen at once)
            if control is not None:
                _obey(control(), stop, out, pub, chain.pipeline.position, last_time)
            if stop.is_set():
                out.reason = stop.reason
                break
            chunk = source.read(opts.read_timeout_s)
            now = time.perf_counter()
            watchdog.feed()
            if chunk is None:
                if source.exhausted:
                    out.reason = "ended"
                    break
                stall.check(now)
                continue
            stall.arrived(now)
            out.count_lost(chunk.counter)

            # 2. check the input: segments inside which no channel changes usability
            segments = chain.inputs.feed(chunk, until=end)
            _tell(out, chain.inputs.pop_notices(), say, pub)
            chunk_stop = chain.inputs.position
            block = None
            for seg in segments:
                # 3. the signal core
                block = chain.process(seg)
                last_time = float(block.timestamps[-1])
                out.add_events(block.events)
                if block.restarts:  # rare: no list built per chunk
                    out.add_restarts(block.start, [block.channels[c] for c in block.restarts])

                # 4-5. protocol -> guard -> stimulator (and the blanking schedule)
                safe: list[StimCommand] = []
                try:
                    safe, violations = chain.decide(block)
                    for v in violations:
                        out.add_violation(v.message)
                        say(f"safety: {v.message}")
                    if safe and stimulator is not None:
                        safe = _stamped(safe, chunk, stimulator, effective, chunk_stop)
                        chain.blank(safe)  # where the device's pulses really fall
                        out.add_commands(safe)  # handed over, even if the device fails
                        stimulator.apply(safe)
                        out.add_latencies(1000 * (c.handed_wall - c.arrival_wall)
                                          for c in safe if c.is_on)
                except BaseException:
                    with contextlib.suppress(Exception):  # what was decided is still recorded
                        _publish(pub, seg, block, safe, chain.protocol)
                    raise

                # 6. publish
                _publish(pub, seg, block, safe, chain.protocol)
                if chain.mwaves:  # the evoked responses decided in this segment
                    out.add_mwaves(chain.mwaves)  # the session's summary, the patient record
                    pub.push_mwaves(chain.mwaves)
                    chain.mwaves = []
                _warn(out, chain.pop_notices(), say, pub)
                if chain.guard is not None and chain.guard.stop_violation is not None:
                    raise SafetyError(chain.guard.stop_violation.message)
            _tell(out, chain.inputs.pop_notices(), say, pub)
            if block is not None:  # totals, for a view opened late
                _publish_tally(pub, chain.pipeline.position, last_time, opts.duration_s)
            for device in (stimulator, recorder):
                if device is not None:
                    device.check()
            if status and block is not None and now - last_status >= opts.status_every_s:
                last_status = now
                status(show(block, stimulator, chain.protocol, chain.inputs.why))

            # 7. duration on the sample clock
            if end is not None and chain.pipeline.position >= end:
                out.reason = "duration"
                break
    except (Exception, KeyboardInterrupt) as exc:  # every error ends with stimulation off
        out.end_with(exc)
    finally:
        watchdog.stop()
        gc.unfreeze()
        _all_off(out, stimulator, chain, last_time, pub)
        _tell(out, chain.inputs.finish(), say, pub)  # nothing the checks found goes unsaid
        out.stop_wall = stop.wall
        if watchdog.tripped and out.reason in ("", "interrupt", "stall"):
            out.reason = "stall"
            out.message = out.message or ("the loop stopped responding; the watchdog switched "
                                          "stimulation off")
    out.finish(chain.pipeline.position, fs, chain.trials())
    return out


def _silent(_line: str) -> None:
    """The status callback of a loop nobody watches."""


def _chunk_end(_command: StimCommand, chunk_stop: int) -> int:
    """Live: a command takes effect at the first sample after its chunk."""
    return chunk_stop


def _stamped(commands: list[StimCommand], chunk: Chunk, stimulator: Stimulator,
             effective: EffectiveSample, chunk_stop: int) -> list[StimCommand]:
    """The commands as handed over: the chunk's arrival and the hand-over wall times
    (latency), the sample where each takes effect and the rate the device delivers."""
    handed = time.perf_counter()
    return [replace(c, arrival_wall=chunk.arrival_wall, handed_wall=handed,
                    effective_sample=effective(c, chunk_stop),
                    delivered_hz=stimulator.delivered_hz(c.frequency_hz))
            for c in commands]


class _StallCheck:
    """The loop's own stall check: raise :class:`StallError` when the source has been
    silent for longer than the watchdog allows (the wall clock: a watchdog's job)."""

    def __init__(self, opts: LoopOptions, name: str) -> None:
        self.opts, self.name = opts, name
        self.started = time.perf_counter()
        self.last_data = -math.inf

    def arrived(self, now: float) -> None:
        self.last_data = now

    def check(self, now: float) -> None:
        opts, name = self.opts, self.name
        if self.last_data == -math.inf:  # nothing yet: the stream may take a moment to start
            if now - self.started > max(opts.watchdog_s, opts.startup_s):
                raise StallError(
                    f"no EMG from {name!r} within {max(opts.watchdog_s, opts.startup_s):g} s "
                    "of the start: check that the amplifier is streaming"
                )
        elif now - self.last_data > opts.watchdog_s:
            raise StallError(
                f"no EMG from {name!r} for {1000 * (now - self.last_data):.0f} ms (watchdog "
                f"{1000 * opts.watchdog_s:.0f} ms): check the amplifier, its cable or the LSL "
                "stream"
            )


def _tell(out: Outcome, notices: list[Notice], say: Callable[[str], None],
          pub: Publisher) -> None:
    """What the input checks said: to the summary, the status line and the recording
    and live view (an ``input_issue`` marker at the sample it concerns)."""
    for notice in notices:
        out.add_issue(notice.message)
        say(f"input: {notice.message}")
        with contextlib.suppress(Exception):  # a failing outlet must not stop the loop
            pub.push_marker("input_issue", notice.time, sample=notice.sample,
                            kind=notice.kind, channel=notice.channel, message=notice.message)


def _warn(out: Outcome, notices: list[MNotice], say: Callable[[str], None],
          pub: Publisher) -> None:
    """What the M-wave rules said (no response, fatigue): to the summary, the status
    line and the recording (an ``mwave_warning`` marker at its sample)."""
    for n in notices:
        out.add_issue(n.message)
        say(f"m-wave: {n.message}")
        with contextlib.suppress(Exception):  # a failing outlet must not stop the loop
            pub.push_marker("mwave_warning", n.time, sample=n.sample, kind=n.kind,
                            muscle=n.muscle, action=n.action, message=n.message)


def _publish(pub: Publisher, seg: Segment, block: Block, commands: list[StimCommand],
             protocol: StimProtocol | None) -> None:
    """Push where the core restarted a channel (a ``channel_restart`` marker at the
    block's first sample, for the live view's EMG level), one segment's samples, its
    block (envelope, thresholds, events), the commands handed to the stimulator and
    the protocol's trial markers."""
    for c in block.restarts:
        pub.push_marker(CHANNEL_RESTART, float(block.timestamps[0]), sample=block.start,
                        muscle=block.channels[c])
    pub.push_emg(seg.received, seg.timestamps, start=seg.start,  # NaN/inf as they came
                 source_counter=seg.counter)
    pub.push_block(block)
    pub.push_commands(commands)
    for te in protocol.pop_trial_events() if protocol is not None else ():
        pub.push_marker(te.kind, te.time, **_fields(te))


def _publish_tally(pub: Publisher, position: int, last_time: float,
                   duration_s: float | None) -> None:
    """The session's running totals (onsets, triggers, stimulation trains and time), so
    a live view that attaches late shows them from the session's start
    (:meth:`~closedloop.io.outlets.SessionOutlets.push_tally`: only when a count changed
    or once per second of samples). A display aid: failing to publish it never stops
    the loop."""
    with contextlib.suppress(Exception):
        pub.push_tally(position, last_time, duration_s=duration_s)


def _obey(commands: Sequence[ControlCommand], stop: StopRequest, out: Outcome, pub: Publisher,
          position: int, last_time: float) -> None:
    """Act on the control commands received: only ``stop`` (the network can stop a
    session, never start or raise stimulation). Who sent the first STOP is kept in the
    outcome (summary, JSON) and the recording."""
    for cmd in commands:
        if cmd.command != "stop" or stop.is_set():
            continue
        stop.set("stop_button")
        out.stopped_by = cmd.sender
        out.message = f"stopped with STOP from {cmd.sender.describe()}"
        with contextlib.suppress(Exception):  # publishing must not delay the stop
            pub.push_marker("stop_request", last_time if math.isfinite(last_time) else 0.0,
                            sample=max(position - 1, 0), **asdict(cmd.sender))


def _emergency_off(stimulator: Stimulator | None, stop: StopRequest) -> None:
    """Called from the watchdog thread when the loop is stuck."""
    stop.set("stall")
    if stimulator is not None:
        try:
            stimulator.stop_all()
        except Exception:  # noqa: BLE001 - the loop reports; the device stops on its own watchdog
            pass


def _all_off(out: Outcome, stimulator: Stimulator | None, chain: Chain, last_time: float,
             pub: Publisher) -> None:
    """Every exit: switch all channels off, tell the guard, publish the offs."""
    if stimulator is None:
        return
    try:
        stimulator.stop_all()
        out.off_wall = time.perf_counter()
    except Exception as exc:  # noqa: BLE001
        out.all_off = False
        out.message += (f"; could NOT confirm all channels off ({type(exc).__name__}: {exc}) - "
                        "switch the stimulator off by hand")
        if out.reason in ("", "duration", "ended"):
            out.reason = "device"
    if chain.guard is not None:
        # before the first sample there is no stream time yet: 0.0, as for a STOP then
        offs = chain.guard.all_off(max(chain.pipeline.position - 1, 0),
                                   last_time if math.isfinite(last_time) else 0.0)
        out.add_commands(offs)
        with contextlib.suppress(Exception):  # publishing must not hide the stop
            pub.push_commands(offs)


def _fields(te: Any) -> dict[str, Any]:
    d = asdict(te)
    d.pop("kind", None)
    d.pop("time", None)
    return d


__all__ = ["EXIT_CODES", "MESSAGES", "Checked", "EffectiveSample", "LoopOptions", "Outcome",
           "StopRequest", "run_loop"]
