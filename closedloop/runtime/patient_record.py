"""A session and the patient's record: what a run stores, and the calibration it starts from.

* :func:`start_calibration`: before a session for a patient whose config has no
  calibration, the patient's last stored calibration (``closedloop calibrate``) that
  fits this config (same muscles, same filter and envelope settings, EMG in a voltage
  unit) becomes the session's calibration, and the session says so.
* :func:`session_record`: what the finished session stores (an
  :class:`~closedloop.io.records.SessionRecord` built from the
  :class:`~closedloop.runtime.outcome.Outcome`).
* :func:`save`: store it; a failure is one line for the summary, never an exception
  (the caller saves after stimulation is off; the recording holds everything anyway).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

import closedloop
from closedloop.config import Config, parse_config
from closedloop.config.signal import Calibration, DetectorSettings
from closedloop.core.detectors.base import statistic_of
from closedloop.errors import ConfigError, RecordError
from closedloop.io.records import (
    MuscleRecord,
    Records,
    SessionRecord,
    microvolts_per,
)
from closedloop.runtime.mwaves import MuscleMWave
from closedloop.runtime.outcome import Outcome


def signal_settings(config: Config) -> str:
    """JSON of the settings a calibration's values depend on (filters and envelope)."""
    return json.dumps({"filters": asdict(config.filters), "envelope": asdict(config.envelope)},
                      sort_keys=True)


# -- the calibration a session starts from ------------------------------------------------
@dataclass(frozen=True)
class CalibrationChoice:
    """Which calibration a session runs with, and what to tell the clinician.

    Attributes
    ----------
    config : Config
        The config to run (with the stored calibration when one was taken).
    record : SessionRecord or None
        The calibrate row taken (None: the config's own calibration or none).
    note : str
        One sentence for the terminal ("" when there is nothing to say).
    summary : str
        Its short form, for the end-of-session summary.
    """

    config: Config
    record: SessionRecord | None = None
    note: str = ""
    summary: str = ""

    @property
    def metadata(self) -> dict | None:
        """What the recording's metadata keeps about it (None: nothing was taken)."""
        r = self.record
        if r is None:
            return None
        return {"from": "patient record", "record_id": r.id, "calibrated": r.started,
                "program": r.program}


def start_calibration(config: Config, db: str | Path, units: str, *,
                      now: datetime | None = None) -> CalibrationChoice:
    """The calibration a session for ``config.patient`` starts from.

    Parameters
    ----------
    config : Config
        The session's config (with its patient id).
    db : str or Path
        The patient-record database (not created when missing).
    units : str
        Units of the EMG source (stored values are µV, the detector works in these).
    now : datetime, optional
        For the age in the note (default: now).

    Nothing here raises: an unreadable record or an unusable calibration is said in the
    note, and the session runs with the config as it is.
    """
    if config.patient is None:
        return CalibrationChoice(config)
    if any(m.calibration is not None for m in config.muscles):
        return CalibrationChoice(config, None, "", "from the config")
    try:
        return _choose(config, config.patient, Path(db), units, now)
    except Exception as exc:  # noqa: BLE001 - a damaged row must not stop the session
        return CalibrationChoice(
            config, None, f"could not use the stored calibrations (unexpected "
            f"{type(exc).__name__}: {exc}); the detector learns the rest level at the start "
            "(adaptive baseline)", "the patient record could not be read; adaptive baseline")


def _choose(config: Config, patient: str, db: Path, units: str,
            now: datetime | None) -> CalibrationChoice:
    """:func:`start_calibration` once ``patient``'s record is to be searched."""
    adaptive = "the detector learns the rest level at the start (adaptive baseline)"
    learnt = "none stored; adaptive baseline"
    try:
        with Records(db, create=False) as records:
            stored = records.calibrations(patient)
    except RecordError as exc:
        if not db.exists():
            stored = []
        else:
            return CalibrationChoice(config, None, f"could not read the stored calibrations ("
                                     f"{exc}); {adaptive}",
                                     "the patient record could not be read; adaptive baseline")
    if not stored:
        return CalibrationChoice(config, None, f"no stored calibration for {patient}; "
                                 f"{adaptive}", learnt)
    why = ""
    for record in stored:  # newest first
        problem = _unfit(record, config, units)
        if problem is None:
            try:
                calibrated = _apply(config, record, units)
            except ConfigError as exc:
                problem = f"its values are not usable ({exc})"
            else:
                return CalibrationChoice(
                    calibrated, record, _taken(record, units, now),
                    f"stored, of {_when(record.started)} (patient record #{record.id})")
        why = why or f"the last one ({_when(record.started)}) {problem}"
    return CalibrationChoice(config, None, f"no stored calibration of {patient} fits this "
                             f"config: {why}; {adaptive}",
                             "none stored fits this config; adaptive baseline")


def _unfit(record: SessionRecord, config: Config, units: str) -> str | None:
    """Why ``record`` cannot calibrate ``config`` on a source in ``units`` (None: it can)."""
    missing = [m for m in config.muscle_names
               if (r := record.muscle(m)) is None or r.rest_mean_uv is None
               or r.rest_sd_uv is None]
    if missing:
        return f"has no calibration of {', '.join(missing)}"
    if record.settings() != json.loads(signal_settings(config)):
        return "was measured with other filter or envelope settings"
    if microvolts_per(units) is None:
        return f"is in µV, but this EMG source reports {units!r}, not a voltage unit"
    return None


def _apply(config: Config, record: SessionRecord, units: str) -> Config:
    """``config`` with the stored calibration, as if it had been written into it: the
    resolved settings (which a replay runs with) hold it too.

    Raises
    ------
    ConfigError
        The record cannot calibrate the config (:func:`_unfit` says why first).
    """
    per_uv = microvolts_per(units)
    if per_uv is None:
        raise ConfigError(f"the source's units {units!r} are not a voltage")
    scale = 1.0 / per_uv
    data = json.loads(json.dumps(config.resolved))  # a deep copy of plain data
    data.setdefault("detector", {})["baseline"] = "calibrated"
    for m in data["muscles"]:
        r = record.muscle(m["name"])
        if r is None or r.rest_mean_uv is None or r.rest_sd_uv is None:
            raise ConfigError(f"no stored rest level of {m['name']}")
        cal = {"rest_mean": r.rest_mean_uv * scale, "rest_sd": r.rest_sd_uv * scale}
        if r.mvc_uv is not None:
            cal["mvc"] = r.mvc_uv * scale
        m["calibration"] = cal
    source = f"{config.path} + calibration #{record.id}"
    return replace(parse_config(data, source=source, text=config.text), path=config.path)


def _when(started: str) -> str:
    """``2026-03-02 10:14`` (local time as stored)."""
    try:
        return datetime.fromisoformat(started).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return started


def _taken(record: SessionRecord, units: str, now: datetime | None) -> str:
    now = now or datetime.now().astimezone()
    try:
        days = (now - record.started_at).total_seconds() / 86400.0
        age = "today" if days < 1 else f"{days:.0f} day{'s' if days >= 1.5 else ''} ago"
    except (TypeError, ValueError):
        age = "age unknown"
    parts = [f"{m.muscle} rest {m.rest_mean_uv:.1f} µV" + (
        f", MVC {m.mvc_uv:.1f} µV" if m.mvc_uv is not None else "") for m in record.muscles]
    return (f"starting from {record.patient}'s calibration of {_when(record.started)} ({age}; "
            f"patient record #{record.id}): " + "; ".join(parts))


# -- what a finished session stores ---------------------------------------------------------
def session_record(out: Outcome, config: Config, *, started: str, units: str,
                   operator: str | None = None, recording: str | None = None,
                   calibration_from: int | None = None) -> SessionRecord:
    """The patient-record row of a finished session (``config.patient`` must be set).

    Repetitions come from the protocol's counts; the success rate only where the
    protocol can miss (cued trials: hits / trials); the detector that decided;
    thresholds are those in force at the session's onsets (a calibrated muscle: its
    fixed ones), stored in µV only for a detector whose statistic is an EMG amplitude
    (the cusum statistic's nats are not µV: none are stored); the evoked response
    (M-wave) of each muscle that had one measured (``out.mwave``: its working
    current, first and last trains, the drop between them and the measurements
    without a response); values in µV when the source's units are a voltage (None
    otherwise).
    """
    uv = microvolts_per(units)
    amplitude = statistic_of(config.detector_kind).is_amplitude
    t = out.trials or {}
    kind = getattr(config.protocol, "kind", None)
    success = None
    if kind == "cued_trials" and t.get("trials"):
        success = t.get("hits", 0) / t["trials"]
    muscles = []
    for m in config.muscles:
        on, off = _thresholds(out, m.name) if amplitude else (math.nan, math.nan)
        if (amplitude and m.calibration is not None and math.isnan(on)
                and isinstance(config.detector, DetectorSettings)):
            on, off = m.calibration.thresholds(config.detector)
        cal = m.calibration
        mw = out.mwave.get(m.name)
        muscles.append(MuscleRecord(
            muscle=m.name,
            onsets=out.onsets.get(m.name, 0),
            stim_s=out.stim_seconds.get(m.name, 0.0) if m.stim is not None else None,
            on_threshold_uv=_uv(on, uv), off_threshold_uv=_uv(off, uv),
            rest_mean_uv=_uv(cal.rest_mean, uv) if cal else None,
            rest_sd_uv=_uv(cal.rest_sd, uv) if cal else None,
            mvc_uv=_uv(cal.mvc, uv) if cal and cal.mvc is not None else None,
            **_mwave_fields(mw, uv),
        ))
    return SessionRecord(
        kind="run", patient=config.patient or "", started=started,
        duration_s=out.seconds, program=config.name, config_path=_abs(config.path),
        operator=operator, exit_reason=out.reason, exit_code=out.exit_code,
        message=out.message, triggers=t.get("trials"), hits=t.get("hits"),
        misses=t.get("misses"), gated=t.get("gated"), success_rate=success,
        dose_limit_s=getattr(config.safety, "session_dose_s", None),
        recording=_abs(recording), emg_units=units, signal_settings=signal_settings(config),
        calibration_from=calibration_from, closedloop_version=closedloop.__version__,
        detector=config.detector_kind or "threshold", muscles=tuple(muscles),
    )


def _mwave_fields(mw: MuscleMWave | None, uv: float | None) -> dict[str, Any]:
    """The ``mwave_*`` fields of a muscle row (empty: no M-wave measured)."""
    if mw is None:
        return {}
    drop = mw.drop_pct
    return {"mwave_current_ma": mw.current_ma if math.isfinite(mw.current_ma) else None,
            "mwave_first_uv": _uv(mw.first_pp, uv), "mwave_last_uv": _uv(mw.last_pp, uv),
            "mwave_drop_pct": drop if math.isfinite(drop) else None,
            "mwave_no_response": mw.no_response}


def calibration_muscles(calibrations: dict[str, Calibration], config: Config,
                        units: str) -> tuple[MuscleRecord, ...]:
    """The muscle rows of an accepted calibration (rest, MVC and the thresholds they
    give with the config's detector settings), µV."""
    uv = microvolts_per(units)
    out = []
    for m in config.muscles:
        c = calibrations.get(m.name)
        if c is None:
            out.append(MuscleRecord(m.name))
            continue
        # envelope thresholds only for a detector that has them (threshold, tkeo)
        on, off = (c.thresholds(config.detector) if isinstance(config.detector, DetectorSettings)
                   else (math.nan, math.nan))
        out.append(MuscleRecord(
            muscle=m.name, on_threshold_uv=_uv(on, uv), off_threshold_uv=_uv(off, uv),
            rest_mean_uv=_uv(c.rest_mean, uv), rest_sd_uv=_uv(c.rest_sd, uv),
            mvc_uv=_uv(c.mvc, uv) if c.mvc is not None else None))
    return tuple(out)


def _thresholds(out: Outcome, muscle: str) -> tuple[float, float]:
    """Median on- and off-threshold over the muscle's onsets and offsets in ``out``."""
    on = [e.threshold for e in out.events if e.channel == muscle and e.kind == "onset"]
    off = [e.threshold for e in out.events if e.channel == muscle and e.kind == "offset"]
    return (float(np.nanmedian(on)) if on and not np.all(np.isnan(on)) else math.nan,
            float(np.nanmedian(off)) if off and not np.all(np.isnan(off)) else math.nan)


def _uv(value: float | None, factor: float | None) -> float | None:
    if value is None or factor is None or not math.isfinite(value):
        return None
    return float(value) * factor


def _abs(path: str | None) -> str | None:
    if not path or path.startswith("<"):
        return path
    return str(Path(path).resolve())


_KEPT = "this summary and the recording (if any) hold the session"


def save(record: SessionRecord, db: str | Path) -> tuple[int | None, str]:
    """Store ``record`` in ``db``: (its id, the summary's sentence), or (None, what
    failed and what to do). Never raises for a database problem."""
    try:
        with Records(db) as records:
            sid = records.add(record)
    except (RecordError, ConfigError) as exc:
        return None, f"NOT saved: {exc}; {_KEPT}"
    except Exception as exc:  # noqa: BLE001 - a bug here must not cost the summary
        return None, (f"NOT saved: unexpected {type(exc).__name__}: {exc} (please report "
                      f"it); {_KEPT}")
    return sid, f"saved as #{sid} for {record.patient} in {db}"


__all__ = ["CalibrationChoice", "calibration_muscles", "save", "session_record",
           "signal_settings", "start_calibration"]
