"""One self-contained HTML page about a recorded session, for the clinician
(``closedloop report``).

The page (a jinja2 template with autoescape, ``templates/report.html``; figures as
inline SVG; no script, no file beside it; it prints on one or two A4 pages) reads from
the top:

1. **Who and what**: the patient's pseudonymous id, date and time, duration, the
   program (config name and description) and its protocol, the operator, the safety
   checklist's answers and the calibration (rest and maximal voluntary contraction
   per muscle, in µV, and where it came from).
2. **Warnings and faults**, only when there are any: a damaged or incomplete recording,
   samples missing, input problems (the session's ``input_issue`` markers), safety
   interventions and stops, channels left on, a replay that does not reproduce the
   session's decisions.
3. **The session**: repetitions (triggers), the success rate where the protocol has one
   (cued trials), stimulation time against the session dose limit, the voluntary effort
   of every attempt (peak and mean EMG during the attempt, in µV and in % of the
   maximal voluntary contraction when a calibration exists) and its trend over the
   session, and the latency from the EMG onset to the stimulation (the first pulse: the
   command's effective sample); when the session measured it, the **evoked response
   (M-wave)** of each stimulated muscle: recruitment (amplitude against current) and
   fatigue (amplitude over the session, in % of the first trains at the same current;
   :mod:`closedloop.runtime.mwaves`), and a warning at the top when a muscle gave no
   response while it was stimulated (electrodes).
4. **The session over time**: each muscle's envelope against its threshold, with the
   stimulation and the onsets; for a detector whose statistic is not an EMG amplitude
   (cusum: a log-likelihood ratio in nats, which rests at 0 while the muscle is active),
   each muscle's EMG level in µV above its statistic against its threshold, each in its
   own unit.
5. **Appendix** (engineering): the file, its streams and samples, the processing
   settings, the replay's agreement with the recording, processing latency, detection
   against the simulated truth.

What the page shows is what the loop processed: the recording is replayed through the
exact pipeline (:func:`~closedloop.runtime.replay.replay_session`: input checks, signal
core with every pulse blanked, protocol and guard), so the envelope is the one the
detector saw, after blanking, and the effort is measured between the pulses
(:mod:`closedloop.analysis.processed`). Counts, stimulation and latency come from the
recording itself (what happened); the appendix says whether the replay made the same
decisions.

Markers the report reads (label, with the marker's ``sample`` or ``time``)
--------------------------------------------------------------------------
``trigger``, ``hit``, ``miss``, ``gated``, ``cue``, ``ignored``, ``early_stop``, ``done``
    The protocol's trial events (``hit``/``miss``: cued trials).
``truth``
    A simulated attempt's true onset (field ``muscle``).
``input_issue``
    What the session's input checks said (fields ``kind``, ``channel``, ``message``).
anything whose label contains ``warn``, ``issue``, ``electrode``, ``stall``,
``watchdog``, ``safety``, ``violation``, ``stop``, ``error``, ``lost``, ``suspend``,
``fault``, ``saturat`` or ``flat``
    A warning, with its fields (``message`` first).

:func:`build_report` works from any object with the attributes of
:class:`closedloop.io.xdf.Session` (tests build one in memory);
:mod:`closedloop.commands.report` loads an XDF file with
:func:`~closedloop.io.xdf.load_session`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.analysis.processed import Processed
from closedloop.core.detectors.base import statistic_of
from closedloop.core.events import ONSET
from closedloop.units import DisplayUnits, display_units, duration, number

#: Trial marker labels (the protocol's TrialEvent kinds).
TRIAL_LABELS = ("cue", "hit", "miss", "trigger", "gated", "ignored", "early_stop", "done",
                "aborted")
#: A marker whose label contains one of these is a warning.
WARNING_WORDS = ("warn", "issue", "electrode", "stall", "watchdog", "safety", "violation",
                 "stop", "error", "lost", "suspend", "fault", "saturat", "flat")
#: The warnings listed one by one (the rest are counted).
MAX_LISTED = 8
#: First and last attempts averaged for the effort table.
EDGE_ATTEMPTS = 5
#: An onset starts the stimulation that follows it within this long, s.
TRIGGER_WINDOW_S = 1.0
_PROTOCOLS = {"triggered_assist": "triggered assist", "reciprocal": "reciprocal",
              "cued_trials": "cued trials"}


# -- what the page shows ---------------------------------------------------------------------------
@dataclass
class Alert:
    """One line of the warnings: what, when (text), details."""

    what: str
    when: str
    detail: str


@dataclass
class Row:
    """A table row: cells as text (the template escapes them)."""

    cells: list[str]


@dataclass
class Page:
    """Everything the template shows (see the module docstring), as text."""

    title: str
    header: list[tuple[str, str]]
    checklist: list[tuple[str, str]]
    checklist_note: str
    calibration_note: str
    calibration: list[Row]
    warnings: list[Alert]
    key: list[tuple[str, str, str]]  # (label, value, note)
    stimulation: list[Row]
    effort_unit: str
    effort: list[Row]
    effort_note: str
    effort_svg: str
    latency: list[Row]
    latency_note: str
    timeline_svg: str
    timeline_note: str
    appendix: list[tuple[str, str]]
    markers: list[Row]
    issues: list[Row]
    generated: str
    notes: list[str] = field(default_factory=list)
    mwave: list[Row] = field(default_factory=list)
    mwave_note: str = ""
    mwave_svg: str = ""


# -- reading the recording ---------------------------------------------------------------------
def _n(session: Any) -> int:
    return int(session.samples.shape[0])


def _first_sample(session: Any) -> int:
    c = getattr(session, "counter", None)
    return int(c[0]) if c is not None and len(c) else 0


def _marker_sample(session: Any, m: Any) -> int:
    """Pipeline sample of a marker (its own, else from its stream time)."""
    if m.sample is not None:
        return int(m.sample)
    k = int(np.searchsorted(session.timestamps, m.time))
    return _first_sample(session) + min(k, max(_n(session) - 1, 0))


def _start(c: Any) -> int:
    """The sample from which a command's output runs: its ``effective_sample`` when the
    live loop recorded one, else the sample that decided it."""
    eff = getattr(c, "effective_sample", -1)
    return int(eff) if eff is not None and eff >= 0 else int(c.sample)


def _is_warning(label: str) -> bool:
    low = label.lower()
    return any(w in low for w in WARNING_WORDS)


def _config(session: Any):
    """The config the session ran with (every setting as it resolved them) and a note
    when it could not be read (then the defaults on the recorded channels)."""
    from closedloop.config import default_config
    from closedloop.errors import ConfigError
    from closedloop.io.recorded import recorded_config

    try:
        cfg = recorded_config(session)
    except ConfigError as exc:
        return default_config(tuple(session.channels)), (
            f"the recorded config could not be read ({exc}); default settings were used")
    note = "" if getattr(session, "config_text", None) or getattr(session, "metadata", {}).get(
        "resolved_config") else "the recording holds no config: default settings were used"
    return cfg, note


@dataclass
class Replayed:
    """What the replay through the live pipeline gave."""

    processed: Processed
    outcome: Any
    config: Any
    note: str = ""
    difference: str | None = None


def _replay(session: Any, config) -> Replayed:
    """The recording through the exact pipeline (see the module docstring)."""
    from closedloop.config import default_config
    from closedloop.errors import ConfigError
    from closedloop.runtime.replay import (
        check,
        check_intact,
        first_difference,
        replay_session,
    )

    note = ""
    n = _n(session)
    for attempt in (config, None):
        cfg = attempt or default_config(tuple(session.channels))
        processed = Processed(cfg, session.fs, n)
        # chunks a whole number of bins (>= 1 s): each bin's threshold is exact at its end
        chunk = processed.bin_size * max(1, -(-int(session.fs) // processed.bin_size))
        try:
            out = replay_session(session, cfg, chunk_size=chunk, partial=True,
                                 outlets=processed)
            break
        except ConfigError as exc:  # the config's muscles are not the recorded channels
            if attempt is None:  # not even the defaults fit the recorded channels
                raise
            note = (f"the recorded config does not fit the recording ({exc}); every channel "
                    "was processed with default settings")
    processed.finish()
    if note or _first_sample(session) or not (session.events or session.commands):
        difference = None  # nothing recorded that the replay could make
    elif getattr(session, "damage", ()):
        difference, _ = check_intact(session, out)
    elif cfg.stimulates:
        difference = check(session, out)
    else:  # no protocol: the loop decides no stimulation, only the events can agree
        difference = first_difference(session.events, out.events,
                                      lambda e: (e.sample, e.channel, e.kind), "event")
    return Replayed(processed, out, cfg, note, difference)


# -- the parts of the page -----------------------------------------------------------------------
def _header(session: Any, cfg, meta: dict) -> tuple[str, list[tuple[str, str]]]:
    patient = meta.get("patient") or cfg.patient
    started = str(meta.get("started") or "")
    try:
        when = datetime.fromisoformat(started)
        date, time = when.strftime("%Y-%m-%d"), when.strftime("%H:%M")
    except ValueError:
        date, time = (started or "not recorded"), ""
    program = cfg.name + (f": {cfg.description}" if cfg.description else "")
    rows = [
        ("Patient", str(patient) if patient else "not given (no patient id recorded)"),
        ("Date and time", f"{date} {time}".strip()),
        ("Duration", duration(_n(session) / session.fs)),
        ("Program", program),
        ("Protocol", _protocol_text(cfg)),
        ("Operator", str(meta.get("operator") or "not recorded")),
        ("Equipment", f"{_source_text(meta, session)}; stimulator "
                      f"{_stimulator_text(meta, cfg)}"),
    ]
    title = "Session report" + (f": patient {patient}" if patient else "")
    return title, rows


def _protocol_text(cfg) -> str:
    p = cfg.protocol
    if p is None:
        return "no stimulation (detection only)"
    kind = _PROTOCOLS.get(p.kind, p.kind.replace("_", " "))
    text = f"{kind}, {p.agonist}"
    if p.kind == "reciprocal" and p.antagonist:
        text += f" then {p.antagonist}"
    elif p.antagonist and p.co_contraction_gate:
        text += f" (not when the {p.antagonist} co-contracts)"
    trials = getattr(p, "trials", None)
    if p.kind == "cued_trials" and trials is not None:
        text += (f"; {trials.n_trials} cued trials, {number(trials.work_s)} s work / "
                 f"{number(trials.rest_s)} s rest")
    return text


def _source_text(meta: dict, session: Any) -> str:
    kind = meta.get("source_kind", "")
    name = meta.get("source_name") or meta.get("source") or getattr(session, "name", "")
    return f"EMG from {name}" + (f" ({kind})" if kind and kind not in str(name) else "") + \
        f", {number(session.fs)} Hz"


def _stimulator_text(meta: dict, cfg) -> str:
    stim = str(meta.get("stimulator") or "")
    if not stim or stim == "none":
        return "none" if cfg.protocol is None else "not recorded"
    return "simulated" if stim.startswith("Sim") else stim


def _checklist(meta: dict) -> tuple[list[tuple[str, str]], str]:
    c = meta.get("checklist")
    if not isinstance(c, dict):
        return [], "not recorded"
    if c.get("required") is False:
        return [], f"not asked ({c.get('why', 'not required')})"
    answers = c.get("answers") or {}
    questions = c.get("questions") or {}
    rows = [(str(questions.get(k, k)), "yes" if v is True else "NO") for k, v in answers.items()]
    how = {"terminal": "on the terminal", "dialog": "in the dialog",
           "flag": "confirmed with --confirm-checklist (done on paper)"}.get(
        str(c.get("method", "")), str(c.get("method", "")))
    bits = [how, str(c.get("time") or ""), str(c.get("operator") or "")]
    return rows, "answered " + ", ".join(b for b in bits if b)


def _calibration(cfg, meta: dict, units: DisplayUnits) -> tuple[list[Row], str]:
    rows = []
    # the calibration gives on-thresholds only to a detector deciding on the EMG envelope
    # (or its energy); another (cusum) takes the rest level from it and has thresholds
    # of its own statistic, not EMG levels
    envelope = units.statistic.of_emg
    for m in cfg.muscles:
        cal = m.calibration
        if cal is None:
            continue
        on = cal.thresholds(cfg.detector)[0] if envelope else math.nan
        rows.append(Row([m.name, units.emg(cal.rest_mean), units.emg(cal.rest_sd),
                         units.emg(cal.mvc) if cal.mvc is not None else "not measured",
                         units.stat(on) if math.isfinite(on) else "-"]))
    if not rows:
        return [], ("none: the detector learnt each muscle's rest level in the first "
                    "seconds (adaptive baseline); effort is shown in µV only")
    c = meta.get("calibration")
    if isinstance(c, dict) and c.get("from") == "patient record":
        note = (f"from the patient record (#{c.get('record_id')}, calibrated "
                f"{c.get('calibrated')})")
    else:
        note = "from the session's config"
    if not envelope:
        unit = f" in {units.stat_unit}" if units.stat_unit else ""
        note += (f"; the {cfg.detector_kind} detector takes the rest level from it and "
                 f"decides on its {units.stat_name}{unit}, not on an EMG level: no "
                 "on-threshold in µV (its threshold is shown in The session over time)")
    return rows, note


@dataclass
class _Stim:
    muscle: str
    channel: int
    on_s: float = 0.0
    stimulations: int = 0
    max_ma: float = 0.0
    pulse_width_us: float = 0.0
    frequency_hz: float = 0.0
    charge_mc: float = 0.0
    spans: list[tuple[int, int, float]] = field(default_factory=list)  # rows, peak mA


def _stimulation(session: Any) -> list[_Stim]:
    """Per stimulated muscle, from the recorded commands (a command's level runs from
    its effective sample until the channel's next command or the end of the file)."""
    first, end = _first_sample(session), _first_sample(session) + _n(session)
    by: dict[tuple[str, int], list[Any]] = {}
    for c in sorted(session.commands, key=_start):
        by.setdefault((c.muscle, c.channel), []).append(c)
    out = []
    for (muscle, channel), cmds in sorted(by.items()):
        st = _Stim(muscle, channel)
        since: tuple[int, float] | None = None  # (row it started, highest mA so far)
        for i, c in enumerate(cmds):
            a = _start(c)
            b = _start(cmds[i + 1]) if i + 1 < len(cmds) else end
            if c.current_ma > 0 and b > a:
                dt = (b - a) / session.fs
                st.on_s += dt
                st.charge_mc += c.charge_uc * c.frequency_hz * dt / 1000.0
                st.max_ma = max(st.max_ma, c.current_ma)
                st.pulse_width_us = max(st.pulse_width_us, c.pulse_width_us)
                st.frequency_hz = max(st.frequency_hz, c.frequency_hz)
                if since is None:
                    since = (a - first, 0.0)
                    st.stimulations += 1
                since = (since[0], max(since[1], c.current_ma))
            elif since is not None:
                st.spans.append((since[0], a - first, since[1]))
                since = None
        if since is not None:
            st.spans.append((since[0], end - first, since[1]))
        out.append(st)
    return out


def _stops(session: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """Stop commands that switched a channel off while it was on before the session's
    end (guard limits, safety stops); those of the final all-off that switched a running
    channel off (the session ended during stimulation); and the channels whose last
    command leaves them on (``(muscle, channel, command)``)."""
    last = _first_sample(session) + _n(session) - 1
    level: dict[tuple[str, int], Any] = {}
    forced: list[Any] = []
    at_end: list[Any] = []
    for c in sorted(session.commands, key=lambda c: c.sample):
        key = (c.muscle, c.channel)
        prev = level.get(key)
        if c.phase == "stop" and prev is not None and prev.current_ma > 0:
            (at_end if c.sample >= last - 1 else forced).append(c)
        level[key] = c
    left_on = [(k[0], k[1], c) for k, c in sorted(level.items()) if c.current_ma > 0]
    return forced, at_end, left_on


def _latencies(session: Any, cfg, onsets: Sequence[Any]) -> np.ndarray:
    """Ms from each EMG onset to the first pulse it started: a stimulation of the
    protocol's agonist (off before) and the latest onset of that muscle at most
    :data:`TRIGGER_WINDOW_S` before the command was decided; the pulse starts at the
    command's effective sample. Empty when the recording has no effective samples."""
    agonist = cfg.protocol.agonist if cfg.protocol is not None else None
    fs = session.fs
    by_muscle: dict[str, list[int]] = {}
    for e in onsets:
        by_muscle.setdefault(e.channel, []).append(e.sample)
    level: dict[tuple[str, int], float] = {}
    out = []
    for c in sorted(session.commands, key=lambda c: c.sample):
        key = (c.muscle, c.channel)
        starts = c.current_ma > 0 and level.get(key, 0.0) <= 0 and c.phase != "test"
        level[key] = c.current_ma
        if not starts or c.effective_sample < 0 or (agonist and c.muscle != agonist):
            continue
        prior = [s for s in by_muscle.get(c.muscle, ()) if c.sample - TRIGGER_WINDOW_S * fs
                 <= s <= c.sample]
        if prior:
            out.append((c.effective_sample - max(prior)) / fs * 1000.0)
    return np.asarray(out)


def _effort(rep: Replayed, units: DisplayUnits, duration_s: float):
    """The effort rows, the plot's series and its unit: % MVC for muscles with a
    calibrated MVC (µV in the table too), µV otherwise."""
    from closedloop.analysis.report_plots import EffortSeries
    from closedloop.core.effort import percent_mvc

    cfg, fs = rep.config, rep.processed.fs
    cal = {m.name: m.calibration for m in cfg.muscles}
    with_mvc = all(c is not None and c.mvc is not None for c in cal.values()) and units.is_voltage
    unit = "% MVC" if with_mvc else units.emg_unit or "source units"
    rows, series = [], []
    for name in cfg.muscle_names:
        atts = [a for a in rep.processed.attempts if a.muscle == name]
        if not atts:
            continue
        mean = np.array([a.mean for a in atts]) * units.emg_factor
        peak = np.array([a.peak for a in atts]) * units.emg_factor
        t = np.array([a.onset for a in atts]) / fs
        shown_mean, shown_peak = mean, peak
        if with_mvc:
            c = cal[name]
            rest, mvc = c.rest_mean * units.emg_factor, c.mvc * units.emg_factor
            shown_mean, shown_peak = (percent_mvc(np.nan_to_num(v, nan=-1.0), rest, mvc)
                                      for v in (mean, peak))
            shown_mean[~np.isfinite(mean)] = np.nan
            shown_peak[~np.isfinite(peak)] = np.nan
        series.append(EffortSeries(name, t, shown_mean, shown_peak))
        k = min(EDGE_ATTEMPTS, len(atts))

        def both(v_uv: np.ndarray, v_pct: np.ndarray) -> str:
            uv = with_unit_or_dash(float(np.nanmean(v_uv)) if np.isfinite(v_uv).any()
                                   else math.nan, units.emg_unit)
            if not with_mvc:
                return uv
            return f"{number(float(np.nanmean(v_pct)))} % ({uv})" if np.isfinite(
                v_pct).any() else uv

        rows.append(Row([name, str(len(atts)),
                         both(mean[:k], shown_mean[:k]), both(mean[-k:], shown_mean[-k:]),
                         both(peak, shown_peak), _trend(t, shown_mean),
                         str(sum(a.stimulated for a in atts))]))
    return rows, series, unit


def _mwaves(session: Any, units: DisplayUnits, duration_s: float
            ) -> tuple[list[Row], list[Any], list[Alert], str]:
    """The evoked response (M-wave) the session recorded: a row per muscle, the plots'
    series, the "no response" warnings and the note (all empty without records)."""
    from closedloop.analysis.report_plots import MWaveSeries
    from closedloop.runtime.mwaves import level_key, track

    records = sorted(getattr(session, "mwaves", None) or (), key=lambda r: r.sample)
    if not records:
        return [], [], [], ""
    fs, first = float(session.fs), _first_sample(session)
    points, summary = track(records)
    f, unit = units.emg_factor, units.emg_unit
    rows, series, alerts = [], [], []
    for muscle, m in summary.items():
        mine = [p for p in points if p.muscle == muscle]
        recs = [r for r in records if r.muscle == muscle]
        work = level_key(m.current_ma, m.pulse_width_us)
        at_work = np.array([level_key(p.current_ma, p.pulse_width_us) == work for p in mine])
        lat = [1000.0 * r.latency_s for r, w in zip(recs, at_work, strict=True)
               if w and r.present and math.isfinite(r.latency_s)]
        kept = 100.0 - m.drop_pct
        rows.append(Row([
            muscle, str(m.records), f"{m.current_ma:g} mA",
            with_unit_or_dash(m.first_pp * f, unit), with_unit_or_dash(m.last_pp * f, unit),
            f"{number(kept)} %" if math.isfinite(kept) else "-",
            f"{number(float(np.median(lat)))} ms" if lat else "-",
            str(m.no_response)]))
        series.append(MWaveSeries(
            muscle, time=np.array([(p.sample - first) / fs for p in mine]),
            current_ma=np.array([p.current_ma for p in mine]),
            amplitude=np.array([p.peak_to_peak * f for p in mine]),
            present=np.array([p.present for p in mine], dtype=bool),
            percent=np.array([p.percent for p in mine]), working=at_work))
        # a warning when the muscle never answered, or when silent measurements are not
        # isolated ones (at least 3, and 10 % of the muscle's): a single average near the
        # noise in a ramp is in the section's table, not a fault
        never = math.isnan(m.clear_from_ma)
        if m.no_response and (never or (m.no_response >= 3
                                        and m.no_response >= 0.1 * m.records)):
            low = m.clear_from_ma
            silent = [p for p in mine if p.no_response]
            top = max((p.current_ma for p in mine if math.isfinite(p.current_ma)),
                      default=math.nan)
            where = (f"at any current (up to {top:g} mA)" if math.isnan(low) else
                     f"at currents that gave a clear response at other times ({low:g} mA "
                     "or more)")
            alerts.append(Alert(
                "no evoked response", duration((silent[0].sample - first) / fs),
                f"{muscle}: no M-wave {where} in {m.no_response} of {m.records} "
                "measurements while it was stimulated: check the electrodes (placement, skin "
                "contact, cable) and the stimulation channel"))
    note = ("The muscle's compound response to the stimulation pulses (M-wave), averaged "
            "over each half second of a train and measured from the raw EMG before the "
            "pulses are blanked: peak-to-peak amplitude. First and last trains: the first "
            "and last three measurements at the current the muscle was stimulated at most; "
            "the last in % of the first is the fatigue over the session (each measurement "
            "is compared with the first trains at its own current). No response: "
            "measurements without an M-wave at a current that gave a clear one at other "
            "times (or at any current, when none did).")
    if not units.is_voltage:
        note += " The source is not in a voltage unit: amplitudes are as the source reports them."
    return rows, series, alerts, note


def with_unit_or_dash(x: float, unit: str) -> str:
    """``number(x) unit``, or ``-`` when not finite."""
    return "-" if not math.isfinite(x) else f"{number(x)} {unit}".rstrip()


def _trend(t: np.ndarray, v: np.ndarray) -> str:
    """A straight line fitted to ``v`` over time: its change from the first to the last
    attempt, in % of its value at the first (a fatigue or progress signal, not a
    diagnosis)."""
    ok = np.isfinite(v)
    if ok.sum() < 3 or np.ptp(t[ok]) <= 0:
        return "- (fewer than 3 attempts)"
    slope, icpt = np.polyfit(t[ok], v[ok], 1)
    start = icpt + slope * t[ok][0]
    if start <= 0:
        return "-"
    change = round(slope * (t[ok][-1] - t[ok][0]) / start * 100.0)
    return (f"{change:+d} %" if change else "0 %") + " over the session"  # never '-0 %'



def _input_warnings(session: Any, rep: Replayed) -> tuple[list[Alert], list[Row], str]:
    """What the input checks said, grouped by kind and channel (one warning each), and
    every occurrence (the appendix): the session's own ``input_issue`` markers, or for
    a recording without them the replay's."""
    recorded = [m for m in session.markers if m.label == "input_issue"]
    first = _first_sample(session)
    fs = session.fs
    if recorded:
        items = [(m.fields, _marker_sample(session, m) - first) for m in recorded]
        origin = "the session's input checks"
    else:
        items = [(m.fields, m.sample if m.sample is not None else 0)
                 for m in rep.processed.markers if m.label == "input_issue"]
        origin = "the input checks, re-run by the replay"
    # the checks name a source channel or a muscle: say the muscle
    muscle = {str(m.channel): m.name for m in rep.config.muscles}
    groups: dict[tuple[str, str], list[tuple[dict, int]]] = {}
    for fields_, row in items:
        kind = str(fields_.get("kind", ""))
        if kind == "recovered":
            continue
        channel = str(fields_.get("channel") or "")
        groups.setdefault((kind, muscle.get(channel, channel)), []).append((fields_, row))
    warnings = []
    for (kind, channel), occ in groups.items():
        f0, r0 = occ[0]
        times = f"{duration(r0 / fs)}" + (f" (+{len(occ) - 1} more)" if len(occ) > 1 else "")
        warnings.append(Alert(f"input: {kind}" + (f" ({channel})" if channel else ""), times,
                                str(f0.get("message", ""))))
    rows = [Row([f"{r / fs:.2f}", str(f.get("kind", "")),
                 muscle.get(str(f.get("channel") or ""), str(f.get("channel") or "")),
                 str(f.get("message", ""))]) for f, r in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        rows.append(Row(["", "", "", f"... and {len(items) - MAX_LISTED} more"]))
    return warnings, rows, origin


def _warnings(session: Any, rep: Replayed, cfg_note: str) -> tuple[list[Alert], list[Row], str]:
    fs = session.fs
    first = _first_sample(session)
    out: list[Alert] = []
    damage = str(getattr(session, "damage_report", "") or "")
    if damage:
        out.append(Alert(f"recording {str(getattr(session, 'state', 'damaged')).upper()}",
                           "", "this report covers the intact part only: " + " ".join(
                               ln.strip().lstrip("- ") for ln in damage.splitlines())))
    elif getattr(session, "truncated", False):
        out.append(Alert("recording truncated", "", "the file was cut short and repaired "
                           "on reading: this report covers what it holds"))
    elif not getattr(session, "complete", True):
        out.append(Alert("recording incomplete", "", "the file lacks its footers"))
    counter = getattr(session, "counter", None)
    if counter is not None and len(counter) > 1:
        d = np.diff(counter)
        gaps = int(np.count_nonzero(d != 1))
        if gaps:
            out.append(Alert("samples missing", "", f"{int(np.sum(np.maximum(d - 1, 0)))} "
                               f"sample(s) missing in {gaps} place(s) (sample counter)"))
    if rep.note or cfg_note.startswith("the recorded config could not"):
        out.append(Alert("settings", "", rep.note or cfg_note))
    inputs, issue_rows, origin = _input_warnings(session, rep)
    out += inputs
    markers = sorted(session.markers, key=lambda m: _marker_sample(session, m))
    for m in markers:
        if _is_warning(m.label) and m.label != "input_issue":
            fields_ = dict(m.fields)
            msg = str(fields_.pop("message", ""))
            rest = ", ".join(f"{k}={v}" for k, v in fields_.items())
            out.append(Alert(m.label, duration((_marker_sample(session, m) - first) / fs),
                               "; ".join(x for x in (msg, rest) if x)))
    forced, _, left_on = _stops(session)
    for c in forced:
        out.append(Alert("stimulation stopped", duration((c.sample - first) / fs),
                           f"{c.muscle} (channel {c.channel}) was on and was switched off by "
                           "a stop (a safety limit or a safety stop)"))
    for muscle, channel, c in left_on:
        out.append(Alert("LEFT ON", duration((c.sample - first) / fs),
                           f"the last recorded command leaves {muscle} (channel {channel}) at "
                           f"{c.current_ma:g} mA: the recording ends before an off"))
    o = rep.outcome
    if o.violations:
        last = o.violations[-1]
        out.append(Alert("safety intervention", "", f"{o.n_violations} time(s); the last: "
                           f"{last}"))
    if o.reason not in ("ended", "duration", ""):
        out.append(Alert("replay stopped", duration(o.seconds),
                           f"{o.message}: a session would have stopped here"))
    if rep.difference:
        out.append(Alert("replay differs", "", "the replay through the pipeline did not make "
                           f"the recorded decisions ({rep.difference}): the signals shown are "
                           "the replay's"))
    return out, issue_rows, origin


# -- the page ----------------------------------------------------------------------------------
def analyse(session: Any, *, generated: str | None = None) -> Page:
    """Everything the page shows, from ``session`` (see the module docstring)."""
    from closedloop.analysis import report_plots as plots

    fs = float(session.fs)
    n = _n(session)
    first = _first_sample(session)
    meta = dict(getattr(session, "metadata", {}) or {})
    cfg, cfg_note = _config(session)
    rep = _replay(session, cfg)
    cfg = rep.config
    units = display_units(session.units, statistic_of(cfg.detector_kind))
    duration_s = n / fs
    title, header = _header(session, cfg, meta)
    checklist, checklist_note = _checklist(meta)
    calibration, calibration_note = _calibration(cfg, meta, units)
    warnings, issue_rows, issue_origin = _warnings(session, rep, cfg_note)
    mwave_rows, mwave_series, mwave_alerts, mwave_note = _mwaves(session, units, duration_s)
    warnings = mwave_alerts + warnings  # what to do now (the electrodes) first

    recorded = [e for e in session.events if e.kind == ONSET]
    onsets = recorded or [e for e in rep.outcome.events if e.kind == ONSET]
    counts = Counter(m.label for m in session.markers if m.label in TRIAL_LABELS)
    stims = _stimulation(session)
    limit = cfg.safety.session_dose_s if cfg.safety is not None else None
    key: list[tuple[str, str, str]] = []
    cued = cfg.protocol is not None and cfg.protocol.kind == "cued_trials"
    hits, misses = counts.get("hit", 0), counts.get("miss", 0)
    if counts:
        reps = counts.get("trigger", 0) + hits
        how = "from the session's trial markers"
    else:
        reps = int(rep.outcome.trials.get("hits", 0)) if rep.outcome.trials else 0
        how = "no trial markers recorded: counted by the replay"
        if rep.outcome.trials:
            hits, misses = rep.outcome.trials["hits"], rep.outcome.trials["misses"]
    if cfg.protocol is not None or counts:
        key.append(("Repetitions", f"{reps}", "stimulations triggered by an attempt; " + how))
        if cued or misses:
            done = hits + misses
            key.append(("Success rate", f"{100 * hits / done:.0f} %" if done else "-",
                        f"{hits} of {done} cued trials hit"))
        gated = counts.get("gated", 0)
        if gated:
            key.append(("Not stimulated", f"{gated}", "attempts stopped by the co-contraction "
                        "gate"))
    key.append(("Attempts detected", ", ".join(
        f"{m} {sum(e.channel == m for e in onsets)}" for m in cfg.muscle_names),
        "EMG onsets per muscle"))
    stims = [s for s in stims if s.stimulations]  # not a channel only ever switched off
    if stims:
        total = max(s.on_s for s in stims)
        key.append(("Stimulation time", ", ".join(f"{s.muscle} {duration(s.on_s)}"
                                                  for s in stims),
                    f"session limit {duration(limit)} per muscle: {number(100 * total / limit)}"
                    " % used" if limit else ""))
    lat = _latencies(session, cfg, onsets)
    if lat.size:
        key.append(("Onset to stimulation", _ms(np.median(lat)),
                    f"median over {lat.size}; longest {_ms(np.max(lat))}"))
    if mwave_rows:  # muscle, ..., first trains [3], ..., last in % of first [5]
        key.append(("M-wave at the end", ", ".join(
            f"{r.cells[0]} {r.cells[5]}" if r.cells[5] != "-" else
            f"{r.cells[0]} no response" if r.cells[3] == "-" else f"{r.cells[0]} -"
            for r in mwave_rows), "in % of the first trains: fatigue over the session"))
    stim_rows = [Row([s.muscle, str(s.channel), str(s.stimulations), duration(s.on_s),
                      f"{number(100 * s.on_s / limit)} %" if limit else "-",
                      f"{s.max_ma:g} mA", f"{s.pulse_width_us:g} µs",
                      f"{s.frequency_hz:g} Hz", f"{number(s.charge_mc)} mC"])
                 for s in stims]

    effort_rows, series, effort_unit = _effort(rep, units, duration_s)
    effort_svg = plots.effort(series, duration_s, effort_unit) if series else ""
    if effort_rows:
        means = [float(np.nanmean(s.mean)) for s in series if np.isfinite(s.mean).any()]
        if means:
            key.append(("Effort per attempt", f"{number(float(np.mean(means)))} {effort_unit}",
                        "mean voluntary EMG during the attempts (all muscles)"))
    lat_rows = []
    if lat.size:
        lat_rows = [Row([str(lat.size), _ms(np.median(lat)), _ms(np.percentile(lat, 90)),
                         _ms(np.min(lat)), _ms(np.max(lat))])]
    has_eff = any(c.effective_sample >= 0 for c in session.commands)
    lat_note = ("From the EMG onset to the first pulse the stimulator was commanded to give "
                "(the stimulator's own delay is not included)" if lat.size else
                "No stimulation was triggered" if not session.commands else
                "This recording does not say where its commands took effect (recorded "
                "before closedloop kept it)" if not has_eff else
                "No stimulation followed an onset of the agonist")

    # the timeline, what the detector saw
    pr = rep.processed
    lanes = []
    per_muscle = 1 if pr.level_min is None else 2  # the statistic's lane, the level's
    drawn = cfg.muscle_names[:MAX_TIMELINE_LANES // per_muscle]
    for c, name in enumerate(drawn):
        low = np.where(np.isfinite(pr.env_min[:, c]), pr.env_min[:, c], np.nan)
        high = np.where(np.isfinite(pr.env_max[:, c]), pr.env_max[:, c], np.nan)
        muscle = [plots.Lane(name, low * units.stat_factor, high * units.stat_factor,
                             pr.on_threshold[:, c] * units.stat_factor)]
        if pr.level_min is not None and pr.level_max is not None:
            # the muscle's activity in µV above the statistic the detector decided on
            lo, hi = pr.level_min[:, c], pr.level_max[:, c]
            muscle.insert(0, plots.Lane(
                name, np.where(np.isfinite(lo), lo, np.nan) * units.emg_factor,
                np.where(np.isfinite(hi), hi, np.nan) * units.emg_factor,
                np.full(lo.shape, np.nan), what="EMG level", unit=units.emg_unit))
        for lane in muscle:
            for s in stims:
                if s.muscle == name:
                    lane.stimulation += [(a / fs, b / fs, ma) for a, b, ma in s.spans]
            lane.onsets = [(e.sample - first) / fs for e in onsets if e.channel == name]
        lanes += muscle
    timeline_svg = plots.timeline(lanes, pr.bin_size / fs, duration_s, units.stat_name,
                                  units.stat_unit)

    appendix, marker_rows = _appendix(session, rep, cfg, meta, counts, onsets)
    appendix.append(("Input checks", issue_origin))
    appendix.append(("Settings", rep.note or cfg_note or "as the session ran (the recorded "
                                                         "config, every setting resolved)"))
    return Page(
        title=title, header=header, checklist=checklist, checklist_note=checklist_note,
        calibration_note=calibration_note, calibration=calibration, warnings=warnings,
        key=key, stimulation=stim_rows, effort_unit=effort_unit, effort=effort_rows,
        effort_note=_effort_note(effort_unit, units), effort_svg=effort_svg,
        latency=lat_rows, latency_note=lat_note, timeline_svg=timeline_svg,
        timeline_note=_timeline_note(units) + _timeline_cut(cfg.muscle_names, len(drawn)),
        appendix=appendix, markers=marker_rows, issues=issue_rows,
        generated=generated or datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"),
        mwave=mwave_rows, mwave_note=mwave_note,
        mwave_svg=(plots.mwaves(mwave_series, units.emg_unit, duration_s) if mwave_series
                   else ""),
    )


#: Lanes drawn in the timeline (a muscle has one, or two when its detector's statistic
#: is not the EMG level): 8 muscles, as many as a stimulator has channels. Another
#: tool's recording of many channels (a 64-channel grid) would make lanes too thin to
#: read, and matplotlib's layout of many shared axes takes minutes (64 lanes: 40 s, 256:
#: more than 5 minutes).
MAX_TIMELINE_LANES = 16


def _timeline_cut(names: Sequence[str], drawn: int) -> str:
    if len(names) <= drawn:
        return ""
    return (f" The recording has {len(names)} channels; the first {drawn} "
            f"({names[0]} to {names[drawn - 1]}) are drawn.")


def _timeline_note(units: DisplayUnits) -> str:
    how = ("(stimulation pulses blanked, as the session processed them: the recording "
           "replayed through the same pipeline)")
    if units.statistic.of_emg:
        return f"The {units.stat_name} each muscle's detector saw {how}, against its on-threshold."
    unit = f" ({units.stat_unit})" if units.stat_unit else ""
    level = f" ({units.emg_unit})" if units.emg_unit else ""
    return (f"Per muscle, its EMG level{level} and below it the {units.stat_name}{unit} its "
            f"detector decided on {how}, against its on-threshold. The EMG level is the "
            f"amplitude envelope of the same EMG; the {units.stat_name} is the evidence that "
            "a contraction began: it rises to the threshold at the onset and rests at 0 while "
            "the muscle is active.")


def _ms(x: float) -> str:
    """A latency in ms with the digits that matter (``0.5 ms`` at 2 kHz, not ``0 ms``)."""
    return f"{number(float(x))} ms"


def _effort_note(unit: str, units: DisplayUnits) -> str:
    base = ("Voluntary EMG during each attempt, from its onset to its offset (at most 10 s): "
            "the mean is the RMS of the band-passed EMG, the peak the highest voluntary "
            "effort (0.1 s average); stimulation pulses and the 1.5 ms after each are left "
            "out, so stimulated attempts measure the patient's own EMG.")
    if unit == "% MVC":
        return base + " % MVC: 0 at rest, 100 at the calibrated maximal contraction."
    return base + ("" if units.is_voltage else " The source is not in a voltage unit: "
                   "values are as the source reports them.")


def stream_list(names: Sequence[str]) -> str:
    """The recording's stream names, sorted, with the part they share written once:
    ``closedloop-biceps_triceps-e693176541df-{EMG, Envelope, Events}``. The session's
    random id is in every name; written in each, its letters and digits (not equally
    wide) wrapped the row differently from session to session and moved what follows."""
    names = sorted(names)
    if not names:
        return "-"
    shared = os.path.commonprefix(names) if len(names) > 1 else ""
    shared = shared[: shared.rfind("-") + 1]
    rest = [n[len(shared):] for n in names]
    if not shared or not all(rest):
        return ", ".join(names)
    return f"{shared}{{{', '.join(rest)}}}"


def _appendix(session: Any, rep: Replayed, cfg, meta: dict, counts: Counter,
              onsets: Sequence[Any]) -> tuple[list[tuple[str, str]], list[Row]]:
    from closedloop.analysis.scoring import score_onsets

    fs = float(session.fs)
    n = _n(session)
    counter = getattr(session, "counter", None)
    if counter is not None and len(counter) > 1:
        gaps = int(np.count_nonzero(np.diff(counter) != 1))
        samples = ("every sample present (the counter runs without gaps)" if not gaps else
                   f"the counter breaks in {gaps} place(s)")
    else:
        samples = "no sample counter recorded"
    state = "complete" if getattr(session, "complete", True) else "incomplete (no footers)"
    if getattr(session, "damage", ()):
        state = f"{getattr(session, 'state', 'damaged')}: the intact part is used"
    f, env, art = cfg.filters, cfg.envelope, cfg.artifacts
    det = cfg.detector
    det_bits = [f"{k} {getattr(det, k)}" for k in ("baseline", "k_on", "mvc_fraction",
                                                   "min_on_ms", "refractory_ms")
                if getattr(det, k, None) is not None]
    o = rep.outcome
    rec_on = sum(e.kind == ONSET for e in session.events)
    if not (session.events or session.commands):
        agree = "not compared (the recording holds no detector events or commands)"
    elif rep.difference is None and rep.note == "" and not _first_sample(session):
        agree = (f"identical: the replay made the recorded {len(session.events)} detector "
                 f"events and {len(session.commands)} commands at the same samples")
    elif rep.difference:
        agree = f"DIFFERS: {rep.difference}"
    else:
        agree = "not compared (" + (rep.note or "the recording starts at pipeline sample "
                                    f"{_first_sample(session)}") + ")"
    cmds = session.commands
    proc = np.array([(c.handed_wall - c.arrival_wall) * 1000.0 for c in cmds
                     if math.isfinite(c.handed_wall) and math.isfinite(c.arrival_wall)])
    forced, at_end, left = _stops(session)
    end = ("every channel off" if not left else "LEFT ON: " + ", ".join(
        f"{m} (channel {ch})" for m, ch, _ in left)) if cmds else "no stimulation recorded"
    if at_end:
        end += "; the session ended during stimulation of " + ", ".join(
            f"{c.muscle} (channel {c.channel})" for c in at_end)
    rows = [
        ("File", f"{getattr(session, 'path', '')} ({state})"),
        ("Streams", stream_list(getattr(session, "stream_names", ()))),
        ("EMG", f"{getattr(session, 'name', '')}: {n} samples at {fs:g} Hz, channels "
                f"{', '.join(session.channels)} ({session.units}); {samples}"),
        ("Muscles", ", ".join(f"{m.name} <- {m.channel}" for m in cfg.muscles)),
        ("Recorded", f"{rec_on} onsets, {len(session.events) - rec_on} other detector "
                     f"events, {len(cmds)} stimulation commands, {len(session.markers)} "
                     "markers"),
        ("Processing", f"band-pass {number(f.bandpass_hz[0])}-{number(f.bandpass_hz[1])} Hz, "
                       f"notch {number(f.notch_hz)} Hz; envelope {env.kind} "
                       f"{number(env.window_ms)} ms; detector {cfg.detector_kind} "
                       f"({', '.join(det_bits)}); blanking {number(art.blank_ms)} ms"
                       f"{', comb' if art.comb else ''}"),
        ("Replay", f"{agree}; {o.n_events} events, {o.n_commands} commands, "
                   f"{duration(o.seconds)} processed ({o.message})"),
        ("Stimulation at the end", end),
        ("Processing latency", "EMG arrival to command handed to the stimulator (wall "
         "clock): " + (f"median {np.median(proc):.2f} ms, p99 {np.percentile(proc, 99):.2f} "
                       f"ms, max {np.max(proc):.2f} ms over {proc.size} commands"
                       if proc.size else "not recorded")),
        ("Session", " ".join(f"{k} {meta[k]}" for k in ("session", "closedloop_version",
                                                         "config") if k in meta) or "-"),
    ]
    truth = [(_marker_sample(session, m), str(m.fields.get("muscle", m.fields.get("channel",
                                                                                  ""))))
             for m in session.markers if m.label == "truth"]
    if truth:
        sc = score_onsets(truth, list(onsets), fs, n / fs)
        rows.append(("Detection (simulated truth)",
                     f"{sc.hits} of {sc.n_reference} true attempts detected, "
                     f"{sc.false_detections} false detections; detection delay median "
                     f"{sc.median_latency_s * 1000:.0f} ms, p90 "
                     f"{sc.latency_percentile(90) * 1000:.0f} ms"))
    marker_rows = [Row([lab, str(counts[lab])]) for lab in TRIAL_LABELS if counts.get(lab)]
    return rows, marker_rows


def render(page: Page) -> str:
    """The page as self-contained HTML (templates/report.html, autoescaped)."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("closedloop.analysis", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    # the figures are markup matplotlib wrote (their text escaped there)
    return env.get_template("report.html").render(
        p=page, timeline=Markup(page.timeline_svg), effort=Markup(page.effort_svg),
        mwave=Markup(page.mwave_svg))


def report_html(session: Any, *, generated: str | None = None) -> str:
    """The whole report page as HTML text (see the module docstring)."""
    return render(analyse(session, generated=generated))


def build_report(session: Any, out_path: str | Path) -> Path:
    """Write the HTML report of ``session`` (a :class:`closedloop.io.xdf.Session` or an
    object with the same attributes) to ``out_path``; returns the path."""
    from closedloop.io.outfile import write_whole

    return write_whole(out_path, report_html(session), what="report")


__all__ = ["TRIAL_LABELS", "WARNING_WORDS", "Page", "analyse", "build_report", "render",
           "report_html"]
