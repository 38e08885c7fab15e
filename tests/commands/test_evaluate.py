"""``closedloop evaluate`` as a command: the table and its JSON line, a failing file
reported while the others are scored (once, whatever the number of detectors), labels
that name none of the recordings given, and the ``--seeds`` of ``--splice``."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from argparse import Namespace

import numpy as np
import pytest

from closedloop.analysis import evaluate as ev
from closedloop.analysis import splice
from closedloop.commands import evaluate as cmd
from closedloop.commands.evaluate import parse_seeds
from closedloop.errors import InputError


def test_main_prints_the_table_and_a_json_last_line(capsys):
    args = Namespace(inputs=[], detectors=["threshold", "reference"], labels=None, fs=None,
                     jobs=1, json=True, simulate="20,-3", minutes=1.0, seed=4)
    assert cmd.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "== simulated =="
    assert any(line.startswith("sim_-3dB_s4") for line in out)
    rows = json.loads(out[-1])["rows"]
    ref = [r for r in rows if r["detector"] == "reference" and r["recording"] != "overall"]
    assert [r["sensitivity"] for r in ref] == [1.0, 1.0]
    assert all(r["latency_median_ms"] == 0.0 for r in ref)
    with pytest.raises(InputError, match="nothing to evaluate"):
        cmd.main(Namespace(inputs=[], detectors=None, labels=None, fs=None, jobs=1, json=False,
                          simulate=None, minutes=None, seed=None))


def test_folder_inputs_and_a_failing_file_reported(tmp_path, capsys) -> None:
    d = tmp_path / "study"
    (d / "p1").mkdir(parents=True)
    (d / "p2").mkdir()
    ev.write_sim_recording(d / "p1" / "s.npz", 20.0, minutes=0.5, seed=1)
    ev.write_sim_recording(d / "p2" / "s.npz", 20.0, minutes=0.5, seed=2)
    (d / "p2" / "broken.npz").write_bytes(b"not a zip")
    (d / "notes.txt").write_text("not a recording (text files need --fs)")
    assert [p.relative_to(d).as_posix() for p in ev.folder_files(d)] == \
        ["p1/s.npz", "p2/broken.npz", "p2/s.npz"]
    args = Namespace(inputs=[str(d)], detectors=["reference"], labels=None, fs=None, jobs=1,
                     json=False, simulate=None, minutes=None, seed=None, format="csv",
                     out=None, bootstrap=100)
    # the broken file fails the run with its code (unreadable: 7), the others are scored
    assert cmd.main(args) == InputError.exit_code
    captured = capsys.readouterr()
    table = list(csv.DictReader(io.StringIO(captured.out)))
    assert [(r["recording"], r["group"]) for r in table] == [
        ("p1/s.npz", "files"), ("p2/s.npz", "files"), ("overall", "files"),
        ("p2/broken.npz", "failed")]
    assert "cannot read as .npz" in table[-1]["error"]
    assert "p2/broken.npz (reference) failed" in captured.err
    assert float(table[2]["sensitivity"]) == 1.0 and table[2]["ci_unit"] == "recordings"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no recordings in this folder"):
        ev.evaluate([tmp_path / "empty"], ["reference"])


def test_seeds():
    assert parse_seeds("100-102,7") == (100, 101, 102, 7)
    assert parse_seeds(None) == splice.REPORT_SEEDS
    with pytest.raises(InputError, match="seeds"):
        parse_seeds("a-b")
    with pytest.raises(InputError, match="seeds"):
        parse_seeds("5-2")


def closedloop(cwd, *args: str) -> subprocess.CompletedProcess:
    """The installed command, output to a pipe."""
    return subprocess.run(["closedloop", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def two_channels(path, **arrays) -> None:
    """An .npz recording of channels a, b: 24000 samples at 2 kHz (12 s)."""
    np.savez(path, emg=np.random.default_rng(1).normal(0, 1, (24000, 2)), fs=2000.0,
             channels=np.array(["a", "b"]), **{k: np.array(v) for k, v in arrays.items()})


def test_labels_that_name_none_of_the_recordings_given_are_refused(tmp_path):
    """Labels whose 'file' column names other recordings gave every detector 0 references
    and exit 0, in silence: refused (exit 7, as unusable input), listing what the labels
    name and what was given; labels without a 'file' column for simulated recordings
    only (which bring their own references) too."""
    two_channels(tmp_path / "monday.npz")
    (tmp_path / "labels.csv").write_text(
        "sample,channel,file\n1000,a,tuesday.npz\n5000,b,wednesday.npz\n")
    r = closedloop(tmp_path, "evaluate", "monday.npz", "--labels", "labels.csv", "--jobs", "1",
                   "--detector", "threshold")
    assert r.returncode == InputError.exit_code, r.stdout + r.stderr
    assert "its 'file' column names tuesday.npz, wednesday.npz: none of the recordings " \
           "given (monday.npz)" in r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    (tmp_path / "any.csv").write_text("sample,channel\n1000,biceps\n")
    r = closedloop(tmp_path, "evaluate", "--simulate", "10", "--minutes", "0.1", "--labels",
                   "any.csv", "--jobs", "1", "--detector", "threshold")
    assert r.returncode == InputError.exit_code, r.stdout + r.stderr
    assert "any.csv: --labels gives the onsets of recording files, and none is given" in \
        r.stderr and r.stdout == ""
    # the labels name one of the recordings: both scored, the other with no reference
    two_channels(tmp_path / "tuesday.npz")
    r = closedloop(tmp_path, "evaluate", "monday.npz", "tuesday.npz", "--labels", "labels.csv",
                   "--jobs", "1", "--detector", "reference", "--format", "csv")
    assert r.returncode == 0, r.stderr
    refs = {row["recording"]: row["n_reference"] for row in csv.DictReader(io.StringIO(r.stdout))}
    assert refs["monday.npz"] == "0" and refs["tuesday.npz"] == "1"


def test_a_refused_recording_is_said_once_whatever_the_number_of_detectors(tmp_path):
    two_channels(tmp_path / "monday.npz")
    (tmp_path / "labels.csv").write_text("sample,channel\n99999999,a\n")
    r = closedloop(tmp_path, "evaluate", "monday.npz", "--labels", "labels.csv", "--jobs", "1",
                   "--detector", "threshold", "--detector", "tkeo", "--detector", "cusum")
    assert r.returncode == InputError.exit_code, r.stderr  # its labels cannot be used
    assert r.stderr.count("onset 99999999 is outside the recording") == 1, r.stderr
    assert "monday.npz (threshold, tkeo, cusum) failed: labels.csv:2: onset 99999999" in \
        r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("bad", "shown"), [("sample", ("onset 24000", "truth_samples[0] = 24000")),
                       ("channel", ("channel 'zz'", "truth_channels[0] = 'zz'"))])
def test_labels_and_a_stored_truth_are_refused_in_the_same_words(tmp_path, bad, shown):
    """An onset beyond the end (or on a channel the recording lacks) in a labels CSV and in
    an .npz's stored truth: one check, so one sentence but for how each file gives it."""
    sample, channel = (24000, "a") if bad == "sample" else (100, "zz")
    two_channels(tmp_path / "labelled.npz")
    (tmp_path / "labels.csv").write_text(f"sample,channel\n{sample},{channel}\n")
    two_channels(tmp_path / "stored.npz", truth_samples=[sample], truth_channels=[channel])
    said = []
    for args in (["labelled.npz", "--labels", "labels.csv"], ["stored.npz"]):
        r = closedloop(tmp_path, "evaluate", *args, "--jobs", "1", "--detector", "threshold")
        assert r.returncode == InputError.exit_code and "Traceback" not in r.stderr, r.stderr
        said.append(r.stderr.strip().splitlines()[-1].split(" failed: ", 1)[1])
    expected = ("is outside the recording; expected a sample index from 0 to 23999 (0 to "
                "11.9995 s at 2000 Hz)" if bad == "sample" else
                "is not a channel of the recording (its channels: a, b; or '*' for any channel)")
    assert said == [f"labels.csv:2: {shown[0]} {expected}", f"stored.npz: {shown[1]} {expected}"]


def test_a_batch_with_an_unreadable_recording_exits_with_its_code_and_scores_the_rest(tmp_path):
    """As ``replay`` and ``export`` do (docs/safety.md): the good recording is scored, the
    broken one said, and the exit code is the broken one's (7: it cannot be read), not 1."""
    two_channels(tmp_path / "good.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    r = closedloop(tmp_path, "evaluate", "good.npz", "broken.npz", "--jobs", "1",
                   "--detector", "threshold", "--format", "csv")
    assert r.returncode == InputError.exit_code, r.stdout + r.stderr
    rows = {row["recording"]: row for row in csv.DictReader(io.StringIO(r.stdout))}
    assert rows["good.npz"]["error"] == "" and rows["broken.npz"]["error"] != ""
    assert r.stderr.count("broken.npz (threshold) failed: ") == 1 and "Traceback" not in r.stderr
