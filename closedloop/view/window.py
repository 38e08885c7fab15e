"""The live window: what the session sees, and a STOP button that always works.

Per muscle (one row each): the filtered EMG (left) and the envelope with its on/off
thresholds and detector onsets (right); stimulation periods are shaded bands on both,
labelled with their current. Left of each row, the muscle's name and its channel
quality (ok, flat, saturated, mains hum). Above: the trial panel (cue, trial, hits,
misses, time left), the calibration button and a large STOP button.

Drawing follows pyqtgraph's ``scrollingPlots`` / ``MultiPlotSpeedTest`` examples: a
``QTimer`` pulls a :class:`~closedloop.view.lsl_client.Snapshot` from the client and
calls ``setData``; traces are peak-decimated to a few points per pixel before
``setData`` and the plots use ``setDownsampling(auto=True, mode='peak')`` and
``setClipToView(True)``, so 8 channels at 2 kHz draw smoothly.

STOP
----
Pressing STOP (or Escape) first calls the in-process ``on_stop`` callback when the
window was opened by ``closedloop run``, then publishes ``stop`` on the session's
control stream (:class:`~closedloop.runtime.control.ControlOutlet`), repeated for two
seconds in case the loop was still connecting. The status line says whether a session
loop is listening to that stream; if none is, the clinician is told to use the
stimulator's own stop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from closedloop.core.events import ONSET
from closedloop.runtime.control import ControlOutlet
from closedloop.view import qt_workarounds
from closedloop.view.buffers import (
    FLAT,
    MAINS,
    NO_DATA,
    OK,
    SATURATED,
    peak_downsample,
    step_xy,
)
from closedloop.view.lsl_client import CONNECTED, SessionClient, Snapshot

log = logging.getLogger(__name__)
qt_workarounds()

QUALITY_COLORS = {
    OK: "#2e7d32",
    MAINS: "#ef6c00",
    FLAT: "#c62828",
    SATURATED: "#c62828",
    NO_DATA: "#757575",
}
EMG_PEN = pg.mkPen("#1565c0", width=1)
ENV_PEN = pg.mkPen("#212121", width=1)
ON_PEN = pg.mkPen("#d84315", width=1)
OFF_PEN = pg.mkPen("#d84315", width=1, style=QtCore.Qt.PenStyle.DashLine)
STIM_BRUSH = pg.mkBrush(255, 193, 7, 80)
LANE_PEN = pg.mkPen("#bdbdbd", width=1)
#: Points per trace handed to setData (pyqtgraph decimates further to the pixels).
MAX_POINTS = 1200


class _Lanes:
    """One plot with every channel stacked in its own lane (lane ``k`` of ``n`` spans
    ``y = n-1-k .. n-k``, channel names on the y axis), as clinical EMG displays do.

    Two plots for all channels, rather than two per channel, keep the per-frame cost
    nearly flat in the channel count. Each lane is scaled on its own: ``scale[k]`` is
    the value drawn at the lane's full height (``symmetric``: at half height above and
    below its centre line). The scale is shown in the channel's label.
    """

    def __init__(self, plot: pg.PlotItem, channels: tuple[str, ...], *, symmetric: bool,
                 pen: QtGui.QPen) -> None:
        self.plot = plot
        self.n = len(channels)
        self.symmetric = symmetric
        self.scale = np.zeros(self.n)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.disableAutoRange()
        plot.setYRange(0.0, float(self.n), padding=0)
        plot.getAxis("left").setTicks(
            [[(self.n - 1 - k + 0.5, name) for k, name in enumerate(channels)], []]
        )
        plot.getAxis("left").setWidth(95)
        for k in range(1, self.n):
            plot.addItem(pg.InfiniteLine(pos=float(k), angle=0, pen=LANE_PEN), ignoreBounds=True)
        self.curves = [plot.plot(pen=pen) for _ in channels]
        self.rects: list[list[QtWidgets.QGraphicsRectItem]] = [[] for _ in channels]
        self.texts: list[list[pg.TextItem]] = [[] for _ in channels]

    def y(self, k: int, values: np.ndarray) -> np.ndarray:
        """Values of channel ``k`` in plot coordinates (NaN where the scale is unknown)."""
        s = self.scale[k]
        v = np.asarray(values, dtype=np.float64)
        if not s > 0:
            return np.full(v.shape, np.nan)
        base = self.n - 1 - k
        if self.symmetric:
            return base + 0.5 + 0.45 * np.clip(v / s, -1.1, 1.1)
        return base + 0.05 + 0.9 * np.clip(v / s, 0.0, 1.1)

    def fit(self, k: int, need: float) -> bool:
        """Adopt a new scale for channel ``k`` if ``need`` is off by more than 25 %."""
        if not (need > 0 and math.isfinite(need)):
            return False
        if 0.6 * self.scale[k] <= need <= self.scale[k]:
            return False
        self.scale[k] = need * 1.25
        return True

    def bands(self, k: int, spans: list[tuple[float, float, float]], labels: bool) -> None:
        """Shade stimulation periods in lane ``k`` (pool of rectangles, reused)."""
        rects, texts = self.rects[k], self.texts[k]
        base = float(self.n - 1 - k)
        while len(rects) < len(spans):
            r = QtWidgets.QGraphicsRectItem()
            r.setPen(pg.mkPen(None))
            r.setBrush(STIM_BRUSH)
            r.setZValue(-10)
            self.plot.addItem(r, ignoreBounds=True)
            rects.append(r)
            if labels:
                t = pg.TextItem(color="#8d6e00", anchor=(0, 0))
                self.plot.addItem(t, ignoreBounds=True)
                texts.append(t)
        for i, r in enumerate(rects):
            show = i < len(spans)
            r.setVisible(show)
            if labels:
                texts[i].setVisible(show)
            if not show:
                continue
            a, b, ma = spans[i]
            r.setRect(QtCore.QRectF(a, base, max(b - a, 1e-3), 1.0))
            if labels:
                texts[i].setText(f"{ma:g} mA")
                texts[i].setPos(a, base + 1.0)


class SessionWindow(QtWidgets.QMainWindow):
    """The live view of one session.

    Parameters
    ----------
    client : SessionClient
        Started by the caller (or here, if not yet started); closed with the window.
    on_stop : callable, optional
        Called first when STOP is pressed (in-process stop of ``closedloop run``).
    control : ControlOutlet or "auto" or None
        The LSL control stream STOP publishes on. ``"auto"`` creates one for the
        session as soon as its name is known; None disables it (``on_stop`` only).
    refresh_ms : int
        Timer period.
    on_calibrate : callable, optional
        What the Calibrate button does (default: open the calibration dialog on the
        session's EMG stream).
    """

    stop_pressed = QtCore.Signal()

    def __init__(
        self,
        client: SessionClient,
        *,
        on_stop: Callable[[], object] | None = None,
        control: ControlOutlet | str | None = "auto",
        refresh_ms: int = 33,
        on_calibrate: Callable[[SessionWindow], object] | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client.start()
        self.on_stop = on_stop
        self._auto_control = control == "auto"
        self.control: ControlOutlet | None = control if isinstance(control, ControlOutlet) else None
        if self._auto_control and client.requested:
            self.control = ControlOutlet(client.requested)
        self.on_calibrate = on_calibrate
        self.window_s = client.window_s
        self.rows: list[int] = []
        self.cache: dict[object, object] = {}
        self._channels: tuple[str, ...] = ()
        self.ticks = 0
        self.stops = 0
        self.last_snapshot: Snapshot | None = None
        self._fps_t0 = time.perf_counter()
        self._fps_n = 0
        self.fps = math.nan
        self._stop_message = ""
        self._next_rescale = 0.0
        self._build()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(int(refresh_ms))
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    # -- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        self.setWindowTitle("closedloop - live view")
        self.resize(1400, 900)
        central = QtWidgets.QWidget()
        top = QtWidgets.QHBoxLayout()
        left = QtWidgets.QVBoxLayout()
        self.session_label = QtWidgets.QLabel("closedloop")
        f = self.session_label.font()
        f.setPointSize(14)
        f.setBold(True)
        self.session_label.setFont(f)
        self.status_label = QtWidgets.QLabel("starting...")
        self.status_label.setWordWrap(True)
        self.link_label = QtWidgets.QLabel("")
        left.addWidget(self.session_label)
        left.addWidget(self.status_label)
        left.addWidget(self.link_label)
        top.addLayout(left, stretch=3)

        trial = QtWidgets.QGroupBox("Trials")
        tl = QtWidgets.QGridLayout(trial)
        self.cue_label = QtWidgets.QLabel("-")
        cf = self.cue_label.font()
        cf.setPointSize(22)
        cf.setBold(True)
        self.cue_label.setFont(cf)
        self.cue_label.setMinimumWidth(220)
        self.trial_label = QtWidgets.QLabel("trial -")
        self.hits_label = QtWidgets.QLabel("hits 0")
        self.misses_label = QtWidgets.QLabel("misses 0")
        self.time_label = QtWidgets.QLabel("time left -")
        tl.addWidget(self.cue_label, 0, 0, 2, 1)
        tl.addWidget(self.trial_label, 0, 1)
        tl.addWidget(self.time_label, 1, 1)
        tl.addWidget(self.hits_label, 0, 2)
        tl.addWidget(self.misses_label, 1, 2)
        top.addWidget(trial, stretch=3)

        self.calibrate_button = QtWidgets.QPushButton("Calibrate...")
        self.calibrate_button.setMinimumHeight(60)
        self.calibrate_button.clicked.connect(self._calibrate)
        top.addWidget(self.calibrate_button)

        self.stop_button = QtWidgets.QPushButton("STOP")
        self.stop_button.setObjectName("stop")
        self.stop_button.setMinimumSize(220, 90)
        sf = self.stop_button.font()
        sf.setPointSize(30)
        sf.setBold(True)
        self.stop_button.setFont(sf)
        self.stop_button.setStyleSheet(
            "QPushButton#stop { background: #c62828; color: white; border-radius: 10px; }"
            "QPushButton#stop:pressed { background: #8e0000; }"
        )
        self.stop_button.setToolTip("Stop all stimulation now (Esc)")
        self.stop_button.clicked.connect(self.press_stop)
        top.addWidget(self.stop_button)
        QtGui.QShortcut(QtGui.QKeySequence(QtCore.Qt.Key.Key_Escape), self, self.press_stop)

        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground("w")
        self.layout_ = self.plots.ci
        self.channel_box = QtWidgets.QVBoxLayout()
        self.channel_labels: list[QtWidgets.QLabel] = []
        panel = QtWidgets.QWidget()
        panel.setLayout(self.channel_box)
        middle = QtWidgets.QHBoxLayout()
        middle.addWidget(panel)
        middle.addWidget(self.plots, stretch=1)
        v = QtWidgets.QVBoxLayout(central)
        v.addLayout(top)
        v.addLayout(middle, stretch=1)
        self.setCentralWidget(central)
        self.statusBar().showMessage("")

    def _make_rows(self, channels: tuple[str, ...]) -> None:
        self.layout_.clear()
        for w in self.channel_labels:
            w.deleteLater()
        self.channel_labels = []
        self.cache = {}
        n = len(channels)
        self.emg_plot: pg.PlotItem = self.layout_.addPlot(row=0, col=0)
        self.env_plot: pg.PlotItem = self.layout_.addPlot(row=0, col=1)
        self.emg_plot.setTitle("filtered EMG")
        self.env_plot.setTitle("envelope, on/off thresholds, onsets ▲, stimulation (mA)")
        for p in (self.emg_plot, self.env_plot):
            p.setLabel("bottom", "time (s), 0 = now")
            p.setXRange(-self.window_s, 0.0, padding=0)
        self.emg = _Lanes(self.emg_plot, channels, symmetric=True, pen=EMG_PEN)
        self.env = _Lanes(self.env_plot, channels, symmetric=False, pen=ENV_PEN)
        # one curve for the on-thresholds of every lane, one for the off-thresholds
        # (lanes separated by NaN): two setData per frame instead of 2 x n_channels
        self.on_curve = pg.PlotDataItem(pen=ON_PEN, connect="finite")
        self.off_curve = pg.PlotDataItem(pen=OFF_PEN, connect="finite")
        for c in (self.on_curve, self.off_curve):
            self.env_plot.addItem(c)
            c.setClipToView(False)  # x runs lane after lane, not sorted
            c.setDownsampling(auto=False)
        self.onsets = pg.ScatterPlotItem(symbol="t1", size=12, brush=pg.mkBrush("#2e7d32"),
                                         pen=pg.mkPen(None))
        self.offsets = pg.ScatterPlotItem(symbol="t", size=9, brush=pg.mkBrush("#9e9e9e"),
                                          pen=pg.mkPen(None))
        self.env_plot.addItem(self.onsets)
        self.env_plot.addItem(self.offsets)
        for ch in channels:
            lab = QtWidgets.QLabel(ch)
            lab.setTextFormat(QtCore.Qt.TextFormat.RichText)
            lab.setMinimumWidth(170)
            self.channel_box.addWidget(lab, stretch=1)
            self.channel_labels.append(lab)
        self.rows = list(range(n))
        self._channels = channels

    # -- STOP -----------------------------------------------------------------------------------
    def press_stop(self) -> None:
        """Stop stimulation: the in-process callback, then the LSL control stream."""
        self.stops += 1
        done = []
        problems = []
        if self.on_stop is not None:
            try:
                self.on_stop()
                done.append("session stopped (in-process)")
            except Exception as exc:  # noqa: BLE001 - shown to the clinician, never hidden
                log.exception("on_stop failed")
                problems.append(f"in-process stop FAILED: {exc}")
        if self.control is not None:
            try:
                self.control.stop()
                done.append(f"stop sent to {self.control.session_name}")
            except Exception as exc:  # noqa: BLE001
                log.exception("control stop failed")
                problems.append(f"sending stop FAILED: {exc}")
        elif self.on_stop is None:
            problems.append("no session connected: nothing received the stop")
        stamp = time.strftime("%H:%M:%S")
        self._stop_message = f"STOP pressed at {stamp}: " + "; ".join(done + problems)
        if problems:
            self._stop_message += " - use the stimulator's own stop button"
        self.statusBar().showMessage(self._stop_message)
        self.stop_pressed.emit()

    # -- calibration --------------------------------------------------------------------------
    def _calibrate(self) -> None:
        if self.on_calibrate is not None:
            self.on_calibrate(self)
            return
        snap = self.last_snapshot
        if snap is None or snap.config is None or snap.session is None:
            self.statusBar().showMessage(
                "Calibration needs a connected session with its config; or run "
                "`closedloop calibrate --config C --out PATIENT.toml`"
            )
            return
        from closedloop.view.calibration import CalibrationDialog

        out, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Save the patient config", f"{snap.config.name}-patient.toml",
            "TOML (*.toml)",
        )
        if not out:
            return
        dlg = CalibrationDialog(
            snap.config, f"lsl:name={snap.session}-EMG", Path(out), parent=self
        )
        dlg.show()

    # -- refresh --------------------------------------------------------------------------------
    def tick(self) -> None:
        """One refresh: pull a snapshot and update every item."""
        snap = self.client.snapshot(self.window_s)
        self.last_snapshot = snap
        self.ticks += 1
        if self._auto_control and self.control is None and snap.session:
            self.control = ControlOutlet(snap.session)
        if self.control is not None:
            self.control.tick()
        if snap.channels != self._channels:
            self._make_rows(snap.channels)
        self._update_header(snap)
        if math.isfinite(snap.now) and self.rows:
            if time.monotonic() >= self._next_rescale:
                self._next_rescale = time.monotonic() + 0.5
                self._rescale(snap)
            self._update_lanes(snap)
        self._fps_n += 1
        t = time.perf_counter()
        if t - self._fps_t0 >= 1.0:
            self.fps = self._fps_n / (t - self._fps_t0)
            self._fps_t0, self._fps_n = t, 0

    def _update_header(self, snap: Snapshot) -> None:
        name = snap.session or self.client.requested or "(any session)"
        self.session_label.setText(f"Session {name}")
        color = "#2e7d32" if snap.status == CONNECTED else "#c62828"
        self.status_label.setText(f"<span style='color:{color}'>{snap.message}</span>")
        if self.control is None:
            link = (
                "STOP: in-process" if self.on_stop is not None
                else "STOP link: no session yet"
            )
            ok = self.on_stop is not None
        elif self.control.has_listener():
            link, ok = "STOP link: session is listening", True
        else:
            link = "STOP link: no session loop is listening - use the stimulator's stop"
            ok = self.on_stop is not None
        c = "#2e7d32" if ok else "#c62828"
        self.link_label.setText(f"<span style='color:{c}'>{link}</span>")
        tr = snap.trial
        if tr.done:
            self.cue_label.setText("done")
        else:
            self.cue_label.setText(tr.cue.upper() if tr.cue else "rest")
        n = f"/{tr.n_trials}" if tr.n_trials else ""
        self.trial_label.setText(f"trial {tr.trial + 1 if tr.trial >= 0 else '-'}{n}")
        self.hits_label.setText(f"hits {tr.hits}")
        self.misses_label.setText(f"misses {tr.misses}")
        left = tr.time_left(snap.now) if math.isfinite(snap.now) else None
        if left is None:
            self.time_label.setText("time left -")
        elif left >= 60.0:
            self.time_label.setText(f"time left {int(left // 60)}:{int(left % 60):02d} min")
        else:
            self.time_label.setText(f"time left {left:.1f} s")
        if not self._stop_message and math.isfinite(self.fps):
            self.statusBar().showMessage(f"{snap.samples} samples, {self.fps:.0f} frames/s")

    def _rescale(self, snap: Snapshot) -> None:
        """Fit each lane's scale to the data shown (changed only when off by > 25 %)."""
        for k in self.rows:
            if snap.emg.shape[0]:
                col = snap.emg[:, k]
                if np.isfinite(col).any():
                    self.emg.fit(k, float(np.nanmax(np.abs(col))))
            if snap.env.shape[0]:
                v = snap.env[:, k]
                if snap.thr_on.shape[0]:
                    v = np.concatenate([v, snap.thr_on[:, k]])
                if np.isfinite(v).any():
                    self.env.fit(k, float(np.nanmax(v)))

    def _update_lanes(self, snap: Snapshot) -> None:
        # x is stream time relative to the newest sample, in a fixed range [-window, 0]:
        # moving the view range instead would make pyqtgraph re-clip every curve twice
        # per frame. Items are only touched when their drawn data change.
        now = snap.now
        w = self.window_s
        thr: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
            "on": ([], []), "off": ([], [])
        }
        for k, name in enumerate(snap.channels):
            self._update_label(k, name, snap)
            if snap.emg.shape[0]:
                t, x = peak_downsample(snap.emg_t - now, snap.emg[:, k], MAX_POINTS)
                self.emg.curves[k].setData(t, self.emg.y(k, x), skipFiniteCheck=True)
            if snap.env.shape[0]:
                t, x = peak_downsample(snap.env_t - now, snap.env[:, k], MAX_POINTS)
                self.env.curves[k].setData(t, self.env.y(k, x), skipFiniteCheck=True)
            if snap.thr_t.shape[0]:
                for side, vals in (("on", snap.thr_on[:, k]), ("off", snap.thr_off[:, k])):
                    t, v = _steps(snap.thr_t, vals, self.env.scale[k] * 0.005)
                    x, y = step_xy(t - now, v, 0.0, -w)
                    thr[side][0].extend((x, _NAN1))
                    thr[side][1].extend((self.env.y(k, y), _NAN1))
            spans = [
                (b.start - now, (b.end - now) if math.isfinite(b.end) else 0.0, b.peak_ma)
                for b in snap.bands
                if b.muscle == name
            ]
            if spans or self.cache.get(("bands", k)):
                self.cache[("bands", k)] = bool(spans)
                self.emg.bands(k, spans, labels=False)
                self.env.bands(k, spans, labels=True)
        for side, curve in (("on", self.on_curve), ("off", self.off_curve)):
            xs, ys = thr[side]
            if xs:
                curve.setData(np.concatenate(xs), np.concatenate(ys))
        index = {name: k for k, name in enumerate(snap.channels)}
        pts: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
        for e in snap.events:
            k = index.get(e.channel)
            if k is None:
                continue
            xs, ys = pts[e.kind == ONSET]
            xs.append(e.time - now)
            ys.append(float(self.env.y(k, np.array([_finite(e.envelope)]))[0]))
        if pts[True][0] or self.cache.get("onsets"):
            self.onsets.setData(*pts[True])
            self.cache["onsets"] = bool(pts[True][0])
        if pts[False][0] or self.cache.get("offsets"):
            self.offsets.setData(*pts[False])
            self.cache["offsets"] = bool(pts[False][0])

    def _update_label(self, k: int, name: str, snap: Snapshot) -> None:
        q = snap.quality.get(name)
        status = q.status if q else NO_DATA
        stim = snap.stim_now.get(name, 0.0)
        stim_txt = (
            f"<br><span style='color:#8d6e00'><b>STIM {stim:g} mA</b></span>" if stim > 0 else ""
        )
        detail = f"<br><small>{q.detail}</small>" if q and q.detail else ""
        u = snap.units
        scale = (
            f"<br><small>EMG ±{_eng(self.emg.scale[k] * 0.5 / 0.45, u)}, "
            f"env {_eng(self.env.scale[k] / 0.9, u)}</small>"
            if self.emg.scale[k] > 0 and self.env.scale[k] > 0 else ""
        )
        html = (
            f"<b>{name}</b><br><span style='color:{QUALITY_COLORS.get(status, '#000')}'>"
            f"● {status}</span>{detail}{stim_txt}{scale}"
        )
        if html != self.cache.get(("label", k)):
            self.cache[("label", k)] = html
            self.channel_labels[k].setText(html)

    # -- helpers ----------------------------------------------------------------------------
    def curve_data(self, channel: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Data of one channel's EMG and envelope curves and of the threshold curves
        (``on``/``off`` hold every lane), in plot coordinates; for tests."""
        out = {}
        for key, item in (
            ("emg", self.emg.curves[channel]), ("env", self.env.curves[channel]),
            ("on", self.on_curve), ("off", self.off_curve),
        ):
            x, y = item.getData()
            out[key] = (
                np.zeros(0) if x is None else np.array(x), np.zeros(0) if y is None else np.array(y)
            )
        return out

    def save_png(self, path: str | Path) -> Path:
        """Grab the window into a PNG file; returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(p), "PNG"):
            raise OSError(f"could not write the screenshot {p}")
        return p

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt API
        """Closing the window stops the updates and its streams."""
        self.timer.stop()
        self.client.close()
        if self.control is not None:
            self.control.close()
        super().closeEvent(event)


def _eng(x: float, unit: str) -> str:
    """``x`` with an SI prefix (``12.5 uV``), for scale labels."""
    if unit not in ("V", "A") or not (x > 0 and math.isfinite(x)):
        return f"{x:.3g} {unit}".strip()
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if x >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


_NAN1 = np.array([np.nan])


def _steps(t: np.ndarray, v: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep the threshold samples where the value, quantised to ``tol``, changes.

    Adaptive thresholds change a little at every chunk; a change below ``tol`` (half a
    percent of the lane) cannot be seen, so drawing only the visible steps is exact to
    the eye and far cheaper. NaN (baseline warming up) counts as its own value.
    """
    if t.size <= 2 or not tol > 0:
        return t, v
    q = np.where(np.isnan(v), np.inf, np.round(v / tol))
    keep = np.ones(t.size, dtype=bool)
    keep[1:] = q[1:] != q[:-1]
    return t[keep], v[keep]


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0
