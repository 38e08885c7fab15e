"""``closedloop bench [--latency]``: the speed of the signal core, or end-to-end latency.

Parse, measure with :func:`closedloop.analysis.bench.run_bench` (or, with
``--latency``, :func:`closedloop.analysis.latency.run_latency`) and print the figures;
``--json`` adds them as one JSON object on the last line. Nothing is asserted: the
figures are measured and printed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from closedloop.analysis.bench import run_bench
from closedloop.analysis.latency import run_latency


def main(args: argparse.Namespace) -> int:
    """Run ``closedloop bench``; returns the exit code (0).

    ``args`` attributes: ``channels``, ``fs``, ``minutes``, ``large``, ``detector``,
    ``json``; with ``latency``: ``seconds``, ``outlets``, ``with_view``.
    """
    if getattr(args, "latency", False):
        return _latency(args)
    r = run_bench(channels=args.channels, fs=args.fs, minutes=args.minutes, large=args.large,
                  detector=getattr(args, "detector", None) or "threshold")
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
    """``closedloop bench --latency [--seconds S] [--outlets] [--with-view] [--json]``."""
    view = bool(getattr(args, "with_view", False))
    outlets = bool(getattr(args, "outlets", False)) or view
    r: dict[str, Any] = run_latency(args.seconds, outlets=outlets, view=view)
    r["outlets"], r["view"] = outlets, view
    print(f"closedloop bench --latency: {r['seconds']:g} s of simulated EMG at {r['fs']:g} Hz, "
          f"{r['snr_db']:g} dB, over LSL on loopback in {r['chunk_ms']:g} ms chunks; "
          "sim stimulator" + ("; LSL outlets on" if r["outlets"] else "")
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
    print(f"  samples lost: {r['samples_lost']}")
    if args.json:
        print(json.dumps(r))
    return 0
