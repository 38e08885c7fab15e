"""One table of exit codes: the same cause exits with the same code from every command.

Each case runs several commands through the installed ``closedloop`` script (output to
a pipe, as a script calling closedloop meets it) with the same bad input, and asserts
they all exit with the code the error's type carries (:mod:`closedloop.errors`), with
one message and no traceback. The table itself is checked against the exception types
and against the stop-paths table of ``docs/safety.md``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from closedloop.errors import (
    ENDINGS,
    ERRORS,
    EXIT_CODES,
    ConfigError,
    InputError,
    RecordingDamagedError,
)
from tests.conftest import CONFIGS, ROOT

CONFIG = str(CONFIGS / "biceps_triceps.toml")
RECORDING = str(ROOT / "recordings" / "sim_biceps_triceps.xdf")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed


def closedloop(cwd, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("closedloop") or "closedloop"
    return subprocess.run([exe, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=120)


def config_commands(config: str) -> dict[str, list[str]]:
    """Every command that reads a config, given ``config``."""
    return {
        "run": ["run", "--config", config, "--no-gui", "--no-outlets", "--quiet",
                "--duration", "1"],
        "replay": ["replay", RECORDING, "--config", config],
        "stim-test": ["stim-test", "--config", config, "--muscle", "biceps", "--current", "5"],
        "calibrate": ["calibrate", "--config", config, "--out", "p.toml", "--no-gui", "--yes"],
        "detect": ["detect", RECORDING, "--config", config, "--out", "events.csv"],
        "evaluate": ["evaluate", RECORDING, "--detector", config],
    }


def recording_commands(path: str) -> dict[str, list[str]]:
    """Every command that reads a recording, given ``path``."""
    return {
        "run": ["run", "--config", CONFIG, "--source", f"replay:{path}", "--no-gui",
                "--no-outlets", "--quiet", "--duration", "1"],
        "replay": ["replay", path],
        "report": ["report", path, "--out", "r.html"],
        "detect": ["detect", path, "--out", "events.csv"],
        "evaluate": ["evaluate", path],
        "export": ["export", path, "--bids", "bids", "--subject", "01"],
    }


def exits(tmp_path, commands: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Run each command in ``tmp_path``: its exit code and what it said."""
    out = {}
    for name, args in commands.items():
        r = closedloop(tmp_path, *args)
        assert "Traceback" not in r.stderr, f"{name}: {r.stderr[-2000:]}"
        out[name] = (r.returncode, r.stdout + r.stderr)
    return out


@pytest.mark.timeout(600)
def test_the_same_bad_config_exits_2_from_every_command(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[session]\nfs = "fast"\n')
    got = exits(tmp_path, config_commands(str(bad)))
    codes = {name: code for name, (code, _) in got.items()}
    assert codes == dict.fromkeys(codes, ConfigError.exit_code), codes
    for name, (_, said) in got.items():  # the file, the key and what is allowed
        assert "bad.toml" in said and "session.fs" in said, f"{name}: {said[-1000:]}"


@pytest.mark.timeout(600)
def test_the_same_missing_config_exits_2_from_every_command(tmp_path):
    got = exits(tmp_path, config_commands("no-such-config.toml"))
    codes = {name: code for name, (code, _) in got.items()}
    assert codes == dict.fromkeys(codes, ConfigError.exit_code), codes
    for name, (_, said) in got.items():
        assert "no-such-config.toml" in said, f"{name}: {said[-1000:]}"


@pytest.mark.timeout(600)
def test_the_same_missing_recording_exits_7_from_every_command(tmp_path):
    got = exits(tmp_path, recording_commands("no-such-session.xdf"))
    codes = {name: code for name, (code, _) in got.items()}
    assert codes == dict.fromkeys(codes, InputError.exit_code), codes
    for name, (_, said) in got.items():
        assert "no-such-session.xdf" in said, f"{name}: {said[-1000:]}"
    assert not (tmp_path / "events.csv").exists() and not (tmp_path / "r.html").exists()


def test_every_error_type_carries_its_row_of_the_table():
    for cls in ERRORS:
        assert EXIT_CODES[cls.reason] == cls.exit_code, cls
    # the codes kept from before the table: a damaged recording 9, a replay mismatch 8
    assert RecordingDamagedError.exit_code == 9 and EXIT_CODES["mismatch"] == 8
    from closedloop.runtime.replay import EXIT_DAMAGED, EXIT_MISMATCH

    assert (EXIT_MISMATCH, EXIT_DAMAGED) == (EXIT_CODES["mismatch"], EXIT_CODES["damaged"])
    # no two reasons share a code but the two normal ends (the duration, the recording's)
    shared = {c for c in EXIT_CODES.values() if list(EXIT_CODES.values()).count(c) > 1}
    assert shared == {0}, {r: c for r, c in EXIT_CODES.items() if c in shared}
    assert set(ENDINGS) <= set(EXIT_CODES)


def test_the_safety_doc_lists_the_table():
    """docs/safety.md's exit-code table has one row per code, naming its reasons, and
    every reason of the table is in it."""
    text = (ROOT / "docs" / "safety.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ((?:`\w+`(?: / )?)+) \|", text, flags=re.M)
    documented: dict[str, int] = {}
    for code, reasons in rows:
        for reason in re.findall(r"`(\w+)`", reasons):
            assert reason not in documented, f"{reason} documented twice"
            documented[reason] = int(code)
    assert documented == EXIT_CODES
