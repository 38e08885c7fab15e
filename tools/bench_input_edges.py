"""What the impulse gate costs and what it catches, measured (issue 12, item 7b).

Prints four tables:

1. **Latency cost on the simulated patient**: random attempts (ramps 5-60 ms) on two
   muscles at 10 dB SNR (and 20, 30, 40 dB for context), run through the live loop's
   input stage and core with the gate on (the default) and off (``impulse_ratio = 0``);
   per SNR: attempts, detected with/without, the onset delay the gate adds (mean,
   max), and how often it held a channel.
2. **Real EMG bursts** (``../shared/data``): every file through the same loop at its own
   rate, gate on and off: onsets, how many differ, the largest difference, notices.
3. **Transients at rest** on the simulated patient (10 dB): 10 ms knocks of 10-1000
   times the voluntary EMG's RMS, four shapes: how many start an onset, gate on/off.
4. **Per-chunk cost** of :meth:`InputStage.feed` (the input checks, the gate among
   them) on a clean 8-channel 2 kHz stream in 20-sample chunks, gate on and off.

Usage (from the repository root; PYTHONPATH makes sure this checkout is measured)::

    PYTHONPATH=. python tools/bench_input_edges.py [--minutes 5]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from closedloop.config import default_config, load_config
from closedloop.core.filters import effective_band
from closedloop.core.impulses import ImpulseGate
from closedloop.core.mains import HumCheck
from closedloop.core.stream import Chunk, SourceInfo
from closedloop.io.files import load_emg
from closedloop.runtime.inputs import InputStage
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient, random_script
from closedloop.sources.base import Source

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = [
    ("bmc_emg.csv", {"fs": 1000.0, "columns": [1]}),
    ("biosppy_emg.txt", {"fs": 1000.0}),
    ("biosppy_emg_1.txt", {"fs": 1000.0}),
    ("uci_lowerlimb_5Npie.txt", {"fs": 1000.0, "columns": [0, 1, 2, 3]}),
    ("uci_lowerlimb_5Nsen.txt", {"fs": 1000.0, "columns": [0, 1, 2, 3]}),
]


class _Array(Source):
    """Samples from an array in fixed chunks (timestamps i / fs, counter i)."""

    def __init__(self, x: np.ndarray, fs: float, channels, size: int) -> None:
        super().__init__()
        self.x, self.size, self._pos = x, size, 0
        self._info = SourceInfo("bench", fs, tuple(channels))

    @property
    def position(self) -> int:
        return self._pos

    @property
    def exhausted(self) -> bool:
        return self._pos >= self.x.shape[0]

    def read(self, timeout: float) -> Chunk | None:
        if self.exhausted:
            return None
        a, self._pos = self._pos, min(self._pos + self.size, self.x.shape[0])
        idx = np.arange(a, self._pos)
        return Chunk(self.x[a : self._pos], idx / self._info.fs, idx, 0.0)


def _run(cfg, x: np.ndarray, fs: float, gate: bool):
    cfg = replace(cfg, protocol=None,
                  artifacts=replace(cfg.artifacts,
                                    impulse_ratio=cfg.artifacts.impulse_ratio if gate else 0.0))
    src = _Array(x, fs, cfg.muscle_names, max(1, round(0.01 * fs)))
    src.open()
    return run_loop(cfg, src, None, options=LoopOptions(watchdog_s=30.0, history=None))


def _onsets(out) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    for e in out.events:
        if e.kind == "onset":
            got.setdefault(e.channel, []).append(e.sample)
    return got


def _gate_notices(out) -> list[str]:
    words = ("impulsive", "absurd", "far outside", "jumped", "taken as activity")
    return [m for m in out.issues if any(w in m for w in words)]


def latency_on_the_simulated_patient(minutes: float) -> None:
    cfg = load_config(ROOT / "configs" / "biceps_triceps.toml")
    fs, names = 2000.0, cfg.muscle_names
    print("1. onset delay the gate adds, simulated patient "
          f"({minutes:g} min per SNR, attempts with 5-60 ms ramps)")
    print(f"{'SNR':>6} {'attempts':>9} {'found on':>9} {'found off':>10} "
          f"{'added mean ms':>14} {'added max ms':>13} {'held':>5} {'extra on':>9}")
    for snr in (10.0, 20.0, 30.0, 40.0):
        ps = PatientSettings(fs=fs, muscles=names, snr_db=snr)
        script = random_script(names, minutes * 60, np.random.default_rng(int(snr)),
                               ramp_s=(0.005, 0.06), gap_s=(2.0, 20.0))
        x = SimulatedPatient(ps, script, seed=int(snr)).read(int(minutes * 60 * fs))
        on, off = _run(cfg, x, fs, True), _run(cfg, x, fs, False)
        found = {}
        for label, out in (("on", on), ("off", off)):
            ons = _onsets(out)
            found[label] = [min((s for s in ons.get(a.muscle, [])
                                 if 0 <= s - a.onset_s * fs < 0.3 * fs), default=None)
                            for a in script]
        both = [(a, b) for a, b in zip(found["on"], found["off"], strict=True)
                if a is not None and b is not None]
        added = np.array([(a - b) / fs * 1e3 for a, b in both]) if both else np.zeros(1)
        n_on = sum(len(v) for v in _onsets(on).values())
        n_off = sum(len(v) for v in _onsets(off).values())
        print(f"{snr:>5.0f}dB {len(script):>9} {sum(f is not None for f in found['on']):>9} "
              f"{sum(f is not None for f in found['off']):>10} {added.mean():>14.2f} "
              f"{added.max():>13.1f} {len(_gate_notices(on)):>5} {n_on - n_off:>9}")


def real_bursts() -> None:
    print("\n2. real EMG bursts (../shared/data), gate on vs off")
    if not DATA.is_dir():
        print(f"   {DATA} is missing")
        return
    print(f"{'file':<26} {'ch':>3} {'onsets on':>10} {'onsets off':>11} {'differ':>7} "
          f"{'max diff ms':>12} {'gate notices':>13}")
    for name, kw in FILES:
        d = load_emg(DATA / name, **kw)
        cfg = default_config(d.channels)
        on, off = _run(cfg, d.samples, d.fs, True), _run(cfg, d.samples, d.fs, False)
        a, b = _onsets(on), _onsets(off)
        n_a, n_b = sum(map(len, a.values())), sum(map(len, b.values()))
        diffs = []
        for ch in set(a) | set(b):
            for s in a.get(ch, []):
                near = [abs(s - t) for t in b.get(ch, [])]
                diffs.append(min(near) if near else np.inf)
        differ = sum(x > 0 for x in diffs) + abs(n_a - n_b)
        worst = max((x for x in diffs if np.isfinite(x)), default=0) / d.fs * 1e3
        print(f"{name:<26} {d.samples.shape[1]:>3} {n_a:>10} {n_b:>11} {differ:>7} "
              f"{worst:>12.1f} {len(_gate_notices(on)):>13}")


def transients_at_rest() -> None:
    cfg = load_config(ROOT / "configs" / "biceps_triceps.toml")
    fs, names = 2000.0, cfg.muscle_names
    voluntary = 5e-6 * 10 ** 0.5
    shapes = {"step": np.ones(20), "half sine": np.sin(np.pi * np.arange(20) / 20),
              "noise": np.random.default_rng(2).standard_normal(20),
              "one sample": np.r_[1.0, np.zeros(19)]}
    sizes = (10, 30, 60, 100, 300, 1000)
    print("\n3. 10 ms transients at rest (simulated patient, 10 dB; 8 per shape, after an "
          "attempt): onsets they start, gate on / off")
    print(f"{'x voluntary RMS':>16} " + " ".join(f"{s:>12}" for s in shapes))
    base = SimulatedPatient(PatientSettings(fs=fs, muscles=names, snr_db=10.0),
                            [Attempt("biceps", 1.0, 0.8, 1.0, 0.03)], seed=7).read(int(20 * fs))
    starts = [int((3.0 + 2.0 * i) * fs) for i in range(8)]
    for size in sizes:
        row = []
        for shape in shapes.values():
            x = base.copy()
            for k in starts:
                x[k : k + 20, 0] += size * voluntary * shape
            counts = []
            for gate in (True, False):
                ons = _onsets(_run(cfg, x, fs, gate)).get("biceps", [])
                counts.append(sum(any(0 <= s - k < 0.5 * fs for s in ons) for k in starts))
            row.append(f"{counts[0]:>5} / {counts[1]:<4}")
        print(f"{size:>16} " + " ".join(f"{r:>12}" for r in row))


def per_chunk_cost(seconds: float = 20.0, rounds: int = 5) -> None:
    print(f"\n4. per 20-sample chunk, 8 channels at 2 kHz, {seconds:g} s of clean EMG; best "
          f"p50 / p99 of {rounds} interleaved rounds (a shared machine is noisy)")
    fs, nch = 2000.0, 8
    names = [f"emg{i}" for i in range(nch)]
    x = SimulatedPatient(PatientSettings(fs=fs, muscles=tuple(names)), [], seed=1).read(
        int(seconds * fs))
    cfg = default_config(names)
    chunks = [Chunk(x[a : a + 20], np.arange(a, a + 20) / fs, np.arange(a, a + 20), 0.0)
              for a in range(0, x.shape[0], 20)]
    best: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for gate in (False, True):
            info = SourceInfo("bench", fs, tuple(names))
            hum = HumCheck(cfg.artifacts, fs, nch, cfg.filters.notch_hz,
                           effective_band(cfg.filters, fs))
            stage = InputStage(info, range(nch), names, hum,
                               impulses=ImpulseGate(fs, nch) if gate else None)
            t = np.empty(len(chunks))
            for i, chunk in enumerate(chunks):
                t0 = time.perf_counter()
                stage.feed(chunk)
                t[i] = time.perf_counter() - t0
            best.setdefault(f"InputStage.feed, gate {'on' if gate else 'off'}", []).append(
                (np.percentile(t[50:], 50) * 1e6, np.percentile(t[50:], 99) * 1e6))
        g = ImpulseGate(fs, nch)
        t = np.empty(len(chunks))
        for i, chunk in enumerate(chunks):
            t0 = time.perf_counter()
            g.process(chunk.samples, i * 20)
            t[i] = time.perf_counter() - t0
        best.setdefault("ImpulseGate.process alone", []).append(
            (np.percentile(t[50:], 50) * 1e6, np.percentile(t[50:], 99) * 1e6))
    for name, runs in best.items():
        print(f"   {name:<28}: p50 {min(r[0] for r in runs):6.1f} us, "
              f"p99 {min(r[1] for r in runs):6.1f} us")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0,
                   help="simulated minutes per SNR in table 1")
    args = p.parse_args()
    latency_on_the_simulated_patient(args.minutes)
    real_bursts()
    transients_at_rest()
    per_chunk_cost()


if __name__ == "__main__":
    main()
