"""No command destroys a file: the output claim, and every command that writes one.

The claim itself is tested on real files (a second claim on the same file, in this
process and in another one). Each command is then run the way a user runs it (through
``closedloop.cli.main``, or the installed script for two sessions at once) against an
existing file, its own input, and a folder: it must refuse with one message naming the
file (and ``--overwrite`` where that would help), and leave the file as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from closedloop.cli import main
from closedloop.errors import ConfigError
from closedloop.io.outfile import claim_output
from tests.conftest import CONFIGS, ROOT

CONFIG = CONFIGS / "biceps_triceps.toml"
RECORDING = ROOT / "recordings" / "sim_biceps_triceps.xdf"
#: A file that may not be written is refused with the config error's exit code, by every
#: command (closedloop run included: see test_run_record_refuses_...).
REFUSED = ConfigError.exit_code


# -- the claim -------------------------------------------------------------------------------
def test_an_existing_file_needs_overwrite_and_is_not_truncated_by_the_claim(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("precious")
    with pytest.raises(ConfigError, match=r"'.*a\.csv' already exists.*--overwrite"):
        claim_output(f)
    with claim_output(f, overwrite=True) as claim:
        assert not claim.created
        assert f.read_text() == "precious"  # replaced only when the command writes
    assert f.read_text() == "precious"


def test_an_output_is_never_an_input_even_with_overwrite(tmp_path):
    src = tmp_path / "in.npz"
    src.write_bytes(b"data")
    (tmp_path / "link.npz").symlink_to(src)
    os.link(src, tmp_path / "hard.npz")
    for same in (src, tmp_path / "link.npz", tmp_path / "hard.npz",
                 tmp_path / "sub" / ".." / "in.npz"):
        with pytest.raises(ConfigError, match="would destroy the input"):
            claim_output(same, overwrite=True, inputs=[("input", src)])
    assert src.read_bytes() == b"data"


def test_folders_empty_names_and_unwritable_places_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        claim_output(tmp_path)
    with pytest.raises(ConfigError, match="is a folder"):
        claim_output(f"{tmp_path}/new/")
    with pytest.raises(ConfigError, match="empty file name"):
        claim_output(" ")
    with pytest.raises(ConfigError, match="NUL"):
        claim_output("a\x00b")
    with pytest.raises(ConfigError, match="cannot write"):
        claim_output(tmp_path / ("x" * 300))  # longer than a file name may be


def test_a_created_file_left_empty_is_removed_a_written_one_kept(tmp_path):
    empty, written = tmp_path / "sub" / "e.xdf", tmp_path / "w.xdf"
    with claim_output(empty) as claim:
        assert claim.created and empty.exists()  # the parent folder was created
    assert not empty.exists()
    with claim_output(written):
        written.write_text("samples")
    assert written.read_text() == "samples"


def test_a_file_being_written_is_refused_to_a_second_claim_in_any_process(tmp_path):
    f = tmp_path / "s.xdf"
    first = claim_output(f)
    try:
        with pytest.raises(ConfigError, match="being written by another closedloop session"):
            claim_output(f, overwrite=True)
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from closedloop.io.outfile import claim_output\n"
             "try:\n    claim_output(sys.argv[1], overwrite=True)\n"
             "except Exception as e:\n    print(e); sys.exit(3)", str(f)],
            capture_output=True, text=True, timeout=60)
        assert other.returncode == 3 and "being written" in other.stdout
    finally:
        first.release()
    with claim_output(f, overwrite=True):  # free again once the first let go
        pass


# -- each command ----------------------------------------------------------------------------
def _npz(path: Path) -> Path:
    from closedloop.analysis.evaluate import write_sim_recording

    return write_sim_recording(path, 20.0, minutes=0.05, seed=1)


def test_detect_never_writes_over_its_input_or_an_existing_file(tmp_path, capsys):
    emg = _npz(tmp_path / "emg.npz")
    before = emg.read_bytes()
    assert main(["detect", str(emg), "--out", str(emg), "--overwrite"]) == REFUSED
    assert "would destroy the input" in capsys.readouterr().err
    assert emg.read_bytes() == before
    out = tmp_path / "events.csv"
    out.write_text("mine\n")
    assert main(["detect", str(emg), "--out", str(out)]) == REFUSED
    err = capsys.readouterr().err
    assert "events.csv' already exists" in err and "--overwrite" in err
    assert out.read_text() == "mine\n"
    assert main(["detect", str(emg), "--out", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("sample,time_s,channel,kind")


def test_calibrate_never_writes_over_its_template(tmp_path, capsys):
    template = tmp_path / "c.toml"
    shutil.copy(CONFIG, template)
    before = template.read_bytes()
    assert main(["calibrate", "--config", str(template), "--out", str(template), "--overwrite",
                 "--no-gui", "--yes"]) == REFUSED
    assert "would destroy the config" in capsys.readouterr().err
    assert template.read_bytes() == before
    patient = tmp_path / "p.toml"
    patient.write_text("# yesterday's calibration\n")
    assert main(["calibrate", "--config", str(template), "--out", str(patient),
                 "--no-gui", "--yes"]) == REFUSED
    assert "p.toml' already exists" in capsys.readouterr().err
    assert patient.read_text() == "# yesterday's calibration\n"


def test_report_never_writes_over_an_existing_file_or_its_recording(tmp_path, capsys):
    rec = shutil.copy(RECORDING, tmp_path / "s.xdf")
    before = Path(rec).read_bytes()
    default = tmp_path / "s.html"  # the default --out
    default.write_text("an earlier report")
    assert main(["report", str(rec)]) == REFUSED
    assert "s.html' already exists" in capsys.readouterr().err
    assert default.read_text() == "an earlier report"
    assert main(["report", str(rec), "--out", str(rec), "--overwrite"]) == REFUSED
    assert "would destroy the recording" in capsys.readouterr().err
    assert Path(rec).read_bytes() == before
    assert main(["report", str(rec), "--overwrite"]) == 0
    assert "<html" in default.read_text().lower()


def test_view_screenshot_refuses_an_existing_file(tmp_path, capsys):
    png = tmp_path / "view.png"
    png.write_bytes(b"an older picture")
    assert main(["view", "--screenshot", str(png), "--duration", "1"]) == REFUSED
    assert "view.png' already exists" in capsys.readouterr().err
    assert png.read_bytes() == b"an older picture"


@pytest.mark.parametrize("case", ["existing", "config", "replayed"])
def test_run_record_refuses_before_any_device_is_opened(tmp_path, capsys, case):
    target = {"existing": tmp_path / "old.xdf", "config": CONFIG,
              "replayed": tmp_path / "replayed.xdf"}[case]
    if case != "config":
        shutil.copy(RECORDING, target)
    before = target.read_bytes()
    argv = ["run", "--config", str(CONFIG), "--record", str(target), "--no-gui", "--quiet",
            "--duration", "1"]
    if case == "replayed":
        argv += ["--source", f"replay:{target}", "--overwrite"]
    elif case == "config":
        argv += ["--overwrite"]
    assert main(argv) == REFUSED
    out, err = capsys.readouterr()
    assert ("already exists" if case == "existing" else "would destroy the") in out
    assert "(0 samples)" in out  # nothing ran
    assert "closedloop run: biceps_triceps on" not in err  # no device was opened
    assert target.read_bytes() == before


def _run(path: Path, *extra: str, duration: float) -> subprocess.Popen:
    return subprocess.Popen(
        [shutil.which("closedloop") or "closedloop", "run", "--config", str(CONFIG),
         "--no-gui", "--quiet", "--duration", str(duration), "--record", str(path), *extra],
        cwd=path.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(180)
def test_a_second_session_recording_to_the_same_file_refuses_while_the_first_goes_on(tmp_path):
    path = tmp_path / "session.xdf"
    first = _run(path, duration=6.0)
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:  # claimed by the first
            time.sleep(0.05)
        for extra in ((), ("--overwrite",)):
            second = _run(path, *extra, duration=1.0)
            out, err = second.communicate(timeout=60)
            assert second.returncode == 2, out + err
            said = "already exists" if not extra else "being written by another"
            assert said in out and "(0 samples)" in out and "Traceback" not in err
            assert first.poll() is None  # the first session goes on
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out + err
    assert "all 12000 present, in order" in out  # 6 s at 2 kHz: nothing lost to the second


@pytest.mark.timeout(180)
def test_a_killed_session_leaves_its_recording_locked_until_it_is_finished(tmp_path):
    """SIGKILL of closedloop (power cut of the program, not of the PC): LabRecorderCLI,
    which holds the file's lock with it, finishes the file (footers included) and only
    then lets another session have it."""
    from closedloop.io.xdf import read_xdf

    path = tmp_path / "session.xdf"
    first = _run(path, duration=30.0)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 50_000):
            time.sleep(0.1)  # recording for a while (LabRecorderCLI writes every 0.5 s)
        assert path.stat().st_size >= 50_000, first.stderr.read() if first.poll() else ""
    finally:
        first.kill()
        first.wait(timeout=30)
    with pytest.raises(ConfigError, match="being written by another"):
        claim_output(path, overwrite=True)  # LabRecorderCLI still has it
    deadline = time.monotonic() + 60
    while True:
        try:
            claim_output(path, overwrite=True).release()
            break
        except ConfigError:
            assert time.monotonic() < deadline, "LabRecorderCLI never let the file go"
            time.sleep(0.2)
    assert read_xdf(path).complete  # footers written: it finished the file


def test_soak_refuses_an_existing_recording(tmp_path, capsys):
    from tests.faults.test_soak import load_tool

    old = tmp_path / "soak.xdf"
    old.write_bytes(b"an earlier soak")
    assert load_tool().main(["--minutes", "0.01", "--record", str(old)]) == 2
    assert "soak.xdf' already exists" in capsys.readouterr().err
    assert old.read_bytes() == b"an earlier soak"
