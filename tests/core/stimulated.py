"""A stimulated session on the simulated patient, through the signal core, without the loop.

Shared by the effort and evoked-response tests: a schedule of stimulation commands goes
to a simulated stimulator (whose pulses the patient answers) and to the core's artifact
remover, evoked response and effort estimate, each command before the first sample it
applies to, as the live loop does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from closedloop.config.signal import ArtifactSettings
from closedloop.core.blanking import ArtifactRemover
from closedloop.core.effort import EffortEstimator, EffortSettings
from closedloop.core.evoked import EvokedResponse, EvokedSettings, MWave
from closedloop.core.pipeline import Pipeline
from closedloop.sim.patient import Attempt, EvokedTruth, PatientSettings, Pulse, SimulatedPatient
from closedloop.stim.commands import StimCommand
from closedloop.stim.drivers.sim import SimStimulator

FS = 2000.0
MUSCLES = ("biceps", "triceps")
CHANNELS = {1: "biceps", 2: "triceps"}
ANTAGONISTS = {"biceps": "triceps", "triceps": "biceps"}


@dataclass(frozen=True)
class Command:
    """At ``sample``, ``muscle`` on at ``current_ma`` (0: off) and ``frequency_hz``."""

    sample: int
    muscle: str
    current_ma: float
    frequency_hz: float = 35.0
    pulse_width_us: float = 250.0


def train(muscle: str, on_s: float, off_s: float, current_ma: float,
          frequency_hz: float = 35.0) -> list[Command]:
    """A constant train from ``on_s`` to ``off_s``."""
    return [Command(int(on_s * FS), muscle, current_ma, frequency_hz),
            Command(int(off_s * FS), muscle, 0.0, frequency_hz)]


@dataclass
class Session:
    """What came out: raw EMG, the patient's truth and the core's measures."""

    raw: np.ndarray
    drive: np.ndarray
    pulses: list[EvokedTruth]
    effort: np.ndarray | None
    records: list[MWave] = field(default_factory=list)


def stimulate(
    commands: Sequence[Command],
    seconds: float,
    *,
    script: Sequence[Attempt] = (),
    seed: int = 3,
    chunks: Sequence[int] = (20,),
    artifacts: ArtifactSettings | None = None,
    comb_all: bool = True,
    effort: EffortSettings | None = None,
    evoked: EvokedSettings | None = None,
    **patient,
) -> Session:
    """Run the session (chunk sizes cycled); ``patient`` sets the PatientSettings."""
    stim = SimStimulator()
    stim.open()

    def pulses(t0: float, t1: float) -> list[Pulse]:
        return [Pulse(float(r["time"]), CHANNELS[int(r["channel"])], float(r["current_ma"]),
                      float(r["pulse_width_us"])) for r in stim.pulses(t0, t1)]

    ps = PatientSettings(fs=FS, muscles=MUSCLES, antagonists=ANTAGONISTS, **patient)
    pat = SimulatedPatient(ps, script, seed=seed, pulses=pulses)
    remover = ArtifactRemover(artifacts or ArtifactSettings(), FS, MUSCLES, 50.0,
                              comb_all=comb_all)
    pipe = Pipeline(FS, MUSCLES, artifacts=remover)
    est = None if effort is None else EffortEstimator(effort, FS, len(MUSCLES), remover)
    evr = None if evoked is None else EvokedResponse(evoked, FS, MUSCLES, remover, 50.0)
    channel = {m: c for c, m in CHANNELS.items()}
    pending = sorted(commands, key=lambda c: c.sample)
    raw, drive, truth, eff, records = [], [], [], [], []
    n, i, k = int(round(seconds * FS)), 0, 0
    while i < n:
        size = min(chunks[k % len(chunks)], n - i)
        while pending and pending[0].sample < i + size:
            c = pending.pop(0)
            ch = channel[c.muscle]
            stim.apply([StimCommand(c.muscle, ch, c.current_ma, c.pulse_width_us,
                                    c.frequency_hz, c.sample - 1, c.sample / FS, "x",
                                    effective_sample=c.sample)])
            remover.command(c.muscle, ch, c.current_ma > 0, c.frequency_hz, c.sample)
            if evr is not None:
                evr.command(ch, c.current_ma, c.pulse_width_us, c.sample)
        x, tr = pat.read_truth(size)
        if evr is not None:
            records += evr.process(x.T, i, np.arange(i, i + size) / FS)
        block = pipe.process(x)
        if est is not None:
            eff.append(est.process(block.filtered, block.start))
        raw.append(x)
        drive.append(tr.drive)
        truth += tr.pulses
        i, k = i + size, k + 1
    return Session(np.vstack(raw), np.vstack(drive), truth,
                   np.vstack(eff) if est is not None else None, records)
