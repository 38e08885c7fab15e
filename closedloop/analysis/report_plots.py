"""The report's figures: matplotlib drawn to inline SVG (text kept as text, so the page
is searchable, prints sharp on paper and needs no file beside it).

Every figure is sized for an A4 page's width (:data:`PAGE_WIDTH_IN`) and takes numbers
already in display units (µV, % MVC, seconds); the report decides what to draw.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Width of a figure: an A4 page less its margins, inches.
PAGE_WIDTH_IN = 7.2
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf")
_RC: dict[Any, Any] = {  # matplotlib's rc keys (its stubs want literal keys)
    "svg.fonttype": "none", "svg.hashsalt": "closedloop", "font.size": 7.5,
    "axes.titlesize": 8, "axes.labelsize": 7.5, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
    "axes.spines.right": False, "font.family": "DejaVu Sans"}


@dataclass
class Lane:
    """One muscle of the session timeline, in display units.

    Attributes
    ----------
    name : str
    low, high : ndarray
        Lowest and highest envelope in each bin.
    threshold : ndarray
        On-threshold at each bin's end (NaN while learning).
    stimulation : list of (start s, end s, mA)
        When the muscle was stimulated, and the highest current of each stimulation.
    onsets : list of float
        Onset times, s.
    what, unit : str or None
        What the lane draws and its unit (None: the figure's statistic and unit); a
        lane without a threshold (all NaN) draws no threshold line.
    """

    name: str
    low: np.ndarray
    high: np.ndarray
    threshold: np.ndarray
    stimulation: list[tuple[float, float, float]] = field(default_factory=list)
    onsets: list[float] = field(default_factory=list)
    what: str | None = None
    unit: str | None = None


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # the same figure, the same text
    text = buf.getvalue()
    return text[text.index("<svg"):]  # no XML declaration or DOCTYPE inside HTML


def _figure(height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(PAGE_WIDTH_IN, height), layout="constrained")


def _time_axis(seconds: float) -> tuple[float, str]:
    """Divisor and label of a time axis over ``seconds``: minutes beyond 3 minutes."""
    return (60.0, "min") if seconds > 180 else (1.0, "s")


def timeline(lanes: Sequence[Lane], bin_s: float, duration_s: float, stat_name: str,
             unit: str) -> str:
    """Each muscle's envelope (the band between the lowest and highest value of each
    bin) against its on-threshold, with the stimulation (shaded, with its current) and
    the onsets (ticks); one lane per muscle, sharing the time axis."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        k = max(1, len(lanes))
        # the page holds two muscles' lanes at 1.15 in; a detector whose statistic is not
        # the EMG level gives each muscle two lanes (level, statistic): thinner ones, so
        # the report still prints on two A4 pages
        fig = _figure(min(4.8, 0.5 + (1.15 if k <= 2 else 0.5) * k))
        axes = fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0]
        div, tunit = _time_axis(duration_s)
        for ax, lane in zip(axes, lanes, strict=False):
            n = lane.high.size
            t = (np.arange(n) + 0.5) * bin_s / div
            finite = np.isfinite(lane.high)
            top = _top(lane.high[finite], lane.threshold)
            what = stat_name if lane.what is None else lane.what
            lane_unit = unit if lane.unit is None else lane.unit
            ax.fill_between(t, np.where(finite, lane.low, np.nan),
                            np.where(finite, np.minimum(lane.high, top * 1.08), np.nan),
                            color="0.35" if lane.what is None else "#1f77b4", lw=0.4,
                            step="mid", label=what)
            if np.isfinite(lane.threshold).any():
                ax.step(t, lane.threshold, where="post", color="#d62728", lw=0.9,
                        label="on-threshold")
            peak_ma = 0.0
            for a, b, ma in lane.stimulation:
                ax.axvspan(a / div, b / div, color="#1f77b4", alpha=0.18, lw=0)
                peak_ma = max(peak_ma, ma)
            if lane.onsets:
                ax.plot(np.asarray(lane.onsets) / div, np.full(len(lane.onsets), top * 1.12),
                        "|", color="#2ca02c", ms=5, mew=1.2, label="onset")
            ax.set_ylim(0, top * 1.18)
            ax.set_ylabel(f"{lane.name}\n{lane_unit}" if lane_unit else lane.name)
            if peak_ma:
                ax.text(1.0, 1.0, f"stimulated up to {peak_ma:g} mA", transform=ax.transAxes,
                        ha="right", va="bottom", fontsize=6.5, color="#1f77b4")
            ax.margins(x=0)
        handles: dict[str, Any] = {}  # every lane's kinds, once (e.g. EMG level, statistic)
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, h)
        axes[0].legend(list(handles.values()), list(handles), loc="upper left",
                       bbox_to_anchor=(0.0, 1.32), ncol=min(4, len(handles)), frameon=False)
        axes[-1].set_xlabel(f"time ({tunit}); shaded: stimulation")
        axes[-1].set_xlim(0, max(duration_s, 1e-3) / div)  # a recording of no samples too
        return _svg(fig)


def _top(values: np.ndarray, threshold: np.ndarray) -> float:
    """The lane's scale: the envelope's 99.5th percentile or 1.5 x the highest
    threshold, whichever is higher (a rare spike is clipped, not the whole lane
    flattened)."""
    v = float(np.nanpercentile(values, 99.5)) if values.size else 0.0
    thr = threshold[np.isfinite(threshold)]
    top = max(v, 1.5 * float(thr.max()) if thr.size else 0.0)
    return top if top > 0 and math.isfinite(top) else 1.0


@dataclass
class EffortSeries:
    """One muscle's attempts: time (s), mean and peak effort (display units)."""

    name: str
    time: np.ndarray
    mean: np.ndarray
    peak: np.ndarray


def effort(series: Sequence[EffortSeries], duration_s: float, unit: str) -> str:
    """Mean (filled) and peak (open) voluntary effort of every attempt over the session,
    with a straight line fitted to the means of each muscle."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(1.8)
        ax = fig.subplots()
        div, tunit = _time_axis(duration_s)
        for i, s in enumerate(series):
            colour = COLOURS[i % len(COLOURS)]
            t = s.time / div
            ax.plot(t, s.mean, "o", ms=3.2, color=colour, label=f"{s.name} mean")
            ax.plot(t, s.peak, "o", ms=3.2, mfc="none", color=colour, mew=0.8,
                    label=f"{s.name} peak")
            ok = np.isfinite(s.mean)
            if ok.sum() >= 3:
                slope, icpt = np.polyfit(t[ok], s.mean[ok], 1)
                ax.plot(t[ok], icpt + slope * t[ok], "-", color=colour, lw=1)
        ax.set_xlim(0, max(duration_s, 1e-3) / div)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"time of the attempt ({tunit})")
        ax.set_ylabel(unit)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _svg(fig)


@dataclass
class MWaveSeries:
    """One muscle's M-wave measurements (display units).

    Attributes
    ----------
    name : str
    time : ndarray
        When each was decided, s from the start.
    current_ma : ndarray
    amplitude : ndarray
        Peak-to-peak (µV).
    present : ndarray of bool
        A response was there.
    percent : ndarray
        % of the first trains at the same current (NaN: none yet).
    working : ndarray of bool
        At the muscle's working level (the current it got most pulses at).
    """

    name: str
    time: np.ndarray
    current_ma: np.ndarray
    amplitude: np.ndarray
    present: np.ndarray
    percent: np.ndarray
    working: np.ndarray


def mwaves(series: Sequence[MWaveSeries], unit: str, duration_s: float) -> str:
    """Two panels side by side. Recruitment: the M-wave amplitude of every measurement
    against its current (filled where a response was there, a cross where none was).
    Fatigue: the amplitude at each muscle's working current over the session, in % of
    its first trains (100 %: as at the start)."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(1.5)
        rec, fat = fig.subplots(1, 2)
        div, tunit = _time_axis(duration_s)
        top = 110.0
        for i, s in enumerate(series):
            colour = COLOURS[i % len(COLOURS)]
            ok = s.present
            if ok.any():
                rec.plot(s.current_ma[ok], s.amplitude[ok], "o", ms=3.0, color=colour,
                         label=s.name)
            if (~ok).any():
                rec.plot(s.current_ma[~ok], s.amplitude[~ok], "x", ms=4, mew=1.0,
                         color=colour, label=f"{s.name}: no response")
            w = s.working & np.isfinite(s.percent)
            if not w.any():
                continue
            t, pct = s.time[w] / div, s.percent[w]
            fat.plot(t, pct, "o-", ms=2.6, lw=0.8, color=colour)
            bad = ~s.present[w]
            if bad.any():
                fat.plot(t[bad], pct[bad], "x", ms=4, mew=1.0, color=colour)
            top = max(top, float(np.nanmax(pct)) * 1.05)
        rec.set_xlim(left=0)
        rec.set_ylim(bottom=0)
        rec.set_xlabel("current (mA)")
        rec.set_ylabel(f"peak-to-peak ({unit})" if unit else "peak-to-peak")
        rec.set_title("recruitment: M-wave against current")
        rec.legend(loc="upper left", frameon=False)
        fat.axhline(100.0, color="0.6", lw=0.8, ls="--")
        fat.set_xlim(0, max(duration_s, 1e-3) / div)
        fat.set_ylim(0, top)
        fat.set_xlabel(f"time ({tunit})")
        fat.set_ylabel("% of the first trains")
        fat.set_title("fatigue: M-wave at the working current")
        return _svg(fig)


__all__ = ["COLOURS", "PAGE_WIDTH_IN", "EffortSeries", "Lane", "MWaveSeries", "effort",
           "mwaves", "timeline"]
