"""``closedloop report``: one self-contained HTML page about a recorded session.

The page (plots are PNG images embedded as base64, drawn with matplotlib's Agg backend,
so it builds without a display and opens anywhere without other files) has:

* **Session facts**: config name, file, duration (from the sample count), channels and
  units, source and stimulator, whether the file is complete and every sample is there
  (the recorded sample counter runs without gaps).
* **Envelopes**: the recorded EMG is run again through the signal core
  (:class:`~closedloop.core.pipeline.Pipeline`) with the recorded config, and each
  muscle's envelope is drawn over time (max per pixel column) with its on- and
  off-thresholds, the recorded onsets and the stimulation bands (where the muscle's
  channel had current). The page says how many recorded onsets the recomputation
  reproduces at the same sample (all of them, for a recording that started at sample 0
  with the same code and config).
* **Trials**: hits and misses over time and the hit rate over the last 10 trials, from
  the trial markers; detection against the simulated truth when the session recorded
  ``truth`` markers.
* **Trigger latency**: the distribution of processing latency from the stimulation
  commands' wall-clock stamps (``handed_wall - arrival_wall``: from the arrival of the
  deciding sample's chunk to the command being handed to the driver), and the decision
  delay in samples from each onset to the command it started.
* **Stimulation** per channel: time on, pulses, charge per phase and in total, and the
  cumulative charge over the session, from the commands (a command's level holds until
  the channel's next command or the end of the recording).
* **Per-attempt EMG amplitude**: the RMS of the band-passed EMG of each attempt (onset
  to offset, at most 1 s) over the samples without stimulation (each stimulation
  interval plus 25 ms is left out: artefacts and M-waves are not voluntary EMG); when
  less than 20 ms of an attempt is free of stimulation (stimulation triggered at the
  onset), the 50 ms before the onset decision are used instead (the voluntary EMG that
  triggered it). A straight line fitted over the attempts (its change from the first to
  the last attempt, in % of its value at the first) is a fatigue or progress signal,
  not a diagnosis.
* **Warnings**: the warning markers the session recorded, stop commands that switched
  a channel off while it was on (guard limits, safety stops; the off-for-everything at
  the end of a session is not one), channels whose last command leaves them on, samples
  missing from the counter, a truncated file, and the input checks
  (:class:`~closedloop.core.checks.InputMonitor`: flat, saturated, non-finite
  channels, gaps) re-run over the recorded EMG.

Markers the report reads (label, with the marker's ``sample`` or ``time``)
--------------------------------------------------------------------------
``hit``, ``miss``
    Cued trial outcomes (fields ``trial``, ``muscle``); ``trigger`` (an onset started
    stimulation without cues), ``cue``, ``gated``, ``ignored`` and ``early_stop`` are
    counted. These are the protocol's ``TrialEvent`` kinds.
``truth``
    A simulated attempt's true onset (field ``muscle``).
anything whose label contains ``warn``, ``issue``, ``electrode``, ``stall``,
``watchdog``, ``safety``, ``violation``, ``stop``, ``error``, ``lost``, ``suspend``,
``fault``, ``saturat`` or ``flat``
    Listed under warnings with its fields (``message`` first).

:func:`build_report` works from any object with the attributes of
:class:`closedloop.io.xdf.Session` (tests build one in memory); :func:`main` loads an
XDF file with :func:`~closedloop.io.xdf.load_session`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.config.signal import (
    FilterSettings,
)
from closedloop.core.events import OFFSET, ONSET, Event
from closedloop.core.filters import FilterBank
from closedloop.core.pipeline import Pipeline

#: Trial marker labels (the protocol's TrialEvent kinds).
TRIAL_LABELS = ("cue", "hit", "miss", "trigger", "gated", "ignored", "early_stop", "done")
#: A marker whose label contains one of these is a warning.
WARNING_WORDS = ("warn", "issue", "electrode", "stall", "watchdog", "safety", "violation",
                 "stop", "error", "lost", "suspend", "fault", "saturat", "flat")
_PLOT_BINS = 2000
_BLANK_AFTER_S = 0.025
_MIN_CLEAN_S = 0.020
_PRE_S = 0.050
_MAX_ATTEMPT_S = 1.0


# -- what the report computes ------------------------------------------------------------------
@dataclass
class _Muscle:
    """One muscle of the recomputation: its column and name."""

    name: str
    column: int
    label: str


@dataclass
class _Recompute:
    muscles: list[_Muscle]
    filters: FilterSettings
    bin_size: int
    env_max: np.ndarray  # (bins, n_muscles)
    env_min: np.ndarray
    on_thr: np.ndarray  # (bins, n_muscles), at the end of each bin
    off_thr: np.ndarray
    events: list[Event]
    note: str = ""


@dataclass
class _StimStats:
    muscle: str
    channel: int
    on_s: float = 0.0
    pulses: float = 0.0
    charge_mc: float = 0.0
    max_current_ma: float = 0.0
    max_charge_uc: float = 0.0
    stimulations: int = 0
    curve: list[tuple[float, float]] = field(default_factory=list)  # (time s, cumulative mC)


def _config(session: Any) -> tuple[Any, str]:
    """The recorded config (or None) and a note on why it is not used."""
    text = getattr(session, "config_text", None)
    if not text:
        return None, "the recording holds no config: default settings were used"
    from closedloop.errors import ConfigError
    from closedloop.io.recorded import loads_recorded

    try:
        return loads_recorded(text, "recorded config"), ""
    except ConfigError as exc:
        return None, f"the recorded config could not be read ({exc}); default settings used"


def _muscles(session: Any, cfg: Any) -> tuple[list[_Muscle], str]:
    chans = list(session.channels)
    if cfg is None:
        return [_Muscle(c, i, c) for i, c in enumerate(chans)], ""
    out = []
    for m in cfg.muscles:
        if isinstance(m.channel, int) and m.channel < len(chans):
            col = m.channel
        elif m.channel in chans:
            col = chans.index(m.channel)
        elif m.name in chans:
            col = chans.index(m.name)
        else:
            return ([_Muscle(c, i, c) for i, c in enumerate(chans)],
                    f"muscle {m.name!r} (channel {m.channel!r}) is not among the recorded "
                    "channels: every channel shown with default settings")
        out.append(_Muscle(m.name, col, chans[col]))
    return out, ""


def _recompute(session: Any, cfg: Any) -> _Recompute:
    muscles, note = _muscles(session, cfg)
    use_cfg = cfg is not None and not note
    filters = cfg.filters if use_cfg else FilterSettings()
    pipe = Pipeline(session.fs, [m.name for m in muscles], cfg if use_cfg else None)
    x = session.samples[:, [m.column for m in muscles]]
    n = x.shape[0]
    bin_size = max(1, -(-n // _PLOT_BINS))
    n_bins = -(-n // bin_size) if n else 0
    k = len(muscles)
    env_max = np.zeros((n_bins, k))
    env_min = np.zeros((n_bins, k))
    on_thr = np.full((n_bins, k), np.nan)
    off_thr = np.full((n_bins, k), np.nan)
    first = _first_sample(session)
    events: list[Event] = []
    for b in range(n_bins):
        a = b * bin_size
        blk = pipe.process(x[a : a + bin_size], session.timestamps[a : a + bin_size])
        env_max[b] = blk.envelope.max(axis=0)
        env_min[b] = blk.envelope.min(axis=0)
        on_thr[b] = blk.on_threshold
        off_thr[b] = blk.off_threshold
        events.extend(Event(e.sample + first, e.time, e.channel, e.kind, e.envelope,
                            e.threshold) for e in blk.events)
    if first:
        note = (note + "; " if note else "") + (
            f"the recording starts at pipeline sample {first}, so the recomputed adaptive "
            "baseline started later than the live one")
    return _Recompute(muscles, filters, bin_size, env_max, env_min, on_thr, off_thr, events, note)


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


def _stim_intervals(session: Any) -> dict[tuple[str, int], list[tuple[int, int, Any]]]:
    """Per (muscle, channel): [start, end) pipeline-sample intervals with their command."""
    end = _first_sample(session) + _n(session)
    by_ch: dict[tuple[str, int], list[Any]] = {}
    for c in sorted(session.commands, key=_start):
        by_ch.setdefault((c.muscle, c.channel), []).append(c)
    out = {}
    for key, cmds in by_ch.items():
        spans = []
        for i, c in enumerate(cmds):
            stop = _start(cmds[i + 1]) if i + 1 < len(cmds) else end
            if stop > _start(c):
                spans.append((_start(c), stop, c))
        out[key] = spans
    return out


def _stops(session: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """Stop commands that switched a channel off while it was on before the session's
    end (guard limits, safety stops); those of the final all-off that switched a running
    channel off (the session ended during stimulation); and the channels whose last
    command leaves them on (``(muscle, channel, command)``)."""
    last = _first_sample(session) + _n(session) - 1
    level: dict[tuple[str, int], Any] = {}
    forced, at_end = [], []
    for c in sorted(session.commands, key=lambda c: c.sample):
        key = (c.muscle, c.channel)
        prev = level.get(key)
        if c.phase == "stop" and prev is not None and prev.current_ma > 0:
            (at_end if c.sample >= last - 1 else forced).append(c)
        level[key] = c
    left_on = [(k[0], k[1], c) for k, c in sorted(level.items()) if c.current_ma > 0]
    return forced, at_end, left_on


def _stim_stats(session: Any, intervals) -> list[_StimStats]:
    fs = session.fs
    first = _first_sample(session)
    out = []
    for (muscle, channel), spans in sorted(intervals.items()):
        st = _StimStats(muscle, channel)
        was_on = False
        total_uc = 0.0
        st.curve.append(((spans[0][0] - first) / fs if spans else 0.0, 0.0))
        for a, b, c in spans:
            dt = (b - a) / fs
            on = c.current_ma > 0
            if on:
                pulses = c.frequency_hz * dt
                st.on_s += dt
                st.pulses += pulses
                total_uc += c.charge_uc * pulses
                st.max_current_ma = max(st.max_current_ma, c.current_ma)
                st.max_charge_uc = max(st.max_charge_uc, c.charge_uc)
                st.stimulations += not was_on
            was_on = on
            st.curve.append(((b - first) / fs, total_uc / 1000.0))
        st.charge_mc = total_uc / 1000.0
        out.append(st)
    return out


def _is_warning(label: str) -> bool:
    low = label.lower()
    return any(w in low for w in WARNING_WORDS)


# -- figures -------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _envelope_figure(session, rc: _Recompute, intervals, recorded: list[Event]) -> str:
    """Envelope per muscle. The vertical scale is set by the envelope outside stimulation
    (artefacts are orders of magnitude larger than voluntary EMG and are clipped)."""
    fs = session.fs
    first = _first_sample(session)
    k = len(rc.muscles)
    fig = _figure(11, 1.8 * k + 0.6)
    axes = fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0]
    n_bins = rc.env_max.shape[0]
    t = (np.arange(n_bins) * rc.bin_size + rc.bin_size / 2) / fs
    stim_bins = np.zeros(n_bins, dtype=bool)
    blank = int(round(_BLANK_AFTER_S * fs))
    for spans in intervals.values():
        for a, b, c in spans:
            if c.current_ma > 0:
                lo = max(0, (a - first) // rc.bin_size)
                stim_bins[lo : (b - first + blank) // rc.bin_size + 1] = True
    clipped = False
    for i, (ax, m) in enumerate(zip(axes, rc.muscles, strict=True)):
        ax.fill_between(t, rc.env_min[:, i], rc.env_max[:, i], color="0.3", lw=0.5,
                        label="envelope")
        ax.step(t, rc.on_thr[:, i], where="post", color="tab:red", lw=1, label="on threshold")
        ax.step(t, rc.off_thr[:, i], where="post", color="tab:orange", lw=1, ls="--",
                label="off threshold")
        for (muscle, _ch), spans in intervals.items():
            if muscle != m.name:
                continue
            for a, b, c in spans:
                if c.current_ma > 0:
                    ax.axvspan((a - first) / fs, (b - first) / fs, color="tab:blue", alpha=0.15,
                               lw=0)
        env = rc.env_max[:, i]
        quiet = env[~stim_bins & np.isfinite(env)]
        if not quiet.size:
            quiet = env[np.isfinite(env)]
        thr = rc.on_thr[:, i][np.isfinite(rc.on_thr[:, i])]
        top = max(float(quiet.max()) if quiet.size else 0.0,
                  float(thr.max()) * 1.5 if thr.size else 0.0) or 1.0
        clipped |= bool(np.nanmax(env, initial=0.0) > top * 1.1)
        ons = [(e.sample - first) / fs for e in recorded if e.channel == m.name and e.kind == ONSET]
        if ons:
            ax.plot(ons, np.full(len(ons), top * 1.05), "v", color="tab:green", ms=5,
                    label="recorded onsets")
        ax.set_ylim(0, top * 1.12)
        ax.set_ylabel(f"{m.name}\n({m.label})" if m.label != m.name else m.name)
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("time since the first recorded sample (s); blue: stimulation on"
                        + ("; stimulation artefacts clipped" if clipped else ""))
    return _png(fig)


def _trials_figure(times_hit, times_miss, rate_t, rate) -> str:
    fig = _figure(11, 3)
    ax = fig.subplots()
    ax.plot(rate_t, rate, "-", color="0.2", drawstyle="steps-post",
            label="hit rate, last 10 trials")
    ax.plot(times_hit, np.full(len(times_hit), 1.05), "|", color="tab:green", ms=12, mew=2,
            label="hit")
    ax.plot(times_miss, np.full(len(times_miss), -0.05), "|", color="tab:red", ms=12, mew=2,
            label="miss")
    ax.set_ylim(-0.15, 1.15)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("hit rate")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _png(fig)


def _latency_figure(proc_ms: np.ndarray, onset_ms: np.ndarray) -> str:
    fig = _figure(11, 3)
    a1, a2 = fig.subplots(1, 2)
    for ax, data, title in ((a1, proc_ms, "processing: sample arrival -> command handed (ms)"),
                            (a2, onset_ms, "onset decision -> stimulation command (ms)")):
        if data.size:
            ax.hist(data, bins=min(50, max(5, data.size // 2)), color="tab:blue")
            ax.axvline(np.median(data), color="k", lw=1, label=f"median {np.median(data):.2f}")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("commands")
    return _png(fig)


def _charge_figure(stats: Sequence[_StimStats]) -> str:
    fig = _figure(11, 3)
    ax = fig.subplots()
    for st in stats:
        t, q = zip(*st.curve, strict=True)
        ax.plot(t, q, label=f"{st.muscle} (ch {st.channel})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cumulative charge per phase (mC)")
    ax.legend(fontsize=8)
    return _png(fig)


def _amplitude_figure(attempts: dict[str, list[tuple[int, float, bool]]], units: str) -> str:
    fig = _figure(11, 3)
    ax = fig.subplots()
    for name, rows in attempts.items():
        if not rows:
            continue
        idx = np.arange(1, len(rows) + 1)
        amp = np.array([r[1] for r in rows])
        pre = np.array([r[2] for r in rows])
        (line,) = ax.plot(idx[~pre], amp[~pre], "o", ms=4,
                          label=name if (~pre).any() else None)
        ax.plot(idx[pre], amp[pre], "^", ms=4, color=line.get_color(),
                label=f"{name} (50 ms before onset)" if pre.any() else None)
        if len(rows) >= 3:
            slope, icpt = np.polyfit(idx, amp, 1)
            ax.plot(idx, icpt + slope * idx, "-", color=line.get_color(), lw=1)
    ax.set_xlabel("attempt")
    ax.set_ylabel(f"EMG RMS ({units})")
    ax.legend(fontsize=8)
    return _png(fig)


# -- per-attempt amplitude ---------------------------------------------------------------------
def _attempt_amplitudes(session, rc: _Recompute, events: list[Event], intervals):
    """Per muscle: [(onset sample, RMS, used the pre-onset window)] (module docstring)."""
    fs = session.fs
    first = _first_sample(session)
    n = _n(session)
    blank = int(round(_BLANK_AFTER_S * fs))
    stim = sorted((a - first, b - first + blank) for spans in intervals.values()
                  for a, b, c in spans if c.current_ma > 0)
    windows = []  # (muscle index, a, b, pre)
    for i, m in enumerate(rc.muscles):
        evs = sorted((e for e in events if e.channel == m.name), key=lambda e: e.sample)
        for j, e in enumerate(evs):
            if e.kind != ONSET:
                continue
            s = e.sample - first
            nxt = next((f.sample - first for f in evs[j + 1 :] if f.kind == OFFSET), s + n)
            b = min(nxt, s + int(_MAX_ATTEMPT_S * fs), n)
            windows.append([i, s, b, False])
    if not windows:
        return {m.name: [] for m in rc.muscles}

    def clean_mask(a: int, b: int) -> np.ndarray:
        mask = np.ones(b - a, dtype=bool)
        for s0, s1 in stim:
            if s1 > a and s0 < b:
                mask[max(s0, a) - a : min(s1, b) - a] = False
        return mask

    for w in windows:
        _, a, b, _ = w
        if b <= a or clean_mask(a, b).sum() < _MIN_CLEAN_S * fs:
            w[1], w[2], w[3] = max(0, a - int(_PRE_S * fs)), a, True
    sums = np.zeros(len(windows))
    counts = np.zeros(len(windows))
    bank = FilterBank(rc.filters, fs, len(rc.muscles))
    cols = [m.column for m in rc.muscles]
    step = int(10 * fs)
    for c0 in range(0, n, step):
        xf = bank.process(session.samples[c0 : c0 + step, cols])
        c1 = c0 + xf.shape[0]
        for k, (i, a, b, pre) in enumerate(windows):
            lo, hi = max(a, c0), min(b, c1)
            if hi <= lo:
                continue
            seg = xf[lo - c0 : hi - c0, i]
            if not pre:
                seg = seg[clean_mask(lo, hi)]
            sums[k] += float(seg @ seg)
            counts[k] += seg.size
    out: dict[str, list[tuple[int, float, bool]]] = {m.name: [] for m in rc.muscles}
    for k, (i, a, _b, pre) in enumerate(windows):
        if counts[k]:
            onset = a + int(_PRE_S * fs) if pre else a
            out[rc.muscles[i].name].append((onset + first, math.sqrt(sums[k] / counts[k]), pre))
    for rows in out.values():
        rows.sort()
    return out


# -- HTML -----------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.92em}th{background:#f3f3f3}img{max-width:100%}
.warn{color:#a40}.ok{color:#070}.note{color:#555;font-size:.9em}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _stats_ms(x: np.ndarray) -> list[Any]:
    if not x.size:
        return [0, "-", "-", "-", "-"]
    return [int(x.size), float(np.median(x)), float(np.percentile(x, 90)),
            float(np.percentile(x, 99)), float(np.max(x))]


def _fmt_duration(s: float) -> str:
    m, sec = divmod(s, 60.0)
    return f"{int(m)} min {sec:04.1f} s" if m else f"{sec:.1f} s"


def report_html(session: Any) -> str:
    """The whole report page as HTML text (see the module docstring)."""
    from closedloop.analysis.scoring import score_onsets

    fs = float(session.fs)
    first = _first_sample(session)
    cfg, cfg_note = _config(session)
    meta = dict(getattr(session, "metadata", {}) or {})
    rc = _recompute(session, cfg)
    recorded = list(session.events)
    events_for_attempts = recorded or rc.events
    intervals = _stim_intervals(session)
    parts: list[str] = []
    warnings: list[list[Any]] = []

    # facts
    name = cfg.name if cfg is not None else meta.get("session", "unknown")
    title = f"Session report: {name}"
    counter = getattr(session, "counter", None)
    if counter is not None and len(counter) > 1:
        d = np.diff(counter)
        missing = int(np.sum(np.maximum(d - 1, 0)))
        gaps = int(np.count_nonzero(d != 1))
        counter_text = ("every sample present (counter without gaps)" if gaps == 0 else
                        f"{missing} sample(s) missing in {gaps} place(s)")
        if gaps:
            warnings.append(["recording", "-", "-", f"sample counter: {counter_text}"])
    else:
        counter_text = "no sample counter recorded"
    damage_report = str(getattr(session, "damage_report", "") or "")
    for line in damage_report.splitlines()[1:]:
        warnings.append(["recording", "-", "-", line.strip().lstrip("- ")])
    if getattr(session, "truncated", False) and not damage_report:
        warnings.append(["recording", "-", "-", "the file was cut short and repaired on reading"])
    source = meta.get("source_kind") or (cfg.session.source if cfg is not None else "-")
    source_name = meta.get("source_name", getattr(session, "name", ""))
    stimulator = meta.get("stimulator") or (cfg.session.stimulator if cfg is not None else "-")
    described = f"{name} - {cfg.description}" if cfg is not None and cfg.description else name
    state = "complete" if getattr(session, "complete", True) else "incomplete (no footers)"
    if getattr(session, "truncated", False):
        state += "; truncated"
    if damage_report:
        state = (f"{str(getattr(session, 'state', 'damaged')).upper()}: this report covers "
                 "the intact part only (see the warnings)")
    n_on = sum(e.kind == ONSET for e in recorded)
    facts = [
        ["config", described],
        ["file", str(getattr(session, "path", ""))],
        ["duration", f"{_fmt_duration(_n(session) / fs)} ({_n(session)} samples at {fs:g} Hz)"],
        ["channels", ", ".join(session.channels) + f" ({session.units})"],
        ["muscles", ", ".join(f"{m.name} <- {m.label}" for m in rc.muscles)],
        ["source", f"{source} ({source_name})"],
        ["stimulator", str(stimulator)],
        ["protocol", getattr(getattr(cfg, "protocol", None), "kind", "-") if cfg else "-"],
        ["recorded", f"{n_on} onsets, {len(session.commands)} stimulation commands, "
                     f"{len(session.markers)} markers"],
        ["samples", counter_text],
        ["file state", state],
    ]
    if session.commands:
        _, at_end, left = _stops(session)
        end_text = "every channel off" if not left else "LEFT ON: " + ", ".join(
            f"{m} (channel {ch})" for m, ch, _ in left)
        if at_end:
            end_text += "; the session ended during stimulation of " + ", ".join(
                f"{c.muscle} (channel {c.channel})" for c in at_end)
        facts.append(["stimulation at the end", end_text])
    for k in ("patient", "operator", "session", "closedloop_version"):
        if k in meta:
            facts.append([k, str(meta[k])])
    parts.append('<h2 id="facts">Session facts</h2>' + _table(["", ""], facts))
    if damage_report:
        parts.append('<p class="warn">' + "<br>".join(
            html.escape(line) for line in damage_report.splitlines()) + "</p>")
    if cfg_note:
        parts.append(f'<p class="warn">{html.escape(cfg_note)}</p>')

    # envelopes
    rec_on = {(e.sample, e.channel) for e in recorded if e.kind == ONSET}
    re_on = {(e.sample, e.channel) for e in rc.events if e.kind == ONSET}
    if rec_on:
        agree = (f"{len(rec_on & re_on)} of {len(rec_on)} recorded onsets reproduced at the same "
                 f"sample by the recomputation ({len(re_on)} recomputed onsets)")
    else:
        agree = f"no recorded detector events; {len(re_on)} onsets recomputed"
    parts.append(
        '<h2 id="envelopes">Envelopes, thresholds and stimulation</h2>'
        f"<p>{html.escape(agree)}.</p>"
        + (f'<p class="note">{html.escape(rc.note)}</p>' if rc.note else "")
        + _img(_envelope_figure(session, rc, intervals, recorded), "envelopes over time")
    )

    # trials
    markers = sorted(session.markers, key=lambda m: _marker_sample(session, m))
    counts = Counter(m.label for m in markers if m.label in TRIAL_LABELS)
    trial_rows = [[lab, counts.get(lab, 0)] for lab in TRIAL_LABELS if counts.get(lab, 0)]
    outcomes = [m for m in markers if m.label in ("hit", "miss")]
    trials_html = '<h2 id="trials">Trials</h2>'
    if outcomes:
        hits = sum(m.label == "hit" for m in outcomes)
        trials_html += (f"<p>{len(outcomes)} cued trials: {hits} hit(s), "
                        f"{len(outcomes) - hits} miss(es), hit rate "
                        f"{hits / len(outcomes):.0%}.</p>")
        tt = np.array([(_marker_sample(session, m) - first) / fs for m in outcomes])
        hit = np.array([m.label == "hit" for m in outcomes], dtype=float)
        rate = np.array([hit[max(0, i - 9) : i + 1].mean() for i in range(len(hit))])
        trials_html += _img(_trials_figure(tt[hit == 1], tt[hit == 0], tt, rate), "hit rate")
    elif counts.get("trigger"):
        trials_html += f"<p>{counts['trigger']} triggered stimulations (no cued trials).</p>"
    else:
        trials_html += "<p>No trial markers recorded.</p>"
    if trial_rows:
        trials_html += _table(["marker", "count"], trial_rows)
    truth = [(_marker_sample(session, m), str(m.fields.get("muscle", m.fields.get("channel", ""))))
             for m in markers if m.label == "truth"]
    if truth:
        sc = score_onsets(truth, recorded or rc.events, fs, _n(session) / fs)
        trials_html += "<p>Detection against the simulated truth " + html.escape(
            f"({'recorded' if recorded else 'recomputed'} onsets): sensitivity "
            f"{sc.hits}/{sc.n_reference}, {sc.false_detections} false, median latency "
            f"{sc.median_latency_s * 1000:.1f} ms, p90 {sc.latency_percentile(90) * 1000:.1f} ms"
        ) + ".</p>"
    parts.append(trials_html)

    # latency
    cmds = sorted(session.commands, key=lambda c: c.sample)
    proc = np.array([(c.handed_wall - c.arrival_wall) * 1000.0 for c in cmds
                     if math.isfinite(c.handed_wall) and math.isfinite(c.arrival_wall)])
    onset_ms = []
    level: dict[tuple[str, int], float] = {}
    ons_by_muscle: dict[str, list[int]] = {}
    for e in events_for_attempts:
        if e.kind == ONSET:
            ons_by_muscle.setdefault(e.channel, []).append(e.sample)
    for c in cmds:
        key = (c.muscle, c.channel)
        if c.current_ma > 0 and level.get(key, 0.0) <= 0 and c.phase != "test":
            prior = [s for s in ons_by_muscle.get(c.muscle, []) if c.sample - fs <= s <= c.sample]
            if prior:
                onset_ms.append((c.sample - max(prior)) / fs * 1000.0)
        level[key] = c.current_ma
    onset_arr = np.array(onset_ms)
    lat_html = '<h2 id="latency">Trigger latency</h2>'
    lat_html += _table(["", "n", "median ms", "p90 ms", "p99 ms", "max ms"], [
        ["processing (arrival -> handed, wall clock)", *_stats_ms(proc)],
        ["onset decision -> command (samples)", *_stats_ms(onset_arr)],
    ])
    if proc.size or onset_arr.size:
        lat_html += _img(_latency_figure(proc, onset_arr), "trigger latency distribution")
    else:
        lat_html += "<p>No stimulation commands with latency stamps.</p>"
    parts.append(lat_html)

    # stimulation
    stats = _stim_stats(session, intervals)
    stim_html = '<h2 id="stimulation">Stimulation per channel</h2>'
    if stats:
        stim_html += _table(
            ["muscle", "channel", "stimulations", "time on (s)", "pulses", "max current (mA)",
             "max charge / phase (uC)", "total charge / phase (mC)"],
            [[s.muscle, s.channel, s.stimulations, s.on_s, s.pulses, s.max_current_ma,
              s.max_charge_uc, s.charge_mc] for s in stats])
        stim_html += _img(_charge_figure(stats), "cumulative charge")
    else:
        stim_html += "<p>No stimulation commands recorded.</p>"
    parts.append(stim_html)

    # amplitude trend
    amps = _attempt_amplitudes(session, rc, events_for_attempts, intervals)
    amp_rows = []
    for mname, rows in amps.items():
        if not rows:
            continue
        a = np.array([r[1] for r in rows])
        trend = "-"
        if len(a) >= 3:
            slope, icpt = np.polyfit(np.arange(len(a)), a, 1)
            if icpt > 0:
                trend = f"{slope * (len(a) - 1) / icpt * 100:+.0f} % from first to last"
        k = min(5, len(a))
        amp_rows.append([mname, len(a), sum(r[2] for r in rows), float(a[:k].mean()),
                         float(a[-k:].mean()), trend])
    amp_html = '<h2 id="amplitude">Per-attempt EMG amplitude</h2>'
    if amp_rows:
        amp_html += _table(["muscle", "attempts", "from the 50 ms before onset",
                            f"first 5 RMS ({session.units})", f"last 5 RMS ({session.units})",
                            "linear trend (fitted)"], amp_rows)
        amp_html += _img(_amplitude_figure(amps, session.units), "per-attempt amplitude")
    else:
        amp_html += "<p>No attempts (onsets) to measure.</p>"
    parts.append(amp_html)

    # warnings
    for m in markers:
        if _is_warning(m.label):
            fields = dict(m.fields)
            msg = str(fields.pop("message", ""))
            rest = ", ".join(f"{k}={v}" for k, v in fields.items())
            t = (_marker_sample(session, m) - first) / fs
            warnings.append([m.label, f"{t:.2f}", _marker_sample(session, m),
                             "; ".join(x for x in (msg, rest) if x)])
    forced, _, left_on = _stops(session)
    for c in forced:
        warnings.append(["stop command", f"{(c.sample - first) / fs:.2f}", c.sample,
                         f"{c.muscle} (channel {c.channel}) was on and was switched off by a "
                         "stop (a guard limit or a safety stop)"])
    for muscle, channel, c in left_on:
        warnings.append(["left on", f"{(c.sample - first) / fs:.2f}", c.sample,
                         f"the last recorded command leaves {muscle} (channel {channel}) at "
                         f"{c.current_ma:g} mA: the recording ends before an off"])
    issues = _input_issues(session)
    warnings.extend(issues)
    warn_html = '<h2 id="warnings">Warnings</h2>'
    if warnings:
        warn_html += (f'<p class="warn">{len(warnings)} warning(s).</p>'
                      + _table(["what", "time (s)", "sample", "details"], warnings))
    else:
        warn_html += '<p class="ok">No warnings: no warning markers, no stop commands, no ' \
                     "input issues, no missing samples.</p>"
    parts.append(warn_html)

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        '<p class="note">Built by closedloop report. Times are counted in samples from the '
        "first recorded sample; plots are embedded.</p>"
        + "\n".join(parts) + "</body></html>\n"
    )


def _input_issues(session: Any, limit: int = 50) -> list[list[Any]]:
    """What the live input checks said (the recording's ``input_issue`` markers), or for a
    recording without them the input checks re-run over the recorded EMG (all but
    'recovered' notes)."""
    said = [m for m in getattr(session, "markers", ()) if m.label == "input_issue"]
    if said:
        first = _first_sample(session)
        rows = [[f"input: {m.fields.get('kind', '')}",
                 f"{(_marker_sample(session, m) - first) / session.fs:.2f}",
                 _marker_sample(session, m), str(m.fields.get("message", ""))]
                for m in said[:limit]]
        if len(said) > limit:
            rows.append(["input", "-", "-", f"... and {len(said) - limit} more input issues"])
        return rows
    from closedloop.core.checks import InputMonitor
    from closedloop.core.stream import Chunk, SourceInfo
    from closedloop.errors import InputError

    info = SourceInfo(name=str(getattr(session, "name", "EMG")), fs=float(session.fs),
                      channels=tuple(session.channels), units=str(session.units), kind="replay")
    mon = InputMonitor(info)
    counter = getattr(session, "counter", None)
    step = max(1, int(session.fs))
    first = _first_sample(session)
    out: list[list[Any]] = []
    total = 0
    for a in range(0, _n(session), step):
        chunk = Chunk(session.samples[a : a + step], session.timestamps[a : a + step],
                      None if counter is None else counter[a : a + step])
        try:
            issues = mon.check(chunk).issues
        except InputError as exc:  # a session would have stopped here (its rate, say)
            total += 1
            out.append(["input: unusable", f"{a / session.fs:.2f}", a + first, str(exc)])
            break
        for issue in issues:
            if getattr(issue.kind, "value", issue.kind) == "recovered":
                continue
            total += 1
            if len(out) < limit:
                out.append([f"input: {getattr(issue.kind, 'value', issue.kind)}",
                            f"{issue.sample / session.fs:.2f}", issue.sample + first,
                            issue.message])
    if total > limit:
        out.append(["input", "-", "-", f"... and {total - limit} more input issues"])
    return out


def build_report(session: Any, out_path: str | Path) -> Path:
    """Write the HTML report of ``session`` (a :class:`closedloop.io.xdf.Session` or an
    object with the same attributes) to ``out_path``; returns the path."""
    p = Path(out_path)
    p.write_text(report_html(session), encoding="utf-8")
    return p


def main(args) -> int:
    """``closedloop report``. Fields of ``args``: ``input`` (the XDF file), ``out`` (the
    HTML file to write; default: the input with ``.html``), ``overwrite`` (replace an
    existing report)."""
    import sys

    from closedloop.errors import InputError
    from closedloop.io.outfile import claim_output
    from closedloop.io.xdf import load_session

    out = getattr(args, "out", None) or Path(args.input).with_suffix(".html")
    with claim_output(out, overwrite=getattr(args, "overwrite", False),
                      inputs=[("recording", args.input)], what="report"):
        session = load_session(args.input)
        if not (session.fs > 0):
            raise InputError(
                f"{args.input}: the EMG stream {session.name!r} has an irregular rate (no "
                "nominal sampling rate), and closedloop's filters and detector need a fixed "
                "one; a report needs EMG recorded from a stream with a nominal rate")
        path = build_report(session, out)
        if session.damage:  # a crashed session is worth a report, but it must say so
            print(f"{args.input}: WARNING: {session.damage_report}\nThe report covers the "
                  "intact part only.", file=sys.stderr)
    print(f"{args.input}: report written to {path}", file=sys.stderr)
    return 0
