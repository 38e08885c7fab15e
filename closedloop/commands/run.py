"""``closedloop run``: a live session, from the command line.

Builds the source and stimulator from the config (or ``--source`` / ``--stimulator``),
optionally publishes LSL outlets and records to XDF, runs
:func:`closedloop.runtime.loop.run_loop` and prints the summary. The whole command runs
inside :func:`~closedloop.runtime.signals.stop_on_signals`: SIGINT (Ctrl-C), SIGTERM,
SIGHUP (the terminal closed) and SIGQUIT stop the session like the STOP button, and
cannot interrupt the closing of the devices, the recording or the summary (which is
printed with :func:`~closedloop.runtime.signals.say`, so a terminal that is gone does
not turn the stop into an error). The exit code says how the session ended (see
:mod:`closedloop.runtime.loop`).

A session for a patient (``--patient ID`` or the config's ``patient``) starts from the
patient's last stored calibration when the config has none, and says so; once every
channel is off and the recording is closed, it adds its summary to the patient record
(``--db``, :mod:`closedloop.io.records`). A record that cannot be written is one line of
the summary; it never changes how the session ended.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict

import numpy as np

from closedloop.config import Config, load_config
from closedloop.errors import ClosedLoopError
from closedloop.identity import SessionId, check_operator
from closedloop.io.records import now_iso, resolve_path
from closedloop.runtime.devices import check_input, make_source, make_stimulator
from closedloop.runtime.loop import LoopOptions, Outcome, StopRequest, run_loop
from closedloop.runtime.outcome import classify
from closedloop.runtime.patient_record import (
    CalibrationChoice,
    save,
    session_record,
    start_calibration,
)
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
    u = display_units(units, config.detector_kind if config is not None else "threshold")
    return ", ".join(f"{m} {u.stat(v)}" for m, v in last.items()) + f" ({u.stat_name}, at " \
        "the last onset)"


def _stimulation_program(config: Config | None) -> str:
    """The stimulation each muscle was given at its plateau: ``biceps 20 mA, 300 µs,
    35 Hz, 5 s on``."""
    if config is None or not config.stimulates:
        return ""
    return "; ".join(f"{m.name} {m.stim.current_ma:g} mA, {m.stim.pulse_width_us:g} µs, "
                     f"{m.stim.frequency_hz:g} Hz, {m.stim.on_time_s:g} s plateau"
                     for m in config.muscles if m.stim is not None)


def main(args) -> int:
    with stop_on_signals() as stop:  # until the summary is out: see the module docstring
        return _main(args, stop)


def _main(args, stop: StopRequest) -> int:
    session = _Session()
    try:
        out = session.run(args, stop)
    except ClosedLoopError as exc:  # before the loop started (the loop reports its own)
        out = Outcome()
        out.reason, out.message = classify(exc)
    finally:
        closing = session.close()
    if closing:
        out.all_off = False
        out.message += f"; closing the stimulator failed ({closing}) - switch it off by hand"
        if out.exit_code == 0:
            out.reason = "device"
    stim = session.stimulator
    # what the driver last told the device, after the loop's and close()'s stop_all
    on_at_end = sorted(ch for ch, o in stim.outputs.items() if o.is_on) if stim else []
    recorded = session.finish_recording(out, args.record)
    record_id, record = session.save_record(out, args, recorded=recorded is not None)
    config = session.config
    choice = session.calibration
    if not args.quiet and sys.stderr.isatty():
        say(file=sys.stderr)  # end the status line
    for line in summary_lines(out, recorded=recorded,
                              patient=config.patient if config else None,
                              operator=session.operator, record=record,
                              calibration=choice.summary if choice else None,
                              config=config, units=session._units()):
        say(line)
    if args.json:
        say(json.dumps({
            "reason": out.reason, "exit_code": out.exit_code, "samples": out.samples,
            "samples_lost": out.samples_lost, "onsets": out.onsets, "trials": out.trials,
            "stim_seconds": out.stim_seconds, "all_off": out.all_off,
            "commands": out.n_commands, "violations": out.n_violations,
            "stop_to_off_ms": out.stop_to_off_ms if math.isfinite(out.stop_to_off_ms) else None,
            "channels_on_at_end": on_at_end, "message": out.message,
            "stopped_by": asdict(out.stopped_by) if out.stopped_by is not None else None,
            "patient": config.patient if config else None, "operator": session.operator,
            "started": session.started,
            "calibration": choice.metadata if choice else None,
            "record": None if not (config and config.patient) else {
                "db": str(resolve_path(args.db)), "id": record_id,
                "error": None if record_id is not None else record},
        }))
    return out.exit_code


class _Session:
    """The devices, outlets and recorder of one ``closedloop run``."""

    def __init__(self) -> None:
        self.stimulator = self.source = self.outlets = self.recorder = None
        self.control = self.view = self.claim = None
        self.config: Config | None = None
        self.operator: str | None = None
        self.calibration: CalibrationChoice | None = None
        self.started = now_iso()

    def run(self, args, stop: StopRequest) -> Outcome:
        if args.record:  # first: a file that may not be written stops us before any device
            self.claim = _claim_recording(args)
        config = load_config(args.config)
        if args.patient:
            config = config.with_patient(args.patient, where="--patient")
        self.operator = check_operator(args.operator) if args.operator is not None else None
        self.config = config
        ident = SessionId.new(config.name)  # in every stream and stimulation message
        self.stimulator = stimulator = make_stimulator(config, args.stimulator, session=ident)
        self.source = source = make_source(config, args.source, seed=args.seed,
                                           stimulator=stimulator)
        if stimulator is not None:
            stimulator.open()
            if getattr(stimulator, "_clock", False) is None and hasattr(source, "now"):
                stimulator._clock = source.now  # sim: pulses start at the next sample
        checklist = _checklist(args, stimulator)
        source.open()
        note = check_input(source, stimulator)
        if note:
            print(f"closedloop run: {note}", file=sys.stderr, flush=True)
        if config.patient:  # before anything is published or recorded: they keep it
            self.calibration = start_calibration(config, resolve_path(args.db),
                                                 source.info.units)
            self.config = config = self.calibration.config
            if self.calibration.note:
                say(f"closedloop run: {self.calibration.note}", file=sys.stderr)
        name = ident.name
        gui = not args.no_gui
        if args.record or not args.no_outlets or gui:
            from closedloop.io.outlets import SessionOutlets
            from closedloop.sources.sim import SimSource

            sim = source if isinstance(source, SimSource) else None
            self.outlets = SessionOutlets(
                name, _muscle_info(config, source.info), config_text=config.text,
                metadata={"config": config.path, "source": source.info.name,
                          "stimulator": type(stimulator).__name__ if stimulator else "none",
                          "started": self.started,
                          "patient": config.patient, "operator": self.operator,
                          "calibration": (self.calibration.metadata
                                          if self.calibration else None),
                          "checklist": checklist,
                          "resolved_config": config.resolved,
                          **({"sim_seed": sim.seed} if sim is not None else {})},
                session_uid=ident.uid,
                # the simulated patient's true onsets, recorded as truth markers
                truth=sim.true_onsets_between if sim is not None else None,
            )
            from closedloop.runtime.control import ControlInlet

            self.control = ControlInlet(name)
        if gui:
            self.view = _open_view(name)
        if args.record:
            from closedloop.io.recorder import XdfRecorder

            self.recorder = XdfRecorder(args.record, self.outlets.recorder_predicates(),
                                        claim=self.claim)
            self.recorder.start()
            self.outlets.announce()
        say(f"closedloop run: {config.name} on {source.info.name} "
            f"({source.info.n_channels} ch at {source.info.fs:g} Hz), stimulator "
            f"{type(stimulator).__name__ if stimulator else 'none'}; session {name}; "
            "Ctrl-C or STOP stops", file=sys.stderr)
        return run_loop(
            config, source, stimulator,
            options=LoopOptions(duration_s=args.duration,
                                watchdog_s=config.session.watchdog_ms / 1000.0),
            stop=stop, outlets=self.outlets, recorder=self.recorder,
            status=None if args.quiet else _printer(),
            control=self.control.poll if self.control is not None else None,
        )

    def close(self) -> str:
        """Close the stimulator (which switches it off) and the source; what failed."""
        failed = ""
        try:
            if self.stimulator is not None:
                self.stimulator.close()
        except Exception as exc:  # noqa: BLE001 - reported, and the source still closes
            failed = f"{type(exc).__name__}: {exc}"
        if self.source is not None:
            self.source.close()
        if self.control is not None:
            self.control.close()
        if self.view is not None and self.view.poll() is None:
            self.view.terminate()
            try:
                self.view.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.view.kill()
        return failed

    def save_record(self, out: Outcome, args, *, recorded: bool) -> tuple[int | None, str | None]:
        """Add the session to the patient record, after every channel is off and the
        recording is closed: (row id, the summary's line). No patient: nothing stored."""
        config = self.config
        if config is None:
            return None, None
        if not config.patient:
            return None, "none (no patient id: --patient ID or patient = \"ID\" stores it)"
        record = session_record(
            out, config, started=self.started, units=self._units(),
            operator=self.operator, recording=args.record if recorded else None,
            calibration_from=self.calibration.record.id
            if self.calibration and self.calibration.record else None)
        return save(record, resolve_path(args.db))

    def _units(self) -> str:
        """Units of the EMG source ("" when it never opened)."""
        try:
            return self.source.info.units if self.source is not None else ""
        except Exception:  # noqa: BLE001 - a source that failed to open may not know
            return ""

    def finish_recording(self, out: Outcome, path) -> str | None:
        """Stop the recorder, prove every sample is in the file; close the outlets; let
        the file go (a file created for a session that never recorded is removed)."""
        try:
            return self._finish_recording(out, path)
        finally:
            if self.claim is not None:
                self.claim.release()

    def _finish_recording(self, out: Outcome, path) -> str | None:
        recorded = None
        if self.recorder is not None:
            try:
                self.recorder.stop()
                from closedloop.io.recorder import verify_recording

                report = verify_recording(path, self.outlets.counts)
                recorded = f"{path} - {report.summary()}"
                if not report.ok and out.exit_code == 0:
                    out.reason, out.message = "error", f"recording incomplete: {report.summary()}"
            except Exception as exc:  # noqa: BLE001
                recorded = f"{path} - recorder failed: {exc}"
                if out.exit_code == 0:
                    out.reason, out.message = "error", f"recording failed: {exc}"
        if self.outlets is not None:
            self.outlets.close()
        return recorded


def _claim_recording(args):
    """Claim ``--record`` (see :mod:`closedloop.io.outfile`): never over the config or a
    replayed recording, never over an existing file without ``--overwrite``, never while
    another session writes it."""
    from closedloop.io.outfile import claim_output
    from closedloop.sources.spec import parse_source_spec

    inputs = [("config", args.config)]
    if args.source:
        kind, params = parse_source_spec(args.source)
        if kind == "replay":
            inputs.append(("replayed recording", params["path"]))
    return claim_output(args.record, overwrite=bool(getattr(args, "overwrite", False)),
                        inputs=inputs, what="recording")


def _checklist(args, stimulator) -> dict:
    """The pre-stimulation safety checklist, as recorded in the session metadata.

    Required before a real stimulator is used: asked on the terminal, or confirmed with
    ``--confirm-checklist`` for scripted use. A session without a stimulator, or with the
    simulated one (no patient attached), records why it was not asked.
    """
    from closedloop.errors import SafetyError
    from closedloop.runtime.checklist import ask_checklist, confirmed_by_flag
    from closedloop.stim.drivers.sim import SimStimulator

    if stimulator is None:
        return {"required": False, "why": "no stimulator"}
    if isinstance(stimulator, SimStimulator):
        return {"required": False, "why": "simulated stimulator"}
    if args.confirm_checklist:
        return confirmed_by_flag().to_dict()
    if not sys.stdin.isatty():
        raise SafetyError(
            "the safety checklist must be confirmed before stimulating a patient: run "
            "closedloop run in a terminal to answer it, or pass --confirm-checklist once "
            "it has been checked"
        )
    return ask_checklist().to_dict()


def _open_view(session_name: str):
    """Start ``closedloop view`` for this session in its own process (it reads the
    session's LSL streams, so it can never stall or crash the loop), or None."""
    import os

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM")):
        say("closedloop run: no display; running without the live view "
            "(use --no-gui to silence this)", file=sys.stderr)
        return None
    return subprocess.Popen([sys.executable, "-m", "closedloop", "view", "--session", session_name])


def _muscle_info(config, info):
    from dataclasses import replace

    return replace(info, channels=config.muscle_names)


def _printer():
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
