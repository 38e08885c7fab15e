"""Which sessions are running: the listing ``closedloop view`` shows, and the choice.

Every session publishes a ``<name>-Session`` stream (:mod:`closedloop.io.outlets`) whose
header holds its metadata: the patient's pseudonymous id (when given) and when it
started. :func:`running_sessions` reads those headers, with the host each session runs
on, and :func:`choose_session` decides which one the view shows: the only one; with
several, the one the clinician picks from a numbered list in a terminal; without a
terminal, none: the view refuses and says how to choose (``--session NAME``), since a
STOP must never go to the wrong session. No Qt here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pylsl

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from closedloop.discovery import find_streams
from closedloop.errors import ConfigError
from closedloop.io import outlets as lo

#: The XPath predicate of every closedloop session's session stream.
SESSION_PREDICATE = (f"starts-with(source_id,'closedloop.') and "
                     f"type='{lo.STREAMS[lo.ROLE_SESSION][1]}'")


@dataclass(frozen=True)
class RunningSession:
    """One session on the network.

    Attributes
    ----------
    name : str
        The session's name (``closedloop view --session NAME``).
    uid : str
        Its unique id.
    host : str
        The computer it runs on.
    patient : str
        The patient's pseudonymous id ("" when the session has none).
    started : str
        When it started, local time (``YYYY-MM-DD HH:MM``).
    program : str
        The config's name, when the session says.
    """

    name: str
    uid: str
    host: str
    patient: str = ""
    started: str = ""
    program: str = ""

    def describe(self) -> str:
        """One line for the listing."""
        who = f"patient {self.patient}" if self.patient else "no patient id"
        started = f", started {self.started}" if self.started else ""
        program = f" ({self.program})" if self.program else ""
        return f"{self.name}{program}: {who}, on {self.host}{started}"


def _started(meta: dict, created_at: float) -> str:
    """The session's start as local time: its metadata's ``started``, else when its
    stream was created (LSL clock mapped to the wall clock)."""
    text = str(meta.get("started") or "")
    if text:
        try:
            return datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return text
    if created_at > 0 and math.isfinite(created_at):
        wall = time.time() - (pylsl.local_clock() - created_at)
        return datetime.fromtimestamp(wall).astimezone().strftime("%Y-%m-%d %H:%M")
    return ""


def _header(info: pylsl.StreamInfo, timeout: float) -> tuple[dict, str]:
    """The session stream's metadata and config name, from its full header."""
    inlet = pylsl.StreamInlet(info, recover=False)
    try:
        full = inlet.info(timeout=timeout)
    finally:
        inlet.close_stream()
    cl = full.desc().child("closedloop")
    meta: dict = {}
    text = cl.child_value("metadata")
    if text:
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError):
            meta = {}
    if not isinstance(meta, dict):  # another program's stream, or a broken one
        meta = {}
    try:
        program = str(tomllib.loads(cl.child_value("config")).get("name") or "")
    except (tomllib.TOMLDecodeError, TypeError):
        program = ""
    return meta, program


def running_sessions(timeout: float = 1.5) -> list[RunningSession]:
    """The closedloop sessions on the network, oldest first.

    Parameters
    ----------
    timeout : float
        Seconds to look for them (LSL answers within a fraction of a second on one
        computer; a network may take longer).
    """
    found = find_streams(SESSION_PREDICATE, timeout)
    out = []
    for info in sorted(found, key=lambda i: i.created_at()):
        parts = info.source_id().split(".")
        uid = parts[1] if len(parts) >= 3 else ""
        name = info.name()[: -len("-Session")] if info.name().endswith("-Session") \
            else info.name()
        try:
            meta, program = _header(info, timeout=2.0)
        except Exception:  # noqa: BLE001 - a session that went away while listing
            meta, program = {}, ""
        out.append(RunningSession(
            name=name, uid=uid, host=info.hostname(),
            patient=str(meta.get("patient") or ""),
            started=_started(meta, info.created_at()), program=program))
    # the same session seen twice (several network interfaces): once
    unique: dict[str, RunningSession] = {}
    for s in out:
        unique.setdefault(s.uid or s.name, s)
    return list(unique.values())


def choose_session(
    sessions: list[RunningSession],
    *,
    interactive: bool,
    ask: Callable[[str], str] = input,
    say: Callable[[str], object] = print,
) -> RunningSession | None:
    """The session to show.

    Parameters
    ----------
    sessions : list of RunningSession
    interactive : bool
        A clinician can answer in a terminal.
    ask, say : callable
        Read an answer, print a line (the terminal's by default).

    Returns
    -------
    RunningSession or None
        The only session, or the one chosen; None when there is none (the view then
        waits for one).

    Raises
    ------
    ConfigError
        Several sessions and no terminal to ask in (the message lists them and says
        how to choose), or no valid choice given.
    """
    if not sessions:
        return None
    if len(sessions) == 1:
        return sessions[0]
    listing = "\n".join(f"  {k}) {s.describe()}" for k, s in enumerate(sessions, 1))
    if not interactive:
        raise ConfigError(
            f"{len(sessions)} sessions are running; the view shows one (its STOP must "
            f"reach the right session):\n{listing}\nchoose one with "
            f"closedloop view --session NAME (e.g. --session {sessions[0].name})")
    say(f"{len(sessions)} sessions are running:\n{listing}")
    for _ in range(3):
        try:
            answer = ask(f"show which one? [1-{len(sessions)}] ").strip()
        except EOFError:
            break
        if answer.isdigit() and 1 <= int(answer) <= len(sessions):
            return sessions[int(answer) - 1]
        say(f"  {answer!r} is not one of 1-{len(sessions)}")
    raise ConfigError("no session chosen: run closedloop view --session NAME")
