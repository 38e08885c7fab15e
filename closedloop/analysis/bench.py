"""``closedloop bench``: how fast the signal core is, measured, not asserted.

Prints, for ``n_channels`` at ``fs`` over ``minutes`` of simulated EMG: throughput as
x real time for small (20-sample) and large chunks, per-chunk time p50/p99 at the small
chunk size, and the ratio of the full pipeline's time to a bare band-pass with the
public :func:`scipy.signal.sosfilt` (same order, state carried, same chunks) over the
same data, measured in the same run. ``--json`` adds one JSON object as the last line.
The pipeline measured is the product pipeline with the built-in default detector
(:data:`closedloop.config.model.DEFAULT_DETECTOR`, what ``closedloop run`` and ``detect``
use without a ``[detector] kind``: ``cusum``), so its per-chunk cost is what the live loop
pays; ``--detector NAME`` measures another registered detector instead.
"""

from __future__ import annotations

import json
import time

import numpy as np
from scipy import signal

from closedloop.config.model import DEFAULT_DETECTOR
from closedloop.config.signal import FilterSettings
from closedloop.core.filters import effective_band
from closedloop.core.pipeline import detector_pipeline
from closedloop.errors import InputError
from closedloop.sim.patient import PatientSettings, SimulatedPatient, random_script


def _chunks(x: np.ndarray, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


def run_bench(
    *, channels: int = 8, fs: float = 2000.0, minutes: float = 10.0, small: int = 20,
    large: int = 10000, seed: int = 0, detector: str = DEFAULT_DETECTOR,
) -> dict[str, float]:
    """Measure and return the figures (see the module docstring)."""
    names = [f"emg{i}" for i in range(channels)]
    dur = minutes * 60.0
    if int(dur * fs) < max(small, 100):
        raise InputError(f"{minutes:g} minutes at {fs:g} Hz is {int(dur * fs)} samples, too few "
                         "to measure; give --minutes 0.01 or more")
    ps = PatientSettings(fs=fs, muscles=tuple(names))
    script = random_script(names, dur, np.random.default_rng(seed))
    x = SimulatedPatient(ps, script, seed=seed).read(int(dur * fs))

    # bare band-pass, public scipy, 20-sample chunks, state carried
    sos = signal.butter(4, effective_band(FilterSettings(), fs), btype="bandpass", fs=fs,
                        output="sos")
    zi = np.zeros((sos.shape[0], 2, channels))
    t0 = time.perf_counter()
    for c in _chunks(x, small):
        _, zi = signal.sosfilt(sos, c, axis=0, zi=zi)
    bare_small = time.perf_counter() - t0

    def build():  # the product pipeline itself, as the live loop runs it
        pipe = detector_pipeline(detector, fs, names)
        return lambda c: pipe.process(c).events

    step = build()
    per_chunk = np.empty(-(-x.shape[0] // small))
    n_events = 0
    clock = time.perf_counter
    t0 = clock()
    for i, c in enumerate(_chunks(x, small)):
        t1 = clock()
        n_events += len(step(c))
        per_chunk[i] = clock() - t1
    full_small = clock() - t0

    step = build()
    t0 = clock()
    n_events_large = sum(len(step(c)) for c in _chunks(x, large))
    full_large = clock() - t0
    if n_events != n_events_large:
        raise RuntimeError(
            f"chunking changed the events ({n_events} vs {n_events_large}): a bug, please report"
        )
    return {
        "detector": detector,
        "channels": channels,
        "fs": fs,
        "minutes": minutes,
        "events": n_events,
        "realtime_x_chunk20": dur / full_small,
        "realtime_x_large": dur / full_large,
        "chunk20_p50_us": float(np.percentile(per_chunk, 50) * 1e6),
        "chunk20_p99_us": float(np.percentile(per_chunk, 99) * 1e6),
        "bare_sosfilt_chunk20_us": bare_small / len(per_chunk) * 1e6,
        "ratio_to_sosfilt": full_small / bare_small,
    }


def main(args) -> int:
    if getattr(args, "latency", False):
        from closedloop.analysis.latency import main as latency_main

        return latency_main(args)
    r = run_bench(channels=args.channels, fs=args.fs, minutes=args.minutes, large=args.large,
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
