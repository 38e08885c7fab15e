"""Fuzzing every argument of every subcommand: no traceback, no hang.

The cases are generated from the command line itself (:func:`closedloop.cli.build_parser`),
so an option added tomorrow is fuzzed the day it is added: each option that takes a value
gets a table of hostile values chosen by its type (numbers: NaN, infinities, negatives,
zero, overflow, words; files to write: folders, existing files, inputs, impossible names;
any other text: empty, NUL, very long, non-ASCII, folders, binary and non-UTF-8 files...),
in an otherwise valid and quick invocation of its subcommand (:data:`BASE`; a subcommand
without one fails here until it has one). Each case runs in-process through
:func:`closedloop.cli.main` for speed (the listed inputs of ``tests/e2e/test_cli_inputs.py``
go through the installed script). Whatever a case does, its output may not contain a
traceback, it must end with an exit code, and each option's cases must finish within the
test's timeout (a hang fails).
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest

from closedloop import cli
from tests.conftest import CONFIGS, ROOT

#: A valid, quick invocation of each subcommand: positionals and options by their first
#: long name (or dest), then flags. A fuzzed option's value replaces (or adds to) these.
BASE: dict[str, dict] = {
    "detect": {"input": "{emg}", "--out": "{new}.csv"},
    "bench": {"--minutes": "0.002", "--channels": "1"},
    "run": {"--config": "{config}", "--duration": "0.05",
            "flags": ["--no-gui", "--no-outlets", "--quiet"]},
    "stim-test": {"--config": "{config}", "--stimulator": "sim", "--muscle": "biceps",
                  "--current": "5", "--duration": "0.1"},
    "replay": {"inputs": "{xdf}", "--jobs": "1", "flags": ["--quiet"]},
    "evaluate": {"--simulate": "20", "--minutes": "0.05", "--detector": "threshold",
                 "--jobs": "1"},
    "report": {"input": "{xdf}", "--out": "{new}.html"},
    "view": {"--duration": "0.1", "--session": "fuzz-{new}"},
    "stim-receiver": {"--session": "fuzz-{new}", "--wait": "0.2"},
    "history": {"patient": "P01", "--db": "{new}.db"},
    "export": {"inputs": "{xdf}", "--bids": "{new}-bids", "--subject": "01", "--jobs": "1"},
    "calibrate": {"--config": "{config}", "--source": "replay:{xdf}", "--out": "{new}.toml",
                  "--rest-s": "1.5", "--mvc-reps": "1", "--mvc-s": "1",
                  "flags": ["--no-gui", "--yes"]},
}
#: Options that act only together with a flag: fuzzed with it.
WITH = {("bench", "--seconds"): ["--latency"]}

NUMBERS = ["nan", "inf", "-inf", "1e400", "-1", "0", "-0", "1e-300", "abc", "1,5", "0x10",
           "", " ", "\u0661"]  # the last: ARABIC-INDIC DIGIT ONE, which float() accepts
TEXT = ["", " ", "\x00", "-", "nan", "abc", "\u00e4\u20ac\u00fc", "a" * 5000, "?", "{dir}",
        "{binary}", "{latin1}", "{bom}", "{deep}",
        # source and stimulator specs gone wrong (harmless nonsense for other options)
        "lsl:", "lsl:name=nobody?resolve_timeout=-1", "sim?x=1", "sim?seed=-1", "replay:",
        "replay:" + "a" * 300, "brainflow:nope", "rehastim2:", "lsl:a?b"]
OUTPUTS = ["", " ", "\x00", "{dir}", "{dir}/", "{existing}", "a" * 5000, "{config}", "{emg}",
           "{xdf}"]

PARSER = cli.build_parser()
SUBCOMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))


def _key(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0] if longs else action.dest


def _hostile(action: argparse.Action) -> list[str]:
    if action.type is cli.output_file:
        return OUTPUTS
    if action.type in (cli.text, cli.input_file):
        return TEXT
    if action.type is None:  # pragma: no cover - build_parser gives every option a type
        return TEXT + NUMBERS
    return NUMBERS


def _cases() -> list[tuple[str, str]]:
    out = []
    for name, sub in SUBCOMMANDS.choices.items():
        for action in sub._actions:
            if action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                out.append((name, _key(action)))
    return out


def test_every_subcommand_has_a_base_invocation():
    assert set(SUBCOMMANDS.choices) == set(BASE), (
        "add a valid, quick invocation of each new subcommand to BASE")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    from closedloop.analysis.evaluate import write_sim_recording

    shutil.copy(ROOT / "recordings" / "sim_biceps_triceps.xdf", d / "session.xdf")
    shutil.copy(CONFIGS / "biceps_triceps.toml", d / "config.toml")
    (d / "existing.txt").write_text("keep me\n")
    (d / "folder").mkdir()
    (d / "binary.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "latin1.toml").write_bytes("name = \"b\xedceps\"\n".encode("latin-1"))
    (d / "deep.toml").write_text("a = " + "{b = " * 5000 + "1" + "}" * 5000 + "\n")
    (d / "bom.toml").write_bytes(b"\xef\xbb\xbf" + (CONFIGS / "biceps_triceps.toml").read_bytes())
    return {
        "dir": d, "emg": write_sim_recording(d / "emg.npz", 20.0, minutes=0.05, seed=1),
        "xdf": d / "session.xdf", "config": d / "config.toml", "existing": d / "existing.txt",
        "folder": d / "folder", "binary": d / "binary.bin", "latin1": d / "latin1.toml",
        "deep": d / "deep.toml", "bom": d / "bom.toml",
    }


def _fill(value: str, files: dict, new: str) -> str:
    names = {k: str(v) for k, v in files.items() if k != "dir"}
    names["dir"] = str(files["folder"])
    return value.replace("{new}", new).format(**names) if "{" in value else value


def argv(name: str, key: str, value: str, files: dict, new: str) -> list[str]:
    """The base invocation of ``name`` with ``key`` set to ``value``."""
    sub = SUBCOMMANDS.choices[name]
    base = {k: v for k, v in BASE[name].items() if k != "flags"}
    base[key] = value
    args = [name]
    for action in sub._actions:  # positionals first, in the parser's order
        if not action.option_strings and action.dest in base:
            args.append(_fill(base[action.dest], files, new) if action.dest != key else value)
    for k, v in base.items():
        if k.startswith("--"):
            args.append(f"{k}={v if k == key else _fill(v, files, new)}")
    return args + BASE[name].get("flags", []) + WITH.get((name, key), [])


def _short(text: str, n: int = 240) -> str:
    return text if len(text) <= n else text[:n] + f"...({len(text)} chars)"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("name", "key"), _cases())
def test_hostile_values(name, key, files, capsys, monkeypatch):
    monkeypatch.chdir(files["dir"])
    action = next(a for a in SUBCOMMANDS.choices[name]._actions if _key(a) == key)
    failures = []
    for i, raw in enumerate(_hostile(action)):
        value = _fill(raw, files, f"out{i}") if raw.startswith("{") else raw
        args = argv(name, key, value, files, f"{name}-{key.strip('-')}-{i}")
        try:
            code = cli.main(args)
        except SystemExit as exc:  # argparse refused the value (exit 2)
            code = exc.code
        out, err = capsys.readouterr()
        said = out + err
        if "Traceback (most recent call last)" in said or not isinstance(code, int):
            last = [ln for ln in said.splitlines() if ln.strip()][-1:] or [""]
            failures.append(f"closedloop {' '.join(_short(a, 40) for a in args)}\n    "
                            f"exit {code!r}: {_short(last[0])}")
    assert not failures, "\n".join(failures)
    assert files["existing"].read_text() == "keep me\n"  # no case destroyed a file
