"""docs/research.md's worked example, run exactly as written (installed command, pipes)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess

from tests.conftest import ROOT

DOC = ROOT / "docs" / "research.md"


def worked_example() -> list[str]:
    """The command lines of the page's first ``bash`` block."""
    block = re.search(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, f"{DOC} has no bash block"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_the_worked_example_runs_as_written(tmp_path) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the paths the page uses
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for line in worked_example():
        r = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
    md = (tmp_path / "results.md").read_text()
    assert "| s1.xdf | recorded |" in md and "| s2.xdf | tkeo |" in md
    assert "percentile bootstrap" in md
    rows = list(csv.DictReader((tmp_path / "compare.csv").open(newline="")))
    assert [(r["recording"], r["config"]) for r in rows] == [
        ("sessions/s1.xdf", "recorded"), ("sessions/s1.xdf", "strength.toml"),
        ("sessions/s2.xdf", "recorded"), ("sessions/s2.xdf", "strength.toml"),
        ("overall", "recorded"), ("overall", "strength.toml")]
    assert all(r["identical"] == "True" for r in rows if r["config"] == "recorded")
    assert all(float(r["sensitivity"]) >= 0.0 for r in rows)  # every recording scored
    emg = tmp_path / "bids" / "sub-01" / "ses-1" / "emg"
    assert sorted(p.name for p in emg.glob("*_emg.bdf")) == [
        "sub-01_ses-1_task-bicepstriceps_run-1_emg.bdf",
        "sub-01_ses-1_task-bicepstriceps_run-2_emg.bdf"]
    assert json.loads((tmp_path / "bids" / "dataset_description.json").read_text())["Name"]
    # the dataset read back: detect on a BDF gives the events of its recording, and
    # evaluate on the dataset the figures of the two recordings, row for row
    r = subprocess.run(["closedloop", "detect", "sessions/s1.xdf", "--out", "s1_xdf.csv"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s1_events.csv").read_bytes() == (tmp_path / "s1_xdf.csv").read_bytes()

    def figures(md: str) -> list[list[str]]:
        """The table rows of a results page, without the recording's name."""
        return [line.split("|")[2:] for line in md.splitlines()
                if line.startswith("| ") and not line.startswith("| recording")]

    bids_md = (tmp_path / "bids_results.md").read_text()
    assert "| sub-01/ses-1/emg/sub-01_ses-1_task-bicepstriceps_run-2_emg.bdf | tkeo |" in bids_md
    assert len(figures(md)) == 6 and figures(bids_md) == figures(md)
