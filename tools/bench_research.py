"""Research tools, measured (not asserted): EMG-BIDS export speed, batch speed-up on local
cores and on a Dask cluster of local worker processes, bootstrap cost.

Run: ``PYTHONPATH=. python tools/bench_research.py [--minutes 60] [--channels 8]
[--files 4] [--json]``. Prints one line per figure; ``--json`` adds them as one JSON
object on the last line.

* **export**: a generated session (``--minutes`` x ``--channels`` at 2 kHz, simulated
  EMG with events, stimulation commands and markers) written as EMG-BIDS with
  :func:`closedloop.io.bids.export_session` (reading the XDF excluded: that is the
  reader's benchmark), as x real time and MB/s of BDF; and the shipped recording with
  :func:`closedloop.io.bids.export_recording` (reading included).
* **batch**: ``--files`` copies of the shipped recording replayed with ``--check``
  semantics through :func:`closedloop.runtime.batch.run_batch`: one process, local
  worker processes (every core), and a ``distributed.LocalCluster`` with one worker
  process per core; the speed-up is the one-process time over each.
* **bootstrap**: one row's intervals, 2000 resamples of 100 trials.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def synthetic_session(minutes: float, channels: int, fs: float = 2000.0):
    """A closedloop-like session in memory: EMG in volts, onsets, commands, markers."""
    from closedloop.core.events import Event
    from closedloop.io.outlets import Marker
    from closedloop.io.xdf import Session
    from closedloop.sim.patient import PatientSettings, SimulatedPatient, random_script
    from closedloop.stim.commands import StimCommand

    names = tuple(f"m{i}" for i in range(channels))
    dur = minutes * 60.0
    script = random_script(names, dur, np.random.default_rng(1))
    pat = SimulatedPatient(PatientSettings(fs=fs, muscles=names), script, seed=1)
    x = pat.read(int(dur * fs))
    n = x.shape[0]
    ts = 1000.0 + np.arange(n) / fs
    events, commands, markers = [], [], []
    for k, m in pat.true_onsets():
        d = k + 40
        if d >= n:
            break
        events.append(Event(d, float(ts[d]), m, "onset"))
        markers.append(Marker("truth", float(ts[k]), k, {"muscle": m}))
        for j, cur in enumerate((5.0, 10.0, 0.0)):
            s = d + 200 * j
            commands.append(StimCommand(m, 1 + names.index(m), cur, 250.0, 35.0, s,
                                        float(ts[min(s, n - 1)]),
                                        "plateau" if cur else "off",
                                        effective_sample=s + 20))
    return Session(path=Path("synthetic.xdf"), name="S-EMG", fs=fs, channels=names, units="V",
                   samples=x, timestamps=ts, counter=np.arange(n), events=events,
                   commands=commands, markers=markers)


def bench_export(minutes: float, channels: int, tmp: Path) -> dict[str, float]:
    from closedloop.io.bids import BidsTarget, ExportTask, export_recording, export_session

    session = synthetic_session(minutes, channels)
    task = ExportTask("synthetic.xdf", BidsTarget(str(tmp / "bids"), "01", "bench"))
    t0 = time.perf_counter()
    out = export_session(session, task)
    wall = time.perf_counter() - t0
    bdf = Path(task.target.path("emg.bdf")).stat().st_size / 1e6
    shipped = export_recording(ExportTask(str(SHIPPED), BidsTarget(str(tmp / "bids"), "02",
                                                                   "bench")))
    return {
        "export_minutes": minutes, "export_channels": channels, "export_events": out.events,
        "export_s": wall, "export_x_realtime": out.duration_s / wall,
        "export_bdf_mb": bdf, "export_mb_per_s": bdf / wall,
        "export_shipped_x_realtime": shipped.duration_s / shipped.seconds,
    }


def bench_batch(files: int, tmp: Path) -> dict[str, float]:
    from closedloop.analysis.replays import ReplayTask, replay_task
    from closedloop.runtime.batch import default_jobs, run_batch

    paths = []
    for i in range(files):
        paths.append(tmp / f"copy{i}.xdf")
        shutil.copy(SHIPPED, paths[-1])
    tasks = [ReplayTask(str(p), check=True) for p in paths]
    seconds = files * 20.0
    out: dict[str, float] = {"batch_files": files, "batch_cores": default_jobs()}

    def timed(**kw) -> float:
        t0 = time.perf_counter()
        res = run_batch(replay_task, tasks, **kw)
        wall = time.perf_counter() - t0
        assert all(r.ok and r.value.identical for r in res), [r.error for r in res]
        return wall

    timed(jobs=1)  # warm the imports and caches
    out["batch_one_process_s"] = timed(jobs=1)
    out["batch_local_s"] = timed()
    try:
        from distributed import LocalCluster
    except ImportError:
        LocalCluster = None
    if LocalCluster is not None:
        with LocalCluster(n_workers=default_jobs(), processes=True, threads_per_worker=1,
                          dashboard_address=None, silence_logs=40) as cluster:
            timed(cluster=cluster.scheduler_address)  # the workers import closedloop
            out["batch_dask_s"] = timed(cluster=cluster.scheduler_address)
    for k in ("local", "dask"):
        if f"batch_{k}_s" in out:
            out[f"batch_{k}_speedup"] = out["batch_one_process_s"] / out[f"batch_{k}_s"]
            out[f"batch_{k}_x_realtime"] = seconds / out[f"batch_{k}_s"]
    out["batch_one_process_x_realtime"] = seconds / out["batch_one_process_s"]
    return out


def bench_bootstrap() -> dict[str, float]:
    from closedloop.analysis.results import Bootstrap, bootstrap_ci, trial_units
    from closedloop.analysis.scoring import score_onsets
    from closedloop.core.events import Event

    refs = [(k * 5000, "a") for k in range(1, 101)]
    dets = [Event(k * 5000 + 30, 0.0, "a", "onset") for k in range(1, 101, 3)]
    units = trial_units(score_onsets(refs, dets, 1000.0, 510.0))
    t0 = time.perf_counter()
    bootstrap_ci(units, Bootstrap(2000, 0), "bench")
    return {"bootstrap_row_ms": 1000.0 * (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        figures.update(bench_export(args.minutes, args.channels, tmp))
        print(f"export: {args.minutes:g} min x {args.channels} ch at 2 kHz "
              f"({figures['export_events']} events) in {figures['export_s']:.2f} s = "
              f"{figures['export_x_realtime']:.0f}x real time, "
              f"{figures['export_mb_per_s']:.0f} MB/s of BDF ({figures['export_bdf_mb']:.0f} MB); "
              f"shipped recording with reading: "
              f"{figures['export_shipped_x_realtime']:.0f}x real time")
        figures.update(bench_batch(args.files, tmp))
        line = (f"batch replay --check of {args.files} x 20 s on {figures['batch_cores']} "
                f"core(s): one process {figures['batch_one_process_s']:.2f} s, local "
                f"processes {figures['batch_local_s']:.2f} s "
                f"(x{figures['batch_local_speedup']:.2f})")
        if "batch_dask_s" in figures:
            line += (f", Dask LocalCluster {figures['batch_dask_s']:.2f} s "
                     f"(x{figures['batch_dask_speedup']:.2f})")
        print(line)
    figures.update(bench_bootstrap())
    print(f"bootstrap: one row, 100 trials, 2000 resamples: {figures['bootstrap_row_ms']:.1f} ms")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
