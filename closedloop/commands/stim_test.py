"""``closedloop stim-test``: a short guarded test train to check electrodes and find a
comfortable current.

It ramps up in guard-limited steps, holds, ramps down, refuses anything beyond the
config's limits for that muscle with a clear message before sending anything, and ends
with all channels off: also on error, and on SIGINT (Ctrl-C), SIGTERM, SIGHUP (the
terminal closed) and SIGQUIT (:func:`~closedloop.runtime.signals.stop_on_signals`). A
real stimulator needs the safety checklist first (terminal, or ``--confirm-checklist``),
as for ``closedloop run``. The exit code follows
:data:`~closedloop.runtime.outcome.EXIT_CODES`: 0 completed, 5 a device fault (the
stimulator refused, stayed busy, was lost, or its port is in use), 6 a safety refusal,
129/130/131/143 a signal.
"""

from __future__ import annotations

import math
import sys

from closedloop.config import load_config
from closedloop.errors import ClosedLoopError, ConfigError, SafetyError
from closedloop.runtime.devices import make_stimulator, stimulated_muscles
from closedloop.runtime.outcome import EXIT_CODES, MESSAGES, classify
from closedloop.runtime.signals import say, stop_on_signals
from closedloop.stim.drivers.sim import SimStimulator
from closedloop.stim.guard import SafetyGuard
from closedloop.stim.stimtest import run_stim_test


def main(args) -> int:
    """Run ``closedloop stim-test``; returns the exit code of the way it ended."""
    config = load_config(args.config)
    if not config.stimulates:
        raise ConfigError(f"{config.path}: has no [protocol]; stim-test needs a stimulation config")
    muscles = stimulated_muscles(config)
    if args.muscle not in muscles:
        raise ConfigError(
            f"{config.path}: muscle {args.muscle!r} has no stimulation settings; "
            f"stimulated muscles: {', '.join(muscles)}"
        )
    m = muscles[args.muscle]
    pw = args.pulse_width if args.pulse_width is not None else m.stim.pulse_width_us
    freq = args.frequency if args.frequency is not None else m.stim.frequency_hz
    stimulator = make_stimulator(config, args.stimulator)
    if stimulator is None:
        raise ConfigError("stim-test needs a stimulator: use --stimulator sim, p24:PORT, "
                          "rehastim2:PORT or lsl[:NAME]")
    session = getattr(stimulator, "session", None)  # a stimulator that publishes (lsl)
    if session is not None:
        print(f"stim-test: session {session.name} (follow it with closedloop stim-receiver "
              f"--session {session.name})", file=sys.stderr, flush=True)
    if not isinstance(stimulator, SimStimulator):
        from closedloop.runtime.checklist import ask_checklist

        if not args.confirm_checklist:
            if not sys.stdin.isatty():
                raise SafetyError(
                    "the safety checklist must be confirmed before stimulating a patient: "
                    "answer it in a terminal, or pass --confirm-checklist once checked"
                )
            ask_checklist()
    guard = SafetyGuard.from_muscles(muscles, config.safety, 1000.0, protocol=config.protocol)
    with stop_on_signals() as stop:
        summary, reason, message = None, "", ""
        try:
            stimulator.open()
            summary = run_stim_test(stimulator, guard, m.name, m.stim.channel, m.limits,
                                    args.current, pw, freq, args.duration, stop=stop)
        except ClosedLoopError as exc:
            reason, message = classify(exc)
        finally:
            closing = _close(stimulator)
        if summary is not None and summary.stopped:
            reason = summary.stopped
            message = MESSAGES.get(reason, reason)
        all_off = not closing and not stimulator.any_on
        if closing:
            message = f"{message}; " if message else ""
            message += (f"could NOT confirm all channels off ({closing}) - switch the "
                        "stimulator off by hand")
            reason = reason or "device"
        _report(summary, m, reason, message, all_off, stop)
    return EXIT_CODES.get(reason, 1) if reason else 0


def _close(stimulator) -> str:
    """Close the stimulator (which switches every channel off); what failed, or ""."""
    try:
        stimulator.close()
    except Exception as exc:  # noqa: BLE001 - reported: the clinician must switch it off
        return f"{type(exc).__name__}: {exc}"
    return ""


def _report(summary, muscle, reason: str, message: str, all_off: bool, stop) -> None:
    """The test's one-line result on stdout (what went wrong also on stderr)."""
    off = "all channels off" if all_off else "all channels off: NOT CONFIRMED"
    if summary is None:
        say(f"closedloop stim-test: {message}", file=sys.stderr)
        say(f"stim-test {muscle.name} (channel {muscle.stim.channel}): "
            f"stopped: {message}; {off}")
        return
    done = "completed" if summary.completed else f"NOT completed ({message})"
    say(f"stim-test {summary.muscle} (channel {summary.channel}): "
        f"peak {summary.peak_current_ma:g} mA "
        f"at {summary.pulse_width_us:g} us, {summary.frequency_hz:g} Hz; {summary.n_commands} "
        f"commands; {done}; {off}")
    if summary.stopped and math.isfinite(stop.wall) and math.isfinite(summary.off_wall):
        say(f"  stop -> all off: {1000 * (summary.off_wall - stop.wall):.1f} ms")
    for v in summary.violations:
        say(f"  guard: {v.message}")
    if reason and not summary.stopped:
        say(f"closedloop stim-test: {message}", file=sys.stderr)
