"""Calibration: rest and maximal contractions per muscle -> a patient config.

The clinician's first step with every patient. The session is a fixed schedule of
steps (:func:`build_steps`): all muscles at rest for ``rest_s``, then for each muscle
``mvc_reps`` times: get ready (``prepare_s``), contract as hard as possible (``mvc_s``),
relax (``relax_s``). Cues and the electrode-placement note of each muscle are shown on
screen (:mod:`closedloop.view.calibration`) or printed on the terminal
(:mod:`closedloop.commands.calibrate`, ``closedloop calibrate --no-gui``).

Every chunk goes through the input monitor and the same
:class:`~closedloop.core.pipeline.Pipeline` filters and envelope as the live loop, so
the calibration is in the envelope units the detector will compare against. Then, per
muscle (:func:`analyse`):

* rest: mean and SD of the envelope over the rest step, after discarding its first
  ``discard_s`` (filter settling, the patient finding rest);
* MVC of one repetition: the highest mean of the envelope over any ``top_s`` window
  inside the contraction step; the MVC is the mean over the repetitions that showed a
  contraction.

A muscle's calibration is refused, with the reason, when the channel was flat,
saturated or non-finite (input monitor), the rest was too noisy (SD/mean above
``max_rest_cv``) or not finite, no repetition rose above rest mean + ``min_mvc_sd`` SD
("no contraction seen"), the MVC is not above rest, or, for a detector with envelope
thresholds (threshold, tkeo), the resulting on-threshold is not below the MVC (the
detector could never fire); other detectors make their own use of rest and MVC.
Nothing is written unless every muscle is accepted.

The patient config (:func:`patient_config_text`) is the original config text with
``detector.baseline = "calibrated"``, a ``[muscles.calibration]`` table in every
muscle and the patient's pseudonymous id (``patient``, when the config or ``--patient``
gives one), edited with tomlkit: the clinician's comments and layout stay; an earlier
calibration is replaced. A header of TOML comments (when, source, schedule, results and
the clinician's confirmation of the stimulation limits; comments because the loader
refuses unknown keys) replaces an earlier calibration's header. It is re-loaded with
:func:`~closedloop.config.loads_config` and compared before it is written.

The simulated patient follows the cues: with ``--source sim`` the
:class:`~closedloop.sources.sim.SimSource` gets a script built from the schedule
(:func:`simulated_script`).

Every calibration for a patient, accepted or refused, is also added to the patient
record (:mod:`closedloop.io.records`; rest and MVC per muscle in µV): the next
``closedloop run`` for that patient without a calibration in its config starts from the
last accepted one. A record that cannot be written is reported; the patient config is
written either way.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tomlkit
import tomlkit.items

from closedloop.config import Config, loads_config
from closedloop.config.signal import Calibration, DetectorSettings
from closedloop.core.pipeline import Pipeline
from closedloop.core.stream import Chunk, SourceInfo
from closedloop.errors import ConfigError, InputError
from closedloop.sim.patient import Attempt
from closedloop.sources.base import Source
from closedloop.units import display_units, number

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REST, PREPARE, CONTRACT, RELAX = "rest", "prepare", "contract", "relax"


# -- the schedule ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """Timing of a calibration and the acceptance rules (see the module docstring)."""

    rest_s: float = 5.0
    mvc_reps: int = 3
    mvc_s: float = 3.0
    prepare_s: float = 2.0
    relax_s: float = 5.0
    discard_s: float = 0.5
    top_s: float = 1.0
    min_mvc_sd: float = 5.0
    max_rest_cv: float = 0.5

    def __post_init__(self) -> None:
        if not (self.rest_s > self.discard_s + 0.5):
            raise InputError(f"rest_s = {self.rest_s} s must exceed {self.discard_s + 0.5} s")
        if not 1 <= self.mvc_reps <= 10:
            raise InputError(f"mvc_reps = {self.mvc_reps} must be 1..10")
        if not self.mvc_s >= self.top_s:
            raise InputError(f"mvc_s = {self.mvc_s} s must be >= top_s = {self.top_s} s")
        if self.prepare_s < 0 or self.relax_s < 0:
            raise InputError("prepare_s and relax_s must be >= 0")


@dataclass(frozen=True)
class Step:
    """One step of the schedule: what the patient should do from ``start_s`` on."""

    kind: str
    start_s: float
    duration_s: float
    muscle: str | None = None
    rep: int = 0
    text: str = ""

    @property
    def end_s(self) -> float:
        """When the step ends, seconds from the first sample."""
        return self.start_s + self.duration_s


def build_steps(schedule: Schedule, muscles: Sequence[str]) -> list[Step]:
    """The calibration's steps, in order (times from the first sample)."""
    steps = [Step(REST, 0.0, schedule.rest_s, None, 0,
                  "REST: relax every muscle completely, do not move")]
    t = schedule.rest_s
    n = schedule.mvc_reps
    for m in muscles:
        for r in range(1, n + 1):
            if schedule.prepare_s > 0:
                steps.append(Step(PREPARE, t, schedule.prepare_s, m, r,
                                  f"{m} {r}/{n}: get ready to contract {m}"))
                t += schedule.prepare_s
            steps.append(Step(CONTRACT, t, schedule.mvc_s, m, r,
                              f"{m} {r}/{n}: GO! contract {m} as hard as you can"))
            t += schedule.mvc_s
            if schedule.relax_s > 0:
                steps.append(Step(RELAX, t, schedule.relax_s, m, r, f"{m} {r}/{n}: relax"))
                t += schedule.relax_s
    return steps


def total_s(steps: Sequence[Step]) -> float:
    """Duration of the whole calibration."""
    return max(s.end_s for s in steps)


def simulated_script(
    steps: Sequence[Step],
    *,
    level: float = 1.0,
    reaction_s: float = 0.3,
    release_s: float = 0.2,
    ramp_s: float = 0.1,
) -> list[Attempt]:
    """A simulated patient who follows the cues: one attempt per contraction step.

    The patient starts ``reaction_s`` after GO and lets go ``release_s`` before the
    step ends (so the ramp down stays inside the step).
    """
    out = []
    for s in steps:
        if s.kind == CONTRACT and s.muscle is not None:
            dur = s.duration_s - reaction_s - release_s
            if dur > 2 * ramp_s:
                out.append(Attempt(s.muscle, s.start_s + reaction_s, dur, level, ramp_s))
    return out


# -- acquisition -------------------------------------------------------------------------------
@dataclass
class Recording:
    """What the calibration measured: envelope per muscle, and the input issues."""

    fs: float
    muscles: tuple[str, ...]
    envelope: np.ndarray  # (n, n_muscles)
    issues: dict[str, list[str]] = field(default_factory=dict)
    units: str = ""

    @property
    def n(self) -> int:
        """Samples recorded."""
        return int(self.envelope.shape[0])


def _columns(config: Config, info: SourceInfo) -> list[int]:
    """Source columns of the config's muscles (by label or 0-based index)."""
    return config.columns(info.channels, f"the source {info.name}")


class Recorder:
    """Feeds source chunks through the input monitor and the pipeline; keeps the envelope.

    Parameters
    ----------
    config : Config
        Filters and envelope settings, and the muscles (their channels).
    info : SourceInfo
        The opened source's description.
    n_samples : int
        Samples to record (the schedule's length); later samples are ignored.
    """

    def __init__(self, config: Config, info: SourceInfo, n_samples: int) -> None:
        from closedloop.core.checks import InputMonitor

        self.config = config
        self.info = info
        self.cols = _columns(config, info)
        self.muscles = config.muscle_names
        self.monitor = InputMonitor(info)
        # a calibration is statistics of the RMS envelope whatever the config's detector
        # (each detector makes its own use of them), measured with an adaptive baseline
        threshold = (config.detector if isinstance(config.detector, DetectorSettings)
                     else DetectorSettings())
        measuring = replace(
            config, detector_kind="threshold", detector=replace(threshold, baseline="adaptive"),
            muscles=tuple(replace(m, calibration=None) for m in config.muscles))
        self.pipeline = Pipeline(info.fs, self.muscles, measuring)
        self.n_samples = int(n_samples)
        self.envelope = np.zeros((self.n_samples, len(self.muscles)))
        self.position = 0
        self.issues: dict[str, list[str]] = {m: [] for m in self.muscles}
        self.latest = np.zeros(len(self.muscles))  # last envelope values (for a live bar)

    @property
    def done(self) -> bool:
        """Whether the whole schedule is recorded."""
        return self.position >= self.n_samples

    def feed(self, chunk: Chunk) -> None:
        """Check one chunk, note the channels' input problems and keep its envelope."""
        checked = self.monitor.check(chunk)
        by_label = {self.info.channels[c]: m for c, m in zip(self.cols, self.muscles, strict=True)}
        for issue in checked.issues:
            if issue.kind.value in ("flat", "saturated", "nonfinite"):
                targets = [by_label[issue.channel]] if issue.channel in by_label else []
                for m in targets:
                    self.issues[m].append(f"{issue.kind.value}: {issue.message}")
        x = checked.chunk.samples[:, self.cols]
        if x.shape[0] == 0 or self.done:
            return
        block = self.pipeline.process(x, checked.chunk.timestamps)
        k = min(block.n, self.n_samples - self.position)
        self.envelope[self.position : self.position + k] = block.envelope[:k]
        self.position += k
        if block.n:
            self.latest = block.envelope[-1].copy()

    def recording(self) -> Recording:
        """What was recorded so far (copies)."""
        return Recording(
            self.info.fs, self.muscles, self.envelope[: self.position].copy(),
            {m: list(v) for m, v in self.issues.items()}, self.info.units,
        )


def acquire(
    source: Source,
    config: Config,
    steps: Sequence[Step],
    *,
    on_step: Callable[[Step], object] | None = None,
    on_progress: Callable[[float, Recorder], object] | None = None,
    cancel: threading.Event | None = None,
    stall_s: float = 5.0,
) -> Recording:
    """Record the whole schedule from an opened ``source``.

    ``on_step(step)`` is called when the source's data reach each step (the cue);
    ``on_progress(t, recorder)`` after every chunk (``t`` = seconds recorded).

    Raises
    ------
    InputError
        The source delivered nothing for ``stall_s``, or the calibration was cancelled.
    """
    info = source.info
    n = int(math.ceil(total_s(steps) * info.fs))
    rec = Recorder(config, info, n)
    pending = list(steps)
    last_data = time.monotonic()
    while not rec.done:
        if cancel is not None and cancel.is_set():
            raise InputError("calibration cancelled")
        t = rec.position / info.fs
        while pending and pending[0].start_s <= t:
            step = pending.pop(0)
            if on_step is not None:
                on_step(step)
        chunk = source.read(timeout=0.2)
        if chunk is None:
            if time.monotonic() - last_data > stall_s:
                raise InputError(
                    f"the EMG source {info.name!r} delivered no data for {stall_s:g} s; "
                    "check the amplifier or stream"
                )
            continue
        last_data = time.monotonic()
        rec.feed(chunk)
        if on_progress is not None:
            on_progress(rec.position / info.fs, rec)
    return rec.recording()


# -- analysis ---------------------------------------------------------------------------------
@dataclass
class MuscleResult:
    """One muscle's calibration, or why it was refused (``reasons`` non-empty)."""

    muscle: str
    rest_mean: float = math.nan
    rest_sd: float = math.nan
    mvc: float = math.nan
    reps: list[float] = field(default_factory=list)
    on_threshold: float = math.nan
    off_threshold: float = math.nan
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the muscle's calibration was accepted."""
        return not self.reasons

    @property
    def calibration(self) -> Calibration | None:
        """The calibration to write, None when refused."""
        if not self.ok:
            return None
        return Calibration(rest_mean=self.rest_mean, rest_sd=self.rest_sd, mvc=self.mvc)

    def summary(self, units: str | None = None) -> str:
        """One line: the figures (in µV when ``units``, the source's, is a voltage; else
        in the source's units), never with an exponent, or REFUSED and why."""
        if not self.ok:
            return f"{self.muscle}: REFUSED - " + "; ".join(self.reasons)
        du = display_units(units)
        unit = f" {du.emg_unit}" if du.emg_unit else ""

        def show(v: float) -> str:
            return number(v * du.emg_factor)
        reps = ", ".join(show(r) for r in self.reps)
        line = (f"{self.muscle}: rest {show(self.rest_mean)} +- {show(self.rest_sd)}{unit}, "
                f"MVC {show(self.mvc)}{unit} (reps {reps})")
        if math.isnan(self.on_threshold):  # a detector without envelope thresholds
            return line
        return (f"{line}, on/off thresholds {show(self.on_threshold)}/"
                f"{show(self.off_threshold)}{unit} ({100 * self.on_fraction:.0f}% of MVC "
                "above rest)")

    @property
    def on_fraction(self) -> float:
        """Where the on-threshold sits between rest (0) and MVC (1)."""
        span = self.mvc - self.rest_mean
        return (self.on_threshold - self.rest_mean) / span if span > 0 else math.nan


@dataclass
class Result:
    """Every muscle's result; ``units``: of the EMG source (the values' units)."""

    muscles: list[MuscleResult]
    units: str = ""

    @property
    def ok(self) -> bool:
        """Whether every muscle was accepted."""
        return all(m.ok for m in self.muscles)

    def calibrations(self) -> dict[str, Calibration]:
        """The accepted muscles' calibrations, by muscle."""
        return {m.muscle: m.calibration for m in self.muscles if m.calibration is not None}

    def reasons(self) -> list[str]:
        """The summary of every refused muscle."""
        return [m.summary(self.units) for m in self.muscles if not m.ok]


def _best_window_mean(x: np.ndarray, n: int) -> float:
    """Highest mean of ``x`` over any ``n`` consecutive samples."""
    if x.size == 0:
        return math.nan
    n = max(1, min(n, x.size))
    c = np.concatenate([[0.0], np.cumsum(x)])
    return float(np.max((c[n:] - c[:-n]) / n))


def analyse(
    rec: Recording, steps: Sequence[Step], config: Config, schedule: Schedule
) -> Result:
    """Per-muscle calibration from a recording (see the module docstring for the rules)."""
    fs = rec.fs
    out = []
    rest = next(s for s in steps if s.kind == REST)
    i0 = int(round((rest.start_s + schedule.discard_s) * fs))
    i1 = min(int(round(rest.end_s * fs)), rec.n)
    for k, m in enumerate(rec.muscles):
        r = MuscleResult(m)
        out.append(r)
        for issue in dict.fromkeys(rec.issues.get(m, [])):
            r.reasons.append(f"input problem during calibration ({issue})")
        env = rec.envelope[:, k]
        seg = env[i0:i1]
        if seg.size < 2:
            r.reasons.append("the rest segment was not recorded")
            continue
        r.rest_mean = float(np.mean(seg))
        r.rest_sd = float(np.std(seg, ddof=1))
        if not (math.isfinite(r.rest_mean) and math.isfinite(r.rest_sd)):
            r.reasons.append("rest envelope is not finite (NaN/inf): check the amplifier")
            continue
        if r.rest_sd <= 0.0:
            r.reasons.append("rest envelope does not vary at all: flat channel, check the lead")
            continue
        cv = r.rest_sd / r.rest_mean if r.rest_mean > 0 else math.inf
        if cv > schedule.max_rest_cv:
            r.reasons.append(
                f"too noisy at rest (SD/mean = {cv:.2f} > {schedule.max_rest_cv:g}): the "
                "patient moved, or an electrode is loose; repeat the rest"
            )
        floor = r.rest_mean + schedule.min_mvc_sd * r.rest_sd
        n_top = int(round(schedule.top_s * fs))
        for s in steps:
            if s.kind != CONTRACT or s.muscle != m:
                continue
            a, b = int(round(s.start_s * fs)), min(int(round(s.end_s * fs)), rec.n)
            v = _best_window_mean(env[a:b], n_top)
            if math.isfinite(v) and v >= floor:
                r.reps.append(v)
            else:
                r.warnings.append(
                    f"repetition {s.rep}: no contraction seen ({v:.4g} < rest mean + "
                    f"{schedule.min_mvc_sd:g} SD = {floor:.4g})"
                )
        if not r.reps:
            r.reasons.append(
                f"no contraction seen: no repetition rose above rest mean + "
                f"{schedule.min_mvc_sd:g} SD ({floor:.4g}); check the electrodes over {m} "
                "and that the patient contracted on GO"
            )
            continue
        r.mvc = float(np.mean(r.reps))
        if not r.mvc > r.rest_mean:
            r.reasons.append(f"MVC {r.mvc:.4g} is not above the rest level {r.rest_mean:.4g}")
            continue
        if not isinstance(config.detector, DetectorSettings):
            continue  # no envelope thresholds: the detector makes its own use of rest/MVC
        cal = Calibration(r.rest_mean, r.rest_sd, r.mvc)
        r.on_threshold, r.off_threshold = cal.thresholds(config.detector)
        if not r.on_threshold < r.mvc:
            r.reasons.append(
                f"the on-threshold {r.on_threshold:.4g} would not be below the MVC "
                f"{r.mvc:.4g}: the detector could never fire; lower detector.k_on or "
                "mvc_fraction"
            )
    return Result(out, rec.units)


# -- the patient config -----------------------------------------------------------------------
#: The first line of the comments this module writes above a patient config.
HEADER = "# closedloop patient config: written by `closedloop calibrate`"


def _cal_table(c: Calibration) -> dict[str, float]:
    out = {"rest_mean": float(c.rest_mean), "rest_sd": float(c.rest_sd)}
    if c.mvc is not None:
        out["mvc"] = float(c.mvc)
    return out


def _expected_data(text: str, cals: dict[str, Calibration],
                   stimulator: str | None = None, patient: str | None = None) -> dict[str, Any]:
    data = tomllib.loads(text)
    if patient is not None:
        data["patient"] = patient
    data.setdefault("detector", {})["baseline"] = "calibrated"
    if stimulator is not None:
        data.setdefault("session", {})["stimulator"] = stimulator
    for m in data.get("muscles", []):
        m["calibration"] = _cal_table(cals[m["name"]])
    return data


def _without_header(text: str) -> str:
    """``text`` without the comments an earlier calibration wrote above it."""
    if not text.startswith(HEADER):
        return text
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    while n < len(lines) and not lines[n].strip():
        n += 1
    return "".join(lines[n:])


def _calibrated(text: str, cals: dict[str, Calibration], stimulator: str | None = None,
                patient: str | None = None) -> str:
    """The config ``text`` with ``detector.baseline = "calibrated"``, a
    ``[muscles.calibration]`` table in every muscle (replacing an earlier one), with
    ``stimulator`` ``[session] stimulator`` and with ``patient`` the top-level
    ``patient``; edited with tomlkit so that the clinician's comments and layout stay
    as they were."""
    doc = tomlkit.parse(text)
    if patient is not None:
        doc["patient"] = patient
    if stimulator is not None:
        if "session" not in doc:
            doc.add(tomlkit.nl())
            doc["session"] = tomlkit.table()
        doc["session"]["stimulator"] = stimulator
    if "detector" not in doc:
        doc.add(tomlkit.nl())
        doc["detector"] = tomlkit.table()
    doc["detector"]["baseline"] = "calibrated"
    for m in doc.get("muscles", []):
        values = _cal_table(cals[m["name"]])
        inline = (tomlkit.items.InlineTable,)
        if isinstance(m, inline) or isinstance(m.get("calibration"), inline):
            cal: Any = tomlkit.inline_table()
            cal.update(values)
        else:
            cal = tomlkit.table()
            cal.update(values)
            siblings = [v for v in m.values() if isinstance(v, tomlkit.items.Table)]
            if siblings and siblings[0].trivia.indent:  # indented like [muscles.stim]
                cal.indent(len(siblings[0].trivia.indent))
            cal.add(tomlkit.nl())
        m["calibration"] = cal
    return tomlkit.dumps(doc)


def limits_lines(config: Config) -> list[str]:
    """The stimulation settings and limits the clinician must confirm, one line per
    stimulated muscle, in mA, µs, Hz and seconds (each limit in brackets); the terminal,
    the calibration dialog and the patient config's header say the same."""
    out = []
    for m in config.muscles:
        if m.stim is None or m.limits is None:
            continue
        s, lim = m.stim, m.limits
        out.append(
            f"{m.name} (stimulator channel {s.channel}): {s.current_ma:g} mA "
            f"({lim.max_current_ma:g} mA), pulses of {s.pulse_width_us:g} µs "
            f"({lim.max_pulse_width_us:g} µs) at {s.frequency_hz:g} Hz "
            f"({lim.max_frequency_hz:g} Hz), on for {s.on_time_s:g} s ({lim.max_on_time_s:g} s)"
        )
    return out


def patient_config_text(
    config: Config,
    result: Result,
    *,
    confirmation: str,
    source: str = "",
    schedule: Schedule | None = None,
    when: str | None = None,
    stimulator: str | None = None,
) -> str:
    """The patient config: the original text plus the calibration, verified.

    ``stimulator``: the stimulator spec the patient is treated with, written as
    ``[session] stimulator`` so ``closedloop run`` uses it.

    Raises
    ------
    ConfigError
        A muscle's calibration was refused, or the written text would not load back
        to the same calibration (a bug: nothing is written then).
    """
    if not result.ok:
        raise ConfigError("calibration refused: " + " | ".join(result.reasons()))
    cals = result.calibrations()
    original = config.text or ""
    if not original.strip():
        raise ConfigError(f"{config.path}: the config text is empty; load it from a file")
    original = _without_header(original)
    expected = _expected_data(original, cals, stimulator, config.patient)
    body = _calibrated(original, cals, stimulator, config.patient)
    if _safe_loads(body) != expected:  # not seen; a plain document then, comments lost
        body = tomlkit.dumps(expected)
    when = when or time.strftime("%Y-%m-%d %H:%M:%S %z")
    head = [
        HEADER,
        f"# calibrated: {when}",
        f"# from config: {config.path}",
    ]
    if source:
        head.append(f"# EMG source: {source}")
    if schedule is not None:
        head.append(
            f"# schedule: rest {schedule.rest_s:g} s (first {schedule.discard_s:g} s discarded), "
            f"{schedule.mvc_reps} x {schedule.mvc_s:g} s MVC per muscle, best "
            f"{schedule.top_s:g} s of each"
        )
    for m in result.muscles:
        head.append(f"# {m.summary(result.units)}")
        head.extend(f"#   warning: {w}" for w in m.warnings)
    head.append(f"# stimulation limits: {confirmation}")
    head.extend(f"#   {line}" for line in limits_lines(config))
    text = "\n".join(_comment_safe(h) for h in head) + "\n\n" + body
    check = loads_config(text, source="<patient config>")
    got = {m.name: m.calibration for m in check.muscles}
    if check.detector.baseline != "calibrated" or got != cals or (
            stimulator is not None and check.session.stimulator != stimulator) or (
            check.patient != config.patient):
        raise ConfigError("internal error: the patient config does not load back as written")
    return text


def _safe_loads(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def _comment_safe(line: str) -> str:
    return line.replace("\n", " ").replace("\r", " ")


def write_patient_config(path: str | Path, text: str) -> Path:
    """Write atomically (temporary file, then rename; a full disk writes nothing)."""
    from closedloop.io.outfile import write_whole

    return write_whole(path, text, what="patient config")


# -- sources ----------------------------------------------------------------------------------
def make_source(config: Config, spec: str | None, steps: Sequence[Step], *,
                realtime: bool = True, script: Sequence[Attempt] | None = None) -> Source:
    """The EMG source: a spec, or (``sim`` / none with a sim config) the simulated patient
    following the calibration cues (``sim?snr_db=DB&seed=N`` changes its SNR and seed)."""
    from closedloop.sources.base import SourceContext
    from closedloop.sources.spec import open_source

    cues = simulated_script(steps) if script is None else list(script)
    context = SourceContext(config=config, realtime=realtime, script=cues)
    return open_source(spec or config.session.source, context)


def calibration_record(config: Config, result: Result, *, started: str, duration_s: float,
                       operator: str | None = None, written: Path | None = None):
    """The patient-record row of a calibration (``config.patient`` must be set): accepted
    (exit code 0) when every muscle was and the patient config was ``written``."""
    import closedloop
    from closedloop.io.records import SessionRecord
    from closedloop.runtime.patient_record import calibration_muscles, signal_settings

    ok = result.ok and written is not None
    return SessionRecord(
        kind="calibrate", patient=config.patient or "", started=started,
        duration_s=duration_s, program=config.name,
        config_path=str(Path(config.path).resolve()), operator=operator,
        exit_reason="calibrated" if ok else "refused", exit_code=0 if ok else 1,
        message=(f"patient config written: {Path(written).resolve()}" if ok
                 else "; ".join(result.reasons()) or "the patient config was not written"),
        emg_units=result.units, signal_settings=signal_settings(config),
        closedloop_version=closedloop.__version__,
        muscles=calibration_muscles(result.calibrations(), config, result.units),
    )

