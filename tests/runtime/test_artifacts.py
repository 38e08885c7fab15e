"""EMG during stimulation: 10 minutes of simulated sessions with stimulation artifacts
(every pulse of the simulated stimulator puts an artifact on every channel and an
M-wave on the stimulated muscle's) produce no trigger the patient did not attempt, and
voluntary attempts during stimulation are still seen: the antagonist's during the
agonist's stimulation, and the agonist's own. Run on the sample clock, not in real time.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from closedloop.config import load_config
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt
from tests.conftest import CONFIGS
from tests.runtime.conftest import assert_all_off, sim_session

FS = 2000.0
CYCLE = 12.0  # stimulation (4 s) + rest (5 s) + the guard's minimum rest (3 s) fit in


def cycle_script(minutes: float) -> list[Attempt]:
    """Every 12 s: the biceps tries (and is stimulated from ~30 ms later for 4 s); during
    that stimulation the triceps tries (at +1.6 s), then the biceps again (at +2.9 s)."""
    out = []
    for k in range(int(minutes * 60 / CYCLE)):
        t = 2.0 + CYCLE * k
        out += [Attempt("biceps", t, 1.0, 1.0, 0.04), Attempt("triceps", t + 1.6, 1.0, 1.0, 0.04),
                Attempt("biceps", t + 2.9, 0.5, 1.0, 0.04)]
    return out


def match(out, script, *, early=0.05, late=0.3):
    """(latency of each attempt's detection or None, onsets matching no attempt)."""
    found: dict[int, float] = {}
    false = []
    for e in out.events:
        if e.kind != "onset":
            continue
        t = e.sample / FS
        hits = [i for i, a in enumerate(script) if a.muscle == e.channel
                and -early <= t - a.onset_s <= late and i not in found]
        if hits:
            found[hits[0]] = t - script[hits[0]].onset_s
        else:
            false.append((round(t, 3), e.channel))
    return [found.get(i) for i in range(len(script))], false


def stimulated_at(out, muscle: str, t: float) -> bool:
    level = 0.0
    for c in out.commands:
        if c.muscle == muscle and c.effective_sample >= 0 and c.effective_sample / FS <= t:
            level = c.current_ma
    return level > 0


def session(config, script, minutes):
    src, stim = sim_session(config, script, chunk=200)
    out = run_loop(config, src, stim, options=LoopOptions(duration_s=minutes * 60, watchdog_s=10))
    assert out.reason == "duration", out.message
    assert_all_off(stim)
    return out


def test_ten_minutes_of_stimulation_no_false_trigger_and_attempts_seen(config):
    script = cycle_script(10.0)
    out = session(config, script, 10.0)
    latency, false = match(out, script)
    assert false == []
    assert out.trials["trials"] == len(script) // 3 == 50  # every first attempt triggered
    during = script[1::3]
    assert all(stimulated_at(out, "biceps", a.onset_s) for a in during)
    assert all(stimulated_at(out, "biceps", a.onset_s) for a in script[2::3])
    assert None not in latency  # antagonist and agonist attempts under stimulation too
    lat = np.array(latency) * 1000
    print(f"\ndetection latency, ms (median/max): first {np.median(lat[0::3]):.0f}/"
          f"{lat[0::3].max():.0f}; antagonist during stimulation {np.median(lat[1::3]):.0f}/"
          f"{lat[1::3].max():.0f}; agonist during its own {np.median(lat[2::3]):.0f}/"
          f"{lat[2::3].max():.0f}; {len(out.commands)} commands, "
          f"{out.stim_seconds['biceps']:.0f} s of stimulation")


def test_without_artifact_removal_the_same_session_has_false_triggers(config):
    script = cycle_script(2.0)
    off = replace(config, artifacts=replace(config.artifacts, blank_ms=0.0))
    _, false = match(session(off, script, 2.0), script)
    assert len(false) >= 5  # what the test above would catch


@pytest.mark.parametrize("name", ["biceps_triceps", "wrist_flexor_extensor"])
def test_random_sessions_with_stimulation_have_no_false_trigger(name):
    config = load_config(CONFIGS / f"{name}.toml")
    minutes = 5.0
    src, stim = sim_session(config, None, chunk=200)  # the config's random attempts
    script = [a for a in src.script if a.onset_s < minutes * 60]
    out = run_loop(config, src, stim, options=LoopOptions(duration_s=minutes * 60, watchdog_s=10))
    latency, false = match(out, script)
    assert false == [] and None not in latency
    assert out.trials["trials"] >= 15 and out.stim_seconds[config.protocol.agonist] > 30
    assert_all_off(stim)
