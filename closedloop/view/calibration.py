"""The calibration as a Qt dialog: cues on screen, results, and the patient config.

The same logic as the terminal (:mod:`closedloop.analysis.calibrate`): the schedule, the
acquisition (in a worker thread: the dialog stays responsive and Cancel works), the
analysis and the verified patient config. The dialog shows each muscle's
electrode-placement note, asks the clinician to confirm the stimulation limits before
starting, shows the current cue large with a countdown and a live level bar, and at the
end each muscle's result or the reason it was refused. The patient config is written
only when every muscle was accepted.

It speaks clinical units: the limits to confirm in mA, µs, Hz and seconds with the muscle
named first; the results in µV (when the EMG is in volts), the maximal voluntary
contraction (MVC) of each try, and where stimulation will be triggered, in µV and in %
of MVC.
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from closedloop.analysis.calibrate import (
    CONTRACT,
    PREPARE,
    REST,
    MuscleResult,
    Result,
    Schedule,
    Step,
    acquire,
    analyse,
    build_steps,
    limits_lines,
    make_source,
    patient_config_text,
    total_s,
    write_patient_config,
)
from closedloop.config import Config
from closedloop.view import qt_workarounds
from closedloop.view.buffers import display_units, fmt_value

qt_workarounds()

CUE_COLORS = {REST: "#1565c0", PREPARE: "#ef6c00", CONTRACT: "#2e7d32", "relax": "#1565c0"}


class CalibrationDialog(QtWidgets.QDialog):
    """Guide a calibration and write the patient config.

    Parameters
    ----------
    config : Config
        The session config (muscles, placement notes, filters, stimulation limits).
    source_spec : str
        Where the EMG comes from (``sim``: the simulated patient follows the cues).
    out_path : path
        The patient config to write.
    schedule : Schedule, optional
    yes : bool
        The stimulation limits were confirmed already (``--yes``).
    realtime : bool
        Simulated source only: pace it in real time (False runs as fast as possible).
    stimulator : str, optional
        The patient's stimulator spec, written as ``[session] stimulator``.
    """

    def __init__(
        self,
        config: Config,
        source_spec: str,
        out_path: str | Path,
        *,
        schedule: Schedule | None = None,
        yes: bool = False,
        realtime: bool = True,
        stimulator: str | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.config = config
        self.stimulator = stimulator
        self.source_spec = source_spec
        self.out_path = Path(out_path)
        self.schedule = schedule or Schedule()
        self.realtime = realtime
        self.steps = build_steps(self.schedule, config.muscle_names)
        self.total = total_s(self.steps)
        self.result: Result | None = None
        self.written: Path | None = None
        self.error: str | None = None
        self.finished_ = False
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._step: Step | None = None
        self._t = 0.0
        self._level = [0.0] * len(config.muscles)
        self._peak = [1e-30] * len(config.muscles)
        self.setWindowTitle(f"Calibration - {config.name}")
        self.resize(760, 620)
        self._build(yes)
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._refresh)

    # -- layout --------------------------------------------------------------------------------
    def _build(self, yes: bool) -> None:
        v = QtWidgets.QVBoxLayout(self)
        notes = "".join(
            f"<li><b>{html.escape(m.name)}</b>: "
            f"{html.escape(m.placement or '(no placement note in the config)')}"
            + (f" <i>(picture: {html.escape(m.picture)})</i>" if m.picture else "")
            + "</li>"
            for m in self.config.muscles
        )
        s = self.schedule
        intro = QtWidgets.QLabel(
            f"<b>Electrode placement</b><ul>{notes}</ul>"
            f"Schedule: rest {s.rest_s:g} s, then per muscle {s.mvc_reps} maximal contractions "
            f"of {s.mvc_s:g} s with {s.relax_s:g} s rest between ({self.total:.0f} s in all)."
        )
        intro.setWordWrap(True)
        v.addWidget(intro)
        lines = limits_lines(self.config)
        self.confirm = QtWidgets.QCheckBox(
            "I confirm these stimulation settings and limits are right for this patient"
        )
        if lines:
            lim = QtWidgets.QLabel(
                "<b>Stimulation (limit in brackets)</b><br>"
                + "<br>".join(html.escape(x) for x in lines)
            )
            lim.setWordWrap(True)
            v.addWidget(lim)
            self.confirm.setChecked(yes)
            v.addWidget(self.confirm)
        else:
            self.confirm.setChecked(True)
            self.confirm.setVisible(False)
        self.confirm.toggled.connect(self._update_buttons)
        self.cue = QtWidgets.QLabel("Press Start when the patient is ready")
        self.cue.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        f = self.cue.font()
        f.setPointSize(24)
        f.setBold(True)
        self.cue.setFont(f)
        self.cue.setMinimumHeight(90)
        self.cue.setWordWrap(True)
        v.addWidget(self.cue)
        self.countdown = QtWidgets.QLabel("")
        self.countdown.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        v.addWidget(self.countdown)
        self.levels: list[QtWidgets.QProgressBar] = []
        grid = QtWidgets.QGridLayout()
        for k, m in enumerate(self.config.muscles):
            grid.addWidget(QtWidgets.QLabel(m.name), k, 0)
            bar = QtWidgets.QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(False)
            grid.addWidget(bar, k, 1)
            self.levels.append(bar)
        v.addLayout(grid)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        v.addWidget(self.progress)
        self.results = QtWidgets.QTextBrowser()
        v.addWidget(self.results, stretch=1)
        buttons = QtWidgets.QHBoxLayout()
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QtWidgets.QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        for b in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        v.addLayout(buttons)
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self._thread is not None and self._thread.is_alive()
        self.start_button.setEnabled(self.confirm.isChecked() and not running)
        self.cancel_button.setEnabled(running)

    # -- running --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the acquisition in a worker thread (needs the limits confirmed)."""
        if not self.confirm.isChecked() or (self._thread is not None and self._thread.is_alive()):
            return
        self._cancel.clear()
        self.result, self.error, self.finished_ = None, None, False
        self.results.clear()
        self._thread = threading.Thread(target=self._work, name="closedloop-calibration",
                                        daemon=True)
        self._thread.start()
        self.timer.start()
        self._update_buttons()

    def cancel(self) -> None:
        """Ask the running calibration to stop (nothing is written then)."""
        self._cancel.set()

    def _work(self) -> None:
        try:
            source = make_source(self.config, self.source_spec, self.steps,
                                 realtime=self.realtime)
            with source:
                rec = acquire(source, self.config, self.steps, on_step=self._on_step,
                              on_progress=self._on_progress, cancel=self._cancel)
            result = analyse(rec, self.steps, self.config, self.schedule)
            with self._lock:
                self.result = result
        except Exception as exc:  # noqa: BLE001 - shown in the dialog
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"

    def _on_step(self, step: Step) -> None:
        with self._lock:
            self._step = step

    def _on_progress(self, t: float, recorder) -> None:
        with self._lock:
            self._t = t
            for k, x in enumerate(recorder.latest):
                if math.isfinite(x):
                    self._level[k] = float(x)
                    self._peak[k] = max(self._peak[k], float(x))

    def _refresh(self) -> None:
        with self._lock:
            step, t = self._step, self._t
            level, peak = list(self._level), list(self._peak)
            result, error = self.result, self.error
        if step is not None:
            self.cue.setText(step.text)
            self.cue.setStyleSheet(f"color: {CUE_COLORS.get(step.kind, '#000')}")
            self.countdown.setText(f"{max(0.0, step.end_s - t):.1f} s")
        self.progress.setValue(int(1000 * min(1.0, t / self.total)))
        for bar, x, p in zip(self.levels, level, peak, strict=True):
            bar.setValue(int(1000 * min(1.0, x / p)) if p > 0 else 0)
        alive = self._thread is not None and self._thread.is_alive()
        if not alive and (result is not None or error is not None):
            self.timer.stop()
            self._finish(result, error)
        self._update_buttons()

    def _finish(self, result: Result | None, error: str | None) -> None:
        self.finished_ = True
        if error is not None:
            self.cue.setText("Calibration stopped")
            self.cue.setStyleSheet("color: #c62828")
            self.results.setHtml(f"<p style='color:#c62828'>{html.escape(error)}</p>")
            return
        assert result is not None
        rows = []
        for m in result.muscles:
            color = "#2e7d32" if m.ok else "#c62828"
            rows.append(f"<p style='color:{color}'>{result_html(m, result.units)}</p>")
            rows.extend(f"<p>&nbsp;&nbsp;warning: {html.escape(w)}</p>" for w in m.warnings)
        if result.ok:
            confirmation = (
                "confirmed in the calibration dialog" if limits_lines(self.config)
                else "none: this config does not stimulate"
            )
            try:
                text = patient_config_text(
                    self.config, result, confirmation=confirmation,
                    source=self.source_spec, schedule=self.schedule,
                    stimulator=self.stimulator,
                )
                self.written = write_patient_config(self.out_path, text)
                rows.append(f"<p><b>Written: {html.escape(str(self.written))}</b></p>")
                self.cue.setText("Calibration done")
                self.cue.setStyleSheet("color: #2e7d32")
            except Exception as exc:  # noqa: BLE001 - shown in the dialog
                self.error = str(exc)
                rows.append(f"<p style='color:#c62828'>Not written: {html.escape(str(exc))}</p>")
        else:
            self.cue.setText("Calibration refused - nothing written")
            self.cue.setStyleSheet("color: #c62828")
        self.results.setHtml("".join(rows))

    def wait(self, timeout: float) -> bool:
        """Process events until finished (for tests and scripts); False on timeout."""
        end = time.monotonic() + timeout
        app = QtWidgets.QApplication.instance()
        while not self.finished_ and time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.01)
        return self.finished_

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Closing the dialog cancels the calibration and waits for it."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.timer.stop()
        super().closeEvent(event)


def result_html(m: MuscleResult, units: str) -> str:
    """One muscle's result in words and µV (escaped HTML)."""
    name = html.escape(m.muscle)
    if not m.ok:
        return f"<b>{name}: refused</b> - " + html.escape("; ".join(m.reasons))
    d = display_units(units)
    u = d.emg_unit

    def v(x: float) -> str:
        return f"{fmt_value(x * d.emg_factor)} {u}".strip()

    tries = ", ".join(fmt_value(r * d.emg_factor) for r in m.reps)
    pct = (100.0 * m.on_threshold / m.mvc) if m.mvc > 0 else math.nan
    return (
        f"<b>{name}: accepted</b> - at rest {v(m.rest_mean)} (SD {v(m.rest_sd)}); maximal "
        f"contraction (MVC) {v(m.mvc)} (tries: {html.escape(tries)} {u}). Stimulation "
        f"starts above {v(m.on_threshold)} ({pct:.0f} % of MVC) and stops below "
        f"{v(m.off_threshold)}."
    )
