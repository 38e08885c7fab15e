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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from closedloop.config import Config
from closedloop.config.stimulation import MuscleStim, ProtocolSettings
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.events import Block
from closedloop.core.filters import effective_band
from closedloop.core.impulses import ImpulseGate
from closedloop.core.mains import HumCheck
from closedloop.core.pipeline import Pipeline
from closedloop.core.stream import SourceInfo
from closedloop.runtime.devices import channel_columns, stimulated_muscles
from closedloop.runtime.inputs import InputStage, Segment, rate_check
from closedloop.stim.commands import StimCommand
from closedloop.stim.guard import SafetyGuard, Violation
from closedloop.stim.protocol import Protocol, make_protocol

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


@dataclass
class Chain:
    """One session's input stage, signal core and (when it stimulates) protocol and
    guard; built by :func:`build_chain`."""

    inputs: InputStage
    pipeline: Pipeline
    stim: Stimulation | None = None

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
        for c in seg.restarts:  # good data again: restart the filters, no ringing from the step
            pipeline.restart_channel(c, seg.samples[0, c])
        block = pipeline.process(seg.samples, seg.timestamps)
        self.inputs.say_rest(pipeline.detector.pop_notes())  # rest that was not quiet
        block.events[:0] = ended
        return block

    def decide(self, block: Block) -> tuple[list[StimCommand], list[Violation]]:
        """What the protocol wants for this block, as far as the guard lets it, and what
        the guard refused or lowered (nothing without stimulation)."""
        if self.stim is None:
            return [], []
        safe = self.stim.guard.filter(self.stim.protocol.step(block), block=block)
        return safe, self.stim.guard.pop_violations()

    def blank(self, commands: list[StimCommand]) -> None:
        """Blank where the device's pulses really fall (each command's effective
        sample and delivered rate)."""
        if self.stim is None:
            return
        for c in commands:
            self.stim.remover.command(c.muscle, c.channel, c.is_on, c.pulse_rate_hz,
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
        stim = Stimulation(
            (protocol_factory or make_protocol)(protocol, muscles, fs),
            SafetyGuard.from_muscles(muscles, safety, fs, protocol=protocol),
            ArtifactRemover(config.artifacts, fs, names, config.filters.notch_hz),
        )
    remover = stim.remover if stim is not None else None
    pipeline = Pipeline(fs, names, config, artifacts=remover)
    hum = HumCheck(config.artifacts, fs, len(names), config.filters.notch_hz,
                   effective_band(config.filters, fs))
    gate = ImpulseGate(fs, len(names), config.artifacts.impulse_ratio,
                       config.artifacts.impulse_ms)
    inputs = InputStage(info, channel_columns(config, info), names, hum, remover,
                        impulses=gate, filters=config.filters)
    return Chain(inputs, pipeline, stim)


__all__ = ["Chain", "ProtocolFactory", "Stimulation", "build_chain"]
