"""Bad input on the command line: one clear message and a non-zero exit, never a traceback
and never a hang.

Every input here was found to end in a traceback or a hang; each runs through the
installed ``closedloop`` script, output to a pipe, as a user would meet it. The message
must say what is wrong (the words checked) and the exit code must not be 0.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from closedloop.io.xdfwrite import XdfWriter, channels_desc, stream_header_xml
from tests.conftest import CONFIGS, ROOT

CONFIG = str(CONFIGS / "biceps_triceps.toml")
RUN = ["run", "--config", CONFIG, "--no-gui", "--no-outlets", "--quiet"]


def _inputs(d):
    """The hostile files the cases name, written into ``d``."""
    (d / "latin1.toml").write_bytes("name = \"bíceps\"\n".encode("latin-1"))
    (d / "bom.toml").write_bytes(b"\xef\xbb\xbf" + (CONFIGS / "biceps_triceps.toml").read_bytes())
    (d / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "folder").mkdir()
    rng = np.random.default_rng(0)
    np.savetxt(d / "emg.txt", rng.normal(0, 1e-5, (2000, 2)))
    stamps = np.cumsum(rng.uniform(2e-4, 1e-3, 2000))  # an irregular-rate "EMG" stream
    with XdfWriter(d / "irregular.xdf") as w:
        w.add_stream(1, stream_header_xml("amp", "EMG", 2, 0.0, "float32",
                                          desc=channels_desc(("a", "b"))))
        w.samples(1, rng.normal(0, 1e-5, (2000, 2)).astype(np.float32), stamps)
    shutil.copy(ROOT / "recordings" / "sim_biceps_triceps.xdf", d / "session.xdf")
    (d / "zero.npz").write_bytes(b"")
    np.savez(d / "fs_array.npz", emg=rng.normal(0, 1e-5, (2000, 2)), fs=np.ones(3))
    np.savez(d / "scalar.npz", emg=np.array(1.0), fs=2000.0)
    np.savez(d / "two.npz", emg=rng.normal(0, 1e-5, (2000, 2)), fs=2000.0,
             channels=np.array(["a", "b"]))
    (d / "huge_onset.csv").write_text("sample,channel\n" + "9" * 40 + ",a\n")
    (d / "gap_reversed.toml").write_text(
        (CONFIGS / "biceps_triceps.toml").read_text().replace("gap_s = [4.0, 8.0]",
                                                               "gap_s = [8.0, 4.0]"))
    (d / "empty.db").write_bytes(b"")


CASES = {
    "non-UTF-8 config": (["run", "--config", "latin1.toml", "--no-gui"], "not UTF-8"),
    "BOM-prefixed config": (["run", "--config", "bom.toml", "--no-gui"], "byte-order mark"),
    "5000-deep TOML": (["run", "--config", "deep.toml", "--no-gui"], "nested too deeply"),
    "--duration nan": ([*RUN, "--duration", "nan"], "not a number of seconds > 0"),
    "--duration 0": ([*RUN, "--duration", "0"], "not a number of seconds > 0"),
    "--duration -5": ([*RUN, "--duration=-5"], "not a number of seconds > 0"),
    "--seed -1": ([*RUN, "--seed=-1", "--duration", "1"], "not a whole number >= 0"),
    "--record a folder": ([*RUN, "--record", "folder", "--duration", "1"], "is a folder"),
    "detect --fs 0": (["detect", "emg.txt", "--out", "e.csv", "--fs", "0"], "sampling rate"),
    "detect --fs nan": (["detect", "emg.txt", "--out", "e.csv", "--fs", "nan"],
                        "sampling rate"),
    "detect --columns a": (["detect", "emg.txt", "--out", "e.csv", "--fs", "1000", "--columns",
                            "a"], "column numbers"),
    "report --out a folder": (["report", "session.xdf", "--out", "folder"], "is a folder"),
    "report on an irregular-rate stream": (["report", "irregular.xdf", "--out", "r.html"],
                                           "irregular rate"),
    "evaluate --simulate abc": (["evaluate", "--simulate", "abc"], "SNRs in dB"),
    "lsl resolve_timeout=-1": ([*RUN, "--source", "lsl:name=nobody?resolve_timeout=-1"],
                               "resolve_timeout='-1' must be a number > 0"),
    "an empty --source": ([*RUN, "--source", "", "--duration", "1"], "is empty"),
    "detect a zero-byte .npz": (["detect", "zero.npz", "--out", "e.csv"],
                                "cannot read as .npz"),
    "detect an .npz whose fs is an array": (["detect", "fs_array.npz", "--out", "e.csv"],
                                            "'fs' is an array of shape (3,)"),
    "detect a 0-d emg": (["detect", "scalar.npz", "--out", "e.csv"], "'emg' has shape ()"),
    "evaluate a 40-digit onset": (["evaluate", "two.npz", "--labels", "huge_onset.csv",
                                   "--detector", "threshold", "--jobs", "1"],
                                  "is outside the recording"),
    "[sim] gap_s reversed": ([*RUN[:1], "--config", "gap_reversed.toml", *RUN[3:],
                              "--duration", "1"], "sim.gap_s = [8.0, 4.0] is not allowed"),
    "history of an empty file": (["history", "P01", "--db", "empty.db"], "is empty"),
    "--detector with a word in a list": (["evaluate", "two.npz", "--detector",
                                          "cusum:ratios=2/abc"],
                                         "ratios = [2.0, 'abc'] is not allowed"),
    "evaluate --splice --out": (["evaluate", "--splice", "--out", "splice.csv"],
                                "--out and --format do not apply to it"),
    "--detector with a key twice": (["evaluate", "two.npz", "--detector",
                                     "cusum:h_nats=10,h_nats=20"], "'h_nats' is given twice"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    _inputs(d)
    return d


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_message(workdir, case):
    argv, words = CASES[case]
    script = shutil.which("closedloop")
    assert script, "the closedloop command is not installed (pip install -e .)"
    r = subprocess.run([script, *argv], cwd=workdir, capture_output=True, text=True,
                       timeout=60)  # a hang (as resolve_timeout=-1 was) fails here
    said = r.stdout + r.stderr
    assert "Traceback" not in said, said
    assert r.returncode != 0, said
    assert words in said, said
