"""The chain a session runs its samples through, built once from the config.

input stage (checks: NaN, gaps, flat, saturated, held, mains hum, impulses)
-> signal core (:class:`~closedloop.core.pipeline.Pipeline`: stimulation blanking,
filters, detector) -> protocol -> safety guard.

:func:`build_chain` is the wiring :func:`~closedloop.runtime.loop.run_loop` needs and a
reader of the loop does not: which muscles are stimulated, the artifact remover shared by
the pipeline and the input stage, the hum check and the impulse gate on the filters'
band. :class:`Chain` then does the two steps the loop names: :meth:`Chain.process` (the
signal core on one segment of checked samples) and :meth:`Chain.decide` (protocol ->
guard). A session that does not stimulate has no protocol, guard or remover.

A stimulating chain also reads the evoked response (M-wave) of every pulse from the raw
samples before the blanking removes them (:class:`~closedloop.core.evoked.EvokedResponse`:
:attr:`Chain.mwaves`, which the loop publishes), runs the M-wave rules of
``[protocol.mwave]`` on those records (:mod:`closedloop.stim.mwave_rules`: warnings in
:attr:`Chain.notices`, channel stops to the guard, fatigue notices to the protocol) and,
for a protocol that follows the patient's effort (``uses_effort``), measures the
voluntary effort between the pulses (:class:`~closedloop.core.effort.EffortEstimator`,
with the comb on every channel) onto each block: ``effort`` in µV, ``effort_mvc`` in %
of the calibrated range.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from closedloop.config import Config
from closedloop.config.stimulation import MuscleStim, MWaveRules, ProtocolSettings
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.checks import rate_samples
from closedloop.core.effort import EffortEstimator, EffortSettings
from closedloop.core.events import Block, Effort
from closedloop.core.evoked import EvokedResponse, EvokedSettings, MWave
from closedloop.core.filters import effective_band
from closedloop.core.impulses import ImpulseGate
from closedloop.core.mains import HumCheck
from closedloop.core.pipeline import Pipeline
from closedloop.core.stream import SourceInfo
from closedloop.errors import ConfigError
from closedloop.runtime.devices import channel_columns, stimulated_muscles
from closedloop.runtime.inputs import InputStage, Segment, rate_check
from closedloop.stim.commands import StimCommand
from closedloop.stim.guard import SafetyGuard, Violation
from closedloop.stim.mwave_rules import ChannelStop, Notice, ResponseRules
from closedloop.stim.protocol import Protocol, make_protocol
from closedloop.units import microvolts_per

#: ``factory(settings, muscles, fs) -> Protocol``: how the chain builds its protocol
#: (default :func:`~closedloop.stim.protocol.make_protocol`, from the registry).
ProtocolFactory = Callable[[ProtocolSettings, Mapping[str, MuscleStim], float], Protocol]


@dataclass
class Stimulation:
    """The stimulating end of a chain: the protocol, its guard and the artifact remover
    that blanks where the device's pulses fall."""

    protocol: Protocol
    guard: SafetyGuard
    remover: ArtifactRemover
    evoked: EvokedResponse | None = None
    rules: ResponseRules | None = None
    effort: EffortMeasure | None = None


@dataclass
class EffortMeasure:
    """The voluntary-effort measure of a chain: an estimator at the protocol's time
    constant and a faster one (stopped trying), ``uv`` µV per unit of the source, per
    channel ``rest`` and ``mvc`` of its calibration (NaN without one)."""

    slow: EffortEstimator
    fast: EffortEstimator
    uv: float
    rest: np.ndarray
    mvc: np.ndarray

    def measure(self, block: Block) -> None:
        """Put the effort of ``block`` on it (:class:`~closedloop.core.events.Effort`)."""
        slow = self.slow.process(block.filtered, block.start)
        fast = self.fast.process(block.filtered, block.start)
        block.effort = Effort(slow * self.uv, self._mvc(slow), fast * self.uv, self._mvc(fast))

    def _mvc(self, e: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.maximum(100.0 * (e - self.rest) / (self.mvc - self.rest), 0.0)


@dataclass
class Chain:
    """One session's input stage, signal core and (when it stimulates) protocol and
    guard; built by :func:`build_chain`."""

    inputs: InputStage
    pipeline: Pipeline
    stim: Stimulation | None = None
    #: The M-wave records decided in the last segment processed.
    mwaves: list[MWave] = field(default_factory=list)
    #: The M-wave rules' warnings since the last :meth:`pop_notices`.
    notices: list[Notice] = field(default_factory=list)

    @property
    def protocol(self) -> Protocol | None:
        """The protocol (None when the session does not stimulate)."""
        return self.stim.protocol if self.stim is not None else None

    @property
    def guard(self) -> SafetyGuard | None:
        """The safety guard (None when the session does not stimulate)."""
        return self.stim.guard if self.stim is not None else None

    def process(self, seg: Segment) -> Block:
        """The signal core on one segment: the detectors are switched as the input
        checks decided at its first sample, and the offsets of channels suspended
        while active open the block's events."""
        pipeline = self.pipeline
        ended = []
        for c, held in seg.holds:  # the impulse gate judging a stretch: no new onset
            pipeline.detector.hold(c, held)
        for c, suspend in seg.changes:
            ended += pipeline.detector.suspend(c, suspend, seg.start, float(seg.timestamps[0]))
        stim = self.stim
        for c in seg.restarts:  # good data again: restart the filters, no ringing from the step
            pipeline.restart_channel(c, seg.samples[0, c])
            if stim is not None and stim.evoked is not None:
                stim.evoked.restart_channel(c, seg.samples[0, c])
        if stim is not None and stim.evoked is not None:  # the raw pulses, before blanking
            self.mwaves = stim.evoked.process(seg.samples.T, pipeline.position, seg.timestamps)
        block = pipeline.process(seg.samples, seg.timestamps)
        if stim is not None and stim.effort is not None:
            stim.effort.measure(block)
        self.inputs.say_rest(pipeline.detector.pop_notes())  # rest that was not quiet
        block.events[:0] = ended
        return block

    def decide(self, block: Block) -> tuple[list[StimCommand], list[Violation]]:
        """What the protocol wants for this block, as far as the guard lets it, and what
        the guard refused or lowered (nothing without stimulation)."""
        if self.stim is None:
            return [], []
        stops: list[ChannelStop] = []
        if self.stim.rules is not None and self.mwaves:
            notices, stops = self.stim.rules.feed(self.mwaves)
            self.notices += notices
            self.stim.protocol.notify(notices)
        wanted = self.stim.protocol.step(block)
        safe = self.stim.guard.filter(wanted, block=block, stops=stops)
        return safe, self.stim.guard.pop_violations()

    def pop_notices(self) -> list[Notice]:
        """The M-wave rules' warnings since the last call."""
        out, self.notices = self.notices, []
        return out

    def blank(self, commands: list[StimCommand]) -> None:
        """Blank where the device's pulses really fall (each command's effective
        sample and delivered rate)."""
        if self.stim is None:
            return
        for c in commands:
            self.stim.remover.command(c.muscle, c.channel, c.is_on, c.pulse_rate_hz,
                                      c.effective_sample)
            if self.stim.evoked is not None:
                self.stim.evoked.command(c.channel, c.current_ma, c.pulse_width_us,
                                         c.effective_sample)

    def trials(self) -> dict[str, int] | None:
        """The protocol's trial counts (None without a protocol)."""
        if self.stim is None:
            return None
        c = self.stim.protocol.counts
        return {"trials": c.trials, "hits": c.hits, "misses": c.misses, "gated": c.gated}


def build_chain(config: Config, info: SourceInfo, *, stimulating: bool,
                protocol_factory: ProtocolFactory | None = None) -> Chain:
    """The chain for ``config`` on a source delivering ``info``.

    ``stimulating``: the session has a stimulator (the protocol, guard and artifact
    remover are built only then, and only for a config that stimulates).

    Raises
    ------
    InputError
        The source's rate is one the core cannot use (:func:`rate_check`): nothing runs.
    ConfigError
        The source lacks a channel the config names, or the protocol cannot run.
    """
    rate_check(info, config.filters)
    fs, names = info.fs, config.muscle_names
    stim = None
    protocol, safety = config.protocol, config.safety
    if stimulating and protocol is not None:  # the config stimulates
        assert safety is not None  # the config loader gives every [protocol] its [safety]
        muscles = stimulated_muscles(config)
        proto = (protocol_factory or make_protocol)(protocol, muscles, fs)
        blanking = ArtifactRemover(config.artifacts, fs, names, config.filters.notch_hz,
                                   comb_all=proto.uses_effort)
        # no trial starts, and no stimulation, before the input checks have checked the
        # stream's true rate (a wrong one stops the session there)
        first = rate_samples(fs) if safety.wait_for_rate else 0
        proto.first_sample = first
        guard = SafetyGuard.from_muscles(muscles, safety, fs, protocol=protocol,
                                         first_sample=first)
        stim = Stimulation(proto, guard, blanking)
        if blanking.enabled:  # the M-wave is read where the pulses are blanked
            stim.evoked = EvokedResponse(evoked_settings(protocol.mwave), fs, names,
                                         blanking, config.filters.notch_hz)
            if protocol.mwave.enabled:
                stim.rules = ResponseRules(protocol.mwave, fs)
        if proto.uses_effort:
            stim.effort = _effort(config, info, blanking, proto)
    remover = stim.remover if stim is not None else None
    pipeline = Pipeline(fs, names, config, artifacts=remover)
    hum = HumCheck(config.artifacts, fs, len(names), config.filters.notch_hz,
                   effective_band(config.filters, fs))
    gate = ImpulseGate(fs, len(names), config.artifacts.impulse_ratio,
                       config.artifacts.impulse_ms)
    inputs = InputStage(info, channel_columns(config, info), names, hum, remover,
                        impulses=gate, filters=config.filters)
    return Chain(inputs, pipeline, stim)


def _effort(config: Config, info: SourceInfo, remover: ArtifactRemover,
            protocol: Protocol) -> EffortMeasure:
    """The effort measure of a protocol that follows the patient's effort.

    Raises
    ------
    ConfigError
        The protocol wants effort in % MVC and a muscle it stimulates has no ``mvc``
        calibration.
    """
    names = config.muscle_names
    cals = [m.calibration for m in config.muscles]
    rest = np.array([c.rest_mean if c is not None and c.mvc is not None else np.nan
                     for c in cals])
    mvc = np.array([c.mvc if c is not None and c.mvc is not None else np.nan for c in cals])
    if getattr(protocol.settings, "effort_unit", "uv") == "mvc":
        lacking = [m for m in protocol.stimulated if np.isnan(mvc[names.index(m)])]
        if lacking:
            raise ConfigError(f"[protocol] effort_unit = 'mvc' but {', '.join(lacking)} has no "
                              "mvc in [muscles.calibration]; run `closedloop calibrate` with "
                              "a maximal contraction, or use effort_unit = 'uv'")
    uv = microvolts_per(info.units) or 1.0
    tau = getattr(protocol.settings, "effort_tau_s", EffortSettings.tau_s)
    fast = getattr(protocol.settings, "stop_tau_s", tau)
    return EffortMeasure(
        EffortEstimator(EffortSettings(tau_s=tau), info.fs, len(names), remover),
        EffortEstimator(EffortSettings(tau_s=fast), info.fs, len(names), remover),
        uv, rest, mvc)


__all__ = ["Chain", "EffortMeasure", "ProtocolFactory", "Stimulation", "build_chain"]


def evoked_settings(mwave: MWaveRules) -> EvokedSettings:
    """How the config's ``[protocol.mwave]`` says the M-wave is measured."""
    return EvokedSettings(skip_ms=mwave.skip_ms, window_ms=mwave.window_ms,
                          baseline_ms=mwave.baseline_ms, every_s=mwave.every_s,
                          present_snr=mwave.present_snr)
