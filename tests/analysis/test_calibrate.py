"""Calibration on the simulated patient: a valid patient config, or a refusal with a reason."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

from closedloop.analysis import calibrate as cal
from closedloop.config import load_config, loads_config
from closedloop.core.stream import Chunk, SourceInfo
from closedloop.errors import ConfigError
from closedloop.sources.base import Source

CONFIG = """\
# a clinician's comment that must survive
name = "arm"
description = "biceps and triceps"

[session]
fs = 2000.0

[detector]
kind = "threshold"
k_on = 6.0  # inline comment

[[muscles]]
name = "biceps"
antagonist = "triceps"
placement = "belly of biceps, 2 cm apart"

[muscles.stim]
channel = 1
current_ma = 20.0

[muscles.limits]
max_current_ma = 30.0

[[muscles]]
name = "triceps"
placement = "lateral head of triceps"
"""

FAST = cal.Schedule(rest_s=3.0, mvc_reps=2, mvc_s=2.0, prepare_s=0.5, relax_s=1.5)


@pytest.fixture
def config_path(tmp_path):
    p = tmp_path / "arm.toml"
    p.write_text(CONFIG, encoding="utf-8")
    return p


def run(config, script=None, schedule=FAST, source=None):
    steps = cal.build_steps(schedule, config.muscle_names)
    src = source or cal.make_source(config, "sim", steps, realtime=False, script=script)
    with src:
        rec = cal.acquire(src, config, steps)
    return cal.analyse(rec, steps, config, schedule), steps


def test_schedule_and_cue_following_script():
    steps = cal.build_steps(cal.Schedule(), ["biceps", "triceps"])
    assert steps[0].kind == cal.REST and steps[0].duration_s == 5.0
    contractions = [s for s in steps if s.kind == cal.CONTRACT]
    assert [(s.muscle, s.rep) for s in contractions] == [
        ("biceps", 1), ("biceps", 2), ("biceps", 3),
        ("triceps", 1), ("triceps", 2), ("triceps", 3),
    ]
    assert all(s.duration_s == 3.0 for s in contractions)
    script = cal.simulated_script(steps)
    assert len(script) == len(contractions)
    for a, s in zip(script, contractions, strict=True):
        assert a.muscle == s.muscle
        assert s.start_s < a.onset_s and a.onset_s + a.duration_s < s.end_s


def test_sim_calibration_writes_a_loadable_patient_config(config_path, tmp_path):
    config = load_config(config_path)
    result, steps = run(config)
    assert result.ok, result.reasons()
    for m in result.muscles:
        assert m.rest_sd > 0 and m.mvc > m.rest_mean + 5 * m.rest_sd
        assert len(m.reps) == FAST.mvc_reps
        assert m.rest_mean < m.on_threshold < m.mvc  # sensible thresholds
        assert m.rest_mean < m.off_threshold < m.on_threshold
    text = cal.patient_config_text(config, result, confirmation="confirmed with --yes",
                                 source="sim", schedule=FAST)
    out = cal.write_patient_config(tmp_path / "patient.toml", text)
    patient = load_config(out)
    assert patient.detector.baseline == "calibrated"
    assert patient.detector.k_on == 6.0
    for m in patient.muscles:
        r = next(x for x in result.muscles if x.muscle == m.name)
        assert m.calibration is not None
        assert m.calibration.rest_mean == r.rest_mean and m.calibration.mvc == r.mvc
        on, off = m.calibration.thresholds(patient.detector)
        assert m.calibration.rest_mean < on < m.calibration.mvc
    # the rest of the config is unchanged (stimulation, placements), comments kept
    assert patient.muscle("biceps").stim == config.muscle("biceps").stim
    assert patient.muscle("triceps").placement == "lateral head of triceps"
    assert "# a clinician's comment that must survive" in text
    assert "stimulation limits: confirmed with --yes" in text
    # calibrating the patient config again replaces, not duplicates, the calibration
    again = cal.patient_config_text(patient, result, confirmation="x")
    assert again.count("[muscles.calibration]") == 2
    assert again.count('baseline = "calibrated"') == 1
    loads_config(again)


def test_patient_never_contracts_is_refused(config_path):
    config = load_config(config_path)
    result, _ = run(config, script=[])
    assert not result.ok
    for m in result.muscles:
        assert m.calibration is None
        assert any("no contraction seen" in r for r in m.reasons)
    with pytest.raises(ConfigError, match="no contraction seen"):
        cal.patient_config_text(config, result, confirmation="x")


def test_one_weak_muscle_refuses_only_that_muscle(config_path):
    config = load_config(config_path)
    steps = cal.build_steps(FAST, config.muscle_names)
    script = [a for a in cal.simulated_script(steps) if a.muscle == "biceps"]
    result, _ = run(config, script=script)
    by = {m.muscle: m for m in result.muscles}
    assert by["biceps"].ok and not by["triceps"].ok
    assert "triceps" in " ".join(result.reasons())


class ClippedSim(Source):
    """The simulated patient through an amplifier that clips (saturation)."""

    def __init__(self, inner: Source, rail: float) -> None:
        super().__init__()
        self.inner, self.rail = inner, rail

    def open(self):
        self.inner.open()
        self._info = self.inner.info
        super().open()

    def close(self):
        self.inner.close()
        super().close()

    @property
    def position(self):
        return self.inner.position

    @property
    def exhausted(self):
        return self.inner.exhausted

    def read(self, timeout):
        c = self.inner.read(timeout)
        if c is None:
            return None
        return Chunk(np.clip(c.samples, -self.rail, self.rail), c.timestamps, c.counter)


def test_saturated_channel_is_refused(config_path):
    config = load_config(config_path)
    steps = cal.build_steps(FAST, config.muscle_names)
    inner = cal.make_source(config, "sim", steps, realtime=False)
    result, _ = run(config, source=ClippedSim(inner, rail=30e-6))
    assert not result.ok
    assert any("saturated" in r for m in result.muscles for r in m.reasons)


class FlatSource(Source):
    def __init__(self, n: int, value: float = 0.0) -> None:
        super().__init__()
        self.n, self.value, self.pos = n, value, 0

    def open(self):
        self._info = SourceInfo("flat", 2000.0, ("biceps", "triceps"))
        super().open()

    @property
    def position(self):
        return self.pos

    @property
    def exhausted(self):
        return False

    def read(self, timeout):
        k = np.arange(self.pos, self.pos + 20)
        self.pos += 20
        x = np.full((20, 2), self.value)
        x[:, 1] = np.random.default_rng(self.pos).normal(0, 1e-6, 20)  # triceps alive
        return Chunk(x, k / 2000.0, k)


def test_flat_channel_is_refused(config_path):
    config = load_config(config_path)
    result, _ = run(config, source=FlatSource(0))
    by = {m.muscle: m for m in result.muscles}
    assert not by["biceps"].ok
    assert any("flat" in r for r in by["biceps"].reasons)


def test_noisy_rest_is_refused(config_path):
    config = load_config(config_path)
    steps = cal.build_steps(FAST, config.muscle_names)
    # the patient keeps moving during the rest: bursts every 0.5 s
    from closedloop.sim.patient import Attempt

    fidget = [Attempt("biceps", 0.6 + 0.5 * k, 0.15, 0.8, 0.02) for k in range(5)]
    result, _ = run(config, script=fidget + cal.simulated_script(steps))
    by = {m.muscle: m for m in result.muscles}
    assert not by["biceps"].ok
    assert any("too noisy at rest" in r for r in by["biceps"].reasons)
    assert by["triceps"].ok


TRICKY = r'''# the clinician's notes: kept
name = "quote \" and [brackets]"
description = """
[[muscles]]
[detector]
baseline = "adaptive"
(a string whose lines look like headers)
"""
detector.kind = "threshold"
detector.k_on = 5.0   # dotted keys, no [detector] header

[[muscles]]
name = "biceps"
placement = 'literal [muscles.calibration] text'
calibration = { rest_mean = 1.0, rest_sd = 0.1 }   # an earlier calibration, inline
    [muscles.stim]    # indented sub-tables
    channel = 1
    current_ma = 10.0
    [muscles.limits]
    max_current_ma = 20.0

[[muscles]]
name = "triceps"

[protocol]
agonist = "biceps"
'''

INLINE = """\
name = "inline"
muscles = [{ name = "biceps" }, { name = "triceps", calibration = { rest_mean = 2, rest_sd = 1 } }]
"""


def _result(**mvc) -> cal.Result:
    return cal.Result([
        cal.MuscleResult(name, rest_mean=1.5e-6 * (i + 1), rest_sd=2e-7, mvc=mvc.get(name, 1e-3),
                         reps=[1e-3], on_threshold=2.7e-6 * (i + 1), off_threshold=2.1e-6)
        for i, name in enumerate(("biceps", "triceps"))
    ])


@pytest.mark.parametrize("template", [TRICKY, INLINE, CONFIG], ids=["tricky", "inline", "arm"])
def test_patient_config_keeps_the_template_and_replaces_the_calibration(template):
    """The patient config is the template edited in place (comments, strings that look
    like headers, inline tables, dotted keys, indentation): exactly the template's
    settings plus the calibration, whatever was calibrated before."""
    import tomllib

    config = loads_config(template, source="t.toml")
    first = cal.patient_config_text(config, _result(), confirmation="x", when="then")
    again = cal.patient_config_text(loads_config(first), _result(triceps=2e-3),
                                    confirmation="y", when="now")
    for text, result in ((first, _result()), (again, _result(triceps=2e-3))):
        want = tomllib.loads(template)
        want.setdefault("detector", {})["baseline"] = "calibrated"
        for m in want["muscles"]:
            r = next(x for x in result.muscles if x.muscle == m["name"])
            m["calibration"] = {"rest_mean": r.rest_mean, "rest_sd": r.rest_sd, "mvc": r.mvc}
        assert tomllib.loads(text) == want
        body = [line for line in template.splitlines()
                if "calibration" not in line and "baseline" not in line]
        assert all(line in text.splitlines() for line in body)  # every other line as it was
    assert again.count(cal.HEADER) == 1 and "# calibrated: now" in again
    assert "# calibrated: then" not in again


def test_patient_config_names_the_stimulator_given():
    config = loads_config(CONFIG + '[protocol]\nagonist = "biceps"\n', source="arm.toml")
    text = cal.patient_config_text(config, _result(), confirmation="x",
                                   stimulator="rehastim2:/dev/ttyUSB0")
    assert loads_config(text).session.stimulator == "rehastim2:/dev/ttyUSB0"
    assert "[session]\nfs = 2000.0\nstimulator = " in text  # in the template's [session]
    again = cal.patient_config_text(loads_config(text), _result(), confirmation="x",
                                    stimulator="sim")
    assert again.count("stimulator = ") == 1 and loads_config(again).session.stimulator == "sim"
    bare = loads_config('[[muscles]]\nname = "biceps"\n[[muscles]]\nname = "triceps"\n')
    text = cal.patient_config_text(bare, _result(), confirmation="x", stimulator="sim")
    assert loads_config(text).session.stimulator == "sim"  # a [session] table added


def test_dialog_on_the_simulated_patient(qtbot, config_path, tmp_path):
    from closedloop.view.calibration import CalibrationDialog

    config = load_config(config_path)
    out = tmp_path / "dlg.toml"
    dlg = CalibrationDialog(config, "sim", out, schedule=FAST, realtime=False)
    qtbot.addWidget(dlg)
    assert not dlg.start_button.isEnabled()  # limits not yet confirmed
    dlg.confirm.setChecked(True)
    assert dlg.start_button.isEnabled()
    dlg.start_button.click()
    assert dlg.wait(60.0)
    assert dlg.error is None and dlg.written == out
    assert load_config(out).detector.baseline == "calibrated"
    assert "confirmed in the calibration dialog" in out.read_text()


def test_the_patient_config_carries_the_patient_id(config_path):
    config = load_config(config_path).with_patient("P07")
    result, _ = run(config)
    text = cal.patient_config_text(config, result, confirmation="x")
    assert text.count('patient = "P07"') == 1
    assert loads_config(text).patient == "P07"
    assert "# a clinician's comment that must survive" in text
    # a config that names a patient, calibrated for another (--patient): replaced
    again = cal.patient_config_text(loads_config(text).with_patient("P08"), result,
                                    confirmation="x")
    assert 'patient = "P07"' not in again and again.count('patient = "P08"') == 1
    # a text the splicer leaves alone (multi-line strings) is rewritten with the id too
    multi = CONFIG.replace('description = "biceps and triceps"',
                           'description = """biceps\n[and] triceps"""')
    config = loads_config(multi, source="multi.toml").with_patient("P09")
    assert loads_config(cal.patient_config_text(config, result, confirmation="x")).patient \
        == "P09"


def test_the_summary_line_is_in_microvolts_for_a_voltage_source():
    """What the terminal and the patient config's header say after a calibration: µV
    for a source in volts, with the digits that matter (no 2.7e-06), as the source gives
    them for one in other units."""
    r = cal.Result(_result().muscles, "V")
    line = r.muscles[0].summary(r.units)
    assert line == ("biceps: rest 1.5 +- 0.2 µV, MVC 1000 µV (reps 1000), on/off thresholds "
                    "2.7/2.1 µV (0% of MVC above rest)")
    text = cal.patient_config_text(loads_config(CONFIG, source="arm.toml"), r, confirmation="x")
    assert f"# {line}" in text.splitlines()  # the header says the same
    assert r.muscles[0].summary("counts").startswith("biceps: rest 0.0000015 +- 0.0000002 "
                                                     "counts, ")
