"""``closedloop report`` built from an in-memory simulated session (no XDF, no display)."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from closedloop.analysis import report
from closedloop.core.events import ONSET
from closedloop.core.pipeline import Pipeline
from closedloop.io.outlets import Marker
from closedloop.io.xdf import Session
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient
from closedloop.stim.commands import StimCommand

FS = 1000.0
T0 = 1234.5  # stream time of the first sample
CONFIG = """
name = "arm_test"
description = "biceps and triceps, report test"
[session]
source = "sim"
stimulator = "sim"
[[muscles]]
name = "biceps"
channel = "EMG1"
[[muscles]]
name = "triceps"
channel = "EMG2"
"""
BICEPS_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # a tiring patient


def _session(tmp_path: Path) -> Session:
    """60 s of two muscles: 6 unstimulated, weakening biceps attempts and 4 triceps
    attempts that trigger 1 s of stimulation each; cued trial markers and a warning."""
    ps = PatientSettings(fs=FS, muscles=("biceps", "triceps"), snr_db=15.0)
    script = [Attempt("biceps", 3.0 + 8 * i, 1.5, level) for i, level in enumerate(BICEPS_LEVELS)]
    script += [Attempt("triceps", 7.0 + 8 * i, 1.5) for i in range(4)]
    pat = SimulatedPatient(ps, script, seed=3)
    n = int(60 * FS)
    x = pat.read(n)
    ts = T0 + np.arange(n) / FS
    events = []
    pipe = Pipeline(FS, ps.muscles)
    for a in range(0, n, 10):
        events.extend(pipe.process(x[a : a + 10], ts[a : a + 10]).events)
    commands, markers = [], []
    for s, ch in pat.true_onsets():
        markers.append(Marker("truth", float(ts[s]), s, {"muscle": ch}))
    trial = 0
    for e in events:
        if e.kind != ONSET or e.channel != "triceps":
            continue
        wall = 100.0 + e.sample / FS
        on = StimCommand("triceps", 2, 10.0, 300.0, 35.0, e.sample, e.time, "plateau",
                         arrival_wall=wall, handed_wall=wall + 0.0004 + 0.0001 * trial)
        # 1 s of stimulation; the last one is cut short after 0.5 s by a safety stop
        dur = 0.5 if trial == 3 else 1.0
        off = replace(on, current_ma=0.0, sample=e.sample + int(dur * FS),
                      stream_time=e.time + dur, phase="stop" if trial == 3 else "off",
                      arrival_wall=np.nan, handed_wall=np.nan)
        commands += [on, off]
        markers.append(Marker("cue", e.time - 0.5, e.sample - 500, {"trial": trial}))
        markers.append(Marker("hit", e.time, e.sample, {"trial": trial, "muscle": "triceps"}))
        trial += 1
    markers.append(Marker("cue", T0 + 55.0, 55000, {"trial": trial}))
    markers.append(Marker("miss", T0 + 58.0, 58000, {"trial": trial, "muscle": "triceps"}))
    markers.append(Marker("electrode_warning", T0 + 20.0, None,
                          {"message": "biceps impedance high", "channel": "EMG1"}))
    # the end of the session: every channel off (not a warning)
    commands.append(StimCommand("triceps", 2, 0.0, 300.0, 35.0, 59999, T0 + 59.999, "stop"))
    markers.sort(key=lambda m: m.time)
    return Session(
        path=tmp_path / "session.xdf", name="P01-EMG", fs=FS, channels=("EMG1", "EMG2"),
        units="V", samples=x, timestamps=ts, counter=np.arange(n), events=events,
        commands=commands, markers=markers, config_text=CONFIG,
        metadata={"session": "P01", "source_kind": "sim", "source_name": "simulated patient"},
        stream_names=("P01-EMG", "P01-Events", "P01-Stim", "P01-Markers", "P01-Session"),
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    return _session(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def built(session, tmp_path_factory):
    out = report.build_report(session, tmp_path_factory.mktemp("built") / "report.html")
    return session, out.read_text(encoding="utf-8")


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_has_every_section_and_figure(built):
    _, page = built
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for section in ("facts", "envelopes", "trials", "latency", "stimulation", "amplitude",
                    "warnings"):
        assert f'<h2 id="{section}">' in page, section
    assert len(_pngs(page)) == 5  # envelopes, trials, latency, charge, amplitude
    # self-contained: no external files or scripts
    assert "<script" not in page and not re.search(r'src="(?!data:)', page)
    assert "Session report: arm_test" in page


def test_session_facts(built):
    _, page = built
    assert "1 min 00.0 s (60000 samples at 1000 Hz)" in page
    assert "every sample present (counter without gaps)" in page
    assert "biceps &lt;- EMG1, triceps &lt;- EMG2" in page
    assert "sim (simulated patient)" in page


def test_envelope_recomputation_reproduces_the_recorded_onsets(built):
    session, page = built
    n_on = sum(e.kind == ONSET for e in session.events)
    assert n_on == 10
    assert f"{n_on} of {n_on} recorded onsets reproduced at the same sample" in page


def test_trials_latency_stimulation_and_truth(built):
    _, page = built
    assert "5 cued trials: 4 hit(s), 1 miss(es), hit rate 80%." in page
    assert "sensitivity 10/10, 0 false" in page
    # processing latency stamps: 0.4, 0.5, 0.6, 0.7 ms
    assert re.search(r"processing \(arrival -&gt; handed, wall clock\)</td><td>4</td>"
                     r"<td>0.55</td>", page)
    # triggered at the onset sample itself: 0 ms from onset to command
    assert re.search(r"onset decision -&gt; command \(samples\)</td><td>4</td><td>0</td>", page)
    # 3 x 1 s + 0.5 s at 10 mA, 300 us, 35 Hz: 3 uC per phase, 122.5 pulses, 0.3675 mC
    assert re.search(r"<td>triceps</td><td>2</td><td>4</td><td>3.5</td><td>122</td><td>10</td>"
                     r"<td>3</td><td>0.367</td>", page)
    assert "<td>stimulation at the end</td><td>every channel off</td>" in page


def test_amplitude_trend_shows_the_tiring_biceps(built):
    session, page = built
    rc = report._recompute(session, report._config(session)[0])
    amps = report._attempt_amplitudes(session, rc, session.events,
                                      report._stim_intervals(session))
    biceps = [a for _, a, pre in amps["biceps"]]
    assert len(biceps) == len(BICEPS_LEVELS) and not any(pre for *_, pre in amps["biceps"])
    # the RMS follows the scripted levels (1.0 down to 0.5)
    assert biceps[-1] < 0.7 * biceps[0]
    assert np.all(np.diff(biceps) < 0.05 * biceps[0])
    # stimulated triceps attempts are measured in the 50 ms before the onset; the last
    # stimulation was stopped after 0.5 s, so that attempt's unstimulated rest is used
    assert [pre for *_, pre in amps["triceps"]] == [True, True, True, False]
    m = re.search(r"<td>biceps</td><td>6</td><td>0</td><td>[^<]+</td><td>[^<]+</td>"
                  r"<td>([-+][0-9]+) % from first to last</td>", page)
    assert m and -70 < int(m.group(1)) < -30  # scripted: 1.0 -> 0.5


def test_warnings(built):
    _, page = built
    warnings = page[page.index('<h2 id="warnings">') :]
    assert "electrode_warning" in warnings and "biceps impedance high; channel=EMG1" in warnings
    assert warnings.count("stop command") == 1  # the end-of-session off is not one
    assert "triceps (channel 2) was on and was switched off by a stop" in warnings
    assert "left on" not in warnings


def test_a_recording_that_ends_with_stimulation_on_is_flagged(session, tmp_path):
    on = next(c for c in session.commands if c.current_ma > 0)
    s2 = replace(session, commands=[on], markers=[])
    page = report.build_report(s2, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "LEFT ON: triceps (channel 2)" in page
    assert "leaves triceps (channel 2) at 10 mA" in page


def test_figures_are_real_images(built):
    import matplotlib.image as mpimg

    _, page = built
    for png in _pngs(page):
        img = mpimg.imread(io.BytesIO(png), format="png")
        h, w = img.shape[:2]
        assert 800 <= w <= 2000 and 200 <= h <= 1500
        rgb = img[..., :3]
        assert rgb.std() > 0.05  # not blank
        assert np.mean(rgb.min(axis=-1) < 0.8) > 0.01  # some ink on the page


def test_report_without_stimulation_trials_or_config(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 1)) * 1e-6
    x[2000:2600] *= 30
    session = Session(path=tmp_path / "other.xdf", name="EMG", fs=FS, channels=("ch1",),
                      units="uV", samples=x, timestamps=np.arange(5000) / FS, counter=None)
    page = report.build_report(session, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "the recording holds no config" in page
    assert "No trial markers recorded." in page and "No stimulation commands recorded." in page
    assert "no sample counter recorded" in page
    assert "1 onsets recomputed" in page
    assert len(_pngs(page)) == 2  # envelopes and amplitude


def test_a_recording_whose_rate_a_session_would_refuse_is_reported_not_a_traceback(tmp_path):
    """Without input_issue markers the report re-runs the input checks; a stream 10 %
    off its declared rate stops them (as it would stop a session): the report says so."""
    x = np.random.default_rng(0).standard_normal((6000, 1)) * 1e-6
    session = Session(path=tmp_path / "other.xdf", name="EMG", fs=FS, channels=("ch1",),
                      units="uV", samples=x, timestamps=np.arange(6000) / (FS * 0.9),
                      counter=None)
    page = report.build_report(session, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "input: unusable" in page and "declares 1000 Hz (10.0% slower" in page


def test_input_problems_and_missing_samples_are_warnings(session, tmp_path):
    x = session.samples.copy()
    x[30000:31000, 0] = 0.0  # a flat second on EMG1
    keep = np.r_[0:40000, 40100:60000]  # 100 samples lost
    s2 = replace(session, samples=x[keep], timestamps=session.timestamps[keep],
                 counter=session.counter[keep], commands=[], markers=[])
    page = report.build_report(s2, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "100 sample(s) missing in 1 place(s)" in page
    assert "input: flat" in page and "input: gap" in page


def test_the_final_all_off_during_stimulation_is_a_fact_not_a_warning(session, tmp_path):
    on = next(c for c in session.commands if c.current_ma > 0)
    end = replace(on, current_ma=0.0, sample=session.n - 1, phase="stop")
    page = report.build_report(replace(session, commands=[on, end], markers=[]),
                               tmp_path / "r.html").read_text(encoding="utf-8")
    assert ("every channel off; the session ended during stimulation of triceps (channel 2)"
            in page)
    assert "<td>stop command</td>" not in page
