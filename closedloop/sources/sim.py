"""The simulated source: the simulated patient streamed like a device.

Stream time starts at the LSL clock (``pylsl.local_clock``) when the source opens, so
the simulated stream lives in the same time domain as real LSL streams and recordings;
sample ``i`` has timestamp ``t0 + i / fs`` exactly. ``realtime=True`` paces delivery
against the wall clock (chunks due since the start, never summed sleeps, so no drift
builds up); ``realtime=False`` delivers as fast as the consumer reads.

With a :class:`~closedloop.stim.drivers.sim.SimStimulator` attached, every pulse it delivers adds
an artifact and an M-wave to the stimulated muscle's channel (closing the loop in
simulation). The sample counter is the sample index.

Every chunk is a :class:`SimChunk`: a :class:`~closedloop.core.stream.Chunk` that also
carries the patient's ground truth for its samples (:class:`~closedloop.sim.patient.Truth`:
the voluntary drive of every muscle at every sample, the scripted onsets and every
pulse's true M-wave), which a session can record as a truth stream beside the EMG.
It is the same whatever the chunk size and the same for the same seed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from closedloop.core.stream import Chunk, SourceInfo
from closedloop.sim.patient import (
    Attempt,
    PatientSettings,
    Pulse,
    SimulatedPatient,
    Truth,
    random_script,
)
from closedloop.sources.base import Source


def _lsl_clock() -> float:
    try:
        import pylsl

        return float(pylsl.local_clock())
    except Exception:  # pragma: no cover - pylsl missing
        return time.monotonic()


@dataclass(frozen=True)
class SimChunk(Chunk):
    """A chunk of the simulated patient with its ground truth.

    Attributes
    ----------
    truth : Truth or None
        The patient's truth for these samples: ``truth.drive[i]`` is the voluntary drive
        at ``samples[i]``; pulse times in ``truth.pulses`` are seconds from the stream's
        first sample (add the source's ``t0`` for stream time).
    """

    truth: Truth | None = None


class SimSource(Source):
    """Simulated EMG source (see the module docstring).

    Parameters
    ----------
    settings : PatientSettings
    script : sequence of Attempt, optional
        Default: random attempts over all muscles for ``script_hours``.
    seed : int
    realtime : bool
    chunk_size : int
        Samples per chunk.
    stimulator : SimStimulator, optional
        Its pulses become artifacts and M-waves; ``stim_channels`` maps its channel
        numbers to muscle names.
    """

    def __init__(
        self,
        settings: PatientSettings,
        script: Sequence[Attempt] | None = None,
        *,
        seed: int = 0,
        realtime: bool = True,
        chunk_size: int = 20,
        stimulator=None,
        stim_channels: dict[int, str] | None = None,
        gap_s: tuple[float, float] = (4.0, 8.0),
        attempt_s: tuple[float, float] = (1.0, 3.0),
        script_hours: float = 4.0,
    ) -> None:
        super().__init__()
        self.settings = settings
        if script is None:
            script = random_script(
                settings.muscles, script_hours * 3600.0, np.random.default_rng([seed, 1]),
                gap_s=gap_s, attempt_s=attempt_s,
            )
        self.script = list(script)
        self.seed = seed
        self.realtime = realtime
        self.chunk_size = int(chunk_size)
        self.stimulator = stimulator
        self.stim_channels = dict(stim_channels or {})
        self.t0 = 0.0
        self._patient: SimulatedPatient | None = None
        self._wall0 = 0.0
        self._wake = threading.Event()

    def open(self) -> None:
        pulses = self._pulses if self.stimulator is not None else None
        self._patient = SimulatedPatient(self.settings, self.script, self.seed, pulses)
        self._info = SourceInfo(
            name="closedloop simulated patient",
            fs=self.settings.fs,
            channels=tuple(self.settings.muscles),
            units="V",
            kind="sim",
        )
        self.t0 = _lsl_clock()
        self._wall0 = time.perf_counter()
        super().open()

    def close(self) -> None:
        self._wake.set()
        super().close()

    @property
    def position(self) -> int:
        return self._patient.position if self._patient else 0

    def now(self) -> float:
        """Stream time of the next sample (what the simulated stimulator calls its clock)."""
        return self.t0 + self.position / self.settings.fs

    def true_onsets(self) -> list[tuple[float, str]]:
        """(stream time, muscle) of every scripted onset."""
        return [(self.t0 + a.onset_s, a.muscle) for a in self.script]

    def _pulses(self, t_start: float, t_end: float) -> list[Pulse]:
        rec = self.stimulator.pulses(self.t0 + t_start, self.t0 + t_end)
        # the patient asks in increasing time: trains that ended before this window are
        # never asked for again, and keeping them would make every read slower
        forget = getattr(self.stimulator, "forget_before", None)
        if forget is not None:
            forget(self.t0 + t_start)
        return [
            Pulse(float(r["time"]) - self.t0, self.stim_channels.get(int(r["channel"]), ""),
                  float(r["current_ma"]), float(r["pulse_width_us"]))
            for r in rec
        ]

    def read(self, timeout: float) -> Chunk | None:
        if not self.is_open or self._patient is None:
            raise RuntimeError("SimSource.read() before open()")
        fs = self.settings.fs
        i0 = self._patient.position
        if self.realtime:
            due_wall = self._wall0 + (i0 + self.chunk_size) / fs
            wait = due_wall - time.perf_counter()
            if wait > 0:
                self._wake.wait(min(wait, timeout))
            if not self.is_open:
                return None
            # a chunk that fell due while this thread was not running (a loaded machine)
            # is delivered now: a late wake-up is not a stalled device
            if time.perf_counter() < due_wall:
                return None
        x, truth = self._patient.read_truth(self.chunk_size)
        idx = np.arange(i0, i0 + self.chunk_size, dtype=np.int64)
        return SimChunk(
            samples=x,
            timestamps=self.t0 + idx / fs,
            counter=idx,
            arrival_wall=time.perf_counter(),
            truth=truth,
        )
