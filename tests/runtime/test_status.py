"""The live status line and the end-of-session summary a clinician reads: clinical
units (µV, mA, Hz, s), muscle names, labels, the terminal's width, and no alarming
state while the filters settle at the start of a clean session."""

from __future__ import annotations

import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from closedloop.commands.run import summary_lines
from closedloop.core.events import Block
from closedloop.core.stream import SourceInfo
from closedloop.runtime.loop import LoopOptions, run_loop
from closedloop.runtime.status import StatusLine
from closedloop.sim.patient import Attempt
from closedloop.stim.base import ChannelOutput
from tests.runtime.conftest import sim_session, with_detector

FS = 2000.0
SCRIPT = [Attempt("biceps", 2.0, 1.5, 1.0, 0.04), Attempt("triceps", 9.0, 1.0, 1.0, 0.04)]


@pytest.fixture(scope="module")
def shipped():
    """The shipped config as it is (its detector: cusum)."""
    from closedloop.config import load_config
    from tests.conftest import CONFIGS

    return load_config(CONFIGS / "biceps_triceps.toml")


@pytest.fixture(scope="module")
def config(config):
    """The shipped config with the envelope threshold detector: the status line shows
    the envelope in µV against its threshold (the other detectors are tested below)."""
    return with_detector(config, "threshold")


@pytest.fixture(scope="module")
def clean(config):
    """A clean simulated session (stimulation and its artefacts included) with a status
    line for every chunk, on an 80-column terminal."""
    mp = pytest.MonkeyPatch()
    mp.setenv("COLUMNS", "80")
    try:
        src, stim = sim_session(config, SCRIPT, chunk=20)
        lines: list[str] = []
        out = run_loop(config, src, stim, status=lines.append,
                       options=LoopOptions(duration_s=12.0, watchdog_s=5.0, status_every_s=0.0))
    finally:
        mp.undo()
    assert out.reason == "duration" and out.trials["trials"] == 1
    return out, lines


def status_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("t ")]


def test_a_clean_session_starts_settling_not_suspended(clean):
    _, lines = clean
    status = status_lines(lines)
    assert len(status) > 500
    assert not [ln for ln in lines if not ln.startswith("t ")]  # no input or safety message
    for ln in status:
        assert "nan" not in ln.lower() and "SUSPENDED" not in ln and "HELD" not in ln, ln
    assert "biceps settling" in status[0] and "triceps settling" in status[0]
    # settled within the first seconds: then the envelope against its threshold
    assert "settling" not in status[len(status) // 4]


def test_a_cusum_session_settles_then_shows_its_evidence(shipped):
    """The shipped detector (cusum): "settling" while it learns the rest (never "-" or
    "nan"), then its statistic against its threshold, on an 80-column line."""
    assert shipped.detector_kind == "cusum"
    src, stim = sim_session(shipped, SCRIPT, chunk=20)
    lines: list[str] = []
    run_loop(shipped, src, stim, status=lines.append,
             options=LoopOptions(duration_s=4.0, watchdog_s=5.0, status_every_s=0.0))
    status = status_lines(lines)
    assert "biceps settling" in status[0] and "triceps settling" in status[0]
    for ln in status:
        assert "nan" not in ln.lower() and "-/" not in ln and len(ln) <= 79, ln
    # both muscles, each with its EMG level in µV beside its statistic in nats
    number = r"\d+(\.\d)?"
    assert re.search(rf"µV/nats: biceps {number}/{number}( stim \d+ mA)?, triceps "
                     rf"{number}/{number}$", status[-1]), status[-1]


def test_every_status_line_fits_and_carries_its_units(clean):
    _, lines = clean
    status = status_lines(lines)
    for ln in status:
        assert len(ln) <= 79, ln
        assert re.match(r"t \d+\.\d s \| triggers \d", ln), ln
        assert "µV" in ln or "settling" in ln, ln  # the EMG in µV (the sim source is in V)
        assert "ch1" not in ln and "e-0" not in ln, ln  # muscle names, no exponents
    on = [ln for ln in status if " mA" in ln]
    assert on and all("biceps" in ln for ln in on)  # the muscle stimulated, by name
    assert all(re.search(r"biceps \d+(\.\d)?/\d+(\.\d)? stim \d+ mA", ln) for ln in on)
    assert any("stim 20 mA" in ln for ln in on)  # the plateau, between the ramps
    assert any("stim off" in ln for ln in status)


def _block(values_v: list[float], thresholds_v: list[float], names: tuple[str, ...]) -> Block:
    n = len(names)
    return Block(start=20_000, timestamps=np.arange(20) / FS, filtered=np.zeros((20, n)),
                 envelope=np.tile(values_v, (20, 1)), above=np.zeros((20, n), dtype=bool),
                 on_threshold=np.array(thresholds_v), off_threshold=np.array(thresholds_v),
                 channels=names)


@pytest.mark.parametrize(("units", "scale", "shown"), [
    ("V", 1e-6, "biceps envelope 3.1 µV, on above 6.2 µV"),
    ("mV", 1e-3, "biceps envelope 3.1 µV, on above 6.2 µV"),
    ("uV", 1.0, "biceps envelope 3.1 µV, on above 6.2 µV"),
    ("counts", 1.0, "biceps envelope 3.1 counts, on above 6.2 counts"),
])
def test_units_of_the_source_become_microvolts(config, units, scale, shown):
    show = StatusLine(config, SourceInfo("amp", FS, ("a", "b"), units=units), width=200)
    line = show(_block([3.1 * scale, 4.0 * scale], [6.2 * scale, 7.0 * scale],
                       config.muscle_names), None, None, ["", ""])
    assert line.startswith("t 10.0 s | biceps")
    assert shown in line


def test_the_statistic_of_other_detectors_is_named_with_its_unit(config):
    tkeo = replace(config, detector_kind="tkeo")
    show = StatusLine(tkeo, SourceInfo("amp", FS, ("a", "b"), units="mV"), width=200)
    line = show(_block([2e-6, 2e-6], [5e-6, 5e-6], config.muscle_names), None, None, ["", ""])
    assert "biceps TKEO energy 2 µV², on above 5 µV²" in line

def test_a_cusum_session_shows_its_statistic_in_nats_and_the_emg_level_in_microvolts(config):
    """The cusum statistic is a log-likelihood ratio in nats (once shown without a
    unit), which rests at 0 while the muscle is active: beside it, the muscle's EMG
    level in µV (the RMS of the EMG the detector saw over the envelope's window)."""
    cusum = replace(config, detector_kind="cusum")
    show = StatusLine(cusum, SourceInfo("amp", FS, ("a", "b"), units="V"), width=200)
    block = _block([1.5, 0.2], [4.0, 4.0], config.muscle_names)
    filtered = np.zeros((20, 2))
    filtered[:, 0] = 12e-6 * np.where(np.arange(20) % 2, 1.0, -1.0)  # RMS 12 µV
    filtered[-5:, 1] = 2e-6  # the triceps: RMS 1 µV over the 20 samples (the window: 30)
    line = show(replace(block, filtered=filtered), None, None, ["", ""])
    assert "biceps EMG 12 µV, cusum statistic 1.5 nats, on above 4 nats" in line, line
    assert "triceps EMG 1 µV, cusum statistic 0.2 nats, on above 4 nats" in line, line
    narrow = StatusLine(cusum, SourceInfo("amp", FS, ("a", "b"), units="V"), width=79)
    assert narrow(replace(block, filtered=filtered), None, None, ["", ""]) == (
        "t 10.0 s | stat/thr nats: biceps 12 µV 1.5/4.0, triceps 1.0 µV 0.2/4.0")


class _Assist:
    kind = "triggered_assist"
    counts = SimpleNamespace(trials=14, hits=0, misses=0, gated=0)


@pytest.mark.parametrize("names", [
    ("biceps", "triceps"),
    ("biceps", "triceps", "wrist_flexor", "wrist_extensor"),
])
def test_an_80_column_cusum_line_shows_the_emg_level_beside_the_statistic(
        config, names, monkeypatch):
    """On an 80-column terminal a cusum session's line once showed only nats (0 while
    the muscle is active): it shows each muscle's EMG level too, abbreviated (``µV/nats:
    biceps 12/1.5``), whole numbers only, never wider than the terminal; a muscle that
    does not fit is counted (``+2 more``), the stimulated one stays."""
    monkeypatch.setenv("COLUMNS", "80")
    cusum = replace(config, detector_kind="cusum")
    show = StatusLine(cusum, SourceInfo("amp", FS, names, units="V"))  # the terminal's
    levels_uv = [12.4, 103.0, 3.1, 0.8][: len(names)]
    sign = np.where(np.arange(40) % 2, 1.0, -1.0)[:, None]
    block = replace(_block([17.25, 0.0, 2.5, 0.0][: len(names)], [18.0] * len(names), names),
                    timestamps=np.arange(40) / FS, envelope=np.zeros((40, len(names))),
                    above=np.zeros((40, len(names)), dtype=bool),
                    filtered=sign * np.array(levels_uv) * 1e-6)
    block.envelope[:] = [17.25, 0.0, 2.5, 0.0][: len(names)]
    for stim in (_Stim(), None):  # stimulating the biceps, and a session without stimulator
        line = show(block, stim, _Assist(), [""] * len(names))
        assert len(line) <= 79 and not line.endswith("…"), line
        legend = line.split(" | ")[-1]
        num = r"\d+(?:\.\d)?"
        if legend.startswith("µV/nats: "):  # level/statistic
            shown = re.findall(rf"(\w+) ({num})/({num})(?=$|,| stim)", legend)
        else:  # level, statistic/threshold
            assert legend.startswith("stat/thr nats: "), line
            shown = re.findall(rf"(\w+) ({num}) µV ({num})/18(?=$|,| stim)", legend)
        more = re.search(r", \+(\d) more$", legend)
        assert len(shown) + (int(more.group(1)) if more else 0) == len(names), line
        if len(names) == 2:
            assert not more, line  # two muscles fit whole
        for name, level, stat in shown:  # every number whole, as StatusLine rounds it
            c = names.index(name)
            assert float(level) == pytest.approx(levels_uv[c], abs=0.51), line
            assert float(stat) == pytest.approx(block.envelope[-1, c], abs=0.51), line
        assert ("biceps", "12", "17") in shown, line  # the stimulated (or first) one stays
        if stim is not None:
            assert re.search(r"biceps 12\S*( µV 17/18)? stim 18 mA", line), line


class _Stim:
    outputs = {1: ChannelOutput(18.0, 250.0, 35.0), 2: ChannelOutput()}


class _Protocol:
    kind = "cued_trials"
    counts = SimpleNamespace(trials=12, hits=10, misses=2, gated=1)


@pytest.mark.parametrize("width", [40, 60, 79, 100, 140, 240])
def test_eight_muscles_fit_any_width_and_a_suspended_one_stays(config, width):
    names = ("biceps", "triceps", *(f"muscle{i}" for i in range(2, 8)))
    show = StatusLine(config, SourceInfo("amp", FS, names, units="V"), width=width)
    why = ["", "", "", "", "", "hum", "", ""]
    line = show(_block([3e-6] * 8, [6e-6] * 8, names), _Stim(), _Protocol(), why)
    assert len(line) <= width
    assert line.startswith("t 10.0 s | ")
    assert "trials 12: 10 hits, 2 misses, 1 gated" in line or "hits 10/12, 1 gated" in line
    if width >= 79:
        # the stimulated muscle (channel 1 stimulates the config's biceps) and the
        # suspended one are the last to go
        assert re.search(r"biceps [^|,]*18 mA", line)
        assert "muscle5 SUSPENDED" in line
    if width >= 120:
        assert "muscle5 SUSPENDED (mains hum)" in line and ("more" in line or width >= 240)


def test_the_widest_line_says_everything(config):
    show = StatusLine(config, SourceInfo("amp", FS, ("a", "b"), units="V"), width=300)
    line = show(_block([3.1e-6, 12.44e-6], [6.2e-6, float("nan")], config.muscle_names),
                _Stim(), None, ["", ""])
    assert line == ("t 10.0 s | stim biceps 18 mA 35 Hz | biceps envelope 3.1 µV, on above "
                    "6.2 µV | triceps envelope 12.4 µV, settling (learning rest)")


def test_settling_later_is_a_suspension(config):
    """Settling at the start is neutral; after bad input the same settling is said as
    what it is: the muscle cannot trigger."""
    show = StatusLine(config, SourceInfo("amp", FS, ("a", "b")), width=300)
    block = _block([3e-6, 3e-6], [6e-6, 6e-6], config.muscle_names)
    assert "biceps envelope 3 µV, settling |" in show(block, None, None, ["settling", ""])
    show(block, None, None, ["", ""])
    assert ("biceps envelope 3 µV, SUSPENDED (signal back, settling)"
            in show(block, None, None, ["settling", ""]))


# -- the summary ----------------------------------------------------------------------------------
UNITS = r"(µV|mA|µs|Hz|ms|s|%|samples|onsets?|triggers?|trials|hits|misses|min|code|commands)"


def test_every_summary_number_has_its_unit(config, clean):
    out, _ = clean
    lines = summary_lines(out, config=config, units="V", patient="P01", operator="A. Nurse",
                          recorded="s.xdf - every sample recorded")
    text = "\n".join(lines)
    assert lines[0] == "session ended: duration reached (exit code 0)"
    for ln in lines[1:]:
        label, _, value = ln.partition(":")
        # every number is followed by a unit (or names what it counts)
        for m in re.finditer(r"(?<![\w.])\d+(\.\d+)?(?![\w.])", value):
            after = value[m.end():].lstrip()
            assert re.match(UNITS, after) or after.startswith(("of ", "attempt")) or \
                value[: m.start()].rstrip().endswith(" of"), (ln, m)
    assert "  duration        : 12.0 s (24000 samples at 2000 Hz)" in text
    assert "  onsets detected : biceps 1 onset, triceps 1 onset" in text
    assert re.search(r"on-thresholds   : biceps \d+\.?\d* µV, triceps \d+\.?\d* µV "
                     r"\(envelope, at the last onset\)", text)
    assert "  repetitions     : 1 trigger (triggered assist)" in text
    # only the muscle that was stimulated (the final all-off addresses the triceps too)
    assert re.search(r"stimulation time: biceps \d\.\d s \(session limit "
                     r"30 min 00 s per muscle: 0\.\d+ % used\)", text)
    assert "biceps 20 mA, 250 µs, 35 Hz, 3 s plateau" in text
    assert "  all channels off: yes" in text


def test_the_latency_line_says_the_last_ones_only_when_some_were_cut(config, clean):
    out, _ = clean
    n_on = sum(c.is_on for c in out.commands)
    assert out.n_commands == len(out.commands) and len(out.arrival_to_command_ms) == n_on
    whole = [ln for ln in summary_lines(out, config=config) if "processing time" in ln]
    assert whole and f"({'EMG arrival to stimulation command'}, {n_on} commands)" in whole[0]
    # the history bound (LoopOptions.history) cut both: the line says it
    keep = 5
    cut = replace(out, commands=out.commands[-keep:],
                  arrival_to_command_ms=out.arrival_to_command_ms[-keep:])
    line = [ln for ln in summary_lines(cut, config=config) if "processing time" in ln][0]
    assert f"the last {keep} commands" in line
