"""Recordings made before EMG was kept in the source's own format (double64 EMG and
envelope, like the shipped example) and recordings made now (a simulated session:
float32 EMG and envelope) both replay exactly with ``--check``, in large chunks or
small."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.analysis.bench import bench_config_text, record_simulated_session
from closedloop.cli import main
from closedloop.io.xdf import load_session, read_xdf
from closedloop.runtime.replay import check, replay_file

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "recordings" / "sim_biceps_triceps.xdf"


def formats(path: Path) -> dict[str, str]:
    return {s["info"]["name"][0].rsplit("-", 1)[-1]: s["info"]["channel_format"][0]
            for s in read_xdf(path).streams}


@pytest.fixture(scope="module")
def new_recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("formats") / "session.xdf"
    out = record_simulated_session(path, bench_config_text(4, 2000.0), 0.6, seed=3)
    assert out.n_commands > 0 and out.n_events > 0  # onsets and stimulation to check
    return path


def test_a_recording_made_before_replays_exactly(capsys):
    assert formats(SHIPPED)["EMG"] == "double64" and formats(SHIPPED)["Envelope"] == "double64"
    assert main(["replay", str(SHIPPED), "--check", "--quiet"]) == 0
    assert "check passed" in capsys.readouterr().out


def test_a_recording_made_now_keeps_float32_and_replays_exactly(new_recording, capsys):
    assert formats(new_recording)["EMG"] == "float32"
    assert formats(new_recording)["Envelope"] == "float32"
    assert main(["replay", str(new_recording), "--check", "--quiet"]) == 0
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("which, chunk", [("before", 1), ("before", 7), ("now", 7),
                                          ("now", 999)])
def test_both_formats_replay_the_same_in_any_chunks(new_recording, which, chunk):
    path = SHIPPED if which == "before" else new_recording
    session = load_session(path)
    _, _, small = replay_file(str(path), chunk_size=chunk, session=session)
    _, _, large = replay_file(str(path), session=session)  # the default: large chunks
    assert check(session, small) is None and check(session, large) is None
    assert [(e.sample, e.kind) for e in small.events] == [(e.sample, e.kind)
                                                          for e in large.events]


#: A cusum session recorded (30 s, the shipped biceps/triceps config, seed 0) by
#: closedloop at fffcf55, before cusum had ``highpass_hz``: its recorded config names none.
CUSUM_BEFORE = ROOT / "tests" / "data" / "cusum_before_highpass.xdf"


def test_a_cusum_recording_made_before_the_30_hz_edge_replays_exactly(tmp_path, capsys):
    """It replays with the band it ran (``--check`` passes); the same recording under
    today's shipped config (30 Hz edge) decides differently, so the legacy reading is
    what makes the check pass."""
    session = load_session(CUSUM_BEFORE)
    assert "highpass_hz" not in session.metadata["resolved_config"]["detector"]
    assert session.metadata["resolved_config"]["detector"]["kind"] == "cusum"
    assert main(["replay", str(CUSUM_BEFORE), "--check", "--quiet"]) == 0
    assert "check passed" in capsys.readouterr().out
    _, _, today = replay_file(str(CUSUM_BEFORE), config_path=str(
        ROOT / "configs" / "biceps_triceps.toml"), session=session)
    assert check(session, today) is not None


#: A cusum session with knocks (``tests/data/make_cusum_knocks.py ... 100 gate-off``, 30 s)
#: recorded by closedloop at 5825859, before ``rest_skips_ringing``: the block after each
#: artefact hold, where the band-pass rings, entered its rest estimate.
KNOCKS_BEFORE = ROOT / "tests" / "data" / "cusum_knocks_before_ringing.xdf"


def test_a_cusum_recording_made_before_rest_skips_ringing_replays_exactly(tmp_path, capsys):
    """It replays as it ran (``--check`` passes); its own config with today's
    ``rest_skips_ringing = true`` decides an onset a sample apart, so the legacy reading is
    what makes the check pass."""
    session = load_session(KNOCKS_BEFORE)
    detector = session.metadata["resolved_config"]["detector"]
    assert detector["kind"] == "cusum" and "rest_skips_ringing" not in detector
    assert main(["replay", str(KNOCKS_BEFORE), "--check", "--quiet"]) == 0
    assert "check passed" in capsys.readouterr().out
    text = session.config_text
    assert text.count("[detector]") == 1
    today = tmp_path / "today.toml"
    today.write_text(text.replace("[detector]", "[detector]\nrest_skips_ringing = true", 1))
    _, config, out = replay_file(str(KNOCKS_BEFORE), config_path=str(today), session=session)
    assert config.detector.rest_skips_ringing
    assert check(session, out) is not None
