"""No output over an input, not even with ``--overwrite``: every command, every input.

Each case ran through the installed ``closedloop`` script and replaced the input with its
output: the recording or the config with a results table (``replay``, ``evaluate``),
a recording inside an evaluated folder, the labels, and the patient record (all
sessions of all patients) with a patient config (``calibrate``) or a recording
(``run``), and the file a BrainFlow playback board reads. Now each is refused before
any work, exit 2, and the input is unchanged.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from closedloop.analysis.evaluate import write_sim_recording
from tests.conftest import CONFIGS, ROOT

CLOSEDLOOP = shutil.which("closedloop")

pytestmark = pytest.mark.skipif(CLOSEDLOOP is None, reason="the closedloop script is not "
                                "installed (pip install -e .)")

#: case -> (arguments, the input they name as the output)
CASES = {
    "replay --out the recording": (["replay", "rec.xdf", "--jobs", "1", "--quiet", "--out",
                                    "rec.xdf", "--format", "csv"], "rec.xdf"),
    "replay --out its --config": (["replay", "rec.xdf", "--config", "config.toml", "--jobs",
                                   "1", "--quiet", "--out", "config.toml", "--format", "csv"],
                                  "config.toml"),
    "evaluate --out the recording": (["evaluate", "emg.npz", "--detector", "threshold",
                                      "--jobs", "1", "--out", "emg.npz", "--format", "csv"],
                                     "emg.npz"),
    "evaluate --out a recording of its folder": (["evaluate", "data", "--detector",
                                                  "threshold", "--jobs", "1", "--out",
                                                  "data/emg.npz", "--format", "csv"],
                                                 "data/emg.npz"),
    "evaluate --out its labels": (["evaluate", "emg.npz", "--labels", "labels.csv",
                                   "--detector", "threshold", "--jobs", "1", "--out",
                                   "labels.csv"], "labels.csv"),
    "calibrate --out the patient record": (["calibrate", "--config", "config.toml", "--out",
                                            "sessions.db", "--db", "sessions.db", "--no-gui",
                                            "--yes"], "sessions.db"),
    "calibrate --out its replayed recording": (["calibrate", "--config", "config.toml",
                                                "--source", "replay:rec.xdf", "--out",
                                                "rec.xdf", "--no-gui", "--yes"], "rec.xdf"),
    "run --record the patient record": (["run", "--config", "config.toml", "--no-gui",
                                         "--quiet", "--duration", "1", "--patient", "P01",
                                         "--db", "sessions.db", "--record", "sessions.db"],
                                        "sessions.db"),
    "run --record its BrainFlow playback file": (
        ["run", "--config", "by_index.toml", "--no-gui", "--quiet", "--duration", "1",
         "--source", "brainflow:playback?file=playback.csv&master_board=synthetic",
         "--record", "playback.csv"], "playback.csv"),
}


@pytest.fixture
def folder(tmp_path):
    shutil.copy(ROOT / "recordings" / "sim_biceps_triceps.xdf", tmp_path / "rec.xdf")
    shutil.copy(CONFIGS / "biceps_triceps.toml", tmp_path / "config.toml")
    write_sim_recording(tmp_path / "emg.npz", 20.0, minutes=0.05, seed=1)
    (tmp_path / "data").mkdir()
    shutil.copy(tmp_path / "emg.npz", tmp_path / "data" / "emg.npz")
    (tmp_path / "labels.csv").write_text("sample,channel\n100,biceps\n")
    (tmp_path / "by_index.toml").write_text(  # the synthetic board's channels by index
        (CONFIGS / "biceps_triceps.toml").read_text()
        .replace('channel = "biceps"', "channel = 0").replace('channel = "triceps"',
                                                               "channel = 1"))
    (tmp_path / "playback.csv").write_text("\n".join("\t".join(["0.0"] * 32)
                                                     for _ in range(2000)) + "\n")
    r = subprocess.run([CLOSEDLOOP, "run", "--config", "config.toml", "--no-gui", "--quiet",
                        "--no-outlets", "--duration", "1", "--patient", "P01", "--db",
                        "sessions.db"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp_path


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(CASES))
def test_an_output_naming_an_input_is_refused_even_with_overwrite(folder, case):
    argv, victim = CASES[case]
    kept = (folder / victim).read_bytes()
    r = subprocess.run([CLOSEDLOOP, *argv, "--overwrite"], cwd=folder, capture_output=True,
                       text=True, timeout=150)
    said = r.stdout + r.stderr
    assert "Traceback" not in said, said
    assert r.returncode == 2, said
    assert "would destroy the" in said and "--overwrite never allows this" in said, said
    assert (folder / victim).read_bytes() == kept
