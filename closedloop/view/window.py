"""The live window: what the session sees, and a STOP button that always works.

Two plots, each with one lane per muscle (the muscle's name at the lane's top left):

* left, the **EMG as the detector sees it**: after the session's stimulation blanking
  and filters (the ``Filtered`` stream the session publishes), in µV;
* right, the detector's **envelope** (µV), or the statistic it decides on in its own
  unit (cusum: its log-likelihood ratio in nats, which rests at 0 while the muscle is
  active), with the on-threshold (solid) and off-threshold (dashed; none for a detector
  that decides its offsets on another statistic: cusum's offset CUSUM), onsets (green
  triangles) and offsets (grey; on the lane's baseline when decided on another
  statistic).

Stimulation periods are shaded bands on both, labelled with their current. Every lane
has its own amplitude scale, shown on the plot's left axis (``±v`` and ``0`` per EMG
lane, ``0`` and ``v`` per envelope lane) and fitted to the 99.5th percentile of what is
shown outside stimulation, so an artefact that gets through is clipped at the lane's
edge instead of flattening the trace. Left of the plots, per muscle: the signal quality
(ok, flat, saturated, mains hum; "starting" and "settling" while the filters and the
detector's rest level settle, in grey: nothing is wrong yet), the envelope now (and in %
of maximal voluntary contraction when the session's config has a calibration; for a
detector whose statistic is not the envelope, the EMG level now, in µV and % MVC, and
the statistic and its threshold in their unit), the stimulation under way (mA, µs, Hz)
and, for a stimulated muscle of a session that measures it, its evoked response (M-wave:
the latest peak-to-peak in µV and its % of the first trains at the same current; "no
response" in red while the muscle is stimulated and gives none: check the electrodes).
Above: the session panel (patient, elapsed and remaining time; triggers, stimulation
trains, stimulation time and dose against the session limit; for cued trials the cue,
trial, hits and misses), counted from the session's start even when the view opened
late, and a large STOP button.

Drawing
-------
A ``QTimer`` pulls a :class:`~closedloop.view.lsl_client.Snapshot` (peaks already
decimated as the samples arrived) and hands each plot's lanes to one
:class:`LanePainter`, which draws traces, thresholds, bands and onsets itself in device
coordinates. Profiling the pyqtgraph curves this replaces (16 ``PlotDataItem``, their
``setData`` and path transforms) showed most of each frame in Qt transforming and
stroking paths through the view's scale; mapping the few thousand points to pixels in
numpy and drawing plain polylines costs a fraction of it (``tools/bench_view.py``).

STOP
----
Pressing STOP (or Escape) first calls the in-process ``on_stop`` callback when the
window was opened by ``closedloop run``, then publishes ``stop`` on the session's
control stream (:class:`~closedloop.runtime.control.ControlOutlet`), repeated for two
seconds in case the loop was still connecting. The status line says whether a session
loop is listening to that stream; if none is, the clinician is told to use the
stimulator's own stop.

There is no calibration button: calibrating is its own step before the session
(``closedloop calibrate``), never something to start in the middle of one.
"""

from __future__ import annotations

import html
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.functions import create_qpolygonf, ndarray_from_qpolygonf
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
    fmt_value,
    nice_step,
    regroup,
    robust_extent,
    step_xy,
)
from closedloop.view.lsl_client import (
    CONNECTED,
    FROM_SESSION,
    RESOLVING,
    SessionClient,
    Snapshot,
)

log = logging.getLogger(__name__)
qt_workarounds()

QUALITY_COLORS = {
    OK: "#2e7d32",
    MAINS: "#ef6c00",
    FLAT: "#c62828",
    SATURATED: "#c62828",
    NO_DATA: "#757575",
}
NEUTRAL = "#757575"
EMG_PEN = pg.mkPen("#1565c0", width=1)
ENV_PEN = pg.mkPen("#212121", width=1)
ON_PEN = pg.mkPen("#d84315", width=1)
OFF_PEN = pg.mkPen("#d84315", width=1, style=QtCore.Qt.PenStyle.DashLine)
#: Stimulation bands: opaque (the amber of the labels at a third, on white), drawn first:
#: a translucent fill of the whole lane costs a blend per pixel and frame.
STIM_BRUSH = pg.mkBrush("#ffefbf")
LANE_PEN = pg.mkPen("#bdbdbd", width=1)
ONSET_BRUSH = pg.mkBrush("#2e7d32")
OFFSET_BRUSH = pg.mkBrush("#9e9e9e")
BAND_TEXT = QtGui.QColor("#8d6e00")
NAME_TEXT = QtGui.QColor("#37474f")
#: Points per pixel of a trace's width: a bin's minimum and maximum per pixel column.
#: Drawing costs grow with the points, but one bin per two pixels shows a moire of
#: diagonal joins across the EMG.
POINTS_PER_PIXEL = 2
#: Small lines of the session panel (two columns).
PANEL_LINES = 8
#: Stretches after a stimulation left out of the scale fitting, s (filter ringing).
AFTER_STIM_S = 0.05
#: An M-wave measurement older than this (stream time) is not the stimulation under
#: way (a stimulated muscle gets one every half second).
MWAVE_FRESH_S = 2.0
#: The colour of a warning in a muscle's label.
WARNING = "#c62828"


# -- drawing ---------------------------------------------------------------------------------
class LanePainter(pg.GraphicsObject):
    """Everything of one plot's lanes, drawn in one pass in device coordinates.

    The window gives plot coordinates (x: seconds before now, y: lane units) with
    :meth:`set_frame`; :meth:`paint` maps them to pixels with the painter's transform
    in numpy and draws plain polylines (see the module docstring for why).
    """

    def __init__(self, n_lanes: int, window_s: float, trace_pen: QtGui.QPen) -> None:
        super().__init__()
        self.n = int(n_lanes)
        self.window_s = float(window_s)
        self.trace_pen = trace_pen
        self.traces: list[tuple[np.ndarray, np.ndarray] | None] = [None] * self.n
        #: threshold polylines: (lane, x, y)
        self.on_lines: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.off_lines: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.bands: list[tuple[int, float, float, str]] = []
        self.onsets: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
        self.offsets: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
        self.names: list[tuple[str, str, QtGui.QColor | None]] = [("", "", None)] * self.n
        self._polys: dict[int, QtGui.QPolygonF] = {}
        self._font = QtGui.QFont()
        self._font.setPointSize(9)
        self._bold = QtGui.QFont(self._font)
        self._bold.setBold(True)

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 - Qt API
        """The item's extent in data coordinates (seconds x lanes)."""
        return QtCore.QRectF(-self.window_s, 0.0, self.window_s, float(self.n))

    def set_frame(self) -> None:
        """Schedule a repaint with the data set on the attributes."""
        self.update()

    def _poly(self, x: np.ndarray, y: np.ndarray, m: tuple[float, ...]) -> QtGui.QPolygonF:
        """A polygon of ``x, y`` mapped to pixels by the affine ``m`` (m11, m12, m21,
        m22, dx, dy), written straight into a reused QPolygonF's memory."""
        n = x.shape[0]
        poly = self._polys.get(n)
        if poly is None:
            if len(self._polys) > 64:
                self._polys.clear()
            poly = self._polys[n] = create_qpolygonf(n)
        a = ndarray_from_qpolygonf(poly)
        m11, m12, m21, m22, dx, dy = m
        px, py = a[:, 0], a[:, 1]
        np.multiply(x, m11, out=px)
        px += dx
        np.multiply(y, m22, out=py)
        py += dy
        if m21:
            px += y * m21
        if m12:
            py += x * m12
        return poly

    def paint(self, p: QtGui.QPainter, *args: object) -> None:
        """Draw the lanes in device coordinates (Qt calls it)."""
        tr = p.transform()
        m = (tr.m11(), tr.m12(), tr.m21(), tr.m22(), tr.dx(), tr.dy())
        m11, m12, m21, m22, dx, dy = m

        def px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return x * m11 + y * m21 + dx, x * m12 + y * m22 + dy

        def pt(x: float, y: float) -> QtCore.QPointF:
            return QtCore.QPointF(x * m11 + y * m21 + dx, x * m12 + y * m22 + dy)

        p.save()
        p.resetTransform()
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
        # stimulation bands, under everything, then the lines between lanes
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        for lane, a, b, _ in self.bands:
            base = float(self.n - 1 - lane)
            p.fillRect(QtCore.QRectF(pt(a, base + 1.0), pt(max(b, a + 1e-3), base))
                       .normalized(), STIM_BRUSH)
        p.setPen(LANE_PEN)
        for k in range(1, self.n):
            p.drawLine(pt(-self.window_s, float(k)), pt(0.0, float(k)))
        # traces
        p.setPen(self.trace_pen)
        for tr_ in self.traces:
            if tr_ is None or tr_[0].shape[0] < 2:
                continue
            p.drawPolyline(self._poly(tr_[0], tr_[1], m))
        # thresholds
        for pen, lines in ((ON_PEN, self.on_lines), (OFF_PEN, self.off_lines)):
            p.setPen(pen)
            for _, x, y in lines:
                if x.shape[0] >= 2:
                    p.drawPolyline(self._poly(x, y, m))
        # onsets (up triangles) and offsets (down)
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        for (xs, ys), brush, up in ((self.onsets, ONSET_BRUSH, True),
                                    (self.offsets, OFFSET_BRUSH, False)):
            p.setBrush(brush)
            qx, qy = px(xs, ys)
            s = 6.0 if up else 4.5
            for x, y in zip(qx.tolist(), qy.tolist(), strict=True):
                tip = y - s if up else y + s
                base = y + s if up else y - s
                p.drawPolygon(QtGui.QPolygonF([QtCore.QPointF(x, tip),
                                               QtCore.QPointF(x - s, base),
                                               QtCore.QPointF(x + s, base)]))
        # labels: the muscle's name (and state) at each lane's top left, band currents
        p.setFont(self._bold)
        for lane, (name, note, color) in enumerate(self.names):
            if not name:
                continue
            corner = pt(-self.window_s, float(self.n - lane))
            p.setPen(NAME_TEXT)
            p.drawText(corner + QtCore.QPointF(4, 12), name)
            if note:
                p.setFont(self._font)
                p.setPen(color or NAME_TEXT)
                w = QtGui.QFontMetrics(self._bold).horizontalAdvance(name)
                p.drawText(corner + QtCore.QPointF(10 + w, 12), note)
                p.setFont(self._bold)
        p.setFont(self._font)
        p.setPen(BAND_TEXT)
        for lane, a, _, text in self.bands:
            if text:
                p.drawText(pt(a, float(self.n - lane)) + QtCore.QPointF(3, 24), text)
        p.restore()


class _Lanes:
    """One plot with every channel stacked in its own lane (lane ``k`` of ``n`` spans
    ``y = n-1-k .. n-k``), as clinical EMG displays do.

    Each lane is scaled on its own: ``scale[k]`` is the value (stream units) drawn at
    the lane's full height (``symmetric``: at 0.45 of it above and below its centre
    line). The left axis shows each lane's scale in display units.
    """

    def __init__(self, plot: pg.PlotItem, channels: tuple[str, ...], window_s: float, *,
                 symmetric: bool, pen: QtGui.QPen, factor: float, unit: str,
                 name: str) -> None:
        self.plot = plot
        self.n = len(channels)
        self.symmetric = symmetric
        self.scale = np.zeros(self.n)
        self.factor = factor
        self.unit = unit
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.disableAutoRange()
        plot.setYRange(0.0, float(self.n), padding=0)
        plot.setXRange(-window_s, 0.0, padding=0)
        for side in ("left", "bottom"):  # ticks outward: the axes stay out of the
            plot.getAxis(side).setStyle(tickLength=5)  # region repainted every frame
        left = plot.getAxis("left")
        left.setWidth(62)
        left.setLabel(f"{name} ({unit})" if unit else name)
        left.setTicks([[], []])
        self.painter = LanePainter(self.n, window_s, pen)
        plot.addItem(self.painter, ignoreBounds=True)

    def y(self, k: int, values: np.ndarray) -> np.ndarray:
        """Values of channel ``k`` in plot coordinates (NaN where the scale is unknown)."""
        s = self.scale[k]
        v = np.asarray(values, dtype=np.float64)
        if not s > 0:
            return np.full(v.shape, np.nan)
        base = self.n - 1 - k
        if self.symmetric:
            return base + 0.5 + 0.45 * np.clip(v / s, -1.1, 1.1)
        return base + 0.05 + 0.9 * np.clip(v / s, 0.0, 1.05)

    def y_all(self, values: np.ndarray) -> np.ndarray:
        """:meth:`y` of every lane at once: ``values`` (n, n_lanes)."""
        s = np.where(self.scale > 0, self.scale, np.nan)
        base = self.n - 1 - np.arange(self.n)
        if self.symmetric:
            return base + 0.5 + 0.45 * np.clip(values / s, -1.1, 1.1)
        return base + 0.05 + 0.9 * np.clip(values / s, 0.0, 1.05)

    def fit(self, k: int, need: float) -> bool:
        """Adopt a new scale for channel ``k`` if ``need`` is off by more than 25 %."""
        if not (need > 0 and math.isfinite(need)):
            return False
        if 0.6 * self.scale[k] <= need <= self.scale[k]:
            return False
        self.scale[k] = need * 1.25
        return True

    def tick_value(self, k: int) -> float:
        """The labelled amplitude of lane ``k``, in display units (0: none yet)."""
        return nice_step(0.8 * self.scale[k] * self.factor)

    def update_ticks(self) -> None:
        """Axis ticks: ``-v, 0, +v`` per symmetric lane, ``0, v`` per envelope lane."""
        major = []
        for k in range(self.n):
            v = self.tick_value(k)
            if not v > 0:
                continue
            raw = v / self.factor
            if self.symmetric:
                for val in (-raw, 0.0, raw):
                    label = fmt_value(val * self.factor)
                    major.append((float(self.y(k, np.array([val]))[0]),
                                  f"+{label}" if val > 0 else label.replace("-", "−")))
            else:
                for val in (0.0, raw):
                    major.append((float(self.y(k, np.array([val]))[0]),
                                  fmt_value(val * self.factor)))
        self.plot.getAxis("left").setTicks([major, []])


# -- the window ------------------------------------------------------------------------------
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
        Timer period (15: up to 66 frames per second, so that a frame now and then
        late still leaves 60 per second).
    """

    stop_pressed = QtCore.Signal()

    def __init__(
        self,
        client: SessionClient,
        *,
        on_stop: Callable[[], object] | None = None,
        control: ControlOutlet | str | None = "auto",
        refresh_ms: int = 15,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client.start()
        self.on_stop = on_stop
        self._auto_control = control == "auto"
        self.control: ControlOutlet | None = control if isinstance(control, ControlOutlet) else None
        if self._auto_control and client.requested:
            self.control = ControlOutlet(client.requested)
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
        self._next_text = 0.0
        self._drawn: tuple = ()
        self._build()
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
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

        trial = QtWidgets.QGroupBox("Session")
        tl = QtWidgets.QGridLayout(trial)
        self.cue_label = QtWidgets.QLabel("-")
        cf = self.cue_label.font()
        cf.setPointSize(22)
        cf.setBold(True)
        self.cue_label.setFont(cf)
        self.cue_label.setFixedWidth(290)  # the panel does not move when the cue changes
        self.panel_labels = [QtWidgets.QLabel("") for _ in range(PANEL_LINES)]
        rows = PANEL_LINES // 2
        tl.addWidget(self.cue_label, 0, 0, rows, 1)
        for i, lab in enumerate(self.panel_labels):
            lab.setTextFormat(QtCore.Qt.TextFormat.RichText)
            tl.addWidget(lab, i % rows, 1 + i // rows)
        tl.setColumnStretch(1, 1)
        tl.setColumnStretch(2, 1)
        top.addWidget(trial, stretch=5)

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

    def _make_rows(self, snap: Snapshot) -> None:
        channels = snap.channels
        self.layout_.clear()
        for w in self.channel_labels:
            w.deleteLater()
        self.channel_labels = []
        self.cache = {}
        d = snap.display
        self.emg_plot: pg.PlotItem = self.layout_.addPlot(row=0, col=0)
        self.env_plot: pg.PlotItem = self.layout_.addPlot(row=0, col=1)
        self.emg_plot.setTitle(
            "EMG as the detector sees it (stimulation blanked, filtered)"
            if snap.emg_from == FROM_SESSION else
            "EMG filtered by the view (this session does not publish its blanked EMG)")
        thresholds = "on/off thresholds" if d.statistic.offsets_on_it else "on-threshold"
        self.env_plot.setTitle(f"{d.stat_name}, {thresholds}, onsets ▲, stimulation")
        for p in (self.emg_plot, self.env_plot):
            p.setLabel("bottom", "time (s), 0 = now")
        self.emg = _Lanes(self.emg_plot, channels, self.window_s, symmetric=True,
                          pen=EMG_PEN, factor=d.emg_factor, unit=d.emg_unit, name="EMG")
        self.env = _Lanes(self.env_plot, channels, self.window_s, symmetric=False,
                          pen=ENV_PEN, factor=d.stat_factor, unit=d.stat_unit, name=d.stat_name)
        for ch in channels:
            lab = QtWidgets.QLabel(ch)
            lab.setTextFormat(QtCore.Qt.TextFormat.RichText)
            lab.setMinimumWidth(190)
            lab.setWordWrap(True)
            self.channel_box.addWidget(lab, stretch=1)
            self.channel_labels.append(lab)
        self.rows = list(range(len(channels)))
        self._channels = channels
        cfg = snap.config
        self._mvc: list[float | None] = [None] * len(channels)
        # % MVC of an EMG level: the envelope of the threshold detector, or the level
        # shown beside a statistic that is not one (cusum)
        if cfg is not None and (cfg.detector_kind == "threshold"
                                or not d.statistic.of_emg):
            by_name = {m.name: m.calibration for m in cfg.muscles}
            self._mvc = [getattr(by_name.get(ch), "mvc", None) for ch in channels]

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
            self._make_rows(snap)
        t = time.monotonic()
        texts = t >= self._next_text  # words and numbers: 4 times a second is plenty
        if texts:
            self._next_text = t + 0.25
            self._update_header(snap)
        # nothing new (the session paused, ended or is not there yet): nothing to
        # redraw; a view left open on an ended session costs next to nothing
        fresh = (snap.now, snap.samples, len(snap.events), len(snap.bands)) != self._drawn
        if math.isfinite(snap.now) and self.rows and (fresh or texts):
            self._drawn = (snap.now, snap.samples, len(snap.events), len(snap.bands))
            if t >= self._next_rescale:
                self._next_rescale = t + 0.5
                self._rescale(snap)
            self._update_lanes(snap)
            if texts:
                for k, name in enumerate(snap.channels):
                    self._update_label(k, name, snap)
        self._fps_n += 1
        t = time.perf_counter()
        if t - self._fps_t0 >= 1.0:
            self.fps = self._fps_n / (t - self._fps_t0)
            self._fps_t0, self._fps_n = t, 0
            if not self._stop_message:
                self._set_text("status", self.statusBar().showMessage,
                               f"{self.fps:.0f} frames/s")

    def _set_text(self, key: object, setter: Callable[[str], object], text: str) -> None:
        """Call ``setter(text)`` only when the text changed (a Qt relayout is not free)."""
        if self.cache.get(("text", key)) != text:
            self.cache[("text", key)] = text
            setter(text)

    def _update_header(self, snap: Snapshot) -> None:
        name = snap.session or self.client.requested or "(any session)"
        patient = snap.patient
        head = f"Patient {patient} · session {name}" if patient else f"Session {name}"
        self._set_text("session", self.session_label.setText, head)
        # looking for the session at start-up is not a fault: grey, not red
        color = {CONNECTED: "#2e7d32", RESOLVING: NEUTRAL}.get(snap.status, "#c62828")
        self._set_text("status", self.status_label.setText,
                       f"<span style='color:{color}'>{html.escape(snap.message)}</span>")
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
        self._set_text("link", self.link_label.setText, f"<span style='color:{c}'>{link}</span>")
        big, lines = panel_text(snap)
        self._set_text("big", self.cue_label.setText, big)
        for i, lab in enumerate(self.panel_labels):
            self._set_text(("panel", i), lab.setText, lines[i] if i < len(lines) else "")

    def _stim_mask(self, snap: Snapshot, t: np.ndarray, name: str) -> np.ndarray:
        """True for bins outside this muscle's stimulation (and the 50 ms after it)."""
        keep = np.ones(t.shape[0], dtype=bool)
        for b in snap.bands:
            if b.muscle != name:
                continue
            end = b.end if math.isfinite(b.end) else snap.now
            keep &= ~((t >= b.start - 0.005) & (t <= end + AFTER_STIM_S))
        return keep

    def _rescale(self, snap: Snapshot) -> None:
        """Fit each lane's scale to the 99.5th percentile of what is shown (changed only
        when off by > 25 %); the axes follow.

        The session's EMG and envelope are blanked already: what remains during
        stimulation is the patient's own EMG, which must set the scale. EMG the view
        filtered itself (a session that does not publish its blanked EMG) still holds
        the artefacts: its stimulation periods are left out.
        """
        emg_changed = env_changed = False
        blanked = snap.emg_from == FROM_SESSION
        for k, name in enumerate(snap.channels):
            if snap.emg_t.shape[0]:
                keep = None if blanked else self._stim_mask(snap, snap.emg_t, name)
                peak = np.maximum(np.abs(snap.emg_lo[:, k]), np.abs(snap.emg_hi[:, k]))
                emg_changed |= self.emg.fit(k, robust_extent(peak, keep))
            if snap.env_t.shape[0]:
                need = robust_extent(snap.env_hi[:, k])
                if snap.thr_on.shape[0] and np.isfinite(snap.thr_on[:, k]).any():
                    need = np.nanmax([need, 1.3 * float(np.nanmax(snap.thr_on[:, k]))])
                env_changed |= self.env.fit(k, float(need))
        if emg_changed:
            self.emg.update_ticks()
        if env_changed:
            self.env.update_ticks()

    def _update_lanes(self, snap: Snapshot) -> None:
        now, w = snap.now, self.window_s
        for lanes, first, t, lo, hi in (
            (self.emg, snap.emg_first, snap.emg_t, snap.emg_lo, snap.emg_hi),
            (self.env, snap.env_first, snap.env_t, snap.env_lo, snap.env_hi),
        ):
            painter = lanes.painter
            if t.shape[0]:
                width = max(50.0, lanes.plot.vb.width())
                # points = 2 x bins ~ POINTS_PER_PIXEL x width
                factor = max(1, int(math.ceil(2 * t.shape[0] / (POINTS_PER_PIXEL * width))))
                t, lo, hi = regroup(first, t, lo, hi, factor)
            if t.shape[0] < 2:
                painter.traces = [None] * len(self.rows)
                continue
            # two points per bin, its minimum then its maximum, every lane at once
            xx = np.repeat(t - now, 2)
            yy = np.empty((xx.shape[0], lo.shape[1]))
            yy[0::2] = lanes.y_all(lo)
            yy[1::2] = lanes.y_all(hi)
            painter.traces = [(xx, yy[:, k]) if lanes.scale[k] > 0 else None
                              for k in self.rows]
        on_lines: list[tuple[int, np.ndarray, np.ndarray]] = []
        off_lines: list[tuple[int, np.ndarray, np.ndarray]] = []
        on_stat = snap.display.statistic.offsets_on_it
        if snap.thr_t.shape[0]:
            for k in self.rows:
                if not self.env.scale[k] > 0:
                    continue
                lines = [(snap.thr_on[:, k], on_lines)]
                if on_stat:  # an off-threshold on another statistic is not drawn here
                    lines.append((snap.thr_off[:, k], off_lines))
                for vals, out in lines:
                    tt, v = _steps(snap.thr_t, vals, self.env.scale[k] * 0.005)
                    x, y = step_xy(tt - now, v, 0.0, -w)
                    out.extend((k, *run) for run in _finite_runs(x, self.env.y(k, y)))
        self.env.painter.on_lines, self.env.painter.off_lines = on_lines, off_lines
        index = {name: k for k, name in enumerate(snap.channels)}
        pts: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
        for e in snap.events:
            k = index.get(e.channel)
            if k is None or not self.env.scale[k] > 0:
                continue
            xs, ys = pts[e.kind == ONSET]
            xs.append(e.time - now)
            # an offset decided on another statistic: its value means nothing here
            value = _finite(e.envelope) if e.kind == ONSET or on_stat else 0.0
            y = float(self.env.y(k, np.array([value]))[0])
            ys.append(min(y, self.env.n - k - 0.12))  # the triangle stays in its lane
        self.env.painter.onsets = (np.array(pts[True][0]), np.array(pts[True][1]))
        self.env.painter.offsets = (np.array(pts[False][0]), np.array(pts[False][1]))
        bands = []
        for b in snap.bands:
            k = index.get(b.muscle)
            if k is None:
                continue
            a = max(b.start - now, -w)
            e = (b.end - now) if math.isfinite(b.end) else 0.0
            if e >= -w:
                bands.append((k, a, e, f"{b.peak_ma:g} mA"))
        self.emg.painter.bands = [(k, a, e, "") for k, a, e, _ in bands]
        self.env.painter.bands = bands
        self.emg.painter.set_frame()
        self.env.painter.set_frame()

    def _update_label(self, k: int, name: str, snap: Snapshot) -> None:
        q = snap.quality.get(name)
        status = q.status if q else NO_DATA
        d = snap.display
        settling = bool(snap.thr_on.shape[0]) and not np.isfinite(snap.thr_on[-1, k])
        if status == NO_DATA:
            quality = f"<span style='color:{NEUTRAL}'>● starting</span>"
        else:
            word = {OK: "signal ok", MAINS: "mains hum", FLAT: "flat",
                    SATURATED: "saturated"}.get(status, status)
            quality = (f"<span style='color:{QUALITY_COLORS.get(status, '#000')}'>"
                       f"● {word}</span>")
        detail = f"<br><small>{html.escape(q.detail)}</small>" if q and q.detail \
            and status != NO_DATA else ""
        if settling:
            state = (f"<br><span style='color:{NEUTRAL}'>settling: learning the rest "
                     "level</span>")
        else:
            state = ""
        env_txt = ""
        mvc = self._mvc[k] if k < len(self._mvc) else None
        if snap.level_now.shape[0] > k and math.isfinite(snap.level_now[k]):
            # the muscle's EMG level beside a statistic that is not one (cusum)
            v = snap.level_now[k]
            env_txt = f"<br>EMG level {fmt_value(v * d.emg_factor)} {d.emg_unit}".rstrip()
            if mvc:
                env_txt += f" ({100.0 * v / mvc:.0f} % MVC)"
        if snap.env_now.shape[0] > k and math.isfinite(snap.env_now[k]):
            v = snap.env_now[k]
            env_txt += f"<br>{d.stat_name} {fmt_value(v * d.stat_factor)} {d.stat_unit}".rstrip()
            if mvc and d.statistic.is_amplitude:
                env_txt += f" ({100.0 * v / mvc:.0f} % MVC)"
            if snap.thr_on.shape[0] and np.isfinite(snap.thr_on[-1, k]):
                env_txt += (f"<br><small>on above {fmt_value(snap.thr_on[-1, k] * d.stat_factor)}"
                            f" {d.stat_unit}</small>")
        stim = snap.stim_now.get(name, 0.0)
        stim_txt = ""
        if stim > 0:
            pw, hz = snap.stim_params.get(name, (math.nan, math.nan))
            parts = [f"{stim:g} mA"] + [f"{x:g} {u}" for x, u in ((pw, "µs"), (hz, "Hz"))
                                         if math.isfinite(x)]
            stim_txt = (f"<br><span style='color:#8d6e00'><b>STIM {' · '.join(parts)}"
                        "</b></span>")
        html_ = (f"<b>{html.escape(name)}</b><br>{quality}{detail}{state}{env_txt}{stim_txt}"
                 f"{mwave_text(snap, name)}")
        self._set_text(("label", k), self.channel_labels[k].setText, html_)
        note, color = ("settling", QtGui.QColor(NEUTRAL)) if settling else ("", None)
        for lanes in (self.emg, self.env):
            lanes.painter.names[k] = (name, note, color)

    # -- helpers ----------------------------------------------------------------------------
    def curve_data(self, channel: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """What is drawn for one channel, in plot coordinates: its EMG and envelope
        traces and its on/off threshold lines (NaN between pieces); for tests."""
        def cat(lines: list[tuple[int, np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, np.ndarray]:
            mine = [(x, y) for k, x, y in lines if k == channel]
            if not mine:
                return np.zeros(0), np.zeros(0)
            return (np.concatenate([np.append(x, np.nan) for x, _ in mine]),
                    np.concatenate([np.append(y, np.nan) for _, y in mine]))

        out = {}
        for key, tr in (("emg", self.emg.painter.traces[channel]),
                        ("env", self.env.painter.traces[channel])):
            out[key] = (np.zeros(0), np.zeros(0)) if tr is None else (tr[0].copy(), tr[1].copy())
        out["on"], out["off"] = cat(self.env.painter.on_lines), cat(self.env.painter.off_lines)
        return out

    def axis_ticks(self, which: str) -> list[tuple[float, str]]:
        """The left axis's labelled ticks of the ``"emg"`` or ``"env"`` plot; for tests."""
        lanes = self.emg if which == "emg" else self.env
        ticks = lanes.plot.getAxis("left")._tickLevels
        return list(ticks[0]) if ticks else []

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


# -- words and numbers -----------------------------------------------------------------------
def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour); ``-`` when unknown."""
    if not math.isfinite(seconds):
        return "-"
    s = int(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def mwave_text(snap: Snapshot, name: str) -> str:
    """The M-wave line of a muscle's label ("" without a measurement): the latest
    peak-to-peak and its % of the first trains at the same current (of the first trains
    the view saw, when it opened after the muscle's first train); while the muscle is
    stimulated and its latest measurement has no response where one is expected, "no
    response" in the warning colour."""
    p = snap.mwave.get(name)
    if p is None:
        return ""
    stimulated = snap.stim_now.get(name, 0.0) > 0
    now = not (math.isfinite(p.time) and math.isfinite(snap.now)) or \
        p.time >= snap.now - MWAVE_FRESH_S
    if p.no_response and stimulated and now:
        return (f"<br><span style='color:{WARNING}'><b>M-wave: no response</b> at "
                f"{p.current_ma:g} mA: check the electrodes</span>")
    d = snap.display
    text = f"M-wave {fmt_value(p.peak_to_peak * d.emg_factor)} {d.emg_unit}".rstrip()
    if math.isfinite(p.percent):
        of = "first trains" if snap.mwave_from_start.get(name) else "first seen"
        text += f" · {p.percent:.0f} % of {of}"
    if not p.present:
        text += " (no response)"
    colour = "#37474f" if stimulated and now else NEUTRAL  # grey: of the last train
    return f"<br><small><span style='color:{colour}'>{text}</span></small>"


def panel_text(snap: Snapshot) -> tuple[str, list[str]]:
    """What the session panel shows: a large line and up to :data:`PANEL_LINES` small ones.

    Triggered assist and reciprocal: triggers, stimulation trains and time, dose used
    of the session limit, elapsed and remaining time, onsets rejected by the
    co-contraction gate. Cued trials: the cue, trial, hits, misses, time to respond,
    and the same time and dose lines. Counted from the session's start (the session's
    published totals); "counting..." until the first total arrives.
    """
    cfg = snap.config
    proto = cfg.protocol if cfg is not None else None
    kind = proto.kind if proto is not None else ""
    counts = snap.counts
    pending = "…" if not snap.counts_complete else None
    tr = counts.trials if counts is not None else {}

    def n(label: str) -> str:
        return pending or str(tr.get(label, 0))

    elapsed = snap.elapsed_s
    duration = snap.duration_s
    lines_time = [f"elapsed <b>{clock(elapsed)}</b>"]
    if kind == "cued_trials" and snap.trial.n_trials and math.isfinite(snap.trial.session_end) \
            and math.isfinite(snap.now):
        lines_time.append(f"remaining <b>{clock(snap.trial.session_end - snap.now)}</b>")
    elif duration is not None and math.isfinite(elapsed):
        lines_time.append(f"remaining <b>{clock(duration - elapsed)}</b> of {clock(duration)}")
    else:
        lines_time.append("remaining: until stopped")
    # stimulation: trains and time of the stimulated muscles, dose against the limit
    stim_lines = []
    if counts is not None and proto is not None:
        upto = snap.position if snap.position else None
        secs = counts.stim_seconds(upto)
        muscles = [m for m in (proto.agonist, getattr(proto, "antagonist", None)) if m]
        stimulated = [m for m in muscles if m in secs] or list(secs)
        trains = sum(counts.stim[m].trains for m in stimulated) if stimulated else 0
        total = max((secs[m] for m in stimulated), default=0.0)
        stim_lines.append(f"stimulation <b>{pending or trains}</b> "
                          f"train{'' if trains == 1 and not pending else 's'}, "
                          f"<b>{pending or f'{sum(secs[m] for m in stimulated):.0f} s'}</b>")
        dose = cfg.safety.session_dose_s if cfg is not None and cfg.safety is not None else None
        if dose:
            used = pending or f"{total:.0f} s of {dose:g} s ({100 * total / dose:.0f} %)"
            stim_lines.append(f"dose used <b>{used}</b>")
    elif counts is not None and not counts.stim:
        stim_lines.append("no stimulation")
    if kind in ("triggered_assist", "reciprocal"):
        big = f"{n('trigger')} triggers"
        gate = getattr(proto, "co_contraction_gate", False)
        extra = [f"rejected (co-contraction) <b>{n('gated')}</b>"] if gate else []
        return big, [*lines_time, *stim_lines, *extra][:PANEL_LINES]
    if kind == "cued_trials":
        t = snap.trial
        if t.done:
            big = "done"
        else:
            big = t.cue.upper() if t.cue else "rest"
        of = f"/{t.n_trials}" if t.n_trials else ""
        # the trial under way: from its cue marker, or (a view opened between cues)
        # the number of cues the session published
        number = t.trial + 1 if t.trial >= 0 else (tr.get("cue") or "-") if not pending else "-"
        trial = f"trial <b>{number}{of}</b>"
        left = t.time_left(snap.now) if math.isfinite(snap.now) else None
        # always a line (empty between cues): the lines after it keep their places
        respond = [f"respond within <b>{left:.1f} s</b>" if left is not None and t.cue else ""]
        score = f"hits <b>{n('hit')}</b> · misses <b>{n('miss')}</b>"
        return big, [trial, score, *respond, *lines_time, *stim_lines][:PANEL_LINES]
    onsets = counts.onsets if counts is not None else {}
    big = "watching" if proto is None else kind
    ons = ", ".join(f"{m} {pending or onsets.get(m, 0)}" for m in snap.channels)
    return big, [f"onsets: {ons}", *lines_time, *stim_lines][:PANEL_LINES]


def _finite_runs(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pieces of a polyline between non-finite values."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.all():
        return [(x, y)]
    out = []
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return out
    breaks = np.flatnonzero(np.diff(idx) > 1)
    for seg in np.split(idx, breaks + 1):
        if seg.size >= 2:
            out.append((x[seg], y[seg]))
    return out


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
