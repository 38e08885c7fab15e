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
6. publish everything (LSL outlets, which LabRecorder records);
7. stop when the duration (in samples) is reached, the source ends, or a stop is
   requested (SIGINT/Ctrl-C, SIGTERM, SIGHUP, SIGQUIT: :mod:`~closedloop.runtime.signals`;
   the STOP button).

Every way out goes through one ``finally``: all channels off, the guard told, the
off-commands published. Decisions use only the samples and their timestamps; the wall
clock is read for latency stamps, for the stall watchdog and for the status line.

Exit codes (see :class:`~closedloop.runtime.outcome.Outcome`): 0 a normal end (duration
reached, recording ended), 1 an unexpected error, 2 a bad config, 3 stopped by the
clinician (STOP), 4 the source stalled, 5 a device was lost or refused (the emergency
switch included), 6 a safety stop, 7 unusable input, 129 SIGHUP (the terminal closed),
130 Ctrl-C, 131 SIGQUIT, 143 SIGTERM.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from closedloop.config import Config
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.filters import effective_band
from closedloop.core.impulses import ImpulseGate
from closedloop.core.mains import HumCheck
from closedloop.core.pipeline import Pipeline
from closedloop.errors import InputError, SafetyError, StallError
from closedloop.runtime.devices import channel_columns, stimulated_muscles
from closedloop.runtime.inputs import InputStage, rate_check
from closedloop.runtime.outcome import (
    EXIT_CODES,
    MESSAGES,
    LoopOptions,
    Outcome,
    StimTally,
    StopRequest,
    classify,
    keep_last,
)
from closedloop.runtime.status import StatusLine
from closedloop.runtime.watchdog import Watchdog
from closedloop.sources.base import Source
from closedloop.stim.base import Stimulator
from closedloop.stim.commands import StimCommand

#: ``effective_sample(command, chunk_stop) -> sample``: where a command takes effect.
EffectiveSample = Callable[[StimCommand, int], int]


def run_loop(
    config: Config,
    source: Source,
    stimulator: Stimulator | None,
    *,
    options: LoopOptions | None = None,
    stop: StopRequest | None = None,
    outlets=None,
    recorder=None,
    control: Callable[[], list] | None = None,
    status: Callable[[str], None] | None = None,
    protocol_factory=None,
    effective_sample: EffectiveSample | None = None,
) -> Outcome:
    """Run one session on an opened source and stimulator; see the module docstring.

    ``control`` returns the commands received since the last call, each with
    ``command`` (only ``"stop"`` is acted on: the network can stop a session, never
    start or raise stimulation) and ``sender`` (a dataclass with a ``describe()``, e.g.
    :class:`~closedloop.runtime.control.ControlSender`), which the outcome, the summary and
    the recording keep.

    ``effective_sample`` overrides where commands take effect (replay passes the
    recorded samples); by default a command takes effect at the end of its chunk.
    """
    opts = options or LoopOptions()
    stop = stop or StopRequest()
    out = Outcome()
    info = source.info
    fs = info.fs
    names = config.muscle_names
    try:
        rate_check(info, config.filters)  # a rate the core cannot use: nothing runs
    except InputError as exc:
        out.reason, out.message = classify(exc)
        return out
    protocol = guard = remover = None
    if stimulator is not None and config.stimulates:
        from closedloop.stim.guard import SafetyGuard
        from closedloop.stim.protocol import make_protocol

        muscles = stimulated_muscles(config)
        protocol = (protocol_factory or make_protocol)(config.protocol, muscles, fs)
        guard = SafetyGuard.from_muscles(muscles, config.safety, fs, protocol=config.protocol)
        remover = ArtifactRemover(config.artifacts, fs, names, config.filters.notch_hz)
    pipeline = Pipeline(fs, names, config, artifacts=remover)
    hum = HumCheck(config.artifacts, fs, len(names), config.filters.notch_hz,
                   effective_band(config.filters, fs))
    gate = ImpulseGate(fs, len(names), config.artifacts.impulse_ratio,
                       config.artifacts.impulse_ms)
    inputs = InputStage(info, channel_columns(config, info), names, hum, remover,
                        impulses=gate, filters=config.filters)
    effective = effective_sample or (lambda _command, chunk_stop: chunk_stop)
    last = math.inf if opts.duration_s is None else opts.duration_s * fs
    end = int(round(last)) if math.isfinite(last) else None  # 1e308 s: no end, as None
    out.onsets = {m: 0 for m in names}
    keep = opts.history
    tally = StimTally(fs)
    show = StatusLine(config, info)  # the live status line
    started = time.perf_counter()
    last_data = last_status = -math.inf
    last_counter: int | None = None
    last_time = math.nan
    watchdog = Watchdog(max(2 * opts.watchdog_s, 0.25), lambda: _emergency_off(stimulator, stop))
    watchdog.start()
    try:
        while True:
            # 1. read (short timeout: stop requests and stalls are seen at once)
            for cmd in control() if control else ():
                if cmd.command == "stop" and not stop.is_set():
                    stop.set("stop_button")
                    _stopped_by(out, cmd.sender, outlets, pipeline.position, last_time)
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
                _check_stall(now, last_data, started, opts, info.name)
                continue
            last_data = now
            if chunk.counter is not None and chunk.n:
                if last_counter is not None and chunk.counter[0] > last_counter + 1:
                    out.samples_lost += int(chunk.counter[0] - last_counter - 1)
                last_counter = int(chunk.counter[-1])

            # 2. check the input: segments inside which no channel changes usability
            segments = inputs.feed(chunk, until=end)
            _tell(out, inputs.pop_notices(), status, outlets)
            keep_last(out.issues, keep)
            chunk_stop = inputs.position
            block = None
            for seg in segments:
                ended = _suspend_and_resume(pipeline, seg)

                # 3. the signal core
                block = pipeline.process(seg.samples, seg.timestamps)
                inputs.say_rest(pipeline.detector.pop_notes())  # rest that was not quiet
                block.events[:0] = ended  # a channel suspended while active: its offset
                last_time = float(block.timestamps[-1])
                out.events.extend(block.events)
                out.n_events += len(block.events)
                keep_last(out.events, keep)
                for e in block.events:
                    out.onsets[e.channel] += e.kind == "onset"

                # 4-5. protocol -> guard -> stimulator (and the blanking schedule)
                safe: list[StimCommand] = []
                try:
                    if protocol is not None:
                        safe = guard.filter(protocol.step(block), block=block)
                        for v in guard.pop_violations():
                            out.violations.append(v.message)
                            out.n_violations += 1
                            if status:
                                status(f"safety: {v.message}")
                        keep_last(out.violations, keep)
                        if safe:
                            handed = time.perf_counter()
                            safe = [replace(c, arrival_wall=chunk.arrival_wall,
                                            handed_wall=handed,
                                            effective_sample=effective(c, chunk_stop),
                                            delivered_hz=stimulator.delivered_hz(c.frequency_hz))
                                    for c in safe]
                            for c in safe:  # blank where the device's pulses really fall
                                remover.command(c.muscle, c.channel, c.is_on, c.pulse_rate_hz,
                                                c.effective_sample)
                            _record(out, tally, safe, keep)  # handed over, even if it fails
                            stimulator.apply(safe)
                            out.arrival_to_command_ms += [1000 * (handed - chunk.arrival_wall)
                                                          for c in safe if c.is_on]
                            keep_last(out.arrival_to_command_ms, keep)
                except BaseException:
                    # the device failed: what was decided up to here is still recorded
                    if outlets is not None:
                        with contextlib.suppress(Exception):
                            _publish(outlets, seg, block, safe, protocol)
                    raise

                # 6. publish
                if outlets is not None:
                    _publish(outlets, seg, block, safe, protocol)
                if guard is not None and guard.must_stop:
                    raise SafetyError(guard.stop_violation.message)
            _tell(out, inputs.pop_notices(), status, outlets)
            keep_last(out.issues, keep)
            if stimulator is not None:
                stimulator.check()
            if recorder is not None:
                recorder.check()
            if status and block is not None and now - last_status >= opts.status_every_s:
                last_status = now
                status(show(block, stimulator, protocol, inputs.why))

            # 7. duration on the sample clock
            if end is not None and pipeline.position >= end:
                out.reason = "duration"
                break
    except (Exception, KeyboardInterrupt) as exc:  # every error ends with stimulation off
        out.reason, out.message = classify(exc)
        out.error = exc if out.reason == "error" else None
    finally:
        watchdog.stop()
        _all_off(out, tally, stimulator, guard, pipeline.position, last_time, outlets)
        _tell(out, inputs.finish(), status, outlets)  # nothing the checks found goes unsaid
        out.stop_wall = stop.wall
        if watchdog.tripped and out.reason in ("", "interrupt", "stall"):
            out.reason = "stall"
            out.message = out.message or ("the loop stopped responding; the watchdog switched "
                                          "stimulation off")
    out.message = out.message or MESSAGES.get(out.reason, out.reason)
    out.samples = pipeline.position
    out.seconds = pipeline.position / fs
    if protocol is not None:
        c = protocol.counts
        out.trials = {"trials": c.trials, "hits": c.hits, "misses": c.misses, "gated": c.gated}
    out.stim_seconds = tally.seconds(pipeline.position)
    if keep is not None:
        for items in (out.events, out.commands, out.arrival_to_command_ms, out.issues,
                      out.violations):
            del items[: max(0, len(items) - keep)]
    return out


def _tell(out: Outcome, notices, status, outlets) -> None:
    """What the input checks said: to the summary, the status line and the recording
    and live view (an ``input_issue`` marker at the sample it concerns)."""
    for notice in notices:
        out.issues.append(notice.message)
        out.n_issues += 1
        if status:
            status(f"input: {notice.message}")
        if outlets is not None:
            with contextlib.suppress(Exception):  # a failing outlet must not stop the loop
                outlets.push_marker("input_issue", notice.time, sample=notice.sample,
                                    kind=notice.kind, channel=notice.channel,
                                    message=notice.message)


def _record(out: Outcome, tally: StimTally, commands: list[StimCommand], keep: int | None) -> None:
    """Count the commands sent, add them to the dose tally and the (bounded) history."""
    out.commands.extend(commands)
    out.n_commands += len(commands)
    tally.add(commands)
    keep_last(out.commands, keep)


def _publish(outlets, seg, block, commands: list[StimCommand], protocol) -> None:
    """Push one segment's samples, its block (envelope, thresholds, events), the
    commands handed to the stimulator and the protocol's trial markers."""
    outlets.push_emg(seg.received, seg.timestamps, start=seg.start,  # NaN/inf as they came
                     source_counter=seg.counter)
    outlets.push_block(block)
    outlets.push_commands(commands)
    for te in protocol.pop_trial_events() if protocol is not None else ():
        outlets.push_marker(te.kind, te.time, **_fields(te))


def _suspend_and_resume(pipeline: Pipeline, seg) -> list:
    """Switch the detectors the input checks decided at the segment's first sample;
    return the offsets of channels suspended while active."""
    ended = []
    for c, held in seg.holds:  # the impulse gate judging a stretch: no new onset
        pipeline.detector.hold(c, held)
    for c, suspend in seg.changes:
        ended += pipeline.detector.suspend(c, suspend, seg.start, float(seg.timestamps[0]))
    for c in seg.restarts:  # good data again: restart the filters, no ringing from the step
        pipeline.restart_channel(c, seg.samples[0, c])
    return ended


def _stopped_by(out: Outcome, sender, outlets, position: int, last_time: float) -> None:
    """Keep who sent the STOP: in the outcome (summary, JSON) and the recording."""
    out.stopped_by = sender
    out.message = f"stopped with STOP from {sender.describe()}"
    if outlets is not None:
        with contextlib.suppress(Exception):  # publishing must not delay the stop
            outlets.push_marker("stop_request", last_time if math.isfinite(last_time) else 0.0,
                                sample=max(position - 1, 0), **asdict(sender))


def _check_stall(now: float, last_data: float, started: float, opts: LoopOptions,
                 name: str) -> None:
    """Raise StallError when the source has been silent for longer than the watchdog."""
    if last_data == -math.inf:  # nothing yet: the stream may take a moment to start
        if now - started > max(opts.watchdog_s, opts.startup_s):
            raise StallError(
                f"no EMG from {name!r} within {max(opts.watchdog_s, opts.startup_s):g} s of "
                "the start: check that the amplifier is streaming"
            )
    elif now - last_data > opts.watchdog_s:
        raise StallError(
            f"no EMG from {name!r} for {1000 * (now - last_data):.0f} ms (watchdog "
            f"{1000 * opts.watchdog_s:.0f} ms): check the amplifier, its cable or the LSL stream"
        )


def _emergency_off(stimulator: Stimulator | None, stop: StopRequest) -> None:
    """Called from the watchdog thread when the loop is stuck."""
    stop.set("stall")
    if stimulator is not None:
        try:
            stimulator.stop_all()
        except Exception:  # noqa: BLE001 - the loop reports; the device stops on its own watchdog
            pass


def _all_off(out: Outcome, tally: StimTally, stimulator, guard, position: int, last_time: float,
             outlets) -> None:
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
    if guard is not None:
        offs = guard.all_off(max(position - 1, 0), last_time)
        _record(out, tally, offs, None)
        if outlets is not None:
            try:
                outlets.push_commands(offs)
            except Exception:  # noqa: BLE001 - publishing must not hide the stop
                pass


def _fields(te) -> dict:
    d = asdict(te)
    d.pop("kind", None)
    d.pop("time", None)
    return d


__all__ = ["EXIT_CODES", "EffectiveSample", "LoopOptions", "Outcome", "StopRequest", "run_loop"]
