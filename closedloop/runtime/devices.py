"""Build the session's devices from the config and the command line's specs.

Both come from a registry (:mod:`closedloop.registry`): a source spec names a class of
:data:`~closedloop.registry.SOURCES` (parsed by :mod:`closedloop.sources.spec`), a
stimulator spec ``NAME[:ARG]`` one of :data:`~closedloop.registry.STIMULATORS` (or
``none``: detection only). A new device is a class that implements the interface and a
registry entry (an entry point of its own package): nothing here changes. What a
stimulator can do (``per_channel_frequency``) is checked against the config's program
before any port is opened.
"""

from __future__ import annotations

from collections.abc import Sequence

from closedloop.config import Config
from closedloop.config.stimulation import MuscleStim
from closedloop.core.stream import SourceInfo
from closedloop.errors import ConfigError, SafetyError
from closedloop.identity import SessionId
from closedloop.sim.patient import Attempt
from closedloop.sources.base import Source
from closedloop.stim.base import Stimulator


def stimulated_muscles(config: Config) -> dict[str, MuscleStim]:
    """The config's muscles that have stimulation settings."""
    return {
        m.name: MuscleStim(m.name, m.stim, m.limits, m.antagonist)
        for m in config.muscles
        if m.stim is not None and m.limits is not None  # they come together (config)
    }


def make_source(config: Config, spec: str | None, *, seed: int | None = None,
                realtime: bool = True, stimulator: Stimulator | None = None,
                script: Sequence[Attempt] | None = None) -> Source:
    """The source for ``spec`` (default: the config's ``session.source``), from the
    source registry (:mod:`closedloop.sources.spec`). ``script``: what the simulated
    patient does (default: attempts at random)."""
    from closedloop.sources.base import SourceContext
    from closedloop.sources.spec import open_source

    context = SourceContext(config=config, seed=seed, realtime=realtime, stimulator=stimulator,
                            script=script)
    return open_source(spec or config.session.source, context)


def stimulator_forms() -> str:
    """The spec form of every registered stimulator, for messages."""
    from closedloop.registry import STIMULATORS

    forms = []
    for name in STIMULATORS.names():
        try:
            forms.append(STIMULATORS.load(name).spec_form or name)
        except ConfigError:
            forms.append(f"{name} (does not load)")
    return "; ".join([*forms, "none (detection only)", "package.module:Class[:ARG]"])


def make_stimulator(config: Config, spec: str | None, *,
                    session: SessionId | None = None) -> Stimulator | None:
    """The stimulator for ``spec`` (default: the config's ``session.stimulator``), from
    the driver registry (:data:`closedloop.registry.STIMULATORS`): ``NAME[:ARG]``, or
    ``none`` for detection only; None also when the config does not stimulate.

    What the class says it can do (``per_channel_frequency``) is checked against the
    config's program here, before any port is opened. ``session`` is the identity a
    publishing stimulator uses (default: a fresh one).
    """
    from closedloop.registry import STIMULATORS
    from closedloop.stim.base import StimulatorContext

    spec = (spec or config.session.stimulator).strip()
    if spec == "none" or not config.stimulates:
        return None
    name, _, arg = spec.partition(":")
    if "." in name and arg:  # package.module:Class[:ARG]
        cls_name, _, arg = arg.partition(":")
        name = f"{name}:{cls_name}"
    if name not in STIMULATORS.names() and not STIMULATORS.is_spec(name):
        raise ConfigError(f"stimulator spec {spec!r} is not understood; use one of: "
                          f"{stimulator_forms()}")
    cls = STIMULATORS.load(name)
    check_frequencies(config, cls.label, cls.per_channel_frequency)
    channels = tuple(sorted(m.stim.channel for m in config.muscles if m.stim is not None))
    context = StimulatorContext(config=config, channels=channels, session=session)
    return cls.from_spec(spec, arg, context)


def check_input(source: Source, stimulator: Stimulator | None) -> str | None:
    """Refuse to stimulate from another closedloop session's re-published stream.

    Such a stream is only ever opened on purpose (``lsl:source_id=...``; ``name=`` and
    ``type=`` never select one). Reading it for detection is allowed, with the warning
    returned; stimulating from it is not: the EMG would be another session's copy, not
    this patient's amplifier, and nothing arriving over the network may start
    stimulation.

    Raises
    ------
    SafetyError
        The source is a closedloop session's stream and the session would stimulate.
    """
    session = getattr(source, "closedloop_session", None)
    if session is None:
        return None
    what = f"the EMG stream {source.info.name!r} is re-published by closedloop session {session}"
    if stimulator is not None:
        raise SafetyError(
            f"{what}, not an amplifier: closedloop never stimulates from another session's "
            "stream. Select the amplifier's own stream, or run with --stimulator none for "
            "detection only"
        )
    return f"{what}; detection only (no stimulator)"


def check_frequencies(config: Config, device: str, per_channel_frequency: bool) -> None:
    """Refuse a program whose muscles pulse at different frequencies on a stimulator that
    runs all its channels at one (it would run them at one rate, or keep re-timing).

    Raises
    ------
    ConfigError
        Naming the muscles, their frequencies and what to do.
    """
    protocol = config.protocol
    if per_channel_frequency or protocol is None:  # None: the config does not stimulate
        return
    freqs = {m.name: m.stim.frequency_hz for m in config.muscles
             if m.stim is not None and m.name in protocol.stimulated}
    if len(set(freqs.values())) > 1:
        asked = ", ".join(f"{name} {hz:g} Hz" for name, hz in freqs.items())
        raise ConfigError(
            f"{config.path}: this program stimulates its muscles at different frequencies "
            f"({asked}), but {device} runs all channels at one frequency. Use a stimulator "
            "with a frequency per channel (--stimulator p24:PORT), or give these muscles "
            "the same frequency_hz"
        )


def channel_columns(config: Config, info: SourceInfo) -> list[int]:
    """Source columns of the config's muscles, in muscle order."""
    return config.columns(info.channels, f"the source {info.name}")
