"""The simulated source: the simulated patient streamed like a device.

Stream time starts at the LSL clock (``pylsl.local_clock``) when the source opens, so
the simulated stream lives in the same time domain as real LSL streams and recordings;
sample ``i`` has timestamp ``t0 + i / fs`` exactly. ``realtime=True`` paces delivery
against the wall clock (chunks due since the start, never summed sleeps, so no drift
builds up); ``realtime=False`` delivers as fast as the consumer reads.

With a :class:`~closedloop.stim.drivers.sim.SimStimulator` attached, every pulse it delivers adds
an artifact and an M-wave to the stimulated muscle's channel (closing the loop in
simulation). The sample counter is the sample index.

The samples are delivered in float32 (widened to float64 like every source's chunks),
as the amplifiers it stands in for stream them over LSL: a simulated session is then
recorded like a real one (EMG in float32, half the size of double) and replays exactly,
since every value the session saw is a float32. The patient model itself computes in
double; rounding it to float32 changes it by less than 1e-7 of its value.

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
from closedloop.errors import ConfigError
from closedloop.sim.patient import (
    Attempt,
    PatientSettings,
    Pulse,
    SimulatedPatient,
    Truth,
    random_script,
)
from closedloop.sources.base import Source, SourceContext


def patient_settings(config) -> PatientSettings:  # noqa: ANN001 - a closedloop Config
    """The simulated patient a config describes (one channel per muscle)."""
    ant = {m.name: m.antagonist for m in config.muscles if m.antagonist}
    return PatientSettings(
        fs=config.session.fs,
        muscles=config.muscle_names,
        antagonists=ant,
        snr_db=config.sim.snr_db,
        cocontraction=config.sim.cocontraction,
        mains_hz=config.filters.notch_hz or 50.0,
    )


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

    kind = "sim"
    spec_form = "sim[?k=v&...]  (the simulated patient of the config's [sim]; snr_db=DB, seed=N)"
    #: The options a ``sim`` spec takes, with their ranges.
    OPTIONS = {"snr_db": (float, -20.0, 60.0), "seed": (int, 0, 2**32 - 1)}

    @classmethod
    def parse_spec(cls, spec: str, target: str, options: dict[str, str]) -> dict[str, str]:
        """The options of a ``sim`` spec (it takes no target)."""
        from closedloop.sources.spec import spec_error

        if target:
            raise spec_error(spec, "sim takes no target after ':' (use sim?k=v)")
        return dict(options)

    @classmethod
    def from_spec(cls, spec: str, params: dict[str, str], context: SourceContext) -> SimSource:
        """The simulated patient of ``context.config`` (its muscles, ``[session]`` rate and
        chunk, ``[sim]``, ``?snr_db`` and ``?seed`` over those), answering
        ``context.stimulator`` when that is the simulated stimulator and ``[sim]
        artifacts`` is on, following ``context.script`` when given."""
        from dataclasses import replace

        from closedloop.stim.drivers.sim import SimStimulator

        unknown = sorted(set(params) - set(cls.OPTIONS))
        if unknown:
            raise ConfigError(f"source spec {spec!r}: unknown sim option(s) {unknown}; the "
                              "simulated patient takes snr_db=DB and seed=N")
        values = {}
        for key, text in params.items():
            cast, lo, hi = cls.OPTIONS[key]
            try:
                value = cast(text)
            except ValueError:
                value = None
            if value is None or not lo <= value <= hi:  # NaN fails too
                raise ConfigError(f"source spec {spec!r}: {key}={text!r} must be a number "
                                  f"from {lo:g} to {hi:g}")
            values[key] = value
        config = context.config
        if config is None:
            return cls(PatientSettings(), context.script, realtime=context.realtime)
        chunk = max(1, int(round(config.session.chunk_ms * config.session.fs / 1000.0)))
        stim = context.stimulator
        answers = isinstance(stim, SimStimulator) and config.sim.artifacts
        settings = patient_settings(config)
        if "snr_db" in values:
            settings = replace(settings, snr_db=values["snr_db"])
        seed = values.get("seed", config.sim.seed if context.seed is None else context.seed)
        return cls(
            settings,
            None if context.script is None else list(context.script),
            seed=seed,
            realtime=context.realtime,
            chunk_size=chunk,
            stimulator=stim if answers else None,
            stim_channels={m.stim.channel: m.name for m in config.muscles if m.stim is not None},
            gap_s=config.sim.gap_s,
            attempt_s=config.sim.attempt_s,
        )

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
        self.script = sorted(script, key=lambda a: a.onset_s)
        self._onset_samples: np.ndarray | None = None
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
        """Start the simulated patient."""
        pulses = self._pulses if self.stimulator is not None else None
        self._patient = SimulatedPatient(self.settings, self.script, self.seed, pulses)
        self._info = SourceInfo(
            name="closedloop simulated patient",
            fs=self.settings.fs,
            channels=tuple(self.settings.muscles),
            units="V",
            kind="sim",
            sample_format="float32",
        )
        self.t0 = _lsl_clock()
        self._wall0 = time.perf_counter()
        super().open()

    def close(self) -> None:
        """Stop; a :meth:`read` waiting returns at once."""
        self._wake.set()
        super().close()

    @property
    def position(self) -> int:
        """Samples delivered since :meth:`open`."""
        return self._patient.position if self._patient else 0

    @property
    def exhausted(self) -> bool:
        """Never: the simulated patient rests on after its script, like a live device."""
        return False

    def now(self) -> float:
        """Stream time of the next sample (what the simulated stimulator calls its clock)."""
        return self.t0 + self.position / self.settings.fs

    def true_onsets(self) -> list[tuple[float, str]]:
        """(stream time, muscle) of every scripted onset."""
        return [(self.t0 + a.onset_s, a.muscle) for a in self.script]

    def true_onsets_between(self, start: int, stop: int) -> list[tuple[int, str]]:
        """(sample, muscle) of the scripted onsets at samples ``start <= k < stop``: the
        ground truth of these samples (the sample where an attempt's ramp starts, as
        :meth:`~closedloop.sim.patient.SimulatedPatient.true_onsets` counts it), for a
        session to record as ``truth`` markers."""
        fs = self.settings.fs
        if self._onset_samples is None:
            self._onset_samples = np.array([int(round(a.onset_s * fs)) for a in self.script],
                                           dtype=np.int64)
        lo, hi = np.searchsorted(self._onset_samples, [start, stop], side="left")
        return [(int(self._onset_samples[i]), self.script[i].muscle) for i in range(lo, hi)]

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
        """The next chunk; in real time, not before its samples are due."""
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
        # delivered in float32, as amplifiers stream over LSL (see the module docstring)
        x = x.astype(np.float32).astype(np.float64)
        idx = np.arange(i0, i0 + self.chunk_size, dtype=np.int64)
        return SimChunk(
            samples=x,
            timestamps=self.t0 + idx / fs,
            counter=idx,
            arrival_wall=time.perf_counter(),
            truth=truth,
        )
