"""``closedloop bench [--latency | --replay]``: the signal core's speed, latency, replay speed.

Parse, measure with :func:`closedloop.analysis.bench.run_bench` (with ``--latency``,
:func:`closedloop.analysis.latency.run_latency`; with ``--replay``,
:func:`closedloop.analysis.bench.run_replay_bench`) and print the figures;
``--json`` adds them as one JSON object on the last line. Nothing is asserted: the
figures are measured and printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from closedloop.analysis.bench import (
    bench_config_text,
    record_simulated_session,
    run_bench,
    run_replay_bench,
)
from closedloop.analysis.latency import run_latency
from closedloop.config.model import DEFAULT_DETECTOR
from closedloop.errors import ConfigError, InputError


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop bench``; returns the exit code (0).

    ``args`` attributes: ``channels``, ``fs``, ``minutes``, ``large``, ``detector``,
    ``json``; with ``latency``: ``seconds``, ``outlets``, ``with_view``.
    """
    if getattr(args, "latency", False):
        return _latency(args)
    if getattr(args, "replay", False):
        return _replay(args)
    minutes = 10.0 if args.minutes is None else args.minutes
    r = run_bench(channels=args.channels, fs=args.fs, minutes=minutes, large=args.large,
                  detector=getattr(args, "detector", None) or DEFAULT_DETECTOR)
    print(f"closedloop bench: detector {r['detector']}, {r['channels']} ch at {r['fs']:g} Hz, "
          f"{r['minutes']:g} min of simulated EMG")
    print(f"  throughput, 20-sample chunks : {r['realtime_x_chunk20']:8.1f} x real time")
    print(f"  throughput, {args.large}-sample chunks: {r['realtime_x_large']:8.1f} x real time")
    print(f"  per 20-sample chunk          : p50 {r['chunk20_p50_us']:.1f} us, "
          f"p99 {r['chunk20_p99_us']:.1f} us")
    print(f"  bare scipy sosfilt band-pass : {r['bare_sosfilt_chunk20_us']:.1f} us per "
          "20-sample chunk")
    print(f"  detector / bare sosfilt      : {r['ratio_to_sosfilt']:.2f}")
    print(f"  onset+offset events          : {r['events']} (identical for both chunk sizes)")
    if args.json:
        print(json.dumps(r))
    return 0


def _latency(args: argparse.Namespace) -> int:
    """``closedloop bench --latency [--seconds S] [--detector KIND] [--outlets] [--with-view]
    [--json]``."""
    view = bool(getattr(args, "with_view", False))
    outlets = bool(getattr(args, "outlets", False)) or view
    r: dict[str, Any] = run_latency(args.seconds, outlets=outlets, view=view,
                                    detector=getattr(args, "detector", None))
    r["outlets"], r["view"] = outlets, view
    print(f"closedloop bench --latency: detector {r['detector']}, {r['seconds']:g} s of simulated "
          f"EMG at {r['fs']:g} Hz, {r['snr_db']:g} dB, over LSL on loopback in "
          f"{r['chunk_ms']:g} ms chunks; sim stimulator"
          + ("; LSL outlets on" if r["outlets"] else "")
          + ("; live view attached" if r["view"] else ""))
    print(f"  arrival -> command (processing): p50 {r['arrival_to_command_p50_ms']:.3f} ms, "
          f"p95 {r['arrival_to_command_p95_ms']:.3f} ms, "
          f"p99 {r['arrival_to_command_p99_ms']:.3f} ms ({r['commands']} commands)")
    print(f"  onset -> command (total)       : p50 {r['onset_to_command_p50_ms']:.1f} ms, "
          f"p95 {r['onset_to_command_p95_ms']:.1f} ms, p99 {r['onset_to_command_p99_ms']:.1f} ms "
          f"({r['triggered']} of {r['onsets']} biceps onsets triggered)")
    print(f"    of which detection p50 {r['detection_p50_ms']:.1f} ms, delivery (chunking + LSL) "
          f"p50 {r['delivery_p50_ms']:.2f} ms, processing p50 "
          f"{r['trigger_processing_p50_ms']:.3f} ms")
    print(f"  longest arrival -> command: {r['arrival_to_command_max_ms']:.3f} ms; garbage "
          f"collections during the session: {r['gc_collections']} "
          f"({r['gc_full_collections']} full), the longest {r['gc_longest_ms']:.2f} ms")
    print(f"  samples lost: {r['samples_lost']}")
    if args.json:
        print(json.dumps(r))
    return 0


def _replay(args: argparse.Namespace) -> int:
    """``closedloop bench --replay [--file F | --minutes M --channels N --fs HZ [--keep F]]
    [--json]``: record (or take) a session, time its replay. A replay whose check does
    not pass is not timed (its time would mean nothing): exit 7 with what ``replay`` said
    (9 for a damaged recording, as ``replay``); exit 1 if only the timed parts' own check
    failed."""
    minutes = 60.0 if args.minutes is None else args.minutes
    # the replay machinery's speed: the cheapest detector unless another is named
    detector = getattr(args, "detector", None) or "threshold"
    with tempfile.TemporaryDirectory(prefix="closedloop-bench-") as tmp:
        path = Path(args.file) if getattr(args, "file", None) else None
        made = None
        if path is None:
            path = Path(args.keep) if getattr(args, "keep", None) else Path(tmp) / "session.xdf"
            if path.exists():
                raise ConfigError(f"{str(path)!r} already exists; give another name (the "
                                 "benchmark never replaces a file)")
            print(f"closedloop bench: recording a {minutes:g}-minute simulated session, "
                  f"{args.channels} channels at {args.fs:g} Hz, detector {detector}, into "
                  f"{path} ...",
                  file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            record_simulated_session(
                path, bench_config_text(args.channels, args.fs, detector=detector), minutes)
            made = time.perf_counter() - t0
        else:
            _check_recording_file(path)
        r = run_replay_bench(path)
    if made is not None:
        r["recorded_in_s"] = made
    if getattr(args, "file", None) is None:
        r["file"] = args.keep if getattr(args, "keep", None) else "(temporary, removed)"
    print(f"closedloop bench --replay: {r['file']} ({r['file_mb']:.0f} MB, "
          f"{r['recording_s'] / 60:.1f} min of EMG)")
    print(f"  replay --check, end to end  : {r['replay_check_wall_s']:8.2f} s  "
          f"{r['replay_x_realtime']:8.0f} x real time (wall clock, start-up and loading "
          "included)")
    print(f"  start-up (imports)          : {r['imports_s']:8.2f} s")
    print(f"  loading the recording       : {r['load_s']:8.2f} s  {r['load_mb_per_s']:8.0f} MB/s")
    print(f"  replay and check            : {r['replay_only_s']:8.2f} s  "
          f"{r['replay_only_x_realtime']:8.0f} x real time")
    print(f"  check                       : {'passed' if r['check_passed'] else 'FAILED'}")
    if args.json:
        print(json.dumps(r))
    return 0 if r["check_passed"] else 1


def _check_recording_file(path: Path) -> None:
    """Refuse a ``--file`` that is not one recording file: a folder (naming a few of the
    recordings it holds) or nothing at all.

    Raises
    ------
    InputError
        ``path`` is a folder, or does not exist.
    """
    if path.is_dir():
        held = sorted(p.name for p in path.glob("*.xdf") if p.is_file())
        inside = (f" (it holds {', '.join(held[:3])}{', ...' if len(held) > 3 else ''})"
                  if held else " (it holds no .xdf file)")
        example = path / held[0] if held else Path(path, "session.xdf")
        raise InputError(f"--file {str(path)!r} is a folder{inside}; give one recording "
                         f"file (.xdf), e.g. --file {example}")
    if not path.is_file():
        raise InputError(f"--file {str(path)!r}: no such recording; give the path of an "
                         "existing recording file (.xdf)")
