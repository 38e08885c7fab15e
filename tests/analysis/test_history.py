"""A patient's history (closedloop.analysis.history) from record rows: sessions in time
order, weeks, trends, tables that fit 100 columns with units in their headers, and an
HTML page whose values are escaped and whose plots hold every session."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pytest

from closedloop.analysis.history import (
    EFFORT_FIELD,
    WIDTH,
    build_history,
    render_html,
    terminal_lines,
)
from closedloop.io.records import MuscleRecord, SessionRecord


def session(started: str, n: int, *, muscles=("biceps", "triceps"), **kw) -> SessionRecord:
    base = SessionRecord(
        kind="run", patient="P01", started=started, duration_s=1200.0 + 60 * n,
        program="biceps_triceps", exit_reason="duration", exit_code=0, triggers=10 * n,
        hits=10 * n, misses=0, dose_limit_s=1800.0, id=n,
        muscles=tuple(MuscleRecord(m, onsets=10 * n + k, stim_s=30.0 * n + k,
                                   on_threshold_uv=8.0 - n + k, off_threshold_uv=5.0)
                      for k, m in enumerate(muscles)))
    return replace(base, **kw)


CAL = SessionRecord(kind="calibrate", patient="P01", started="2026-03-01T09:00:00+01:00",
                    exit_code=0, id=10,
                    muscles=(MuscleRecord("biceps", on_threshold_uv=7.0, rest_mean_uv=3.0,
                                          rest_sd_uv=0.5, mvc_uv=60.0),))

#: three sessions over two ISO weeks (W10: Mon 2 and Thu 5 March; W11: Mon 9 March)
RUNS = [session("2026-03-09T10:00:00+01:00", 3), session("2026-03-02T10:00:00+01:00", 1),
        session("2026-03-05T10:00:00+01:00", 2, calibration_from=10)]


def test_sessions_in_time_order_with_weeks_and_trends():
    h = build_history([*RUNS, CAL, session("2026-03-03T10:00:00+01:00", 7, patient="P02")],
                      "P01")
    assert [r.triggers for r in h.runs] == [10, 20, 30]
    assert [c.id for c in h.calibrations] == [10]
    assert h.muscles == ["biceps", "triceps"]
    assert [(w.label, w.sessions, w.triggers) for w in h.weeks] == [
        ("2026-W10", 2, 30), ("2026-W11", 1, 30)]
    assert h.weeks[0].stim_min == pytest.approx((30 + 31 + 60 + 61) / 60)
    trends = {(t.metric.key, t.series): t for t in h.trends}
    assert (trends["triggers", ""].first, trends["triggers", ""].last) == (10, 30)
    assert trends["triggers", ""].text() == "10 -> 30 (+20 over 3 sessions)"
    assert trends["threshold", "biceps"].text() == "7.0 -> 5.0 µV (-2.0 over 3 sessions)"
    assert trends["dose", "triceps"].last == pytest.approx(100 * 91 / 1800)
    assert {m.key for m in h.not_recorded} == {"success", "effort", "mwave", "mwave_drop"}
    assert h.period == "2026-03-01 to 2026-03-09"


def test_the_terminal_tables_fit_100_columns_with_units():
    lines = terminal_lines(build_history([*RUNS, CAL], "P01", db="/clinic/closedloop.db"))
    text = "\n".join(lines)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    rows = [line for line in lines if re.match(r"^\s+\d\s+2026-03-\d\d\s+\d\d:\d\d\s", line)]
    assert len(rows) == 3
    assert "biceps_triceps*" in rows[1] and "biceps_triceps*" not in rows[0]
    for header in ("min", "stim s", "dose %", "on-thr µV", "off-thr µV", "rest µV", "MVC µV",
                   "success %", "stim min"):
        assert header in text
    assert "Repetitions (triggers)" in text and "10 -> 30 (+20 over 3 sessions)" in text
    assert "Effort (mean per attempt): not recorded by this version" in text
    assert "Success rate: only cued trials can be missed" in text


def test_wide_histories_still_fit():
    muscles = tuple(f"muscle_with_a_long_name_{k}" for k in range(8))
    runs = [session(f"2026-03-{d:02d}T10:00:00+01:00", d, muscles=muscles,
                    program="a_very_long_program_name_indeed", exit_reason="stop_button",
                    exit_code=3) for d in range(1, 29)]
    lines = terminal_lines(build_history(runs, "P01", db="/a/very/long/path/" * 10))
    assert max(len(line) for line in "\n".join(lines).splitlines()) <= WIDTH


def test_effort_appears_once_a_later_schema_records_it():
    @dataclass(frozen=True)
    class Later(MuscleRecord):  # what a migration adding effort will give
        effort_mean_pct_mvc: float | None = None

    runs = [replace(r, muscles=tuple(Later(**{**m.__dict__, EFFORT_FIELD: 20.0 + 5 * i})
                                     for m in r.muscles))
            for i, r in enumerate(sorted(RUNS, key=lambda r: r.started))]
    h = build_history(runs, "P01")
    assert "effort" in {m.key for m in h.recorded}
    text = "\n".join(terminal_lines(h))
    assert "effort % MVC" in text and "20 -> 30 % MVC (+10 over 3 sessions)" in text
    assert 'data-metric="effort"' in render_html(h)


def test_the_page_escapes_what_it_shows_and_plots_every_session():
    hostile = "<script>alert(1)</script>"
    runs = [replace(r, program=hostile) for r in RUNS]
    page = render_html(build_history([*runs, CAL], "P01", db="/x/<b>.db"), generated="now")
    assert "<script" not in page and "&lt;script&gt;alert(1)" in page
    assert "<b>.db" not in page
    assert len(re.findall(r'<tr class="session">', page)) == 3
    charts = re.findall(r'<svg class="chart" data-metric="(\w+)"', page)
    assert charts == ["triggers", "threshold", "dose"]
    # one point per session and series: triggers 1 series, thresholds and dose 2 each
    assert page.count('<circle class="point"') == 3 * (1 + 2 + 2)
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)  # nothing to fetch


def test_the_m_wave_of_each_stimulated_muscle_over_the_sessions(tmp_path):
    """Stored by schema version 3 (read back from a real file): the first trains'
    amplitude in µV and the drop to the last trains in %, in the per-muscle table, the
    trends and the page's charts; a muscle that was not stimulated has none."""
    from closedloop.io.records import Records

    runs = []
    for i, r in enumerate(sorted(RUNS, key=lambda r: r.started)):
        biceps = replace(r.muscles[0], mwave_current_ma=20.0, mwave_first_uv=1800.0 + 100 * i,
                         mwave_last_uv=1500.0, mwave_drop_pct=30.0 - 5 * i,
                         mwave_no_response=0)
        runs.append(replace(r, id=None, calibration_from=None, muscles=(biceps, r.muscles[1])))
    with Records(tmp_path / "p.db") as db:
        for r in runs:
            db.add(r)
        h = build_history(db.sessions("P01"), "P01")
    assert {"mwave", "mwave_drop"} <= {m.key for m in h.recorded}
    text = "\n".join(terminal_lines(h))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    header = next(line for line in lines if "on-thr µV" in line and "muscle" in line)
    assert "M-wave µV" in header and "M-drop %" in header
    biceps_rows = [line.split() for line in lines if re.match(r"^\s+\d\s+biceps\s", line)]
    assert [row[-2:] for row in biceps_rows] == [["1800", "30"], ["1900", "25"], ["2000", "20"]]
    triceps_rows = [line.split() for line in lines if re.match(r"^\s+\d\s+triceps\s", line)]
    assert all(row[-2:] == ["-", "-"] for row in triceps_rows)
    assert "M-wave amplitude (first trains), biceps  1800 -> 2000 µV (+200 over 3 sessions)" \
        in text
    assert "M-wave drop over the session, biceps" in text and "30 -> 20 %" in text
    page = render_html(h, generated="now")
    charts = re.findall(r'<svg class="chart" data-metric="(\w+)"', page)
    assert charts == ["triggers", "threshold", "dose", "mwave", "mwave_drop"]
    assert "M-wave amplitude (first trains) (µV)" in page
