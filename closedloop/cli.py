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

#: exit codes
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _results_args(p: argparse.ArgumentParser) -> None:
    """Options of the commands that write results tables (evaluate, replay)."""
    p.add_argument("--format", choices=("text", "csv", "md", "json"),
                   help="table format (default: from --out's suffix, else text)")
    p.add_argument("--out", help="write the table to this file (never replaced: see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="bootstrap resamples of the 95%% intervals (default 2000; 0: none)")
    p.add_argument("--bootstrap-seed", type=int, default=0, metavar="SEED",
                   help="seed of the bootstrap (default 0): the same seed, the same intervals")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run on this Dask scheduler (tcp://host:8786; files on a shared path; "
                        "pip install 'closedloop[cluster]')")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="closedloop",
        description="EMG-triggered electrical stimulation for stroke rehabilitation.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("detect", help="run the onset detector offline over a file")
    d.add_argument(
        "input", help=".npz (emg, fs[, channels]), .xdf (the EMG stream; --stream), BrainFlow "
        "file (--board), or text/CSV (--fs)"
    )
    d.add_argument("--config", help="TOML config (default: default settings on every channel)")
    d.add_argument("--out", required=True, help="events CSV to write (sample,time_s,channel,kind)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    d.add_argument("--fs", type=float, help="sampling rate of a text/CSV input, Hz")
    d.add_argument("--columns", help="text input: comma-separated 0-based columns to use")
    d.add_argument("--board", help="the input is a BrainFlow file of this board (e.g. synthetic)")
    d.add_argument("--stream", help=".xdf input: name or type of the EMG stream (default: the "
                   "closedloop EMG stream, or the only stream of type EMG)")
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
    rp.add_argument("--config", action="append", dest="configs", metavar="CONFIG",
                    help="config to replay with (default: the one stored in the recording, "
                         "also named 'recorded'); repeat to compare configs side by side")
    rp.add_argument("--speed", default="fast", help="realtime | fast | a factor such as 2")
    rp.add_argument("--stream", help="EMG stream name or type (recordings by other LSL tools)")
    rp.add_argument(
        "--check",
        action="store_true",
        help="compare derived events and commands with the recorded ones; exit 8 on a difference",
    )
    rp.add_argument("--quiet", action="store_true")
    rp.add_argument("--jobs", type=int, help="worker processes for many files (default: all cores)")
    _results_args(rp)
    rp.set_defaults(module="closedloop.commands.replay")
    ev = sub.add_parser("evaluate", help="score detectors against reference onsets on recordings")
    ev.add_argument("inputs", nargs="*",
                    help=".npz/.xdf/text files, folders of them, or the shared data folder")
    ev.add_argument(
        "--detector",
        action="append",
        dest="detectors",
        help="threshold | double_threshold | tkeo | NAME:k=v,... | config.toml (repeatable)",
    )
    ev.add_argument("--labels", help="CSV of reference onsets (sample,channel or time_s,channel"
                    "[,file])")
    ev.add_argument("--truth-label", help="label of the reference markers in XDF recordings "
                    "(default: truth)")
    ev.add_argument("--fs", type=float, help="sampling rate of text inputs")
    ev.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    _results_args(ev)
    ev.add_argument("--json", action="store_true", help="last line: the rows as JSON")
    ev.add_argument("--simulate", help="also simulate recordings at these SNRs, e.g. 20,10,0,-3")
    ev.add_argument("--minutes", type=float, default=5.0)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(module="closedloop.analysis.evaluate")

    x = sub.add_parser("export", help="recordings as an EMG-BIDS dataset (BDF+, TSV, JSON)")
    x.add_argument("inputs", nargs="+", metavar="FILE.xdf")
    x.add_argument("--bids", required=True, metavar="ROOT", help="BIDS dataset folder "
                   "(created if needed; existing files are never replaced)")
    x.add_argument("--subject", required=True, help="BIDS subject label (letters, digits)")
    x.add_argument("--session", help="BIDS session label (letters, digits)")
    x.add_argument("--task", help="BIDS task label (default: the config's name, letters and "
                   "digits only)")
    x.add_argument("--run", type=int, help="run index of the first file (several files of "
                   "one task get runs 1, 2, ... by default)")
    x.add_argument("--config", help="config for placement and task (default: the recording's)")
    x.add_argument("--stream", help="name or type of the EMG stream (other tools' recordings)")
    x.add_argument("--emg-units", choices=("V", "mV", "uV"),
                   help="unit of the EMG stream when the recording does not say")
    x.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    x.add_argument("--cluster", metavar="ADDRESS", help="run on this Dask scheduler "
                   "(tcp://host:8786; files and ROOT on a shared path)")
    x.set_defaults(module="closedloop.commands.export")

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
    c.set_defaults(module="closedloop.analysis.calibrate")
    return p


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
