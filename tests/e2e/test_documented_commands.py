"""Every command README.md and docs/*.md show, run (or checked) as a user would meet it.

The commands are read from the Markdown files themselves (:mod:`tests.e2e.docs`), so an
example added tomorrow is covered the day it is written. The rule (the README's
"Examples and synopses"):

* **examples** (fenced ``bash`` blocks) run exactly as written: ``closedloop ...``
  through the installed ``closedloop`` script (``shutil.which``) in a fresh folder that
  holds copies of ``configs/`` and ``recordings/`` and the example inputs the docs name
  (:data:`INPUTS`), stdin closed, stdout and stderr to a pipe; ``python tools/...``
  lines from the repository root (where ``tools/`` and ``PYTHONPATH=.`` make sense),
  with this interpreter. Each must exit 0 (or the code a comment on its line documents,
  ``# exit code 8``), print no traceback and no carriage return (no progress bar into a
  pipe). Only long durations are shortened: ``--duration`` to at most 3 s and
  ``tools/soak.py --minutes`` (60 by default) to 0.1 min;
* ``pip install`` and ``python -m pytest`` lines (how you get here, and this suite) are
  checked, not run: the extra exists, the test paths exist;
* **synopses** (commands in running text and tables) are checked against the command
  line itself: the subcommand and every option they name exist
  (:func:`closedloop.cli.build_parser`, or a tool's ``--help``), and a source spec
  without placeholders parses.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from closedloop.cli import build_parser
from tests.conftest import ROOT
from tests.e2e.docs import Command, doc_files, documented

COMMANDS = documented(ROOT)
EXAMPLES = [c for c in COMMANDS if c.kind == "example"]
SYNOPSES = [c for c in COMMANDS if c.kind == "synopsis"]
#: Longest duration an example runs with (the documented value if shorter).
SHORT = {"--duration": 3.0}
#: tools/soak.py runs this many minutes (its default is 60).
SOAK_MINUTES = "0.1"


def _example_inputs(d: Path) -> None:
    """The files the examples name, besides configs/ and recordings/."""
    from closedloop.analysis.evaluate import write_sim_recording

    write_sim_recording(d / "emg.npz", 10.0, minutes=0.25, seed=3)  # README: detect
    (d / "patients").mkdir()  # first session: "copy it (e.g. patients/p012.toml)"
    shutil.copy(ROOT / "configs" / "biceps_triceps.toml", d / "patients" / "p012.toml")
    (d / "sessions").mkdir()  # first session: the recording of step 5
    shutil.copy(ROOT / "recordings" / "sim_biceps_triceps.xdf",
                d / "sessions" / "p012_2026-11-21.xdf")


INPUTS = ("emg.npz", "patients/p012.toml", "sessions/p012_2026-11-21.xdf")


def _id(c: Command) -> str:
    return f"{c.where} {' '.join(c.argv)[:60]}"


@pytest.fixture
def user_dir(tmp_path) -> Path:
    d = tmp_path / "user"
    d.mkdir()
    shutil.copytree(ROOT / "configs", d / "configs")
    shutil.copytree(ROOT / "recordings", d / "recordings")
    _example_inputs(d)
    return d


def shortened(c: Command) -> list[str]:
    """The command's words with long durations shortened, nothing else changed."""
    words = list(c.argv)
    for i, w in enumerate(words[:-1]):
        if w in SHORT:
            words[i + 1] = f"{min(float(words[i + 1]), SHORT[w]):g}"
    if c.program == "tool" and words[1] == "tools/soak.py":
        if "--minutes" in words:
            words[words.index("--minutes") + 1] = SOAK_MINUTES
        else:
            words += ["--minutes", SOAK_MINUTES]
    return words


def _check_output(c: Command, r: subprocess.CompletedProcess) -> None:
    said = f"{c.where}: {' '.join(r.args)}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n" \
           f"{r.stderr[-3000:]}"
    assert "Traceback (most recent call last)" not in r.stdout + r.stderr, said
    assert r.returncode == c.expected_exit(), said
    assert "\r" not in r.stdout + r.stderr, "a progress bar or status line went into a pipe\n" \
        + said


def _blocks() -> dict[str, list[Command]]:
    """The examples a user types, by fenced block: a block is a script."""
    out: dict[str, list[Command]] = {}
    for c in EXAMPLES:
        if c.program in ("closedloop", "mkdir"):
            out.setdefault(c.block, []).append(c)
    return {b: cs for b, cs in out.items() if any(c.program == "closedloop" for c in cs)}


BLOCKS = _blocks()


@pytest.mark.parametrize("block", sorted(BLOCKS),
                         ids=lambda b: f"{b} {' '.join(BLOCKS[b][0].argv)[:50]}")
@pytest.mark.timeout(600)
def test_closedloop_examples_run_as_written(block: str, user_dir: Path):
    """Each block's commands in order, in one folder, as a user types them (with the files
    its page defines, importable from there: a lab's own add-ons)."""
    script = shutil.which("closedloop")
    assert script, "the closedloop command is not installed: pip install -e '.[test]'"
    page = ROOT / block.rsplit(":", 1)[0]
    for rel, text in doc_files(page).items():
        (user_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (user_dir / rel).write_text(text, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(user_dir), os.environ.get("PYTHONPATH")) if p)
    for c in BLOCKS[block]:
        env = {**os.environ, "PYTHONPATH": path, **c.env}
        words = shortened(c)
        argv = [script, *words[1:]] if c.program == "closedloop" else words
        r = subprocess.run(argv, cwd=user_dir, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=200)
        _check_output(c, r)


@pytest.mark.slow
@pytest.mark.parametrize("c", [c for c in EXAMPLES if c.program == "tool"], ids=_id)
@pytest.mark.timeout(300)
def test_tool_examples_run_shortened(c: Command):
    env = {**os.environ, **c.env}  # PYTHONPATH=. as written, from the repository root
    r = subprocess.run([sys.executable, *shortened(c)[1:]], cwd=ROOT, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=280)
    _check_output(c, r)


@pytest.mark.parametrize(
    "c", [c for c in EXAMPLES if c.program in ("pip", "pytest", "unknown")], ids=_id)
def test_other_examples_are_known_and_point_at_what_exists(c: Command):
    assert c.program != "unknown", (
        f"{c.where}: {c.text!r}: the documentation test does not know how to run this "
        "example; teach tests/e2e (and the README's rule) what it is")
    if c.program == "pip":  # pip install -e '.[test]': the extra exists
        extras = re.findall(r"\[([\w,-]+)\]", " ".join(c.argv))
        pyproject = (ROOT / "pyproject.toml").read_text()
        for extra in (e for group in extras for e in group.split(",")):
            assert re.search(rf"^{extra}\s*=", pyproject, re.M), f"{c.where}: no extra {extra}"
    else:  # python -m pytest [paths]: the paths exist
        for p in (a for a in c.argv[3 if c.argv[0] == "python" else 1:] if
                  not a.startswith("-")):
            assert (ROOT / p.split("::")[0]).exists(), f"{c.where}: {p} does not exist"


# -- synopses --------------------------------------------------------------------------------
PARSER = build_parser()
SUBCOMMANDS = next(a for a in PARSER._actions if hasattr(a, "choices") and a.choices)
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _placeholder(value: str) -> bool:
    """``SPEC``, ``[--x]``, ``<amplifier>``, ``configs/...``: something to fill in."""
    return value.isupper() or bool(re.search(r"[\[\]<>]|\.\.\.", value))


def _options(sub: str) -> set[str]:
    return {s for a in SUBCOMMANDS.choices[sub]._actions for s in a.option_strings}


@functools.cache
def _tool_help(tool: str) -> str:
    r = subprocess.run([sys.executable, tool, "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("c", SYNOPSES, ids=_id)
def test_synopses_name_what_exists(c: Command):
    named = _OPTION.findall(c.text)
    if c.argv == ["closedloop"]:
        return  # the command's name in a sentence
    if c.program == "closedloop":
        assert len(c.argv) > 1 and c.argv[1] in SUBCOMMANDS.choices, (
            f"{c.where}: {c.text!r}: no subcommand {c.argv[1:2]}; there are "
            f"{sorted(SUBCOMMANDS.choices)}")
        known = _options(c.argv[1])
        where = f"closedloop {c.argv[1]}"
    elif c.program == "tool":
        tool = c.argv[1]
        assert (ROOT / tool).is_file(), f"{c.where}: {tool} does not exist"
        known = set(_OPTION.findall(_tool_help(tool)))
        where = tool
    else:  # an option on its own: some subcommand has it
        known = {o for sub in SUBCOMMANDS.choices for o in _options(sub)}
        where = "any closedloop subcommand"
    missing = [o for o in named if o not in known]
    assert not missing, f"{c.where}: {c.text!r}: {missing} not options of {where}"
    words = c.argv
    for i, w in enumerate(words[:-1]):  # a source spec written out in full must parse
        if w == "--source" and not _placeholder(words[i + 1]):
            from closedloop.sources.spec import parse_source_spec

            parse_source_spec(words[i + 1])
