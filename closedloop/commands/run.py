"""``closedloop run``: a live session, from the command line.

Parses the command line into a :class:`~closedloop.runtime.session.SessionPlan`, builds
and opens the session (:class:`~closedloop.runtime.session.Session`: the source and
stimulator from the config or ``--source`` / ``--stimulator``, the LSL outlets, the
recording, the live view), runs the loop, closes it and prints the summary. The whole
command runs inside :func:`~closedloop.runtime.signals.stop_on_signals`: SIGINT (Ctrl-C), SIGTERM,
SIGHUP (the terminal closed) and SIGQUIT stop the session like the STOP button, and
cannot interrupt the closing of the devices, the recording or the summary (which is
printed with :func:`~closedloop.runtime.signals.say`, so a terminal that is gone does
not turn the stop into an error). The exit code says how the session ended (the table
of :mod:`closedloop.errors`).

A session for a patient (``--patient ID`` or the config's ``patient``) starts from the
patient's last stored calibration when the config has none, and says so; once every
channel is off and the recording is closed, it adds its summary to the patient record
(``--db``, :mod:`closedloop.io.records`). A record that cannot be written is one line of
the summary; it never changes how the session ended.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from closedloop.config import Config
from closedloop.core.detectors.base import statistic_of
from closedloop.errors import ClosedLoopError
from closedloop.io.records import resolve_path
from closedloop.runtime.outcome import LoopOptions, Outcome, StoppedWhileOpeningError, StopRequest
from closedloop.runtime.session import Session, SessionPlan
from closedloop.runtime.signals import say, stop_on_signals
from closedloop.runtime.status import terminal_width
from closedloop.units import display_units, duration, number


def summary_lines(out: Outcome, *, recorded: str | None = None, patient: str | None = None,
                  operator: str | None = None, calibration: str | None = None,
                  record: str | None = None, config: Config | None = None,
                  units: str = "") -> list[str]:
    """The end-of-session summary a clinician reads: every quantity with its unit.

    ``patient``, ``operator``: who; ``calibration``: where the thresholds came from (a
    stored calibration); ``record``: what happened to the patient record; ``config``: the
    session's (its protocol, stimulation and session dose limit); ``units``: the EMG
    source's (thresholds in µV when it is a voltage).
    """
    fs = out.samples / out.seconds if out.seconds > 0 else 0.0
    lines = [f"session ended: {out.message} (exit code {out.exit_code})"]
    if patient:
        lines.append(f"  patient         : {patient}"
                     + (f" (operator: {operator})" if operator else ""))
    elif operator:
        lines.append(f"  operator        : {operator}")
    lines.append(f"  duration        : {duration(out.seconds)} ({out.samples} samples"
                 + (f" at {fs:.0f} Hz)" if fs else ")"))
    if calibration:
        lines.append(f"  calibration     : {calibration}")
    lines.append("  onsets detected : " + ", ".join(
        f"{m} {n} onset{'s' * (n != 1)}" for m, n in out.onsets.items()))
    thresholds = _thresholds(out, config, units)
    if thresholds:
        lines.append(f"  on-thresholds   : {thresholds}")
    protocol = config.protocol.kind if config is not None and config.protocol else ""
    if out.trials:
        t = out.trials
        gated = (f"; {t['gated']} attempt{'s' * (t['gated'] != 1)} not stimulated "
                 "(co-contraction)") if t["gated"] else ""
        if protocol == "cued_trials":
            rate = f", success {100 * t['hits'] / t['trials']:.0f} %" if t["trials"] else ""
            lines.append(f"  cued trials     : {t['trials']} trials: {t['hits']} hits, "
                         f"{t['misses']} misses{rate}{gated}")
        else:
            lines.append(f"  repetitions     : {t['trials']} trigger{'s' * (t['trials'] != 1)}"
                         + (f" ({protocol.replace('_', ' ')})" if protocol else "") + gated)
    if out.stim_seconds:
        limit = config.safety.session_dose_s if config is not None and config.safety else None
        used = max(out.stim_seconds.values())
        lines.append("  stimulation time: " + ", ".join(
            f"{m} {duration(s)}" for m, s in out.stim_seconds.items())
            + (f" (session limit {duration(limit)} per muscle: {number(100 * used / limit)} % "
               "used)" if limit else ""))
        program = _stimulation_program(config)
        if program:
            lines.append(f"  stimulation     : {program}")
    if out.arrival_to_command_ms:
        a = np.asarray(out.arrival_to_command_ms)
        # the latencies kept are cut like the commands (LoopOptions.history): when the
        # command history is whole, so are they
        whole = out.n_commands == len(out.commands) or a.size < len(out.commands)
        which = f"{a.size} commands" if whole else f"the last {a.size} commands"
        lines.append(f"  processing time : median {np.percentile(a, 50):.2f} ms, "
                     f"p99 {np.percentile(a, 99):.2f} ms (EMG arrival to stimulation "
                     f"command, {which})")
    if math.isfinite(out.stop_to_off_ms):
        lines.append(f"  stop -> all off : {out.stop_to_off_ms:.1f} ms")
    lines.append(f"  samples lost    : {out.samples_lost}"
                 + (f" of {out.samples}" if out.samples else ""))
    if out.violations:
        lines.append(f"  safety          : {out.n_violations} intervention(s); "
                     f"last: {out.violations[-1]}")
    if out.issues:
        lines.append(f"  input warnings  : {out.n_issues}; last: {out.issues[-1]}")
    lines.append("  all channels off: " + ("yes" if out.all_off else "NOT CONFIRMED"))
    if recorded:
        lines.append(f"  recording       : {recorded}")
    if record:
        lines.append(f"  patient record  : {record}")
    return lines


def _thresholds(out: Outcome, config: Config | None, units: str) -> str:
    """Each muscle's on-threshold at its last onset, in the statistic's unit ("" when no
    onset is known)."""
    last = {e.channel: e.threshold for e in out.events
            if e.kind == "onset" and math.isfinite(e.threshold)}
    if not last:
        return ""
    u = display_units(units, statistic_of(config.detector_kind if config is not None
                                          else "threshold"))
    return ", ".join(f"{m} {u.stat(v)}" for m, v in last.items()) + f" ({u.stat_name}, at " \
        "the last onset)"


def _stimulation_program(config: Config | None) -> str:
    """The stimulation each muscle was given at its plateau: ``biceps 20 mA, 300 µs,
    35 Hz, 5 s on``."""
    if config is None or not config.stimulates:
        return ""
    if config.protocol is not None and config.protocol.kind == "proportional":
        return "; ".join(f"{m.name} up to {m.stim.current_ma:g} mA following the effort, "
                         f"{m.stim.pulse_width_us:g} µs, {m.stim.frequency_hz:g} Hz"
                         for m in config.muscles
                         if m.stim is not None and m.name in config.protocol.stimulated)
    return "; ".join(f"{m.name} {m.stim.current_ma:g} mA, {m.stim.pulse_width_us:g} µs, "
                     f"{m.stim.frequency_hz:g} Hz, {m.stim.on_time_s:g} s plateau"
                     for m in config.muscles if m.stim is not None)


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop run``; returns the exit code of the way the session ended."""
    with stop_on_signals() as stop:  # until the summary is out: see the module docstring
        return _main(args, stop)


def plan_from_args(args: argparse.Namespace) -> SessionPlan:
    """The session ``closedloop run``'s arguments ask for (checked as it opens)."""
    return SessionPlan(
        args.config, patient=args.patient, source=args.source, stimulator=args.stimulator,
        seed=args.seed, record=args.record, overwrite=bool(getattr(args, "overwrite", False)),
        publish=not args.no_outlets, view=not args.no_gui,
        confirm_checklist=bool(args.confirm_checklist), patient_db=resolve_path(args.db),
        operator=args.operator,
    )


def _main(args: argparse.Namespace, stop: StopRequest) -> int:
    session = Session(plan_from_args(args), tell=_tell)
    out = Outcome()
    try:
        session.open(stop)
        _say_started(session)
        assert session.config is not None  # loaded by open()
        out = session.run(
            LoopOptions(duration_s=args.duration,
                        watchdog_s=session.config.session.watchdog_ms / 1000.0),
            stop=stop, status=None if args.quiet else _printer())
    except ClosedLoopError as exc:  # before the loop started (the loop reports its own)
        # a signal while opening cut a wait short (a stream not yet there): it is why
        out = Outcome.failed(StoppedWhileOpeningError(stop.reason) if stop.is_set() else exc)
    finally:
        closed = session.close(out)
    record_id, record = session.save_record(out, recorded=closed.recorded is not None)
    config, choice, operator = session.config, session.calibration, session.operator
    if not args.quiet and sys.stderr.isatty():
        say(file=sys.stderr)  # end the status line
    for line in summary_lines(out, recorded=closed.recorded,
                              patient=config.patient if config else None,
                              operator=operator, record=record,
                              calibration=choice.summary if choice else None,
                              config=config, units=session.units):
        say(line)
    if args.json:
        say(json.dumps({
            "reason": out.reason, "exit_code": out.exit_code, "samples": out.samples,
            "samples_lost": out.samples_lost, "onsets": out.onsets, "trials": out.trials,
            "stim_seconds": out.stim_seconds, "all_off": out.all_off,
            "commands": out.n_commands, "violations": out.n_violations,
            "stop_to_off_ms": out.stop_to_off_ms if math.isfinite(out.stop_to_off_ms) else None,
            "channels_on_at_end": closed.channels_on, "message": out.message,
            "stopped_by": asdict(out.stopped_by) if out.stopped_by is not None else None,
            "patient": config.patient if config else None, "operator": operator,
            "started": session.started,
            "calibration": choice.metadata if choice else None,
            "record": None if not (config and config.patient) else {
                "db": str(resolve_path(args.db)), "id": record_id,
                "error": None if record_id is not None else record},
        }))
    return out.exit_code


def _tell(line: str) -> None:
    """What the session says while it opens: one line on stderr."""
    say(f"closedloop run: {line}", file=sys.stderr)


def _say_started(session: Session) -> None:
    assert session.source is not None
    info, stim = session.source.info, session.stimulator
    name = session.config.name if session.config is not None else ""
    say(f"closedloop run: {name} on {info.name} "
        f"({info.n_channels} ch at {info.fs:g} Hz), stimulator "
        f"{type(stim).__name__ if stim else 'none'}; session {session.name}; "
        "Ctrl-C or STOP stops", file=sys.stderr)


def _printer() -> Callable[[str], None]:
    """The status callback: on a terminal the live status line is redrawn in place;
    messages (input checks, safety) and everything written into a pipe or a log are
    plain lines, never a carriage return."""
    tty = sys.stderr.isatty()

    def status(line: str) -> None:
        if tty and not line.startswith(("input:", "safety:")):
            width = terminal_width()  # the line was fitted to it (StatusLine)
            say("\r" + line[:width].ljust(width), end="", file=sys.stderr)
        else:
            say(line, file=sys.stderr)

    return status
