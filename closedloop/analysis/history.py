"""A patient's progress over sessions and weeks, from the patient record.

:func:`build_history` turns the rows of :mod:`closedloop.io.records` into a
:class:`History`: the sessions (``closedloop run``) in order, the calibrations, one row
per ISO week, and for every measure (:data:`METRICS`) its values per session and its
trend (first to last session that has it). Two views of it:

* :func:`terminal_lines`: tables that fit 100 columns, units in the headers, a dash
  where a value was not measured;
* :func:`render_html`: one self-contained page (jinja2 template with autoescape, plots
  as inline SVG drawn here: no script, no file beside it, prints on A4).

The measures: repetitions (triggers), success rate (protocols that can miss), effort in
% MVC, the detector's on-threshold, the stimulation dose (seconds against the session
limit), and the evoked response (M-wave) of each stimulated muscle: its amplitude at the
session's first trains (µV, at the current the muscle was stimulated at most) and its
drop to the last trains (fatigue within the session, %). The M-wave columns came with
schema version 3 (:data:`MWAVE_FIELD`); effort comes from a column a later schema adds
(:data:`EFFORT_FIELD`; see "Adding a measure" in :mod:`closedloop.io.records`). A
measure no session stored shows as not recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from closedloop.io.records import MuscleRecord, SessionRecord

#: The muscle-row field a later schema adds (None until then).
EFFORT_FIELD = "effort_mean_pct_mvc"
#: The muscle-row fields of the M-wave (schema version 3): first trains' amplitude and
#: the drop to the last trains.
MWAVE_FIELD = "mwave_first_uv"
MWAVE_DROP_FIELD = "mwave_drop_pct"

#: Widest line of :func:`terminal_lines`.
WIDTH = 100

DASH = "-"


@dataclass(frozen=True)
class Metric:
    """One measure followed over sessions.

    Attributes
    ----------
    key : str
        Short name (the HTML's ``data-metric``).
    label : str
        What it is, for a clinician.
    unit : str
        Its unit ("" for a count).
    per_muscle : bool
        One value per muscle (else one per session).
    value : callable
        ``value(session, muscle_row)`` -> float or None (not measured).
    digits : int
        Decimals shown.
    missing : str
        Why no session has it, when none has.
    """

    key: str
    label: str
    unit: str
    per_muscle: bool
    value: Callable[[SessionRecord, MuscleRecord | None], float | None]
    digits: int = 1
    missing: str = "not recorded"


def _dose(s: SessionRecord, m: MuscleRecord | None) -> float | None:
    if m is None or m.stim_s is None or not s.dose_limit_s:
        return None
    return 100.0 * m.stim_s / s.dose_limit_s


#: The measures, in the order they are shown.
_LATER = "not recorded by this version of closedloop"

METRICS: tuple[Metric, ...] = (
    Metric("triggers", "Repetitions (triggers)", "", False, lambda s, _m: s.triggers, 0,
           "these sessions had no stimulation protocol"),
    Metric("success", "Success rate", "%", False,
           lambda s, _m: None if s.success_rate is None else 100.0 * s.success_rate, 0,
           "only cued trials can be missed; with triggered assist every trigger is a "
           "repetition"),
    Metric("effort", "Effort (mean per attempt)", "% MVC", True,
           lambda _s, m: getattr(m, EFFORT_FIELD, None), 0, _LATER),
    Metric("threshold", "Detector on-threshold", "µV", True,
           lambda _s, m: m.on_threshold_uv if m else None, 1,
           "no onset was detected, the EMG units were not a voltage, or the detector's "
           "thresholds are not EMG levels (cusum: nats)"),
    Metric("dose", "Stimulation dose", "% of session limit", True, _dose, 1,
           "these sessions did not stimulate"),
    Metric("mwave", "M-wave amplitude (first trains)", "µV", True,
           lambda _s, m: getattr(m, MWAVE_FIELD, None), 0,
           "no evoked response was measured (no stimulation, or recorded before closedloop "
           "measured it)"),
    Metric("mwave_drop", "M-wave drop over the session", "%", True,
           lambda _s, m: getattr(m, MWAVE_DROP_FIELD, None), 0,
           "no evoked response was measured"),
)


@dataclass(frozen=True)
class Series:
    """One line of a metric: its name (a muscle, or "" for a per-session measure) and
    a value per session (None: not measured)."""

    name: str
    values: tuple[float | None, ...]

    @property
    def measured(self) -> list[tuple[int, float]]:
        """(session index, value) of the sessions that have one."""
        return [(i, v) for i, v in enumerate(self.values) if v is not None]


@dataclass(frozen=True)
class Trend:
    """First and last measured value of a series, and over how many sessions."""

    metric: Metric
    series: str
    first: float
    last: float
    n: int

    @property
    def change(self) -> float:
        """Last value minus first."""
        return self.last - self.first

    def text(self) -> str:
        """The trend in words: first, last and the change, with the unit."""
        d = self.metric.digits
        unit = f" {self.metric.unit}" if self.metric.unit else ""
        if self.n < 2:
            return f"{self.first:.{d}f}{unit} (one session)"
        change = round(self.change, d) + 0.0  # no "-0.0" for a change that rounds away
        return (f"{self.first:.{d}f} -> {self.last:.{d}f}{unit} ({change:+.{d}f} over "
                f"{self.n} sessions)")


@dataclass(frozen=True)
class Week:
    """One ISO week of sessions."""

    label: str  # "2026-W10"
    first_day: str
    sessions: int
    triggers: int | None
    success_pct: float | None
    stim_min: float | None
    effort_pct: float | None


@dataclass
class History:
    """Everything the terminal and the page show (see the module docstring)."""

    patient: str
    runs: list[SessionRecord]
    calibrations: list[SessionRecord]
    muscles: list[str]
    series: dict[str, list[Series]] = field(default_factory=dict)
    trends: list[Trend] = field(default_factory=list)
    weeks: list[Week] = field(default_factory=list)
    db: str = ""

    @property
    def recorded(self) -> list[Metric]:
        """Metrics with at least one value."""
        return [m for m in METRICS if any(s.measured for s in self.series[m.key])]

    @property
    def not_recorded(self) -> list[Metric]:
        """The metrics no session recorded."""
        return [m for m in METRICS if m not in self.recorded]

    @property
    def period(self) -> str:
        """The dates of the first and the last session (one date when they are the same day)."""
        days = [s.started_at for s in self.runs + self.calibrations]
        if not days:
            return ""
        a, b = min(days), max(days)
        return a.strftime("%Y-%m-%d") + ("" if a.date() == b.date()
                                         else " to " + b.strftime("%Y-%m-%d"))


def build_history(records: Sequence[SessionRecord], patient: str, *, db: str = "") -> History:
    """The history of ``patient`` from its record rows (any order)."""
    rows = sorted((r for r in records if r.patient == patient),
                  key=lambda r: (r.started_at.timestamp(), r.id or 0))
    runs = [r for r in rows if r.kind == "run"]
    cals = [r for r in rows if r.kind == "calibrate"]
    muscles: list[str] = []
    for r in runs:
        for m in r.muscles:
            if m.muscle not in muscles:
                muscles.append(m.muscle)
    h = History(patient, runs, cals, muscles, db=db)
    for metric in METRICS:
        names = muscles if metric.per_muscle else [""]
        h.series[metric.key] = [
            Series(name, tuple(_value(metric, r, name) for r in runs)) for name in names]
        for s in h.series[metric.key]:
            pts = s.measured
            if pts:
                h.trends.append(Trend(metric, s.name, pts[0][1], pts[-1][1], len(pts)))
    h.weeks = _weeks(runs)
    return h


def _value(metric: Metric, r: SessionRecord, muscle: str) -> float | None:
    v = metric.value(r, r.muscle(muscle) if metric.per_muscle else None)
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _weeks(runs: list[SessionRecord]) -> list[Week]:
    groups: dict[tuple[int, int], list[SessionRecord]] = {}
    for r in runs:
        y, w, _ = r.started_at.isocalendar()
        groups.setdefault((y, w), []).append(r)
    out = []
    for (y, w), rs in sorted(groups.items()):
        trig = [r.triggers for r in rs if r.triggers is not None]
        succ = [100.0 * r.success_rate for r in rs if r.success_rate is not None]
        stim = [m.stim_s for r in rs for m in r.muscles if m.stim_s is not None]
        effort = [v for r in rs for m in r.muscles
                  if (v := getattr(m, EFFORT_FIELD, None)) is not None]
        out.append(Week(
            label=f"{y}-W{w:02d}", first_day=datetime.fromisocalendar(y, w, 1).strftime("%m-%d"),
            sessions=len(rs), triggers=sum(trig) if trig else None,
            success_pct=sum(succ) / len(succ) if succ else None,
            stim_min=sum(stim) / 60.0 if stim else None,
            effort_pct=sum(effort) / len(effort) if effort else None))
    return out


# -- terminal ------------------------------------------------------------------------------
def _f(v: float | int | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return DASH
    return f"{v:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 0,
           indent: str = "  ") -> list[str]:
    """Columns as wide as their widest cell; the first ``left`` columns left-aligned,
    the rest right-aligned; the last column cut to fit :data:`WIDTH`."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        text = (indent + "  ".join(parts)).rstrip()
        return text if len(text) <= WIDTH else text[: WIDTH - 3] + "..."

    return [line(headers)] + [line(r) for r in rows]


def session_rows(h: History) -> list[list[str]]:
    """The sessions table: one row per run (the HTML uses the same cells)."""
    out = []
    for i, r in enumerate(h.runs, 1):
        t = r.started_at
        stim = [m.stim_s for m in r.muscles if m.stim_s is not None]
        dose = [d for m in r.muscles if (d := _dose(r, m)) is not None]
        program = (r.program or DASH)[:16] + ("*" if r.calibration_from is not None else "")
        out.append([
            str(i), t.strftime("%Y-%m-%d"), t.strftime("%H:%M"), program,
            _f(r.duration_s / 60.0 if r.duration_s is not None else None),
            _f(r.triggers, 0), _f(None if r.success_rate is None else 100 * r.success_rate, 0),
            _f(sum(stim) if stim else None), _f(max(dose) if dose else None),
            _f(r.exit_code, 0), r.exit_reason or DASH])
    return out


SESSION_HEADERS = ("#", "date", "time", "program", "min", "reps", "success %", "stim s",
                   "dose %", "exit", "ended")

#: What the marks in the sessions table mean.
SESSION_NOTE = ("reps: repetitions (triggers or trials); min: minutes of EMG; stim s: all "
                "muscles; dose %: the most-stimulated muscle against the session limit; "
                "*: started from a stored calibration")


#: Headers of the per-muscle columns of measures a session may not have.
COLUMNS = {"effort": "effort % MVC", "mwave": "M-wave µV", "mwave_drop": "M-drop %"}


#: What the per-muscle table's thresholds are.
MUSCLE_NOTE = ("detector: the one that decided the onsets; thresholds: of the EMG envelope "
               "in µV, in force at the session's onsets (none for a detector whose statistic "
               "is not an EMG level: cusum decides on a log-likelihood ratio in nats)")


def muscle_rows(h: History) -> tuple[list[str], list[list[str]]]:
    """Per session and muscle: the detector that decided, onsets, thresholds,
    stimulation, dose (and effort and M-wave when recorded)."""
    headers = ["#", "muscle", "detector", "onsets", "on-thr µV", "off-thr µV", "stim s",
               "dose %"]
    extra = [m for m in h.recorded if m.key in COLUMNS]
    headers += [COLUMNS[m.key] for m in extra]
    rows = []
    for i, r in enumerate(h.runs, 1):
        for name in h.muscles:
            m = r.muscle(name)
            if m is None:
                continue
            rows.append([str(i), name, (r.detector or DASH)[:16], _f(m.onsets, 0),
                         _f(m.on_threshold_uv),
                         _f(m.off_threshold_uv), _f(m.stim_s), _f(_dose(r, m))]
                        + [_f(x.value(r, m), x.digits) for x in extra])
    return headers, rows


CALIBRATION_HEADERS = ("date", "time", "muscle", "rest µV", "rest SD µV", "MVC µV",
                       "on-thr µV", "result")


def calibration_rows(h: History) -> list[list[str]]:
    rows = []
    for r in h.calibrations:
        t = r.started_at
        for m in r.muscles:
            rows.append([t.strftime("%Y-%m-%d"), t.strftime("%H:%M"), m.muscle,
                         _f(m.rest_mean_uv), _f(m.rest_sd_uv), _f(m.mvc_uv),
                         _f(m.on_threshold_uv),
                         "accepted" if r.exit_code == 0 else "refused"])
    return rows


WEEK_HEADERS = ("week", "from", "sessions", "reps", "success %", "stim min",
                "effort % MVC")


def week_rows(h: History) -> list[list[str]]:
    return [[w.label, w.first_day, str(w.sessions), _f(w.triggers, 0), _f(w.success_pct, 0),
             _f(w.stim_min), _f(w.effort_pct, 0)] for w in h.weeks]


def trend_rows(h: History) -> list[tuple[str, str]]:
    """(what, trend) for every measured series."""
    return [(t.metric.label + (f", {t.series}" if t.series else ""), t.text())
            for t in h.trends]


def terminal_lines(h: History) -> list[str]:
    """The history as text tables that fit :data:`WIDTH` columns."""
    n, c = len(h.runs), len(h.calibrations)
    lines = [f"Patient {h.patient}: {n} session{'s' * (n != 1)}, {c} calibration"
             f"{'s' * (c != 1)}" + (f", {h.period}" if h.period else "")]
    if h.db:
        lines.append(f"  record: {h.db}"[:WIDTH])
    if h.runs:
        lines += ["", "Sessions"] + _table(SESSION_HEADERS, session_rows(h), left=4)
        lines += [_wrap(SESSION_NOTE, "  ")]
        headers, rows = muscle_rows(h)
        lines += ["", "Per muscle (# as above)"]
        lines += _table(headers, rows, left=3)
        lines += [_wrap(MUSCLE_NOTE, "  ")]
        lines += ["", "Weeks"] + _table(WEEK_HEADERS, week_rows(h), left=2)
        trends = trend_rows(h)
        if trends:
            width = max(len(a) for a, _ in trends)
            lines += ["", "Trends (first -> last session that measured it)"]
            lines += [f"  {a.ljust(width)}  {b}"[:WIDTH] for a, b in trends]
    if h.calibrations:
        lines += ["", "Calibrations"] + _table(CALIBRATION_HEADERS, calibration_rows(h),
                                               left=3)
    if h.runs and h.not_recorded:
        lines += ["", "Not in these sessions"]
        lines += [_wrap(f"{m.label}: {m.missing}", "  ") for m in h.not_recorded]
    return lines


def _wrap(text: str, indent: str = "") -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, WIDTH, initial_indent=indent,
                                    subsequent_indent=indent + "  "))


# -- HTML --------------------------------------------------------------------------------------
#: Colours of the series (colour-blind safe, Okabe-Ito).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")


@dataclass(frozen=True)
class Chart:
    """A line chart laid out for inline SVG (coordinates in SVG units)."""

    metric: Metric
    width: int
    height: int
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str, str]]  # x, session number, date
    lines: list[dict]  # name, colour, points [(x, y, title)], path


def _ticks(top: float, n: int = 4, *, least: float = 0.0) -> list[float]:
    """0 to a round number at or above ``top`` in about ``n`` round steps (1, 2, 2.5 or 5
    x a power of ten, at least ``least``: 1 for counts)."""
    if not top > 0:
        top = max(least, 1.0)
    raw = max(top / n, least)
    exp = 10.0 ** math.floor(math.log10(raw))
    step = next(m * exp for m in (1, 2, 2.5, 5, 10) if raw <= m * exp * (1 + 1e-9))
    k = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(k + 1)]


def _tick_label(v: float) -> str:
    return f"{v:g}"


def chart(h: History, metric: Metric, *, width: int = 720, height: int = 230) -> Chart:
    """The chart of ``metric`` over the sessions (x: session number, y from 0)."""
    left, top, right, bottom = 64.0, 16.0, width - 130.0, height - 44.0
    series = [s for s in h.series[metric.key] if s.measured]
    ticks = _ticks(max((v for s in series for _, v in s.measured), default=1.0),
                   least=1.0 if metric.digits == 0 else 0.0)
    ymax = ticks[-1]
    n = len(h.runs)

    def x(i: int) -> float:
        return (left + right) / 2 if n == 1 else left + i * (right - left) / (n - 1)

    def y(v: float) -> float:
        return bottom - max(0.0, v) / ymax * (bottom - top)

    step = max(1, math.ceil(n / 12))
    x_ticks = [(x(i), str(i + 1), r.started_at.strftime("%m-%d"))
               for i, r in enumerate(h.runs) if i % step == 0 or i == n - 1]
    y_ticks = [(y(v), _tick_label(v)) for v in ticks]
    lines = []
    for k, s in enumerate(series):
        pts = [(x(i), y(v), f"session {i + 1}, {h.runs[i].started_at:%Y-%m-%d %H:%M}: "
                f"{v:.{metric.digits}f} {metric.unit}".rstrip()) for i, v in s.measured]
        path = " ".join(f"{'M' if j == 0 else 'L'}{px:.1f},{py:.1f}"
                        for j, (px, py, _) in enumerate(pts))
        lines.append({"name": s.name, "colour": COLOURS[k % len(COLOURS)],
                      "points": pts, "path": path})
    return Chart(metric, width, height, (left, top, right, bottom), y_ticks, x_ticks, lines)


def render_html(h: History, *, generated: str | None = None) -> str:
    """The history page (self-contained HTML)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("closedloop.analysis", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    headers, rows = muscle_rows(h)
    return env.get_template("history.html").render(
        h=h, generated=generated or datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %z"),
        charts=[chart(h, m) for m in h.recorded],
        session_headers=SESSION_HEADERS, session_rows=session_rows(h),
        muscle_headers=headers, muscle_rows=rows,
        week_headers=WEEK_HEADERS, week_rows=week_rows(h),
        calibration_headers=CALIBRATION_HEADERS, calibration_rows=calibration_rows(h),
        trends=trend_rows(h),
        session_note=SESSION_NOTE, muscle_note=MUSCLE_NOTE,
        not_recorded=[(m.label, m.missing) for m in h.not_recorded])


__all__ = ["COLUMNS", "EFFORT_FIELD", "METRICS", "MWAVE_DROP_FIELD", "MWAVE_FIELD", "WIDTH",
           "Chart", "History", "Metric", "Series", "Trend", "Week", "build_history", "chart",
           "render_html", "terminal_lines"]
