"""The example session in recordings/ replays through the exact pipeline."""

from pathlib import Path

from closedloop.cli import main

ROOT = Path(__file__).resolve().parents[2]
REC = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def test_replay_check_passes_with_the_recorded_config(capsys):
    assert main(["replay", str(REC), "--check", "--quiet"]) == 0
    assert "check passed" in capsys.readouterr().out


def test_replay_check_fails_with_another_config(tmp_path, capsys):
    cfg = (ROOT / "configs" / "biceps_triceps.toml").read_text()
    changed = tmp_path / "k5.toml"
    changed.write_text(cfg.replace("h_nats = 18.0", "h_nats = 9.0"))
    assert main(["replay", str(REC), "--check", "--quiet", "--config", str(changed)]) == 8
    assert "CHECK FAILED" in capsys.readouterr().out


def test_many_files_replay_in_parallel_with_the_same_verdicts(tmp_path, capsys):
    import shutil

    files = []
    for i in range(3):
        files.append(tmp_path / f"copy{i}.xdf")
        shutil.copy(REC, files[-1])
    argv = ["replay", *map(str, files), "--check", "--quiet"]
    assert main([*argv, "--jobs", "2"]) == 0
    parallel = capsys.readouterr().out.splitlines()
    assert main([*argv, "--jobs", "1"]) == 0
    serial = capsys.readouterr().out.splitlines()
    strip = [ln.split(" replayed in ")[0] if " replayed in " in ln else ln for ln in serial]
    assert [ln.split(" replayed in ")[0] if " replayed in " in ln else ln
            for ln in parallel] == strip  # same files, same order, same verdicts
    assert sum("check passed" in ln for ln in parallel) == 3
    # one bad file among good ones: the batch fails, the others still pass
    (tmp_path / "bad.xdf").write_bytes(b"not an xdf file")
    assert main(["replay", str(files[0]), str(tmp_path / "bad.xdf"), "--check", "--quiet"]) != 0
    out = capsys.readouterr().out
    assert "check passed" in out and "bad.xdf" in out


def test_the_recording_keeps_every_resolved_setting(monkeypatch, capsys):
    """The file holds the settings as the session resolved them, defaults included: a
    default changed since (here the noise-floor tracker's block and history, which the
    config file does not set) does not change what the replay decides; the config text
    alone would."""
    from closedloop.config.signal import DetectorSettings
    from closedloop.io.xdf import load_session

    session = load_session(REC)
    resolved = session.metadata["resolved_config"]["detector"]
    assert "block_ms" not in session.config_text and "history_s" not in session.config_text
    assert (resolved["block_ms"], resolved["history_s"]) == \
        (DetectorSettings.block_ms, DetectorSettings.history_s)
    monkeypatch.setattr(DetectorSettings, "block_ms", 40.0)
    monkeypatch.setattr(DetectorSettings, "history_s", 1.0)
    assert main(["replay", str(REC), "--check", "--quiet"]) == 0
    assert "check passed" in capsys.readouterr().out
