"""The session config: one TOML file, loaded into typed, validated settings.

:class:`Config` holds one settings object per section (the classes of
:mod:`closedloop.config.signal` and :mod:`closedloop.config.stimulation`, and
:class:`SessionSettings`, :class:`SimSettings` and :class:`MuscleConfig` here). Loading
is :func:`parse_config`: each table is checked against its class (ranges, choices,
unknown keys), then the rules that cross sections (muscle names, antagonists, the
calibrated baseline, stimulation against limits and protocol) are checked here and in
:func:`~closedloop.config.stimulation.validate_stimulation`. Every error is one
:class:`~closedloop.errors.ConfigError` naming the file, the key, the bad value and
what is allowed.

The settings class of ``[detector]`` and of ``[protocol]`` is looked up by kind
(:func:`detector_settings_for`, :func:`protocol_settings_for`): today the built-in
kinds, later whatever a registry adds.
"""

import codecs
import sys
from collections.abc import Mapping
from dataclasses import field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator
from typing_extensions import Self

from closedloop.config.schema import (
    Check,
    Flag,
    Range,
    Text,
    dump,
    invalid,
    missing,
    parse_table,
    settings,
)
from closedloop.config.signal import (
    ArtifactSettings,
    Calibration,
    CusumSettings,
    DetectorBase,
    EnvelopeSettings,
    FilterSettings,
)
from closedloop.config.stimulation import (
    ChannelLimits,
    MuscleStim,
    ProtocolSettings,
    SafetySettings,
    StimParams,
    validate_stimulation,
)
from closedloop.errors import ConfigError
from closedloop.identity import PATIENT_ID_RULE, check_patient_id, patient_id_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@settings
class SessionSettings:
    """``[session]``: default devices, the sim source's rate, the watchdog."""

    source: Text = "sim"
    stimulator: Text = "sim"
    fs: Annotated[float, Range(200.0, 10000.0)] = 2000.0
    chunk_ms: Annotated[float, Range(0.5, 1000.0)] = 10.0
    watchdog_ms: Annotated[float, Range(10.0, 10000.0)] = 100.0


Seconds = Annotated[float, Range(0.1, 600.0)]


@settings
class SimSettings:
    """``[sim]``: the built-in simulated patient."""

    snr_db: Annotated[float, Range(-20.0, 60.0)] = 10.0
    cocontraction: Annotated[float, Range(0.0, 1.0)] = 0.0
    gap_s: tuple[Seconds, Seconds] = (4.0, 8.0)
    attempt_s: tuple[Seconds, Seconds] = (1.0, 3.0)
    artifacts: Flag = True
    seed: Annotated[int, Range(0)] = 0

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        for key in ("gap_s", "attempt_s"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise invalid(key, [lo, hi], "[shortest, longest]: the first number at most "
                              "the second")
        return self


def _is_name(name: str) -> bool:
    return bool(name) and name.replace("_", "").isalnum()


def _is_channel(channel: Any) -> bool:
    return isinstance(channel, str) or (
        isinstance(channel, int) and not isinstance(channel, bool) and channel >= 0)


Channel = Annotated[str | int, Check(_is_channel, "a channel label (text) or a 0-based index",
                                     plain=True)]


@settings
class MuscleConfig:
    """``[[muscles]]``: one muscle, its EMG channel, antagonist, stimulation and
    calibration.

    In a config file ``name`` is made of letters, digits and _ (checked with the other
    muscles, :func:`parse_config`; a config built in code for a source's channels, such
    as :func:`default_config`, names muscles after the channel labels, whatever they
    are). ``channel`` is a label of the source's channels or a 0-based index; in a
    config file it defaults to the muscle's name. ``stim`` and ``limits`` come together
    (a stimulated muscle) or not at all.
    """

    name: Text
    channel: Channel
    antagonist: Text | None = None
    placement: Text = ""
    picture: Text | None = None
    stim: StimParams | None = None
    limits: ChannelLimits | None = None
    calibration: Calibration | None = None

    @model_validator(mode="before")
    @classmethod
    def _channel_is_the_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "channel" not in data and "name" in data:
            data = {**data, "channel": data["name"]}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.stim is None) != (self.limits is None):
            raise missing("limits" if self.limits is None else "stim",
                          "a stimulated muscle needs both [muscles.stim] and [muscles.limits]")
        return self


#: What a config's ``name`` must be, as its error states it.
NAME_RULE = ("a name with at least one character that is not a space (a session's streams, "
             "recordings and patient records are named after it), e.g. name = \"biceps_triceps\"")


def _blank(name: str) -> str:
    """What is wrong with a blank name."""
    return "it is empty" if not name else "it is only white space"


#: The detector of a ``[detector]`` table without ``kind`` (and of :func:`default_config`):
#: the sequential likelihood-ratio detector, chosen by ``closedloop evaluate --splice``
#: (the README's detectors section gives the table and why).
DEFAULT_DETECTOR = "cusum"


@settings(kw_only=True)
class Config:
    """A whole session config (see :mod:`closedloop.config`).

    ``path`` and ``text`` are where it was read and the TOML it was read from (for
    recordings); they are not keys of the file.
    """

    #: The program's name: a session's streams, recordings and records are named after it.
    name: Annotated[Text, Check(lambda v: bool(v.strip()), NAME_RULE, why=_blank)]
    description: Text = ""
    #: The patient's pseudonymous id (None: a config not tied to a patient, such as a
    #: shipped program); see :func:`closedloop.identity.check_patient_id`.
    patient: Annotated[Text, Check(lambda v: not patient_id_problem(v), PATIENT_ID_RULE,
                                   why=patient_id_problem)] | None = None
    session: SessionSettings = field(default_factory=SessionSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    envelope: EnvelopeSettings = field(default_factory=EnvelopeSettings)
    detector: DetectorBase = field(default_factory=CusumSettings)
    #: ``[detector] kind``: which registered detector ``detector`` configures.
    detector_kind: Text = field(default=DEFAULT_DETECTOR, metadata={"toml": False})
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    muscles: Annotated[tuple[MuscleConfig, ...], Field(min_length=1)]
    protocol: ProtocolSettings | None = None
    safety: SafetySettings | None = None
    path: str = field(default="<defaults>", metadata={"toml": False})
    text: str = field(default="", metadata={"toml": False})

    @property
    def resolved(self) -> dict[str, Any]:
        """Every setting as resolved (defaults filled in), in the TOML's structure, as
        plain JSON values: ``parse_config(resolved)`` gives the same settings whatever
        the defaults are then (recordings keep it; replay reads it)."""
        out = dump(self)
        del out["path"], out["text"], out["detector_kind"]
        out["detector"] = {"kind": self.detector_kind, **out["detector"]}
        return out

    @property
    def muscle_names(self) -> tuple[str, ...]:
        """The muscles' names, in config order."""
        return tuple(m.name for m in self.muscles)

    def muscle(self, name: str) -> MuscleConfig:
        """The muscle named ``name``; a ConfigError names the muscles there are."""
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
                same = [k for k, label in enumerate(labels) if label == m.channel]
                if len(same) > 1:  # which electrode is the muscle's cannot be told
                    raise ConfigError(
                        f"{self.path}: muscle {m.name!r} uses channel {m.channel!r}, but "
                        f"{source_name!r} has {len(same)} channels labelled so (0-based "
                        f"{', '.join(map(str, same))}); set the muscle's channel to the "
                        "0-based index of its electrode, or give the source's channels "
                        "labels of their own")
                cols.append(same[0])
            else:
                raise ConfigError(
                    f"{self.path}: muscle {m.name!r} uses channel {m.channel!r}, which "
                    f"{source_name!r} does not have (its channels: {', '.join(labels)}); set "
                    "channel to one of those labels or to a 0-based index"
                )
        for i, c in enumerate(cols):  # one electrode cannot tell two muscles apart
            if c in cols[:i]:
                first = self.muscles[cols.index(c)]
                raise ConfigError(
                    f"{self.path}: muscles {first.name!r} and {self.muscles[i].name!r} both "
                    f"read channel {labels[c]!r} of {source_name!r}; every muscle needs its "
                    "own EMG channel (set each muscle's channel to its own electrode's label "
                    "or 0-based index)")
        return cols

    def calibrations(self) -> list[Calibration | None]:
        """Every muscle's calibration (None where there is none), in config order."""
        return [m.calibration for m in self.muscles]

    def with_patient(self, patient: str, where: str = "patient") -> "Config":
        """The config run for ``patient`` (checked; the resolved settings say so too)."""
        check_patient_id(patient, where=where)
        return replace(self, patient=patient)

    def with_calibrations(self, cals: dict[str, Calibration]) -> "Config":
        """A copy with these calibrations (by muscle name); other muscles keep theirs."""
        muscles = tuple(
            replace(m, calibration=cals.get(m.name, m.calibration)) for m in self.muscles
        )
        return replace(self, muscles=muscles)


def default_config(channels: list[str] | tuple[str, ...]) -> Config:
    """Detection-only config with default settings for the given channel names.

    Every channel is a muscle of its own. A label that several channels carry (another
    tool's recording) names none of them: each is taken by its position, as the muscle
    ``<label>_<k>`` (``k`` its 1-based position).
    """
    repeated = {c for c in channels if list(channels).count(c) > 1}
    used = set(channels) - repeated
    muscles = []
    for k, c in enumerate(channels):
        if c not in repeated:
            muscles.append(MuscleConfig(name=c, channel=c))
            continue
        name = f"{c}_{k + 1}"
        while name in used:
            name += "_"
        used.add(name)
        muscles.append(MuscleConfig(name=name, channel=k))
    return Config(name="defaults", muscles=tuple(muscles))


# -- the settings class of each kind ----------------------------------------------------------


def detector_settings_for(kind: str) -> type[DetectorBase]:
    """The settings class of ``[detector]`` for a detector ``kind``: the registered
    detector's :attr:`~closedloop.core.detectors.base.Detector.settings_type`
    (:data:`closedloop.registry.DETECTORS`: built-in names, entry points, or a
    ``module:Class`` spec).

    Raises
    ------
    ConfigError
        An unknown kind (the message lists the known ones), or an add-on that cannot be
        loaded.
    """
    from closedloop.registry import DETECTORS

    settings_type = getattr(DETECTORS.load(kind), "settings_type", None)
    if not (isinstance(settings_type, type) and issubclass(settings_type, DetectorBase)):
        raise ConfigError(f"detector {kind!r}: its settings_type {settings_type!r} is not a "
                          "subclass of closedloop.config.signal.DetectorBase")
    return settings_type


def protocol_settings_for(kind: Any) -> type[ProtocolSettings]:
    """The settings class of ``[protocol]`` for a protocol ``kind``: the registered
    protocol's ``settings_type`` (:data:`closedloop.registry.PROTOCOLS`).

    Raises
    ------
    KeyError
        For an unknown kind (the caller reports it with the known ones).
    """
    from closedloop.registry import PROTOCOLS

    if not isinstance(kind, str) or not (PROTOCOLS.knows(kind) or PROTOCOLS.is_spec(kind)):
        raise KeyError(kind)
    settings_type = getattr(PROTOCOLS.load(kind), "settings_type", ProtocolSettings)
    if not (isinstance(settings_type, type) and issubclass(settings_type, ProtocolSettings)):
        raise ConfigError(f"protocol {kind!r}: its settings_type {settings_type!r} is not a "
                          "subclass of closedloop.config.stimulation.ProtocolSettings")
    return settings_type


# -- loading ----------------------------------------------------------------------------------
def parse_config(data: Mapping[str, Any], *, source: str = "<config>",
                 text: str = "") -> Config:
    """Build a :class:`Config` from parsed TOML data (or from a recording's
    :attr:`Config.resolved`); see the module docstring.

    Raises
    ------
    ConfigError
        Naming the file, the key, the bad value and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a table, got {type(data).__name__}")
    body = {"name": Path(source).stem, **data}
    detector = body.pop("detector", {})
    protocol = body.pop("protocol", None)
    config = parse_table(Config, body, source=source)
    detector_kind = DEFAULT_DETECTOR
    explicit = isinstance(detector, Mapping) and "kind" in detector
    if explicit:
        detector = dict(detector)
        detector_kind = detector.pop("kind")
        if not isinstance(detector_kind, str):
            raise ConfigError(f"{source}: detector.kind = {detector_kind!r} is not allowed; "
                              "expected the name of a detector (a text string)")
    try:
        model = detector_settings_for(detector_kind)
    except ConfigError as exc:
        raise ConfigError(f"{source}: detector.kind = {detector_kind!r}: {exc}") from None
    try:
        detector = parse_table(model, detector, source=source, path="detector")
    except ConfigError as exc:
        hint = (_other_kind(detector, detector_kind, explicit)
                if isinstance(detector, Mapping) else "")
        raise ConfigError(f"{exc}{hint}") from None
    _check_muscles(config, detector, source)
    safety = config.safety
    if protocol is not None:
        kind = protocol.get("kind", "triggered_assist") if isinstance(protocol, Mapping) else None
        try:
            model = protocol_settings_for(kind)
        except KeyError:
            model = ProtocolSettings  # which names the unknown kind and the known ones
        protocol = parse_table(model, protocol, source=source, path="protocol",
                               context={"muscles": config.muscle_names})
        safety = safety or SafetySettings()
    elif safety is not None:
        raise ConfigError(f"{source}: [safety] is given but there is no [protocol]")
    config = replace(config, detector=detector, detector_kind=detector_kind, protocol=protocol,
                     safety=safety, path=source, text=text)
    if protocol is not None:
        _check_stimulation(config, source)
    return config


def _other_kind(table: Mapping[str, Any], kind: str, explicit: bool) -> str:
    """A hint for a ``[detector]`` table whose keys belong to another built-in detector
    (a config written before the default changed, or a forgotten ``kind``)."""
    from dataclasses import fields

    from closedloop.registry import DETECTORS

    keys = set(table) - {"baseline"}
    for other in DETECTORS.builtins:
        if other == kind:
            continue
        known = {f.name for f in fields(detector_settings_for(other))}
        if keys and keys <= known and not keys <= {f.name for f in fields(
                detector_settings_for(kind))}:
            return (f". These are keys of kind = {other!r}; the [detector] table has "
                    f"{'kind ' if explicit else 'no kind, so it is the default '}"
                    f"{kind!r}: add kind = {other!r} to keep that detector")
    return ""


def _check_muscles(config: Config, detector: DetectorBase, source: str) -> None:
    """Rules across ``[[muscles]]`` and ``[detector]``, and the names a config file may
    give its muscles."""
    names = list(config.muscle_names)
    for i, m in enumerate(config.muscles):
        where = f"{source}: muscles[{i}]"
        if not _is_name(m.name):
            raise ConfigError(f"{where}.name = {m.name!r} is not allowed; expected a non-empty "
                              "name of letters, digits and _")
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
        lacking = [m.name for m in config.muscles if m.calibration is None]
        if lacking:
            raise ConfigError(
                f"{source}: detector.baseline = 'calibrated' but {', '.join(lacking)} "
                "has no [muscles.calibration]; run `closedloop calibrate` first"
            )


def _check_stimulation(config: Config, source: str) -> None:
    """Stimulation against limits, protocol and session dose (see
    :func:`~closedloop.config.stimulation.validate_stimulation`)."""
    assert config.protocol is not None and config.safety is not None
    stimulated = {
        m.name: MuscleStim(m.name, m.stim, m.limits, m.antagonist)
        for m in config.muscles
        if m.stim is not None and m.limits is not None
    }
    try:
        validate_stimulation(stimulated, config.protocol, config.safety)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def load_config(path: str | Path) -> Config:
    """Load and validate a TOML config file (UTF-8, without a byte-order mark)."""
    p = Path(path)
    if p.exists() and not (p.is_file() or p.is_dir()):  # a pipe would wait for ever
        raise ConfigError(f"{p}: is not a regular file (a device, a named pipe or a "
                          "socket); give the .toml file itself")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file; the shipped ones are in configs/") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a folder, not a config file; give a .toml file (the "
                          "shipped ones are in configs/)") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc})") from None
    return loads_config(_decode(raw, str(p)), source=str(p))


_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"), (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _decode(raw: bytes, source: str) -> str:
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            raise ConfigError(
                f"{source}: the file starts with a {encoding} byte-order mark (BOM); save it "
                "as UTF-8 without BOM (TOML files are UTF-8)"
            )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{source}: not UTF-8 text (byte {exc.start}, line {line}: "
            f"{raw[exc.start:exc.start + 1]!r}); save the file as UTF-8 (TOML files are UTF-8)"
        ) from None


def loads_config(text: str, *, source: str = "<config>") -> Config:
    """Parse and validate config TOML text."""
    if text.startswith("\ufeff"):
        raise ConfigError(f"{source}: the text starts with a byte-order mark (BOM); save it "
                          "as UTF-8 without BOM (TOML files are UTF-8)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not a usable config: values are nested too deeply (a "
                          "closedloop config nests tables a few levels at most)") from None
    return parse_config(data, source=source, text=text)
