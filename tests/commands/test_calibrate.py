"""``closedloop calibrate`` as a command: the terminal path end to end on the simulated
patient, the confirmation of the stimulation limits, the stimulator check and the
patient record."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from closedloop.analysis import calibrate as cal
from closedloop.commands import calibrate as cmd
from closedloop.config import load_config
from closedloop.errors import ConfigError, InputError
from tests.analysis.test_calibrate import CONFIG
from tests.conftest import CONFIGS


@pytest.fixture
def config_path(tmp_path):
    p = tmp_path / "arm.toml"
    p.write_text(CONFIG, encoding="utf-8")
    return p


def test_limits_need_confirmation(config_path):
    config = load_config(config_path)
    out = []
    assert cmd.confirm_limits(config, yes=True, output=out.append) == "confirmed with --yes"
    assert any("20 mA" in line for line in out)
    assert "terminal" in cmd.confirm_limits(config, yes=False, input=lambda p: "y",
                                          output=lambda s: None)
    with pytest.raises(InputError, match="not confirmed"):
        cmd.confirm_limits(config, yes=False, input=lambda p: "", output=lambda s: None)


def test_cli_no_gui_writes_patient_config(config_path, tmp_path, monkeypatch, capsys):
    # the terminal path end to end, with the simulated source not paced in real time
    real = cal.make_source
    monkeypatch.setattr(cmd, "make_source",
                        lambda cfg, spec, steps, **kw: real(cfg, spec, steps, realtime=False))
    out = tmp_path / "p.toml"
    args = argparse.Namespace(config=str(config_path), source="sim", out=str(out),
                              rest_s=3.0, mvc_reps=2, mvc_s=2.0, no_gui=True, yes=True)
    assert cmd.main(args) == 0
    printed = capsys.readouterr().out
    assert "GO! contract biceps" in printed and "belly of biceps" in printed
    assert load_config(out).detector.baseline == "calibrated"
    # refused: nothing written, exit 1
    monkeypatch.setattr(cal, "simulated_script", lambda steps: [])
    out2 = tmp_path / "refused.toml"
    args.out = str(out2)
    assert cmd.main(args) == 1
    assert not out2.exists()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="science-mode-4 needs Python 3.11")
def test_calibrate_for_a_p24_writes_it_into_the_patient_config(tmp_path, monkeypatch):
    """``calibrate --stimulator p24:PORT``: the program is checked against the stimulator
    before the patient starts (nothing is opened), and the patient config names it, so
    ``closedloop run --config patient.toml`` drives that P24."""
    real = cal.make_source
    monkeypatch.setattr(cmd, "make_source",
                        lambda cfg, spec, steps, **kw: real(cfg, spec, steps, realtime=False))
    out = tmp_path / "p.toml"
    two_rates = CONFIGS / "programs" / "reciprocal_two_rates.toml"
    args = argparse.Namespace(config=str(two_rates), source="sim", out=str(out), rest_s=3.0,
                              mvc_reps=2, mvc_s=2.0, no_gui=True, yes=True,
                              stimulator="p24:/dev/ttyACM7")
    assert cmd.main(args) == 0
    patient = load_config(out)
    assert patient.session.stimulator == "p24:/dev/ttyACM7"
    assert patient.detector.baseline == "calibrated"
    assert out.read_text().count("stimulator = ") == 1  # replaced, not added twice
    # the same program on a RehaStim2: refused before anything is recorded or written
    args.stimulator, args.out = "rehastim2:/dev/ttyUSB0", str(tmp_path / "no.toml")
    monkeypatch.setattr(cmd, "run_terminal", lambda *a, **k: pytest.fail("calibrated"))
    with pytest.raises(ConfigError, match="runs all channels at one frequency"):
        cmd.main(args)
    assert not (tmp_path / "no.toml").exists()


def test_cli_for_a_patient_stores_the_calibration_in_the_record(config_path, tmp_path,
                                                                monkeypatch, capsys):
    from closedloop.io.records import Records

    real = cal.make_source
    monkeypatch.setattr(cmd, "make_source",
                        lambda cfg, spec, steps, **kw: real(cfg, spec, steps, realtime=False))
    db = tmp_path / "c.db"
    args = argparse.Namespace(config=str(config_path), source="sim", out=str(tmp_path / "p.toml"),
                              rest_s=3.0, mvc_reps=2, mvc_s=2.0, no_gui=True, yes=True,
                              patient="P07", operator="A. Nurse", db=str(db))
    assert cmd.main(args) == 0
    assert f"patient record: saved as #1 for P07 in {db}" in capsys.readouterr().out
    written = load_config(tmp_path / "p.toml")
    assert written.patient == "P07"
    monkeypatch.setattr(cal, "simulated_script", lambda steps: [])  # never contracts
    args.out = str(tmp_path / "refused.toml")
    assert cmd.main(args) == 1
    with Records(db) as r:
        ok, refused = r.sessions("P07")
        assert [c.id for c in r.calibrations("P07")] == [ok.id]  # a refusal is not used
    assert (ok.exit_code, refused.exit_code) == (0, 1)
    assert "no contraction seen" in refused.message and ok.operator == "A. Nurse"
    for m in written.muscles:
        row = ok.muscle(m.name)
        assert row.rest_mean_uv == pytest.approx(1e6 * m.calibration.rest_mean)
        assert row.mvc_uv == pytest.approx(1e6 * m.calibration.mvc)
    assert refused.muscle("biceps").mvc_uv is None


def test_a_cusum_config_is_calibrated(tmp_path, monkeypatch, capsys):
    """A detector without envelope thresholds (CUSUM) is calibrated too: rest and MVC
    are written and recorded, no thresholds are claimed (once an internal error)."""
    real = cal.make_source
    monkeypatch.setattr(cmd, "make_source",
                        lambda cfg, spec, steps, **kw: real(cfg, spec, steps, realtime=False))
    template = tmp_path / "cusum.toml"
    template.write_text(CONFIG.replace('kind = "threshold"\nk_on = 6.0  # inline comment',
                                       'kind = "cusum"'), encoding="utf-8")
    out, db = tmp_path / "p.toml", tmp_path / "c.db"
    args = argparse.Namespace(config=str(template), source="sim", out=str(out), rest_s=3.0,
                              mvc_reps=2, mvc_s=2.0, no_gui=True, yes=True, patient="P07",
                              db=str(db))
    assert cmd.main(args) == 0
    printed = capsys.readouterr().out
    assert "thresholds" not in printed and "MVC" in printed
    patient = load_config(out)
    assert patient.detector_kind == "cusum" and patient.detector.baseline == "calibrated"
    assert all(m.calibration is not None and m.calibration.mvc for m in patient.muscles)
    from closedloop.io.records import Records

    with Records(db) as r:
        (row,) = r.sessions("P07")
    assert row.exit_code == 0 and all(m.on_threshold_uv is None for m in row.muscles)
