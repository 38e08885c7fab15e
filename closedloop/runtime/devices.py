"""Build the session's devices from the config and the command line's specs.

Source specs are parsed by :mod:`closedloop.sources.spec`; stimulator specs here:
``sim``, ``rehastim2:PORT``, ``p24:PORT``, ``lsl[:NAME]``, ``none`` (detection only).
The LSL stimulator's stream is ``<NAME>-<session uid>`` (NAME defaults to
``closedloop-stim``). :func:`make_stimulator` is the one place a stimulator is chosen
(until the driver registry): a new driver is one more branch there, and its class says
what it can do (``per_channel_frequency``), which is checked against the config's
program here, before any port is opened.
"""

from __future__ import annotations

from closedloop.config import Config
from closedloop.config.stimulation import MuscleStim
from closedloop.core.stream import SourceInfo
from closedloop.errors import ConfigError, SafetyError
from closedloop.identity import SessionId
from closedloop.sim.patient import PatientSettings
from closedloop.sources.base import Source
from closedloop.stim.base import Stimulator

STIMULATOR_FORMS = ("sim, rehastim2:PORT (e.g. rehastim2:/dev/ttyUSB0), p24:PORT (e.g. "
                    "p24:/dev/ttyACM0), lsl[:STREAM_NAME], none")


def stimulated_muscles(config: Config) -> dict[str, MuscleStim]:
    """The config's muscles that have stimulation settings."""
    return {
        m.name: MuscleStim(m.name, m.stim, m.limits, m.antagonist)
        for m in config.muscles
        if m.stim is not None
    }


def patient_settings(config: Config) -> PatientSettings:
    """The simulated patient the config describes (one channel per muscle)."""
    ant = {m.name: m.antagonist for m in config.muscles if m.antagonist}
    return PatientSettings(
        fs=config.session.fs,
        muscles=config.muscle_names,
        antagonists=ant,
        snr_db=config.sim.snr_db,
        cocontraction=config.sim.cocontraction,
        mains_hz=config.filters.notch_hz or 50.0,
    )


def make_source(config: Config, spec: str | None, *, seed: int | None = None,
                realtime: bool = True, stimulator: Stimulator | None = None) -> Source:
    """The source for ``spec`` (default: the config's ``session.source``)."""
    from closedloop.sources.sim import SimSource
    from closedloop.sources.spec import open_source
    from closedloop.stim.drivers.sim import SimStimulator

    spec = spec or config.session.source

    def sim_factory(params: dict[str, str]) -> Source:
        if params:
            raise ConfigError(f"source spec {spec!r}: the sim source takes no options")
        chunk = max(1, int(round(config.session.chunk_ms * config.session.fs / 1000.0)))
        with_artifacts = isinstance(stimulator, SimStimulator) and config.sim.artifacts
        stim = stimulator if with_artifacts else None
        chans = {m.stim.channel: m.name for m in config.muscles if m.stim is not None}
        return SimSource(
            patient_settings(config),
            seed=config.sim.seed if seed is None else seed,
            realtime=realtime,
            chunk_size=chunk,
            stimulator=stim,
            stim_channels=chans,
            gap_s=config.sim.gap_s,
            attempt_s=config.sim.attempt_s,
        )

    return open_source(spec, sim_factory=sim_factory)


def make_stimulator(config: Config, spec: str | None, *,
                    session: SessionId | None = None) -> Stimulator | None:
    """The stimulator for ``spec`` (default: the config's ``session.stimulator``).

    ``session`` is the identity an LSL stimulator publishes under (default: a fresh one).
    """
    spec = (spec or config.session.stimulator).strip()
    if spec == "none" or not config.stimulates:
        return None
    kind, _, arg = spec.partition(":")
    channels = tuple(sorted(m.stim.channel for m in config.muscles if m.stim is not None))
    if kind == "sim" and not arg:
        from closedloop.stim.drivers.sim import SimStimulator

        return SimStimulator()
    if kind == "rehastim2" and arg:
        from closedloop.stim.drivers.rehastim2 import RehaStim2

        check_frequencies(config, "the RehaStim2", RehaStim2.per_channel_frequency)
        return RehaStim2(arg, channels=channels)
    if kind == "p24" and arg:
        from closedloop.stim.drivers.p24 import P24

        return P24(arg, channels=channels)
    if kind == "lsl":
        from closedloop.stim.drivers.lsl import LslStimulator

        return LslStimulator(session or SessionId.new(config.name), arg or "closedloop-stim")
    raise ConfigError(f"stimulator spec {spec!r} is not understood; use one of: {STIMULATOR_FORMS}")


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
    if per_channel_frequency or not config.stimulates:
        return
    freqs = {m.name: m.stim.frequency_hz for m in config.muscles
             if m.stim is not None and m.name in config.protocol.stimulated}
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
