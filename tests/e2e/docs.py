"""The commands README.md and docs/*.md show, read from the Markdown itself.

The rule (stated in the README, "Examples and synopses"):

* a line of a fenced ``bash`` block is an **example**: it runs on any machine as
  written. Lines are joined at a trailing backslash; ``#`` starts a comment; ``&&`` and
  ``;`` separate commands. Each command is classified by its program:
  ``closedloop ...`` and ``[VAR=value ...] python tools/NAME.py ...`` are run;
  ``pip install ...`` and ``python -m pytest ...`` (how you get there, and the suite
  itself) are checked, not run; anything else is unknown, which the test refuses (it
  must learn what to do with it);
* a command in backticks in running text or a table is a **synopsis**: ``closedloop
  SUBCOMMAND [...]``, an option such as ``--source SPEC`` or a tool line; its
  subcommand and every option it names must exist.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE_SHELLS = ("bash", "sh", "shell")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w-]*)")
_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)", re.S)
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Command:
    """One documented command.

    Attributes
    ----------
    where : str
        ``FILE:LINE`` of the command in the docs.
    text : str
        The command as written (one line).
    argv : list of str
        Its words, without leading ``VAR=value`` assignments.
    env : dict of str to str
        Those assignments.
    kind : str
        ``example`` (fenced) or ``synopsis`` (inline).
    comment : str
        A comment on the same line (examples), e.g. ``# exit code 8``.
    block : str
        ``FILE:LINE`` of the fenced block an example is in: a block is a script, its
        commands run in order in one folder (a later one may use what an earlier made).
    """

    where: str
    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    kind: str = "example"
    comment: str = ""
    block: str = ""

    @property
    def program(self) -> str:
        """``closedloop``, ``tool`` (python tools/...), ``pip``, ``pytest`` or ``unknown``."""
        a = self.argv
        if not a:
            return "unknown"
        if a[0] == "closedloop":
            return "closedloop"
        if a[0] == "pip" or a[:3] == ["python", "-m", "pip"]:
            return "pip"
        if a[:3] == ["python", "-m", "pytest"] or a[0] == "pytest":
            return "pytest"
        if a[0] == "python" and len(a) > 1 and a[1].startswith("tools/"):
            return "tool"
        if a[0] == "mkdir":  # a folder the next commands write into
            return "mkdir"
        return "unknown"

    def expected_exit(self) -> int:
        """0, or the code a comment on the line documents (``# exit code 8``)."""
        m = re.search(r"exits? (?:with )?(?:code )?(\d+)", self.comment)
        return int(m.group(1)) if m else 0


def _split(where: str, line: str, comment: str, block: str = "") -> list[Command]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    words = list(lexer)
    out, current = [], []
    for w in [*words, "&&"]:
        if w in ("&&", ";"):
            if current:
                env = {}
                while current and _ENV.match(current[0]):
                    k, _, v = current.pop(0).partition("=")
                    env[k] = v
                out.append(Command(where, line, current, env, "example", comment, block))
            current = []
        elif set(w) <= set("|&;"):
            raise ValueError(f"{where}: {line!r}: pipes and background jobs are not run by "
                             "the documentation test; write the command on its own")
        else:
            current.append(w)
    return out


def _strip_comment(line: str) -> tuple[str, str]:
    """The line without its ``#`` comment (outside quotes), and the comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands(path: Path, root: Path) -> list[Command]:
    """Every example and synopsis of one Markdown file."""
    rel = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Command] = []
    prose: list[str] = []  # the text outside fences, fences blanked (line numbers kept)
    fence, lang, pending, start, block = None, "", "", 0, ""
    for n, line in enumerate(lines, 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence, lang = m.group(2), m.group(3).lower()
            block = f"{rel}:{n}"
            prose.append("")
            continue
        if fence is not None:
            prose.append("")
            if line.strip().startswith(fence[:3]) and line.strip().strip(fence[0]) == "":
                fence = None
                continue
            if lang in RUNNABLE_SHELLS:
                body, comment = _strip_comment(line)
                if pending:
                    body = pending + " " + body.strip()
                else:
                    start = n
                if body.endswith("\\"):
                    pending = body[:-1].rstrip()
                    continue
                pending = ""
                if body.strip():
                    out.extend(_split(f"{rel}:{start}", body.strip(), comment, block))
            continue
        prose.append(line)
    text = "\n".join(prose)
    for m in _SPAN.finditer(text):
        span = " ".join(m.group(1).split())
        first = span.split(" ", 1)[0]
        if first == "closedloop" or span.startswith("--") or "python tools/" in span:
            line_no = text.count("\n", 0, m.start()) + 1
            try:
                words = shlex.split(span)
            except ValueError:
                words = span.split()
            env = {}
            while words and _ENV.match(words[0]):
                k, _, v = words.pop(0).partition("=")
                env[k] = v
            out.append(Command(f"{rel}:{line_no}", span, words, env, "synopsis"))
    return out


def documented(root: Path) -> list[Command]:
    """Every command of README.md and docs/*.md."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [c for f in files for c in commands(f, root)]


_FILE = re.compile(r"^\s*(?:#|//)\s*file:\s*(\S+)\s*$")


def doc_files(path: Path) -> dict[str, str]:
    """The files a page defines: every fenced block whose first line is ``# file: PATH``
    (its whole text, that line included, is the file). The examples of that page run in a
    folder holding them."""
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group(2)
        body = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[:3])
                                       and lines[i].strip().strip(fence[0]) == ""):
            body.append(lines[i])
            i += 1
        i += 1
        first = _FILE.match(body[0]) if body else None
        if first:
            out[first.group(1)] = "\n".join(body) + "\n"
    return out
