"""Time :meth:`closedloop.core.checks.InputMonitor.check` per chunk.

Feeds a continuous, clean stream (noise, a running counter, exact timestamps) chunk by
chunk and prints the per-chunk time (min, p50, p99, mean) of the exact path (what the
monitor did before the fast path existed; ``fast_path=False``) and of the default monitor,
for live-sized chunks (20 samples x 8 channels at 2 kHz) and for large ones. The
"quantized" cases round the samples to 0.5 uV so that consecutive equal values are
common, as with a 16-bit amplifier at low signal level. Every case also checks that both
paths gave identical results, so a fast number is never reported for a wrong answer.

Usage (from the repository root; PYTHONPATH makes sure this checkout is measured)::

    PYTHONPATH=. python tools/bench_checks.py [--seconds 30] [--channels 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from closedloop.core import checks
from closedloop.core.checks import InputMonitor
from closedloop.core.stream import Chunk, SourceInfo

FS = 2000.0


def make_stream(
    n: int, n_channels: int, *, counter: bool, quantum: float, rng: np.random.Generator
) -> Chunk:
    """A clean stream of ``n`` samples: noise, timestamps at exactly 1/fs, a counter."""
    x = rng.normal(0.0, 20.0, size=(n, n_channels))
    if quantum:
        x = np.round(x / quantum) * quantum
    ts = 1000.0 + np.arange(n) / FS
    return Chunk(x, ts, np.arange(n, dtype=np.int64) if counter else None)


def split(stream: Chunk, size: int) -> list[Chunk]:
    """Cut a stream into chunks of ``size`` samples (the last partial one dropped)."""
    out = []
    for a in range(0, stream.n - size + 1, size):
        c = None if stream.counter is None else stream.counter[a : a + size].copy()
        out.append(
            Chunk(stream.samples[a : a + size].copy(), stream.timestamps[a : a + size].copy(), c)
        )
    return out


def time_paths(info: SourceInfo, chunks: list[Chunk]) -> tuple[dict, dict]:
    """Per-chunk times in microseconds and results of the exact and the fast monitor.

    Both monitors are fed in lockstep, chunk by chunk, so that a change in machine
    load hits both alike. A warm-up pass on other monitors comes first.
    """
    for _ in range(2):
        monitors = {"exact": InputMonitor(info, fast_path=False), "fast": InputMonitor(info)}
        clock = time.perf_counter_ns
        times = {path: np.empty(len(chunks)) for path in monitors}
        results: dict[str, list] = {path: [] for path in monitors}
        for i, c in enumerate(chunks):
            for path, m in monitors.items():
                t0 = clock()
                r = m.check(c)
                times[path][i] = clock() - t0
                results[path].append(r)
    return {path: t / 1e3 for path, t in times.items()}, results


def same(a: list, b: list) -> bool:
    """Whether two lists of CheckedChunk are identical (issues, bad, samples, start)."""
    return len(a) == len(b) and all(
        x.issues == y.issues
        and x.start == y.start
        and np.array_equal(x.bad, y.bad)
        and np.array_equal(x.chunk.samples, y.chunk.samples)
        and np.array_equal(x.chunk.timestamps, y.chunk.timestamps)
        for x, y in zip(a, b, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="stream length per case")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    nch = args.channels
    info = SourceInfo("bench", FS, tuple(f"ch{i}" for i in range(nch)), "uV", "sim")
    n_total = int(args.seconds * FS)
    cases = [  # label, chunk size, counter, quantum
        (f"20 x {nch}, counter", 20, True, 0.0),
        (f"20 x {nch}, no counter", 20, False, 0.0),
        (f"20 x {nch}, counter, quantized", 20, True, 0.5),
        (f"2000 x {nch}, counter", 2000, True, 0.0),
        (f"2000 x {nch}, counter, quantized", 2000, True, 0.5),
    ]
    print(f"InputMonitor.check per chunk, {args.seconds:g} s of clean {FS:g} Hz stream per case")
    print(f"(closedloop from {checks.__file__})")
    head = f"{'case':32s} {'path':6s} {'chunks':>7s}"
    print(f"{head} {'min us':>9s} {'p50 us':>9s} {'p99 us':>9s} {'mean us':>9s}")
    ok = True
    for label, size, counter, quantum in cases:
        rng = np.random.default_rng(args.seed)
        chunks = split(make_stream(n_total, nch, counter=counter, quantum=quantum, rng=rng), size)
        times, results = time_paths(info, chunks)
        for path, t in times.items():
            p50, p99 = np.percentile(t, [50, 99])
            row = f"{label:32s} {path:6s} {len(t):7d}"
            print(f"{row} {t.min():9.1f} {p50:9.1f} {p99:9.1f} {t.mean():9.1f}")
        if not same(results["exact"], results["fast"]):
            print(f"  MISMATCH between the exact and the fast path for {label!r}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
