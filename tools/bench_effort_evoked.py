"""Measure the voluntary-effort estimate and the evoked-response (M-wave) measurement.

Two parts (both by default):

``--cost``: per-chunk time of :class:`~closedloop.core.effort.EffortEstimator` and
:class:`~closedloop.core.evoked.EvokedResponse` next to the pipeline they run beside,
at live-sized chunks (20 samples x 8 channels at 2 kHz), over simulated EMG in which two
muscles are stimulated in alternating 3 s trains at 35 Hz (the samples are made first,
so the patient's cost is not counted). The pipeline is timed with the comb on the
stimulated channel only (today's default) and on every channel (``comb_all``, which the
effort of a non-stimulated muscle needs). Prints min, p50, p99 and mean per chunk.

``--figures``: on the simulated patient at 10 dB with stimulation artifacts and M-waves,
the effort's correlation with the true voluntary drive and its bias against the same
patient unstimulated, per current level and pulse rate, for the stimulated muscle and
its antagonist; the passive patient's effort during stimulation in % MVC; the M-wave
amplitude error over 10 minutes of intermittent stimulation with fatigue; and when a
detached electrode is first reported as no response.

Usage (from the repository root; PYTHONPATH makes sure this checkout is measured)::

    PYTHONPATH=. python tools/bench_effort_evoked.py [--cost] [--figures] [--seconds 60]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import signal

from closedloop.config.signal import ArtifactSettings
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.effort import EffortEstimator, EffortSettings, percent_mvc
from closedloop.core.evoked import EvokedResponse, EvokedSettings
from closedloop.core.pipeline import Pipeline
from closedloop.sim.patient import (
    Attempt,
    FatigueModel,
    MWaveModel,
    PatientSettings,
    Pulse,
    SimulatedPatient,
    random_script,
)
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.sim import SimStimulator

FS = 2000.0
CHUNK = 20


def _schedule(seconds: float) -> list[tuple[int, int, float]]:
    """(sample, channel, current): channels 1 and 2 in alternating 3 s trains."""
    out = []
    for k in range(int(seconds // 6)):
        for ch, at in ((1, 6 * k + 0.5), (2, 6 * k + 3.5)):
            out += [(int(at * FS), ch, 25.0), (int((at + 2.5) * FS), ch, 0.0)]
    return sorted(out)


def _emg(names: tuple[str, ...], seconds: float, schedule) -> np.ndarray:
    stim = SimStimulator(n_channels=8)
    stim.open()

    def pulses(t0: float, t1: float) -> list[Pulse]:
        return [Pulse(float(r["time"]), names[int(r["channel"]) - 1], float(r["current_ma"]),
                      250.0) for r in stim.pulses(t0, t1)]

    ps = PatientSettings(fs=FS, muscles=names, antagonists={names[0]: names[1]},
                         mwave=MWaveModel(crosstalk=0.1))
    script = random_script(names[:2], seconds, np.random.default_rng(1), first_s=0.3,
                           gap_s=(1.0, 2.0))
    pat = SimulatedPatient(ps, script, seed=2, pulses=pulses)
    pending, out = list(schedule), []
    for i in range(0, int(seconds * FS), CHUNK):
        while pending and pending[0][0] < i + CHUNK:
            e, ch, cur = pending.pop(0)
            stim.apply([StimCommand(names[ch - 1], ch, cur, 250.0, 35.0, e - 1, e / FS, "x")])
        out.append(pat.read(CHUNK))
    return np.vstack(out)


def _stats(t: np.ndarray) -> str:
    us = t * 1e6
    return (f"min {us.min():6.1f}  p50 {np.percentile(us, 50):6.1f}  "
            f"p99 {np.percentile(us, 99):6.1f}  mean {us.mean():6.1f} us")


def cost(seconds: float) -> None:
    """Per-chunk time of the pipeline, the effort estimate and the evoked response."""
    names = tuple(f"emg{i}" for i in range(8))
    schedule = _schedule(seconds)
    x = _emg(names, seconds, schedule)
    n = x.shape[0] // CHUNK
    clock = time.perf_counter
    for comb_all in (False, True):
        remover = ArtifactRemover(ArtifactSettings(), FS, names, 50.0, comb_all=comb_all)
        pipe = Pipeline(FS, names, artifacts=remover)
        effort = EffortEstimator(EffortSettings(), FS, len(names), remover)
        evoked = EvokedResponse(EvokedSettings(), FS, names, remover, 50.0)
        t_pipe, t_eff, t_ev = np.empty(n), np.empty(n), np.empty(n)
        pending, records = list(schedule), 0
        for k in range(n):
            i = k * CHUNK
            while pending and pending[0][0] < i + CHUNK:
                e, ch, cur = pending.pop(0)
                remover.command(names[ch - 1], ch, cur > 0, 35.0, e)
                evoked.command(ch, cur, 250.0, e)
            c = x[i : i + CHUNK]
            t0 = clock()
            records += len(evoked.process(c.T, i))
            t1 = clock()
            block = pipe.process(c)
            t2 = clock()
            effort.process(block.filtered, block.start)
            t3 = clock()
            t_ev[k], t_pipe[k], t_eff[k] = t1 - t0, t2 - t1, t3 - t2
        comb = "every channel" if comb_all else "the stimulated one"
        print(f"{'pipeline, comb on ' + comb + ':':40s}{_stats(t_pipe)}")
        if comb_all:
            print(f"{'effort estimate:':40s}{_stats(t_eff)}")
            print(f"{'evoked response:':40s}{_stats(t_ev)}  ({records} records)")
    print(f"({n} chunks of {CHUNK} samples x {len(names)} channels at {FS:g} Hz, "
          f"{seconds:g} s with two muscles stimulated in turn at 35 Hz)")


def _session(commands, seconds, *, script=(), chunk=200, evoked=False,
             mwave: MWaveModel | None = None, **patient):
    """Raw EMG through the core with a stimulation schedule (sample, muscle, current, f)."""
    muscles, chans = ("biceps", "triceps"), {"biceps": 1, "triceps": 2}
    stim = SimStimulator()
    stim.open()

    def pulses(t0: float, t1: float) -> list[Pulse]:
        return [Pulse(float(r["time"]), muscles[int(r["channel"]) - 1], float(r["current_ma"]),
                      250.0) for r in stim.pulses(t0, t1)]

    ps = PatientSettings(fs=FS, muscles=muscles,
                         antagonists={"biceps": "triceps", "triceps": "biceps"},
                         mwave=mwave or MWaveModel(crosstalk=0.1), **patient)
    pat = SimulatedPatient(ps, script, seed=3, pulses=pulses)
    remover = ArtifactRemover(ArtifactSettings(), FS, muscles, 50.0, comb_all=True)
    pipe = Pipeline(FS, muscles, artifacts=remover)
    est = EffortEstimator(EffortSettings(), FS, 2, remover)
    evr = EvokedResponse(EvokedSettings(), FS, muscles, remover, 50.0) if evoked else None
    pending = sorted(commands)
    eff, drive, truth, records = [], [], [], []
    for i in range(0, int(seconds * FS), chunk):
        while pending and pending[0][0] < i + chunk:
            e, m, cur, f = pending.pop(0)
            stim.apply([StimCommand(m, chans[m], cur, 250.0, f, e - 1, e / FS, "x")])
            remover.command(m, chans[m], cur > 0, f, e)
            if evr is not None:
                evr.command(chans[m], cur, 250.0, e)
        x, tr = pat.read_truth(chunk)
        if evr is not None:
            records += evr.process(x.T, i)
        block = pipe.process(x)
        eff.append(est.process(block.filtered, block.start))
        drive.append(tr.drive)
        truth += tr.pulses
    return np.vstack(eff), np.vstack(drive), truth, records


def figures() -> None:
    """The effort's tracking and passive reading; the M-wave's fatigue and detachment."""
    seconds = 30.0
    rng = np.random.default_rng(5)
    script, t = [], 1.0
    while t < seconds - 2:
        script.append(Attempt("biceps", t, 1.6, float(rng.uniform(0.2, 1.0)), 0.3))
        script.append(Attempt("triceps", t + 0.4, 1.0, float(rng.uniform(0.2, 1.0)), 0.3))
        t += 2.3
    biceps = [a for a in script if a.muscle == "biceps"]
    lam = math.exp(-1.0 / (EffortSettings().tau_s * FS))
    s = slice(int(3 * FS), int(29 * FS))
    ref, _, _, _ = _session([], seconds, script=script)
    rest, _, _, _ = _session([], seconds)
    floor, mvc = rest[s].mean(axis=0), ref[s].max(axis=0)
    cases = [(MWaveModel(crosstalk=0.1), (20.0, 25.0, 30.0, 35.0, 40.0, 50.0),
              "M-wave 3.5 + 11 ms (inside the 15 ms blanking)"),
             (MWaveModel(latency_ms=4.0, duration_ms=12.0, crosstalk=0.1), (25.0, 35.0),
              "M-wave 4 + 12 ms (0.5 ms past the blanking)"),
             (MWaveModel(latency_ms=5.0, duration_ms=15.0, crosstalk=0.1), (25.0, 35.0),
              "M-wave 5 + 15 ms (4.5 ms past the blanking)")]
    for mwave, rates, what in cases:
        print(f"effort during stimulation of the biceps (antagonist: triceps), 10 dB, {what}, "
              "comb on every channel:")
        print("  rate  current | r biceps  r triceps | bias biceps  bias triceps | "
              "passive p99 % MVC biceps  triceps")
        for f in rates:
            for cur in (10.0, 20.0, 30.0, 40.0):
                on = [(int(2 * FS), "biceps", cur, f), (int(29 * FS), "biceps", 0.0, f)]
                e, d, _, _ = _session(on, seconds, script=script, mwave=mwave)
                p, _, _, _ = _session(on, seconds, script=biceps, passive=True, mwave=mwave)
                truth = np.sqrt(signal.lfilter([1 - lam], [1, -lam], d**2, axis=0))
                r = [np.corrcoef(e[s, c], truth[s, c])[0, 1] for c in (0, 1)]
                bias = 100 * (e[s].mean(axis=0) / ref[s].mean(axis=0) - 1)
                pct = percent_mvc(np.percentile(p[int(2.5 * FS) : int(29 * FS)], 99, axis=0),
                                  floor, mvc)
                print(f"  {f:4.0f}  {cur:4.0f} mA | {r[0]:8.3f}  {r[1]:9.3f} | "
                      f"{bias[0]:+10.1f} % {bias[1]:+11.1f} % | {pct[0]:22.1f}  {pct[1]:7.1f}")
    minutes = 10.0
    sched = []
    for k in range(int(minutes * 6)):
        sched += [(int((10 * k + 1) * FS), "biceps", 30.0, 35.0),
                  (int((10 * k + 6) * FS), "biceps", 0.0, 35.0)]
    fscript = random_script(("biceps",), minutes * 60, np.random.default_rng(2), first_s=1.5,
                            gap_s=(6.0, 9.0))
    _, _, truth, records = _session(sched, minutes * 60, script=fscript, chunk=500,
                                    evoked=True, fatigue=FatigueModel())
    err = []
    for rec in records:
        pp = [p.mwave_pp for p in truth
              if rec.first_sample <= math.floor(p.time * FS + 1e-6) <= rec.last_sample]
        err.append(rec.peak_to_peak / np.mean(pp) - 1)
    amp = [rec.peak_to_peak for rec in records]
    print(f"M-wave over {minutes:g} min (5 s on / 5 s off, 35 Hz, 30 mA, fatigue on): "
          f"{len(records)} records, {1e3 * amp[0]:.2f} -> {1e3 * min(amp):.2f} mV, error "
          f"{100 * min(err):+.2f} .. {100 * max(err):+.2f} %")
    for how in ("artifact", "nothing"):
        for f in (25.0, 35.0, 50.0):
            on = [(int(2 * FS), "biceps", 30.0, f), (int(6 * FS), "biceps", 0.0, f)]
            _, _, _, recs = _session(on, 6.5, script=[Attempt("biceps", 1.0, 3.0)],
                                     evoked=True, detached={"biceps": how})
            first = recs[0]
            snr = max(r.peak_to_peak / r.noise for r in recs)
            print(f"detached ({how}) at {f:g} Hz: first record {(first.sample / FS - 2):.2f} s "
                  f"after the train starts, present {first.present}; largest SNR {snr:.1f} "
                  f"(threshold {EvokedSettings().present_snr:g})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--figures", action="store_true")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    both = not (args.cost or args.figures)
    if args.cost or both:
        cost(args.seconds)
    if args.figures or both:
        figures()


if __name__ == "__main__":
    main()
