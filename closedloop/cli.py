"""The ``closedloop`` command: one subcommand per task.

Each subcommand lives in its own module with a ``main(args) -> int``; this file only
declares the arguments. Errors of the closedloop family are printed as one clear line
(what happened, what to check) with a non-zero exit code; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from closedloop.errors import ClosedLoopError
from closedloop.io.records import ENV_VAR

#: exit codes
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="closedloop",
        description="EMG-triggered electrical stimulation for stroke rehabilitation.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("detect", help="run the onset detector offline over a file")
    d.add_argument(
        "input", help=".npz (emg, fs[, channels]), BrainFlow file (--board), or text/CSV (--fs)"
    )
    d.add_argument("--config", help="TOML config (default: default settings on every channel)")
    d.add_argument("--out", required=True, help="events CSV to write (sample,time_s,channel,kind)")
    d.add_argument("--fs", type=float, help="sampling rate of a text/CSV input, Hz")
    d.add_argument("--columns", help="text input: comma-separated 0-based columns to use")
    d.add_argument("--board", help="the input is a BrainFlow file of this board (e.g. synthetic)")
    d.set_defaults(module="closedloop.analysis.detect")

    b = sub.add_parser("bench", help="measure the signal core's speed (or --latency end to end)")
    b.add_argument("--channels", type=int, default=8)
    b.add_argument("--fs", type=float, default=2000.0)
    b.add_argument("--minutes", type=float, default=10.0)
    b.add_argument("--large", type=int, default=10000, help="large chunk size, samples")
    b.add_argument("--latency", action="store_true", help="end-to-end latency over LSL loopback")
    b.add_argument("--seconds", type=float, default=60.0, help="--latency: how long to stream")
    b.add_argument("--json", action="store_true", help="last line: one JSON object")
    b.add_argument("--outlets", action="store_true", help="--latency: publish the LSL outlets")
    b.add_argument("--with-view", action="store_true",
                   help="--latency: also attach a live view (implies --outlets)")
    b.set_defaults(module="closedloop.analysis.bench")
    r = sub.add_parser(
        "run", help="run a closed-loop session (default: simulated patient and stimulator)"
    )
    r.add_argument("--config", required=True, help="TOML config, e.g. configs/biceps_triceps.toml")
    r.add_argument("--source", help="sim | brainflow:BOARD[?k=v] | lsl:name=NAME | replay:FILE.xdf")
    r.add_argument("--stimulator", help="sim | rehastim2:PORT | p24:PORT | lsl[:NAME] | none "
                   "(lsl: follow it with closedloop stim-receiver)")
    r.add_argument("--record", help="record the session to this XDF file (LabRecorder)")
    r.add_argument("--duration", type=float, help="stop after this many seconds of samples")
    r.add_argument("--seed", type=int, help="seed of the simulated patient")
    r.add_argument("--no-gui", action="store_true", help="no live view: one-line status instead")
    r.add_argument(
        "--confirm-checklist",
        action="store_true",
        help="the pre-stimulation safety checklist was checked (scripted use)",
    )
    r.add_argument("--no-outlets", action="store_true", help="do not publish LSL streams")
    r.add_argument("--quiet", action="store_true", help="no live status line")
    r.add_argument("--json", action="store_true", help="last line: the summary as JSON")
    _patient_args(r, "the session")
    r.set_defaults(module="closedloop.commands.run")
    st = sub.add_parser("stim-test", help="a short guarded test train on one muscle")
    st.add_argument("--config", required=True)
    st.add_argument(
        "--stimulator",
        help="sim | rehastim2:PORT | p24:PORT | lsl[:NAME] (default: the config's)"
    )
    st.add_argument("--muscle", required=True)
    st.add_argument("--current", type=float, required=True, help="mA")
    st.add_argument("--pulse-width", type=float, help="us (default: the muscle's)")
    st.add_argument("--frequency", type=float, help="Hz (default: the muscle's)")
    st.add_argument("--duration", type=float, default=2.0, help="hold at full current, s")
    st.add_argument("--confirm-checklist", action="store_true")
    st.set_defaults(module="closedloop.commands.stim_test")
    sr = sub.add_parser(
        "stim-receiver",
        help="reference receiver of --stimulator lsl: prints what it would apply, "
        "switches off when the session's heartbeats stop",
    )
    sr.add_argument("--session", help="session name or uid to lock onto (as closedloop run "
                    "printed it; default: the only stimulator stream visible)")
    sr.add_argument("--timeout-ms", type=float, default=150.0,
                    help="switch off after this long without a heartbeat (default 150)")
    sr.add_argument("--wait", type=float, default=30.0,
                    help="seconds to wait for the stream to appear (default 30)")
    sr.add_argument("--json", action="store_true", help="one JSON object per line")
    sr.set_defaults(module="closedloop.commands.stim_receiver")

    rp = sub.add_parser("replay", help="run recordings through the exact pipeline (no hardware)")
    rp.add_argument("inputs", nargs="+", metavar="FILE.xdf")
    rp.add_argument("--config", help="config to use (default: the one stored in the recording)")
    rp.add_argument("--speed", default="fast", help="realtime | fast | a factor such as 2")
    rp.add_argument("--stream", help="EMG stream name or type (recordings by other LSL tools)")
    rp.add_argument(
        "--check",
        action="store_true",
        help="compare derived events and commands with the recorded ones; exit 8 on a difference",
    )
    rp.add_argument("--quiet", action="store_true")
    rp.add_argument("--jobs", type=int, help="worker processes for many files (default: all cores)")
    rp.set_defaults(module="closedloop.runtime.replay")
    ev = sub.add_parser("evaluate", help="score detectors against reference onsets on recordings")
    ev.add_argument("inputs", nargs="*", help=".npz/.xdf/text files, or the shared data folder")
    ev.add_argument(
        "--detector",
        action="append",
        dest="detectors",
        help="threshold | double_threshold | tkeo | NAME:k=v,... | config.toml (repeatable)",
    )
    ev.add_argument("--labels", help="CSV of reference onsets (sample,channel or time_s,channel)")
    ev.add_argument("--fs", type=float, help="sampling rate of text inputs")
    ev.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--simulate", help="also simulate recordings at these SNRs, e.g. 20,10,0,-3")
    ev.add_argument("--minutes", type=float, default=5.0)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(module="closedloop.analysis.evaluate")

    rep = sub.add_parser("report", help="one-page HTML summary of a recorded session")
    rep.add_argument("input", metavar="FILE.xdf")
    rep.add_argument("--out", help="HTML file (default: FILE.html)")
    rep.set_defaults(module="closedloop.analysis.report")
    v = sub.add_parser(
        "view", help="live view of a running session (subscribes to its LSL streams)"
    )
    v.add_argument("--session", help="session name (default: the first one found)")
    v.add_argument("--screenshot", help="save the window to this PNG after a few seconds")
    v.add_argument("--duration", type=float, help="close after this many seconds")
    v.add_argument("--demo", type=int, help="start a simulated session with N muscles and view it")
    v.set_defaults(module="closedloop.view.app")

    c = sub.add_parser("calibrate", help="rest + maximal contractions -> a patient config")
    c.add_argument("--config", required=True)
    c.add_argument("--source", help="source spec (default: the config's)")
    c.add_argument("--stimulator",
                   help="the patient's stimulator (sim | rehastim2:PORT | p24:PORT | lsl[:NAME]"
                        " | none): checked against the program, written to the patient config")
    c.add_argument("--out", required=True, help="patient config TOML to write")
    c.add_argument("--rest-s", type=float, default=5.0)
    c.add_argument("--mvc-reps", type=int, default=3)
    c.add_argument("--mvc-s", type=float, default=3.0)
    c.add_argument("--no-gui", action="store_true")
    c.add_argument(
        "--yes", action="store_true", help="confirm the stimulation limits without asking"
    )
    _patient_args(c, "the calibration (and written to the patient config)")
    c.set_defaults(module="closedloop.analysis.calibrate")

    h = sub.add_parser("history", help="a patient's progress over sessions and weeks "
                       "(from the patient record)")
    h.add_argument("patient", metavar="PATIENT", help="the patient's pseudonymous id, e.g. P01")
    h.add_argument("--db", metavar="PATH",
                   help=f"the patient record (default: ${ENV_VAR}, else {_db_default()})")
    h.add_argument("--out", metavar="FILE.html", help="also write an HTML page with plots")
    h.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    h.set_defaults(module="closedloop.commands.history")
    return p


def _db_default() -> str:
    from closedloop.io.records import user_data_path

    return str(user_data_path())


def _patient_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--patient``, ``--operator`` and ``--db`` of a command that stores a session."""
    p.add_argument("--patient", metavar="ID",
                   help=f"the patient's pseudonymous id (letters, digits, - or _; never a "
                        f"name): overrides the config's patient, recorded with {what}")
    p.add_argument("--operator", metavar="NAME", help="who runs it (staff; optional)")
    p.add_argument("--db", metavar="PATH",
                   help=f"the patient record to add it to (default: ${ENV_VAR}, else "
                        f"{_db_default()})")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args.module)
    try:
        return int(module.main(args) or 0)
    except ClosedLoopError as exc:
        print(f"closedloop {args.command}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_ERROR)
    except KeyboardInterrupt:
        print(f"closedloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
