"""A session and the patient record (closedloop.runtime.patient_record): the row a real
simulated session stores, and the stored calibration a session starts from (the
thresholds come from it; the resolved settings a replay runs with hold it)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from closedloop.config import loads_config, parse_config
from closedloop.config.signal import Calibration
from closedloop.io.records import MuscleRecord, Records, SessionRecord
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.runtime.patient_record import (
    calibration_muscles,
    save,
    session_record,
    signal_settings,
    start_calibration,
)
from tests.runtime.conftest import sim_session, with_detector

WHEN = "2026-03-02T10:00:00+01:00"


@pytest.fixture
def patient_config(config):
    """The shipped config with the envelope threshold detector: its thresholds are µV,
    which the record stores (a cusum session's row has its own test below)."""
    return with_detector(config, "threshold").with_patient("P01")


def stored(config, when=WHEN, *, rest=3.0, mvc=60.0, muscles=None, settings=None,
           exit_code=0) -> SessionRecord:
    """A calibrate row as ``closedloop calibrate`` stores it."""
    cals = {m: Calibration(rest * 1e-6, 0.5e-6, mvc * 1e-6)
            for m in (muscles or config.muscle_names)}
    return SessionRecord(kind="calibrate", patient="P01", started=when, exit_code=exit_code,
                         program=config.name, emg_units="V",
                         signal_settings=settings or signal_settings(config),
                         muscles=calibration_muscles(cals, config, "V"))


def values(c: Calibration) -> tuple:
    return (c.rest_mean, c.rest_sd, c.mvc)


def add(db, *records) -> list[int]:
    with Records(db) as r:
        return [r.add(x) for x in records]


# -- the calibration a session starts from ---------------------------------------------------
def test_the_last_stored_calibration_sets_the_thresholds(tmp_path, patient_config):
    db = tmp_path / "c.db"
    old, new = add(db, stored(patient_config, "2026-02-01T10:00:00+01:00", rest=9.0),
                   stored(patient_config, WHEN, rest=3.0, mvc=60.0))
    choice = start_calibration(patient_config, db, "V",
                               now=datetime.fromisoformat("2026-03-05T10:00:00+01:00"))
    cfg = choice.config
    assert choice.record.id == new != old
    assert cfg.detector.baseline == "calibrated"
    for m in cfg.muscles:
        assert values(m.calibration) == pytest.approx((3e-6, 0.5e-6, 60e-6))
    assert "P01's calibration of 2026-03-02 10:00 (3 days ago; patient record #2)" in choice.note
    assert "biceps rest 3.0 µV, MVC 60.0 µV" in choice.note
    assert choice.metadata == {"from": "patient record", "record_id": new, "calibrated": WHEN,
                               "program": "biceps_triceps"}
    # what a replay of the recording runs with holds the calibration too
    again = parse_config(cfg.resolved, source="recorded")
    assert again.calibrations() == cfg.calibrations() and again.patient == "P01"


def test_a_session_runs_on_the_stored_calibration(tmp_path, patient_config):
    db = tmp_path / "c.db"
    add(db, stored(patient_config, rest=3.0, mvc=15.0))
    cfg = start_calibration(patient_config, db, "V").config
    src, stim = sim_session(cfg)
    with src, stim:
        out = run_loop(cfg, src, stim, options=LoopOptions(duration_s=30.0, history=None))
    on = {m.name: m.calibration.thresholds(cfg.detector)[0] for m in cfg.muscles}
    onsets = [e for e in out.events if e.kind == "onset"]
    assert onsets and all(e.threshold == on[e.channel] for e in onsets)


def test_a_config_with_its_own_calibration_keeps_it(tmp_path, patient_config):
    own = patient_config.with_calibrations({"biceps": Calibration(1e-6, 1e-7, 9e-6)})
    add(tmp_path / "c.db", stored(patient_config))
    choice = start_calibration(own, tmp_path / "c.db", "V")
    assert choice.config is own and choice.record is None and choice.summary == "from the config"


@pytest.mark.parametrize("case, said", [
    ("no patient", ""),
    ("no record", "no stored calibration for P01"),
    ("refused only", "no stored calibration for P01"),
    ("other muscles", "has no calibration of triceps"),
    ("other settings", "other filter or envelope settings"),
    ("unknown units", "not a voltage unit"),
    ("not a database", "could not read the stored calibrations"),
])
def test_no_fitting_calibration_leaves_the_config_as_it_is(tmp_path, patient_config, case, said):
    db = tmp_path / "c.db"
    cfg, units = patient_config, "V"
    if case == "no patient":
        cfg = replace(patient_config, patient=None)
        add(db, stored(patient_config))
    elif case == "refused only":
        add(db, stored(cfg, exit_code=1))
    elif case == "other muscles":
        add(db, stored(cfg, muscles=["biceps"]))
    elif case == "other settings":
        add(db, stored(cfg, settings=json.dumps({"filters": {}, "envelope": {"kind": "lowpass"}})))
    elif case == "unknown units":
        add(db, stored(cfg))
        units = "a.u."
    elif case == "not a database":
        db.write_text("not sqlite" * 200)
    choice = start_calibration(cfg, db, units)
    assert choice.config is cfg and choice.record is None
    assert said in choice.note
    if case != "no patient":
        assert "adaptive baseline" in choice.note and "adaptive baseline" in choice.summary
    if case == "no record":
        assert not db.exists()  # looking does not create the record


def test_an_older_fitting_calibration_is_taken_when_the_newest_does_not_fit(tmp_path,
                                                                             patient_config):
    db = tmp_path / "c.db"
    fits, _ = add(db, stored(patient_config, "2026-03-01T10:00:00+01:00"),
                  stored(patient_config, WHEN, muscles=["biceps"]))
    assert start_calibration(patient_config, db, "V").record.id == fits


def test_stored_microvolts_are_converted_to_the_sources_units(tmp_path, patient_config):
    db = tmp_path / "c.db"
    add(db, stored(patient_config, rest=3.0, mvc=60.0))
    cfg = start_calibration(patient_config, db, "uV").config
    assert values(cfg.muscles[0].calibration) == pytest.approx((3.0, 0.5, 60.0))


# -- what a session stores ---------------------------------------------------------------------
def test_the_row_of_a_simulated_session(tmp_path, patient_config):
    src, stim = sim_session(patient_config)
    with src, stim:
        out = run_loop(patient_config, src, stim,
                       options=LoopOptions(duration_s=40.0, history=None))
    row = session_record(out, patient_config, started=WHEN, units="V", operator="A. Nurse",
                         recording=None)
    assert (row.patient, row.operator, row.program, row.exit_code) == (
        "P01", "A. Nurse", "biceps_triceps", 0)
    assert row.triggers == out.trials["trials"] > 0 and row.hits == out.trials["hits"]
    assert row.success_rate is None  # triggered assist: every trigger is a repetition
    assert row.dose_limit_s == patient_config.safety.session_dose_s
    assert row.duration_s == out.seconds == 40.0
    biceps = row.muscle("biceps")
    assert biceps.stim_s == out.stim_seconds["biceps"] > 0
    assert biceps.onsets == out.onsets["biceps"]
    ons = [e.threshold for e in out.events if e.channel == "biceps" and e.kind == "onset"]
    assert biceps.on_threshold_uv == pytest.approx(1e6 * float(np.median(ons)))
    assert 1.0 < biceps.on_threshold_uv < 100.0  # µV, not volts
    assert row.detector == "threshold"
    with Records(tmp_path / "c.db") as r:
        back = r.get(r.add(row))
    assert replace(back, id=None) == row


def test_a_protocol_that_can_miss_stores_its_success_rate(tmp_path, config):
    text = config.text.replace('kind = "triggered_assist"', 'kind = "cued_trials"')
    cued = loads_config(text, source="cued.toml").with_patient("P01")
    src, stim = sim_session(cued)
    with src, stim:
        out = run_loop(cued, src, stim, options=LoopOptions(duration_s=70.0))
    row = session_record(out, cued, started=WHEN, units="V")
    assert row.triggers == out.trials["trials"] >= 2
    assert row.success_rate == pytest.approx(out.trials["hits"] / out.trials["trials"])


def test_a_calibration_row_holds_rest_and_mvc_in_microvolts(config):
    """Rest and MVC in µV for every detector; the envelope threshold the calibration
    gives only for a detector that decides on the envelope (cusum: none)."""
    cal = Calibration(3e-6, 5e-7, 6e-5)
    threshold = with_detector(config, "threshold")
    b, t = calibration_muscles({"biceps": cal}, threshold, "V")
    assert (b.rest_mean_uv, b.rest_sd_uv, b.mvc_uv) == pytest.approx((3.0, 0.5, 60.0))
    assert b.on_threshold_uv == pytest.approx(1e6 * cal.thresholds(threshold.detector)[0])
    assert t == MuscleRecord("triceps")
    assert config.detector_kind == "cusum"
    b, _ = calibration_muscles({"biceps": cal}, config, "V")
    assert (b.rest_mean_uv, b.mvc_uv) == pytest.approx((3.0, 60.0))
    assert b.on_threshold_uv is None


def test_saving_never_raises(tmp_path, patient_config):
    row = SessionRecord(kind="run", patient="P01", started=WHEN)
    (tmp_path / "dir.db").mkdir()
    sid, line = save(row, tmp_path / "dir.db")  # a folder where the file should be
    assert sid is None and line.startswith("NOT saved: patient record")
    assert "this summary and the recording (if any) hold the session" in line
    sid, line = save(replace(row, patient="John Smith"), tmp_path / "c.db")
    assert sid is None and "pseudonymous" in line
    sid, line = save(row, tmp_path / "c.db")
    assert sid == 1 and line == f"saved as #1 for P01 in {tmp_path / 'c.db'}"


def test_a_damaged_calibration_row_does_not_stop_the_session(tmp_path, patient_config):
    db = tmp_path / "c.db"
    add(db, stored(patient_config))
    with Records(db) as r:
        r.connection.execute("UPDATE sessions SET signal_settings = '{not json'")
    choice = start_calibration(patient_config, db, "V")
    assert choice.config is patient_config and choice.record is None
    assert "could not use the stored calibrations" in choice.note


def test_a_detector_without_envelope_thresholds_is_stored_with_rest_and_mvc(tmp_path,
                                                                            patient_config):
    """A CUSUM patient (a detector with no envelope thresholds) is calibrated, starts
    from the stored calibration and stores the session like any other; its rows hold
    rest and MVC and no thresholds (once an AttributeError: an internal error)."""
    data = json.loads(json.dumps(patient_config.resolved))
    data["detector"] = {"kind": "cusum"}
    cfg = parse_config(data, source="cusum.toml").with_patient("P01")
    cals = {m: Calibration(3e-6, 0.5e-6, 60e-6) for m in cfg.muscle_names}
    rows = calibration_muscles(cals, cfg, "V")
    assert [(r.rest_mean_uv, r.mvc_uv, r.on_threshold_uv) for r in rows] == \
        [(pytest.approx(3.0), pytest.approx(60.0), None)] * 2
    db = tmp_path / "c.db"
    add(db, stored(cfg))
    started = start_calibration(cfg, db, "V").config
    assert started.detector_kind == "cusum" and started.detector.baseline == "calibrated"
    src, stim = sim_session(started)
    with src, stim:
        out = run_loop(started, src, stim, options=LoopOptions(duration_s=5.0, history=None))
    row = session_record(out, started, started=WHEN, units="V")
    assert [m.rest_mean_uv for m in row.muscles] == [pytest.approx(3.0)] * 2


def test_a_cusum_session_stores_its_detector_and_no_nats_as_microvolts(tmp_path,
                                                                       patient_config):
    """A cusum session (adaptive) decides on a statistic in nats: its row says which
    detector decided and holds no envelope thresholds in µV (once 18 nats were stored
    as 18,000,000 µV, and ``closedloop history`` showed that as the patient's trend),
    while a threshold session of the same patient keeps its thresholds in µV; the
    history of both, read back from the SQLite file, shows each session's detector and
    the trend of the µV thresholds over the threshold session only."""
    from closedloop.analysis.history import build_history, render_html, terminal_lines

    data = json.loads(json.dumps(patient_config.resolved))
    data["detector"] = {"kind": "cusum"}
    cusum = parse_config(data, source="cusum.toml").with_patient("P01")
    rows = []
    for cfg in (patient_config, cusum):
        src, stim = sim_session(cfg)
        with src, stim:
            out = run_loop(cfg, src, stim, options=LoopOptions(duration_s=20.0, history=None))
        assert out.onsets["biceps"] > 0
        rows.append(session_record(out, cfg, started=WHEN, units="V"))
    thr, cus = rows
    assert (thr.detector, cus.detector) == ("threshold", "cusum")
    assert all(1.0 < m.on_threshold_uv < 100.0 for m in thr.muscles)
    assert all(m.on_threshold_uv is None and m.off_threshold_uv is None for m in cus.muscles)
    db = tmp_path / "c.db"
    add(db, thr, replace(cus, started="2026-03-03T10:00:00+01:00"))
    with Records(db, create=False) as r:
        back = r.sessions("P01")
    assert [s.detector for s in back] == ["threshold", "cusum"]
    h = build_history(back, "P01")
    text = "\n".join(terminal_lines(h))
    assert "18000000" not in text and "10000000" not in text
    per_muscle = text[text.index("Per muscle"):text.index("Weeks")]
    assert re.search(r"1 +biceps +threshold +\d+ +\d+\.\d +\d+\.\d", per_muscle), per_muscle
    assert re.search(r"2 +biceps +cusum +\d+ +- +- ", per_muscle), per_muscle
    trend = next(t for t in h.trends if t.metric.key == "threshold" and t.series == "biceps")
    assert trend.n == 1 and trend.first == pytest.approx(thr.muscle("biceps").on_threshold_uv)
    page = render_html(h, generated="now")
    assert "18000000" not in page and "cusum" in page


def test_the_row_holds_each_muscle_s_m_wave_in_microvolts(tmp_path, patient_config):
    """The evoked response the session measured (Outcome.add_mwaves, as the loop hands
    it the records) is stored per muscle: working current, first and last trains in µV,
    the drop between them, the measurements without a response; a muscle without
    records stores none."""
    from closedloop.core.evoked import EvokedSettings
    from closedloop.runtime.outcome import Outcome
    from closedloop.sim.patient import FatigueModel, MWaveModel
    from tests.runtime.test_mwaves import FS, repetitions, stimulate

    s = stimulate(repetitions(6), 60.0, chunks=(500,), evoked=EvokedSettings(),
                  mwave=MWaveModel(), fatigue=FatigueModel(fatigue_s=20.0, recovery_s=200.0))
    out = Outcome.start(patient_config.muscle_names, FS, history=None)
    out.add_mwaves(s.records)
    out.finish(int(60 * FS), FS)
    row = session_record(out, patient_config, started=WHEN, units="V")
    biceps, triceps = row.muscle("biceps"), row.muscle("triceps")
    m = out.mwave["biceps"]
    assert biceps.mwave_current_ma == 30.0
    assert biceps.mwave_first_uv == pytest.approx(1e6 * m.first_pp)
    assert biceps.mwave_last_uv == pytest.approx(1e6 * m.last_pp)
    assert 500.0 < biceps.mwave_last_uv < biceps.mwave_first_uv < 5000.0  # µV, not volts
    assert biceps.mwave_drop_pct == pytest.approx(m.drop_pct) and biceps.mwave_drop_pct > 5
    assert biceps.mwave_no_response == 0
    assert (triceps.mwave_first_uv, triceps.mwave_no_response) == (None, None)
    with Records(tmp_path / "m.db") as r:
        back = r.get(r.add(row))
    assert replace(back, id=None) == row
    # a source not in volts: no µV figures, the counts still
    other = session_record(out, patient_config, started=WHEN, units="a.u.")
    assert other.muscle("biceps").mwave_first_uv is None
    assert other.muscle("biceps").mwave_no_response == 0
