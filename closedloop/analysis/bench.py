"""How fast the signal core is, measured, not asserted (``closedloop bench``).

Measures, for ``n_channels`` at ``fs`` over ``minutes`` of simulated EMG: throughput as
x real time for small (20-sample) and large chunks, per-chunk time p50/p99 at the small
chunk size, and the ratio of the full pipeline's time to a bare band-pass with the
public :func:`scipy.signal.sosfilt` (same order, state carried, same chunks) over the
same data, measured in the same run (:mod:`closedloop.commands.bench` prints them).
The pipeline measured is the product pipeline with the built-in default detector
(:data:`closedloop.config.model.DEFAULT_DETECTOR`, what ``closedloop run`` and ``detect``
use without a ``[detector] kind``: ``cusum``), so its per-chunk cost is what the live loop
pays; ``--detector NAME`` measures another registered detector instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

from closedloop.config.model import DEFAULT_DETECTOR
from closedloop.config.signal import FilterSettings
from closedloop.core.filters import effective_band
from closedloop.core.pipeline import detector_pipeline
from closedloop.errors import InputError, RecordingDamagedError
from closedloop.sim.patient import PatientSettings, SimulatedPatient, random_script

if TYPE_CHECKING:
    from closedloop.runtime.outcome import Outcome


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



# -- replay ----------------------------------------------------------------------------------
_STIMULATED = """
  [muscles.stim]
  channel = {channel}
  current_ma = 20.0
  pulse_width_us = 250.0
  frequency_hz = 35.0
  ramp_up_s = 0.5
  ramp_down_s = 0.5
  on_time_s = 2.0
  rest_time_s = 5.0
  [muscles.limits]
  max_current_ma = 40.0
  max_pulse_width_us = 400.0
  max_frequency_hz = 50.0
  max_charge_uc = 16.0
  max_on_time_s = 10.0
  min_rest_s = 3.0
  max_step_ma = 2.0
"""


def bench_config_text(channels: int, fs: float, seed: int = 0,
                      detector: str = "threshold") -> str:
    """The config of the replay benchmark's session: ``channels`` muscles of the
    simulated patient at ``fs``, the first two a stimulated agonist/antagonist pair
    (triggered assist with the co-contraction gate, blanking and the simulated
    stimulator's artifacts), the others detected only, with the ``detector`` named.

    The replay's speed is the replay machinery's (loading, chunking, the loop) plus the
    detector's own cost: ``threshold`` (the default here) measures the first, as the
    cheapest detector; other detectors replay at their own speed (``closedloop bench
    --detector NAME`` gives their throughput in large chunks)."""
    if channels < 2:
        raise InputError(f"the replay benchmark needs 2 channels or more, not {channels}")
    names = ["agonist", "antagonist"] + [f"m{k + 3}" for k in range(channels - 2)]
    muscles = []
    for k, name in enumerate(names):
        ant = {0: "antagonist", 1: "agonist"}.get(k)
        text = f'\n[[muscles]]\nname = "{name}"\n'
        if ant:
            text += f'antagonist = "{ant}"\n' + _STIMULATED.format(channel=k + 1)
        muscles.append(text)
    return (
        'name = "bench_replay"\n'
        f"[session]\nsource = \"sim\"\nstimulator = \"sim\"\nfs = {fs!r}\nchunk_ms = 50.0\n"
        "watchdog_ms = 100.0\n"
        f"[sim]\nsnr_db = 10.0\nartifacts = true\nseed = {seed}\n"
        f'[detector]\nkind = "{detector}"\n'
        + "".join(muscles)
        + '\n[protocol]\nkind = "triggered_assist"\nagonist = "agonist"\n'
        'antagonist = "antagonist"\nco_contraction_gate = true\n'
    )


def record_simulated_session(path: str | Path, config_text: str, minutes: float, *,
                             seed: int = 0) -> Outcome:
    """Record a simulated session into ``path`` as ``closedloop run --record`` does,
    faster than real time.

    The simulated patient and stimulator of the config run through
    :func:`~closedloop.runtime.loop.run_loop` in the config's chunks, as live, and
    :class:`~closedloop.io.outlets.SessionOutlets` publish every stream, written
    straight into the file by :class:`~closedloop.io.xdfwrite.SessionFile` (LabRecorder's
    layout) instead of LSL and LabRecorder: the same streams, formats, samples,
    decisions and config, so ``replay --check`` holds.
    """
    from dataclasses import replace

    from closedloop.config import loads_config
    from closedloop.core.detectors.base import statistic_of
    from closedloop.identity import SessionId
    from closedloop.io.outlets import SessionOutlets
    from closedloop.io.xdfwrite import SessionFile
    from closedloop.runtime.devices import make_source, make_stimulator
    from closedloop.runtime.loop import LoopOptions, run_loop

    config = loads_config(config_text, source="replay benchmark config")
    ident = SessionId.new(config.name)
    stim = make_stimulator(config, None, session=ident)
    source = make_source(config, None, seed=seed, realtime=False, stimulator=stim)
    with SessionFile(path) as file:
        if stim is not None:
            stim.open()
            stim.follow(source.now)  # pulses start at the next sample, as in a run
        source.open()
        try:
            info = replace(source.info, channels=config.muscle_names)
            outlets = SessionOutlets(
                ident.name, info, config_text=config.text,
                metadata={"source": info.name, "resolved_config": config.resolved,
                          "sim_seed": seed, "benchmark": "closedloop bench --replay"},
                session_uid=ident.uid, truth=source.true_onsets_between,
                outlet_factory=file.outlet, with_filtered=False,  # display only: not recorded
                statistic=statistic_of(config.detector_kind))
            outlets.announce(source.now())
            out = run_loop(config, source, stim, outlets=outlets,
                           options=LoopOptions(duration_s=minutes * 60.0,
                                               watchdog_s=30.0, history=0))
        finally:
            if stim is not None:
                stim.close()
            source.close()
    if out.reason != "duration":
        raise RuntimeError(f"the simulated session ended early ({out.message}): a bug")
    return out


_REPLAY_CHILD = """
import sys, time
t0 = time.perf_counter()
from closedloop.io.xdf import load_session
from closedloop.runtime.replay import check, replay_file
t1 = time.perf_counter()
session = load_session(sys.argv[1])
t2 = time.perf_counter()
_, _, out = replay_file(sys.argv[1], session=session)
diff = check(session, out)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, session.n, session.fs, int(diff is None))
"""


def run_replay_bench(path: str | Path) -> dict[str, float]:
    """Time ``closedloop replay FILE --check`` end to end (wall clock, in a fresh
    process: start-up, loading and the replay), then the same in parts in another
    fresh process (imports, :func:`~closedloop.io.xdf.load_session`, replay and check).

    Raises
    ------
    RecordingDamagedError
        The recording is cut short or corrupt (``closedloop replay`` refuses it, exit 9):
        the message has what replay said of the damage.
    InputError
        The check did not pass (the replay is not exact) or the replay failed: the
        message has what it printed.
    """
    import subprocess

    from closedloop.children import python_command

    path = Path(path)
    argv, env = python_command("-m", "closedloop", "replay", str(path), "--check", "--quiet")
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode == RecordingDamagedError.exit_code:  # as replay says it, and exits
        raise RecordingDamagedError(
            f"{path} is damaged, so it is not timed (its replay would stop at the damage): "
            "give a complete recording. What closedloop replay says of it:\n"
            f"{r.stdout}{r.stderr}".rstrip())
    if r.returncode != 0 or "check passed" not in r.stdout:
        raise InputError(f"closedloop replay {path} --check did not pass (exit "
                         f"{r.returncode}), so its time means nothing:\n{r.stdout}{r.stderr}")
    argv, env = python_command("-c", _REPLAY_CHILD, str(path))
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise InputError(f"timing the parts of the replay of {path} failed:\n{r.stderr}")
    imports, load, replay, n, fs, same = r.stdout.split()
    seconds = int(n) / float(fs)
    size = path.stat().st_size
    return {
        "file": str(path),
        "file_mb": size / 1e6,
        "recording_s": seconds,
        "replay_check_wall_s": wall,
        "replay_x_realtime": seconds / wall,
        "imports_s": float(imports),
        "load_s": float(load),
        "load_mb_per_s": size / 1e6 / float(load),
        "replay_only_s": float(replay),
        "replay_only_x_realtime": seconds / float(replay),
        "check_passed": bool(int(same)),
    }
