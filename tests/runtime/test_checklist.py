"""The safety checklist: terminal prompt, --confirm-checklist, and the Qt dialog."""

from __future__ import annotations

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from closedloop.errors import SafetyError
from closedloop.runtime.checklist import (
    DIALOG,
    FLAG,
    QUESTIONS,
    TERMINAL,
    ChecklistRefusedError,
    answers_from,
    ask_checklist,
    confirmed_by_flag,
)


def scripted(answers):
    it = iter(answers)
    asked = []

    def _input(prompt: str) -> str:
        asked.append(prompt)
        return next(it)

    return _input, asked


def test_all_yes_gives_a_complete_record():
    inp, asked = scripted(["y", "yes", "Y", " YES "])
    out = []
    a = ask_checklist(inp, out.append, operator="nurse A")
    assert len(asked) == len(QUESTIONS)
    assert a.all_yes and a.method == TERMINAL and not a.confirmed_by_flag
    d = a.to_dict()
    json.dumps(d)  # the loop stores it in the session record
    assert d["answers"] == {q.key: True for q in QUESTIONS}
    assert set(d["questions"]) == {q.key for q in QUESTIONS}
    assert d["operator"] == "nurse A" and d["all_yes"] is True


@pytest.mark.parametrize("bad", ["n", "no", "", "maybe", "yes please"])
@pytest.mark.parametrize("at", [0, 2, 3])
def test_any_answer_but_yes_refuses_and_stops_asking(bad, at):
    answers = ["y"] * at + [bad] + ["y"] * 10
    inp, asked = scripted(answers)
    with pytest.raises(ChecklistRefusedError, match=f"question {at + 1}") as exc:
        ask_checklist(inp, lambda s: None)
    assert isinstance(exc.value, SafetyError)
    assert len(asked) == at + 1  # nothing asked after the refusal
    assert QUESTIONS[at].text in str(exc.value)


def test_end_of_input_refuses():
    def eof(prompt: str) -> str:
        raise EOFError

    with pytest.raises(ChecklistRefusedError):
        ask_checklist(eof, lambda s: None)


def test_questions_cover_the_contraindications():
    text = " ".join(q.text.lower() for q in QUESTIONS)
    for word in ("pacemaker", "implanted", "heart", "chest", "head", "neck", "skin"):
        assert word in text


def test_confirm_checklist_flag_is_marked():
    a = confirmed_by_flag(operator="dr B")
    assert a.all_yes and a.method == FLAG and a.confirmed_by_flag
    assert a.to_dict()["confirmed_by_flag"] is True


def test_answers_from_refuses_no_and_missing():
    with pytest.raises(ChecklistRefusedError, match="incomplete"):
        answers_from({QUESTIONS[0].key: True}, DIALOG)
    values = {q.key: True for q in QUESTIONS}
    values[QUESTIONS[1].key] = False
    with pytest.raises(ChecklistRefusedError, match="heart"):
        answers_from(values, DIALOG)


def test_dialog_needs_every_box(qtbot):
    from closedloop.view.checklist_dialog import ChecklistDialog

    dlg = ChecklistDialog(operator="nurse C")
    qtbot.addWidget(dlg)
    assert not dlg.ok_button.isEnabled()
    boxes = list(dlg.boxes.values())
    for b in boxes[:-1]:
        b.setChecked(True)
    assert not dlg.ok_button.isEnabled()
    boxes[-1].setChecked(True)
    assert dlg.ok_button.isEnabled()
    dlg.ok_button.click()
    assert dlg.answers is not None and dlg.answers.all_yes and dlg.answers.method == DIALOG
    boxes[0].setChecked(False)
    assert not dlg.ok_button.isEnabled()
