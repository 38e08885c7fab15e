"""The safety checklist as a Qt dialog: every box must be ticked to allow stimulation."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from closedloop.runtime.checklist import DIALOG, QUESTIONS, ChecklistAnswers, answers_from
from closedloop.view import qt_workarounds

qt_workarounds()


class ChecklistDialog(QtWidgets.QDialog):
    """One checkbox per question; "Start stimulation" is enabled only when all are ticked.

    After ``exec()`` returns ``Accepted``, :attr:`answers` holds the record; on Cancel
    it stays None (the session must not stimulate).
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None, operator: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Safety checklist")
        self.operator = operator
        self.answers: ChecklistAnswers | None = None
        v = QtWidgets.QVBoxLayout(self)
        title = QtWidgets.QLabel("<b>Before the first stimulation, confirm each item:</b>")
        v.addWidget(title)
        self.boxes: dict[str, QtWidgets.QCheckBox] = {}
        for q in QUESTIONS:
            box = QtWidgets.QCheckBox(q.text)
            box.toggled.connect(self._update)
            v.addWidget(box)
            self.boxes[q.key] = box
        self.note = QtWidgets.QLabel(
            "If any item cannot be confirmed, do not stimulate: press Cancel."
        )
        self.note.setStyleSheet("color: #c62828")
        v.addWidget(self.note)
        buttons = QtWidgets.QDialogButtonBox()
        self.ok_button = buttons.addButton(
            "Start stimulation", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole
        )
        buttons.addButton(QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        v.addWidget(buttons)
        self._update()

    @QtCore.Slot()
    def _update(self) -> None:
        self.ok_button.setEnabled(all(b.isChecked() for b in self.boxes.values()))

    def accept(self) -> None:  # noqa: D401 - Qt override
        """Record the answers (only reachable with every box ticked)."""
        values = {k: b.isChecked() for k, b in self.boxes.items()}
        self.answers = answers_from(values, DIALOG, self.operator)
        super().accept()


def ask_checklist_dialog(parent: QtWidgets.QWidget | None = None,
                         operator: str = "") -> ChecklistAnswers | None:
    """Show the dialog modally; the answers, or None when cancelled."""
    dlg = ChecklistDialog(parent, operator)
    if dlg.exec() == QtWidgets.QDialog.DialogCode.Accepted:
        return dlg.answers
    return None
