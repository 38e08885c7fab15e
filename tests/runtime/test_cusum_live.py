"""The sequential (CUSUM) detector at the bedside, in the live loop (issue 14, item 4):
an impulsive artefact does not trigger, a session that starts with the patient
contracting says rest was not quiet (status line and ``input_issue`` marker) and waits
for quiet rest, a calibrated session uses the calibration's rest variance, and a
stimulated session replays to the same decisions in any chunking.

Each runs :func:`~closedloop.runtime.loop.run_loop` on the simulated patient with the
shipped biceps/triceps config switched to ``kind = "cusum"`` (stimulation, blanking and
the input checks included), as ``closedloop run`` would."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from closedloop.config import Config
from closedloop.config.signal import Calibration, CusumSettings
from closedloop.core.filters import FilterBank
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.runtime.replay import RecordedEffect, SplitSource
from closedloop.sim.patient import Attempt, SimulatedPatient
from closedloop.sources.sim import patient_settings
from closedloop.stim.drivers.sim import SimStimulator
from tests.faults.conftest import FaultySource, on_samples, replaced
from tests.runtime.conftest import ArraySource, Capture, assert_all_off, sim_session

FS = 2000.0
CHUNK = 20  # 10 ms
NOISE = 5e-6  # the simulated patient's noise RMS (volts)
VOLUNTARY = NOISE * 10 ** (10 / 20)  # its EMG RMS at full activation, 10 dB SNR


def cusum(config: Config, *, impulse_ratio: float | None = None, **settings) -> Config:
    """``config`` with ``[detector] kind = "cusum"`` (and the input's impulse gate set)."""
    out = replace(config, detector=CusumSettings(**settings), detector_kind="cusum")
    if impulse_ratio is not None:
        out = replace(out, artifacts=replace(out.artifacts, impulse_ratio=impulse_ratio))
    return out


def at(t: float) -> int:
    """Index of the chunk that starts at ``t`` seconds."""
    return int(round(t * FS / CHUNK))


def session(config, script, faults, seconds):
    """A simulated session with stimulation: outcome, stimulator, status lines, markers."""
    src, stim = sim_session(config, script, chunk=CHUNK)
    lines: list[str] = []
    outlets = Capture()
    out = run_loop(config, FaultySource(src, faults), stim, status=lines.append,
                   outlets=outlets, options=LoopOptions(duration_s=seconds, watchdog_s=2.0,
                                                        status_every_s=0.0, history=None))
    return out, stim, lines, outlets


def onsets(out, muscle: str = "biceps") -> list[float]:
    return [e.sample / FS for e in out.events if e.kind == "onset" and e.channel == muscle]


def first_onsets(out, starts: list[float]) -> list[float]:
    """The first biceps onset within each attempt (its start .. 1 s after)."""
    ons = onsets(out)
    return [next((t for t in ons if a - 0.05 <= t <= a + 1.0), np.nan) for a in starts]


def trains(out) -> list[float]:
    """Where stimulation trains started, s."""
    return [s / FS for s in on_samples(out.commands)]


def told(out, lines, outlets, words: str) -> list[dict]:
    """The notices matching ``words``: each in the summary, on the status line and among
    the published ``input_issue`` markers (which the recording keeps)."""
    found = []
    for message in (m for m in out.issues if re.search(words, m)):
        assert f"input: {message}" in lines
        markers = [f for k, _, f in outlets.markers
                   if k == "input_issue" and f["message"] == message]
        assert markers, message
        found.append(markers[0])
    return found


# -- an impulsive artefact ------------------------------------------------------------------------
KNOCKS = {
    "2 ms step": np.r_[np.ones(4), np.zeros(CHUNK - 4)],
    "5 ms half sine": np.r_[np.sin(np.pi * np.arange(10) / 10), np.zeros(CHUNK - 10)],
    "one sample": np.r_[1.0, np.zeros(CHUNK - 1)],
}


@pytest.mark.parametrize("shape", KNOCKS)
@pytest.mark.parametrize("size", [100, 1000])
@pytest.mark.parametrize("gate", [True, False], ids=["input gate on", "input gate off"])
def test_an_impulsive_artefact_does_not_trigger(config, shape, size, gate):
    """A knock on the biceps electrode at rest, a few ms at 100 or 1000 times the
    voluntary EMG's RMS: no onset, nothing switched on, and the attempt after it
    triggers as it does without the knock. With the loop's impulse gate off the
    detector's own artefact hold is what keeps it out; with that hold off too, the same
    knock does trigger (the test can fail)."""

    def knock(chunk):
        x = chunk.samples.copy()
        x[:, 0] += size * VOLUNTARY * KNOCKS[shape]
        return [replaced(chunk, x)]

    cfg = cusum(config, impulse_ratio=None if gate else 0.0)
    script = [Attempt("biceps", 8.0, 1.0, 1.0, 0.04)]
    out, stim, _, _ = session(cfg, script, {at(5.0): knock}, 9.5)
    clean, *_ = session(cfg, script, {}, 9.5)
    assert out.exit_code == 0 and out.all_off
    assert_all_off(stim)
    assert onsets(out) == onsets(clean) and onsets(out) == pytest.approx([8.0], abs=0.06)
    assert on_samples(out.commands) == on_samples(clean.commands)
    if not gate:
        bare = cusum(config, impulse_ratio=0.0, artifact_ratio=1e9)
        unprotected, *_ = session(bare, script, {at(5.0): knock}, 9.5)
        assert onsets(unprotected)[0] == pytest.approx(5.0, abs=0.02)


# -- a session that starts with the patient contracting -------------------------------------------
@pytest.mark.parametrize(("level", "ramp"), [(1.0, 0.3), (1.0, 0.02), (0.6, 0.3)])
def test_a_contracting_start_says_rest_was_not_quiet_and_waits_for_it(config, level, ramp):
    """The patient holds the biceps from the very start for 3 s, then relaxes: the
    status line and the recording say rest was not quiet on the biceps, the contraction
    is not taken as rest (its end triggers nothing), and the attempts 1.5 s and 4 s after
    relaxing are found (the first starts a train)."""
    script = [Attempt("biceps", 0.0, 3.0, level, ramp), Attempt("biceps", 4.5, 1.0, 1.0, 0.04),
              Attempt("biceps", 7.0, 1.0, 1.0, 0.04)]
    out, stim, lines, outlets = session(cusum(config), script, {}, 8.5)
    assert out.exit_code == 0 and out.all_off
    assert_all_off(stim)
    assert onsets(out) == pytest.approx([4.5, 7.0], abs=0.1)
    assert trains(out) == pytest.approx([4.5], abs=0.1)  # the next train waits for rest_time
    markers = told(out, lines, outlets, r"^channel biceps: rest was not quiet on 'biceps'")
    assert markers and all(m["kind"] == "rest" and m["channel"] == "biceps" for m in markers)
    # said while the contraction lasted or as it ended, never after the next attempt
    assert all(m["sample"] < 4.5 * FS for m in markers)
    assert not [m for m in out.issues if "triceps" in m and "rest was not quiet" in m]


# -- a calibrated session -------------------------------------------------------------------------
def _rest_calibration(config: Config, scale: float) -> Calibration:
    """RMS-envelope rest statistics of the simulated patient's biceps whose mean square
    (the filtered rest variance the detector takes) is ``scale`` times the true one."""
    rest = SimulatedPatient(patient_settings(config), [], seed=5).read(int(4 * FS))
    xf = FilterBank(config.filters, FS, rest.shape[1]).process(rest)[int(FS):, 0]
    var = float(np.mean(xf**2)) * scale
    # a moving RMS's mean and SD at rest: mean**2 + sd**2 = variance (sd about 0.34 mean)
    mean = (var / (1 + 0.34**2)) ** 0.5
    return Calibration(rest_mean=mean, rest_sd=0.34 * mean)


def test_a_calibrated_session_uses_the_calibrations_rest_variance(config):
    """Three sessions on the same patient: calibrated with its true rest, the attempts
    trigger; calibrated with a rest 25 times quieter than the patient's, the session says
    its rest is far above the calibrated one and never triggers (so the calibration,
    not the session's own rest, sets the level); calibrated with a rest 30 times
    louder, a moderate attempt goes unnoticed that the true calibration finds."""
    script = [Attempt("biceps", 3.0, 1.0, 0.35, 0.04), Attempt("biceps", 6.0, 1.0, 0.35, 0.04)]

    def calibrated(scale: float) -> Config:
        cal = _rest_calibration(config, scale)
        muscles = tuple(replace(m, calibration=cal) for m in config.muscles)
        return replace(cusum(config, baseline="calibrated"), muscles=muscles)

    true, stim, lines, outlets = session(calibrated(1.0), script, {}, 7.5)
    assert true.exit_code == 0 and true.all_off
    assert first_onsets(true, [3.0, 6.0]) == pytest.approx([3.1, 6.1], abs=0.1)
    assert trains(true) == pytest.approx([3.0], abs=0.1)  # the next train waits for rest_time
    assert not told(true, lines, outlets, "rest was not quiet")

    quiet, stim, lines, outlets = session(calibrated(1 / 25), script, {}, 7.5)
    assert quiet.exit_code == 0 and quiet.all_off
    assert onsets(quiet) == [] and on_samples(quiet.commands) == []
    markers = told(quiet, lines, outlets, r"times the calibrated rest\); waiting for quiet")
    assert sorted(m["channel"] for m in markers) == ["biceps", "triceps"]  # said once each
    assert all(m["kind"] == "rest" for m in markers)

    loud, *_ = session(calibrated(30.0), script, {}, 7.5)
    assert loud.exit_code == 0 and onsets(loud) == [] and trains(loud) == []


# -- a stimulated session, live and replayed ------------------------------------------------------
@pytest.fixture(scope="module")
def stimulated_live(config):
    """Live, attempts on both muscles; the first starts a train whose pulses the
    patient's EMG carries (the next waits for the protocol's rest time)."""
    cfg = cusum(config)
    script = [Attempt("biceps", 2.2, 1.0, 1.0, 0.04), Attempt("triceps", 3.9, 1.0, 1.0, 0.04),
              Attempt("biceps", 5.7, 0.6, 1.0, 0.04)]  # nothing starts in the first 2 s
    src, stim = sim_session(cfg, script, chunk=CHUNK)
    cap = Capture()
    out = run_loop(cfg, src, stim, outlets=cap, options=LoopOptions(duration_s=7.2))
    return cfg, out, cap


@pytest.mark.parametrize("sizes", [(1,), (7,), (10000,)])
def test_a_stimulated_session_replays_to_the_same_decisions(stimulated_live, sizes):
    """A replay of the captured EMG with the recorded effective samples, as ``closedloop
    replay`` runs it, in chunks of 1, 7 or 10,000 samples, makes the same commands and
    events as the live session and the same onset statistic to the bit."""
    cfg, out, cap = stimulated_live
    assert out.exit_code == 0 and out.all_off
    assert {e.channel for e in out.events if e.kind == "onset"} == {"biceps", "triceps"}
    assert trains(out) == pytest.approx([2.2], abs=0.1)  # stimulated: the replay blanks it too

    x = np.vstack(cap.emg)
    rec = [c for c in cap.commands if c.effective_sample >= 0]
    again = Capture()
    rsrc = SplitSource(ArraySource(x, FS, cfg.muscle_names, sizes),
                       sorted({c.effective_sample for c in rec}))
    rstim = SimStimulator(rates={c.frequency_hz: c.delivered_hz for c in cap.commands
                                 if np.isfinite(c.delivered_hz)})
    with rsrc, rstim:
        r_out = run_loop(cfg, rsrc, rstim, outlets=again, effective_sample=RecordedEffect(rec),
                         options=LoopOptions(watchdog_s=30.0))
    assert [c.decision_key() for c in r_out.commands] == [c.decision_key() for c in out.commands]
    key = lambda e: (e.sample, e.channel, e.kind, e.envelope, e.threshold)  # noqa: E731
    assert [key(e) for e in r_out.events] == [key(e) for e in out.events]
    np.testing.assert_array_equal(np.vstack(again.envelope), np.vstack(cap.envelope))
