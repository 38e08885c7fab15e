"""The session config: one TOML file, loaded into typed, validated dataclasses.

Each layer reads its own section (``closedloop.config.signal`` for ``[filters]``,
``[envelope]`` and ``[detector]``; ``closedloop.config.stimulation`` for each muscle's
``stim``/``limits`` and for ``[protocol]``/``[safety]``); this module composes them
and checks what crosses sections (channel names, antagonists, stimulation channels).
Every error names the file, the key, the bad value and what is allowed; unknown keys
are errors.

Layout::

    name = "biceps_triceps"
    description = "..."
    patient = "P01"   (optional: the patient's pseudonymous id, never a name)
    [session]   source, stimulator, fs (sim), chunk_ms, watchdog_ms, units
    [sim]       the simulated patient (snr_db, cocontraction, gaps, artifacts, seed)
    [filters]   bandpass_hz, order, notch_hz, notch_harmonics, notch_q
    [envelope]  kind, window_ms, cutoff_hz
    [detector]  k_on, off_fraction, mvc_fraction, min_on_ms, min_off_ms, ...
    [artifacts] blank_ms, comb, comb_pulses (stimulation artifacts); hum_db, ... (mains hum)
    [[muscles]] name, channel, antagonist, placement, picture,
                [muscles.stim], [muscles.limits], [muscles.calibration]
    [protocol]  kind, agonist, antagonist, ...        (stimulation configs)
    [safety]    session dose ...                      (stimulation configs)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from closedloop.config.signal import (
    ArtifactSettings,
    Calibration,
    DetectorSettings,
    EnvelopeSettings,
    FilterSettings,
)
from closedloop.config.table import Table
from closedloop.errors import ConfigError
from closedloop.identity import check_patient_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class SessionSettings:
    """How a session runs: default devices, the sim source's rate, the watchdog."""

    source: str = "sim"
    stimulator: str = "sim"
    fs: float = 2000.0
    chunk_ms: float = 10.0
    watchdog_ms: float = 100.0

    @classmethod
    def from_table(cls, t: Table) -> SessionSettings:
        out = cls(
            source=t.str("source", cls.source),
            stimulator=t.str("stimulator", cls.stimulator),
            fs=t.float("fs", cls.fs, lo=200.0, hi=10000.0),
            chunk_ms=t.float("chunk_ms", cls.chunk_ms, lo=0.5, hi=1000.0),
            watchdog_ms=t.float("watchdog_ms", cls.watchdog_ms, lo=10.0, hi=10000.0),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class SimSettings:
    """The built-in simulated patient."""

    snr_db: float = 10.0
    cocontraction: float = 0.0
    gap_s: tuple[float, float] = (4.0, 8.0)
    attempt_s: tuple[float, float] = (1.0, 3.0)
    artifacts: bool = True
    seed: int = 0

    @classmethod
    def from_table(cls, t: Table) -> SimSettings:
        out = cls(
            snr_db=t.float("snr_db", cls.snr_db, lo=-20.0, hi=60.0),
            cocontraction=t.float("cocontraction", cls.cocontraction, lo=0.0, hi=1.0),
            gap_s=t.floats("gap_s", list(cls.gap_s), length=2, lo=0.1, hi=600.0),
            attempt_s=t.floats("attempt_s", list(cls.attempt_s), length=2, lo=0.1, hi=600.0),
            artifacts=t.bool("artifacts", cls.artifacts),
            seed=t.int("seed", cls.seed, lo=0),
        )
        t.finish()
        return out


@dataclass(frozen=True)
class MuscleConfig:
    """One muscle: its EMG channel, antagonist, stimulation and calibration."""

    name: str
    channel: str | int
    antagonist: str | None = None
    placement: str = ""
    picture: str | None = None
    stim: Any = None  # closedloop.config.stimulation.StimParams
    limits: Any = None  # closedloop.config.stimulation.ChannelLimits
    calibration: Calibration | None = None


@dataclass(frozen=True)
class Config:
    """A whole session config. ``text`` is the TOML it was read from (for recordings).

    ``patient`` is the patient's pseudonymous id (``None``: a config not tied to a
    patient, such as a shipped program); see :func:`closedloop.identity.check_patient_id`.
    """

    name: str
    description: str = ""
    patient: str | None = None
    path: str = "<defaults>"
    text: str = ""
    session: SessionSettings = field(default_factory=SessionSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    envelope: EnvelopeSettings = field(default_factory=EnvelopeSettings)
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    muscles: tuple[MuscleConfig, ...] = ()
    protocol: Any = None  # closedloop.config.stimulation.ProtocolSettings
    safety: Any = None  # closedloop.config.stimulation.SafetySettings
    #: Every setting as it was resolved (defaults filled in), in the TOML's structure:
    #: ``parse_config(resolved)`` gives the same settings whatever the defaults are then.
    resolved: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def muscle_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.muscles)

    def muscle(self, name: str) -> MuscleConfig:
        for m in self.muscles:
            if m.name == name:
                return m
        raise ConfigError(
            f"{self.path}: no muscle named {name!r}; the config has {', '.join(self.muscle_names)}"
        )

    @property
    def stimulates(self) -> bool:
        """True when the config defines a stimulation protocol."""
        return self.protocol is not None

    def columns(self, labels: tuple[str, ...] | list[str], source_name: str) -> list[int]:
        """Columns of a source with channel ``labels`` that feed the config's muscles, in
        muscle order (each muscle's ``channel`` is a label or a 0-based index)."""
        cols = []
        for m in self.muscles:
            if isinstance(m.channel, int):
                if m.channel >= len(labels):
                    raise ConfigError(
                        f"{self.path}: muscle {m.name!r} uses channel {m.channel}, but "
                        f"{source_name!r} has {len(labels)} channels"
                    )
                cols.append(m.channel)
            elif m.channel in labels:
                cols.append(list(labels).index(m.channel))
            else:
                raise ConfigError(
                    f"{self.path}: muscle {m.name!r} uses channel {m.channel!r}, which "
                    f"{source_name!r} does not have (its channels: {', '.join(labels)}); set "
                    "channel to one of those labels or to a 0-based index"
                )
        return cols

    def calibrations(self) -> list[Calibration | None]:
        return [m.calibration for m in self.muscles]

    def with_patient(self, patient: str, where: str = "patient") -> Config:
        """This config run for ``patient`` (checked; the resolved settings say so too)."""
        check_patient_id(patient, where=where)
        return replace(self, patient=patient, resolved={**self.resolved, "patient": patient})

    def with_calibrations(self, cals: dict[str, Calibration]) -> Config:
        muscles = tuple(
            replace(m, calibration=cals.get(m.name, m.calibration)) for m in self.muscles
        )
        return replace(self, muscles=muscles)


def default_config(channels: list[str] | tuple[str, ...]) -> Config:
    """Detection-only config with default settings for the given channel names."""
    return Config(
        name="defaults",
        muscles=tuple(MuscleConfig(name=c, channel=c) for c in channels),
    )


def _muscle(t: Table) -> MuscleConfig:
    name = t.str("name")
    if not name or not name.replace("_", "").isalnum():
        raise t.error("name", name, "a non-empty name of letters, digits and _")
    channel = t.raw("channel", name)
    if isinstance(channel, bool) or not isinstance(channel, (str, int)) or (
        isinstance(channel, int) and channel < 0
    ):
        raise t.error("channel", channel, "a channel label (text) or a 0-based index")
    stim = limits = None
    if t.has("stim") or t.has("limits"):
        from closedloop.config.stimulation import ChannelLimits, StimParams

        if not (t.has("stim") and t.has("limits")):
            missing = "limits" if t.has("stim") else "stim"
            raise ConfigError(
                f"{t.where(missing)} is missing: a stimulated muscle needs both "
                "[muscles.stim] and [muscles.limits]"
            )
        stim = StimParams.from_table(t.table("stim"))
        limits = ChannelLimits.from_table(t.table("limits"))
    cal = Calibration.from_table(t.table("calibration")) if t.has("calibration") else None
    out = MuscleConfig(
        name=name,
        channel=channel,
        antagonist=t.str("antagonist", None, allow_none=True),
        placement=t.str("placement", ""),
        picture=t.str("picture", None, allow_none=True),
        stim=stim,
        limits=limits,
        calibration=cal,
    )
    t.finish()
    return out


def parse_config(data: dict[str, Any], *, source: str = "<config>", text: str = "") -> Config:
    """Build a :class:`Config` from parsed TOML data (see the module docstring)."""
    top = Table(data, source=source)
    name = top.str("name", Path(source).stem)
    description = top.str("description", "")
    patient = top.str("patient", None, allow_none=True)
    if patient is not None:
        check_patient_id(patient, where=top.where("patient"))
    session = SessionSettings.from_table(top.table("session", {}))
    sim = SimSettings.from_table(top.table("sim", {}))
    filters = FilterSettings.from_table(top.table("filters", {}))
    envelope = EnvelopeSettings.from_table(top.table("envelope", {}))
    detector = DetectorSettings.from_table(top.table("detector", {}))
    artifacts = ArtifactSettings.from_table(top.table("artifacts", {}))
    mtables = top.tables("muscles")
    if not mtables:
        raise ConfigError(f"{source}: muscles is empty; add at least one [[muscles]] table")
    muscles = tuple(_muscle(t) for t in mtables)
    names = [m.name for m in muscles]
    for i, m in enumerate(muscles):
        where = f"{source}: muscles[{i}]"
        if names.count(m.name) > 1:
            raise ConfigError(f"{where}.name = {m.name!r} is used twice; muscle names must differ")
        if m.antagonist is not None and m.antagonist not in names:
            raise ConfigError(
                f"{where}.antagonist = {m.antagonist!r} is not a muscle of this config; "
                f"expected one of {', '.join(names)}"
            )
        if m.antagonist == m.name:
            raise ConfigError(
                f"{where}.antagonist = {m.antagonist!r}: a muscle cannot be its own antagonist"
            )
    if detector.baseline == "calibrated":
        missing = [m.name for m in muscles if m.calibration is None]
        if missing:
            raise ConfigError(
                f"{source}: detector.baseline = 'calibrated' but {', '.join(missing)} "
                "has no [muscles.calibration]; run `closedloop calibrate` first"
            )
    protocol = safety = None
    if top.has("protocol"):
        from closedloop.config.stimulation import (
            MuscleStim,
            ProtocolSettings,
            SafetySettings,
            validate_stimulation,
        )

        protocol = ProtocolSettings.from_table(top.table("protocol"), names)
        safety = SafetySettings.from_table(top.table("safety", {}))
        stimulated = {
            m.name: MuscleStim(m.name, m.stim, m.limits, m.antagonist)
            for m in muscles
            if m.stim is not None
        }
        try:
            validate_stimulation(stimulated, protocol, safety)
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    elif top.has("safety"):
        raise ConfigError(f"{source}: [safety] is given but there is no [protocol]")
    top.finish()
    return Config(
        name=name,
        description=description,
        patient=patient,
        path=source,
        text=text,
        session=session,
        sim=sim,
        filters=filters,
        envelope=envelope,
        detector=detector,
        artifacts=artifacts,
        muscles=muscles,
        protocol=protocol,
        safety=safety,
        resolved=top.resolved(),
    )


def load_config(path: str | Path) -> Config:
    """Load and validate a TOML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file; the shipped ones are in configs/") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc})") from None
    return loads_config(text, source=str(p))


def loads_config(text: str, *, source: str = "<config>") -> Config:
    """Parse and validate config TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_config(data, source=source, text=text)
