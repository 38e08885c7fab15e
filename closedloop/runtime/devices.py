"""Build the session's devices from the config and the command line's specs.

Source specs are parsed by :mod:`closedloop.sources.spec`; stimulator specs here:
``sim``, ``rehastim2:PORT``, ``p24:PORT``, ``lsl[:NAME]``, ``none`` (detection only).
:func:`make_stimulator` is the one place a stimulator is chosen (until the driver
registry): a new driver is one more branch there, and its class says what it can do
(``per_channel_frequency``), which is checked against the config's program here,
before any port is opened.
"""

from __future__ import annotations

from closedloop.config import Config
from closedloop.errors import ConfigError
from closedloop.sim.patient import PatientSettings
from closedloop.sources.base import Source, SourceInfo
from closedloop.stim.base import Stimulator
from closedloop.stim.settings import MuscleStim

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
    from closedloop.stim.sim import SimStimulator

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


def make_stimulator(config: Config, spec: str | None) -> Stimulator | None:
    """The stimulator for ``spec`` (default: the config's ``session.stimulator``)."""
    spec = (spec or config.session.stimulator).strip()
    if spec == "none" or not config.stimulates:
        return None
    kind, _, arg = spec.partition(":")
    channels = tuple(sorted(m.stim.channel for m in config.muscles if m.stim is not None))
    if kind == "sim" and not arg:
        from closedloop.stim.sim import SimStimulator

        return SimStimulator()
    if kind == "rehastim2" and arg:
        from closedloop.stim.rehastim2 import RehaStim2

        check_frequencies(config, "the RehaStim2", RehaStim2.per_channel_frequency)
        return RehaStim2(arg, channels=channels)
    if kind == "p24" and arg:
        from closedloop.stim.p24 import P24

        return P24(arg, channels=channels)
    if kind == "lsl":
        from closedloop.stim.lsl import LslStimulator

        return LslStimulator(arg or "closedloop-stim")
    raise ConfigError(f"stimulator spec {spec!r} is not understood; use one of: {STIMULATOR_FORMS}")


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
