"""Replays as results: configs side by side on the same recordings, as a table.

``closedloop replay FILE... [--config A.toml --config B.toml ...]`` replays every
recording with every config (the default, and ``--config recorded``, is the config the
recording holds) through :func:`closedloop.runtime.replay.replay_file`, the exact live
pipeline. :func:`replay_task` is one (recording, config) task and returns a
:class:`ReplayRow`; :func:`replay_table` adds one pooled row per config and the
bootstrap intervals; :func:`render` writes them as text, CSV, Markdown or JSON.

What a row holds
----------------
* what the config decided: ``onsets`` (and per muscle), ``triggers`` (protocol trials:
  every trigger of triggered assist or reciprocal, every cue of cued trials), ``hits``,
  ``misses`` and ``gated`` (onsets the co-contraction gate refused), ``stim_s``
  (seconds of stimulation, and per muscle) and ``commands``;
* agreement with the decisions the recording holds (what the live session decided):
  ``events_matched`` of ``events_recorded`` events and ``commands_matched`` of
  ``commands_recorded`` commands found identical (sample, channel, kind; every decided
  field of a command), as multisets, and ``identical`` (the ``--check`` verdict: same
  events and commands in the same order, and the same channel restarts when the recording
  marks them), with the ``first_difference``;
* detection against the truth, when the recording has ``truth`` markers (every
  simulated session records them): sensitivity, precision, F1, false detections per
  minute and latency of the replayed onsets, with intervals, scored as ``evaluate``
  does (:func:`closedloop.analysis.evaluate.score_recording`).

Every figure counts samples; none depends on the wall clock, the chunking or where the
task ran, so a table is the same on one core, many, or a cluster.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from closedloop.analysis.results import (
    Bootstrap,
    Column,
    bootstrap_ci,
    ci_columns,
    figures,
    metric_columns,
    to_csv,
    to_json,
    to_markdown,
    trial_units,
)
from closedloop.analysis.scoring import Score, merge_scores
from closedloop.runtime.replay import EXIT_MISMATCH

#: ``--config`` value that names the config stored in the recording.
RECORDED = "recorded"


@dataclass(frozen=True)
class ReplayTask:
    """One recording replayed with one config.

    ``config`` is a TOML path or None (the recording's own); ``progress`` shows a bar on
    stderr (single-file runs on a terminal).
    """

    path: str
    config: str | None = None
    speed: str = "fast"
    stream: str | None = None
    check: bool = False
    progress: bool = False
    name: str = ""
    partial: bool = False


@dataclass
class ReplayRow:
    """One (recording, config) of the table, or a pooled ``overall`` row per config."""

    recording: str
    config: str
    config_name: str = ""
    group: str = "replay"
    minutes: float = 0.0
    samples: int = 0
    onsets: int = 0
    onsets_by_muscle: dict[str, int] = field(default_factory=dict)
    triggers: int = 0
    hits: int = 0
    misses: int = 0
    gated: int = 0
    stim_s: float = 0.0
    stim_s_by_muscle: dict[str, float] = field(default_factory=dict)
    commands: int = 0
    events_recorded: int = 0
    events_matched: int = 0
    commands_recorded: int = 0
    commands_matched: int = 0
    identical: bool | None = None
    first_difference: str = ""
    n_reference: int | None = None
    detection_hits: int | None = None
    false_detections: int | None = None
    score: Score | None = field(default=None, repr=False)
    units: tuple[Score, ...] = field(default=(), repr=False)
    ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    ci_unit: str = ""
    ci_n: int = 0
    exit_code: int = 0
    error: str = ""
    note: str = ""
    lines: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Flat: per-muscle figures as ``muscle value; ...`` text, metrics and
        intervals as columns."""
        d = asdict(self)
        for k in ("score", "units", "ci", "lines"):
            d.pop(k)
        d["onsets_by_muscle"] = "; ".join(f"{m} {n}" for m, n in self.onsets_by_muscle.items())
        d["stim_s_by_muscle"] = "; ".join(f"{m} {s:.3f}" for m, s in
                                          self.stim_s_by_muscle.items())
        d.update(figures(self.score))
        d.update(ci_columns(self.ci))
        return d


class ProgressBar:
    """A ``progress(done, total)`` callback drawn as a tqdm bar on stderr, on a terminal only.

    Into a pipe or a log file a bar is noise (carriage returns, hundreds of redraws), so
    there it writes nothing at all. The bar is created at the first call, when the total
    is known.
    """

    def __init__(self, desc: str, *, unit: str = "it") -> None:
        self.desc = desc
        self.unit = unit
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, unit_scale=True,
                             file=sys.stderr, disable=not sys.stderr.isatty(),
                             dynamic_ncols=True)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """End the bar (its last state stays on the terminal). Idempotent."""
        if self._bar is not None:
            self._bar.close()


def _matched(a: Sequence[tuple], b: Sequence[tuple]) -> int:
    """How many items two sequences share, as multisets."""
    return sum((Counter(a) & Counter(b)).values())


def _label(config: str | None) -> str:
    return RECORDED if config is None else Path(config).name


def replay_task(task: ReplayTask) -> ReplayRow:
    """Replay one recording with one config and describe it (module docstring).

    Errors of the closedloop family propagate (the batch reports them per task).
    """
    from closedloop.analysis.evaluate import score_recording, session_recording
    from closedloop.runtime.replay import check, check_intact, replay_file

    name = task.name or task.path
    t0 = time.perf_counter()
    bar = ProgressBar("replay", unit="sample") if task.progress else None
    try:
        session, config, out = replay_file(task.path, config_path=task.config,
                                           speed=task.speed, stream=task.stream,
                                           progress=bar, partial=task.partial)
        if bar is not None:  # where the replay got to (its last status may be older)
            bar(int(out.samples), session.n)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    row = ReplayRow(recording=name, config=_label(task.config), config_name=config.name)
    if out.reason not in ("ended", "duration"):
        row.exit_code = max(out.exit_code, 1)
        row.error = f"replay stopped early: {out.message}"
        row.lines = [f"{name}: {row.error}"]
        return row
    row.samples = int(out.samples)
    row.minutes = out.samples / session.fs / 60.0
    row.onsets = int(sum(out.onsets.values()))
    row.onsets_by_muscle = dict(out.onsets)
    t = out.trials or {}
    row.triggers, row.hits = int(t.get("trials", 0)), int(t.get("hits", 0))
    row.misses, row.gated = int(t.get("misses", 0)), int(t.get("gated", 0))
    row.stim_s_by_muscle = {m: float(s) for m, s in out.stim_seconds.items()}
    row.stim_s = float(sum(row.stim_s_by_muscle.values()))
    row.commands = int(out.n_commands)
    ev_key = lambda e: (e.sample, e.channel, e.kind)  # noqa: E731
    row.events_recorded, row.commands_recorded = len(session.events), len(session.commands)
    row.events_matched = _matched([ev_key(e) for e in session.events],
                                  [ev_key(e) for e in out.events])
    row.commands_matched = _matched([c.decision_key() for c in session.commands],
                                    [c.decision_key() for c in out.commands])
    if session.events or session.commands or not config.stimulates:
        diff = check(session, out)
        row.identical, row.first_difference = diff is None, diff or ""
    rec = session_recording(session)
    if rec.reference is not None:
        row.score = score_recording(rec, out.events)
        row.n_reference = row.score.n_reference
        row.detection_hits = row.score.hits
        row.false_detections = row.score.false_detections
        row.note = "detection scored against the recording's truth markers"
    speed = session.n / session.fs / wall if wall > 0 else float("inf")
    row.lines.append(
        f"{name}: {session.n} samples ({session.n / session.fs:.1f} s) replayed in {wall:.2f} s "
        f"({speed:.0f}x real time) with config {config.name!r}: {row.onsets} onsets, "
        f"{len(out.commands)} commands")
    if session.damage:
        row.note = f"{session.state} recording: only its intact part was replayed"
        row.lines.append(f"{name}: PARTIAL: the recording is {session.state.upper()}; only "
                         f"its intact part was replayed:\n{session.damage_report}")
    if not task.check:
        return row
    if session.damage and (session.events or session.commands):
        diff, note = check_intact(session, out)
        row.identical, row.first_difference = diff is None, diff or ""
        row.exit_code = EXIT_MISMATCH if diff else 0
        row.lines.append(f"{name}: CHECK FAILED ({note}): {diff}" if diff
                         else f"{name}: check passed, {note}")
        return row
    if row.identical is None:
        row.exit_code = 1
        row.lines.append(f"{name}: the recording holds no events or commands to check against")
    elif not row.identical:
        row.exit_code = EXIT_MISMATCH
        row.lines.append(f"{name}: CHECK FAILED: {row.first_difference}")
    else:
        what = f"{len(out.events)} events and {len(out.commands)} commands"
        if session.restarts_marked:
            what = (f"{len(out.events)} events, {len(out.commands)} commands and "
                    f"{len(out.restarts)} channel restarts")
        row.lines.append(f"{name}: check passed: {what} identical to the recording")
    return row


def failed_row(task: ReplayTask, error: str, exit_code: int = 1) -> ReplayRow:
    """The row of a task that raised (a bad file, a bad config; ``exit_code`` the error's
    own, e.g. 9 for a damaged recording)."""
    name = task.name or task.path
    base = f"{Path(str(name)).name}: "  # an error that names the file itself: once is enough
    said = error[len(base):] if error.startswith(base) else error
    return ReplayRow(recording=name, config=_label(task.config), group="failed",
                     exit_code=max(1, exit_code), error=error, lines=[f"{name}: {said}"])


def replay_table(rows: Sequence[ReplayRow], boot: Bootstrap) -> list[ReplayRow]:
    """The rows, then one pooled ``overall`` row per config (over the replays that ran),
    with every row's bootstrap intervals; failed tasks last."""
    ok = [r for r in rows if r.group != "failed"]
    out = list(ok)
    for cfg in dict.fromkeys(r.config for r in ok):
        sel = [r for r in ok if r.config == cfg and not r.error]
        if not sel:
            continue
        scored = [r.score for r in sel if r.score is not None]
        pooled = ReplayRow(recording="overall", config=cfg,
                           config_name=", ".join(dict.fromkeys(r.config_name for r in sel)),
                           note=f"{len(sel)} recording(s)")
        for key in ("minutes", "samples", "onsets", "triggers", "hits", "misses", "gated",
                    "stim_s", "commands", "events_recorded", "events_matched",
                    "commands_recorded", "commands_matched"):
            setattr(pooled, key, sum(getattr(r, key) for r in sel))
        for r in sel:
            for m, n in r.onsets_by_muscle.items():
                pooled.onsets_by_muscle[m] = pooled.onsets_by_muscle.get(m, 0) + n
            for m, s in r.stim_s_by_muscle.items():
                pooled.stim_s_by_muscle[m] = pooled.stim_s_by_muscle.get(m, 0.0) + s
        verdicts = [r.identical for r in sel if r.identical is not None]
        pooled.identical = all(verdicts) if verdicts else None
        if scored:
            pooled.score = merge_scores(scored)
            pooled.units = tuple(scored)
            pooled.n_reference = pooled.score.n_reference
            pooled.detection_hits = pooled.score.hits
            pooled.false_detections = pooled.score.false_detections
        out.append(pooled)
    for r in out:
        if r.score is None:
            continue
        use = list(r.units) if len(r.units) >= 2 else trial_units(r.units[0] if r.units
                                                                  else r.score)
        r.ci = bootstrap_ci(use, boot, f"replay|{r.recording}|{r.config}")
        r.ci_n = len(use) if boot.n and len(use) >= 2 else 0
        r.ci_unit = ("recordings" if len(r.units) >= 2 else "trials") if r.ci_n else ""
    return out + [r for r in rows if r.group == "failed"]


#: Columns of the CSV output, in order.
CSV_COLUMNS = ["recording", "config", "config_name", "group", "minutes", "samples", "onsets",
               "onsets_by_muscle", "triggers", "hits", "misses", "gated", "stim_s",
               "stim_s_by_muscle", "commands", "events_recorded", "events_matched",
               "commands_recorded", "commands_matched", "identical", "first_difference",
               "n_reference", "detection_hits", "false_detections", *metric_columns(),
               "ci_unit", "ci_n", "exit_code", "error", "note"]


def _agree(matched: int, recorded: int) -> str:
    return f"{matched}/{recorded}" if recorded else "-"


def _flat(r: ReplayRow) -> dict[str, Any]:
    d = r.as_dict()
    d["events_agree"] = _agree(r.events_matched, r.events_recorded)
    d["commands_agree"] = _agree(r.commands_matched, r.commands_recorded)
    return d


MD_COLUMNS = [Column("recording", "recording"), Column("config", "config"),
              Column("minutes", "min", 2), Column("onsets_by_muscle", "onsets"),
              Column("triggers", "triggers"), Column("gated", "gated"),
              Column("stim_s_by_muscle", "stimulation (s)"), Column("commands", "commands"),
              Column("events_agree", "events = recorded"),
              Column("commands_agree", "commands = recorded"),
              Column("identical", "identical"), Column("sensitivity", "sensitivity"),
              Column("precision", "precision"), Column("f1", "F1"),
              Column("false_per_min", "false/min", 2),
              Column("latency_median_ms", "latency median (ms)", 1),
              Column("latency_p90_ms", "latency p90 (ms)", 1)]


def format_text(rows: Sequence[ReplayRow]) -> str:
    """A compact side-by-side table for the terminal."""
    wr = max([9] + [len(r.recording) for r in rows])
    wc = max([6] + [len(r.config) for r in rows])
    lines = [f"{'recording':{wr}s} {'config':{wc}s} {'onsets':>6s} {'trig':>5s} {'gated':>5s} "
             f"{'stim s':>8s} {'cmds':>5s} {'events=rec':>10s} {'cmds=rec':>9s} {'ident':>5s} "
             f"{'sens':>6s} {'F1':>6s} {'lat med':>7s}"]
    for r in rows:
        if r.group == "failed":
            lines.append(f"{r.recording:{wr}s} {r.config:{wc}s} FAILED: {r.error}")
            continue
        f = figures(r.score)
        ident = "-" if r.identical is None else ("yes" if r.identical else "no")
        lines.append(
            f"{r.recording:{wr}s} {r.config:{wc}s} {r.onsets:6d} {r.triggers:5d} {r.gated:5d} "
            f"{r.stim_s:8.2f} {r.commands:5d} "
            f"{_agree(r.events_matched, r.events_recorded):>10s} "
            f"{_agree(r.commands_matched, r.commands_recorded):>9s} {ident:>5s} "
            + " ".join(f"{'-' if f[k] is None else format(f[k], spec):>{w}s}" for k, spec, w in
                       (("sensitivity", ".3f", 6), ("f1", ".3f", 6),
                        ("latency_median_ms", ".1f", 7))))
    return "\n".join(lines) + "\n"


def render(rows: Sequence[ReplayRow], fmt: str, boot: Bootstrap) -> str:
    """The table in one format (``text``, ``csv``, ``md`` or ``json``)."""
    if fmt == "text":
        return format_text(rows)
    records = [_flat(r) for r in rows]
    if fmt == "csv":
        return to_csv(records, CSV_COLUMNS)
    if fmt == "md":
        notes = ["onsets, triggers and stimulation: what each config decided on the same "
                 "samples; 'events/commands = recorded': decisions identical to the ones the "
                 "recording holds (as multisets); identical: the --check verdict",
                 "detection figures: replayed onsets against the recording's truth markers",
                 boot.describe()]
        return to_markdown(records, MD_COLUMNS, notes=notes)
    return to_json(records, bootstrap={"n": boot.n, "seed": boot.seed, "level": boot.level,
                                       "method": boot.describe()})


__all__ = ["CSV_COLUMNS", "EXIT_MISMATCH", "RECORDED", "ReplayRow", "ReplayTask", "failed_row",
           "format_text", "render", "replay_table", "replay_task"]
