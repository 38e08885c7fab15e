"""Calibration on the simulated patient writes a patient config that a following session
runs with: the detector uses the calibration from the first sample (the threshold
detector its thresholds; cusum, the default, its rest variance)."""

from pathlib import Path

import pytest

from closedloop.analysis import calibrate as cal
from closedloop.config import load_config
from closedloop.runtime.devices import make_source, make_stimulator
from closedloop.runtime.loop import LoopOptions, run_loop
from tests.runtime.conftest import with_detector

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "biceps_triceps.toml"
FAST = cal.Schedule(rest_s=3.0, mvc_reps=2, mvc_s=2.0, prepare_s=0.5, relax_s=1.5)


@pytest.mark.parametrize("detector", ["cusum", "threshold"])
def test_calibrated_config_drives_the_next_session(tmp_path, detector):
    config = with_detector(load_config(CONFIG), detector)
    steps = cal.build_steps(FAST, config.muscle_names)
    with cal.make_source(config, "sim", steps, realtime=False) as src:
        rec = cal.acquire(src, config, steps)
    result = cal.analyse(rec, steps, config, FAST)
    assert result.ok, result.reasons()
    text = cal.patient_config_text(config, result, confirmation="confirmed in test",
                                   source="sim", schedule=FAST)
    patient = load_config(cal.write_patient_config(tmp_path / "patient.toml", text))
    assert patient.detector.baseline == "calibrated"

    stim = make_stimulator(patient, "sim")
    source = make_source(patient, "sim", seed=5, realtime=False, stimulator=stim)
    with stim, source:
        stim._clock = source.now
        out = run_loop(patient, source, stim, options=LoopOptions(duration_s=30.0, watchdog_s=5.0))
    assert out.exit_code == 0, out.message
    for m in patient.muscles:
        onsets = [e for e in out.events if e.channel == m.name and e.kind == "onset"]
        assert onsets, f"no onset on {m.name}"
        if detector == "threshold":
            # the thresholds in force are the calibrated ones, not a learnt adaptive floor
            on, _ = m.calibration.thresholds(patient.detector)
            assert all(e.threshold == on for e in onsets)
        else:  # the evidence threshold in nats (raised for a while after an offset)
            assert all(e.threshold >= patient.detector.h_nats for e in onsets)
    if detector == "cusum":  # no rest to learn: ready from the first block
        assert not [m for m in out.issues if "rest" in m and "not quiet" in m]
    assert any(c.is_on for c in out.commands) and out.all_off
