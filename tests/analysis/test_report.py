"""``closedloop report`` built from in-memory sessions (no XDF, no display).

Two sessions: a synthetic one whose stimulation, trials and warnings are written by hand
(known numbers), and one the live loop ran on the simulated patient with the simulated
stimulator (real blanking, effective samples, a calibration), captured as a recording
would hold it. (The page as a browser renders and prints it: tests/e2e/test_report_page.py.)
"""

from __future__ import annotations

import html as html_
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from closedloop.analysis import report
from closedloop.analysis.processed import Processed
from closedloop.config import loads_config
from closedloop.config.signal import Calibration
from closedloop.core.events import ONSET
from closedloop.core.pipeline import Pipeline
from closedloop.io.outlets import Marker
from closedloop.io.xdf import Session
from closedloop.runtime.checklist import answers_from
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.sim.patient import Attempt, PatientSettings, SimulatedPatient
from closedloop.stim.commands import StimCommand
from closedloop.units import number
from tests.conftest import CONFIGS
from tests.helpers import ArraySource
from tests.runtime.conftest import sim_session

FS = 1000.0
T0 = 1234.5  # stream time of the first sample
CONFIG = """
name = "arm_test"
description = "biceps and triceps, report test"
[session]
source = "sim"
stimulator = "sim"
[detector]
kind = "threshold"
[[muscles]]
name = "biceps"
channel = "EMG1"
[[muscles]]
name = "triceps"
channel = "EMG2"
"""
BICEPS_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # a tiring patient
CHECKLIST = answers_from({"no_implant": True, "no_heart_condition": True,
                          "electrode_sites": True, "skin_intact": True}, "terminal",
                         operator="A. Nurse").to_dict()


def _session(tmp_path: Path) -> Session:
    """60 s of two muscles: 6 unstimulated, weakening biceps attempts and 4 triceps
    attempts that trigger 1 s of stimulation each (taking effect 10 samples after the
    onset); cued trial markers and a warning."""
    ps = PatientSettings(fs=FS, muscles=("biceps", "triceps"), snr_db=15.0)
    script = [Attempt("biceps", 3.0 + 8 * i, 1.5, level) for i, level in enumerate(BICEPS_LEVELS)]
    script += [Attempt("triceps", 7.0 + 8 * i, 1.5) for i in range(4)]
    pat = SimulatedPatient(ps, script, seed=3)
    n = int(60 * FS)
    x = pat.read(n)
    ts = T0 + np.arange(n) / FS
    src = ArraySource(x, FS, ("EMG1", "EMG2"), (10,), timestamps=ts)
    src.open()  # the loop's own events (the input checks' start included)
    events = run_loop(loads_config(CONFIG), src, None,
                      options=LoopOptions(watchdog_s=5.0, history=None)).events
    commands, markers = [], []
    for s, ch in pat.true_onsets():
        markers.append(Marker("truth", float(ts[s]), s, {"muscle": ch}))
    trial = 0
    for e in events:
        if e.kind != ONSET or e.channel != "triceps":
            continue
        wall = 100.0 + e.sample / FS
        on = StimCommand("triceps", 2, 10.0, 300.0, 35.0, e.sample, e.time, "plateau",
                         arrival_wall=wall, handed_wall=wall + 0.0004 + 0.0001 * trial,
                         effective_sample=e.sample + 10)
        # 1 s of stimulation; the last one is cut short after 0.5 s by a safety stop
        dur = 0.5 if trial == 3 else 1.0
        off = replace(on, current_ma=0.0, sample=e.sample + int(dur * FS),
                      stream_time=e.time + dur, phase="stop" if trial == 3 else "off",
                      arrival_wall=np.nan, handed_wall=np.nan,
                      effective_sample=e.sample + int(dur * FS) + 10)
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
        metadata={"session": "P01", "source_kind": "sim", "source_name": "simulated patient",
                  "patient": "P01", "operator": "A. Nurse", "started": "2026-11-21 09:06:11",
                  "checklist": CHECKLIST, "stimulator": "RehaStim2 on /dev/ttyUSB0"},
        stream_names=("P01-EMG", "P01-Events", "P01-Stim", "P01-Markers", "P01-Session"),
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    return _session(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def built(session, tmp_path_factory):
    out = report.build_report(session, tmp_path_factory.mktemp("built") / "report.html")
    return session, out.read_text(encoding="utf-8")


def section(page: str, name: str) -> str:
    """The HTML of ``<section id=name>`` (up to the next top-level section)."""
    start = page.index(f'id="{name}"')
    ends = [page.find(f'<section id="{s}"', start + 1) for s in
            ("warnings", "results", "timeline", "appendix")]
    ends = [e for e in ends if e > 0]
    return page[start : min(ends) if ends else len(page)]


def text(html: str) -> str:
    """The words of some HTML, tags dropped, whitespace squeezed."""
    return html_.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_the_page_is_self_contained_with_its_sections_in_clinical_order(built):
    _, page = built
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    order = [page.index(f'id="{s}"') for s in ("header", "warnings", "results", "stimulation",
                                                "effort", "latency", "timeline", "appendix")]
    assert order == sorted(order)  # warnings at the top, engineering detail last
    assert page.count("<svg") == 2  # the effort and the timeline, inline
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing fetched
    assert "@page" in page and "size: A4" in page  # print CSS


def test_header_says_who_when_what_and_how(built):
    _, page = built
    head = text(section(page, "header"))
    for words in ("Session report: patient P01", "Patient P01", "Date and time 2026-11-21 09:06",
                  "Duration 1 min 00 s", "Program arm_test: biceps and triceps, report test",
                  "Operator A. Nurse", "no stimulation (detection only)",
                  "stimulator RehaStim2 on /dev/ttyUSB0"):
        assert words in head, words
    # the checklist's answers, each question with its answer
    assert head.count(" yes ") == 4 and "NO implanted" not in head
    assert "The patient has NO pacemaker" in head and "answered on the terminal" in head
    assert "none: the detector learnt each muscle's rest level" in head


def test_repetitions_success_stimulation_and_latency(built):
    _, page = built
    results = text(section(page, "results"))
    assert "Repetitions 4 " in results
    assert "Success rate 80 % 4 of 5 cued trials hit" in results
    # 3 x 1 s + 0.5 s at 10 mA, 300 us, 35 Hz: 3 uC per phase x 35/s x 3.5 s = 0.37 mC
    assert ("triceps 2 4 3.5 s - 10 mA 300 µs 35 Hz 0.37 mC" in results)  # no dose limit
    # from the onset to the first pulse: the command took effect 10 samples later
    assert "Onset to stimulation 10 ms median over 4" in results
    assert "4 10 ms 10 ms 10 ms 10 ms" in results


def test_effort_is_measured_during_the_attempt_and_follows_the_tiring_biceps(session, built):
    _, page = built
    cfg, _ = report._config(session)
    rep = report._replay(session, cfg)
    biceps = [a for a in rep.processed.attempts if a.muscle == "biceps"]
    assert len(biceps) == len(BICEPS_LEVELS)
    # during the attempt, not in the rest before it: far above the resting EMG
    band = Pipeline(FS, ("biceps",)).process(session.samples[:2500, :1]).filtered[500:, 0]
    rest = float(np.sqrt(np.mean(band**2)))
    assert all(a.mean > 2.5 * rest and a.peak > a.mean for a in biceps)
    means = [a.mean for a in biceps]
    assert means[-1] < 0.7 * means[0]  # the scripted levels: 1.0 down to 0.5
    effort = text(section(page, "effort"))
    m = re.search(r"biceps 6 ([\d.]+) µV ([\d.]+) µV ([\d.]+) µV ([-+]\d+) % over the session",
                  effort)
    assert m and float(m.group(2)) < float(m.group(1))
    assert -70 < int(m.group(4)) < -25
    assert "Effort per attempt (µV)" in effort


def test_warnings_are_at_the_top_and_only_real_ones(built):
    _, page = built
    warnings = text(section(page, "warnings"))
    assert "Warnings and faults (2)" in warnings
    assert "electrode_warning 20.0 s biceps impedance high; channel=EMG1" in warnings
    assert warnings.count("stimulation stopped") == 1  # the end-of-session off is not one
    assert "triceps (channel 2) was on and was switched off by a stop" in warnings
    assert "LEFT ON" not in page


@pytest.mark.parametrize(("names", "shown"), [
    (("s-a1f-EMG", "s-a1f-Stim", "s-a1f-Events"), "s-a1f-{EMG, Events, Stim}"),
    (("s-1-EMG", "s-1-EMG2"), "s-1-{EMG, EMG2}"),  # the shared part ends at a dash
    (("P01-EMG",), "P01-EMG"),
    (("EMG", "Markers"), "EMG, Markers"),  # nothing shared
    (("lab-EMG", "lab-"), "lab-, lab-EMG"),  # a name that is all shared part
    ((), "-"),
])
def test_the_streams_are_listed_with_their_shared_part_once(names, shown):
    assert report.stream_list(names) == shown


def test_the_appendix_holds_the_engineering_detail(built):
    _, page = built
    appendix = text(section(page, "appendix"))
    assert "60000 samples at 1000 Hz" in appendix
    assert "Streams P01-{EMG, Events, Markers, Session, Stim}" in appendix
    assert "every sample present (the counter runs without gaps)" in appendix
    assert "biceps <- EMG1, triceps <- EMG2" in appendix
    assert "identical: the replay made the recorded" in appendix
    assert "Stimulation at the end every channel off" in appendix
    assert "10 of 10 true attempts detected, 0 false detections" in appendix
    # processing latency stamps: 0.4, 0.5, 0.6, 0.7 ms
    assert "median 0.55 ms" in appendix and "over 4 commands" in appendix
    assert "hit 4" in appendix and "miss 1" in appendix and "cue 5" in appendix


def test_a_recording_that_ends_with_stimulation_on_is_flagged(session, tmp_path):
    on = next(c for c in session.commands if c.current_ma > 0)
    s2 = replace(session, commands=[on], markers=[])
    page = report.build_report(s2, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "LEFT ON: triceps (channel 2)" in text(section(page, "appendix"))
    assert "leaves triceps (channel 2) at 10 mA" in text(section(page, "warnings"))


def test_the_final_all_off_during_stimulation_is_a_fact_not_a_warning(session, tmp_path):
    on = next(c for c in session.commands if c.current_ma > 0)
    end = replace(on, current_ma=0.0, sample=session.n - 1, phase="stop",
                  effective_sample=session.n)
    page = report.build_report(replace(session, commands=[on, end], markers=[]),
                               tmp_path / "r.html").read_text(encoding="utf-8")
    assert ("every channel off; the session ended during stimulation of triceps (channel 2)"
            in text(page))
    assert 'id="warnings"' not in page


def test_report_without_stimulation_trials_or_config(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 1)) * 2.0  # in µV, as the source says
    x[2000:2600] *= 30
    session = Session(path=tmp_path / "other.xdf", name="EMG", fs=FS, channels=("ch1",),
                      units="uV", samples=x, timestamps=np.arange(5000) / FS, counter=None)
    page = report.build_report(session, tmp_path / "r.html").read_text(encoding="utf-8")
    words = text(page)
    assert "the recording holds no config: default settings were used" in words
    assert "no stimulation (detection only)" in words
    assert 'id="stimulation"' not in page and "Repetitions" not in words
    assert "no sample counter recorded" in words
    assert "Attempts detected ch1 1 " in words  # the replay's onset: nothing recorded
    # a source in µV: the EMG is shown as it comes (x1), in µV (the burst: 30 x 2 µV)
    m = re.search(r"ch1 1 ([\d.]+) µV", words)
    assert m and 30 < float(m.group(1)) < 80
    assert 'id="warnings"' not in page  # another tool's recording: nothing wrong with it


def test_a_recording_whose_rate_a_session_would_refuse_is_reported_not_a_traceback(tmp_path):
    """The replay runs the input checks; a stream 10 % off its declared rate stops them
    (as it would stop a session): the report says so at the top."""
    x = np.random.default_rng(0).standard_normal((6000, 1)) * 1e-6
    session = Session(path=tmp_path / "other.xdf", name="EMG", fs=FS, channels=("ch1",),
                      units="uV", samples=x, timestamps=np.arange(6000) / (FS * 0.9),
                      counter=None)
    page = report.build_report(session, tmp_path / "r.html").read_text(encoding="utf-8")
    warnings = text(section(page, "warnings"))
    assert "replay stopped" in warnings and "declares 1000 Hz (10.0% slower" in warnings
    assert "a session would have stopped here" in warnings


def test_input_problems_and_missing_samples_are_warnings(session, tmp_path):
    x = session.samples.copy()
    x[30000:31000, 0] = 0.0  # a flat second on EMG1
    keep = np.r_[0:40000, 40100:60000]  # 100 samples lost
    s2 = replace(session, samples=x[keep], timestamps=session.timestamps[keep],
                 counter=session.counter[keep], commands=[], markers=[], events=[])
    page = report.build_report(s2, tmp_path / "r.html").read_text(encoding="utf-8")
    warnings = text(section(page, "warnings"))
    assert "100 sample(s) missing in 1 place(s)" in warnings
    assert re.search(r"input: (flat|held) \(biceps\) 30\.\d s", warnings)
    assert "input: gap 40.0 s" in warnings
    # every occurrence, in the appendix; said as re-run by the replay (none recorded)
    assert "the input checks, re-run by the replay" in text(section(page, "appendix"))


# -- a session the live loop ran (blanking, effective samples, calibration) -----------------------
CAL = {"biceps": Calibration(rest_mean=2.5e-6, rest_sd=0.6e-6, mvc=40e-6),
       "triceps": Calibration(rest_mean=2.5e-6, rest_sd=0.6e-6, mvc=40e-6)}
SCRIPT = [Attempt("biceps", 2.0 + 10 * i, 1.5, level, 0.04)
          for i, level in enumerate((1.0, 0.9, 0.8, 0.7))]


class Capture:
    """Keeps what the loop publishes, as a recording would hold it."""

    def __init__(self) -> None:
        self.emg, self.ts, self.envelope = [], [], []
        self.events, self.commands, self.markers = [], [], []

    def push_emg(self, samples, timestamps, *, start=None, source_counter=False) -> None:
        self.emg.append(np.array(samples, copy=True))
        self.ts.append(np.array(timestamps, copy=True))

    def push_block(self, block) -> None:
        self.envelope.append(block.envelope.copy())
        self.events += block.events

    def push_commands(self, commands) -> None:
        self.commands += list(commands)

    def push_mwaves(self, records) -> None:
        """Not needed here."""

    def push_marker(self, label, time, *, sample=None, **fields) -> None:
        self.markers.append(Marker(label, time, sample, fields))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    # the threshold detector, whose calibrated thresholds CAL gives (CAL is made up, not
    # measured on this simulated patient: cusum's calibrated rest would not fit it)
    text = (CONFIGS / "biceps_triceps.toml").read_text(encoding="utf-8")
    a, b = text.index("[detector]"), text.index("[[muscles]]")
    cfg = loads_config(text[:a] + '[detector]\nkind = "threshold"\n\n' + text[b:],
                       source="biceps_triceps (threshold)").with_calibrations(CAL)
    cfg = cfg.with_patient("P07", where="test")
    src, stim = sim_session(cfg, SCRIPT, chunk=20)
    cap = Capture()
    out = run_loop(cfg, src, stim, outlets=cap, options=LoopOptions(duration_s=40.0))
    assert out.reason == "duration" and out.trials["trials"] == 4
    x = np.vstack(cap.emg)
    truth = [Marker("truth", float(src.t0 + s / FS), s, {"muscle": m})
             for s, m in src.true_onsets_between(0, x.shape[0])]
    session = Session(
        path=tmp_path_factory.mktemp("live") / "live.xdf", name="P07-EMG", fs=2000.0,
        channels=cfg.muscle_names, units="V", samples=x, timestamps=np.concatenate(cap.ts),
        counter=np.arange(x.shape[0]), events=cap.events, commands=cap.commands,
        markers=cap.markers + truth, config_text=cfg.text,
        metadata={"resolved_config": cfg.resolved, "patient": "P07", "stimulator": "SimStimulator",
                  "calibration": {"from": "patient record", "record_id": 31,
                                  "calibrated": "2026-11-14 10:02", "program": cfg.name}})
    page = report.report_html(session)
    return session, np.vstack(cap.envelope), cfg, page


def test_the_envelope_shown_is_the_one_the_loop_processed_after_blanking(live):
    session, envelope, cfg, _ = live
    rep = report._replay(session, report._config(session)[0])
    assert rep.difference is None  # the replay made the recorded decisions
    pr: Processed = rep.processed
    b = pr.bin_size
    n_bins = pr.env_max.shape[0]
    padded = np.full((n_bins * b, envelope.shape[1]), -np.inf)
    padded[: envelope.shape[0]] = envelope
    assert np.array_equal(pr.env_max, padded.reshape(n_bins, b, -1).max(axis=1))  # to the bit
    # recomputed without blanking, the stimulated biceps drowns in artefacts
    unblanked = Pipeline(2000.0, cfg.muscle_names, cfg).process(session.samples).envelope
    on = np.zeros(session.n, dtype=bool)
    for s in report._stimulation(session):
        for a, e, _ in s.spans:
            on[a:e] = True
    assert on.sum() > 2000
    assert unblanked[on, 0].max() > 20 * envelope[on, 0].max()


def test_effort_in_percent_of_mvc_and_the_calibration_in_the_header(live):
    session, _, _, page = live
    head = text(section(page, "header"))
    assert "Patient P07" in head
    assert "biceps 2.5 µV 0.6 µV 40 µV 6.1 µV" in head  # rest, rest SD, MVC, on-threshold
    assert "from the patient record (#31, calibrated 2026-11-14 10:02)" in head
    effort = text(section(page, "effort"))
    assert "Effort per attempt (% MVC)" in effort
    # mean first 5, last 5, peak: % MVC (µV); the scripted levels fall 1.0 -> 0.7; all 4
    # attempts stimulated, measured between the pulses
    m = re.search(r"biceps 4 ([\d.]+) % \([\d.]+ µV\) [\d.]+ % \([\d.]+ µV\) ([\d.]+) % "
                  r"\([\d.]+ µV\) ([-+]\d+) % over the session 4 ", effort)
    assert m and 10 < float(m.group(1)) < float(m.group(2)) < 100
    assert -45 < int(m.group(3)) < -15
    assert "0 at rest, 100 at the calibrated maximal contraction" in effort


def test_onset_to_stimulation_is_to_the_first_pulse(live):
    session, _, cfg, page = live
    onsets = [e for e in session.events if e.kind == ONSET]
    lat = report._latencies(session, cfg, onsets)
    firsts = [c for i, c in enumerate(session.commands) if c.is_on and c.phase == "ramp_up"
              and (i == 0 or not session.commands[i - 1].is_on)]
    assert lat.size == len(firsts) >= 3
    # decided in a 20-sample chunk, the pulses start at its end: [0.5, 10] ms at 2 kHz,
    # shown to the sample (not rounded to 0 or 1 ms)
    assert np.all((lat > 0) & (lat <= 10.0))
    shortest = report.number(float(np.min(lat)))
    assert re.search(rf"{lat.size} [\d.]+ ms [\d.]+ ms {re.escape(shortest)} ms ",
                     text(section(page, "latency")) + " ")
    results = text(section(page, "results"))
    assert f"Onset to stimulation {report.number(float(np.median(lat)))} ms" in results
    assert "From the EMG onset to the first pulse" in results


def test_only_stimulated_muscles_count_towards_stimulation_time(live):
    """The session's final all-off also addresses the triceps channel, which never
    stimulated: it is not listed with 0 s."""
    session, _, _, page = live
    assert any(c.muscle == "triceps" for c in session.commands)
    assert not any(c.muscle == "triceps" and c.current_ma > 0 for c in session.commands)
    m = re.search(r"Stimulation time (.*?) session limit", text(section(page, "results")))
    assert m and m.group(1).startswith("biceps ") and "triceps" not in m.group(1)


def test_a_clean_session_has_no_warnings(live):
    _, _, _, page = live
    assert 'id="warnings"' not in page
    assert "identical: the replay made the recorded" in text(section(page, "appendix"))


def test_the_trend_of_a_steady_effort_is_0_not_minus_0():
    t = np.arange(10.0)
    assert report._trend(t, 20.0 - 0.0005 * t) == "0 % over the session"
    assert report._trend(t, 20.0 - 0.2 * t) == "-9 % over the session"
    assert report._trend(t[:2], t[:2]) == "- (fewer than 3 attempts)"


# -- the evoked response (M-wave) ----------------------------------------------------------------
MWAVE_CONFIG = """
name = "arm_mwave"
[session]
source = "sim"
stimulator = "sim"
[[muscles]]
name = "biceps"
channel = "biceps"
[[muscles]]
name = "triceps"
channel = "triceps"
"""


@pytest.fixture(scope="module")
def stimulated(tmp_path_factory):
    """60 s on the simulated patient: the biceps tires over 6 repetitions (a staircase
    up to 30 mA), the triceps is stimulated at 25 mA with its electrode detached; the
    M-wave records measured from the raw EMG, as the session records them."""
    from closedloop.core.evoked import EvokedSettings
    from closedloop.sim.patient import FatigueModel, MWaveModel
    from tests.core.stimulated import FS as SFS
    from tests.core.stimulated import Command, stimulate
    from tests.runtime.test_mwaves import repetitions

    schedule = repetitions(6) + [c for k in range(3) for c in (
        Command(int((6.0 + 20 * k) * SFS), "triceps", 25.0),
        Command(int((9.0 + 20 * k) * SFS), "triceps", 0.0))]
    run = stimulate(schedule, 60.0, chunks=(500,), evoked=EvokedSettings(),
                    mwave=MWaveModel(), detached={"triceps": "nothing"},
                    fatigue=FatigueModel(fatigue_s=20.0, recovery_s=200.0))
    channel = {"biceps": 1, "triceps": 2}
    commands = [StimCommand(c.muscle, channel[c.muscle], c.current_ma, c.pulse_width_us,
                            c.frequency_hz, c.sample - 1, T0 + c.sample / SFS,
                            "plateau" if c.current_ma else "off", effective_sample=c.sample)
                for c in sorted(schedule, key=lambda c: c.sample)]
    n = run.raw.shape[0]
    session = Session(
        path=tmp_path_factory.mktemp("mwave") / "s.xdf", name="P02-EMG", fs=SFS,
        channels=("biceps", "triceps"), units="V", samples=run.raw,
        timestamps=T0 + np.arange(n) / SFS, counter=np.arange(n), events=[],
        commands=commands, markers=[], config_text=MWAVE_CONFIG, mwaves=run.records,
        metadata={"session": "P02", "patient": "P02"})
    return session, report.report_html(session)


def test_the_evoked_response_section_recruitment_and_fatigue_in_clinical_units(stimulated):
    from closedloop.runtime.mwaves import track

    session, page = stimulated
    _, summary = track(session.mwaves)
    b = summary["biceps"]
    words = text(section(page, "results"))
    assert "Evoked response (M-wave)" in words
    # per muscle: measurements, working current, first and last trains in µV, last in %
    # of first, latency, no response
    assert (f"biceps {b.records} 30 mA {number(1e6 * b.first_pp)} µV "
            f"{number(1e6 * b.last_pp)} µV {number(100 - b.drop_pct)} % ") in words
    assert 5 < b.drop_pct < 60 and b.no_response == 0
    assert re.search(r"biceps \d+ 30 mA [\d.]+ µV [\d.]+ µV [\d.]+ % [\d.]+ ms 0 ", words)
    t = summary["triceps"]
    assert t.no_response == t.records > 0
    assert f"triceps {t.records} 25 mA - " in words  # no first trains: it never responded
    assert (f"M-wave at the end biceps {number(100 - b.drop_pct)} %, triceps no response "
            "in % of the first trains") in words
    # one figure, two panels: recruitment (µV against mA) and fatigue (% of first trains)
    fig = section(page, "results").split('id="mwave-plot"')[1].split("</figure>")[0]
    assert "<svg" in fig and "recruitment: M-wave against current" in fig
    assert "current (mA)" in fig and "peak-to-peak (µV)" in fig
    assert "% of the first trains" in fig and "triceps: no response" in fig
    # no engineer's numbers: no exponents, no volts
    assert not re.search(r"\d[eE][-+]?\d", words) and " V " not in words


def test_a_muscle_without_a_response_while_stimulated_is_a_warning_at_the_top(stimulated):
    session, page = stimulated
    assert page.index('id="warnings"') < page.index('id="results"')
    warnings = text(section(page, "warnings"))
    first = min(r.sample for r in session.mwaves if r.muscle == "triceps") / session.fs
    assert re.search(r"no evoked response (\d+\.\d) s triceps: no M-wave at any current "
                     r"\(up to 25 mA\) in \d+ of \d+ measurements while it was stimulated: "
                     r"check the electrodes", warnings)
    when = float(re.search(r"no evoked response (\d+\.\d) s", warnings).group(1))
    assert when == pytest.approx(first, abs=0.05)
    assert "biceps: no M-wave" not in warnings  # its sub-threshold steps do not count


def test_a_session_without_m_waves_has_no_such_section(built):
    _, page = built
    assert "Evoked response (M-wave)" not in page and 'id="mwave' not in page


def test_the_m_waves_of_a_recorded_file_reach_the_report(stimulated, tmp_path):
    """Through a real XDF file: SessionOutlets publish the records on the session's
    MWave stream, load_session reads them back, the report shows them."""
    from closedloop.core.stream import SourceInfo
    from closedloop.io.outlets import SessionOutlets
    from closedloop.io.xdf import load_session
    from closedloop.io.xdfwrite import SessionFile

    source, _ = stimulated
    path = tmp_path / "recorded.xdf"
    info = SourceInfo("amp", source.fs, source.channels, "V", "sim")
    with SessionFile(path) as file:
        out = SessionOutlets("P02", info, outlet_factory=file.outlet, with_envelope=False,
                             config_text=MWAVE_CONFIG)
        n, step = source.samples.shape[0], 1000
        for a in range(0, n, step):
            out.push_emg(source.samples[a:a + step], source.timestamps[a:a + step], start=a)
            out.push_commands([c for c in source.commands if a <= c.sample < a + step])
            out.push_mwaves([m for m in source.mwaves if a <= m.sample < a + step])
    recorded = load_session(path)
    assert len(recorded.mwaves) == len(source.mwaves)
    page = report.report_html(recorded)
    assert text(section(page, "results")) == text(section(report.report_html(source),
                                                           "results"))
    assert "Evoked response (M-wave)" in page and "no evoked response" in page


# -- a session the cusum detector decided ----------------------------------------------------------
@pytest.fixture(scope="module")
def cusum_live(tmp_path_factory):
    """The live loop on the simulated patient with ``kind = "cusum"``, calibrated with
    the patient's true rest (the rest variance cusum takes) and an MVC, captured as a
    recording would hold it."""
    from tests.runtime.test_cusum_live import _rest_calibration

    text = (CONFIGS / "biceps_triceps.toml").read_text(encoding="utf-8")
    a, b = text.index("[detector]"), text.index("[[muscles]]")
    cfg = loads_config(text[:a] + '[detector]\nkind = "cusum"\n\n'
                       + text[b:], source="biceps_triceps (cusum)")
    rest = _rest_calibration(cfg, 1.0)
    cal = replace(rest, mvc=10 * rest.rest_mean)
    cfg = cfg.with_calibrations({"biceps": cal, "triceps": cal}).with_patient("P08", where="test")
    src, stim = sim_session(cfg, SCRIPT, chunk=20)
    cap = Capture()
    out = run_loop(cfg, src, stim, outlets=cap, options=LoopOptions(duration_s=40.0))
    assert out.reason == "duration" and out.trials["trials"] >= 3
    x = np.vstack(cap.emg)
    session = Session(
        path=tmp_path_factory.mktemp("cusum") / "cusum.xdf", name="P08-EMG", fs=2000.0,
        channels=cfg.muscle_names, units="V", samples=x, timestamps=np.concatenate(cap.ts),
        counter=np.arange(x.shape[0]), events=cap.events, commands=cap.commands,
        markers=cap.markers, config_text=cfg.text,
        metadata={"resolved_config": cfg.resolved, "patient": "P08",
                  "stimulator": "SimStimulator"})
    return session, np.vstack(cap.envelope), cal, report.report_html(session)


def test_a_cusum_session_shows_the_emg_level_in_microvolts_and_its_statistic_in_nats(
        cusum_live):
    """The cusum statistic (nats) rests at 0 while the muscle is active: the timeline
    shows each muscle's EMG level in µV (the amplitude envelope of the EMG the detector
    saw) above its statistic in nats against its threshold; the calibration table shows
    rest and MVC in µV and no on-threshold (the calibration's envelope threshold, in
    volts, once stood there without a unit: 0.0000071)."""
    session, statistic, cal, page = cusum_live
    rep = report._replay(session, report._config(session)[0])
    assert rep.difference is None
    pr: Processed = rep.processed
    assert pr.level_max is not None and pr.level_min is not None
    attempts = [int(round((2.0 + 10 * i) * 2000 / pr.bin_size)) for i in range(4)]
    during = np.r_[tuple(np.arange(k + 2, k + 10) for k in attempts)]  # 0.25..1.25 s in
    rest = np.arange(int(0.5 * 2000 / pr.bin_size), attempts[0] - 2)
    level = np.nanmedian(pr.level_max[during, 0]) / np.nanmedian(pr.level_max[rest, 0])
    assert level > 2.0  # the biceps' attempts stand out in µV ...
    assert np.nanmedian(pr.env_max[during, 0]) == 0.0  # ... where the statistic rests at 0
    assert np.isfinite(pr.on_threshold[rest, 0]).all()
    assert 1e-6 < np.nanmedian(pr.level_max[rest, 0]) < 3 * cal.rest_mean  # volts at rest
    timeline = section(page, "timeline")
    for words in ("EMG level", "cusum statistic", "on-threshold", "nats", "µV"):
        assert words in timeline, words
    assert "rests at 0 while the muscle is active" in text(timeline)
    head = text(section(page, "header"))
    uv = report.number(cal.rest_mean * 1e6)
    assert re.search(rf"biceps {re.escape(uv)} µV [\d.]+ µV [\d.]+ µV - ", head), head
    assert "decides on its cusum statistic in nats, not on an EMG level" in head
    clinical = text(page)[: text(page).index("Appendix: engineering detail")]
    assert not re.search(r"\b0\.0000\d", clinical)


# -- a bad stretch: the EMG level restarts with the channel ----------------------------------------
KNOCK_CONFIG = """
name = "knock"
[session]
source = "sim"
[envelope]
kind = "{envelope}"
[detector]
kind = "cusum"
[[muscles]]
name = "biceps"
[[muscles]]
name = "triceps"
"""


@pytest.mark.parametrize("envelope, value", [("rms", 1e10), ("lowpass", 1.0),
                                             ("lowpass", 1e10)])
def test_the_emg_level_is_back_at_rest_right_after_a_bad_stretch(envelope, value):
    """5 ms of a knock (1 V, or absurd 1e10 from a driver) on the biceps at rest: the
    input checks restart the channel after it, and so does the EMG level the report
    draws. Before, a lowpass level rang for a second after it (negative, then 1000 x
    rest) and a moving RMS kept a rounding residue that held it at 0 for the rest of the
    session."""
    cfg = loads_config(KNOCK_CONFIG.format(envelope=envelope), source="knock")
    fs, n, knock = 2000.0, 40_000, 20_000
    x = np.random.default_rng(4).normal(0.0, 3e-6, (n, 2))
    x[knock : knock + 10, 0] = value
    session = Session(
        path=Path("knock.xdf"), name="K-EMG", fs=fs, channels=cfg.muscle_names, units="V",
        samples=x, timestamps=T0 + np.arange(n) / fs, counter=np.arange(n), events=[],
        commands=[], markers=[], config_text=cfg.text,
        metadata={"resolved_config": cfg.resolved})
    rep = report._replay(session, cfg)
    pr: Processed = rep.processed
    assert rep.note == "" and pr.level_max is not None
    assert any(m.label == "input_issue" and m.sample is not None and m.sample >= knock
               for m in pr.markers)  # the input checks saw it
    b = pr.bin_size
    rest = np.nanmedian(pr.level_max[: knock // b - 1, 0])
    after = pr.level_max[(knock + 20) // b + 1 : (knock + 6000) // b, 0] / rest  # 3 s
    assert after.size > 100 and (0.3 < after).all() and (after < 3.0).all(), after[:20]
    triceps = pr.level_max[:, 1] / np.nanmedian(pr.level_max[:, 1])  # untouched
    assert (0.3 < triceps[1:]).all() and (triceps < 3.0).all()
