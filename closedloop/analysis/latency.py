"""End-to-end latency over LSL on loopback, measured (``closedloop bench --latency``).

Two processes, as in a real set-up with an amplifier application:

* a **streamer** (``python -m closedloop.analysis.latency serve ...``) plays the simulated patient
  as an LSL outlet in real time: chunk ``k`` is pushed when its last sample is due,
  ``t0 + (k + 1) * chunk / fs`` on the LSL clock (paced against the clock, never by
  summed sleeps), each sample stamped ``t0 + i / fs``, i.e. the moment it was
  "acquired". Its first stdout line is JSON with ``t0`` and the true onsets (stream time
  and muscle), so the truth is published before any sample;
* **closedloop** runs in this process: the session ``closedloop run`` builds
  (:mod:`closedloop.runtime.session`) on the streamer's stream (``--source
  lsl:name=...``) with the simulated stimulator, on a config that triggers often (the
  biceps every 2 s; see :data:`BENCH_CONFIG`); ``--outlets`` publishes its LSL streams
  and listens for STOP as a session does, ``--with-view`` also starts its live view.

What is printed (p50/p95/p99, ms):

* **arrival -> command**: the loop's own processing, ``handed_wall - arrival_wall`` of
  every command (input checks, signal core, protocol, guard, hand-over);
* **onset -> command**: for every true biceps onset, the first on-command after it:
  the command's hand-over time on the LSL clock (``handed_wall`` mapped from
  ``time.perf_counter`` to ``pylsl.local_clock`` by an offset measured here) minus the
  onset's stream time, which is when the first sample of the attempt was acquired. It
  is what the patient experiences (less the stimulator's own output delay), and splits
  into detection (``(command.sample - onset sample) / fs``: the detector waiting for
  the EMG to rise above threshold), delivery (the chunking of the stream and LSL:
  arrival of the deciding sample minus its acquisition) and processing.

Nothing here is asserted: the figures are measured, and printed by
:mod:`closedloop.commands.bench`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from closedloop.children import python_command

if TYPE_CHECKING:
    from closedloop.config import Config

#: The bench config: the shipped biceps/triceps pair, with short low-current trains and
#: rests so the biceps can be triggered every two seconds; ``{detector}`` is the detector
#: measured (:func:`latency_config`).
BENCH_CONFIG = """
name = "latency_bench"
description = "closedloop bench --latency: biceps triggered assist, short trains"
[session]
watchdog_ms = 100.0
[detector]
kind = "{detector}"
baseline = "adaptive"
[[muscles]]
name = "biceps"
channel = "biceps"
antagonist = "triceps"
  [muscles.stim]
  channel = 1
  current_ma = 4.0
  pulse_width_us = 250.0
  frequency_hz = 35.0
  ramp_up_s = 0.1
  ramp_down_s = 0.1
  on_time_s = 0.2
  rest_time_s = 1.0
  [muscles.limits]
  max_current_ma = 10.0
  max_pulse_width_us = 400.0
  max_frequency_hz = 50.0
  max_charge_uc = 16.0
  max_on_time_s = 2.0
  min_rest_s = 1.0
  max_step_ma = 2.0
[[muscles]]
name = "triceps"
channel = "triceps"
antagonist = "biceps"
[protocol]
kind = "triggered_assist"
agonist = "biceps"
antagonist = "triceps"
co_contraction_gate = true
[safety]
session_dose_s = 3600.0
"""


def latency_config(detector: str | None = None) -> Config:
    """The bench config (:data:`BENCH_CONFIG`) with ``detector`` (a registered kind;
    default: the built-in default detector) as its ``[detector] kind``."""
    from closedloop.config import loads_config
    from closedloop.config.model import DEFAULT_DETECTOR

    return loads_config(BENCH_CONFIG.format(detector=detector or DEFAULT_DETECTOR),
                        source="<latency bench config>")


# -- the streamer (its own process) -------------------------------------------------------
def serve(name: str, *, seconds: float, fs: float = 2000.0, chunk_ms: float = 5.0,
          snr_db: float = 10.0, seed: int = 0,
          attempts: list[tuple[str, float, float]] | None = None,
          every_s: float | None = None, out=sys.stdout, control=sys.stdin) -> int:
    """Stream the simulated patient as the LSL outlet ``name`` (see the module docstring).

    Lines on ``control``: ``stall`` stops pushing (the outlet stays), ``resume`` goes on
    from where the clock is (the samples in between are never sent), ``quit`` ends.
    """
    import pylsl

    from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient

    muscles = ("biceps", "triceps")
    script = [Attempt(m, t, d, 1.0, 0.04) for m, t, d in attempts or []]
    if every_s:
        script += [Attempt("biceps", t, 0.5, 1.0, 0.04)
                   for t in np.arange(2.0, seconds - 1.0, every_s)]
    patient = SimulatedPatient(PatientSettings(fs=fs, muscles=muscles, snr_db=snr_db), script, seed)
    info = pylsl.StreamInfo(name, "EMG", len(muscles) + 1, fs, pylsl.cf_double64,
                            f"closedloop-sim-{uuid.uuid4().hex[:8]}")
    chans = info.desc().append_child("channels")
    for label in (*muscles, "counter"):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", "V" if label != "counter" else "")
        ch.append_child_value("type", "EMG" if label != "counter" else "counter")
    outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
    chunk = max(1, int(round(chunk_ms * fs / 1000.0)))
    state = {"stalled": False, "quit": threading.Event()}

    def read_control() -> None:
        for line in control:
            word = line.strip()
            if word == "stall":
                state["stalled"] = True
            elif word == "resume":
                state["stalled"] = False
            elif word == "quit":
                break
        state["quit"].set()

    threading.Thread(target=read_control, name="serve-control", daemon=True).start()
    t0 = pylsl.local_clock()
    print(json.dumps({"name": name, "t0": t0, "fs": fs, "chunk": chunk, "pid": os.getpid(),
                      "onsets": [[t0 + a.onset_s, a.muscle] for a in patient.script]}),
          file=out, flush=True)
    n_total = int(seconds * fs)
    i = 0
    while i < n_total and not state["quit"].is_set():
        due = t0 + (i + chunk) / fs
        wait = due - pylsl.local_clock()
        if wait > 0 and state["quit"].wait(wait):
            break
        if state["stalled"]:
            patient.read(chunk)  # the clock goes on; these samples are never sent
        else:
            x = patient.read(chunk)
            idx = np.arange(i, i + chunk, dtype=np.float64)
            outlet.push_chunk(np.column_stack((x, idx)), (t0 + idx / fs).tolist())
        i += chunk
    del outlet
    return 0


class Streamer:
    """The streamer as a child process: ``with Streamer(name, ...) as s:`` gives
    ``s.t0``, ``s.onsets`` and ``s.send("stall")``; leaving ends it."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        argv, env = python_command("-m", "closedloop.analysis.latency", "serve", "--name",
                                   name, *args)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"the LSL streamer for {name!r} did not start")
        head = json.loads(line)
        self.t0: float = head["t0"]
        self.fs: float = head["fs"]
        self.onsets: list[tuple[float, str]] = [(float(t), m) for t, m in head["onsets"]]

    def send(self, word: str) -> None:
        """Send one control word (``stall``, ``resume``, ``quit``) to the streamer."""
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Ask the streamer to quit, and end it if it does not. Idempotent."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()

    def __enter__(self) -> Streamer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the benchmark ----------------------------------------------------------------------------
def _clock_offset() -> float:
    """``pylsl.local_clock() - time.perf_counter()``, from the tightest of 50 readings."""
    import pylsl

    best = None
    for _ in range(50):
        a = time.perf_counter()
        t = pylsl.local_clock()
        b = time.perf_counter()
        if best is None or b - a < best[0]:
            best = (b - a, t - (a + b) / 2)
    return best[1]


def _pct(x) -> dict[str, float]:
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "n": int(a.size)}


def run_latency(seconds: float = 60.0, *, every_s: float = 2.0, snr_db: float = 10.0,
                chunk_ms: float = 5.0, seed: int = 0, outlets: bool = False,
                view: bool = False, detector: str | None = None) -> dict:
    """Run the benchmark (see the module docstring); return the figures.

    ``outlets`` publishes the session's LSL streams as ``closedloop run`` does; ``view``
    also attaches a live view (``closedloop view``, its own process, offscreen when
    there is no display), to measure whether watching a session slows the loop;
    ``detector`` is the detector kind the session runs (default: the built-in default).
    """
    from closedloop.runtime.outcome import LoopOptions
    from closedloop.runtime.session import Session, SessionPlan

    config = latency_config(detector)
    name = f"closedloop-latency-{uuid.uuid4().hex[:8]}"
    with Streamer(name, "--seconds", f"{seconds + 5:g}", "--every", f"{every_s:g}",
                  "--snr-db", f"{snr_db:g}", "--chunk-ms", f"{chunk_ms:g}",
                  "--seed", str(seed)) as streamer:
        # the session closedloop run builds, on the streamer's LSL stream
        plan = SessionPlan(config, source=f"lsl:name={name}?resolve_timeout=10",
                           stimulator="sim", name=f"{name}-session",
                           publish=outlets or view, view=view, view_offscreen=True)
        with Session(plan).open() as session, _collections() as pauses:
            assert session.source is not None
            fs = session.source.info.fs
            offset = _clock_offset()
            out = session.run(LoopOptions(duration_s=seconds, history=None))
    if out.exit_code != 0:
        raise RuntimeError(f"the benchmark session ended early: {out.message}")
    handed = [c for c in out.commands if np.isfinite(c.handed_wall)]
    processing = [1000 * (c.handed_wall - c.arrival_wall) for c in handed]
    ons = [c for c in handed if c.is_on and c.phase == "ramp_up"]
    total, detection, delivery, trig_proc = [], [], [], []
    for t_on, muscle in streamer.onsets:
        if muscle != "biceps":
            continue
        # the first trigger whose deciding sample is at or after the onset, within 1 s
        later = [c for c in ons if c.stream_time >= t_on - 0.5 / fs and c.stream_time < t_on + 1.0]
        if not later:
            continue
        c = later[0]
        total.append(1000 * (c.handed_wall + offset - t_on))
        detection.append(1000 * (c.stream_time - t_on))
        delivery.append(1000 * (c.arrival_wall + offset - c.stream_time))
        trig_proc.append(1000 * (c.handed_wall - c.arrival_wall))
    # biceps onsets inside the session (its sample 0 is where the inlet came in)
    t_first = handed[0].stream_time - handed[0].sample / fs if handed else np.inf
    n_onsets = sum(m == "biceps" and t_first <= t < t_first + seconds for t, m in streamer.onsets)
    p, o = _pct(processing), _pct(total)
    return {
        "seconds": seconds, "fs": fs, "snr_db": snr_db, "chunk_ms": chunk_ms,
        "detector": config.detector_kind,
        "commands": len(handed), "onsets": n_onsets, "triggered": len(total),
        "arrival_to_command_p50_ms": p["p50"], "arrival_to_command_p95_ms": p["p95"],
        "arrival_to_command_p99_ms": p["p99"],
        "onset_to_command_p50_ms": o["p50"], "onset_to_command_p95_ms": o["p95"],
        "onset_to_command_p99_ms": o["p99"],
        "detection_p50_ms": _pct(detection)["p50"], "delivery_p50_ms": _pct(delivery)["p50"],
        "delivery_p99_ms": _pct(delivery)["p99"],
        "trigger_processing_p50_ms": _pct(trig_proc)["p50"],
        "arrival_to_command_max_ms": max(processing, default=float("nan")),
        "gc_collections": len(pauses), "gc_full_collections": sum(g == 2 for g, _ in pauses),
        "gc_longest_ms": max((ms for _, ms in pauses), default=0.0),
        "samples_lost": out.samples_lost, "clock_offset_s": offset,
    }


@contextlib.contextmanager
def _collections() -> Iterator[list[tuple[int, float]]]:
    """The garbage collector's collections in this process while a session's loop runs
    in the block (the loop freezes the heap: :mod:`closedloop.runtime.loop`), as
    ``(generation, pause in ms)``: the pauses of every thread, the loop's among them."""
    pauses: list[tuple[int, float]] = []
    started: list[float] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()] if gc.get_freeze_count() else []
        elif started:
            pauses.append((int(info["generation"]), 1000 * (time.perf_counter() - started[0])))

    gc.callbacks.append(note)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(note)


def _serve_main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m closedloop.analysis.latency serve",
                                description="stream the simulated patient over LSL")
    p.add_argument("--name", required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--fs", type=float, default=2000.0)
    p.add_argument("--chunk-ms", type=float, default=5.0)
    p.add_argument("--snr-db", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=float, help="a biceps attempt every this many seconds")
    p.add_argument("--attempt", action="append", default=[], metavar="MUSCLE:ONSET_S:DURATION_S")
    a = p.parse_args(argv)
    attempts = []
    for spec in a.attempt:
        m, t, d = spec.split(":")
        attempts.append((m, float(t), float(d)))
    return serve(a.name, seconds=a.seconds, fs=a.fs, chunk_ms=a.chunk_ms, snr_db=a.snr_db,
                 seed=a.seed, attempts=attempts, every_s=a.every)


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m closedloop.analysis.latency serve --name NAME [options]")
    sys.exit(_serve_main(sys.argv[2:]))
