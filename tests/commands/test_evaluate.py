"""``closedloop evaluate`` as a command: the table and its JSON line, a failing file
reported while the others are scored, and the ``--seeds`` of ``--splice``."""

from __future__ import annotations

import csv
import io
import json
from argparse import Namespace

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
    assert cmd.main(args) == 1  # the broken file fails the run, the others are scored
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
