"""Outputs on a full disk, and outputs that are not files: a clear message, no part of a
file, nothing existing replaced, never a hang.

A full disk is a real one: a small ``tmpfs`` filled to the last byte (as root; the
tests are skipped where mounting is not allowed, see :mod:`tests.disk`). Each command
runs through the installed ``closedloop`` script, output to a pipe. Before: ``report``,
``detect`` and ``export`` ended in a traceback and ``report`` left the part of its page
that fitted; ``--out`` naming a named pipe with ``--overwrite`` waited for a reader for
ever, and a device (``/dev/full``) was opened for writing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from closedloop.analysis.evaluate import write_sim_recording
from tests.conftest import CONFIGS, ROOT
from tests.disk import fill, own_filesystem

CLOSEDLOOP = shutil.which("closedloop")
RECORDING = ROOT / "recordings" / "sim_biceps_triceps.xdf"

pytestmark = pytest.mark.skipif(CLOSEDLOOP is None, reason="the closedloop script is not "
                                "installed (pip install -e .)")

#: command -> (arguments with {full} the full folder's path, what it writes there)
WRITERS = {
    "report": (["report", "session.xdf", "--out", "{full}/r.html"], "r.html"),
    "detect": (["detect", "session.xdf", "--out", "{full}/e.csv"], "e.csv"),
    "export": (["export", "session.xdf", "--bids", "{full}/bids", "--subject", "01",
                "--jobs", "1"], "bids"),
    "evaluate": (["evaluate", "emg.npz", "--detector", "threshold", "--jobs", "1", "--out",
                  "{full}/ev.csv"], "ev.csv"),
    "replay": (["replay", "session.xdf", "--jobs", "1", "--quiet", "--out", "{full}/rp.csv"],
               "rp.csv"),
}


def _closedloop(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([CLOSEDLOOP, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    shutil.copy(RECORDING, d / "session.xdf")
    shutil.copy(CONFIGS / "biceps_triceps.toml", d / "config.toml")
    write_sim_recording(d / "emg.npz", 20.0, minutes=0.05, seed=1)
    return d


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_full_disk_gets_a_message_and_no_part_of_a_file(tmp_path, inputs, command):
    argv, written = WRITERS[command]
    with own_filesystem(tmp_path / "full", size_kib=256) as full:
        filler = fill(full)
        r = _closedloop([a.replace("{full}", str(full)) for a in argv], inputs)
        left = sorted(str(p.relative_to(full)) for p in full.rglob("*")
                      if p.is_file() and p != filler and p.stat().st_size > 0)
    said = r.stdout + r.stderr
    assert "Traceback" not in said, said
    assert r.returncode == 2, said
    assert "No space left on device" in said and "free disk space" in said.lower(), said
    assert not any(p.startswith(written) for p in left), left  # no part of a file


@pytest.mark.parametrize("target", ["fifo", "/dev/full", "/dev/null"])
def test_an_output_that_is_not_a_file_is_refused_even_with_overwrite(tmp_path, inputs,
                                                                      target):
    if target == "fifo":
        target = str(tmp_path / "pipe.html")
        os.mkfifo(target)
    r = _closedloop(["report", "session.xdf", "--out", target, "--overwrite"], inputs)
    said = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in said, said
    assert "is not a regular file (a device, a pipe or a socket)" in said, said


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_an_output_that_is_a_dangling_link_is_refused_saying_so(tmp_path, inputs, overwrite):
    """It was 'already exists' (there is nothing), and with --overwrite 'keeps being
    replaced by another program'."""
    link = tmp_path / "r.html"
    link.symlink_to(tmp_path / "gone" / "r.html")
    r = _closedloop(["report", "session.xdf", "--out", str(link), *overwrite], inputs)
    said = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in said, said
    assert "is a symbolic link to" in said and "which does not exist" in said, said
    assert link.is_symlink() and not (tmp_path / "gone").exists()
