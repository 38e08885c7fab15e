"""The example session in recordings/ replays through the exact pipeline."""

from pathlib import Path

from closedloop.cli import main

ROOT = Path(__file__).resolve().parents[1]
REC = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def test_replay_check_passes_with_the_recorded_config(capsys):
    assert main(["replay", str(REC), "--check", "--quiet"]) == 0
    assert "check passed" in capsys.readouterr().out


def test_replay_check_fails_with_another_config(tmp_path, capsys):
    cfg = (ROOT / "configs" / "biceps_triceps.toml").read_text()
    changed = tmp_path / "k5.toml"
    changed.write_text(cfg.replace("k_on = 6.0", "k_on = 3.0"))
    assert main(["replay", str(REC), "--check", "--quiet", "--config", str(changed)]) == 8
    assert "CHECK FAILED" in capsys.readouterr().out
