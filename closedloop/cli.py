"""The ``closedloop`` command: one subcommand per task.

Each subcommand lives in its own module with a ``main(args) -> int``; this file only
declares the arguments, each with a type that refuses what cannot be meant (a duration
of NaN, a negative seed, a sampling rate of 0) with one line saying what is expected
(argparse's usage error, exit 2). An error of the closedloop family is printed as one
clear message (what happened, what to check), without a traceback, and the command exits
with the code its type carries: the one table of :mod:`closedloop.errors`, so the same
cause exits with the same code from every command (a bad or missing config 2, a
recording that cannot be read 7, a damaged one 9...). Anything else is a bug in
closedloop: it is said so in one line, followed by the traceback a developer needs, and
the exit code is 1.

Every command that writes a file refuses to replace an existing one unless
``--overwrite`` is given, and never writes over one of its inputs
(:mod:`closedloop.io.outfile`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator

from closedloop.config.signal import FS_RANGE
from closedloop.errors import EXIT_CODES, ClosedLoopError
from closedloop.io.records import ENV_VAR


def number(what: str, *, lo: float = 0.0, hi: float = math.inf, lo_ok: bool = False,
           integer: bool = False) -> Callable[[str], float | int]:
    """An argparse type: a finite number above ``lo`` (or at it, with ``lo_ok``) and at
    most ``hi``; anything else is refused as "not <what>"."""

    def convert(value: str) -> float | int:
        try:
            x: float | int = int(value) if integer else float(value)
        except ValueError:
            x = math.nan
        if not (math.isfinite(x) and x <= hi and (x > lo or lo_ok and x == lo)):
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}")
        return x

    convert.__name__ = what
    return convert


def text(value: str) -> str:
    """The argparse type of every option without one of its own: not empty (an empty
    ``--source "$AMP"`` must not quietly mean the default, the simulated patient) and
    without NUL characters."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is empty; give a value")
    if "\x00" in value:
        raise argparse.ArgumentTypeError(f"{value!r} contains a NUL character")
    return value


def input_file(value: str) -> str:
    """An argparse type for a file a command reads: a name the system can look up, and
    a file or a folder where it exists (reading a named pipe waits for a writer for
    ever, a device never ends). A missing file is left to the command, which says what
    it expected there."""
    value = text(value)
    _lookup(value)
    if os.path.exists(value) and not (os.path.isfile(value) or os.path.isdir(value)):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a regular file (a device, a named pipe or a socket); "
            "give the file itself")
    return value


def _lookup(value: str) -> None:
    """Refuse a name the system cannot look up (too long, a file used as a folder...); a
    missing file is fine."""
    try:
        os.stat(value)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{value[:80]!r}: {exc.strerror}") from None


def output_file(value: str) -> str:
    """An argparse type for a file a command writes: a name that is not empty, has no
    NUL and can be looked up. The command claims it before it writes
    (:func:`closedloop.io.outfile.claim_output`)."""
    if not value.strip() or "\x00" in value:
        raise argparse.ArgumentTypeError(f"{value!r} is not a file name")
    _lookup(value)
    return value


def output_dir(value: str) -> str:
    """An argparse type for a folder a command writes into: a usable name that is not an
    existing file."""
    if not value.strip() or "\x00" in value:
        raise argparse.ArgumentTypeError(f"{value!r} is not a folder name")
    _lookup(value)
    if os.path.exists(value) and not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is a file, not a folder; give a "
                                         "folder (it is created when missing)")
    return value


def replay_speed(value: str) -> str:
    """An argparse type: a replay speed (:func:`closedloop.sources.replay.parse_speed`),
    checked before any recording is read; kept as given."""
    from closedloop.errors import ConfigError
    from closedloop.sources.replay import parse_speed

    try:
        parse_speed(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def bids_label(value: str) -> str:
    """An argparse type: a BIDS label (letters and digits only, as BIDS requires)."""
    if not (value.isascii() and value.isalnum() and len(value) <= 64):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a BIDS label: 1 to 64 letters and digits (no '-', '_' "
            "or spaces), e.g. 01")
    return value


def cluster_address(value: str) -> str:
    """An argparse type: a Dask scheduler address, ``[tcp://|tls://]HOST:PORT``."""
    import re

    m = re.fullmatch(r"(?:(tcp|tls|ws|wss)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(\d{1,5})",
                     value.strip())
    if not m or not 0 < int(m.group(3)) < 65536:
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a Dask scheduler address; give HOST:PORT or "
            "tcp://HOST:PORT, as the scheduler printed it (e.g. tcp://10.0.0.5:8786)")
    return value.strip()


def columns(value: str) -> list[int]:
    """An argparse type: comma-separated 0-based column numbers (``0,2``)."""
    try:
        out = [int(t) for t in value.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a list of 0-based column numbers such as 1 or 0,2")
    return out


def numbers(what: str, lo: float, hi: float) -> Callable[[str], list[float]]:
    """An argparse type: comma-separated finite numbers in ``[lo, hi]``."""

    def convert(value: str) -> list[float]:
        try:
            out = [float(t) for t in value.split(",")]
        except ValueError:
            out = [math.nan]
        if not out or not all(math.isfinite(v) and lo <= v <= hi for v in out):
            raise argparse.ArgumentTypeError(
                f"{value!r} is not {what} ({lo:g} to {hi:g}, comma-separated, e.g. 20,10,0)")
        return out

    convert.__name__ = what
    return convert


SECONDS = number("a number of seconds > 0")
MINUTES = number("a number of minutes > 0, at most 60", hi=60.0)
HERTZ = number(f"a sampling rate in Hz ({FS_RANGE[0]:g} to {FS_RANGE[1]:g})",
               lo=FS_RANGE[0], hi=FS_RANGE[1], lo_ok=True)
SEED = number("a whole number >= 0", integer=True, lo_ok=True)
JOBS = number("a number of processes from 1 to 256", integer=True, hi=256)


def _overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} if it exists (never one of the inputs)")


def _results_args(p: argparse.ArgumentParser) -> None:
    """Options of the commands that write results tables (evaluate, replay)."""
    p.add_argument("--format", choices=("text", "csv", "md", "json"),
                   help="table format (default: from --out's suffix, else text)")
    p.add_argument("--out", type=output_file,
                   help="write the table to this file (never replaced: see --overwrite)")
    _overwrite(p, "an existing --out file")
    p.add_argument("--bootstrap", type=number("a number of resamples from 0 to 100000",
                                              integer=True, lo_ok=True, hi=1e5),
                   default=2000, metavar="N",
                   help="bootstrap resamples of the 95%% intervals (default 2000; 0: none)")
    p.add_argument("--bootstrap-seed", type=SEED, default=0, metavar="SEED",
                   help="seed of the bootstrap (default 0): the same seed, the same intervals")
    p.add_argument("--cluster", metavar="ADDRESS", type=cluster_address,
                   help="run on this Dask scheduler (tcp://host:8786; files on a shared path; "
                        "pip install 'closedloop[cluster]')")


def _registered(kind: str) -> str:
    """What a registry holds, for ``--help``: built-in names, installed add-ons, and that
    a ``module:Class`` spec is accepted (:mod:`closedloop.registry`)."""
    from closedloop import registry

    reg = {"detector": registry.DETECTORS, "protocol": registry.PROTOCOLS,
           "stimulator": registry.STIMULATORS, "source": registry.SOURCES}[kind]
    return " | ".join(reg.names()) + " | package.module:Class"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (every subcommand and option); the docs' synopses and the
    fuzz test read it. Help texts list what the registries hold, add-ons included."""
    p = argparse.ArgumentParser(
        prog="closedloop",
        description="EMG-triggered electrical stimulation for stroke rehabilitation.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("detect", help="run the onset detector offline over a file")
    d.add_argument(
        "input", type=input_file,
        help=".npz (emg, fs[, channels]), .xdf (the EMG stream; --stream), .edf/.bdf "
        "(EDF/BDF, EDF+/BDF+: rate, names and units from the file; pip install "
        "'closedloop[bids]'), BrainFlow file (--board), or text/CSV (--fs)",
    )
    d.add_argument("--config", type=input_file,
                   help="TOML config (default: default settings on every channel); its "
                        f"[detector] kind: {_registered('detector')}")
    d.add_argument("--out", required=True, type=output_file,
                   help="events CSV to write (sample,time_s,channel,kind)")
    _overwrite(d, "the events file")
    d.add_argument("--fs", type=HERTZ, help="sampling rate of a text/CSV input, Hz")
    d.add_argument("--columns", type=columns,
                   help="comma-separated 0-based columns to use (text), or channels (.xdf) "
                        "or signals (.edf/.bdf; default: the EMG)")
    d.add_argument("--board", help="the input is a BrainFlow file of this board (e.g. synthetic)")
    d.add_argument("--stream", help=".xdf input: name or type of the EMG stream (default: the "
                   "closedloop EMG stream, or the only stream of type EMG)")
    d.set_defaults(module="closedloop.commands.detect")

    b = sub.add_parser("bench", help="measure the signal core's speed (or --latency end to end)")
    b.add_argument("--channels", type=number("a number of channels from 1 to 64", integer=True,
                                             hi=64), default=8)
    b.add_argument("--fs", type=HERTZ, default=2000.0)
    b.add_argument("--minutes", type=MINUTES,
                   help="minutes of EMG (default 10; --replay: 60)")
    b.add_argument("--large", type=number("a chunk size from 1 to 1000000 samples", integer=True,
                                          hi=1e6), default=10000, help="large chunk size, samples")
    b.add_argument("--detector",
                   help=f"detector to measure (a [detector] kind: {_registered('detector')}; "
                        "default: the built-in default, cusum; --replay: threshold)")
    b.add_argument("--latency", action="store_true", help="end-to-end latency over LSL loopback")
    b.add_argument("--seconds", type=SECONDS, default=60.0, help="--latency: how long to stream")
    b.add_argument("--json", action="store_true", help="last line: one JSON object")
    b.add_argument("--outlets", action="store_true", help="--latency: publish the LSL outlets")
    b.add_argument("--with-view", action="store_true",
                   help="--latency: also attach a live view (implies --outlets)")
    b.add_argument("--replay", action="store_true",
                   help="time `closedloop replay FILE --check` end to end on a simulated "
                        "session (--minutes, --channels, --fs; --detector, default threshold) "
                        "recorded for it")
    b.add_argument("--file", type=input_file,
                   help="--replay: time this recording instead of recording one")
    b.add_argument("--keep", type=output_file,
                   help="--replay: keep the recorded session in this file")
    b.set_defaults(module="closedloop.commands.bench")
    r = sub.add_parser(
        "run", help="run a closed-loop session (default: simulated patient and stimulator)"
    )
    r.add_argument("--config", required=True, type=input_file,
                   help="TOML config, e.g. configs/biceps_triceps.toml")
    r.add_argument("--source", help="NAME[:TARGET][?k=v...] with NAME one of: "
                   f"{_registered('source')} (e.g. brainflow:synthetic, lsl:name=MyAmp, "
                   "replay:FILE.xdf; default: the config's)")
    r.add_argument("--stimulator", help=f"NAME[:ARG] with NAME one of: "
                   f"{_registered('stimulator')} | none (e.g. rehastim2:/dev/ttyUSB0, "
                   "p24:/dev/ttyACM0; lsl: follow it with closedloop stim-receiver)")
    r.add_argument("--record", type=output_file,
                   help="record the session to this XDF file (LabRecorder)")
    _overwrite(r, "the recording")
    r.add_argument("--duration", type=SECONDS, help="stop after this many seconds of samples")
    r.add_argument("--seed", type=SEED, help="seed of the simulated patient")
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
    st.add_argument("--config", required=True, type=input_file)
    st.add_argument(
        "--stimulator",
        help=f"NAME[:ARG] with NAME one of: {_registered('stimulator')} (default: the config's)"
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
    sr.add_argument("--timeout-ms", type=number("a number of ms from 10 to 10000", lo=10.0,
                                                lo_ok=True, hi=10000.0), default=150.0,
                    help="switch off after this long without a heartbeat (default 150)")
    sr.add_argument("--wait", type=number("a number of seconds > 0, at most 3600", hi=3600.0),
                    default=30.0,
                    help="seconds to wait for the stream to appear (default 30)")
    sr.add_argument("--json", action="store_true", help="one JSON object per line")
    sr.set_defaults(module="closedloop.commands.stim_receiver")

    rp = sub.add_parser("replay", help="run recordings through the exact pipeline (no hardware)")
    rp.add_argument("inputs", nargs="+", metavar="FILE.xdf", type=input_file)
    rp.add_argument("--config", action="append", dest="configs", metavar="CONFIG",
                    type=input_file,
                    help="config to replay with (default: the one stored in the recording, "
                         "also named 'recorded'); repeat to compare configs side by side")
    rp.add_argument("--speed", default="fast", type=replay_speed,
                    help="fast (default) | realtime | a factor of real time from 0.01 (100 "
                         "times slower) upward, such as 2")
    rp.add_argument("--stream", help="EMG stream name or type (recordings by other LSL tools)")
    rp.add_argument(
        "--check",
        action="store_true",
        help="compare derived events and commands with the recorded ones; exit 8 on a difference",
    )
    rp.add_argument(
        "--partial",
        action="store_true",
        help="replay the intact part of a cut-short or corrupt recording (without it such a "
        "recording is refused with exit 9)",
    )
    rp.add_argument("--quiet", action="store_true")
    rp.add_argument("--jobs", type=JOBS,
                    help="worker processes for many files (default: all cores)")
    _results_args(rp)
    rp.set_defaults(module="closedloop.commands.replay")
    ev = sub.add_parser("evaluate", help="score detectors against reference onsets on recordings")
    ev.add_argument("inputs", nargs="*", type=input_file,
                    help=".npz/.xdf/.edf/.bdf/text files, folders of them (an EMG-BIDS "
                         "dataset too), or the shared data folder")
    ev.add_argument(
        "--detector",
        action="append",
        dest="detectors",
        help=f"{_registered('detector')} | NAME:k=v,... | config.toml | recorded | peer:bmc, "
             "peer:neurokit2, peer:hodges_bui, peer:bonato (offline; --splice) (repeatable)",
    )
    ev.add_argument("--labels", type=input_file,
                    help="CSV of reference onsets (sample,channel or time_s,channel[,file])")
    ev.add_argument("--truth-label", help="label of the reference markers in XDF recordings "
                    "(default: truth)")
    ev.add_argument("--fs", type=HERTZ, help="sampling rate of text inputs")
    ev.add_argument("--jobs", type=JOBS, help="worker processes (default: all cores)")
    _results_args(ev)
    ev.add_argument("--json", action="store_true", help="last line: the rows as JSON")
    ev.add_argument("--simulate", type=numbers("SNRs in dB", -20.0, 60.0),
                    help="also simulate recordings at these SNRs, e.g. 20,10,0,-3")
    ev.add_argument("--minutes", type=MINUTES, default=5.0)
    ev.add_argument("--seed", type=SEED, default=0)
    ev.add_argument(
        "--splice", nargs="?", const="20,10,3,0", metavar="SNRS",
        type=numbers("SNRs in dB", -20.0, 60.0),
        help="real bursts spliced into real rest at these SNRs (default 20,10,3,0); input: "
             "the shared data folder (default ../shared/data)")
    ev.add_argument("--seeds", help="--splice: seeds, e.g. 100-109 (default: the report seeds)")
    ev.set_defaults(module="closedloop.commands.evaluate")

    x = sub.add_parser("export", help="recordings as an EMG-BIDS dataset (BDF+, TSV, JSON)")
    x.add_argument("inputs", nargs="+", metavar="FILE.xdf", type=input_file)
    x.add_argument("--bids", required=True, metavar="ROOT", type=output_dir,
                   help="BIDS dataset folder (created if needed; existing files are never "
                        "replaced)")
    x.add_argument("--subject", required=True, type=bids_label,
                   help="BIDS subject label (letters, digits)")
    x.add_argument("--session", type=bids_label, help="BIDS session label (letters, digits)")
    x.add_argument("--task", type=bids_label,
                   help="BIDS task label (default: the config's name, letters and digits only)")
    x.add_argument("--run", type=number("a run index from 1 to 999", integer=True, hi=999),
                   help="run index of the first file (several files of one task get runs 1, "
                        "2, ... by default)")
    x.add_argument("--config", type=input_file,
                   help="config for placement and task (default: the recording's)")
    x.add_argument("--stream", help="name or type of the EMG stream (other tools' recordings)")
    x.add_argument("--emg-units", choices=("V", "mV", "uV"),
                   help="unit of the EMG stream when the recording does not say")
    x.add_argument("--jobs", type=JOBS, help="worker processes (default: all cores)")
    x.add_argument("--cluster", metavar="ADDRESS", type=cluster_address,
                   help="run on this Dask scheduler (tcp://host:8786; files and ROOT on a "
                        "shared path)")
    x.set_defaults(module="closedloop.commands.export")

    rep = sub.add_parser("report", help="one-page HTML summary of a recorded session")
    rep.add_argument("input", metavar="FILE.xdf", type=input_file)
    rep.add_argument("--out", type=output_file, help="HTML file (default: FILE.html)")
    _overwrite(rep, "the report")
    rep.set_defaults(module="closedloop.commands.report")
    v = sub.add_parser(
        "view", help="live view of a running session (subscribes to its LSL streams)"
    )
    v.add_argument("--session", help="session name (default: the only one running; with "
                   "several, a numbered choice in a terminal)")
    v.add_argument("--screenshot", type=output_file,
                   help="save the window to this PNG after a few seconds")
    _overwrite(v, "the screenshot")
    v.add_argument("--duration", type=SECONDS, help="close after this many seconds")
    v.add_argument("--demo", type=number("a number of muscles from 1 to 8", integer=True, hi=8),
                   help="start a simulated session with N muscles and view it")
    v.set_defaults(module="closedloop.commands.view")

    c = sub.add_parser("calibrate", help="rest + maximal contractions -> a patient config")
    c.add_argument("--config", required=True, type=input_file)
    c.add_argument("--source", help=f"source spec ({_registered('source')}; default: the "
                   "config's)")
    c.add_argument("--stimulator",
                   help=f"the patient's stimulator ({_registered('stimulator')} | none): checked "
                        "against the program, written to the patient config")
    c.add_argument("--out", required=True, type=output_file, help="patient config TOML to write")
    _overwrite(c, "the patient config")
    c.add_argument("--rest-s", type=SECONDS, default=5.0)
    c.add_argument("--mvc-reps", type=number("a number of contractions from 1 to 10",
                                             integer=True, hi=10), default=3)
    c.add_argument("--mvc-s", type=SECONDS, default=3.0)
    c.add_argument("--no-gui", action="store_true")
    c.add_argument(
        "--yes", action="store_true", help="confirm the stimulation limits without asking"
    )
    _patient_args(c, "the calibration (and written to the patient config)")
    c.set_defaults(module="closedloop.commands.calibrate")

    h = sub.add_parser("history", help="a patient's progress over sessions and weeks "
                       "(from the patient record)")
    h.add_argument("patient", metavar="PATIENT", help="the patient's pseudonymous id, e.g. P01")
    h.add_argument("--db", metavar="PATH", type=output_file,
                   help=f"the patient record (default: ${ENV_VAR}, else {_db_default()})")
    h.add_argument("--out", metavar="FILE.html", type=output_file,
                   help="also write an HTML page with plots")
    _overwrite(h, "an existing --out file")
    h.set_defaults(module="closedloop.commands.history")
    for parser in sub.choices.values():  # every value without a type of its own: non-empty
        for action in parser._actions:
            if action.type is None and action.nargs != 0:
                action.type = text
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
    p.add_argument("--db", metavar="PATH", type=output_file,
                   help=f"the patient record to add it to (default: ${ENV_VAR}, else "
                        f"{_db_default()})")


class _Terminated(BaseException):
    """SIGTERM, SIGHUP or SIGQUIT outside a session (which handles its own: the
    commands that stimulate): raised in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so the command unwinds (its output claim released: no empty file
    left to refuse the next run) and ends with the signal's message and code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


#: The stop signals besides Ctrl-C: (name, reason in EXIT_CODES, what is said).
_TERMINATING = (("SIGTERM", "sigterm", "terminated (SIGTERM)"),
                ("SIGHUP", "sighup", "hung up (SIGHUP: the terminal was closed)"),
                ("SIGQUIT", "sigquit", "quit (SIGQUIT, Ctrl-\\)"))


@contextlib.contextmanager
def _unwind_on_stop_signals() -> Iterator[None]:
    """While the command runs, a stop signal whose handler is still the default (it
    killed the process on the spot) raises :class:`_Terminated` instead. One that is
    ignored (``nohup``) stays ignored; a command may install its own inside."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name, reason, message in _TERMINATING:
            number = getattr(signal, name, None)
            if number is not None and signal.getsignal(number) is signal.SIG_DFL:
                previous[number] = signal.signal(number, _raiser(reason, message))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _raiser(reason: str, message: str) -> Callable[[int, object], None]:
    owner = os.getpid()

    def handle(signum: int, _frame: object) -> None:
        if os.getpid() != owner:  # a forked worker (replay --jobs): ends as it always did
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise _Terminated(reason, message)

    return handle


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (argparse exits 2 on a usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args.module)
    try:
        with _unwind_on_stop_signals():
            return int(module.main(args) or 0)
    except ClosedLoopError as exc:
        print(f"closedloop {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"closedloop {args.command}: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupt"]
    except _Terminated as exc:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"closedloop {args.command}: {exc.message}", file=sys.stderr)
        return EXIT_CODES[exc.reason]
    except Exception:  # a bug: say so, and keep what a developer needs to fix it
        print(f"closedloop {args.command}: internal error - this is a bug in closedloop, not "
              "a problem with your input. Please report it with the lines below.",
              file=sys.stderr)
        traceback.print_exc()
        return EXIT_CODES["error"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
