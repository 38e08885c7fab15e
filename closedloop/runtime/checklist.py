"""The safety checklist asked before the first stimulation of a session.

Every question must be answered "yes" (the safe answer) or the session does not
stimulate. Three ways to answer, one record (:class:`ChecklistAnswers`, which the loop
puts into the session record with :meth:`ChecklistAnswers.to_dict`):

* :func:`ask_checklist` on the terminal (any answer but yes refuses);
* the Qt dialog in :mod:`closedloop.view.checklist_dialog`;
* :func:`confirmed_by_flag` for ``--confirm-checklist``: the operator states that the
  checklist was done outside closedloop; the record says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from closedloop.errors import SafetyError


@dataclass(frozen=True)
class Question:
    """One checklist item; ``yes`` is the safe answer."""

    key: str
    text: str


QUESTIONS: tuple[Question, ...] = (
    Question(
        "no_implant",
        "The patient has NO pacemaker, defibrillator or other implanted electronic device.",
    ),
    Question(
        "no_heart_condition",
        "The patient has NO known heart condition that rules out electrical stimulation.",
    ),
    Question(
        "electrode_sites",
        "NO electrode is placed across the chest, on the head, or on the front of the neck.",
    ),
    Question(
        "skin_intact",
        "The skin under every electrode is intact (no wound, rash or loss of sensation).",
    ),
)

#: How the answers were given.
TERMINAL, DIALOG, FLAG = "terminal", "dialog", "flag"


class ChecklistRefusedError(SafetyError):
    """A checklist question was not answered yes: the session must not stimulate."""


@dataclass(frozen=True)
class ChecklistAnswers:
    """The answers (all yes, or the checklist was refused before this was built).

    Attributes
    ----------
    answers : dict of str to bool
        Question key -> answer.
    method : str
        ``terminal``, ``dialog`` or ``flag`` (``--confirm-checklist``).
    time : str
        When it was answered (local time, ISO 8601).
    operator : str
        Who answered, when known.
    """

    answers: dict[str, bool]
    method: str
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    operator: str = ""

    @property
    def all_yes(self) -> bool:
        """Whether every question was answered yes."""
        return all(self.answers.get(q.key) is True for q in QUESTIONS)

    @property
    def confirmed_by_flag(self) -> bool:
        """Whether it was confirmed with ``--confirm-checklist`` (not asked)."""
        return self.method == FLAG

    def to_dict(self) -> dict[str, object]:
        """JSON-ready record: answers with the question texts, method, time, operator."""
        return {
            "answers": {q.key: bool(self.answers.get(q.key, False)) for q in QUESTIONS},
            "questions": {q.key: q.text for q in QUESTIONS},
            "all_yes": self.all_yes,
            "method": self.method,
            "confirmed_by_flag": self.confirmed_by_flag,
            "time": self.time,
            "operator": self.operator,
        }


def answers_from(values: dict[str, bool], method: str, operator: str = "") -> ChecklistAnswers:
    """Answers from a key -> bool mapping; raises :class:`ChecklistRefusedError` on any no."""
    missing = [q.key for q in QUESTIONS if q.key not in values]
    if missing:
        raise ChecklistRefusedError(
            f"safety checklist incomplete: no answer for {', '.join(missing)}"
        )
    no = [q for q in QUESTIONS if values[q.key] is not True]
    if no:
        raise ChecklistRefusedError(
            "safety checklist refused, no stimulation: " + " | ".join(q.text for q in no)
        )
    return ChecklistAnswers({q.key: True for q in QUESTIONS}, method, operator=operator)


def ask_checklist(
    input: Callable[[str], str] = input,
    output: Callable[[str], object] = print,
    *,
    operator: str = "",
) -> ChecklistAnswers:
    """Ask every question on the terminal; only ``y``/``yes`` counts as yes.

    Raises
    ------
    ChecklistRefusedError
        At the first answer that is not yes (including an empty answer or end of input).
    """
    output("Safety checklist before the first stimulation (answer y or n):")
    values: dict[str, bool] = {}
    for k, q in enumerate(QUESTIONS, 1):
        try:
            answer = input(f"  {k}. {q.text} [y/n] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            output(f"  -> not confirmed: {q.text}")
            raise ChecklistRefusedError(
                f"safety checklist refused at question {k}, no stimulation: {q.text}"
            )
        values[q.key] = True
    output("  all confirmed.")
    return answers_from(values, TERMINAL, operator)


def confirmed_by_flag(operator: str = "") -> ChecklistAnswers:
    """All-yes answers recorded as given by ``--confirm-checklist``."""
    return ChecklistAnswers({q.key: True for q in QUESTIONS}, FLAG, operator=operator)
